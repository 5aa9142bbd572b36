"""Re-identification (ReID): match obfuscated victims to a plaintext pool by key-invariant
statistics."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from medveil.attacks.base import AttackContext, MatchingAttack, ThreatModel
from medveil.attacks.gram import offset_by_orthogonality, offset_by_rank
from medveil.attacks.recovery import batched
from medveil.keys import Preset, RightProjection
from medveil.stages import truncated_svd


def _log_spectrum(values: torch.Tensor, floor: float) -> torch.Tensor:
    """``log max(s_i, floor * s_1)``: singular values below the floor are rounding noise
    (float32 truncation gives ~1e-4 relative accuracy) and would dominate a log distance."""
    values = values.double()
    return values.maximum(floor * values[:, :1]).clamp_min(1e-300).log()


def _standardise(features: torch.Tensor) -> torch.Tensor:
    return (features - features.mean(dim=0)) / features.std(dim=0).clamp_min(1e-12)


@dataclass(frozen=True, kw_only=True)
class ReidentificationAttack(MatchingAttack):
    """Match by the log singular-value spectrum, one-to-one by the Hungarian algorithm.

    ``svd``: the output ``Z = U_k S_k`` has exactly the image's top-``k`` singular values, so the
    log spectra (floored at ``floor * s_1``) are compared as they are. ``multistage``: the standardisation offset is removed
    (:func:`~medveil.attacks.gram.offset_by_rank` or
    :func:`~medveil.attacks.gram.offset_by_orthogonality`), ``R_L`` (orthogonal) preserves the
    spectrum and ``R_R`` distorts it in the same way for every image, so each feature is
    standardised within the victims and within the pool before comparing. Distance: Euclidean.
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
        p = context.params
        y = obfuscated.double()
        if p.preset is Preset.MULTISTAGE:
            if p.right is RightProjection.GAUSSIAN and p.out_width > p.rank:
                y = y + offset_by_rank(y, p.rank)
            else:
                y = y + offset_by_orthogonality(y)
        observed = _log_spectrum(torch.linalg.svdvals(y)[:, : p.rank], self.floor)
        plain = _log_spectrum(
            torch.cat(
                [
                    truncated_svd(b, p.rank, solver=p.solver).singular_values
                    for b in batched(pool, context)
                ]
            ),
            self.floor,
        )
        if p.preset is Preset.MULTISTAGE:
            observed, plain = _standardise(observed), _standardise(plain)
        return torch.cdist(observed, plain)
