"""streamlearn: online learning from drifting streams with a meta-learned starting point.

What a user composes, importable from here (loaded on first use, so ``import streamlearn``
and the command line stay light):

>>> import streamlearn
>>> cfg = streamlearn.load_config(overrides={"source": {"synthetic": {"n_keys": 5}}}, env={})
>>> from prometheus_client import CollectorRegistry
>>> streamlearn.Daemon(cfg, CollectorRegistry()).run(max_events=500)
0
"""

from __future__ import annotations

import importlib
from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING, Any

try:
    __version__ = version("streamlearn")
except PackageNotFoundError:  # run from a source tree that was never installed
    __version__ = "0+unknown"

_EXPORTS = {
    "Config": "streamlearn.config",
    "ConfigError": "streamlearn.config",
    "load_config": "streamlearn.config",
    "Daemon": "streamlearn.service.daemon",
    "OnlineLearner": "streamlearn.learning.learner",
    "ModelSpec": "streamlearn.model.spec",
    "Source": "streamlearn.io.base",
    "Sink": "streamlearn.io.base",
    "EventBatch": "streamlearn.wire.messages",
    "RawRecord": "streamlearn.wire.messages",
    "StreamlearnClassifier": "streamlearn.river_compat",
    "StreamlearnRegressor": "streamlearn.river_compat",
}

__all__ = [
    "Config",
    "ConfigError",
    "Daemon",
    "EventBatch",
    "ModelSpec",
    "OnlineLearner",
    "RawRecord",
    "Sink",
    "Source",
    "StreamlearnClassifier",
    "StreamlearnRegressor",
    "__version__",
    "load_config",
]

if TYPE_CHECKING:
    from streamlearn.config import Config, ConfigError, load_config
    from streamlearn.io.base import Sink, Source
    from streamlearn.learning.learner import OnlineLearner
    from streamlearn.model.spec import ModelSpec
    from streamlearn.river_compat import StreamlearnClassifier, StreamlearnRegressor
    from streamlearn.service.daemon import Daemon
    from streamlearn.wire.messages import EventBatch, RawRecord


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'streamlearn' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
