"""The spline expert against its oracles: the knots and the hat basis by hand, the kernel's
gradient against finite differences and ``torch.func``, its steps against
``torch.optim.Adagrad`` (and the decaying accumulator by hand), the warm-up, and a
checkpoint taken in and after it."""

import math

import numpy as np
import pytest
import torch
from torch.func import grad

from streamlearn.learning.spline import SplineExpert, encode, fit_knots


def _expert(n_features=2, n_outputs=1, **kw):
    args = {
        "knots": 4,
        "hidden": (5, 3),
        "learning_rate": 0.1,
        "forgetting": 1.0,
        "initial_accumulator": 0.1,
        "warmup": 30,
        "seed": 1,
    }
    return SplineExpert(n_features, n_outputs, **{**args, **kw})


def _data(n=60, d=2, n_classes=2, seed=0):
    rng = np.random.default_rng(seed)
    raw = rng.normal(size=(n, d)) * 3 + 1
    x = ((raw - 1) / 3).astype(np.float32)
    if n_classes == 2:
        y = ((raw[:, 0] > 1) ^ (raw[:, 1] > 2)).astype(np.float32)
    else:
        y = rng.integers(0, n_classes, n).astype(np.float32)
    return raw, x, y


def test_knots_are_the_levels_of_a_discrete_feature_and_quantiles_of_a_continuous_one():
    raw = np.column_stack([np.repeat([0.0, 1.0, 2.0, 2.0], 5), np.arange(20.0)])
    knots, count = fit_knots(raw, 4)
    assert count.tolist() == [3, 4]
    assert knots[0].tolist() == [0.0, 1.0, 2.0, 2.0]  # padded with the last knot
    np.testing.assert_allclose(knots[1], np.quantile(np.arange(20.0), [0.125, 0.375, 0.625, 0.875]))
    # a constant feature: one knot, always the first basis function
    knots, count = fit_knots(np.ones((5, 1)), 4)
    assert count.tolist() == [1]


def test_the_hat_basis_by_hand():
    knots = np.array([[0.0, 1.0, 3.0, 3.0]])
    count = np.array([3])
    index, value = np.zeros(3, np.int64), np.zeros(3)

    def active(v, z=0.5):
        m = encode(np.array([v]), np.array([z]), knots, count, index, value)
        return dict(zip(index[:m].tolist(), value[:m].tolist(), strict=True))

    # between knots 1 and 3: a quarter of the way
    assert active(1.5) == {1: 0.75, 2: 0.25, 4: 0.5}  # input 4 = d * K + 0, the value
    assert active(0.0) == {0: 1.0, 4: 0.5}  # at or below the first knot
    assert active(-7.0) == {0: 1.0, 4: 0.5}
    assert active(9.0) == {2: 1.0, 4: 0.5}  # beyond the last: the last basis function
    assert active(1.0) == {1: 1.0, 2: 0.0, 4: 0.5}


def _torch_reference(e: SplineExpert, raw, x):
    """The expert's network in torch: the spline encoding as a dense input, then the layers."""
    d = e.knots.shape[0]
    dense = np.zeros((len(x), int(e.sizes[0])))
    index, value = np.zeros(3 * d, np.int64), np.zeros(3 * d)
    for i in range(len(x)):
        m = encode(raw[i], x[i].astype(np.float64), e.knots, e.knot_count, index, value)
        dense[i, index[:m]] += value[:m]
    enc = torch.from_numpy(dense)
    sizes, offsets = e.sizes.tolist(), e.offsets.tolist()

    def logits(theta, enc_row):
        h = enc_row
        for layer in range(len(sizes) - 1):
            n_in, n_out, start = sizes[layer], sizes[layer + 1], offsets[layer]
            w = theta[start : start + n_out * n_in]
            # the first layer is stored a row per input, the others a row per unit
            w = w.reshape(n_in, n_out).T if layer == 0 else w.reshape(n_out, n_in)
            b = theta[start + n_out * n_in : start + n_out * n_in + n_out]
            h = w @ h + b
            if layer < len(sizes) - 2:
                h = torch.tanh(h)
        return h

    def loss(theta, enc_row, label):
        z = logits(theta, enc_row)
        if len(z) == 1:
            return torch.nn.functional.binary_cross_entropy_with_logits(z[0], label)
        return torch.nn.functional.cross_entropy(z[None], label.long()[None])

    return enc, logits, loss


