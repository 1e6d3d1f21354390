import itertools
import math

import numpy as np

from streamlearn.config import FileSourceConfig, SyntheticSourceConfig
from streamlearn.io.files import replay
from streamlearn.io.memory import MemorySink, MemorySource
from streamlearn.io.synthetic import DriftingClassification, build_family
from streamlearn.wire.messages import EventDecoder


def _take(cfg, n):
    return list(itertools.islice(build_family(cfg), n))


def test_synthetic_streams_are_reproducible():
    for family, d in [
        ("drifting_classification", 8),
        ("sinusoid", 1),
        ("sea", 3),
        ("agrawal", 9),
        ("hyperplane", 10),
        ("rbf", 10),
    ]:
        cfg = SyntheticSourceConfig.model_validate(
            {"family": family, "n_features": d, "n_keys": 5, "segment_length": 50}
        )
        a, b = _take(cfg, 200), _take(cfg, 200)
        assert [e.event for e in a] == [e.event for e in b], family
        assert all(len(e.event["x"]) == d for e in a), family
        other = _take(cfg.model_copy(update={"seed": 7}), 200)
        assert [e.event for e in a] != [e.event for e in other], family


def test_classification_family_recurs_and_keys_share_structure():
    cfg = SyntheticSourceConfig(n_keys=20, n_concepts=3, segment_length=100, label_noise=0.0)
    events = _take(cfg, 700)
    concepts = [e.concept for e in events]
    assert [concepts[i] for i in range(0, 700, 100)] == [0, 1, 2, 0, 1, 2, 0]
    fam = DriftingClassification(cfg)
    w = fam.weights  # (keys, concepts, d)
    same = np.einsum("kd,jd->kj", w[:, 0], w[:, 0]).mean()
    across = np.einsum("kd,jd->kj", w[:, 0], w[:, 1]).mean()
    assert same > 0.8 > abs(across)
    assert len({e.event["key"] for e in events}) == 20


def test_gradual_drift_mixes_concepts_over_the_width():
    cfg = SyntheticSourceConfig(segment_length=1000, drift="gradual", gradual_width=400)
    concepts = np.array([e.concept for e in _take(cfg, 1200)])
    assert (concepts[:600] == 0).all()
    mid = concepts[700:900]
    assert 0.2 < (mid == 1).mean() < 0.8
    assert (concepts[1000:] == 1).all()


def test_label_fraction_withholds_labels_but_keeps_truth():
    cfg = SyntheticSourceConfig(label_fraction=0.3)
    events = _take(cfg, 2000)
    share = np.mean(["y" in e.event for e in events])
    assert 0.25 < share < 0.35
    assert all(e.y_true in (0, 1) for e in events)


def test_sinusoid_ranges():
    cfg = SyntheticSourceConfig(family="sinusoid", n_features=1, label_noise=0.0)
    for e in _take(cfg, 500):
        assert -5 <= e.event["x"][0] <= 5
        assert abs(e.event["y"]) <= 5


def test_sea_segments_cycle_variants():
    cfg = SyntheticSourceConfig(family="sea", n_features=3, n_keys=1, segment_length=10)
    assert [e.concept for e in _take(cfg, 50)][::10] == [0, 1, 2, 3, 0]


def test_csv_replay_with_label_column_and_withholding(tmp_path):
    p = tmp_path / "d.csv"
    rows = ["a,b,class"] + [f"{i},{i * 2},{i % 2}" for i in range(100)] + ["oops,1,0"]
    p.write_text("\n".join(rows) + "\n")
    cfg = FileSourceConfig(path=str(p), withhold_label_fraction=0.5, seed=1)
    events = list(replay(cfg))
    assert len(events) == 101
    assert events[3].event["x"] == [3.0, 6.0]
    assert events[3].y_true == 1.0
    labelled = sum("y" in e.event for e in events)
    assert 30 < labelled < 70
    src = MemorySource(iter(events), topic="file")
    batch, dead = EventDecoder(n_features=2).decode(src.poll(1000, 0.1))
    assert len(batch) == 100
    assert dead[0].reason == "wrong_type"
    assert dead[0].origin.offset == 100


def test_jsonl_replay_with_key_and_id_columns(tmp_path):
    p = tmp_path / "d.jsonl"
    p.write_text('{"k":"a","i":"x1","f":1.5,"y":0}\n\n{"k":"b","i":"x2","f":2.5,"y":1}\n')
    cfg = FileSourceConfig(path=str(p), label_column="y", key_column="k", id_column="i")
    events = [e.event for e in replay(cfg)]
    assert events == [
        {"id": "x1", "key": "a", "ts": 0.0, "x": [1.5], "y": 0},
        {"id": "x2", "key": "b", "ts": 1.0, "x": [2.5], "y": 1},
    ]


def test_memory_source_rate_and_sink_bounds():
    src = MemorySource(iter([{"id": str(i)} for i in range(10)]), rate=1000.0)
    got = []
    while not src.exhausted:
        got += src.poll(4, 0.1)
    assert [r.origin.offset for r in got] == list(range(10))
    sink = MemorySink(capacity=3)
    sink.predictions(list(range(5)))  # type: ignore[arg-type]
    assert sink.n_predictions == 5
    assert len(sink.recent_predictions) == 3
    assert math.isnan(float("nan"))
