"""Extreme eigenvalues of a loss's Hessian by Lanczos on HVPs, and the step cap they imply.

``lanczos`` runs k steps of the Lanczos iteration with full reorthogonalisation (the basis
is kept, and each new vector is orthogonalised against all of it twice, so the Ritz values
stay accurate on the small problems it serves: one model's parameters) and returns the
extreme Ritz values of the tridiagonal matrix.

``step_cap``: on a convex quadratic, the fixed step that minimises the worst contraction is
``2 / (lambda_min + lambda_max)``, giving the rate ``(kappa - 1) / (kappa + 1)``. Where
``lambda_min <= 0`` (flat directions or a saddle) that formula would allow huge or negative
steps; the cap then falls back to ``1 / lambda_max``, the step that is stable (below
``2 / lambda_max``) along the sharpest direction and the one gradient descent's descent lemma
uses; with ``lambda_max <= 0`` as well there is no curvature to bound the step and the cap
is ``None`` (no cap).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from streamlearn.optim.linalg import MatVec


@dataclass(frozen=True)
class Spectrum:
    lambda_min: float
    lambda_max: float
    iterations: int


def lanczos(
    matvec: MatVec, n: int, k: int = 20, *, seed: int = 0, dtype: torch.dtype = torch.float64
) -> Spectrum:
    """Extreme eigenvalue estimates of the symmetric operator ``matvec`` on ``R^n``.

    >>> A = torch.diag(torch.tensor([1.0, 2.0, 5.0], dtype=torch.float64))
    >>> s = lanczos(lambda v: A @ v, 3, k=3)
    >>> round(s.lambda_min, 6), round(s.lambda_max, 6)
    (1.0, 5.0)
    """
    k = min(k, n)
    gen = torch.Generator().manual_seed(seed)
    q = torch.randn(n, generator=gen, dtype=dtype)
    q = q / torch.linalg.vector_norm(q)
    basis = [q]
    alphas: list[torch.Tensor] = []
    betas: list[torch.Tensor] = []
    for j in range(k):
        w = matvec(basis[j]).to(dtype)
        alpha = basis[j] @ w
        alphas.append(alpha)
        Q = torch.stack(basis)
        for _ in range(2):  # full reorthogonalisation, twice ("twice is enough")
            w = w - Q.T @ (Q @ w)
        beta = torch.linalg.vector_norm(w)
        if j == k - 1 or beta < 1e-10 * max(1.0, float(alpha.abs())):
            break
        betas.append(beta)
        basis.append(w / beta)
    m = len(alphas)
    T = torch.diag(torch.stack(alphas))
    if betas:
        off = torch.stack(betas[: m - 1])
        T = T + torch.diag(off, 1) + torch.diag(off, -1)
    ritz = torch.linalg.eigvalsh(T)
    return Spectrum(float(ritz[0]), float(ritz[-1]), m)


def step_cap(spectrum: Spectrum) -> float | None:
    """The largest safe fixed step (see the module docstring for the rule).

    >>> step_cap(Spectrum(1.0, 3.0, 2)), step_cap(Spectrum(-0.5, 4.0, 2))
    (0.5, 0.25)
    """
    lo, hi = spectrum.lambda_min, spectrum.lambda_max
    if hi <= 0:
        return None
    if lo <= 0:
        return 1.0 / hi
    return 2.0 / (lo + hi)
