"""Seeded, stratified train/val/test splits that keep groups (patients, near-duplicates) whole."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from medveil.errors import ConfigError, DatasetLayoutError
from medveil.training.sources import DataSource

__all__ = ["SplitPlan", "plan_splits", "stratified_holdout"]


def stratified_holdout(
    labels: np.ndarray,
    fraction: float,
    *,
    rng: np.random.Generator,
    groups: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Split positions ``0..len(labels)-1`` into (kept, held out), per class.

    Each class gives ``round(fraction * count)`` examples to the held-out part, at least one
    when it has two or more and ``fraction > 0``, and always keeps at least one. With
    ``groups``, whole groups move: each group counts for its most common class, and groups are
    held out in a random order until that class's share is reached.
    """
    if groups is not None:
        return _grouped_holdout(labels, fraction, rng=rng, groups=np.asarray(groups))
    kept, held = [], []
    for label in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == label))
        take = round(fraction * len(members))
        if fraction > 0 and len(members) >= 2:
            take = min(max(take, 1), len(members) - 1)
        else:
            take = 0
        held.append(members[:take])
        kept.append(members[take:])
    return np.sort(np.concatenate(kept)), np.sort(np.concatenate(held))


def _grouped_holdout(
    labels: np.ndarray, fraction: float, *, rng: np.random.Generator, groups: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    if len(groups) != len(labels):
        raise DatasetLayoutError(f"{len(groups)} group labels for {len(labels)} examples")
    names, inverse = np.unique(groups, return_inverse=True)
    sizes = np.bincount(inverse, minlength=len(names))
    votes = np.zeros((len(names), int(labels.max(initial=0)) + 1), np.int64)
    np.add.at(votes, (inverse, labels), 1)
    majority = votes.argmax(axis=1)
    held_groups = np.zeros(len(names), bool)
    for label in np.unique(labels):
        members = rng.permutation(np.flatnonzero(majority == label))
        target = round(fraction * int(sizes[members].sum())) if fraction > 0 else 0
        taken = 0
        # Keep at least one group of the class for training.
        for group in members[:-1]:
            if taken >= target:
                break
            held_groups[group] = True
            taken += int(sizes[group])
    held = held_groups[inverse]
    return np.flatnonzero(~held), np.flatnonzero(held)


@dataclass(frozen=True)
class SplitPlan:
    """Which examples train, validate and test: ``role -> (table name, sorted indices)``."""

    parts: dict[str, tuple[str, np.ndarray]]

    def sizes(self) -> dict[str, int]:
        return {role: len(indices) for role, (_, indices) in self.parts.items()}

    def to_dict(self) -> dict[str, Any]:
        return {role: {"table": t, "indices": i.tolist()} for role, (t, i) in self.parts.items()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SplitPlan:
        return cls({r: (p["table"], np.asarray(p["indices"], np.int64)) for r, p in data.items()})

    def __eq__(self, other: object) -> bool:
        return isinstance(other, SplitPlan) and self.to_dict() == other.to_dict()


def plan_splits(
    source: DataSource, *, val_fraction: float, test_fraction: float, seed: int
) -> SplitPlan:
    """Seeded stratified train/val/test indices.

    The dataset's own ``test`` and ``val`` tables are used when present. Otherwise a stratified
    ``test_fraction`` of the data (``all``, or ``train`` without a ``test`` table) is held out for
    testing (none when it is 0), then a stratified ``val_fraction`` of the rest for validation.
    When the source has group labels for that table (:attr:`DataSource.groups`), no group is
    split across train, validation and test.
    """
    if not 0 < val_fraction < 1 or not 0 <= test_fraction < 1:
        raise ConfigError("val_fraction must be in (0, 1) and test_fraction in [0, 1)")
    tables = source.tables
    base = "train" if "train" in tables else "all"
    if base not in tables:
        raise DatasetLayoutError(f"no 'train' or 'all' split to train on (has {', '.join(tables)})")
    rng = np.random.default_rng([seed, 0x5EED])
    labels = tables[base].labels
    groups = source.groups.get(base)
    pool = np.arange(len(labels))
    parts: dict[str, tuple[str, np.ndarray]] = {}
    if "test" in tables:
        parts["test"] = ("test", np.arange(len(tables["test"].labels)))
    elif test_fraction > 0:
        kept, held = stratified_holdout(labels, test_fraction, rng=rng, groups=groups)
        pool, parts["test"] = kept, (base, held)
    if "val" in tables:
        parts["val"] = ("val", np.arange(len(tables["val"].labels)))
        parts["train"] = (base, pool)
    else:
        kept, held = stratified_holdout(
            labels[pool], val_fraction, rng=rng, groups=None if groups is None else groups[pool]
        )
        parts["train"], parts["val"] = (base, pool[kept]), (base, pool[held])
    for role in ("train", "val"):
        if len(parts[role][1]) == 0:
            raise DatasetLayoutError(f"the {role} split is empty: the dataset is too small to split")
    return SplitPlan({role: parts[role] for role in ("train", "val", "test") if role in parts})
