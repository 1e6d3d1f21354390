"""A run as four PNG panels and one self-contained HTML page (the images inlined).

Panels: cumulative loss against the baseline's and the regret; rolling accuracy (or error)
with drift markers; the step size with its cap and the controller's signals; labels spent
against the budget.
"""

from __future__ import annotations

import base64
import html
import time
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only: no display on a server
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.axes import Axes

from streamlearn.ops.report.series import Run


@dataclass(frozen=True)
class Report:
    """What :func:`render` wrote."""

    html: Path
    images: list[Path]
    summary: dict[str, str]


def _minutes(run: Run) -> np.ndarray:
    return np.asarray((run.t - run.t[0]) / 60.0)


def _plot(ax: Axes, x: np.ndarray, y: np.ndarray, label: str, **kw: object) -> bool:
    ok = ~np.isnan(y)
    if not ok.any():
        return False
    ax.plot(x[ok], y[ok], label=label, **kw)  # type: ignore[arg-type]
    return True


def _increments(y: np.ndarray) -> np.ndarray:
    """Per-sample increases of a counter (a restart's drop to zero counts as its new value)."""
    y = np.nan_to_num(y, nan=0.0)
    d = np.diff(y, prepend=y[:1])
    return np.where(d < 0, y, d)


def _loss_panel(ax: Axes, run: Run, x: np.ndarray) -> None:
    _plot(ax, x, run.get("streamlearn_loss_total"), "cumulative loss (streamlearn)")
    _plot(ax, x, run.get("streamlearn_baseline_loss_total"), "cumulative loss (baseline)")
    _plot(ax, x, run.get("streamlearn_regret"), "regret", color="black", lw=2)
    ax.axhline(0.0, color="grey", lw=0.5)
    ax.set_title("Cumulative loss and regret (against the shadow baseline)")
    ax.set_ylabel("loss")


def _quality_panel(ax: Axes, run: Run, x: np.ndarray) -> None:
    name = next(
        (n for n in ("streamlearn_rolling_accuracy", "streamlearn_rolling_mae") if run.has(n)),
        "streamlearn_rolling_accuracy",
    )
    _plot(ax, x, run.get(name), name.removeprefix("streamlearn_").replace("_", " "))
    glob = _increments(run.get("streamlearn_drift_detections_total", scope="global"))
    for i in np.flatnonzero(glob > 0):
        ax.axvline(x[i], color="red", lw=1, alpha=0.7)
    per_key = _increments(run.get("streamlearn_drift_detections_total", scope="key"))
    if per_key.any():
        twin = ax.twinx()
        twin.bar(x, per_key, width=(x[1] - x[0]) if len(x) > 1 else 0.1, color="orange", alpha=0.4)
        twin.set_ylabel("per-key drifts per sample", color="darkorange")
    ax.set_title("Rolling quality; red lines: global drift detections")
    ax.set_ylabel(name.removeprefix("streamlearn_rolling_"))


def _step_panel(ax: Axes, run: Run, x: np.ndarray) -> None:
    _plot(ax, x, run.get("streamlearn_step_size"), "step size eta")
    cap = run.get("streamlearn_step_cap")
    cap = np.where(cap > 0, cap, np.nan)  # 0: no curvature measured yet
    _plot(ax, x, cap, "curvature cap 2/(l_min+l_max)", ls="--")
    ax.set_yscale("log")
    ax.set_ylabel("rate")
    twin = ax.twinx()
    shown = _plot(twin, x, run.get("streamlearn_controller_error"), "PI error", color="purple")
    shown |= _plot(twin, x, run.get("streamlearn_hypergradient"), "hypergradient", color="green")
    if shown:
        twin.set_ylabel("controller signals")
        twin.legend(loc="lower right", fontsize=8)
    ax.set_title("Step size and its controls")


