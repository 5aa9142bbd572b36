"""Training data: obfuscated stores, plaintext image folders and in-memory arrays, one interface.

A :class:`DataSource` holds tables of 2-D arrays by split (``train``/``val``/``test`` from the
dataset's own folders, or a single ``all``), with labels, class names, a content hash and, for
obfuscated data, the public provenance of the key (fingerprint, preset, parameters).
:func:`plan_splits` turns it into seeded, stratified train/val/test indices (whole groups, when
the source carries group labels), and :class:`ExampleSet` serves model inputs standardised with
constants fitted on the training split only: at the arrays' own shape for a model with an input
stem (:mod:`medveil.training.stems`, which then maps them to the model's input), or resized
(antialiased bilinear) to the model's input size.

Augmentation (:func:`augment_batch`) is off by default. Flips and shifts are symmetries of
natural images, but an obfuscated array's rows and columns are mixed by keyed projections (or
are singular vectors, for the ``svd`` preset), so a flipped or shifted array is not one the key
could produce. Measured on the real brain-tumour MRI training set (4 classes, 300 random images
per class, stratified 20% test = 240 images, 15% of the rest for validation), ``smallcnn``,
64 px, 12 epochs, batch 32, AdamW lr 2e-3 one-cycle, seed 0, test accuracy
(none / flip / flip-shift; one seed, standard error about 2 points):

- plaintext: 0.888 / 0.858 / 0.846
- ``svd`` preset, k = 16 (Z resized to 64x64): 0.738 / 0.738 / 0.663
- right projection only (k = 16, 8 bits, eta 0.02): 0.713 / 0.708 / 0.675

Flips never helped and shifts cost 4-8 points on obfuscated arrays, so no augmentation is the
default everywhere; at this short budget it is also the best choice for plaintext. These come
from a one-off probe whose script was not kept; ``benchmarks/utility.py --augment MODE`` reruns
the comparison at full scale, and its numbers belong in ``docs/RESULTS.md``.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from medveil.errors import ConfigError, DatasetLayoutError, LoadError, RunError
from medveil.keys import Key
from medveil.layout import DatasetIndex, Item, scan_dataset
from medveil.loading import LoadOptions, load_image
from medveil.obfuscator import Obfuscator
from medveil.store import ObfuscatedStore, StoreSplit

__all__ = [
    "AUGMENTATIONS",
    "ArrayTable",
    "DataSource",
    "ExampleSet",
    "FolderTable",
    "MemoryTable",
    "PreparedData",
    "SplitPlan",
    "Standardisation",
    "augment_batch",
    "obfuscate_source",
    "open_data",
    "plan_splits",
    "prepare_data",
    "stratified_holdout",
    "to_model_input",
]

Kind = Literal["plaintext", "obfuscated"]
AUGMENTATIONS = ("none", "flip", "flip-shift")
CACHE_BYTES = 2 << 30  # plaintext folders up to 2 GiB of float32 inputs are decoded once, up front
STATS_SAMPLE = 2048  # training examples used to fit the standardisation constants


class ArrayTable(Protocol):
    """A labelled table of 2-D float arrays, read by index."""

    labels: np.ndarray

    def arrays(self, indices: np.ndarray | Sequence[int]) -> np.ndarray:
        """``(len(indices), h, w)`` float32 arrays."""
        ...


@dataclass(frozen=True)
class MemoryTable:
    """Arrays already in memory, ``images (N, h, w)`` and ``labels (N,)``."""

    images: np.ndarray
    labels: np.ndarray

    def __post_init__(self) -> None:
        if self.images.ndim != 3 or len(self.images) != len(self.labels):
            raise LoadError(
                f"expected images (N, h, w) and N labels, got {self.images.shape} and "
                f"{self.labels.shape}"
            )

    def arrays(self, indices: np.ndarray | Sequence[int]) -> np.ndarray:
        return np.asarray(self.images[np.asarray(indices, dtype=np.int64)], dtype=np.float32)


class FolderTable:
    """Images of one split of a plaintext folder, loaded at ``size`` by :func:`load_image`.

    Small splits are decoded once into memory; larger ones are decoded on every access (a
    ``DataLoader`` with workers then spreads the decoding).
    """

    def __init__(
        self, root: Path, items: list[Item], *, size: int, cache_bytes: int = CACHE_BYTES
    ) -> None:
        self.root = root
        self.items = items
        self.options = LoadOptions(size=size)
        self.labels = np.array([item.label for item in items], dtype=np.int64)
        self.cache: np.ndarray | None = None
        if len(items) * size * size * 4 <= cache_bytes:
            self.cache = self._load(range(len(items)))

    def _load(self, indices: Sequence[int] | np.ndarray) -> np.ndarray:
        def load(i: int) -> np.ndarray:
            return load_image(self.root / self.items[int(i)].path, options=self.options)

        with ThreadPoolExecutor(max_workers=2, thread_name_prefix="medveil-train-load") as pool:
            images = list(pool.map(load, indices))
        size = self.options.size
        return np.stack(images) if images else np.zeros((0, size, size), np.float32)

    def arrays(self, indices: np.ndarray | Sequence[int]) -> np.ndarray:
        if self.cache is not None:
            return self.cache[np.asarray(indices, dtype=np.int64)]
        return self._load(indices)


@dataclass(frozen=True, kw_only=True)
class DataSource:
    """A labelled dataset, plaintext or obfuscated, split into tables.

    Attributes
    ----------
    kind : {"plaintext", "obfuscated"}
        Plaintext images in [0, 1], or the obfuscated arrays of a store.
    classes : tuple of str
        Class names; labels index into it.
    tables : dict
        :class:`ArrayTable` by split name: ``train``/``val``/``test`` or ``all``.
    identity : str
        Hash of the content: equal identities mean the same examples in the same order.
    provenance : dict
        For obfuscated data, ``key_fingerprint``, ``preset``, ``params`` and ``shape`` (public,
        never key material); empty for plaintext.
    groups : dict
        Optional group labels by table name (e.g. near-duplicate groups from
        :func:`medveil.duplicates.near_duplicate_groups`, or patients): :func:`plan_splits` never
        puts one group on two sides of a split.
    """

    kind: Kind
    classes: tuple[str, ...]
    tables: dict[str, ArrayTable]
    identity: str
    provenance: dict[str, Any] = field(default_factory=dict)
    groups: dict[str, np.ndarray] = field(default_factory=dict)

    def with_groups(self, groups: dict[str, np.ndarray]) -> DataSource:
        """The same data with group labels (one per example of each named table)."""
        for name, labels in groups.items():
            if name not in self.tables:
                raise DatasetLayoutError(f"no table {name!r} to group (has {', '.join(self.tables)})")
            if len(labels) != len(self.tables[name].labels):
                raise DatasetLayoutError(
                    f"table {name!r}: {len(labels)} group labels for "
                    f"{len(self.tables[name].labels)} examples"
                )
        return replace(self, groups={k: np.asarray(v) for k, v in groups.items()})

    @property
    def key_fingerprint(self) -> str | None:
        return self.provenance.get("key_fingerprint")

    @classmethod
    def from_arrays(
        cls,
        images: np.ndarray,
        labels: np.ndarray,
        *,
        classes: Sequence[str],
        kind: Kind = "plaintext",
        provenance: dict[str, Any] | None = None,
        split: str = "all",
    ) -> DataSource:
        """Wrap in-memory ``images (N, h, w)`` and ``labels (N,)`` as a one-table source."""
        table = MemoryTable(np.ascontiguousarray(images, np.float32), np.asarray(labels, np.int64))
        return cls._from_tables({split: table}, classes=classes, kind=kind, provenance=provenance)

    @classmethod
    def _from_tables(
        cls,
        tables: dict[str, MemoryTable],
        *,
        classes: Sequence[str],
        kind: Kind,
        provenance: dict[str, Any] | None,
    ) -> DataSource:
        _check_labels(tables, len(classes))
        digest = hashlib.sha256(json.dumps([kind, list(classes)]).encode())
        for name, table in sorted(tables.items()):
            digest.update(name.encode())
            digest.update(table.labels.tobytes())
            digest.update(np.ascontiguousarray(table.images).tobytes())
        return cls(
            kind=kind, classes=tuple(classes), tables=dict(tables),
            identity=digest.hexdigest()[:32], provenance=dict(provenance or {}),
        )


def _check_labels(tables: dict[str, Any], num_classes: int) -> None:
    if num_classes < 2:
        raise DatasetLayoutError(f"a classifier needs at least 2 classes, got {num_classes}")
    for name, table in tables.items():
        labels = table.labels
        if len(labels) and (labels.min() < 0 or labels.max() >= num_classes):
            raise DatasetLayoutError(f"split {name!r}: labels outside [0, {num_classes})")


def _store_source(store: ObfuscatedStore) -> DataSource:
    tables: dict[str, StoreSplit] = {name: store.split(name) for name in store.splits}
    _check_labels(tables, len(store.classes))
    m = store.manifest
    # The plan fixes the input files, the key and the load options; the counts pin the result.
    ident = json.dumps(
        [m.get("plan"), m["key_fingerprint"], {s: len(t) for s, t in tables.items()}],
        sort_keys=True,
    )
    source = DataSource(
        kind="obfuscated",
        classes=store.classes,
        tables=dict(tables),
        identity=hashlib.sha256(ident.encode()).hexdigest()[:32],
        provenance={
            "key_fingerprint": m["key_fingerprint"],
            "preset": m["preset"],
            "params": m["params"],
            "shape": list(m["shape"]),
        },
    )
    # Patients, volumes and multi-frame files stay whole. Groups of one image each are left
    # off: then a store of 2-D images splits exactly as its plaintext folder does.
    groups = {
        n: g for n in tables if (g := store.groups(n)) is not None and len(np.unique(g)) < len(g)
    }
    return source.with_groups(groups) if groups else source


def _folder_source(index: DatasetIndex, *, size: int) -> DataSource:
    digest = hashlib.sha256(json.dumps(["plaintext", list(index.classes)]).encode())
    tables: dict[str, ArrayTable] = {}
    for split, items in index.splits.items():
        for item in items:
            # File names may identify patients: only their hash enters the identity.
            size_bytes = (index.root / item.path).stat().st_size
            digest.update(f"{split}\0{item.path}\0{item.label}\0{size_bytes}\n".encode())
        tables[split] = FolderTable(index.root, items, size=size)
    return DataSource(
        kind="plaintext", classes=index.classes, tables=tables, identity=digest.hexdigest()[:32]
    )


def open_data(data: DataSource | ObfuscatedStore | str | Path, *, image_size: int) -> DataSource:
    """Open an obfuscated store or a plaintext image folder (Kaggle layout) as a source.

    Parameters
    ----------
    data : DataSource, ObfuscatedStore, str or Path
        A folder holding ``manifest.json`` is read as a store; any other folder is scanned with
        :func:`medveil.layout.scan_dataset`. A :class:`DataSource` is returned unchanged.
    image_size : int
        Side at which plaintext images are loaded (the model's input size, so that they are
        resized only once). Store arrays keep their shape and are resized when served.
    """
    if isinstance(data, DataSource):
        return data
    if isinstance(data, ObfuscatedStore):
        return _store_source(data)
    path = Path(data).expanduser()
    if (path / "manifest.json").is_file():
        return _store_source(ObfuscatedStore(path))
    return _folder_source(scan_dataset(path), size=image_size)


def obfuscate_source(
    source: DataSource, *, key: Key, batch_size: int = 256, noise_seed: int | None = None
) -> DataSource:
    """Obfuscate every table of an in-memory plaintext source with ``key`` (for rank sweeps).

    The images must already be ``key.params.size`` pixels square.
    """
    if source.kind != "plaintext":
        raise ConfigError("only plaintext data can be obfuscated")
    obfuscator = Obfuscator(key, noise_seed=noise_seed)
    tables: dict[str, MemoryTable] = {}
    for name, table in source.tables.items():
        count = len(table.labels)
        out = np.empty((count, *key.params.out_shape), np.float32)
        for lo in range(0, count, batch_size):
            batch = table.arrays(np.arange(lo, min(lo + batch_size, count)))
            out[lo : lo + len(batch)] = obfuscator(batch)
        tables[name] = MemoryTable(out, table.labels)
    provenance = {
        "key_fingerprint": key.fingerprint,
        "preset": str(key.params.preset),
        "params": key.params.to_dict(),
        "shape": list(key.params.out_shape),
    }
    return DataSource._from_tables(
        tables, classes=source.classes, kind="obfuscated", provenance=provenance
    )


# --- splits ------------------------------------------------------------------------------------


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


# --- model inputs ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Standardisation:
    """``x' = (x - mean) / std`` with one mean and std for the whole dataset."""

    mean: float
    std: float

    @classmethod
    def fit(cls, table: ArrayTable, indices: np.ndarray, *, seed: int) -> Standardisation:
        """Fit on (up to :data:`STATS_SAMPLE` of) the training examples, at their own shape (as
        the model's input stem reads them)."""
        rng = np.random.default_rng([seed, 0x57D])
        if len(indices) > STATS_SAMPLE:
            indices = np.sort(rng.choice(indices, STATS_SAMPLE, replace=False))
        total = total_sq = count = 0.0
        for lo in range(0, len(indices), 256):
            x = torch.from_numpy(np.asarray(table.arrays(indices[lo : lo + 256]), np.float64))
            total += float(x.sum())
            total_sq += float((x * x).sum())
            count += x.numel()
        mean = total / count
        std = float(np.sqrt(max(total_sq / count - mean * mean, 0.0)))
        if not std > 1e-12:
            raise LoadError("the training images are constant: nothing to learn from")
        return cls(mean=mean, std=std)

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


