"""Public-basis attack (PB): re-synthesise the image from the recovered factor and a basis
estimated on public images."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from medveil.attacks.base import AttackContext, ReconstructionAttack, Reconstructor, ThreatModel
from medveil.attacks.recovery import factor_inverse, public_basis, self_made_pairs
from medveil.attacks.registry import register_attack
from medveil.keys import Preset

__all__ = ["PublicBasisAttack"]


@register_attack(
    label="Public-basis attack",
    summary=(
        "Re-synthesises the image from whatever factor the attacker recovers (the svd output "
        "itself, or via the key or pairs) and a basis estimated from the public images."
    ),
    needs=("public",),
    order=30,
)
@dataclass(frozen=True, kw_only=True)
class PublicBasisAttack(ReconstructionAttack):
    """``X_hat = Z_hat V_hat^T``, and ``X_hat + M (I - V_hat V_hat^T)`` with ``M`` the mean public
    image (variant ``pb+mean``); under A3 on ``multistage`` also with ``Z_hat`` from a fit on
    self-made pairs (``pb-pairs``, :func:`~medveil.attacks.recovery.self_made_pairs`). The
    result is the best variant (``extra["variants"]`` has them all).

    Uses: the public images (for ``V_hat``, :func:`~medveil.attacks.recovery.public_basis`) and
    whatever recovers ``Z_hat`` from ``Y``: the output itself for ``svd`` (A1-A3); for
    ``multistage`` the leaked key (A3, ``Z_hat = R_L^T (sigma Y + mu) R_R^+``) or a projection
    fitted by least squares on the known pairs (A2).

    Parameters
    ----------
    basis_passes
        Sign-alignment passes of the public-basis estimate.
    """

    name: ClassVar[str] = "public_basis"
    threats: ClassVar[frozenset[ThreatModel]] = frozenset(
        {ThreatModel.A1, ThreatModel.A2, ThreatModel.A3}
    )

    basis_passes: int = 2

    def applicable(self, context: AttackContext) -> str | None:
        reason = super().applicable(context)
        if (
            reason is None
            and context.params.preset is Preset.MULTISTAGE
            and context.threat is ThreatModel.A1
        ):
            return (
                "public_basis on multistage needs the key (A3) or pairs (A2) to undo the projection"
            )
        return reason

    def fit(
        self, context: AttackContext, observed: torch.Tensor, extra: dict[str, Any]
    ) -> Reconstructor:
        basis = public_basis(context, passes=self.basis_passes)
        invert = factor_inverse(context)
        # What Z V_hat^T leaves out (the complement of V_hat's span) is filled with the mean
        # public image's share of it: an attacker's prior for the rest of the picture.
        assert context.public is not None
        mean = context.public.to(context.device, context.dtype).mean(dim=0)
        filler = mean - (mean @ basis) @ basis.mT

        inverses = {"pb": invert}
        if context.key is not None and context.params.preset is Preset.MULTISTAGE:
            inverses["pb-pairs"] = self_made_pairs(context)

        def reconstruct(y: torch.Tensor) -> dict[str, torch.Tensor]:
            out = {}
            for name, inverse in inverses.items():
                estimate = inverse(y) @ basis.mT
                out[name] = estimate
                out[f"{name}+mean"] = estimate + filler
            return out

        return reconstruct
