"""Threat models, attacker knowledge, victims, result objects and the attack base classes.

Every attack sees only an :class:`AttackContext` (what its threat model grants) and the
victims' obfuscated arrays. The victims' originals are held by the evaluator in
:class:`Victims` and used only to score reconstructions (and, for the matching attacks, hidden
inside an unlabeled plaintext pool, which is what those threat models grant).
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pandas as pd
import torch
from scipy.optimize import linear_sum_assignment

from medveil.errors import MedveilError
from medveil.keys import Key, SchemeParams
from medveil.metrics import METRIC_NAMES, reconstruction_metrics
from medveil.obfuscator import Obfuscator

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

RESULT_FORMAT = "medveil-attack-result"
RESULT_VERSION = 1


class ThreatModel(StrEnum):
    """What the attacker knows (``METHOD.md``, "Threat models").

    ``METHOD.md``'s A0 (an observer with the obfuscated arrays alone) is not a member: every
    attack needs public images (:mod:`medveil.attacks.registry`), so none runs under it.
    """

    A1 = "A1"  #: informed: the obfuscated arrays, scheme parameters (not the key), public images
    A2 = "A2"  #: known plaintext: A1 + N (original, obfuscated) pairs under the victims' key
    A3 = "A3"  #: key leaked: A1 + the key (V_k, quantization error and noise stay unknown)


class DisjointnessError(MedveilError, ValueError):
    """Victims, public images and known pairs overlap."""


class NotApplicableError(MedveilError, ValueError):
    """An attack does not apply to this threat model or scheme."""


def content_ids(images: torch.Tensor) -> tuple[str, ...]:
    """Content identifiers ``SHA-256(float32 bytes)[:16]`` of a ``(B, n, n)`` batch."""
    data = images.detach().to("cpu", torch.float32).contiguous().numpy()
    return tuple(hashlib.sha256(img.tobytes()).hexdigest()[:16] for img in data)


def _ids(images: torch.Tensor, ids: Sequence[str] | None, what: str) -> tuple[str, ...]:
    if ids is None:
        return content_ids(images)
    ids = tuple(str(i) for i in ids)
    if len(ids) != len(images):
        raise ValueError(f"{what}: {len(ids)} ids for {len(images)} images")
    if len(set(ids)) != len(ids):
        raise ValueError(f"{what}: ids are not unique")
    return ids


def check_disjoint(**groups: Sequence[str]) -> None:
    """Raise :class:`DisjointnessError` if any two named id groups share an id.

    Ids are the caller's (e.g. file names) or content hashes (:func:`content_ids`); with
    content hashes, a duplicate image in two groups is caught even under different names.
    """
    names = list(groups)
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            shared = set(groups[a]) & set(groups[b])
            if shared:
                sample = ", ".join(sorted(shared)[:5])
                raise DisjointnessError(
                    f"{a} and {b} share {len(shared)} image(s) (e.g. {sample}); the attack "
                    "must be evaluated on victims outside the attacker's public set and pairs"
                )


@dataclass(frozen=True, eq=False)
class Victims:
    """Images under attack: ``obfuscated`` ``(B, n, m)`` is the attacker's input; ``originals``
    ``(B, n, n)`` are for scoring only."""

    originals: torch.Tensor
    obfuscated: torch.Tensor
    ids: tuple[str, ...]

    def __post_init__(self) -> None:
        if len(self.originals) != len(self.obfuscated) or len(self.ids) != len(self.originals):
            raise ValueError("victims: originals, obfuscated and ids differ in length")
        if len(self.originals) == 0:
            raise ValueError("victims: no images")

    @classmethod
    def obfuscate(
        cls,
        originals: torch.Tensor,
        obfuscator: Obfuscator,
        *,
        ids: Sequence[str] | None = None,
        batch_size: int = 256,
    ) -> Victims:
        """Obfuscate ``originals`` with ``obfuscator`` (noise as configured there)."""
        out = torch.cat(
            [
                obfuscator.obfuscate(originals[i : i + batch_size])
                for i in range(0, len(originals), batch_size)
            ]
        )
        return cls(originals, out, _ids(originals, ids, "victims"))

    def __len__(self) -> int:
        return len(self.originals)


@dataclass(frozen=True, kw_only=True, eq=False)
class AttackContext:
    """Everything the attacker knows under ``threat``; validated against it.

    Parameters
    ----------
    threat
        The threat model. A1 needs ``public``; A2 also ``pair_originals`` and
        ``pair_obfuscated`` (and no key); A3 ``public`` and ``key`` (and no pairs).
    params
        The scheme's public parameters (known from A1 on).
    public
        ``(P, n, n)`` public plaintext images of the same modality, disjoint from the victims.
    pair_originals, pair_obfuscated
        Known (original, obfuscated) pairs under the victims' key.
    key
        The leaked key (A3).
    public_ids, pair_ids
        Identifiers for the disjointness check; content hashes when omitted.
    device, dtype
        Where and in which precision attacks compute.
    """

    threat: ThreatModel
    params: SchemeParams
    public: torch.Tensor | None = None
    pair_originals: torch.Tensor | None = None
    pair_obfuscated: torch.Tensor | None = None
    key: Key | None = None
    public_ids: tuple[str, ...] | None = None
    pair_ids: tuple[str, ...] | None = None
    device: torch.device | str = "cpu"
    dtype: torch.dtype = torch.float32

    def __post_init__(self) -> None:
        threat = ThreatModel(self.threat)
        object.__setattr__(self, "threat", threat)
        object.__setattr__(self, "device", torch.device(self.device))
        has_pairs = self.pair_originals is not None or self.pair_obfuscated is not None
        if self.public is None:
            raise ValueError(f"{threat}: public images are required")
        if has_pairs != (threat is ThreatModel.A2):
            raise ValueError(f"{threat}: known pairs are given under A2 and only under A2")
        if (self.key is not None) != (threat is ThreatModel.A3):
            raise ValueError(f"{threat}: the key is given under A3 and only under A3")
        if self.key is not None and self.key.params != self.params:
            raise ValueError("A3: the leaked key's parameters differ from the scheme's")
        if self.public is not None:
            object.__setattr__(self, "public_ids", _ids(self.public, self.public_ids, "public"))
        if has_pairs:
            if self.pair_originals is None or self.pair_obfuscated is None:
                raise ValueError("A2: both pair_originals and pair_obfuscated are required")
            if len(self.pair_originals) != len(self.pair_obfuscated):
                raise ValueError("A2: pair_originals and pair_obfuscated differ in length")
            object.__setattr__(self, "pair_ids", _ids(self.pair_originals, self.pair_ids, "pairs"))
            check_disjoint(public=self.public_ids or (), pairs=self.pair_ids)

    def check_victims(self, victims: Victims) -> None:
        """Raise :class:`DisjointnessError` if victims overlap the public set or the pairs."""
        check_disjoint(victims=victims.ids, public=self.public_ids or (), pairs=self.pair_ids or ())

    def tensor(self, data: torch.Tensor) -> torch.Tensor:
        return data.to(self.device, self.dtype)


def _to_json_value(value: Any) -> Any:
    # Strict JSON has no inf/nan (perfect reconstructions have PSNR inf): encode them as strings.
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, (np.floating, np.integer)):
        return _to_json_value(value.item())
    if isinstance(value, np.ndarray):
        return [_to_json_value(v) for v in value.tolist()]
    if isinstance(value, Mapping):
        return {str(k): _to_json_value(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_to_json_value(v) for v in value]
    return value


def _from_json_value(value: Any) -> Any:
    if value in ("inf", "-inf", "nan"):
        return float(value)
    if isinstance(value, dict):
        return {k: _from_json_value(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_from_json_value(v) for v in value]
    return value


@dataclass(kw_only=True)
class AttackResult:
    """Outcome of one attack on one set of victims.

    ``metrics`` holds per-image float arrays (SSIM, PSNR, PSNR unclipped, MSE for reconstruction
    attacks; rank, top-1, top-5 for matching attacks), aligned with ``ids``. ``extra`` holds
    JSON-serialisable scalars and tables specific to the attack (best ``t`` for LBA, chance
    levels for matching, training history for the decoder). ``reconstructions`` (CPU, float32)
    are kept only on request and never serialised.
    """

    attack: str
    threat: ThreatModel
    preset: str
    parameters: dict[str, Any]
    ids: list[str]
    metrics: dict[str, np.ndarray]
    extra: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0
    reconstructions: torch.Tensor | None = field(default=None, repr=False, compare=False)

    def summary(self) -> dict[str, Any]:
        """One flat row: mean, std and max of every per-image metric, plus the scalar extras.

        For matching attacks the ``top1_mean`` and ``top5_mean`` columns are the accuracies and
        ``chance_top1``/``chance_top5`` their chance levels.
        """
        row: dict[str, Any] = {
            "attack": self.attack,
            "threat": str(self.threat),
            "preset": self.preset,
            "images": len(self.ids),
        }
        for name, values in self.metrics.items():
            v = np.asarray(values, dtype=np.float64)
            # A perfect reconstruction has PSNR inf: the mean is then inf and the std nan.
            with np.errstate(invalid="ignore"):
                row[f"{name}_mean"] = float(v.mean())
                row[f"{name}_std"] = float(v.std())
            row[f"{name}_max"] = float(v.max())
        row.update({k: v for k, v in self.extra.items() if isinstance(v, (int, float, str))})
        row["seconds"] = self.seconds
        return row

    def to_frame(self) -> pd.DataFrame:
        """Per-image DataFrame: ``id``, ``attack``, ``threat`` and one column per metric."""
        frame = pd.DataFrame(
            {"id": self.ids, **{k: np.asarray(v) for k, v in self.metrics.items()}}
        )
        frame.insert(1, "attack", self.attack)
        frame.insert(2, "threat", str(self.threat))
        return frame

    def to_csv(self, path: str | Path) -> Path:
        """Write :meth:`to_frame` as CSV; returns the path."""
        path = Path(path)
        self.to_frame().to_csv(path, index=False)
        return path

    def to_json(self) -> str:
        """Strict JSON (non-finite numbers as the strings ``"inf"``, ``"-inf"``, ``"nan"``)."""
        data = {
            "format": RESULT_FORMAT,
            "version": RESULT_VERSION,
            "attack": self.attack,
            "threat": str(self.threat),
            "preset": self.preset,
            "parameters": self.parameters,
            "ids": self.ids,
            "metrics": self.metrics,
            "extra": self.extra,
            "seconds": self.seconds,
        }
        return json.dumps(_to_json_value(data), indent=1, allow_nan=False)

    @classmethod
    def from_json(cls, text: str) -> AttackResult:
        data = _from_json_value(json.loads(text))
        if data.get("format") != RESULT_FORMAT or data.get("version") != RESULT_VERSION:
            raise ValueError(f"not a {RESULT_FORMAT} v{RESULT_VERSION} document")
        return cls(
            attack=data["attack"],
            threat=ThreatModel(data["threat"]),
            preset=data["preset"],
            parameters=data["parameters"],
            ids=list(data["ids"]),
            metrics={k: np.asarray(v, dtype=np.float64) for k, v in data["metrics"].items()},
            extra=data["extra"],
            seconds=float(data["seconds"]),
        )


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
        return {k: _to_json_value(v) for k, v in asdict(self).items() if not callable(v)}  # type: ignore[call-overload]

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