def to_model_input(
    arrays: np.ndarray, *, size: int | None, standardisation: Standardisation | None = None
) -> torch.Tensor:
    """``(B, h, w)`` arrays to a ``(B, 1, size, size)`` float32 tensor.

    Arrays of another shape are resized with antialiased bilinear interpolation; an obfuscated
    ``(n, m)`` array (``m = k`` for the ``svd`` preset) is stretched to the square input. With
    ``size=None`` the arrays keep their shape, ``(B, 1, h, w)``, for a model with an input stem.
    """
    x = torch.from_numpy(np.ascontiguousarray(arrays, dtype=np.float32))[:, None]
    if size is not None and tuple(x.shape[-2:]) != (size, size):
        x = F.interpolate(
            x, size=(size, size), mode="bilinear", antialias=True, align_corners=False
        )
    return x if standardisation is None else standardisation.apply(x)


class ExampleSet(Dataset):
    """Model inputs ``(tensor (1, h, w), label)`` for ``indices`` of one table, standardised and at
    the arrays' own shape (the model's input stem makes its square input).

    Implements ``__getitems__`` so that a ``DataLoader`` reads a whole batch at once.
    """

    def __init__(
        self,
        table: ArrayTable,
        indices: np.ndarray,
        *,
        standardisation: Standardisation,
    ) -> None:
        self.table = table
        self.indices = np.asarray(indices, np.int64)
        self.standardisation = standardisation

    @property
    def labels(self) -> np.ndarray:
        return self.table.labels[self.indices]

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return self.__getitems__([i])[0]

    def __getitems__(self, positions: list[int]) -> list[tuple[torch.Tensor, int]]:
        rows = self.indices[np.asarray(positions, np.int64)]
        x = to_model_input(
            self.table.arrays(rows), size=None, standardisation=self.standardisation
        )
        return list(zip(x, self.table.labels[rows].tolist()))


