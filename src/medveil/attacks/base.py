"""The attack base classes: reconstruction (scored per image) and matching (ranked in a pool).

Threat models, the attacker's context and the victims are in :mod:`medveil.attacks.context`,
the result object in :mod:`medveil.attacks.result`; both are re-exported here.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from typing import Any, ClassVar

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment

from medveil.attacks.context import (
    AttackContext,
    DisjointnessError,
    NotApplicableError,
    ThreatModel,
    Victims,
    check_disjoint,
    content_ids,
)
from medveil.attacks.result import RESULT_FORMAT, RESULT_VERSION, AttackResult, to_json_value
from medveil.metrics import METRIC_NAMES, reconstruction_metrics

__all__ = [
    "Attack",
    "AttackContext",
    "AttackResult",
    "DisjointnessError",
    "MatchingAttack",
    "NotApplicableError",
    "Pool",
    "RESULT_FORMAT",
    "RESULT_VERSION",
    "ReconstructionAttack",
    "Reconstructor",
    "SCORE_PIXELS",
    "ThreatModel",
    "Victims",
    "check_disjoint",
    "content_ids",
    "make_pool",
    "score_reconstructions",
]


class Attack(ABC):
    """Base of every attack. Subclasses are frozen keyword-only dataclasses of their parameters.

    Subclasses set :attr:`name` and :attr:`threats` and may refine :meth:`applicable`.
    """

    name: ClassVar[str]
    threats: ClassVar[frozenset[ThreatModel]]

    def applicable(self, context: AttackContext) -> str | None:
        """``None`` if the attack applies to ``context``, else the reason it does not."""
        if context.threat not in self.threats:
            allowed = ", ".join(sorted(self.threats))
            return f"{self.name} needs threat model {allowed}, not {context.threat}"
        return None

    def _check(self, context: AttackContext, victims: Victims) -> None:
        reason = self.applicable(context)
        if reason is not None:
            raise NotApplicableError(reason)
        context.check_victims(victims)
        if tuple(victims.obfuscated.shape[1:]) != context.params.out_shape:
            raise ValueError(
                f"victims' obfuscated arrays are {tuple(victims.obfuscated.shape[1:])}, "
                f"the scheme gives {context.params.out_shape}"
            )

    def parameters(self) -> dict[str, Any]:
        """The attack's parameters as JSON values (callbacks left out)."""
        return {k: to_json_value(v) for k, v in asdict(self).items() if not callable(v)}  # type: ignore[call-overload]

    def _result(self, context: AttackContext, victims: Victims, **kwargs: Any) -> AttackResult:
        return AttackResult(
            attack=self.name,
            threat=context.threat,
            preset=str(context.params.preset),
            parameters=self.parameters(),
            ids=list(victims.ids),
            **kwargs,
        )

    @abstractmethod
    def run(self, context: AttackContext, victims: Victims, **options: Any) -> AttackResult:
        """Attack ``victims`` with the knowledge in ``context``."""


Reconstructor = Callable[[torch.Tensor], Mapping[str, torch.Tensor]]

#: Pixels scored in one call of :func:`~medveil.metrics.reconstruction_metrics`. SSIM's 11 x 11
#: Gaussian window runs as a CPU convolution that unfolds its five input maps per tap: about
#: 240 MB per 224 x 224 image (measured), so scoring a whole reconstruction batch of 64 such
#: images at once peaks near 16 GB. Per-image metrics do not depend on the grouping (beyond
#: float32 rounding), and small groups are also faster.
SCORE_PIXELS = 1 << 17


