import numpy as np
import torch
from river import datasets, evaluate, linear_model, metrics, preprocessing

from streamlearn.config import LearnerConfig, SharedConfig
from streamlearn.learning.learner import OnlineLearner
from streamlearn.model.spec import ModelSpec
from streamlearn.river_compat import SOLO_PROXIMAL_LAMBDA, StreamlearnClassifier
from streamlearn.wire.messages import EventBatch


def test_progressive_val_score_runs_unchanged_and_is_competitive():
    ours = evaluate.progressive_val_score(
        datasets.Phishing(), StreamlearnClassifier(), metrics.Accuracy()
    )
    river_lr = evaluate.progressive_val_score(
        datasets.Phishing(),
        preprocessing.StandardScaler() | linear_model.LogisticRegression(),
        metrics.Accuracy(),
    )
    assert ours.get() >= river_lr.get() - 0.03


def test_adapter_is_the_daemon_learner():
    data = list(datasets.Phishing().take(50))
    model = StreamlearnClassifier()
    spec = ModelSpec(len(data[0][0]))
    rules = LearnerConfig(shared=SharedConfig(enabled=False), proximal_lambda=SOLO_PROXIMAL_LAMBDA)
    assert model.learner_cfg == rules  # one key: no shared model (the mixture stays)
    ref = OnlineLearner(spec, rules, spec.init(kind="zeros"))
    for i, (x, y) in enumerate(data):
        row = np.array([list(x.values())], dtype=np.float32)
        p_ref = ref.predict(["river"], row)[0]
        assert abs(model.predict_proba_one(x)[True] - p_ref) < 1e-6
        model.learn_one(x, y)
        ref.process(EventBatch([str(i)], ["river"], np.zeros(1), row, np.array([float(y)])))
    assert model._learner is not None
    torch.testing.assert_close(model._learner.params_of("river"), ref.params_of("river"))


def test_multiclass_probabilities_sum_to_one():
    model = StreamlearnClassifier(n_classes=3)
    for i in range(30):
        model.learn_one({"a": float(i % 3), "b": 1.0}, i % 3)
    proba = model.predict_proba_one({"a": 2.0, "b": 1.0})
    assert set(proba) == {0, 1, 2}
    assert abs(sum(proba.values()) - 1.0) < 1e-6
    assert model.predict_one({"a": 2.0, "b": 1.0}) == 2
