"""Training data as one interface: obfuscated stores, plaintext image folders, in-memory arrays.

A :class:`DataSource` holds tables of 2-D arrays by split (``train``/``val``/``test`` from the
dataset's own folders, or a single ``all``), with labels, class names, a content hash and, for
obfuscated data, the public provenance of the key (fingerprint, preset, parameters).
:func:`open_data` opens a store or a folder as one; :func:`obfuscate_source` obfuscates an
in-memory plaintext one.
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

from medveil.batched import obfuscate_batches
from medveil.errors import ConfigError, DatasetLayoutError, LoadError
from medveil.keys import Key
from medveil.layout import DatasetIndex, Item, scan_dataset
from medveil.loading import LoadOptions, load_image
from medveil.obfuscator import Obfuscator
from medveil.store import ObfuscatedStore, StoreSplit

__all__ = [
    "CACHE_BYTES",
    "ArrayTable",
    "DataSource",
    "FolderTable",
    "Kind",
    "MemoryTable",
    "obfuscate_source",
    "open_data",
]

Kind = Literal["plaintext", "obfuscated"]
CACHE_BYTES = 2 << 30  # plaintext folders up to 2 GiB of float32 inputs are decoded once, up front


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
        out = obfuscate_batches(obfuscator, _Rows(table), batch_size=batch_size)
        tables[name] = MemoryTable(out.numpy(), table.labels)
    provenance = {
        "key_fingerprint": key.fingerprint,
        "preset": str(key.params.preset),
        "params": key.params.to_dict(),
        "shape": list(key.params.out_shape),
    }
    return DataSource._from_tables(
        tables, classes=source.classes, kind="obfuscated", provenance=provenance
    )


class _Rows:
    """A table read by slices of positions, one batch at a time (a folder is never loaded whole)."""

    def __init__(self, table: ArrayTable) -> None:
        self.table = table

    def __len__(self) -> int:
        return len(self.table.labels)

    def __getitem__(self, rows: slice) -> np.ndarray:
        return self.table.arrays(np.arange(len(self))[rows])
