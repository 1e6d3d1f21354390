"""The rolling mean against a deque of its window (the oracle)."""

import random
from collections import deque

import pytest

from streamlearn.service.rolling import RollingMean


def test_rolling_mean_matches_the_mean_of_its_window_for_any_chunk_sizes() -> None:
    rng = random.Random(0)
    for _ in range(200):
        window = rng.randint(1, 50)
        rolling, oracle = RollingMean(window), deque[float](maxlen=window)
        for _ in range(20):
            chunk = [rng.random() for _ in range(rng.randint(0, 120))]
            rolling.extend(chunk)
            oracle.extend(chunk)
            assert len(rolling) == len(oracle)
            if oracle:
                assert rolling.value == pytest.approx(sum(oracle) / len(oracle), abs=1e-9)
