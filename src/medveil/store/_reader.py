"""Reading a complete store: its manifest, and each split as a memory-mapped torch ``Dataset``."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from medveil.errors import StoreError
from medveil.layout import SPLIT_ORDER, display_path
from medveil.store._format import PLAN_FILE, READABLE_VERSIONS, STORE_FORMAT, decode_name
from medveil.store._integrity import check_store

__all__ = ["ObfuscatedStore", "StoreSplit"]


@dataclass(frozen=True)
class StoreSplit(Dataset):
    """One split of a store as a map-style torch ``Dataset`` of ``(tensor (1, n, m), label)``.

    Shards are memory-mapped on first access in each process, so a ``DataLoader`` with workers
    reads only the rows it needs.
    """

    root: Path
    name: str
    shards: tuple[dict[str, Any], ...]
    labels: np.ndarray
    offsets: np.ndarray

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def _mmap(self, shard: int) -> np.ndarray:
        cache = self.__dict__.setdefault("_maps", {})
        pid = os.getpid()
        if cache.get("pid") != pid:
            cache.clear()
            cache["pid"] = pid
        if shard not in cache:
            cache[shard] = np.load(self.root / self.shards[shard]["images"], mmap_mode="r")
        return cache[shard]

    def array(self, index: int) -> np.ndarray:
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} out of range for split {self.name!r} of {len(self)}")
        index %= len(self)
        shard = int(np.searchsorted(self.offsets, index, side="right") - 1)
        return np.asarray(self._mmap(shard)[index - self.offsets[shard]])

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return torch.from_numpy(self.array(index).copy())[None], int(self.labels[index])

    def arrays(self, indices: np.ndarray | list[int]) -> np.ndarray:
        """Stack of the arrays at ``indices``, ``(len(indices), n, m)``."""
        return np.stack([self.array(int(i)) for i in indices])

    def batches(self, batch_size: int = 256) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Sequential ``(images, labels)`` batches with bounded memory."""
        for shard, meta in enumerate(self.shards):
            data = self._mmap(shard)
            start = int(self.offsets[shard])
            for lo in range(0, meta["count"], batch_size):
                hi = min(lo + batch_size, meta["count"])
                yield np.asarray(data[lo:hi]), self.labels[start + lo : start + hi]


class ObfuscatedStore:
    """A complete store opened for reading (see :mod:`medveil.store` for the layout).

    Parameters
    ----------
    root : str or Path
        The store folder.
    verify : bool, default True
        Check, before anything is read, that every shard path stays inside the store, that
        every shard file has the size (and, since version 2, the SHA-256) the manifest records
        and the shape its header declares, and that the manifest's own checksum matches. This
        reads every shard once. ``False`` checks only the paths.

    Raises
    ------
    StoreError
        Missing, incomplete, of an unknown version, or damaged (the message names the shard).

    Examples
    --------
    :func:`medveil.obfuscate.obfuscate_dataset` writes a store from an image folder (here a
    tiny synthetic one with a test split, under the ``svd`` preset: ``n x k`` outputs):

    >>> import tempfile
    >>> from pathlib import Path
    >>> from medveil import generate_key
    >>> from medveil.obfuscate import obfuscate_dataset
    >>> from medveil.store import ObfuscatedStore
    >>> from medveil.synthetic.write import write_dataset
    >>> key = generate_key(preset="svd", size=32, rank=8)
    >>> with tempfile.TemporaryDirectory() as folder:
    ...     data = write_dataset(
    ...         "ovary-us", Path(folder) / "data", per_class=3, size=32, test_fraction=0.34
    ...     )
    ...     result = obfuscate_dataset(data.path, key=key, output=Path(folder) / "store")
    ...     store = ObfuscatedStore(result.store)
    ...     image, label = store.split("train")[0]
    >>> result.images
    {'train': 4, 'test': 2}
    >>> store.classes, store.splits, store.shape, store.key_fingerprint == key.fingerprint
    (('infected', 'notinfected'), ('train', 'test'), (32, 8), True)
    >>> tuple(image.shape), label
    ((1, 32, 8), 0)
    """

    def __init__(self, root: str | Path, *, verify: bool = True) -> None:
        self.root = Path(root).expanduser()
        path = self.root / "manifest.json"
        if not path.is_file():
            if (self.root / PLAN_FILE).is_file():
                raise StoreError(
                    f"{self.root}: store is incomplete (an interrupted run); rerun "
                    "`medveil obfuscate` with the same arguments to finish it"
                )
            raise StoreError(f"{self.root}: not a medveil store (no manifest.json)")
        try:
            manifest = json.loads(path.read_text())
        except json.JSONDecodeError as exc:
            raise StoreError(f"{path}: unreadable manifest ({exc})") from None
        if manifest.get("format") != STORE_FORMAT:
            raise StoreError(f"{path}: not a medveil store manifest")
        version = manifest.get("format_version")
        if version not in READABLE_VERSIONS:
            readable = ", ".join(str(v) for v in READABLE_VERSIONS)
            raise StoreError(
                f"{path}: store format version {version} is not supported (this medveil reads "
                f"versions {readable})"
            )
        self.manifest = manifest
        check_store(self.root, manifest, verify=verify)

    @property
    def classes(self) -> tuple[str, ...]:
        return tuple(self.manifest["classes"])

    @property
    def splits(self) -> tuple[str, ...]:
        return tuple(sorted(self.manifest["splits"], key=SPLIT_ORDER.index))

    @property
    def key_fingerprint(self) -> str:
        return str(self.manifest["key_fingerprint"])

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(self.manifest["shape"])  # type: ignore[return-value]

    def split(self, name: str) -> StoreSplit:
        if name not in self.manifest["splits"]:
            raise StoreError(f"{self.root}: no split {name!r} (has {', '.join(self.splits)})")
        shards = tuple(self.manifest["splits"][name]["shards"])
        labels = [np.load(self.root / s["labels"]) for s in shards]
        counts = [s["count"] for s in shards]
        offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        all_labels = np.concatenate(labels) if labels else np.zeros(0, np.int64)
        if len(all_labels) != offsets[-1]:
            raise StoreError(f"{self.root}: split {name!r} labels disagree with the manifest")
        return StoreSplit(self.root, name, shards, all_labels, offsets)

    def groups(self, split: str) -> np.ndarray | None:
        """Each image's group hash (see the module notes), or ``None`` for a store without them
        (written before groups were stored)."""
        shards = self.manifest["splits"][split]["shards"]
        if not shards or not all("groups" in s for s in shards):
            return None
        return np.concatenate([np.load(self.root / s["groups"]) for s in shards])

    def names(self, split: str) -> list[str]:
        """Source names (only in stores written with ``keep_names``)."""
        if not self.manifest.get("keep_names"):
            raise StoreError(f"{self.root}: written without keep_names; no source names stored")
        out: list[str] = []
        for shard in self.manifest["splits"][split]["shards"]:
            out.extend(decode_name(n) for n in json.loads((self.root / shard["names"]).read_text()))
        return out

    def display_names(self, split: str) -> list[str]:
        """:meth:`names` as printable text (bytes that are not UTF-8 as ``\\xNN``)."""
        return [display_path(n) for n in self.names(split)]
