"""Small helpers shared by tests."""

from prometheus_client import CollectorRegistry


def sample(reg: CollectorRegistry, name: str, labels: dict[str, str] | None = None) -> float:
    """A sample's value; fails the test when the series does not exist."""
    value = reg.get_sample_value(name, labels)
    assert value is not None, f"no sample {name} {labels or ''}"
    return value
