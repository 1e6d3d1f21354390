"""Active learning in the daemon: per-key dw*/dlambda (against re-solved problems), forward
sensitivities (against torch.func.jvp), lambda tuning's direction, the shared model's step,
and the query -> answer -> learn loop in process (oracle, malformed/unknown/late/duplicate
answers, regret against the published prediction, checkpoint round trip)."""

import numpy as np
import orjson
import pytest
import torch
from prometheus_client import CollectorRegistry
from torch.func import jvp

from streamlearn.active.lambda_watch import DENSE_PARAMS, LambdaWatch, key_derivatives
from streamlearn.active.loop import ActiveLearning
from streamlearn.active.oracle import Oracle, read_truth
from streamlearn.active.pending import Pending, PendingQueries
from streamlearn.active.policy import QueryPolicy
from streamlearn.config import (
    ActiveConfig,
    ConfigError,
    CurvatureConfig,
    LearnerConfig,
    SharedConfig,
    load_config,
)
from streamlearn.io.memory import MemorySink, MemorySource
from streamlearn.io.synthetic import build_family
from streamlearn.learning.learner import OnlineLearner
from streamlearn.meta.implicit import solve_inner
from streamlearn.meta.maml import mean_loss
from streamlearn.model import lanes
from streamlearn.model.spec import ModelSpec
from streamlearn.service.daemon import Daemon
from streamlearn.service.outcomes import prediction_loss
from streamlearn.testing import LoopbackSource, recording_truth
from tests.helpers import event_batch, sample, with_linear

SPECS = [
    ModelSpec(3, "binary"),
    ModelSpec(3, "multiclass", n_classes=3, hidden=(4,), activation="relu"),
    ModelSpec(3, "regression", hidden=(5,)),
]


@pytest.mark.parametrize("spec", SPECS, ids=repr)
def test_directional_derivative_matches_torch_jvp(spec):
    g = torch.Generator().manual_seed(0)
    w = torch.randn(6, spec.n_params, generator=g, dtype=torch.float64)
    t = torch.randn(6, spec.n_params, generator=g, dtype=torch.float64)
    x = torch.randn(6, 3, generator=g, dtype=torch.float64)
    ours = lanes.directional(spec, w.numpy(), t.numpy(), x.numpy())
    for i in range(6):

        def predict(v, i=i):
            return spec.predict_from_logits(spec.forward_one(v, x[i]))

        ref = jvp(predict, (w[i],), (t[i],))[1]
        np.testing.assert_allclose(ours[i], ref.numpy(), rtol=1e-9, atol=1e-12)


def _key_data(spec, n_keys, m, seed):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n_keys, m, spec.n_features, generator=g, dtype=torch.float64)
    score = x @ torch.linspace(-1.0, 1.5, spec.n_features, dtype=torch.float64)
    if spec.task == "regression":
        y = score + 0.3 * torch.randn(n_keys, m, generator=g, dtype=torch.float64)
    else:
        y = ((score + 0.8 * torch.randn(n_keys, m, generator=g, dtype=torch.float64)) > 0).double()
    return x, y


