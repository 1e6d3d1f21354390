"""Drift: river's detectors per key and globally, and which start a key resets to."""
