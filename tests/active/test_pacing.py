"""The pacer's surges and warm-up (streamlearn.active.pacing): the alarm's CUSUM by hand,
the surge's share and length, the bank's limits on it, the warm-up's share and its payback,
and their state."""

import math

import numpy as np
import pytest

from streamlearn.active.pacing import BudgetPacer

LOG2 = math.log(2.0)


def _pacer(**kw):
    base = {"surge_events": 300, "alarm_nats": 2.0, "coin_loss": LOG2, "bank_events": 1000}
    return BudgetPacer(0.05, **{**base, **kw})


def test_the_alarm_adds_each_answers_loss_over_a_coins():
    pacer = _pacer()
    assert not pacer.alarm(np.full(50, 0.1))  # a model doing well: the evidence stays at 0
    assert pacer.evidence == 0.0
    assert not pacer.alarm(np.full(1000, LOG2))  # uncertain answers: no evidence either way
    assert pacer.evidence == 0.0
    assert not pacer.alarm(np.array([1.5, 0.2]))
    assert pacer.evidence == pytest.approx((1.5 - LOG2) + (0.2 - LOG2))
    # One answer counts at most 3 nats (noise on a sure prediction): 0.313 + 2.307 > 2.
    assert pacer.alarm(np.array([30.0]))
    assert pacer.evidence == 0.0
    assert pacer.surge_left == 300


def test_a_surge_asks_at_the_maximum_share_for_its_events_then_ends():
    pacer = _pacer()
    pacer.bank = 1.0  # a label saved: the surge may spend it
    normal = pacer.share()
    assert pacer.alarm(np.array([3.0, 3.0]))
    assert pacer.share() == pytest.approx(0.05 * pacer.max_boost)
    assert not pacer.alarm(np.array([3.0] * 10))  # no new alarm while the surge lasts
    pacer.spend(events=200, queried=10)  # 10 labels paid for 10 earned: the bank stays
    assert pacer.surge_left == 100
    pacer.spend(events=100, queried=5)
    assert pacer.surge_left == 0
    assert pacer.share() == pytest.approx(normal)


def test_the_bank_limits_surges():
    pacer = _pacer()
    scale = pacer.scale  # 50 labels: what the budget earns over bank_events
    pacer.bank = -1.0
    assert pacer.alarm(np.array([3.0, 3.0]))  # in debt: the alarm is told...
    assert pacer.surge_left == 0  # ...but no surge borrows more
    pacer.bank = 0.5 * scale  # savings: a surge spends them...
    assert pacer.alarm(np.array([3.0, 3.0]))
    pacer.spend(events=100, queried=5 + 0.25 * scale)
    assert pacer.surge_left == 200
    pacer.spend(events=100, queried=5 + 0.25 * scale + 1)  # ...and ends when they are gone
    assert pacer.surge_left == 0


def test_no_surges_without_a_coin_or_events():
    assert not BudgetPacer(0.05, surge_events=300, coin_loss=None).alarm(np.full(10, 50.0))
    assert not _pacer(surge_events=0).alarm(np.full(10, 50.0))
    with pytest.raises(ValueError, match=r"active\.pacing\.surge_events"):
        _pacer(surge_events=-1)
    with pytest.raises(ValueError, match=r"active\.pacing\.alarm_nats"):
        _pacer(alarm_nats=0.0)


def test_the_surge_state_survives_a_checkpoint_and_old_states_load():
    pacer = _pacer()
    pacer.alarm(np.array([1.0]))
    assert pacer.alarm(np.array([3.0, 3.0]))  # 0.307 + 2.307 nats
    pacer.spend(events=120, queried=3)
    copy = _pacer()
    copy.load_state_dict(pacer.state_dict())
    assert (copy.evidence, copy.surge_left, copy.bank) == (
        pacer.evidence,
        pacer.surge_left,
        pacer.bank,
    )
    old = {"fast": 0.3, "slow": 0.3, "bank": 2.0}  # a checkpoint from before surges
    copy.load_state_dict(old)
    assert (copy.evidence, copy.surge_left) == (0.0, 0)


