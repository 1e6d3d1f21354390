"""Key state and its storage: key tables, residency (eviction to the spill store), the
spill store, checkpoint files and atomic writes."""

# The package's public modules (`from streamlearn.state import *` imports them).
__all__ = [
    "atomic",
    "checkpoint",
    "keys",
    "recent",
    "residency",
    "spill",
]
