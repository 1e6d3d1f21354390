"""Active learning: which unlabelled events are worth a label."""
