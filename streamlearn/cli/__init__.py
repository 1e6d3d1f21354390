"""The ``streamlearn`` command line: run, simulate, label, meta-train, report, config."""

# The package's public modules (`from streamlearn.cli import *` imports them).
__all__ = [
    "label",
    "main",
    "parser",
    "simulate",
]
