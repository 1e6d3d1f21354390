"""The ``streamlearn`` command line: run, simulate, label, meta-train, report, config."""
