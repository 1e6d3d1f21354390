"""The generated references in docs/reference/ are what the code says today."""

from pathlib import Path

from streamlearn.ops.reference import config_reference, metrics_reference

REFERENCE = Path(__file__).resolve().parents[2] / "docs" / "reference"


def test_the_settings_and_metric_references_are_current():
    hint = "regenerate: python -m streamlearn.ops.reference docs/reference"
    assert (REFERENCE / "config.md").read_text() == config_reference(), hint
    assert (REFERENCE / "metrics.md").read_text() == metrics_reference(), hint
