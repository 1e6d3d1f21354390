"""One typed, validated configuration tree: YAML file + ``STREAMLEARN_*`` environment overrides.

Every model forbids unknown keys and is strict about types, so a typo or a wrong type fails
at start. :func:`load_config` turns any validation failure into a :class:`ConfigError` whose
message is one line naming the setting, the bad value and what is allowed.

Environment overrides use ``__`` between levels and are parsed as YAML scalars::

    STREAMLEARN_LEARNER__LEARNING_RATE=0.05  ->  learner.learning_rate = 0.05
    STREAMLEARN_DRIFT__DETECTOR=page_hinkley ->  drift.detector = "page_hinkley"
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import Field, ValidationError, model_validator

from streamlearn.config.base import PositiveFloat, Probability, _Strict
from streamlearn.config.kafka import (
    KafkaConfig,
    KafkaSecurityConfig,
    ProducerConfig,
    TopicsConfig,
)
from streamlearn.config.learning import (
    ActiveConfig,
    ControllerConfig,
    CurriculumConfig,
    CurvatureConfig,
    HypergradientConfig,
    LambdaTuningConfig,
    LearnerConfig,
    LinearExpertConfig,
    MixtureConfig,
    PacingConfig,
    RecallConfig,
    SharedConfig,
    SplineExpertConfig,
)

ENV_PREFIX = "STREAMLEARN_"
# Starting points a meta-init pool may hold (streamlearn.model.spec and meta.pool_size).
MAX_POOL = 64
MAX_CONFIG_BYTES = 1 << 20
MAX_ERROR_CHARS = 300
# Settings whose values are never printed (errors, logs, ``streamlearn config``).
SECRET_FIELDS = frozenset({"sasl_password", "ssl_password"})
# Sections whose values no error prints: a secret given in the wrong place is still one.
_UNPRINTED = SECRET_FIELDS | {"security"}
DEFAULT_CONFIG = Path(__file__).resolve().parents[2] / "config" / "default.yaml"

__all__ = [
    "ActiveConfig",
    "Config",
    "ConfigError",
    "ControllerConfig",
    "CurriculumConfig",
    "CurvatureConfig",
    "HypergradientConfig",
    "KafkaConfig",
    "KafkaSecurityConfig",
    "LambdaTuningConfig",
    "LearnerConfig",
    "LinearExpertConfig",
    "MixtureConfig",
    "PacingConfig",
    "ProducerConfig",
    "RecallConfig",
    "SharedConfig",
    "SplineExpertConfig",
    "TopicsConfig",
    "load_config",
    "merge_overrides",
]


class ConfigError(ValueError):
    """A configuration value was rejected; the message is one readable line."""


class SyntheticSourceConfig(_Strict):
    """A seeded in-process stream (see :mod:`streamlearn.io.synthetic`)."""

    family: Literal[
        "drifting_classification", "sinusoid", "sea", "agrawal", "hyperplane", "rbf"
    ] = "drifting_classification"
    seed: int = 42
    n_keys: Annotated[int, Field(ge=1, le=10_000_000)] = 100
    n_features: Annotated[int, Field(ge=1, le=4096)] = 8
    n_concepts: Annotated[int, Field(ge=1, le=1000)] = 3
    segment_length: Annotated[int, Field(ge=1)] = 20_000
    drift: Literal["abrupt", "gradual"] = "abrupt"
    gradual_width: Annotated[int, Field(ge=1)] = 2_000
    key_perturbation: Annotated[float, Field(ge=0)] = 0.3
    label_noise: Probability = 0.05
    label_fraction: Probability = 1.0
    max_events: Annotated[int, Field(ge=0)] = 0
    rate: Annotated[float, Field(ge=0)] = 0.0


class FileSourceConfig(_Strict):
    """Replay of a CSV or JSONL file in row order."""

    path: str = ""
    format: Literal["auto", "csv", "jsonl"] = "auto"
    label_column: str = "class"
    key_column: str | None = None
    id_column: str | None = None
    features: list[str] | None = None
    withhold_label_fraction: Probability = 0.0
    seed: int = 0
    rate: Annotated[float, Field(ge=0)] = 0.0


class SourceConfig(_Strict):
    kind: Literal["synthetic", "file", "kafka"] = "synthetic"
    batch_size: Annotated[int, Field(ge=1, le=1_000_000)] = 500
    # The last this-many distinct event ids: a repeat among them (a producer's retry) is
    # dropped before it is predicted or learned; 0 turns it off (the wire contract says why).
    dedup_window: Annotated[int, Field(ge=0, le=10_000_000)] = 20_000
    synthetic: SyntheticSourceConfig = SyntheticSourceConfig()
    file: FileSourceConfig = FileSourceConfig()

    @model_validator(mode="after")
    def _file_needs_path(self) -> SourceConfig:
        if self.kind == "file" and not self.file.path:
            raise ValueError("source.file.path must be set when source.kind is 'file'")
        return self


class CheckpointConfig(_Strict):
    """Where and how often state is saved; offsets are committed only after a save."""

    dir: str = ""
    every_events: Annotated[int, Field(ge=1)] = 20_000
    every_seconds: PositiveFloat = 10.0
    keep: Annotated[int, Field(ge=1, le=1000)] = 3
    # 0: every checkpoint is fsynced before its offsets are committed. > 0: checkpoints in
    # between are written and renamed but fsynced at most this often (the newest fsynced
    # one is kept through rotation): a killed process loses nothing, and after a lost
    # machine the daemon resumes from the fsynced one and replays from its offsets.
    fsync_every_s: Annotated[float, Field(ge=0)] = 0.0


class MetaConfig(_Strict):
    """Background re-meta-training of ``theta0`` on the tasks the stream has shown."""

    enabled: bool = True
    # A run after this many labels (a few thousand: a service's first minutes) ...
    every_labels: Annotated[int, Field(ge=1)] = 5_000
    every_seconds: PositiveFloat = 300.0
    method: Literal["maml", "imaml"] = "maml"
    steps: Annotated[int, Field(ge=1)] = 300
    tasks_per_step: Annotated[int, Field(ge=1)] = 16
    support: Annotated[int, Field(ge=1)] = 10
    query: Annotated[int, Field(ge=1)] = 10
    # online: a task's examples one step each in arrival order, scored prequentially (the
    # daemon's own rule, streamlearn.meta.maml); batch: inner_steps steps on the whole support.
    inner_order: Literal["online", "batch"] = "online"
    inner_steps: Annotated[int, Field(ge=1, le=100)] = 1
    outer_lr: PositiveFloat = 3e-3
    first_order: bool = False
    held_out_tasks: Annotated[int, Field(ge=1)] = 100
    min_improvement: Annotated[float, Field(ge=0, lt=1)] = 0.01
    # The candidate's per-parameter rates drive the online steps (what a key's first labels
    # move it by); off: learner.learning_rate for every parameter.
    use_learned_rates: bool = True
    # > 1: each run also meta-trains a pool of this many starts (tasks clustered by the way
    # their fits move; each start warm-started from the candidate for pool_steps steps),
    # installed with a promotion when it beats the candidate alone on the held-out entities;
    # drift resets then choose among them (streamlearn.meta.pool). 1: no pool.
    pool_size: Annotated[int, Field(ge=1, le=MAX_POOL)] = 1
    pool_steps: Annotated[int, Field(ge=1)] = 100
    buffer_per_task: Annotated[int, Field(ge=2)] = 200
    buffer_tasks: Annotated[int, Field(ge=1)] = 2000
    device: Literal["auto", "cpu", "cuda"] = "auto"
    threads: Annotated[int, Field(ge=1, le=64)] = 1
    # The worker rests between outer steps so it is busy at most this share of the time: on
    # a small machine the stream keeps its core (bench/meta_background.py).
    duty_cycle: Annotated[float, Field(gt=0, le=1)] = 0.5


class ModelConfig(_Strict):
    """The adapted model: an MLP (tanh, two hidden layers of 32 by default); ``hidden=[]`` is
    a linear model."""

    task: Literal["binary", "multiclass", "regression"] = "binary"
    n_features: Annotated[int, Field(ge=1, le=4096)] = 8
    feature_names: list[str] | None = None
    n_classes: Annotated[int, Field(ge=2, le=10_000)] = 2
    hidden: list[Annotated[int, Field(ge=1, le=4096)]] = Field(default_factory=lambda: [32, 32])
    activation: Literal["tanh", "relu"] = "tanh"
    standardize: bool = True
    init: Literal["zeros", "normal"] = "normal"
    init_scale: Annotated[float, Field(ge=0)] = 1.0
    seed: int = 0

    @model_validator(mode="after")
    def _names_match(self) -> ModelConfig:
        names = self.feature_names
        if names is not None and len(names) != self.n_features:
            raise ValueError(
                f"model.feature_names has {len(names)} names but model.n_features is "
                f"{self.n_features}"
            )
        if self.init == "zeros" and self.hidden:
            raise ValueError("model.init 'zeros' cannot break symmetry with hidden layers")
        return self


class DriftConfig(_Strict):
    """River detectors over the prequential error (classification) or loss (regression)."""

    detector: Literal["adwin", "page_hinkley", "kswin"] = "adwin"
    per_key: bool = True
    global_: bool = Field(default=True, alias="global")
    on_global_drift: Literal["reset_all", "none"] = "none"
    adwin_delta: Annotated[float, Field(gt=0, lt=1)] = 0.002
    ph_threshold: PositiveFloat = 50.0
    ph_delta: Annotated[float, Field(ge=0)] = 0.005
    ph_min_instances: Annotated[int, Field(ge=1)] = 30
    kswin_alpha: Annotated[float, Field(gt=0, lt=1)] = 0.005
    kswin_window_size: Annotated[int, Field(ge=10)] = 100
    kswin_stat_size: Annotated[int, Field(ge=2)] = 30
    recovery_window: Annotated[int, Field(ge=10)] = 500
    recovery_tolerance: Annotated[float, Field(ge=0)] = 0.02
    recovery_max_labels: Annotated[int, Field(ge=1)] = 50_000
    # With a meta-init pool: a reset's start is chosen on the last select_window labels
    # (a key's own, when it has select_min_labels of them there; else theta0).
    select_window: Annotated[int, Field(ge=1, le=100_000)] = 300
    select_min_labels: Annotated[int, Field(ge=1)] = 5

    @model_validator(mode="after")
    def _kswin_sizes(self) -> DriftConfig:
        if self.kswin_stat_size >= self.kswin_window_size:
            raise ValueError(
                f"drift.kswin_stat_size ({self.kswin_stat_size}) must be below "
                f"drift.kswin_window_size ({self.kswin_window_size})"
            )
        return self


class MetricsConfig(_Strict):
    enabled: bool = True
    host: str = "127.0.0.1"
    port: Annotated[int, Field(ge=0, le=65535)] = 9108
    rolling_window: Annotated[int, Field(ge=10, le=1_000_000)] = 1000
    baseline: Literal["global_model", "none"] = "global_model"
    baseline_batch: Annotated[int, Field(ge=1, le=100_000)] = 32
    # A JSON-lines log of every metric for `streamlearn report` ("": none).
    log_path: str = ""
    log_every_s: PositiveFloat = 5.0


class ServiceConfig(_Strict):
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    status_interval_s: PositiveFloat = 5.0
    poll_timeout_s: PositiveFloat = 0.5
    torch_threads: Annotated[int, Field(ge=1, le=256)] = 1
    # Move the objects alive when the loop starts (torch's and the libraries', ~400k) out
    # of the collector's reach: a full collection over them paused the loop ~200 ms.
    gc_freeze: bool = True


class Config(_Strict):
    """The whole configuration tree.

    >>> cfg = load_config(overrides={"learner": {"learning_rate": 0.2}}, env={})
    >>> cfg.learner.learning_rate
    0.2
    """

    service: ServiceConfig = ServiceConfig()
    source: SourceConfig = SourceConfig()
    model: ModelConfig = ModelConfig()
    learner: LearnerConfig = LearnerConfig()
    drift: DriftConfig = DriftConfig()
    metrics: MetricsConfig = MetricsConfig()
    kafka: KafkaConfig = KafkaConfig()
    checkpoint: CheckpointConfig = CheckpointConfig()
    meta: MetaConfig = MetaConfig()
    active: ActiveConfig = ActiveConfig()

    @model_validator(mode="after")
    def _consistent(self) -> Config:
        syn = self.source.synthetic
        if self.source.kind == "synthetic":
            expected = _synthetic_shape(syn)
            got = (self.model.task, self.model.n_features)
            if expected != got:
                raise ValueError(
                    f"model (task={got[0]!r}, n_features={got[1]}) does not match "
                    f"source.synthetic.family {syn.family!r}, which yields task={expected[0]!r}, "
                    f"n_features={expected[1]}"
                )
        if self.kafka.handoff and self.learner.max_keys == 0:
            raise ValueError(
                "kafka.handoff needs learner.max_keys > 0: keys taken over from another "
                "replica land in the spill store"
            )
        a = self.active
        if (
            a.enabled
            and a.policy in ("uncertainty", "combined")
            and self.model.task == "regression"
        ):
            raise ValueError(
                f"active.policy {a.policy!r} needs class probabilities; for a regression model "
                "use 'sensitivity' or 'random'"
            )
        needs_lambda = a.policy in ("sensitivity", "combined") or a.lambda_tuning.enabled
        if a.enabled and needs_lambda and self.learner.proximal_lambda <= 0:
            raise ValueError(
                f"active.policy {a.policy!r} and active.lambda_tuning differentiate in "
                f"learner.proximal_lambda, which must be > 0 (got {self.learner.proximal_lambda})"
            )
        return self


def _synthetic_shape(syn: SyntheticSourceConfig) -> tuple[str, int]:
    fixed = {"sea": 3, "agrawal": 9, "sinusoid": 1}
    task = "regression" if syn.family == "sinusoid" else "binary"
    return task, fixed.get(syn.family, syn.n_features)


class _ConfigLoader(yaml.SafeLoader):
    """Safe YAML without aliases: a configuration has no use for them, and nested ones
    expand exponentially (a few hundred bytes become gigabytes)."""

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            raise yaml.MarkedYAMLError(
                problem="aliases (*name) are not allowed in a configuration",
                problem_mark=self.peek_event().start_mark,  # type: ignore[no-untyped-call]
            )
        return super().compose_node(parent, index)


def _read_yaml(file: Path) -> Any:
    """The YAML of ``file``: any failure as a one-line ConfigError naming the file."""
    name = repr(str(file))
    try:
        with file.open("rb") as fh:
            raw = fh.read(MAX_CONFIG_BYTES + 1)
    except OSError as exc:
        raise ConfigError(f"config error: cannot read {name}: {exc.strerror}") from None
    if len(raw) > MAX_CONFIG_BYTES:
        raise ConfigError(f"config error: {name} is over {MAX_CONFIG_BYTES:,} bytes")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"config error: {name} is not UTF-8 text (byte {exc.start})") from None
    try:
        return yaml.load(text, Loader=_ConfigLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ConfigError(
            _bounded(f"config error: {name} is not valid YAML: {exc.problem}{where}")
        ) from None
    except RecursionError:
        raise ConfigError(f"config error: {name} is nested too deeply to read") from None
    except yaml.YAMLError as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ConfigError(_bounded(f"config error: {name} is not valid YAML: {first}")) from None


def _bounded(line: str) -> str:
    line = " ".join(line.split())  # one line, whatever the parts held
    return line if len(line) <= MAX_ERROR_CHARS else line[: MAX_ERROR_CHARS - 3] + "..."


def _shown(value: Any, loc: tuple[Any, ...]) -> str | None:
    """The bad value as the error may print it: scalars only (a mapping or list may hold a
    secret), never a secret field's, and bounded."""
    if any(str(part) in _UNPRINTED for part in loc):
        return None
    if value is None or isinstance(value, (bool, int, float, str)):
        text = repr(value)
        return text if len(text) <= 80 else text[:77] + "..."
    return None


