"""``streamlearn report``: a run's metrics as PNG panels and one HTML page."""

from streamlearn.ops.report.render import Report, render
from streamlearn.ops.report.series import Run, from_log, from_prometheus

__all__ = ["Report", "Run", "from_log", "from_prometheus", "render"]