def _array_shape(source: DataSource, *, size: int) -> tuple[int, int]:
    """The ``(n, m)`` shape of the source's arrays: a store's, or ``size`` for plaintext images
    (loaded at the model's input size)."""
    if source.kind == "obfuscated" and source.provenance.get("shape"):
        n, m = source.provenance["shape"]
        return int(n), int(m)
    table = next(iter(source.tables.values()))
    if len(table.labels):
        first = table.arrays(np.arange(1))
        return int(first.shape[1]), int(first.shape[2])
    return size, size


@dataclass(frozen=True, kw_only=True)
class PreparedData:
    """Everything the trainer reads from the data, made by :func:`prepare_data`.

    Attributes
    ----------
    source : DataSource
        The opened data (classes, kind, identity, provenance).
    plan : SplitPlan
        Which examples train, validate and test.
    standardisation : Standardisation
        The constants every example set applies (fitted on the training split, or given).
    sets : dict
        :class:`ExampleSet` by role (``train``, ``val`` and, when held out, ``test``).
    in_shape : tuple of int
        The ``(n, m)`` shape of the arrays the model's input stem reads.
    """

    source: DataSource
    plan: SplitPlan
    standardisation: Standardisation
    sets: dict[str, ExampleSet]
    in_shape: tuple[int, int]


