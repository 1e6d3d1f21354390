"""The service: the daemon's loop (one poll as a pipeline of stages), checkpointing,
what the config wires together, outcomes, hand-off, quarantine and de-duplication."""
