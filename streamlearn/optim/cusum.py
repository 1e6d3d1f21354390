"""Page's CUSUM over rows of per-observation gains, for the two drift statistics of active
learning: the pacer's evidence that the model does no better than a coin, and the concept
memory's evidence for each remembered concept against the weights in force.

Both are log-likelihood-ratio CUSUMs against a fixed alternative, which river's detectors
(PageHinkley, ADWIN, KSWIN: changes in a stream's own mean or distribution) do not offer.
"""

from __future__ import annotations

import numpy as np


def cusum_paths(gains: np.ndarray, start: np.ndarray) -> np.ndarray:
    """``S_i = max(0, S_{i-1} + g_i)`` for every row of ``gains`` (``[k, n]``) from ``S_0 =
    start`` (``[k]``), all at once: ``S_i = C_i - min(-S_0, C_1 .. C_i)`` with ``C`` the
    running sum of the gains. Returns the path ``[k, n]``.

    >>> cusum_paths(np.array([[1.0, -3.0, 2.0], [-1.0, -1.0, 0.5]]), np.array([0.0, 1.5]))
    array([[1. , 0. , 2. ],
           [0.5, 0. , 0.5]])
    """
    run = np.cumsum(gains, axis=1)
    return np.asarray(
        run - np.minimum.accumulate(np.minimum(run, -np.asarray(start)[:, None]), axis=1)
    )
