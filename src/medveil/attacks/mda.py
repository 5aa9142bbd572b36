"""Minimum Difference Attack (MDA): search for the image whose obfuscation matches the victim's,
and its pool variant (pick the candidate whose obfuscation differs least)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import torch

from medveil.attacks.base import (
    AttackContext,
    MatchingAttack,
    NotApplicableError,
    ReconstructionAttack,
    Reconstructor,
    ThreatModel,
)
from medveil.attacks.public_basis import PublicBasisAttack
from medveil.attacks.recovery import batched
from medveil.keys import Preset
from medveil.stages import dequantize, project, quantize


class NoiselessObfuscation:
    """``Obf_K(X; noise off)`` as a differentiable torch function of ``X``.

    The factor is computed as ``Z = X V_k`` with ``V_k`` (and the sign flips) taken from the SVD
    of the current ``X`` but held constant for the derivative: the exact derivative of the SVD has
    ``1 / (s_i^2 - s_j^2)`` terms that explode on close singular values, while holding ``V_k`` gives
    a stable step that moves ``Z`` towards the target (``Z`` depends on ``X`` only through ``XX^T``
    anyway). Quantization uses a straight-through estimator (identity derivative).
    """

    def __init__(self, context: AttackContext) -> None:
        p = context.params
        self.params = p
        self.left = self.right = None
        self.mean, self.std, self.clip = 0.0, 1.0, 1.0
        if p.preset is Preset.SVD:
            return
        key = context.key
        if key is None or key.calibration is None:
            raise NotApplicableError("the multistage forward model needs the (calibrated) key")
        self.mean, self.std, self.clip = (
            key.calibration.mean,
            key.calibration.std,
            key.calibration.clip,
        )
        left, right = key.left_matrix(), key.right_matrix()
        self.left = None if left is None else context.tensor(torch.as_tensor(left))
        self.right = None if right is None else context.tensor(torch.as_tensor(right))

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        p = self.params
        with torch.no_grad():
            _, _, vh = torch.linalg.svd(x, full_matrices=False)
            basis = vh[..., : p.rank, :].mT
            z0 = x @ basis
            idx = z0.abs().argmax(dim=-2, keepdim=True)
            signs = torch.sign(torch.gather(z0, -2, idx))
            basis = basis * torch.where(signs == 0, torch.ones_like(signs), signs)
        z = x @ basis
        if p.preset is Preset.SVD:
            return z
        if p.bits is not None:
            q = dequantize(
                quantize(z, bits=p.bits, clip=self.clip), bits=p.bits, clip=self.clip, dtype=z.dtype
            )
            z = z + (q - z).detach()
        return (project(z, left=self.left, right=self.right) - self.mean) / self.std


def total_variation(x: torch.Tensor) -> torch.Tensor:
    """Per-image anisotropic TV, ``mean |dX/dr| + mean |dX/dc|``."""
    return (x[:, 1:, :] - x[:, :-1, :]).abs().mean(dim=(1, 2)) + (
        x[:, :, 1:] - x[:, :, :-1]
    ).abs().mean(dim=(1, 2))


def _mda_threats(context: AttackContext) -> str | None:
    # The svd pipeline has no secret: from A1 on the attacker can evaluate it.
    if context.params.preset is Preset.MULTISTAGE and context.threat is not ThreatModel.A3:
        return "the Minimum Difference Attack on multistage needs the key (A3)"
    return None


@dataclass(frozen=True, kw_only=True)
class MinimumDifferenceAttack(ReconstructionAttack):
    """``X_hat = argmin_{X in [0,1]^{n x n}} ||Obf_K(X; noise off) - Y||^2 / ||Y||^2 + lambda TV(X)``.

    Projected normalised gradient descent (step RMS ``lr``, decaying linearly to 0; clamped to
    [0, 1] after each step) from the public mean image, or from the
    public-basis reconstruction. Uses: the public images (start point), the scheme (and the key
    for ``multistage``, A3). Since ``Obf_K(X W) = Obf_K(X)`` for every orthogonal ``W`` (the
    scheme discards ``V_k``), the data term pins down ``X X^T`` only; the start point and TV
    choose among the images that share it. ``extra["relative_residual_mean"]`` is the mean
    misfit ``||Obf_K(X_hat) - Y||^2 / ||Y||^2`` reached.

    Parameters
    ----------
    steps, lr
        Iterations and initial step (RMS change per pixel).
    tv_weight
        ``lambda``.
    init
        ``"public_mean"`` (``METHOD.md``) or ``"public_basis"`` (start from
        ``Z_hat V_hat^T``, a stronger attacker with the same knowledge).
    """

    name: ClassVar[str] = "mda"
    threats: ClassVar[frozenset[ThreatModel]] = frozenset(
        {ThreatModel.A1, ThreatModel.A2, ThreatModel.A3}
    )

    steps: int = 300
    lr: float = 0.02
    tv_weight: float = 0.01
    init: Literal["public_mean", "public_basis"] = "public_mean"

    def applicable(self, context: AttackContext) -> str | None:
        return super().applicable(context) or _mda_threats(context)

    def fit(
        self, context: AttackContext, observed: torch.Tensor, extra: dict[str, Any]
    ) -> Reconstructor:
        assert context.public is not None
        forward = NoiselessObfuscation(context)
        if self.init == "public_basis":
            basis_attack = PublicBasisAttack().fit(context, observed, extra)
            start = lambda y: basis_attack(y)["pb+mean"]
        else:
            mean = sum(b.sum(dim=0) for b in batched(context.public, context)) / len(context.public)
            start = lambda y: mean.expand(len(y), -1, -1)
        residuals: list[float] = []

        def reconstruct(y: torch.Tensor) -> dict[str, torch.Tensor]:
            x = start(y).clamp(0.0, 1.0).clone().requires_grad_(True)
            norm = (y * y).sum(dim=(1, 2)).clamp_min(1e-12)
            with torch.enable_grad():
                for step in range(self.steps):
                    fit = ((forward(x) - y) ** 2).sum(dim=(1, 2)) / norm
                    (grad,) = torch.autograd.grad(
                        (fit + self.tv_weight * total_variation(x)).sum(), x
                    )
                    with torch.no_grad():
                        # Per-image normalised step (RMS = lr, decaying linearly): scale-free, and
                        # unlike Adam it keeps the data term's step inside the row space of V_k
                        # instead of scattering noise into the components the data cannot see.
                        rms = grad.pow(2).mean(dim=(1, 2), keepdim=True).sqrt().clamp_min(1e-20)
                        x -= self.lr * (1.0 - step / self.steps) * grad / rms
                        x.clamp_(0.0, 1.0)
            with torch.no_grad():
                residuals.extend((((forward(x) - y) ** 2).sum(dim=(1, 2)) / norm).tolist())
            # Mean relative misfit ||Obf(X_hat) - Y||^2 / ||Y||^2 of the victims so far.
            extra["relative_residual_mean"] = sum(residuals) / len(residuals)
            return {"mda": x.detach()}

        return reconstruct


@dataclass(frozen=True, kw_only=True)
class MinimumDifferencePoolAttack(MatchingAttack):
    """Pool variant: match ``Y`` to the candidate ``X_c`` minimising ``||Obf_K(X_c; noise off) - Y||^2``.

    The pool is the victims' originals hidden among public images (unlabeled). Uses: the pool,
    the scheme (and the key for ``multistage``, A3).

    Parameters
    ----------
    distractors
        Number of public images added to the pool (all when ``None``).
    assignment
        Score top-1 under a one-to-one assignment (else nearest candidate).
    seed
        Order of the pool.
    """

    name: ClassVar[str] = "mda_pool"
    threats: ClassVar[frozenset[ThreatModel]] = frozenset(
        {ThreatModel.A1, ThreatModel.A2, ThreatModel.A3}
    )

    distractors: int | None = None
    assignment: bool = False
    seed: int = 0

    def applicable(self, context: AttackContext) -> str | None:
        return super().applicable(context) or _mda_threats(context)

    def distances(
        self, context: AttackContext, obfuscated: torch.Tensor, pool: torch.Tensor
    ) -> torch.Tensor:
        forward = NoiselessObfuscation(context)
        candidates = torch.cat([forward(b) for b in batched(pool, context)]).flatten(1)
        return torch.cdist(obfuscated.flatten(1), candidates) ** 2
