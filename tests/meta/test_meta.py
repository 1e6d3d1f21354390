"""Meta-gradients against finite differences, and the implicit path against the unrolled one."""

import pytest
import torch
from torch.func import hessian

from streamlearn.meta import implicit
from streamlearn.meta.maml import (
    InnerRule,
    MetaParams,
    TaskBatch,
    adapt,
    meta_grad,
    meta_loss,
    online,
)
from streamlearn.model.spec import ModelSpec
from streamlearn.optim.linalg import conjugate_gradient, hvp


@pytest.fixture(autouse=True)
def _float64():
    before = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(before)


def _tasks(spec: ModelSpec, n_tasks: int = 2, n: int = 6, seed: int = 0) -> TaskBatch:
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n_tasks, 2 * n, spec.n_features, generator=gen)
    w = torch.randn(n_tasks, spec.n_features, generator=gen)
    score = (x * w[:, None, :]).sum(-1)
    y = (score > 0).double() if spec.task == "binary" else score + 0.5
    return TaskBatch(x[:, :n], y[:, :n], x[:, n:], y[:, n:])


def _fd(f, p: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    out = torch.zeros_like(p)
    for j in range(p.numel()):
        e = torch.zeros_like(p)
        e[j] = eps
        out[j] = (f(p + e) - f(p - e)) / (2 * eps)
    return out


@pytest.mark.parametrize(
    ("spec", "rule"),
    [
        (ModelSpec(2, "regression", hidden=(3,)), InnerRule(steps=2, lam=0.1, rule="adagrad")),
        (ModelSpec(2, "binary", hidden=(3,)), InnerRule(steps=3, lam=0.0, rule="sgd")),
        (
            ModelSpec(3, "binary"),
            InnerRule(steps=2, lam=0.5, rule="adagrad", initial_accumulator=0.1),
        ),
        # the daemon's order: a step per example, the prequential loss as the meta-loss
        (ModelSpec(2, "regression", hidden=(3,)), InnerRule(lam=0.1, order="online")),
        (ModelSpec(2, "binary", hidden=(3,)), InnerRule(lam=0.0, order="online")),
    ],
)
def test_unrolled_meta_gradient_and_rate_hypergradient_match_finite_differences(spec, rule):
    batch = _tasks(spec)
    gen = torch.Generator().manual_seed(1)
    params = MetaParams(
        torch.randn(spec.n_params, generator=gen) * 0.5,
        torch.full((spec.n_params,), -1.5) + 0.1 * torch.randn(spec.n_params, generator=gen),
    )
    g, loss = meta_grad(spec, rule, params, batch)
    assert float(loss) == pytest.approx(float(meta_loss(spec, rule, params, batch)))
    fd_theta = _fd(
        lambda t: meta_loss(spec, rule, MetaParams(t, params.log_rate), batch), params.theta0
    )
    fd_rate = _fd(
        lambda r: meta_loss(spec, rule, MetaParams(params.theta0, r), batch), params.log_rate
    )
    torch.testing.assert_close(g.theta0, fd_theta, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(g.log_rate, fd_rate, atol=1e-6, rtol=1e-5)


def test_first_order_is_the_query_gradient_at_the_adapted_weights():
    spec = ModelSpec(2, "regression")
    rule = InnerRule(steps=2, rule="sgd")
    batch = _tasks(spec, n_tasks=3)
    params = MetaParams(torch.zeros(spec.n_params), torch.full((spec.n_params,), -2.0))
    g, _ = meta_grad(spec, rule, params, batch, first_order=True, learn_rates=False)
    expected = torch.stack(
        [
            torch.func.grad(
                lambda w, t=t: (
                    torch.nn.functional.mse_loss(batch.xq[t] @ w[:2] + w[2], batch.yq[t]) / 2
                )
            )(adapt(spec, rule, params, batch.xs[t], batch.ys[t]))
            for t in range(3)
        ]
    ).mean(0)
    torch.testing.assert_close(g.theta0, expected)
    assert torch.equal(g.log_rate, torch.zeros_like(g.log_rate))


def test_hvp_and_cg_against_dense_linear_algebra():
    spec = ModelSpec(3, "binary", hidden=(4,))
    batch = _tasks(spec, n_tasks=1, n=20)
    w = torch.randn(spec.n_params, generator=torch.Generator().manual_seed(3)) * 0.3

    def loss(v):
        from streamlearn.meta.maml import mean_loss

        return mean_loss(spec, v, batch.xs[0], batch.ys[0])

    H = hessian(loss)(w)
    v = torch.randn(spec.n_params, generator=torch.Generator().manual_seed(4))
    torch.testing.assert_close(hvp(loss, w)(v), H @ v)
    shift = 0.5 - min(0.0, float(torch.linalg.eigvalsh(H).min()))  # H + shift I is SPD
    A = H + shift * torch.eye(spec.n_params)
    sol = conjugate_gradient(lambda u: A @ u, v, max_iter=200, tol=1e-12)
    torch.testing.assert_close(sol.x, torch.linalg.solve(A, v), atol=1e-8, rtol=1e-8)


@pytest.mark.parametrize(
    "spec", [ModelSpec(2, "regression"), ModelSpec(2, "binary")], ids=["quadratic", "logistic"]
)
def test_implicit_meta_gradient_matches_finite_differences(spec):
    lam = 0.7
    batch = _tasks(spec, n_tasks=1, n=10, seed=5)
    theta0 = torch.tensor([0.3, -0.2, 0.1])

    def query_at_solution(t):
        w = implicit.solve_inner(spec, lam, t, batch.xs[0], batch.ys[0], max_iter=500, tol=1e-13)
        from streamlearn.meta.maml import mean_loss

        return mean_loss(spec, w, batch.xq[0], batch.yq[0])

    g, _ = implicit.task_meta_grad(
        spec,
        lam,
        theta0,
        batch.xs[0],
        batch.ys[0],
        batch.xq[0],
        batch.yq[0],
        cg_iter=100,
        inner_iter=500,
    )
    torch.testing.assert_close(g, _fd(query_at_solution, theta0, eps=1e-5), atol=1e-6, rtol=1e-4)


def test_implicit_equals_unrolled_when_the_quadratic_inner_problem_is_solved_exactly():
    spec = ModelSpec(2, "regression")
    lam = 0.5
    batch = _tasks(spec, n_tasks=3, n=8, seed=6)
    theta0 = torch.tensor([0.2, 0.4, -0.3])
    # Plain gradient descent with a fixed small step converges on the strongly convex
    # quadratic; unrolling 400 steps is "solved exactly" to double precision.
    rule = InnerRule(steps=400, lam=lam, rule="sgd")
    params = MetaParams(theta0, torch.full((3,), float(torch.tensor(0.3).log())))
    unrolled, _ = meta_grad(spec, rule, params, batch, learn_rates=False)
    imp, _ = implicit.meta_grad(spec, lam, theta0, batch, cg_iter=50, inner_iter=500)
    torch.testing.assert_close(imp, unrolled.theta0, atol=1e-8, rtol=1e-6)


def test_rules_reject_bad_settings():
    with pytest.raises(ValueError, match="inner_steps"):
        InnerRule(steps=0)
    with pytest.raises(ValueError, match="lambda"):
        implicit.IMAML(ModelSpec(1), lam=0.0, theta0=torch.zeros(2))


def test_batched_implicit_path_agrees_with_the_precise_one_on_a_convex_problem():
    spec = ModelSpec(2, "regression")
    lam = 1.0
    batch = _tasks(spec, n_tasks=4, n=8, seed=7)
    theta0 = torch.tensor([0.1, -0.1, 0.2])
    precise, _ = implicit.meta_grad(spec, lam, theta0, batch, cg_iter=50, inner_iter=500)
    fast, _ = implicit.batched_meta_grad(
        spec, lam, theta0, batch, inner_steps=3000, inner_rate=0.05, cg_iter=10
    )
    torch.testing.assert_close(fast, precise, atol=1e-4, rtol=1e-3)


def test_the_online_meta_loss_is_the_prequential_loss_of_a_step_per_example_by_hand():
    spec = ModelSpec(1, "regression")  # w * x + b, loss (w x + b - y)^2 / 2
    rule = InnerRule(lam=0.0, rule="sgd", order="online")
    params = MetaParams(torch.tensor([0.0, 0.0]), torch.log(torch.tensor([0.5, 0.5])))
    x, y = torch.tensor([[1.0], [2.0]]), torch.tensor([1.0, 1.0])
    w, loss = online(spec, rule, params, x, y)
    # event 1: predicted 0, loss 0.5; g = (-1, -1), w = (0.5, 0.5)
    # event 2: predicted 0.5 * 2 + 0.5 = 1.5, loss 0.125; g = (0.5 * 2, 0.5)
    assert float(loss) == pytest.approx((0.5 + 0.125) / 2)
    torch.testing.assert_close(w, torch.tensor([0.5 - 0.5 * 1.0, 0.5 - 0.5 * 0.5]))
    batch = TaskBatch(x[None, :1], y[None, :1], x[None, 1:], y[None, 1:])
    assert float(meta_loss(spec, rule, params, batch)) == pytest.approx(float(loss))
