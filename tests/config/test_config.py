from pathlib import Path

import pytest

from streamlearn.config import ConfigError, dump_config, env_overrides, load_config
from tests.helpers import run_cli


def _write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "c.yaml"
    p.write_text(text)
    return p


def test_default_file_loads_and_matches_model_defaults():
    cfg = load_config(env={})
    assert cfg.source.kind == "synthetic"
    assert cfg.model.n_features == cfg.source.synthetic.n_features
    assert dump_config(cfg)["drift"]["global"] is True


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("learner:\n  learning_rat: 0.1\n", "unknown setting 'learner.learning_rat'"),
        ("learner:\n  learning_rate: -1\n", "learner.learning_rate = -1"),
        ("learner:\n  learning_rate: fast\n", "learner.learning_rate = 'fast'"),
        ("drift:\n  detector: magic\n", "drift.detector = 'magic'"),
        ("metrics:\n  port: 70000\n", "metrics.port = 70000"),
        ("model:\n  hidden: [0]\n", "model.hidden.0 = 0"),
        ("source:\n  kind: file\n", "source.file.path must be set"),
        ("model:\n  n_features: 3\n", "does not match source.synthetic.family"),
        ("drift:\n  kswin_stat_size: 200\n", "drift.kswin_stat_size (200)"),
    ],
)
def test_bad_values_fail_with_one_line_naming_the_setting(tmp_path, text, needle):
    with pytest.raises(ConfigError) as err:
        load_config(_write(tmp_path, text), env={})
    msg = str(err.value)
    assert needle in msg
    assert "\n" not in msg


def test_wrong_type_is_not_coerced(tmp_path):
    with pytest.raises(ConfigError, match=r"service.torch_threads = '2'"):
        load_config(_write(tmp_path, "service:\n  torch_threads: '2'\n"), env={})


def test_env_overrides_are_typed_and_nested():
    cfg = load_config(
        env={
            "STREAMLEARN_LEARNER__LEARNING_RATE": "0.25",
            "STREAMLEARN_DRIFT__DETECTOR": "page_hinkley",
            "STREAMLEARN_DRIFT__GLOBAL": "false",
            "HOME": "/root",
        }
    )
    assert cfg.learner.learning_rate == 0.25
    assert cfg.drift.detector == "page_hinkley"
    assert cfg.drift.global_ is False


def test_env_override_of_unknown_setting_fails():
    with pytest.raises(ConfigError, match=r"unknown setting 'learner\.nope'"):
        load_config(env={"STREAMLEARN_LEARNER__NOPE": "1"})
    assert env_overrides({"OTHER": "1"}) == {}


def test_unreadable_and_invalid_files(tmp_path):
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "missing.yaml", env={})
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(_write(tmp_path, "a: [1\n"), env={})
    with pytest.raises(ConfigError, match="mapping at the top"):
        load_config(_write(tmp_path, "- 1\n"), env={})


def test_sinusoid_family_needs_a_regression_model(tmp_path):
    text = (
        "source:\n  synthetic:\n    family: sinusoid\nmodel:\n  task: regression\n  n_features: 1\n"
    )
    cfg = load_config(_write(tmp_path, text), env={})
    assert cfg.model.task == "regression"


def _laughs() -> str:
    lines = ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for i in range(1, 9):
        prev, cur = chr(ord("a") + i - 1), chr(ord("a") + i)
        lines.append(f"{cur}: &{cur} [" + ",".join([f"*{prev}"] * 9) + "]")
    return "\n".join([*lines, "model:\n  hidden: *i"]) + "\n"


@pytest.mark.parametrize(
    ("content", "needle"),
    [
        (bytes(range(256)) * 4, "is not UTF-8 text"),
        (b"learner:\n  learning_rate: .inf\n", "learner.learning_rate = inf"),
        (b"learner:\n  learning_rate: .nan\n", "learner.learning_rate = nan"),
        (b"drift:\n  ph_delta: .inf\n", "drift.ph_delta = inf"),
        (b"learner:\n  learning_rate: [1,\n  b: 2\n", "not valid YAML: expected ',' or ']'"),
        (b"a:\n\tb: 1\n", "not valid YAML"),
        (_laughs().encode(), "aliases (*name) are not allowed"),
        (b"model:\n  hidden: " + b"[" * 5000 + b"]" * 5000 + b"\n", "nested too deeply"),
        (b"x: " + b"y" * (2 << 20) + b"\n", "is over 1,048,576 bytes"),
        (b"\x00\x01\x02", "not valid YAML"),
    ],
)
def test_any_bad_file_fails_with_one_bounded_line(tmp_path, content, needle):
    conf = tmp_path / "bad.yaml"
    conf.write_bytes(content)
    res = run_cli("config", "--config", str(conf))
    assert res.returncode == 2, res.stderr[-500:]
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1, res.stderr[-2000:]
    assert needle in lines[0]
    assert len(lines[0]) <= 320


def test_non_finite_numbers_are_refused_from_the_environment_too():
    with pytest.raises(ConfigError, match=r"learner\.learning_rate = inf: .*finite"):
        load_config(env={"STREAMLEARN_LEARNER__LEARNING_RATE": ".inf"})
