"""Online learning: the per-key learner and its state, the shared model, concept recall,
the regret baseline."""
