"""Drift: river's detectors per key and globally, and which start a key resets to."""

# The package's public modules (`from streamlearn.drift import *` imports them).
__all__ = [
    "detectors",
    "resets",
]
