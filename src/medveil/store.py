"""The obfuscated dataset store: sharded ``.npy`` arrays and a versioned manifest.

Layout of a store folder::

    manifest.json               written last; its presence marks a complete store
    .medveil-output             marker "medveil store" (:mod:`medveil.outputs`; keys are refused here)
    <split>/images-00000.npy    float32 (count, n, m), memory-mappable
    <split>/labels-00000.npy    int64 (count,)
    <split>/shard-00000.json    shard metadata; written after its arrays (the shard's done mark)
    <split>/names-00000.json    source names relative to the dataset root, only with keep_names

Every file is written to a temporary name and renamed into place, so a killed run leaves either
whole shards or nothing; a rerun with the same plan resumes at the first missing shard.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from medveil.atomic import atomic_save_npy, atomic_write_json
from medveil.errors import StoreError
from medveil.layout import SPLIT_ORDER
from medveil.outputs import MARKER, UNKNOWN, mark_output, output_kind

STORE_FORMAT = "medveil-store"
STORE_VERSION = 1
STORE_KIND = "store"
PLAN_FILE = ".plan.json"
# The only names a store writes: anything else in its folder belongs to someone else and is
# never deleted (a study's results, a user's notes).
_TOP_FILES = ("manifest.json", PLAN_FILE)
_SHARD_FILE = re.compile(r"(images|labels)-\d{5}\.npy|(shard|names)-\d{5}\.json")
_TEMPORARY = re.compile(r"\.(.+)\.[^.]+\.tmp")


def _is_own_name(name: str, *, top: bool) -> bool:
    match = _TEMPORARY.fullmatch(name)
    base = match.group(1) if match else name
    return base in _TOP_FILES if top else _SHARD_FILE.fullmatch(base) is not None


def _own_entries(root: Path) -> list[Path]:
    """The files of ``root`` that a store writes (its temporaries included), never followed
    through symbolic links."""
    own = [
        p for p in root.iterdir()
        if not p.is_symlink() and p.is_file() and _is_own_name(p.name, top=True)
    ]
    for split in SPLIT_ORDER:
        folder = root / split
        if folder.is_dir() and not folder.is_symlink():
            own.extend(
                p for p in folder.iterdir()
                if not p.is_symlink() and p.is_file() and _is_own_name(p.name, top=False)
            )
    return sorted(own)


def _foreign_entries(root: Path) -> list[Path]:
    """What ``root`` holds that a store did not write (files, folders, links)."""
    foreign = []
    for p in sorted(root.iterdir()):
        if p.name == MARKER:
            continue
        if p.name in SPLIT_ORDER and p.is_dir() and not p.is_symlink():
            foreign.extend(
                q for q in sorted(p.iterdir())
                if q.is_symlink() or not q.is_file() or not _is_own_name(q.name, top=False)
            )
        elif p.is_symlink() or not p.is_file() or not _is_own_name(p.name, top=True):
            foreign.append(p)
    return foreign


def _display(root: Path, path: Path) -> str:
    relative = path.relative_to(root).as_posix()
    return relative + "/" if path.is_dir() and not path.is_symlink() else relative


def shard_stem(index: int) -> str:
    return f"{index:05d}"


@dataclass(frozen=True)
class ShardRecord:
    split: str
    index: int
    count: int
    per_class: dict[str, int]
    skipped: int


class StoreWriter:
    """Creates or resumes a store at ``root`` for one ``plan`` (a dict that identifies the run).

    A complete store with the same plan is left alone (:attr:`complete` is True); an incomplete
    one with the same plan is resumed; a store with another plan is cleared first (a complete one
    only with ``overwrite``). Only the store's own files are ever deleted: a folder holding
    anything else, or another kind of medveil output (a study, a training run), is refused
    unless ``overwrite``, and even then its other content is kept.
    """

    def __init__(self, root: Path, *, plan: dict[str, Any], overwrite: bool = False) -> None:
        self.root = root
        self.plan = plan
        self.complete = False
        self.resumed = False
        self._prepare(overwrite=overwrite)

    def _prepare(self, *, overwrite: bool) -> None:
        root = self.root
        if root.exists() and not root.is_dir():
            raise StoreError(f"{root}: exists and is not a folder")
        if root.exists() and any(root.iterdir()):
            kind = output_kind(root)
            if kind is None:
                raise StoreError(
                    f"{root}: folder is not empty and is not a medveil output; "
                    "choose a new output folder"
                )
            foreign = _foreign_entries(root)
            if (foreign or kind not in (STORE_KIND, UNKNOWN)) and not overwrite:
                what = (
                    f"a medveil {kind}" if kind not in (STORE_KIND, UNKNOWN)
                    else "files that are not part of a medveil store"
                )
                listed = ", ".join(_display(root, p) for p in foreign[:5])
                more = f" and {len(foreign) - 5} more" if len(foreign) > 5 else ""
                raise StoreError(
                    f"{root}: holds {what}"
                    + (f" ({listed}{more})" if foreign else "")
                    + "; choose a new output folder, or pass --overwrite to write the store "
                    "there anyway (only the store's own files are replaced; nothing else is "
                    "deleted)"
                )
            manifest_path = root / "manifest.json"
            if manifest_path.is_file():
                manifest = json.loads(manifest_path.read_text())
                if manifest.get("plan") == self.plan and not overwrite:
                    self.complete = True
                    return
                if not overwrite:
                    raise StoreError(
                        f"{root}: holds a complete store made with other inputs or settings; "
                        "pass --overwrite to replace it, or choose a new output folder"
                    )
                self._clear()
            else:
                plan_path = root / PLAN_FILE
                previous = json.loads(plan_path.read_text()) if plan_path.is_file() else None
                if previous == self.plan:
                    self.resumed = True
                    self._remove_temporaries()
                else:
                    self._clear()
        root.mkdir(parents=True, exist_ok=True)
        if output_kind(root) in (None, UNKNOWN):
            mark_output(root, kind=STORE_KIND)
        if not self.resumed:
            atomic_write_json(root / PLAN_FILE, self.plan)

    def _clear(self) -> None:
        """Delete the store's own files (and nothing else) so that it can be written anew."""
        for path in _own_entries(self.root):
            path.unlink(missing_ok=True)
        for split in SPLIT_ORDER:
            folder = self.root / split
            if folder.is_dir() and not folder.is_symlink() and not any(folder.iterdir()):
                folder.rmdir()

    def _remove_temporaries(self) -> None:
        for path in _own_entries(self.root):
            if _TEMPORARY.fullmatch(path.name):
                path.unlink(missing_ok=True)

    def shard_record(self, split: str, index: int) -> ShardRecord | None:
        """The record of a finished shard, or ``None`` if it still has to be written."""
        meta = self.root / split / f"shard-{shard_stem(index)}.json"
        if not meta.is_file():
            return None
        data = json.loads(meta.read_text())
        return ShardRecord(split=split, index=index, **data)

    def write_shard(
        self,
        *,
        split: str,
        index: int,
        images: np.ndarray,
        labels: np.ndarray,
        classes: tuple[str, ...],
        skipped: int,
        names: list[str] | None,
    ) -> ShardRecord:
        folder = self.root / split
        folder.mkdir(exist_ok=True)
        stem = shard_stem(index)
        if images.ndim != 3 or len(images) != len(labels):
            raise StoreError(f"shard {split}/{stem}: images {images.shape} and labels disagree")
        atomic_save_npy(folder / f"images-{stem}.npy", np.ascontiguousarray(images, np.float32))
        atomic_save_npy(folder / f"labels-{stem}.npy", labels.astype(np.int64))
        if names is not None:
            atomic_write_json(folder / f"names-{stem}.json", names)
        counts = (
            np.bincount(labels, minlength=len(classes))
            if len(labels)
            else np.zeros(len(classes), int)
        )
        per_class = {name: int(c) for name, c in zip(classes, counts)}
        record = ShardRecord(split, index, int(len(labels)), per_class, skipped)
        atomic_write_json(
            folder / f"shard-{stem}.json",
            {"count": record.count, "per_class": per_class, "skipped": skipped},
        )
        return record

    def finalize(self, manifest: dict[str, Any]) -> None:
        """Write the manifest (the completion mark) and drop the plan file."""
        atomic_write_json(self.root / "manifest.json", {**manifest, "plan": self.plan})
        (self.root / PLAN_FILE).unlink(missing_ok=True)
        self.complete = True


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
    """A complete store opened for reading (see module docs for the layout)."""

    def __init__(self, root: str | Path) -> None:
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
        if manifest.get("format_version") != STORE_VERSION:
            raise StoreError(
                f"{path}: store format version {manifest.get('format_version')!r} is not "
                f"supported (this medveil reads version {STORE_VERSION})"
            )
        self.manifest = manifest

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

    def names(self, split: str) -> list[str]:
        """Source names (only in stores written with ``keep_names``)."""
        if not self.manifest.get("keep_names"):
            raise StoreError(f"{self.root}: written without keep_names; no source names stored")
        out: list[str] = []
        for shard in self.manifest["splits"][split]["shards"]:
            out.extend(json.loads((self.root / shard["names"]).read_text()))
        return out
