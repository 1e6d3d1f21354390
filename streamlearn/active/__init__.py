"""Active learning: which unlabelled events are worth a label."""

# The package's public modules (`from streamlearn.active import *` imports them).
__all__ = [
    "lambda_watch",
    "loop",
    "oracle",
    "pacing",
    "pending",
    "policy",
]