def test_an_alarm_says_how_much_of_its_evidence_one_key_carried():
    g = 1.5 - LOG2  # 0.8069 nats an answer
    pacer = _pacer()
    pacer.bank = -1.0  # in debt: alarms but no surges, whose evidence would wait at 0
    assert pacer.alarm(np.full(3, 1.5), ["a", "b", "c"])  # 0.81, 1.61, 2.42 > 2
    assert pacer.alarm_key_share == pytest.approx(1 / 3)
    # Evidence carried over polls counts for its key; c's miss passes the threshold.
    assert not pacer.alarm(np.array([1.5]), ["a"])
    assert pacer.alarm(np.array([0.1, 3.0]), ["b", "c"])
    total = g + (0.1 - LOG2) + (3.0 - LOG2)
    assert pacer.alarm_key_share == pytest.approx((3.0 - LOG2) / total)  # 0.915
    # A run that fell back to 0 starts again: a's earlier answer is no part of the alarm.
    assert pacer.alarm(np.array([1.5, 0.0, 0.0, 3.0]), ["a", "b", "b", "c"])
    assert pacer.alarm_key_share == 1.0
    # Answers after the crossing belong to no run (the evidence is 0 after an alarm).
    assert pacer.alarm(np.array([3.0, 3.0, 3.0]), ["a", "b", "c"])
    assert pacer.alarm_key_share == 1.0
    assert pacer.evidence == 0.0
    # Without keys nothing says the evidence was spread.
    assert pacer.alarm(np.full(3, 1.5))
    assert pacer.alarm_key_share == 1.0


def test_keys_past_the_kept_ones_count_in_the_total_only(monkeypatch):
    from streamlearn.active import pacing

    monkeypatch.setattr(pacing, "_RUN_KEYS", 2)
    pacer = _pacer(alarm_nats=3.0)
    # a and b are kept; c's two answers count in the total only: 0.81 of 3.23 nats, not
    # c's 1.61.
    assert pacer.alarm(np.full(4, 1.5), ["a", "b", "c", "c"])
    assert pacer.alarm_key_share == pytest.approx(0.25)


def test_an_alarms_run_survives_a_checkpoint():
    import io

    import torch

    pacer = _pacer()
    assert not pacer.alarm(np.array([1.5]), ["a"])
    buffer = io.BytesIO()
    torch.save(pacer.state_dict(), buffer)  # as a checkpoint stores it, and loads it back
    buffer.seek(0)
    copy = _pacer()
    copy.load_state_dict(torch.load(buffer, weights_only=True))
    assert copy.alarm(np.array([1.5, 1.5]), ["b", "c"])
    assert copy.alarm_key_share == pytest.approx(1 / 3)
    copy.load_state_dict({"fast": 0.3, "slow": 0.3, "bank": 2.0, "evidence": 1.0})  # older
    assert copy.alarm(np.array([1.5, 1.5]), ["b", "c"])  # the 1.0 nat run is nobody's
    assert copy.alarm_key_share == pytest.approx((1.5 - LOG2) / (1.0 + 2 * (1.5 - LOG2)))


def test_the_warm_up_asks_at_the_maximum_share_borrows_and_pays_back():
    pacer = _pacer(warmup_events=300, bank_events=1000)
    assert pacer.share() == pytest.approx(0.05 * 4.0)  # before any answer
    assert not pacer.alarm(np.full(10, 3.0))  # a new model's misses are no drift
    assert pacer.evidence == 0.0
    for _ in range(3):  # three polls of 100 events at the maximum share
        pacer.spend(events=100, queried=20)
    assert pacer.warmup_left == 0
    assert pacer.bank == pytest.approx(300 * 0.05 - 60)  # 45 labels borrowed, no cap below
    assert pacer.surge_left == 0
    assert pacer.alarm(np.full(2, 3.0))  # the alarm works again; in debt, no surge
    assert pacer.surge_left == 0
    # Paid back: the share below the budget while in debt; the long-run share -> budget.
    events, queried, carry = 300, 60, 0.0
    for _ in range(400):
        share = pacer.share()
        assert share < 0.05 or pacer.bank >= 0
        carry += share * 100
        asked = int(carry)
        carry -= asked
        pacer.spend(events=100, queried=asked)
        events, queried = events + 100, queried + asked
    assert pacer.bank > -1.0
    assert queried / events == pytest.approx(0.05, abs=0.002)


def test_the_warm_up_is_in_the_state_and_a_resumed_daemon_does_not_repeat_it():
    pacer = _pacer(warmup_events=300)
    pacer.spend(events=100, queried=20)
    copy = _pacer(warmup_events=300)
    copy.load_state_dict(pacer.state_dict())
    assert copy.warmup_left == 200
    copy.load_state_dict({"fast": 0.3, "slow": 0.3, "bank": 2.0})  # from before warm-ups
    assert copy.warmup_left == 0
    assert _pacer(warmup_events=0).share() == pytest.approx(0.05)
    with pytest.raises(ValueError, match=r"active\.pacing\.warmup_events"):
        _pacer(warmup_events=-1)


def test_cusum_paths_equal_the_recursion_row_by_row():
    from streamlearn.optim.cusum import cusum_paths

    rng = np.random.default_rng(3)
    gains, start = rng.normal(size=(4, 40)), rng.random(4) * 3
    expected = np.empty_like(gains)
    for k in range(4):
        s = start[k]
        for i, g in enumerate(gains[k]):
            s = max(0.0, s + g)
            expected[k, i] = s
    np.testing.assert_allclose(cusum_paths(gains, start), expected, atol=1e-12)
