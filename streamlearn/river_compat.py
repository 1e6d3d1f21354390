"""The learner as a river estimator, so river's evaluation tools run on it unchanged.

One river model is one entity key: ``learn_one`` is a poll of one labelled event through
the same :class:`~streamlearn.learning.learner.OnlineLearner` the daemon uses (standardisation,
AdaGrad, proximal term), and ``predict_*_one`` read the current weights without changing
anything. The feature order is ``feature_names`` when given, else the first ``x``'s keys.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from river import base

from streamlearn.config import LearnerConfig, SharedConfig
from streamlearn.learning.learner import OnlineLearner
from streamlearn.model.spec import ModelSpec
from streamlearn.wire.messages import EventBatch

_KEY = "river"


SOLO_PROXIMAL_LAMBDA = 0.001


class _RiverAdapter:
    def __init__(
        self,
        task: str,
        n_classes: int,
        hidden: tuple[int, ...],
        learner: LearnerConfig | None,
        feature_names: list[Any] | None,
        seed: int,
    ) -> None:
        self.task = task
        self.n_classes = n_classes
        self.hidden = tuple(hidden)
        # One river model is one key: a shared model across keys would be the same key
        # learned twice (two AdaGrad steps per label), so it is off here. Without it the
        # proximal term pulls the one model towards its initial weights, so unless set, lambda
        # is the small one it had before the shared model's default (0.1) was chosen.
        cfg = learner or LearnerConfig()
        update: dict[str, Any] = {"shared": SharedConfig(enabled=False)}
        if "proximal_lambda" not in cfg.model_fields_set:
            update["proximal_lambda"] = SOLO_PROXIMAL_LAMBDA
        self.learner_cfg = cfg.model_copy(update=update)
        self.feature_names = list(feature_names) if feature_names else None
        self.seed = seed
        self._learner: OnlineLearner | None = None
        self._n = 0

    def _row(self, x: dict[Any, Any]) -> np.ndarray:
        if self.feature_names is None:
            self.feature_names = list(x)
        try:
            return np.array([[float(x[f]) for f in self.feature_names]], dtype=np.float32)
        except KeyError as exc:
            raise ValueError(f"feature {exc.args[0]!r} is missing from x") from None

    def _ensure(self, row: np.ndarray) -> OnlineLearner:
        if self._learner is None:
            spec = ModelSpec(row.shape[1], self.task, self.n_classes, self.hidden)  # type: ignore[arg-type]
            kind = "normal" if self.hidden else "zeros"
            self._learner = OnlineLearner(
                spec, self.learner_cfg, spec.init(seed=self.seed, kind=kind)
            )
        return self._learner

    def _learn(self, x: dict[Any, Any], y: float) -> None:
        row = self._row(x)
        learner = self._ensure(row)
        self._n += 1
        batch = EventBatch(
            [str(self._n)], [_KEY], np.zeros(1), row, np.array([y], dtype=np.float32)
        )
        learner.process(batch)

    def _predict(self, x: dict[Any, Any]) -> np.ndarray:
        row = self._row(x)
        out: np.ndarray = self._ensure(row).predict([_KEY], row)[0]
        return out


class StreamlearnClassifier(_RiverAdapter, base.Classifier):
    """Binary or multiclass classifier (``y`` in ``{False, True}``, ``{0, 1}`` or
    ``0..n_classes-1``).

    >>> from river import datasets, evaluate, metrics
    >>> model = StreamlearnClassifier()
    >>> metric = evaluate.progressive_val_score(
    ...     datasets.Phishing().take(300), model, metrics.Accuracy())
    >>> metric.get() > 0.8
    True
    """

    def __init__(
        self,
        n_classes: int = 2,
        hidden: tuple[int, ...] = (),
        learner: LearnerConfig | None = None,
        feature_names: list[Any] | None = None,
        seed: int = 0,
    ) -> None:
        task = "binary" if n_classes == 2 else "multiclass"
        super().__init__(task, n_classes, hidden, learner, feature_names, seed)
        self._bool_labels: bool | None = None

    @property
    def _multiclass(self) -> bool:
        return self.n_classes > 2

    def learn_one(self, x: dict[Any, Any], y: Any, **kwargs: Any) -> None:
        if self._bool_labels is None:
            self._bool_labels = isinstance(y, bool)
        self._learn(x, float(y))

    def predict_proba_one(self, x: dict[Any, Any], **kwargs: Any) -> dict[Any, float]:
        p = self._predict(x)
        if self.task == "binary":
            p1 = float(p)
            lo, hi = (False, True) if self._bool_labels in (None, True) else (0, 1)
            return {lo: 1.0 - p1, hi: p1}
        return {c: float(v) for c, v in enumerate(p)}


class StreamlearnRegressor(_RiverAdapter, base.Regressor):
    """Regressor (half squared error, linear or MLP).

    Targets are not rescaled: AdaGrad moves each weight by about ``learning_rate`` per step,
    so pick the rate on the scale of ``y`` (TrumpApproval's target is about 40).

    >>> from river import datasets, evaluate, metrics
    >>> model = StreamlearnRegressor(learner=LearnerConfig(learning_rate=5.0))
    >>> metric = evaluate.progressive_val_score(
    ...     datasets.TrumpApproval().take(1000), model, metrics.MAE())
    >>> metric.get() < 1.2
    True
    """

    def __init__(
        self,
        hidden: tuple[int, ...] = (),
        learner: LearnerConfig | None = None,
        feature_names: list[Any] | None = None,
        seed: int = 0,
    ) -> None:
        super().__init__("regression", 2, hidden, learner, feature_names, seed)

    def learn_one(self, x: dict[Any, Any], y: float, **kwargs: Any) -> None:
        self._learn(x, float(y))

    def predict_one(self, x: dict[Any, Any], **kwargs: Any) -> float:
        return float(self._predict(x))
