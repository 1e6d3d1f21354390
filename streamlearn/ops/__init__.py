"""Operating it: Prometheus metrics, the metrics log, the HTTP endpoints, log redaction
and the offline report."""
