"""Query policy (scores, budget controller, no repeats) and the pending-query store."""

import numpy as np
import pytest

from streamlearn.active.pending import Pending, PendingQueries
from streamlearn.active.policy import QueryPolicy, uncertainty


def test_uncertainty_by_hand():
    np.testing.assert_allclose(uncertainty(np.array([0.5, 0.75, 1.0])), [1.0, 0.5, 0.0])
    probs = np.array([[0.5, 0.3, 0.2], [0.4, 0.4, 0.2]])
    np.testing.assert_allclose(uncertainty(probs), [0.8, 1.0])


@pytest.mark.parametrize("budget", [0.01, 0.05, 0.2])
@pytest.mark.parametrize("policy", ["uncertainty", "sensitivity", "combined", "random"])
def test_the_controller_holds_the_budget(policy, budget):
    pol = QueryPolicy(policy, budget=budget, seed=1)
    rng = np.random.default_rng(2)
    asked = seen = 0
    for i in range(300):
        p = rng.random(500)
        sens = rng.exponential(size=500) * (1 + i / 100)  # the scale drifts: quantiles follow
        pick = pol.select([f"{i}-{j}" for j in range(500)], pol.scores(p, sens))
        if i >= 100:  # after settling
            asked += int(pick.sum())
            seen += 500
    assert asked / seen == pytest.approx(budget, rel=0.25)


def test_scores_rank_what_each_policy_says():
    p = np.array([0.5, 0.99, 0.6])
    sens = np.array([0.0, 5.0, 1.0])
    assert np.argmax(QueryPolicy("uncertainty", budget=0.1).scores(p)) == 0
    assert np.argmax(QueryPolicy("sensitivity", budget=0.1).scores(p, sens)) == 1
    with pytest.raises(ValueError, match="needs the lambda-sensitivities"):
        QueryPolicy("combined", budget=0.1).scores(p)
    with pytest.raises(ValueError, match=r"active.budget must be in \(0, 1\], got 0"):
        QueryPolicy("random", budget=0.0)


def test_an_event_is_never_queried_twice():
    pol = QueryPolicy("random", budget=1.0, seed=0)
    ids = ["a", "b", "c"]
    first = pol.select(ids, np.ones(3))
    assert first.any()
    again = pol.select(ids, np.ones(3))
    assert not (first & again).any()


def _pending(qid: str, eid: str, expires: float) -> Pending:
    return Pending(qid, eid, "k", [1.0], 0.3, 2, asked_at=0.0, expires_at=expires)


def test_answers_join_by_either_id_and_every_other_case_is_told_apart():
    q = PendingQueries(capacity=2, remember=100)
    q.add(_pending("q1", "e1", 10.0))
    q.add(_pending("q2", "e2", 5.0))
    item, why = q.answer("q1", now=1.0)
    assert why == "ok"
    assert item is not None
    assert (item.event_id, item.p, item.model_version) == ("e1", 0.3, 2)
    assert q.answer("e1", now=1.5) == (None, "duplicate")
    assert [p.query_id for p in q.expire(now=6.0)] == ["q2"]
    assert q.answer("q2", now=6.5) == (None, "late")
    assert q.answer("e2", now=6.5) == (None, "late")
    assert q.answer("nobody", now=7.0) == (None, "unknown")
    assert len(q) == 0


def test_an_answer_after_expiry_is_late_even_before_expire_runs():
    q = PendingQueries(capacity=5)
    q.add(_pending("q1", "e1", 1.0))
    assert q.answer("q1", now=2.0) == (None, "late")


def test_capacity_is_bounded_and_the_oldest_query_goes_first():
    q = PendingQueries(capacity=2)
    for i in range(3):
        q.add(_pending(f"q{i}", f"e{i}", 100.0))
    assert len(q) == 2
    assert q.answer("q0", now=1.0) == (None, "late")
    assert q.answer("q2", now=1.0)[1] == "ok"


def test_open_queries_by_key_stay_indexed_through_answers_expiry_and_capacity():
    q = PendingQueries(capacity=3, remember=100)
    for i, (key, expires) in enumerate([("a", 5.0), ("b", 50.0), ("a", 50.0), ("c", 50.0)]):
        q.add(Pending(f"q{i}", f"e{i}", key, [1.0], 0.3, 2, asked_at=float(i), expires_at=expires))
    # q0 went over capacity; the rest are open.
    assert {k: [d["query_id"] for d in v] for k, v in q.of_keys("abc").items()} == {
        "a": ["q2"],
        "b": ["q1"],
        "c": ["q3"],
    }
    assert q.answer("q1", now=1.0)[1] == "ok"
    assert q.of_keys(["b"]) == {}
    moved = q.of_keys(["a"])["a"]
    assert q.drop_keys(["a"]) == 1
    assert q.answer("e2", now=1.0) == (None, "unknown")  # dropped, not closed
    back = PendingQueries(capacity=3)
    assert back.receive(moved) == 1
    assert back.receive(moved) == 0  # known already
    assert back.answer("q2", now=1.0)[1] == "ok"


def test_answers_decode_and_malformed_ones_become_dead_letters_with_reasons():
    import orjson

    from streamlearn.wire.messages import EventDecoder, Origin, Query, RawRecord, Reason

    dec = EventDecoder(n_features=2, task="binary")
    raw = [
        b'{"query_id": "q1", "y": 1, "labeller": "ann"}',
        b'{"event_id": "e7", "y": 0}',
        b'{"y": 1}',
        b'{"query_id": "q2"}',
        b'{"query_id": "q3", "y": 5}',
        b'{"query_id": 3, "y": 1}',
        b"not json",
    ]
    answers, dead = dec.decode_answers(
        [RawRecord(r, Origin("labels", 0, i)) for i, r in enumerate(raw)]
    )
    assert [(a.ident, a.y, a.labeller) for a in answers] == [("q1", 1.0, "ann"), ("e7", 0.0, None)]
    assert [d.reason for d in dead] == [
        Reason.MISSING_FIELD,
        Reason.MISSING_FIELD,
        Reason.INVALID_LABEL,
        Reason.WRONG_TYPE,
        Reason.INVALID_JSON,
    ]
    q = Query("q1", "e1", "k", [1.0, 2.0], 0.9, "uncertainty", 0.5, 3, 100.0)
    assert orjson.loads(q.to_json()) == {
        "query_id": "q1",
        "event_id": "e1",
        "key": "k",
        "x": [1.0, 2.0],
        "score": 0.9,
        "reason": "uncertainty",
        "p": 0.5,
        "model_version": 3,
        "expires_at": 100.0,
    }