def _awake(n_outputs=1, **kw):
    """An expert past its warm-up on ``_data``'s first 30 events."""
    raw, x, y = _data(n_classes=2 if n_outputs == 1 else n_outputs)
    e = _expert(n_outputs=n_outputs, **kw)
    e.process(raw[:30], x[:30], y[:30], np.zeros(30, bool))  # knots fitted, nothing learned
    assert e.awake
    return e, raw[30:], x[30:], y[30:]


@pytest.mark.parametrize("n_outputs", [1, 3])
def test_the_kernels_gradient_is_torch_funcs_and_the_finite_differences(n_outputs):
    # One AdaGrad step with a huge accumulator is -lr * g / sqrt(a): the kernel's gradient.
    acc, lr = 1e8, 1e-3
    e, raw, x, y = _awake(n_outputs, learning_rate=lr, initial_accumulator=acc)
    before = e.params.copy()
    e.process(raw[:1], x[:1], y[:1], np.ones(1, bool))
    g_kernel = (before - e.params) * math.sqrt(acc) / lr
    enc, _, loss = _torch_reference(e, raw[:1], x[:1])
    theta = torch.from_numpy(before)
    label = torch.tensor(float(y[0]), dtype=torch.float64)
    g_torch = grad(loss)(theta, enc[0], label).numpy()
    np.testing.assert_allclose(g_kernel, g_torch, rtol=1e-5, atol=1e-9)
    # central finite differences of the torch reference's loss, on a sample of coordinates
    rng = np.random.default_rng(0)
    for j in rng.choice(len(before), 25, replace=False):
        h = np.zeros_like(before)
        h[j] = 1e-6
        up = float(loss(torch.from_numpy(before + h), enc[0], label))
        down = float(loss(torch.from_numpy(before - h), enc[0], label))
        assert g_kernel[j] == pytest.approx((up - down) / 2e-6, rel=1e-4, abs=1e-7)


@pytest.mark.parametrize("n_outputs", [1, 3])
def test_steps_equal_torch_adagrad_when_it_does_not_forget(n_outputs):
    e, raw, x, y = _awake(n_outputs, learning_rate=0.2, initial_accumulator=0.1)
    theta = torch.tensor(e.params.copy(), requires_grad=True)
    opt = torch.optim.Adagrad([theta], lr=0.2, initial_accumulator_value=0.1, eps=1e-10)
    enc, logits, loss = _torch_reference(e, raw, x)
    p = e.process(raw, x, y, np.ones(len(x), bool))
    for i in range(len(x)):
        z = logits(theta, enc[i]).detach()
        ref = torch.sigmoid(z) if n_outputs == 1 else torch.softmax(z, 0)
        np.testing.assert_allclose(p[i], ref.numpy(), atol=1e-6)
        opt.zero_grad()
        loss(theta, enc[i], torch.tensor(float(y[i]), dtype=torch.float64)).backward()
        opt.step()
    np.testing.assert_allclose(e.params, theta.detach().numpy(), rtol=1e-7, atol=1e-10)


