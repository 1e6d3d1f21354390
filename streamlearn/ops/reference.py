"""The settings and metric references of ``docs/reference/``, generated from the code so
they cannot drift from it (a test regenerates them and compares).

``python -m streamlearn.ops.reference docs/reference`` writes both files.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry
from pydantic import BaseModel
from pydantic.fields import FieldInfo

from streamlearn.config import Config
from streamlearn.ops.metrics import Metrics


def _type_name(annotation: Any) -> str:
    text = getattr(annotation, "__name__", None) or str(annotation)
    return text.replace("typing.", "").replace("Annotated", "").replace("|", "or")


def _limits(info: FieldInfo) -> str:
    out = []
    for meta in info.metadata:
        for name, sign in (("gt", ">"), ("ge", ">="), ("lt", "<"), ("le", "<=")):
            value = getattr(meta, name, None)
            if value is not None:
                out.append(f"{sign} {value}")
    return ", ".join(out)


def _rows(model: type[BaseModel], prefix: str) -> list[str]:
    rows: list[str] = []
    defaults = model()
    for name, info in model.model_fields.items():
        path = f"{prefix}{name}"
        annotation = info.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            rows.extend(_rows(annotation, path + "."))
            continue
        value = getattr(defaults, name)
        shown = "(secret)" if "password" in name and value is not None else repr(value)
        if len(shown) > 60:
            shown = shown[:57] + "..."
        shown = shown.replace("|", "\\|")
        kind = _type_name(annotation).replace("|", "\\|")
        rows.append(f"| `{path}` | {kind} | `{shown}` | {_limits(info)} |")
    return rows


def config_reference() -> str:
    head = [
        "# Settings reference",
        "",
        "Generated from `streamlearn.config` (`python -m streamlearn.ops.reference "
        "docs/reference`); `config/default.yaml` says what each one is for. Any setting can",
        "be given in the YAML file or as `STREAMLEARN_<SECTION>__<NAME>`.",
        "",
        "| setting | type | default | allowed |",
        "|---|---|---|---|",
    ]
    return "\n".join([*head, *_rows(Config, "")]) + "\n"


def metrics_reference() -> str:
    registry = CollectorRegistry()
    Metrics(registry, "binary")
    rows = [
        "# Metric reference",
        "",
        "Generated from `streamlearn.ops.metrics` (`python -m streamlearn.ops.reference "
        "docs/reference`). Counters are exposed with the `_total` suffix; no metric carries a",
        "per-entity label. [Metrics](../metrics.md) says how to read them.",
        "",
        "| metric | type | labels | help |",
        "|---|---|---|---|",
    ]
    for family in sorted(registry.collect(), key=lambda f: f.name):
        labels = sorted(
            {k for s in family.samples for k in s.labels if k not in ("le", "quantile")}
        )
        shown = ", ".join(f"`{label}`" for label in labels)
        text = family.documentation.replace("|", "\\|")
        rows.append(f"| `{family.name}` | {family.type} | {shown} | {text} |")
    return "\n".join(rows) + "\n"


def write(directory: Path) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    out = [directory / "config.md", directory / "metrics.md"]
    out[0].write_text(config_reference())
    out[1].write_text(metrics_reference())
    return out


if __name__ == "__main__":
    for path in write(Path(sys.argv[1] if len(sys.argv) > 1 else "docs/reference")):
        print(path)
