"""The know-nothing baseline: the mean of the public images, whatever the victim."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from medveil.attacks.base import AttackContext, ReconstructionAttack, Reconstructor, ThreatModel
from medveil.attacks.registry import register_attack

__all__ = ["MeanImageBaseline"]


@register_attack(
    label="Mean public image (yardstick)",
    summary=(
        "The mean public image, the same for every victim: not an attack but the yardstick; "
        "an attack recovers something of the victim only where it scores above it."
    ),
    needs=("public",),
    order=10,
)
@dataclass(frozen=True, kw_only=True)
class MeanImageBaseline(ReconstructionAttack):
    """``X_hat = mean of the public images`` for every victim: it ignores ``Y`` entirely.

    Not an attack but the yardstick for one: SSIM and PSNR reward matching the dark background
    and the average anatomy of a modality, so an image that carries no information about the
    victim already scores well above 0 (on brain MRI at 224 px, a mean SSIM of about 0.3). A
    reconstruction attack leaks something about the victim only where it beats this row.
    Uses: the public images (A1, so every threat model).
    """

    name: ClassVar[str] = "mean_image"
    threats: ClassVar[frozenset[ThreatModel]] = frozenset({ThreatModel.A1})

    def fit(
        self, context: AttackContext, observed: torch.Tensor, extra: dict[str, Any]
    ) -> Reconstructor:
        assert context.public is not None
        mean = context.public.to(context.device, context.dtype).mean(dim=0)
        return lambda y: {"mean_image": mean.expand(len(y), *mean.shape)}