def _labels_panel(ax: Axes, run: Run, x: np.ndarray) -> None:
    _plot(ax, x, run.get("streamlearn_query_rate"), "queried share (measured)")
    _plot(ax, x, run.get("streamlearn_query_budget"), "budget", color="black", ls="--")
    ax.set_ylabel("share of unlabelled events")
    twin = ax.twinx()
    _plot(twin, x, run.get("streamlearn_queries_total"), "queries (cumulative)", color="tab:green")
    _plot(
        twin,
        x,
        run.get("streamlearn_label_answers_total", outcome="ok"),
        "answers learned",
        color="tab:olive",
    )
    twin.set_ylabel("labels")
    twin.legend(loc="lower right", fontsize=8)
    ax.set_title("Labels spent against the budget")


PANELS = {
    "loss_regret": _loss_panel,
    "quality_drift": _quality_panel,
    "step_size": _step_panel,
    "labels_budget": _labels_panel,
}


def summary(run: Run) -> dict[str, str]:
    """The run's last figures, for the page's table."""

    def last(name: str, **labels: str) -> float:
        v = run.get(name, **labels)
        v = v[~np.isnan(v)]
        return float(v[-1]) if len(v) else float("nan")

    return {
        "duration": f"{(run.t[-1] - run.t[0]) / 60:.1f} min ({len(run)} samples)",
        "events": f"{last('streamlearn_events_total'):,.0f}",
        "labels learned": f"{last('streamlearn_labels_total'):,.0f}",
        "cumulative loss": f"{last('streamlearn_loss_total'):,.1f}",
        "baseline loss": f"{last('streamlearn_baseline_loss_total'):,.1f}",
        "regret": f"{last('streamlearn_regret'):+,.1f}",
        "drifts (global / per key)": (
            f"{last('streamlearn_drift_detections_total', scope='global'):,.0f} / "
            f"{last('streamlearn_drift_detections_total', scope='key'):,.0f}"
        ),
        "queries / answers learned": (
            f"{last('streamlearn_queries_total'):,.0f} / "
            f"{last('streamlearn_label_answers_total', outcome='ok'):,.0f}"
        ),
        "meta-init version": f"{last('streamlearn_model_version'):.0f}",
    }


def render(run: Run, out_dir: Path, title: str = "streamlearn run") -> Report:
    """Write ``<panel>.png`` for each panel and ``report.html`` under ``out_dir``."""
    if len(run) < 2:
        raise ValueError(f"a report needs at least 2 samples, the run has {len(run)}")
    out_dir.mkdir(parents=True, exist_ok=True)
    x = _minutes(run)
    images = []
    for name, draw in PANELS.items():
        fig, ax = plt.subplots(figsize=(10, 3.6), dpi=100)
        draw(ax, run, x)
        ax.set_xlabel("minutes since the first sample")
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(loc="upper left", fontsize=8)
        fig.tight_layout()
        path = out_dir / f"{name}.png"
        fig.savefig(path)
        plt.close(fig)
        images.append(path)
    facts = summary(run)
    rows = "".join(
        f"<tr><th>{html.escape(k)}</th><td>{html.escape(v)}</td></tr>" for k, v in facts.items()
    )
    imgs = "".join(
        f'<figure><img alt="{p.stem}" src="data:image/png;base64,'
        f'{base64.b64encode(p.read_bytes()).decode()}"></figure>'
        for p in images
    )
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(run.t[0]))
    page = (
        "<!doctype html><html><head><meta charset='utf-8'>"
        f"<title>{html.escape(title)}</title><style>body{{font-family:sans-serif;"
        "max-width:1040px;margin:auto}th{text-align:left;padding-right:2em}"
        "img{max-width:100%}</style></head><body>"
        f"<h1>{html.escape(title)}</h1><p>from {when}</p><table>{rows}</table>{imgs}"
        "</body></html>"
    )
    page_path = out_dir / "report.html"
    page_path.write_text(page, encoding="utf-8")
    return Report(page_path, images, facts)