def _format_error(err: ValidationError) -> str:
    first = err.errors()[0]
    loc = ".".join(str(p) for p in first["loc"] if p != "__root__")
    msg = str(first["msg"]).removeprefix("Value error, ")
    if first["type"] == "extra_forbidden":
        return _bounded(
            f"config error: unknown setting {loc!r} (check the spelling; see config/default.yaml)"
        )
    if not loc:
        return _bounded(f"config error: {msg}")
    shown = _shown(first.get("input"), tuple(first["loc"]))
    if shown is None:
        return _bounded(f"config error: {loc}: {msg}")
    return _bounded(f"config error: {loc} = {shown}: {msg}")


def merge_overrides(base: dict[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    """``extra`` on top of ``base``, nested sections merged key by key (a copy).

    >>> merge_overrides({"learner": {"a": 1, "b": 2}}, {"learner": {"b": 3}})
    {'learner': {'a': 1, 'b': 3}}
    """
    out = dict(base)
    for k, v in extra.items():
        if isinstance(v, Mapping) and isinstance(out.get(k), dict):
            out[k] = merge_overrides(out[k], v)
        else:
            out[k] = v
    return out


def env_overrides(env: Mapping[str, str]) -> dict[str, Any]:
    """``STREAMLEARN_A__B=v`` -> ``{"a": {"b": yaml(v)}}``; the path is validated later."""
    tree: dict[str, Any] = {}
    for name, raw in env.items():
        if not name.startswith(ENV_PREFIX):
            continue
        path = [p.lower() for p in name[len(ENV_PREFIX) :].split("__")]
        if not all(path):
            raise ConfigError(f"config error: malformed environment override {name!r}")
        value: Any = raw
        if path[-1] not in SECRET_FIELDS and raw != "":  # a secret is the text as given
            try:
                value = yaml.load(raw, Loader=_ConfigLoader)  # safe, no aliases
            except (yaml.YAMLError, RecursionError):
                value = raw
        node = tree
        for part in path[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"config error: conflicting environment override {name!r}")
        node[path[-1]] = value
    return tree


def load_config(
    path: str | os.PathLike[str] | None = None,
    *,
    overrides: Mapping[str, Any] | None = None,
    env: Mapping[str, str] | None = None,
) -> Config:
    """Load ``path`` (default: ``config/default.yaml`` when present), apply env and overrides."""
    data: dict[str, Any] = {}
    file = Path(path) if path is not None else DEFAULT_CONFIG
    if path is not None or file.exists():
        loaded = _read_yaml(file)
        if loaded is not None and not isinstance(loaded, dict):
            raise ConfigError(f"config error: {str(file)!r} must hold a mapping at the top")
        data = loaded or {}
    data = merge_overrides(data, env_overrides(os.environ if env is None else env))
    if overrides:
        data = merge_overrides(data, overrides)
    try:
        return Config.model_validate(data)
    except ValidationError as err:
        raise ConfigError(_format_error(err)) from None


def dump_config(cfg: Config) -> dict[str, Any]:
    """The validated tree as plain data (what ``streamlearn config`` prints)."""
    return cfg.model_dump(mode="json", by_alias=True)
