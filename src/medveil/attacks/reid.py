"""Re-identification (ReID): match obfuscated victims to a plaintext pool by key-invariant
statistics."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from medveil.attacks.base import AttackContext, MatchingAttack, ThreatModel
from medveil.attacks.gram import offset_by_orthogonality, offset_by_rank
from medveil.attacks.recovery import batched
from medveil.attacks.registry import register_attack
from medveil.keys import Preset, RightProjection, SchemeParams
from medveil.stages import truncated_svd

__all__ = [
    "ReidentificationAttack",
    "observed_spectra",
    "output_offset",
    "plain_spectra",
    "standardise",
]


def _log_spectrum(values: torch.Tensor, floor: float) -> torch.Tensor:
    """``log max(s_i, floor * s_1)``: singular values below the floor are rounding noise
    (float32 truncation gives ~1e-4 relative accuracy) and would dominate a log distance."""
    values = values.double()
    return values.maximum(floor * values[:, :1]).clamp_min(1e-300).log()


def standardise(features: torch.Tensor) -> torch.Tensor:
    """Each feature to zero mean and unit variance over the set."""
    return (features - features.mean(dim=0)) / features.std(dim=0).clamp_min(1e-12)


def output_offset(params: SchemeParams, obfuscated: torch.Tensor) -> float:
    """The standardisation offset of ``multistage`` outputs, estimated on a set (0 for ``svd``).

    :func:`~medveil.attacks.gram.offset_by_rank` when a wide right projection is used, else
    :func:`~medveil.attacks.gram.offset_by_orthogonality`.
    """
    if params.preset is not Preset.MULTISTAGE:
        return 0.0
    if params.right is RightProjection.GAUSSIAN and params.out_width > params.rank:
        return offset_by_rank(obfuscated, params.rank)
    return offset_by_orthogonality(obfuscated)


def observed_spectra(
    params: SchemeParams, obfuscated: torch.Tensor, *, floor: float, offset: float | None = None
) -> torch.Tensor:
    """Log top-``k`` singular values of obfuscated arrays, the standardisation offset removed.

    ``svd``: the output ``Z = U_k S_k`` has exactly the image's top-``k`` singular values.
    ``multistage``: once the offset is removed (``offset``, else :func:`output_offset` of
    ``obfuscated``), ``R_L`` (orthogonal) preserves the spectrum and ``R_R`` distorts it in the
    same way for every image, so the features are comparable with plaintext ones only after
    :func:`standardise` within each set.
    """
    if offset is None:
        offset = output_offset(params, obfuscated)
    y = obfuscated.double() + offset
    return _log_spectrum(torch.linalg.svdvals(y)[:, : params.rank], floor)


def plain_spectra(context: AttackContext, images: torch.Tensor, *, floor: float) -> torch.Tensor:
    """Log top-``k`` singular values of plaintext images (as the scheme's truncation finds them)."""
    p = context.params
    values = [
        truncated_svd(b, p.rank, solver=p.solver).singular_values for b in batched(images, context)
    ]
    return _log_spectrum(torch.cat(values), floor)


@register_attack(
    label="Re-identification",
    summary=(
        "Matches each obfuscated victim to its original in a plaintext pool by key-invariant "
        "statistics (the singular-value spectrum) and an assignment solver."
    ),
    needs=("public",),
    order=90,
)
@dataclass(frozen=True, kw_only=True)
class ReidentificationAttack(MatchingAttack):
    """Match by the log singular-value spectrum, one-to-one by the Hungarian algorithm.

    The log spectra (floored at ``floor * s_1``; :func:`observed_spectra`,
    :func:`plain_spectra`) are compared as they are for ``svd``; for ``multistage`` each feature
    is standardised within the victims and within the pool first. Distance: Euclidean.
    Uses: the obfuscated victims and an unlabeled plaintext pool (A1).

    Parameters
    ----------
    distractors
        Number of public images added to the pool (all when ``None``).
    assignment
        Score top-1 under a one-to-one assignment (else nearest candidate).
    seed
        Order of the pool.
    floor
        Relative floor of the singular values (see :func:`_log_spectrum`).
    """

    name: ClassVar[str] = "reid"
    threats: ClassVar[frozenset[ThreatModel]] = frozenset(
        {ThreatModel.A1, ThreatModel.A2, ThreatModel.A3}
    )

    distractors: int | None = None
    assignment: bool = True
    seed: int = 0
    floor: float = 1e-3

    def distances(
        self, context: AttackContext, obfuscated: torch.Tensor, pool: torch.Tensor
    ) -> torch.Tensor:
        observed = observed_spectra(context.params, obfuscated, floor=self.floor)
        plain = plain_spectra(context, pool, floor=self.floor)
        if context.params.preset is Preset.MULTISTAGE:
            observed, plain = standardise(observed), standardise(plain)
        return torch.cdist(observed, plain)