@pytest.mark.parametrize(
    "spec",
    [ModelSpec(3, "binary"), ModelSpec(8, "regression", hidden=(8,))],
    ids=["dense-hessian", "cg-on-hvps"],
)
def test_key_derivatives_match_resolved_problems(spec):
    """Per key: w* = the L-BFGS solution, dw*/dlambda and dL_val/dlambda = central finite
    differences of problems re-solved at lambda +- h."""
    assert (spec.n_params <= DENSE_PARAMS) == (spec.hidden == ())
    k, m, lam, h = 3, 24, 0.5, 1e-3
    x, y = _key_data(spec, k, m, seed=1)
    train = torch.zeros(k, m, dtype=torch.float64)
    train[:, :18] = 1.0
    val = 1.0 - train
    val[2, 22:] = 0.0  # keys hold different numbers of rows (padding is in neither mask)
    g = torch.Generator().manual_seed(2)
    anchor = 0.3 * torch.randn(k, spec.n_params, generator=g, dtype=torch.float64)

    def solve(i, lam_):
        rows = train[i] > 0
        return solve_inner(spec, lam_, anchor[i], x[i][rows], y[i][rows], max_iter=2000, tol=1e-14)

    start = torch.stack([solve(i, lam) for i in range(k)]) + 1e-3  # near, not at, w*
    d = key_derivatives(
        spec, lam, start, anchor, x, y, train, val, newton_steps=6, cg_iterations=200
    )
    for i in range(k):
        torch.testing.assert_close(d.w_star[i], solve(i, lam), rtol=1e-6, atol=1e-7)
        plus, minus = solve(i, lam + h), solve(i, lam - h)
        torch.testing.assert_close(d.dw[i], (plus - minus) / (2 * h), rtol=1e-3, atol=1e-6)
        rows = val[i] > 0
        fd = (
            mean_loss(spec, plus, x[i][rows], y[i][rows])
            - mean_loss(spec, minus, x[i][rows], y[i][rows])
        ) / (2 * h)
        assert float(d.hyper[i]) == pytest.approx(float(fd), rel=1e-3, abs=1e-8)
    assert d.n_val.tolist() == [6.0, 6.0, 4.0]


def _watch_on(truth_anchor: bool, n_per_key: int, noise: float) -> LambdaWatch:
    """Keys whose data come from w_true; the anchor is w_true or far from it."""
    spec = ModelSpec(4, "regression")
    cfg = ActiveConfig(sensitivity_window=4096, sensitivity_per_key=n_per_key, newton_steps=3)
    cfg = cfg.model_copy(
        update={"lambda_tuning": cfg.lambda_tuning.model_copy(update={"enabled": True})}
    )
    watch = LambdaWatch(spec, cfg, lam=0.3)
    rng = np.random.default_rng(0)
    w_true = np.array([1.0, -2.0, 0.5, 1.5, 0.3], dtype=np.float32)
    n_keys = 20
    for _ in range(n_per_key):
        x = rng.standard_normal((n_keys, 4)).astype(np.float32)
        y = x @ w_true[:4] + w_true[4] + noise * rng.standard_normal(n_keys)
        watch.add_labels(np.arange(n_keys), x, y.astype(np.float32))
    anchor = np.tile(w_true if truth_anchor else -w_true, (n_keys, 1))
    before = watch.lam
    watch.refresh(anchor.copy(), anchor)
    assert watch.lam != before
    return watch


def test_lambda_tuning_moves_towards_the_better_regularisation():
    # A right prior and a few noisy labels per key: more pull to the prior helps.
    up = _watch_on(truth_anchor=True, n_per_key=8, noise=3.0)
    assert up.hypergradient < 0
    assert up.lam > 0.3
    # A wrong prior and clean labels: less pull helps.
    down = _watch_on(truth_anchor=False, n_per_key=32, noise=0.1)
    assert down.hypergradient > 0
    assert down.lam < 0.3


def test_exploration_share_is_random_and_within_budget():
    pol = QueryPolicy("uncertainty", budget=0.1, explore=0.3, seed=0)
    rng = np.random.default_rng(1)
    asked = explored = 0
    for i in range(200):
        p = rng.random(500)
        pick = pol.select([f"{i}-{j}" for j in range(500)], pol.scores(p))
        if i >= 50:
            asked += int(pick.sum())
            explored += int(pol.explored.sum())
    assert asked / 75_000 == pytest.approx(0.1, rel=0.15)
    assert explored / asked == pytest.approx(0.3, rel=0.15)


