"""Meta-learning the starting point ``theta0``: unrolled MAML with learned per-parameter
inner rates, and the implicit (iMAML) path."""

# The package's public modules (`from streamlearn.meta import *` imports them).
__all__ = [
    "distributed",
    "hotswap",
    "implicit",
    "initfile",
    "maml",
    "offline",
    "outer",
    "pool",
    "tasks",
    "topic",
    "trainer",
]
