"""Operating it: Prometheus metrics, the metrics log, the HTTP endpoints, log redaction
and the offline report."""

# The package's public modules (`from streamlearn.ops import *` imports them).
__all__ = [
    "http",
    "metrics",
    "metrics_log",
    "redact",
    "reference",
    "report",
]
