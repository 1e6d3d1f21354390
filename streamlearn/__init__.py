"""streamlearn: online learning from drifting streams with a meta-learned starting point."""

__version__ = "0.1.0"