def test_pending_queries_round_trip_as_plain_data():
    q = PendingQueries(capacity=5, remember=10)
    q.add(Pending("q1", "e1", "k", [1.0, 2.0], 0.25, 3, 0.0, 10.0, 5.0, True))
    q.add(Pending("q2", "e2", "k", [0.0, 0.0], 0.75, 3, 0.0, 10.0))
    q.answer("q2", now=1.0)
    again = PendingQueries(capacity=5, remember=10)
    again.load_state_dict(orjson.loads(orjson.dumps(q.state_dict())))
    assert len(again) == 1
    assert again.answer("e2", now=2.0)[1] == "duplicate"
    item, outcome = again.answer("e1", now=2.0)
    assert item is not None
    assert outcome == "ok"
    assert item.explored
    assert item.x == [1.0, 2.0]


def test_shared_weights_step_is_adagrad_on_the_mean_gradient_and_moves_every_key():
    spec = ModelSpec(2, "regression")
    cfg = LearnerConfig(
        learning_rate=0.5,
        proximal_lambda=0.0,
        curvature=CurvatureConfig(enabled=False),
        shared=SharedConfig(enabled=True, learning_rate=0.3, forgetting=1.0, step_labels=2),
    )
    learner = OnlineLearner(spec, cfg, torch.zeros(3), standardize=False)
    learner.process(event_batch(["idle"], [[0.0, 0.0]], [np.nan]))  # a key with no labels
    x = np.array([[1.0, 2.0], [-1.0, 0.5]], dtype=np.float32)
    y = np.array([1.0, -2.0])
    learner.process(event_batch(["a", "b"], x, y))
    # Reference: torch's Adagrad on the mean data gradient at theta0 = 0.
    theta = torch.zeros(3, requires_grad=True)
    opt = torch.optim.Adagrad([theta], lr=0.3, initial_accumulator_value=0.1, eps=1e-10)
    xt = torch.from_numpy(np.c_[x, np.ones(2)]).float()
    loss = (0.5 * (xt @ theta - torch.from_numpy(y).float()) ** 2).mean()
    loss.backward()
    opt.step()
    delta = theta.detach().numpy()
    np.testing.assert_allclose(learner.theta0.numpy(), delta, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(learner.params_of("idle").numpy(), delta, rtol=1e-5, atol=1e-7)
    learner.reset_all()
    np.testing.assert_array_equal(learner.theta0.numpy(), np.zeros(3))


def test_an_alarms_restart_ramps_the_accumulator_back_over_its_memory():
    """forgetting 0.75 remembers 4 steps: after the restart the accumulator is at least
    1/4, 2/4, 3/4 and 4/4 of the old one at steps 1-4, then follows RMSprop alone.
    Hand-solved with a gradient of 0.1 (g^2 = 0.01)."""
    from streamlearn.learning.shared import SharedWeights

    s = SharedWeights(
        np.zeros(1, dtype=np.float32), rate=0.1, initial_accumulator=0.1, forgetting=0.75
    )
    s.accum = np.array([8.0], dtype=np.float32)
    g = np.array([[0.1]], dtype=np.float32)
    s.restart(ramp=True)
    assert s.accum[0] == pytest.approx(0.1)
    expected, plain = [], 0.1
    for t in range(1, 7):
        plain = 0.75 * plain + 0.01
        if t <= 4:
            plain = max(plain, 8.0 * t / 4)
        expected.append(plain)
    got = []
    for _ in range(6):
        s.accumulate(g)
        s.step(np.zeros(1, dtype=np.float32))
        got.append(float(s.accum[0]))
    np.testing.assert_allclose(got, expected, rtol=1e-6)
    assert got[:4] == pytest.approx([2.0, 4.0, 6.0, 8.0])
    assert got[4] == pytest.approx(0.75 * 8.0 + 0.01)  # the ramp is over: RMSprop alone

    # Mid-ramp, the state goes through a checkpoint; a plain restart has no ramp.
    s.restart(ramp=True)
    s.accumulate(g)
    s.step(np.zeros(1, dtype=np.float32))
    copy = SharedWeights(
        np.zeros(1, dtype=np.float32), rate=0.1, initial_accumulator=0.1, forgetting=0.75
    )
    copy.load_state_dict(s.state_dict())
    for w in (s, copy):
        w.accumulate(g)
        w.step(np.zeros(1, dtype=np.float32))
    assert copy.accum[0] == pytest.approx(s.accum[0])
    old_state = {k: v for k, v in s.state_dict().items() if not k.startswith("ramp")}
    copy.load_state_dict(old_state)  # from before the ramp: none under way
    s.restart()
    for w in (s, copy):
        w.accumulate(g)
        w.step(np.zeros(1, dtype=np.float32))
    assert s.accum[0] == pytest.approx(0.75 * 0.1 + 0.01)
    plain_adagrad = SharedWeights(
        np.zeros(1, dtype=np.float32), rate=0.1, initial_accumulator=0.1, forgetting=1.0
    )
    plain_adagrad.accum[:] = 8.0
    plain_adagrad.restart(ramp=True)
    plain_adagrad.accumulate(g)
    plain_adagrad.step(np.zeros(1, dtype=np.float32))
    assert plain_adagrad.accum[0] == pytest.approx(0.11)  # remembers everything: no ramp


def test_shared_steps_at_round_ends_every_step_labels_labels_whatever_the_poll_size():
    """A step at the first round end after ``step_labels`` labels, the labels adding up over
    polls: eight single-label polls and one poll of eight keys (one round) end in the same
    state, one torch Adagrad step on the mean gradient of the eight; a poll where one key
    has three events (three rounds) steps after the rounds that complete a batch."""
    spec = ModelSpec(2, "regression")

    def learner(step_labels: int) -> OnlineLearner:
        cfg = LearnerConfig(
            learning_rate=0.5,
            proximal_lambda=0.0,
            curvature=CurvatureConfig(enabled=False),
            shared=SharedConfig(
                enabled=True, learning_rate=0.3, forgetting=1.0, step_labels=step_labels
            ),
        )
        return OnlineLearner(spec, cfg, torch.zeros(3), standardize=False)

    rng = np.random.default_rng(0)
    x = rng.standard_normal((8, 2)).astype(np.float32)
    y = rng.standard_normal(8)
    keys = [f"k{i}" for i in range(8)]
    whole, single = learner(8), learner(8)
    whole.process(event_batch(keys, x, y))
    for i in range(8):
        single.process(event_batch(keys[i : i + 1], x[i : i + 1], y[i : i + 1]))
    np.testing.assert_allclose(whole.theta0.numpy(), single.theta0.numpy(), rtol=1e-6)
    for k in keys:
        np.testing.assert_allclose(
            whole.params_of(k).numpy(), single.params_of(k).numpy(), rtol=1e-6, atol=1e-7
        )
    theta = torch.zeros(3, requires_grad=True)
    opt = torch.optim.Adagrad([theta], lr=0.3, initial_accumulator_value=0.1, eps=1e-10)
    xt = torch.from_numpy(np.c_[x, np.ones(8)]).float()
    yt = torch.from_numpy(y).float()
    (0.5 * (xt @ theta - yt) ** 2).mean().backward()
    opt.step()
    np.testing.assert_allclose(whole.theta0.numpy(), theta.detach().numpy(), rtol=1e-5)
    # Key "a" three times and "b" once: rounds [a, b], [a], [a]; with step_labels 2 the
    # steps come after round 1 (2 labels) and round 3 (2 more), none after round 2.
    rounds = learner(2)
    shared = rounds.shared
    assert shared is not None
    counts: list[int] = []
    step = shared.step

    def counting_step(theta0: np.ndarray) -> np.ndarray | None:
        counts.append(shared._count)
        return step(theta0)

    shared.step = counting_step  # type: ignore[method-assign]
    rounds.process(event_batch(["a", "b", "a", "a"], x[:4], y[:4]))
    assert counts == [2, 2]  # after rounds 1 and 3, two labels each
    assert not shared.ready


def test_prediction_loss_matches_the_learners_loss():
    spec = ModelSpec(2, "multiclass", n_classes=3)
    w = np.random.default_rng(0).standard_normal((4, spec.n_params)).astype(np.float32)
    x = np.random.default_rng(1).standard_normal((4, 2)).astype(np.float32)
    y = np.array([0.0, 2.0, 1.0, 2.0], dtype=np.float32)
    p = lanes.predict(spec, w, x)
    np.testing.assert_allclose(prediction_loss(spec, p, y), lanes.loss(spec, w, x, y), rtol=1e-5)


def _active(d: Daemon) -> ActiveLearning:
    assert d.active is not None
    return d.active


def _watch(d: Daemon) -> LambdaWatch:
    w = _active(d).watch
    assert w is not None
    return w


def _active_config(checkpoint_dir: str = "", **active):
    return load_config(
        overrides={
            "source": {"synthetic": {"n_keys": 20, "label_fraction": 0.0, "rate": 0.0}},
            "active": {"enabled": True, "budget": 0.1, **active},
            "metrics": {"baseline": "none"},
            "checkpoint": {"dir": checkpoint_dir},
        },
        env={},
    )


def _loop(cfg, n_events, delay_s=0.05):
    truth: dict[str, float] = {}
    syn = cfg.source.synthetic.model_copy(update={"max_events": n_events})
    events = MemorySource(recording_truth(build_family(syn), truth), topic="events")
    sink = MemorySink(capacity=100_000)
    oracle = Oracle(truth, task="binary", delay_s=delay_s)
    loop = LoopbackSource(
        events, sink, oracle, labels_topic=cfg.kafka.topics.labels, events_per_second=1000
    )
    return loop, sink, truth


def _run_on_drifting_family(n_events, delay_s, active, synthetic=None, batch_size=None):
    """A daemon with active learning on the drifting family (20 keys, a drift every 10,000
    events), run to the end: (daemon, registry, sink). The linear model: the surge and recall
    mechanisms were measured on it."""
    syn = {"n_keys": 20, "label_fraction": 0.0, "rate": 0.0, "segment_length": 10_000}
    source: dict[str, object] = {"synthetic": {**syn, **(synthetic or {})}}
    if batch_size is not None:
        source["batch_size"] = batch_size
    cfg = load_config(
        overrides=with_linear(
            {
                "source": source,
                "active": {"enabled": True, **active},
                "metrics": {"baseline": "none"},
            }
        ),
        env={},
    )
    loop, sink, _ = _loop(cfg, n_events, delay_s=delay_s)
    reg = CollectorRegistry()
    d = Daemon(cfg, reg, source=loop, sink=sink, clock=loop.clock)
    d.run()
    return d, reg, sink


@pytest.mark.parametrize("policy", ["uncertainty", "sensitivity", "combined", "random"])
def test_daemon_queries_learns_answers_and_accounts_them(policy):
    # Pacing off: this holds the controller to the budget poll by poll (pacing is below).
    cfg = _active_config(policy=policy, sensitivity_every_labels=50, pacing={"enabled": False})
    loop, sink, truth = _loop(cfg, 6000)
    reg = CollectorRegistry()
    d = Daemon(cfg, reg, source=loop, sink=sink, clock=loop.clock)
    d.run()
    queries = list(sink.recent_queries)
    asked = sum(
        sample(reg, "streamlearn_queries_total", {"reason": r}) for r in (policy, "explore")
    )
    assert asked == len(queries) == sink.n_queries
    assert 0.07 < len(queries) / 6000 < 0.14
    assert len({q.event_id for q in queries}) == len(queries)  # never the same event twice
    # Every query was answered (the oracle drains at the end) and learned, nothing else.
    assert sample(reg, "streamlearn_label_answers_total", {"outcome": "ok"}) == len(queries)
    assert d.labels_seen == len(queries) == sample(reg, "streamlearn_labels_total")
    assert _active(d).asked == _active(d).joined == len(queries)
    assert f"queries={len(queries):,} answered={len(queries):,} pending=0" in d.status_line(None)
    # Regret and loss are charged against the prediction published at event time.
    p = np.array([q.p for q in queries])
    y = np.array([truth[q.event_id] for q in queries])
    assert d.outcomes.cum_loss == pytest.approx(prediction_loss(d.spec, p, y).sum(), rel=1e-6)
    assert sample(reg, "streamlearn_label_latency_seconds_count") == len(queries)
    assert sample(reg, "streamlearn_pending_queries") == 0
    if policy in ("sensitivity", "combined"):
        assert _watch(d).refreshes > 0
        assert sample(reg, "streamlearn_lambda_hypergradient") != 0.0


def _events(d: Daemon, n: int, key: str = "a") -> None:
    """``n`` unlabelled events through the daemon's own step."""
    evs = [{"id": f"{key}{i}", "key": key, "ts": float(i), "x": [1.0] * 8} for i in range(n)]
    d.source = MemorySource(iter(evs), topic="events")
    d.step(n)


def _answers(d: Daemon, values: list[bytes]) -> None:
    """Records on the labels topic through the daemon's own step."""
    d.source = MemorySource(iter(values), topic=d.cfg.kafka.topics.labels)
    d.step(len(values))


def _answer(ident: str, y: object) -> bytes:
    return orjson.dumps({"query_id": ident, "y": y})


def test_bad_and_stray_answers_are_counted_and_change_nothing():
    cfg = _active_config(policy="random", budget=0.5, expiry_s=10.0)
    now = [0.0]
    reg = CollectorRegistry()
    sink = MemorySink()
    d = Daemon(cfg, reg, source=MemorySource(iter([])), sink=sink, clock=lambda: now[0])
    _events(d, 40)
    queries = list(sink.recent_queries)
    assert len(queries) >= 2
    before = d.learner.params_of("a").clone()
    _answers(
        d,
        [
            b"{not json",
            orjson.dumps({"y": 1}),  # no id
            _answer(queries[0].query_id, 7),  # not a binary label
            b'{"query_id": "' + queries[0].query_id.encode() + b'", "y": NaN}',
            _answer("q-never-asked", 1),
        ],
    )
    assert sorted(x.reason.value for x in sink.recent_dead_letters) == [
        "invalid_json",
        "invalid_label",
        "missing_field",
        "non_finite",
    ]
    assert sample(reg, "streamlearn_label_answers_total", {"outcome": "malformed"}) == 4
    assert sample(reg, "streamlearn_label_answers_total", {"outcome": "unknown"}) == 1
    assert sample(reg, "streamlearn_dead_letters_total", {"reason": "invalid_json"}) == 1
    torch.testing.assert_close(d.learner.params_of("a"), before)
    assert d.labels_seen == 0
    # The first good answer is learned; the same answer again (by event id) is a duplicate.
    _answers(d, [_answer(queries[0].query_id, 1)])
    _answers(d, [orjson.dumps({"event_id": queries[0].event_id, "y": 1})])
    assert d.labels_seen == 1
    assert sample(reg, "streamlearn_label_answers_total", {"outcome": "duplicate"}) == 1
    # Past the expiry, answers are late and the open queries count as expired.
    now[0] = 11.0
    _answers(d, [_answer(queries[1].query_id, 0)])
    assert sample(reg, "streamlearn_label_answers_total", {"outcome": "late"}) == 1
    assert sample(reg, "streamlearn_queries_expired_total") == len(queries) - 1
    assert d.labels_seen == 1


def test_pending_queries_and_lambda_survive_a_restart(tmp_path):
    cfg = _active_config(str(tmp_path), policy="sensitivity", lambda_tuning={"enabled": True})
    now = [0.0]
    sink = MemorySink()
    d = Daemon(
        cfg, CollectorRegistry(), source=MemorySource(iter([])), sink=sink, clock=lambda: now[0]
    )
    _events(d, 50)
    d.learner.set_proximal_lambda(0.123)
    _watch(d).lam = 0.123
    open_before = len(_active(d).pending)
    assert open_before > 0
    assert d.checkpoint()
    again = Daemon(
        cfg,
        CollectorRegistry(),
        source=MemorySource(iter([]), topic="events"),
        sink=MemorySink(),
        clock=lambda: now[0],
    )
    assert len(_active(again).pending) == open_before
    assert again.learner.proximal_lambda == pytest.approx(0.123)
    assert _watch(again).lam == pytest.approx(0.123)
    q = sink.recent_queries[0]
    assert _active(again).pending.answer(q.query_id, now=1.0)[1] == "ok"


def test_oracle_noise_rate_and_truth_file(tmp_path):
    path = tmp_path / "truth.jsonl"
    path.write_bytes(
        b"".join(
            orjson.dumps({"event_id": str(i), "key": "k", "y": 1}) + b"\n" for i in range(2000)
        )
    )
    truth = read_truth(path)
    o = Oracle(truth, task="binary", noise=0.2, answer_rate=0.5, seed=0)
    o.offer([{"query_id": f"q{i}", "event_id": str(i)} for i in range(2000)], now=0.0)
    o.offer([{"query_id": "qx", "event_id": "missing"}], now=0.0)
    answers = [orjson.loads(a) for _, a in o.due(now=0.0)]
    assert len(answers) / 2000 == pytest.approx(0.5, abs=0.05)
    assert np.mean([a["y"] == 0 for a in answers]) == pytest.approx(0.2, abs=0.04)
    assert o.unknown == 1
    assert o.skipped + len(answers) == 2000


def test_active_config_errors_name_the_setting():
    with pytest.raises(ConfigError, match=r"active.policy 'uncertainty' needs class probabilities"):
        load_config(
            overrides={
                "source": {"synthetic": {"family": "sinusoid"}},
                "model": {"task": "regression", "n_features": 1},
                "active": {"enabled": True},
            },
            env={},
        )
    with pytest.raises(ConfigError, match="must be > 0"):
        load_config(
            overrides={
                "learner": {"proximal_lambda": 0.0},
                "active": {"enabled": True, "policy": "sensitivity"},
            },
            env={},
        )
    with pytest.raises(ConfigError, match=r"active.budget = 0"):
        load_config(overrides={"active": {"budget": 0}}, env={})


def test_pacing_spends_more_after_a_drift_and_holds_the_budget():
    """With pacing, the share queried rises well above the budget after a drift (the random,
    explored answers' loss jumps) and the whole run spends no more than the budget."""
    # No warm-up: at this stream's length its debt would still be paid back at the drift
    # (the warm-up has its own test below).
    d, reg, sink = _run_on_drifting_family(
        16_000, 0.02, {"budget": 0.1, "pacing": {"bank_events": 3000, "warmup_events": 0}}
    )
    asked = np.array([int(q.event_id.rsplit("-", 1)[1]) for q in sink.recent_queries])
    before = int(((asked >= 8000) & (asked < 10_000)).sum())
    after = int(((asked >= 10_000) & (asked < 12_000)).sum())
    print(
        f"queries: {before} in the 2,000 events before the drift, {after} after; "
        f"{len(asked)} of 16,000 in all"
    )
    assert after > 1.5 * 0.1 * 2000  # 1.5x the budget in the 2,000 events after the drift
    assert len(asked) <= 0.1 * 16_000 * 1.02
    pacer = _active(d).pacer
    assert pacer is not None
    assert sample(reg, "streamlearn_label_bank") == pytest.approx(pacer.bank)
    # The drift raised a surge (the answers' loss over a coin's passed alarm_nats).
    assert sample(reg, "streamlearn_label_surges_total") >= 1


def test_the_warm_up_asks_at_the_maximum_share_first_and_the_run_holds_the_budget():
    pacing = {"warmup_events": 1000, "bank_events": 2000, "surge_events": 0}
    _, reg, sink = _run_on_drifting_family(20_000, 0.02, {"budget": 0.05, "pacing": pacing})
    asked = np.array([int(q.event_id.rsplit("-", 1)[1]) for q in sink.recent_queries])
    first = int((asked < 1000).sum())
    later = int(((asked >= 1000) & (asked < 3000)).sum())
    print(f"queries: {first} in the first 1,000 events, {later} in the next 2,000; {len(asked)}")
    # The target is the maximum share (budget x max_boost = 20%); the threshold's controller
    # takes some of the 1,000 events to get there from the budget.
    assert first > 2 * 0.05 * 1000
    assert later < 0.05 * 2000  # paying the warm-up back
    assert len(asked) <= 0.05 * 20_000 * 1.02
    assert sample(reg, "streamlearn_label_bank") > -0.05 * 2000 / 2  # mostly paid back


@pytest.mark.parametrize(
    ("restart", "n_keys", "segment"), [(True, 20, 10_000), (False, 20, 10_000), (True, 1, 4000)]
)
def test_an_alarm_restarts_the_shared_steps_for_a_drift_of_many_keys(
    monkeypatch, restart, n_keys, segment
):
    """20 keys drift together: their alarms restart the shared model's steps (unless told
    not to). One key (drifting more often, for alarms in a short stream): its misses are
    its own, and the shared steps stay as they are."""
    from streamlearn.learning.shared import SharedWeights

    calls: list[bool] = []
    original = SharedWeights.restart

    def counted(self, start=None, **kw):
        calls.append(start is None)
        original(self, start, **kw)

    monkeypatch.setattr(SharedWeights, "restart", counted)
    pacing = {"bank_events": 3000, "warmup_events": 0, "restart_shared": restart}
    _, reg, _ = _run_on_drifting_family(
        16_000,
        0.02,
        {"budget": 0.1, "pacing": pacing},
        synthetic={"n_keys": n_keys, "segment_length": segment},
    )
    surges = sample(reg, "streamlearn_label_surges_total")
    restarts = sample(reg, "streamlearn_shared_restarts_total")
    print(f"{n_keys} keys: {surges:.0f} alarms, {restarts:.0f} restarts")
    assert surges >= 1
    assert sum(calls) == restarts
    assert (restarts >= 1) if restart and n_keys > 1 else restarts == 0


def test_at_a_tight_budget_drifts_raise_surges_and_a_returning_concept_is_recalled():
    """10% of labels, two concepts taking turns: the answers' evidence raises surges, the
    memory keeps the settled concepts and recalls one when it comes back. (On smaller
    streams the memory may keep nothing or recall nothing: it stores only shared weights
    that have settled, and recalls only while the weights in force do no better than a
    coin; bench/active_ceiling.py has the effect on family100.)"""
    d, reg, _ = _run_on_drifting_family(
        40_000, 0.1, {"budget": 0.1}, synthetic={"n_concepts": 2}, batch_size=100
    )
    surges = sample(reg, "streamlearn_label_surges_total")
    recalls = sample(reg, "streamlearn_concept_recalls_total")
    members = sample(reg, "streamlearn_concept_members")
    print(f"surges {surges:.0f}, recalls {recalls:.0f}, concepts kept {members:.0f}")
    assert surges >= 3  # one per drift at least
    assert members >= 2
    assert recalls >= 1
    assert d.learner.memory is not None
    assert recalls == d.learner.memory.recalls