def score_reconstructions(
    original: torch.Tensor, reconstruction: torch.Tensor
) -> dict[str, np.ndarray]:
    """Per-image metrics of ``(B, n, n)`` batches, computed a few images at a time.

    Same values as :func:`~medveil.metrics.reconstruction_metrics` on the whole batch, with
    memory bounded by :data:`SCORE_PIXELS` whatever the batch size.
    """
    step = max(1, SCORE_PIXELS // max(1, original[0].numel()))
    parts = [
        reconstruction_metrics(original[i : i + step], reconstruction[i : i + step])
        for i in range(0, len(original), step)
    ]
    return {m: np.concatenate([part[m] for part in parts]) for m in METRIC_NAMES}


class ReconstructionAttack(Attack):
    """An attack that turns obfuscated arrays into image estimates.

    Subclasses implement :meth:`fit`, which uses only ``context`` and returns a function from an
    obfuscated batch ``(B, n, m)`` to one or more named reconstructions ``(B, n, n)``
    ("variants", e.g. LBA's ``t``). Every variant is scored; the result's per-image metrics are
    those of the variant with the highest mean SSIM, and ``extra["variants"]`` summarises all.
    """

    @abstractmethod
    def fit(
        self, context: AttackContext, observed: torch.Tensor, extra: dict[str, Any]
    ) -> Reconstructor:
        """Prepare the attack from the attacker's knowledge alone.

        ``observed`` holds every victim's obfuscated array (what any observer sees; the
        keyless attacks learn from their joint statistics). The attack may record
        JSON-serialisable facts (a training history, a residual) in ``extra``, during fitting or
        reconstruction; they end up in the result's ``extra``.
        """

    def run(
        self,
        context: AttackContext,
        victims: Victims,
        *,
        batch_size: int = 64,
        keep_reconstructions: bool = False,
    ) -> AttackResult:
        """Fit, reconstruct the victims batch by batch and score each variant."""
        self._check(context, victims)
        start = time.perf_counter()
        extra: dict[str, Any] = {}
        reconstruct = self.fit(context, victims.obfuscated, extra)
        scores: dict[str, list[dict[str, np.ndarray]]] = {}
        kept: dict[str, list[torch.Tensor]] = {}
        with torch.no_grad():
            for i in range(0, len(victims), batch_size):
                y = context.tensor(victims.obfuscated[i : i + batch_size])
                x = victims.originals[i : i + batch_size]
                for variant, xhat in reconstruct(y).items():
                    scores.setdefault(variant, []).append(score_reconstructions(x, xhat.detach()))
                    if keep_reconstructions:
                        kept.setdefault(variant, []).append(xhat.detach().to("cpu", torch.float32))
        merged = {
            v: {m: np.concatenate([b[m] for b in batches]) for m in METRIC_NAMES}
            for v, batches in scores.items()
        }
        best = max(merged, key=lambda v: float(merged[v]["ssim"].mean()))
        if len(merged) > 1:
            extra["best_variant"] = best
            extra["variants"] = {
                v: {f"{m}_mean": float(np.mean(s[m])) for m in METRIC_NAMES}
                for v, s in merged.items()
            }
        return self._result(
            context,
            victims,
            metrics=merged[best],
            extra=extra,
            seconds=time.perf_counter() - start,
            reconstructions=torch.cat(kept[best]) if keep_reconstructions else None,
        )


@dataclass(frozen=True, eq=False)
class Pool:
    """An unlabeled plaintext pool that hides the victims' originals among public images."""

    images: torch.Tensor
    truth: np.ndarray  #: pool index of each victim's original (evaluator only)


def make_pool(
    context: AttackContext, victims: Victims, *, distractors: int | None, seed: int
) -> Pool:
    """Victims' originals plus up to ``distractors`` public images, in a seeded random order."""
    assert context.public is not None
    public = context.public if distractors is None else context.public[:distractors]
    images = torch.cat([victims.originals.to(public.dtype), public.to(victims.originals.device)])
    order = np.random.default_rng(seed).permutation(len(images))
    position = np.empty_like(order)
    position[order] = np.arange(len(order))
    return Pool(images=images[torch.as_tensor(order)], truth=position[: len(victims)])


class MatchingAttack(Attack):
    """An attack that matches obfuscated victims to a plaintext pool containing their originals.

    Subclasses implement :meth:`distances` (``(B, P)``, lower is a better match). Per image the
    result holds ``rank`` (1-based rank of the true original), ``top1`` (correct under a
    one-to-one assignment of victims to candidates by :func:`scipy.optimize.linear_sum_assignment`
    when ``assignment`` is true, else nearest candidate) and ``top5``. Chance levels:
    ``1/P`` and ``min(5, P)/P``.
    """

    distractors: int | None
    assignment: bool
    seed: int

    @abstractmethod
    def distances(
        self, context: AttackContext, obfuscated: torch.Tensor, pool: torch.Tensor
    ) -> torch.Tensor:
        """``(B, P)`` dissimilarities between obfuscated victims and pool candidates."""

    def run(self, context: AttackContext, victims: Victims) -> AttackResult:
        self._check(context, victims)
        start = time.perf_counter()
        pool = make_pool(context, victims, distractors=self.distractors, seed=self.seed)
        with torch.no_grad():
            dist = self.distances(
                context, context.tensor(victims.obfuscated), context.tensor(pool.images)
            )
        dist_np = dist.double().cpu().numpy()
        true_d = dist_np[np.arange(len(victims)), pool.truth]
        rank = 1 + (dist_np < true_d[:, None]).sum(axis=1)
        if self.assignment:
            rows, cols = linear_sum_assignment(dist_np)
            chosen = np.empty(len(victims), dtype=np.int64)
            chosen[rows] = cols
            top1 = chosen == pool.truth
        else:
            top1 = rank == 1
        p = len(pool.images)
        return self._result(
            context,
            victims,
            metrics={
                "rank": rank.astype(np.float64),
                "top1": top1.astype(np.float64),
                "top5": (rank <= 5).astype(np.float64),
            },
            extra={"pool_size": p, "chance_top1": 1.0 / p, "chance_top5": min(5, p) / p},
            seconds=time.perf_counter() - start,
        )