def prepare_data(
    data: DataSource | ObfuscatedStore | str | Path,
    *,
    image_size: int,
    val_fraction: float,
    test_fraction: float,
    seed: int,
    standardisation: Standardisation | None = None,
    plan: SplitPlan | None = None,
    identity: str | None = None,
) -> PreparedData:
    """Open the data, split it, fit the standardisation and build the example sets, in one go.

    Parameters
    ----------
    data : DataSource, ObfuscatedStore, str or Path
        As for :func:`open_data` (the labels are checked there).
    image_size : int
        Side at which plaintext images are loaded.
    val_fraction, test_fraction, seed
        As for :func:`plan_splits`; unused when ``plan`` is given.
    standardisation : Standardisation, optional
        Fixed constants (a pretrained model's); by default they are fitted on the training split.
    plan : SplitPlan, optional
        A saved plan (a resumed run's), used instead of a new one.
    identity : str, optional
        The identity of the data ``plan`` was made on: other data are refused before the plan
        is applied to them.

    Raises
    ------
    RunError
        ``identity`` is not the data's.
    DatasetLayoutError
        The data cannot be split, or its training split has fewer than 2 examples.
    """
    source = open_data(data, image_size=image_size)
    if identity is not None and source.identity != identity:
        raise RunError("cannot resume on different data than the run started with")
    if plan is None:
        plan = plan_splits(
            source, val_fraction=val_fraction, test_fraction=test_fraction, seed=seed
        )
    train_table, train_indices = plan.parts["train"]
    if len(train_indices) < 2:
        raise DatasetLayoutError("the training split needs at least 2 examples")
    if standardisation is None:
        # The stem reads the arrays at their own shape, so they are standardised as they are.
        standardisation = Standardisation.fit(
            source.tables[train_table], train_indices, seed=seed
        )
    sets = {
        role: ExampleSet(source.tables[table], indices, standardisation=standardisation)
        for role, (table, indices) in plan.parts.items()
    }
    return PreparedData(
        source=source, plan=plan, standardisation=standardisation, sets=sets,
        in_shape=_array_shape(source, size=image_size),
    )


