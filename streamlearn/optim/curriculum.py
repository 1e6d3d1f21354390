"""Curriculum: a per-sample step multiplier, a logistic function of how hard the sample is.

Hardness is the signed margin for classification (``(2y - 1) * logit`` for binary; the true
class's logit minus the best other one for multiclass) and minus the normalised residual
``|y - f| / scale`` for regression. The multiplier is
``floor + (1 - floor) * sigmoid(steepness * (margin - midpoint))``: samples far on the wrong
side of ``midpoint`` (confidently wrong: label noise, outliers) get steps near ``floor``,
the rest near full steps.
"""

from __future__ import annotations

import numpy as np

from streamlearn.model.spec import ModelSpec


def margins(spec: ModelSpec, p: np.ndarray, y: np.ndarray, scale: float = 1.0) -> np.ndarray:
    """Signed margin per lane from the predictions ``p`` (``[L, outputs]``, as
    :func:`streamlearn.model.lanes.grad` returns them): the logit of the true class against the
    best other one, or ``-|y - f| / scale`` for regression.

    >>> spec = ModelSpec(1)
    >>> p = np.full((2, 1), 1 / (1 + np.exp(-2.0)))
    >>> [round(v, 6) for v in margins(spec, p, np.array([1.0, 0.0])).tolist()]
    [2.0, -2.0]
    """
    if spec.task == "regression":
        return np.asarray(-np.abs(y - p[:, 0]) / max(scale, 1e-12))
    logp = np.log(np.clip(p, 1e-12, 1.0))
    if spec.task == "binary":
        logit = logp[:, 0] - np.log(np.clip(1.0 - p[:, 0], 1e-12, 1.0))
        return np.asarray((2.0 * y - 1.0) * logit)
    cls = y.astype(np.int64)
    rows = np.arange(len(cls))
    others = logp.copy()
    others[rows, cls] = -np.inf
    return np.asarray(logp[rows, cls] - others.max(1))


def curriculum_weight(
    margin: np.ndarray, midpoint: float, steepness: float, floor: float
) -> np.ndarray:
    """Step multiplier in ``[floor, 1]``.

    >>> w = curriculum_weight(np.array([-10.0, -2.0, 5.0]), midpoint=-2.0, steepness=2.0, floor=0.1)
    >>> [round(v, 3) for v in w.tolist()]
    [0.1, 0.55, 1.0]
    """
    if not 0.0 <= floor <= 1.0:
        raise ValueError(f"learner.curriculum.floor must be in [0, 1], got {floor}")
    if steepness <= 0:
        raise ValueError(f"learner.curriculum.steepness must be > 0, got {steepness}")
    z = np.clip(steepness * (margin - midpoint), -60.0, 60.0)
    return floor + (1.0 - floor) / (1.0 + np.exp(-z))
