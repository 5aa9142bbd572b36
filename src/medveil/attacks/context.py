"""What an attacker knows and whom it attacks: threat models, the context, the victims.

Every attack sees only an :class:`AttackContext` (what its threat model grants) and the
victims' obfuscated arrays. The victims' originals are held by the evaluator in
:class:`Victims` and used only to score reconstructions (and, for the matching attacks, hidden
inside an unlabeled plaintext pool, which is what those threat models grant).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum

import torch

from medveil.batched import obfuscate_batches
from medveil.errors import MedveilError
from medveil.keys import Key, SchemeParams
from medveil.obfuscator import Obfuscator

__all__ = [
    "AttackContext",
    "DisjointnessError",
    "GRANTS",
    "Knowledge",
    "NotApplicableError",
    "ThreatModel",
    "Victims",
    "check_disjoint",
    "content_ids",
]


class ThreatModel(StrEnum):
    """What the attacker knows (``METHOD.md``, "Threat models").

    ``METHOD.md``'s A0 (an observer with the obfuscated arrays alone) is not a member: every
    attack needs public images (:mod:`medveil.attacks.registry`), so none runs under it.
    """

    A1 = "A1"  #: informed: the obfuscated arrays, scheme parameters (not the key), public images
    A2 = "A2"  #: known plaintext: A1 + N (original, obfuscated) pairs under the victims' key
    A3 = "A3"  #: key leaked: A1 + the key (V_k, quantization error and noise stay unknown)


class Knowledge(StrEnum):
    """What an attacker may hold besides the obfuscated arrays."""

    PUBLIC = "public"  #: public images of the modality, disjoint from the victims
    PAIRS = "pairs"  #: known (original, obfuscated) pairs under the victims' key
    KEY = "key"  #: the victims' key


#: What each threat model grants (``METHOD.md``, "Threat models").
GRANTS: Mapping[ThreatModel, frozenset[Knowledge]] = {
    ThreatModel.A1: frozenset({Knowledge.PUBLIC}),
    ThreatModel.A2: frozenset({Knowledge.PUBLIC, Knowledge.PAIRS}),
    ThreatModel.A3: frozenset({Knowledge.PUBLIC, Knowledge.KEY}),
}


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
        out = obfuscate_batches(obfuscator, originals, batch_size=batch_size)
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
        given = {
            Knowledge.PUBLIC: self.public is not None, Knowledge.PAIRS: has_pairs,
            Knowledge.KEY: self.key is not None,
        }
        for knowledge, held in given.items():
            if held == (knowledge in GRANTS[threat]):
                continue
            under = " and ".join(t for t, grants in GRANTS.items() if knowledge in grants)
            if knowledge is Knowledge.PUBLIC:
                raise ValueError(f"{threat}: public images are required")
            what = "known pairs are" if knowledge is Knowledge.PAIRS else "the key is"
            raise ValueError(f"{threat}: {what} given under {under} and only under {under}")
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
