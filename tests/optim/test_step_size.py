"""Step-size pieces against their oracles: eigvalsh, the quadratic convergence rate, and a
first-order plant."""

import itertools
import math

import pytest
import torch
from torch.func import hessian

from streamlearn.meta.maml import mean_loss
from streamlearn.model.spec import ModelSpec
from streamlearn.optim.curvature import Spectrum, lanczos, step_cap
from streamlearn.optim.linalg import hvp
from streamlearn.optim.pi import PIController


def _quadratic(eigs: torch.Tensor, seed: int = 0) -> torch.Tensor:
    n = len(eigs)
    q, _ = torch.linalg.qr(
        torch.randn(n, n, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    )
    out: torch.Tensor = q @ torch.diag(eigs) @ q.T
    return out


@pytest.mark.parametrize("k", [30, 20])
def test_lanczos_on_a_quadratic_with_known_spectrum(k):
    eigs = torch.linspace(0.5, 20.0, 30, dtype=torch.float64)
    A = _quadratic(eigs)
    s = lanczos(lambda v: A @ v, 30, k=k)
    tol = 1e-9 if k == 30 else 1e-4
    assert s.lambda_min == pytest.approx(0.5, rel=tol)
    assert s.lambda_max == pytest.approx(20.0, rel=tol)


def test_lanczos_on_a_small_mlp_against_the_dense_hessian():
    spec = ModelSpec(3, "binary", hidden=(4,))
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(40, 3, generator=gen, dtype=torch.float64)
    y = (x[:, 0] > 0).double()
    w = torch.randn(spec.n_params, generator=gen, dtype=torch.float64) * 0.5

    def loss(v: torch.Tensor) -> torch.Tensor:
        return mean_loss(spec, v, x, y)

    dense = torch.linalg.eigvalsh(hessian(loss)(w))
    s = lanczos(hvp(loss, w), spec.n_params, k=spec.n_params)
    assert s.lambda_min == pytest.approx(float(dense[0]), abs=1e-8)
    assert s.lambda_max == pytest.approx(float(dense[-1]), abs=1e-8)
    assert s.lambda_min < 0 < s.lambda_max  # this one is not convex: the fallback rule applies


def test_gradient_descent_with_the_cap_converges_at_the_theoretical_rate():
    eigs = torch.tensor([1.0, 2.5, 4.0, 9.0], dtype=torch.float64)
    A = _quadratic(eigs, seed=1)
    eta = step_cap(lanczos(lambda v: A @ v, 4, k=4))
    assert eta is not None
    assert eta == pytest.approx(2.0 / (1.0 + 9.0))
    kappa = 9.0
    rate = (kappa - 1) / (kappa + 1)
    _, vecs = torch.linalg.eigh(A)
    w = vecs[:, 0] + vecs[:, -1]  # the two slowest directions
    norms = []
    for _ in range(30):
        w = w - eta * (A @ w)
        norms.append(float(torch.linalg.vector_norm(w)))
    ratios = [b / a for a, b in itertools.pairwise(norms)]
    assert all(r == pytest.approx(rate, rel=1e-9) for r in ratios)
    # Any other fixed step is slower on the worst direction.
    for other in (0.9 * eta, 1.1 * eta):
        worst = max(abs(1 - other * 1.0), abs(1 - other * 9.0))
        assert worst > rate


def test_the_cap_where_curvature_is_not_positive():
    assert step_cap(Spectrum(-2.0, 4.0, 3)) == pytest.approx(0.25)
    assert step_cap(Spectrum(0.0, 4.0, 3)) == pytest.approx(0.25)
    assert step_cap(Spectrum(-3.0, -1.0, 3)) is None
    # On an indefinite quadratic the fallback step is stable along positive curvature.
    A = torch.diag(torch.tensor([-0.5, 1.0, 4.0], dtype=torch.float64))
    eta = step_cap(lanczos(lambda v: A @ v, 3, k=3))
    assert eta is not None
    assert abs(1 - eta * 4.0) < 1
    assert abs(1 - eta * 1.0) < 1


def _plant(
    pi: PIController,
    steps: int,
    gain: float = 2.0,
    tau: float = 5.0,
    setpoints: dict[int, float] | None = None,
) -> list[float]:
    """First-order plant y' = (gain * u - y) / tau, Euler with dt = 1."""
    y, out = 0.0, []
    for t in range(steps):
        if setpoints and t in setpoints:
            pi.setpoint = setpoints[t]
        u = pi.update(y)
        y = y + (gain * u - y) / tau
        out.append(y)
    return out


def test_pi_step_response_settles_on_a_first_order_plant():
    ys = _plant(PIController(setpoint=1.0, kp=0.5, ki=0.1), 200)
    assert max(ys) < 1.15  # modest overshoot
    settled = next(t for t in range(200) if all(abs(v - 1.0) < 0.01 for v in ys[t:]))
    assert settled < 60
    assert ys[-1] == pytest.approx(1.0, abs=1e-4)


def test_pi_anti_windup_leaves_saturation_promptly():
    # Setpoint 3 needs u = 1.5, but the output is limited to 1.0: saturated for 100 steps.
    pi = PIController(setpoint=3.0, kp=0.5, ki=0.1, out_min=-1.0, out_max=1.0)
    outputs: list[float] = []
    y, ys = 0.0, []
    for t in range(160):
        if t == 100:
            pi.setpoint = 1.0
            integral_at_switch = pi.integral
        u = pi.update(y)
        outputs.append(u)
        y = y + (2.0 * u - y) / 5.0
        ys.append(y)
    # Saturated: the output uses its full range and the plant reaches what the limit allows.
    assert outputs[99] == pytest.approx(1.0)
    assert ys[99] == pytest.approx(2.0, abs=1e-3)
    # No windup: the integral stayed at the value that holds the output at the limit
    # (~ (1 - 0.5 * 1) / 0.1 = 5), not ~100 steps x error.
    assert integral_at_switch < 6
    # The setpoint drops to a reachable 1.0: the output leaves the limit at once and settles.
    assert outputs[100] < 1.0
    assert all(abs(v - 1.0) < 0.02 for v in ys[140:])


def test_pi_rejects_bad_settings():
    with pytest.raises(ValueError, match="out_min"):
        PIController(setpoint=0, kp=1, ki=1, out_min=1, out_max=0)
    with pytest.raises(ValueError, match="gains"):
        PIController(setpoint=0, kp=-1, ki=1)
    assert math.isinf(PIController(setpoint=0, kp=1, ki=0).out_max)
