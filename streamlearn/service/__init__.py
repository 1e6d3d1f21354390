"""The service: the daemon's loop (one poll as a pipeline of stages), checkpointing,
what the config wires together, outcomes, hand-off, quarantine and de-duplication."""

# The package's public modules (`from streamlearn.service import *` imports them).
__all__ = [
    "checkpointing",
    "daemon",
    "dedup",
    "handoff",
    "outcomes",
    "quarantine",
    "recovery",
    "rolling",
    "wiring",
]
