"""The adapted model: its layout, the numpy hot path over lanes, and feature scaling."""

# The package's public modules (`from streamlearn.model import *` imports them).
__all__ = [
    "lanes",
    "scaling",
    "spec",
]
