"""Online learning: the per-key learner and its state, the shared model, concept recall,
the regret baseline."""

# The package's public modules (`from streamlearn.learning import *` imports them).
__all__ = [
    "kernel",
    "key_rows",
    "learner",
    "learner_state",
    "linear",
    "mixture",
    "recall",
    "regret",
    "shared",
    "step_result",
]
