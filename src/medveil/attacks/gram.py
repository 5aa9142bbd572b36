"""Keyless attacks (A1) on the projections: Gram joint diagonalisation against the right
projection, and a covariance (PCA) attack against a fixed orthogonal left projection.

Both learn from the joint statistics of many obfuscated arrays (what any observer sees) and
use the public images only to fix scale, order and orientation and for the basis ``V_hat``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch

from medveil.attacks.base import (
    AttackContext,
    ReconstructionAttack,
    Reconstructor,
    ThreatModel,
)
from medveil.attacks.recovery import factors, public_basis
from medveil.attacks.registry import register_attack
from medveil.keys import LeftProjection, Preset, RightProjection

__all__ = [
    "CovarianceAttack",
    "GramAttack",
    "fit_gram",
    "offset_by_orthogonality",
    "offset_by_rank",
    "sign_rule",
]


def sign_rule(z: torch.Tensor) -> torch.Tensor:
    """Flip each column so that its largest-magnitude entry is positive (the scheme's rule)."""
    idx = z.abs().argmax(dim=-2, keepdim=True)
    signs = torch.sign(torch.gather(z, -2, idx))
    return z * torch.where(signs == 0, torch.ones_like(signs), signs)


def offset_by_rank(y: torch.Tensor, rank: int) -> float:
    """Undo the standardisation offset when a right projection is used (``m > k``).

    Every row of ``P = R_L Z_hat R_R`` lies in the ``k``-dimensional row space of ``R_R``, so the
    stacked rows of ``Y = (P - mu) / sigma`` span ``k + 1`` dimensions. With the top ``k + 1``
    eigenpairs ``(Lambda, B)`` of ``sum_i Y_i^T Y_i`` and the row sum ``s = sum_i Y_i^T 1``,
    ``Y + c 1 1^T`` drops to rank ``k`` exactly for ``c = -1 / (b^T Lambda^{-1} B^T s)`` with
    ``b = B^T 1`` (matrix determinant lemma). Noise and quantization act before the projection,
    so this is exact up to rounding.
    """
    y = y.double()
    gram = (y.mT @ y).sum(dim=0)
    evals, evecs = torch.linalg.eigh(gram)
    lam, basis = evals[-(rank + 1) :], evecs[:, -(rank + 1) :]
    row_sum = y.sum(dim=(0, 1))
    ones = torch.ones(y.shape[-1], dtype=y.dtype, device=y.device)
    return float(-1.0 / ((basis.T @ ones) @ ((basis.T @ row_sum) / lam)))


def offset_by_orthogonality(y: torch.Tensor) -> float:
    """Undo the standardisation offset when only a left projection is used (``m = k``).

    The columns of ``Z_hat`` are orthogonal, and ``R_L`` is orthogonal, so
    ``G(c) = (Y + c 1 1^T)^T (Y + c 1 1^T)`` is diagonal at the true ``c``; ``c`` minimises
    the summed squared off-diagonal of ``G(c) = G_0 + c G_1 + c^2 G_2``, a quartic in ``c``.
    """
    y = y.double()
    n = y.shape[-2]
    s = y.sum(dim=-2)  # (B, k) column sums
    g0 = y.mT @ y
    g1 = s[:, :, None] + s[:, None, :]
    g2 = torch.full_like(g0, float(n))
    off = 1.0 - torch.eye(g0.shape[-1], dtype=y.dtype, device=y.device)
    a, b, c = (g * off for g in (g0, g1, g2))
    # sum (a + b c + c2 c^2)^2 = coefficients of a quartic in c.
    quartic = [
        float((c * c).sum()),
        float(2 * (b * c).sum()),
        float((b * b).sum() + 2 * (a * c).sum()),
        float(2 * (a * b).sum()),
        float((a * a).sum()),
    ]
    roots = np.roots(np.polyder(quartic))
    real = roots[np.abs(roots.imag) < 1e-9 * max(1.0, float(np.abs(roots).max()))].real
    return float(min(real, key=lambda r: np.polyval(quartic, r)))


@dataclass(frozen=True)
class _GramFit:
    offset: float
    row_space: torch.Tensor  # (m, k) orthonormal basis of the rows of R_R
    diagonaliser: torch.Tensor  # (k, k) T, with columns ordered and scaled

    def __call__(self, y: torch.Tensor) -> torch.Tensor:
        return (y + self.offset) @ self.row_space @ self.diagonaliser


def fit_gram(observed: torch.Tensor, context: AttackContext, *, seed: int) -> _GramFit:
    """Recover ``W_i = R_L Z_hat_i`` from ``Y_i`` without the key (right projection present).

    1. Remove the offset (:func:`offset_by_rank`) and project on the common row space ``Q``:
       ``W'_i = (Y_i + c) Q = R_L Z_hat_i M`` with one unknown ``k x k`` matrix ``M``.
    2. ``G_i = W'_i^T W'_i = M^T (Z_hat_i^T Z_hat_i) M`` with ``Z_hat_i^T Z_hat_i`` (nearly)
       diagonal; the generalized eigenvectors ``T`` of ``(sum_i w_i G_i, sum_i G_i)``
       (trace-normalised ``G_i``, random weights ``w_i``) diagonalise all of them:
       ``M T = D P`` (column scale and order).
    3. Fix ``D`` up to one factor by equalising the row norms of the implied ``R_R`` (whose
       rows are i.i.d. Gaussian), order the columns by decreasing mean norm (singular values
       are sorted) and match the public images' mean energy ``mean ||Z||_F^2``.
    """
    p = context.params
    y = observed.to(context.device, torch.float64)
    offset = offset_by_rank(y, p.rank)
    shifted = y + offset
    _, evecs = torch.linalg.eigh((shifted.mT @ shifted).sum(dim=0))
    row_space = evecs[:, -p.rank :]
    w = shifted @ row_space
    grams = w.mT @ w
    grams = grams / grams.diagonal(dim1=-2, dim2=-1).sum(-1)[:, None, None]
    weights = torch.as_tensor(
        np.random.default_rng(seed).uniform(0.0, 1.0, len(grams)),
        dtype=grams.dtype,
        device=grams.device,
    )
    total = grams.sum(dim=0)
    chol = torch.linalg.cholesky(total)
    mixed = (weights[:, None, None] * grams).sum(dim=0)
    inner = torch.linalg.solve_triangular(
        chol, torch.linalg.solve_triangular(chol, mixed, upper=False).T, upper=False
    )
    _, vecs = torch.linalg.eigh((inner + inner.T) / 2)
    diag = torch.linalg.solve_triangular(chol.T, vecs, upper=True)
    # R_R = D P T^{-1} Q^T up to sigma: its rows are i.i.d. Gaussian with nearly equal norms, so
    # equalising the row norms of T^{-1} fixes the column scales D up to one common factor.
    diag = diag * torch.linalg.inv(diag).norm(dim=1)
    recovered = w @ diag
    order = torch.argsort(recovered.norm(dim=-2).mean(dim=0), descending=True)
    assert context.public is not None
    public_energy = (factors(context.public, context).double() ** 2).sum(dim=(1, 2)).mean()
    diag = diag[:, order] * (public_energy / (recovered**2).sum(dim=(1, 2)).mean()).sqrt()
    return _GramFit(offset, row_space.to(context.dtype), diag.to(context.dtype))


@register_attack(
    label="Gram joint diagonalisation",
    summary=(
        "Keyless: recovers the factor under a right-only projection from the joint statistics "
        "of the obfuscated arrays; the public images fix scale and basis."
    ),
    needs=("public",),
    order=100,
)
@dataclass(frozen=True, kw_only=True)
class GramAttack(ReconstructionAttack):
    """Keyless recovery of ``Z`` under a right-only projection, then ``X_hat = Z_hat V_hat^T``.

    See :func:`fit_gram`; the column signs are then fixed by the scheme's own sign rule.
    Uses: the obfuscated victims' joint statistics and the public images (scale, ``V_hat``);
    no key, no pairs (A1; also valid under A2/A3, which know more).

    Parameters
    ----------
    seed
        Random weights of the joint diagonalisation.
    """

    name: ClassVar[str] = "gram"
    threats: ClassVar[frozenset[ThreatModel]] = frozenset(
        {ThreatModel.A1, ThreatModel.A2, ThreatModel.A3}
    )

    seed: int = 0

    def applicable(self, context: AttackContext) -> str | None:
        p = context.params
        if p.preset is not Preset.MULTISTAGE or p.right is not RightProjection.GAUSSIAN:
            return "gram needs a multistage scheme with a right projection"
        if p.left is not LeftProjection.NONE:
            return "gram recovers R_L Z; with a left projection use the covariance attack"
        if p.out_width <= p.rank:
            return "gram needs m > k"
        return super().applicable(context)

    def fit(
        self, context: AttackContext, observed: torch.Tensor, extra: dict[str, Any]
    ) -> Reconstructor:
        gram = fit_gram(observed, context, seed=self.seed)
        basis = public_basis(context)
        return lambda y: {"gram": sign_rule(gram(y)) @ basis.mT}


def _sign_fit(obs: torch.Tensor, pub: torch.Tensor, iterations: int = 20) -> torch.Tensor:
    """Signs ``s_a`` with ``obs[a, j] ~ s_a d_j pub[a, j]`` for unknown signs ``d_j`` (rank-one fit)."""
    agree = obs * pub
    d = torch.ones(agree.shape[1], dtype=agree.dtype, device=agree.device)
    s = torch.sign(agree @ d)
    for _ in range(iterations):
        d = torch.sign(s @ agree)
        d = torch.where(d == 0, torch.ones_like(d), d)
        s = torch.sign(agree @ d)
        s = torch.where(s == 0, torch.ones_like(s), s)
    return s


@register_attack(
    label="Covariance (PCA) attack",
    summary=(
        "Keyless: recovers a fixed orthogonal left projection from the covariance of the "
        "obfuscated arrays against that of the public images."
    ),
    needs=("public",),
    order=110,
)
@dataclass(frozen=True, kw_only=True)
class CovarianceAttack(ReconstructionAttack):
    """PCA attack on a fixed orthogonal left projection.

    With ``W_i = R_L Z_hat_i`` (from :func:`fit_gram` when a right projection is used, else
    ``Y_i`` with the offset of :func:`offset_by_orthogonality` removed and scaled to the public
    energy), the column covariance ``C_W = mean W W^T = R_L C_Z R_L^T`` where ``C_Z`` is measured
    on the public images' factors. Eigenvectors ``F`` of ``C_W`` and ``E`` of ``C_Z`` give
    ``R_hat_L = F S E^T``; the signs ``S`` come from third moments per column index,
    ``mean_i (f_a^T w_ij)^3 = s_a d_j mean_i (e_a^T z_ij)^3`` (a rank-one sign fit). Then
    ``Z_hat = sign_rule(R_hat_L^T W)`` and ``X_hat = Z_hat V_hat^T``.
    Uses: the obfuscated victims' joint statistics and the public images; no key (A1).

    Parameters
    ----------
    seed
        Random weights of the joint diagonalisation (right projection only).
    """

    name: ClassVar[str] = "covariance"
    threats: ClassVar[frozenset[ThreatModel]] = frozenset(
        {ThreatModel.A1, ThreatModel.A2, ThreatModel.A3}
    )

    seed: int = 0

    def applicable(self, context: AttackContext) -> str | None:
        p = context.params
        if p.preset is not Preset.MULTISTAGE or p.left is not LeftProjection.ORTHOGONAL:
            return "covariance needs a multistage scheme with a left projection"
        if p.right is RightProjection.GAUSSIAN and p.out_width <= p.rank:
            return "covariance with a right projection needs m > k"
        return super().applicable(context)

    def fit(
        self, context: AttackContext, observed: torch.Tensor, extra: dict[str, Any]
    ) -> Reconstructor:
        assert context.public is not None
        z_pub = factors(context.public, context).double()
        if context.params.right is RightProjection.GAUSSIAN:
            to_w = fit_gram(observed, context, seed=self.seed)
        else:
            offset = offset_by_orthogonality(observed.to(context.device))
            energy = (
                ((observed.to(context.device, torch.float64) + offset) ** 2).sum(dim=(1, 2)).mean()
            )
            scale = float(((z_pub**2).sum(dim=(1, 2)).mean() / energy).sqrt())
            to_w = lambda y: (y + offset) * scale
        w = to_w(observed.to(context.device, context.dtype)).double()
        _, f = torch.linalg.eigh((w @ w.mT).mean(dim=0))
        _, e = torch.linalg.eigh((z_pub @ z_pub.mT).mean(dim=0))
        signs = _sign_fit(((f.T @ w) ** 3).mean(dim=0), ((e.T @ z_pub) ** 3).mean(dim=0))
        inverse = (e * signs) @ f.T  # R_hat_L^T = E S F^T
        inverse = inverse.to(context.dtype)
        basis = public_basis(context)
        return lambda y: {"covariance": sign_rule(inverse @ to_w(y)) @ basis.mT}