def test_the_accumulator_decays_by_hand():
    acc, lr, f = 1e8, 1e-3, 0.5
    e, raw, x, y = _awake(learning_rate=lr, initial_accumulator=acc, forgetting=f)
    before = e.params.copy()
    e.process(raw[:1], x[:1], y[:1], np.ones(1, bool))
    enc, _, loss = _torch_reference(e, raw[:1], x[:1])
    g = grad(loss)(torch.from_numpy(before), enc[0], torch.tensor(float(y[0]), dtype=torch.float64))
    # a weight steps (and its accumulator decays) only where its input is active: every
    # weight of the later layers, and the first layer's columns of this event's inputs
    d = e.knots.shape[0]
    index, value = np.zeros(3 * d, np.int64), np.zeros(3 * d)
    m = encode(raw[0], x[0].astype(np.float64), e.knots, e.knot_count, index, value)
    h1, f_in = int(e.sizes[1]), int(e.sizes[0])
    touched = np.ones(len(before), bool)
    first = np.zeros((f_in, h1), bool)
    first[index[:m]] = True
    touched[: h1 * f_in] = first.ravel()
    a = np.where(touched, f * acc + g.numpy() ** 2, acc)
    np.testing.assert_allclose(e.accum, a, rtol=1e-12)
    np.testing.assert_allclose(
        e.params, before - lr * g.numpy() / np.sqrt(a), rtol=1e-9, atol=1e-15
    )


def test_it_sleeps_until_its_warmup_then_learns_the_warmup_labels_in_order():
    raw, x, y = _data()
    labelled = np.ones(len(x), bool)
    labelled[::4] = False
    e = _expert(warmup=30)
    p1 = e.process(raw[:20], x[:20], y[:20], labelled[:20])
    assert np.isnan(p1).all()
    assert not e.awake
    p2 = e.process(raw[20:45], x[20:45], y[20:45], labelled[20:45])
    assert np.isnan(p2[:10]).all()  # events 20..29 still before the knots
    assert np.isfinite(p2[10:]).all()
    # the same as an expert given the knots and taught the 30 warm-up events, then the rest
    ref = _expert(warmup=30)
    ref.process(raw[:30], x[:30], y[:30], labelled[:30])
    np.testing.assert_array_equal(ref.knots, e.knots)
    q = ref.process(raw[30:45], x[30:45], y[30:45], labelled[30:45])
    np.testing.assert_array_equal(q, p2[10:])
    np.testing.assert_array_equal(ref.params, e.params)


@pytest.mark.parametrize("cut", [10, 40])  # a checkpoint during the warm-up, and after it
def test_a_resumed_expert_equals_an_uninterrupted_one(cut):
    raw, x, y = _data(n=80)
    labelled = np.ones(80, bool)
    whole = _expert()
    first = _expert()
    whole.process(raw[:cut], x[:cut], y[:cut], labelled[:cut])
    first.process(raw[:cut], x[:cut], y[:cut], labelled[:cut])
    resumed = _expert()
    resumed.load_state_dict(first.state_dict())
    a = whole.process(raw[cut:], x[cut:], y[cut:], labelled[cut:])
    b = resumed.process(raw[cut:], x[cut:], y[cut:], labelled[cut:])
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(whole.params, resumed.params)


def test_predict_changes_nothing_and_equals_the_prediction_before_a_step():
    e, raw, x, y = _awake()
    before = e.params.copy()
    p = e.predict(raw[:5], x[:5])
    np.testing.assert_array_equal(e.params, before)
    q = e.process(raw[:5], x[:5], y[:5], np.zeros(5, bool))
    np.testing.assert_array_equal(p, q)


@pytest.mark.parametrize("n_outputs", [1, 3])
def test_a_poisoned_label_never_poisons_the_weights(n_outputs):
    e, raw, x, y = _awake(n_outputs)
    before = e.params.copy()
    for bad in (np.nan, 7.0, -1.0) if n_outputs > 1 else (np.nan,):
        y_bad = y[:1].copy()
        y_bad[0] = bad
        e.process(raw[:1], x[:1], y_bad, np.ones(1, bool))
        np.testing.assert_array_equal(e.params, before)  # no step at all


@pytest.mark.parametrize(
    ("setting", "value", "match"),
    [("knots", 1, "knots"), ("hidden", (), "hidden"), ("warmup", 0, "warmup")],
)
def test_bad_settings_are_named(setting, value, match):
    with pytest.raises(ValueError, match=match):
        _expert(**{setting: value})
