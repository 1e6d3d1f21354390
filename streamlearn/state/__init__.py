"""Key state and its storage: key tables, residency (eviction to the spill store), the
spill store, checkpoint files and atomic writes."""