def augment_batch(x: torch.Tensor, mode: str, *, generator: torch.Generator) -> torch.Tensor:
    """Random per-example augmentation of a ``(B, 1, h, w)`` batch.

    ``none`` returns ``x``; ``flip`` mirrors half of the examples left-right; ``flip-shift`` also
    translates each by up to 1/8 of each side (reflect padding, then a random crop). Neither is
    a symmetry of obfuscated arrays (see the module notes for what they cost there).
    """
    if mode not in AUGMENTATIONS:
        raise ConfigError(f"augmentation must be one of {', '.join(AUGMENTATIONS)}, got {mode!r}")
    if mode == "none":
        return x
    flip = torch.rand(len(x), generator=generator) < 0.5
    x = torch.where(flip.view(-1, 1, 1, 1).to(x.device), x.flip(-1), x)
    if mode == "flip-shift":
        height, width = x.shape[-2:]
        pad_y, pad_x = max(height // 8, 1), max(width // 8, 1)
        padded = F.pad(x, (pad_x, pad_x, pad_y, pad_y), mode="reflect")
        offsets = torch.stack(
            [
                torch.randint(0, 2 * pad_y + 1, (len(x),), generator=generator),
                torch.randint(0, 2 * pad_x + 1, (len(x),), generator=generator),
            ],
            dim=1,
        ).tolist()
        x = torch.stack(
            [
                padded[i, :, dy : dy + height, dx : dx + width]
                for i, (dy, dx) in enumerate(offsets)
            ]
        )
    return x
