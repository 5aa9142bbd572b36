"""Writing a store: one run at a time (the lock), a folder resumed, cleared or refused by its
plan, and each shard written under a temporary name, hashed on the way, and renamed into place."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import numpy as np
from filelock import FileLock, Timeout

from medveil.atomic import atomic_write, atomic_write_json
from medveil.errors import StoreError
from medveil.layout import SPLIT_ORDER
from medveil.outputs import MARKER, UNKNOWN, mark_output, output_kind
from medveil.store._format import (
    LOCK_FILE,
    PLAN_FILE,
    STORE_KIND,
    encode_name,
    manifest_checksum,
    shard_stem,
)

__all__ = ["ShardRecord", "StoreBusyError", "StoreWriteError", "StoreWriter"]


class StoreBusyError(StoreError):
    """Another run is writing into the same store folder right now."""


class StoreWriteError(StoreError):
    """A store file could not be written (disk full, file-size limit, permissions)."""


# The only names a store writes: anything else in its folder belongs to someone else and is
# never deleted (a study's results, a user's notes).
_TOP_FILES = ("manifest.json", PLAN_FILE)
_SHARD_FILE = re.compile(r"(images|labels|groups)-\d{5}\.npy|(shard|names)-\d{5}\.json")
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
        if p.name in (MARKER, LOCK_FILE):
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


class _HashingWriter:
    """Passes writes through to ``handle`` and keeps the size and SHA-256 of what went by."""

    def __init__(self, handle: IO[bytes]) -> None:
        self.handle = handle
        self.sha256 = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes | memoryview) -> int:
        self.sha256.update(data)
        self.size += memoryview(data).nbytes
        return self.handle.write(data)



@dataclass(frozen=True)
class ShardRecord:
    split: str
    index: int
    count: int
    per_class: dict[str, int]
    skipped: int
    upscaled: int = 0
    bytes: dict[str, int] = field(default_factory=dict)
    sha256: dict[str, str] = field(default_factory=dict)
    filled: int = 0


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
        self._lock: FileLock | None = None
        self._take_lock()
        try:
            self._prepare(overwrite=overwrite)
        except BaseException:
            self.close()
            raise

    def __enter__(self) -> StoreWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _take_lock(self) -> None:
        root = self.root
        if root.exists() and not root.is_dir():
            raise StoreError(f"{root}: exists and is not a folder")
        root.mkdir(parents=True, exist_ok=True)
        lock = FileLock(root / LOCK_FILE, timeout=0)
        try:
            lock.acquire()
        except Timeout:
            raise StoreBusyError(
                f"{root}: another medveil run is writing into this folder right now (it holds "
                f"{LOCK_FILE}); wait for it to finish, or choose another output folder"
            ) from None
        self._lock = lock

    def close(self) -> None:
        """Release the lock and remove its file."""
        if self._lock is None:
            return
        # Unlinked while still held: a run that opened the old file sees it gone and retries.
        (self.root / LOCK_FILE).unlink(missing_ok=True)
        self._lock.release()
        self._lock = None

    def _prepare(self, *, overwrite: bool) -> None:
        root = self.root
        if any(p.name != LOCK_FILE for p in root.iterdir()):
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

    def _write(self, path: Path, write: Callable[[IO[bytes]], None]) -> tuple[int, str]:
        """Write ``path`` atomically; its size and SHA-256, or a :class:`StoreWriteError`."""
        hashing: list[_HashingWriter] = []

        def through(handle: IO[bytes]) -> None:
            hashing.append(_HashingWriter(handle))
            write(hashing[-1])  # type: ignore[arg-type]

        try:
            atomic_write(path, through)
        except OSError as exc:
            reason = exc.strerror or str(exc)
            raise StoreWriteError(
                f"{path}: cannot write ({reason}); nothing was left under that name. Fix the "
                "cause (free space, a file-size limit, permissions) and rerun the same command: "
                "it resumes after the last whole shard"
            ) from exc
        return hashing[-1].size, hashing[-1].sha256.hexdigest()

    def _write_json(self, path: Path, data: Any) -> tuple[int, str]:
        text = (json.dumps(data, indent=2, sort_keys=True) + "\n").encode()
        return self._write(path, lambda handle: handle.write(text))

    def write_json(self, path: Path, data: Any) -> None:
        """Write a JSON file of the run (the manifest, a report) atomically, or raise
        :class:`StoreWriteError` naming it."""
        self._write_json(path, data)

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
        upscaled: int = 0,
        groups: np.ndarray | None = None,
        filled: int = 0,
    ) -> ShardRecord:
        """Write one shard's arrays (and names, and group hashes), then its done mark; names
        that are not valid UTF-8 are stored losslessly (:func:`encode_name`)."""
        folder = self.root / split
        folder.mkdir(exist_ok=True)
        stem = shard_stem(index)
        if images.ndim != 3 or len(images) != len(labels):
            raise StoreError(f"shard {split}/{stem}: images {images.shape} and labels disagree")
        images = np.ascontiguousarray(images, np.float32)
        labels = labels.astype(np.int64)
        sizes, digests = {}, {}
        sizes["images"], digests["images"] = self._write(
            folder / f"images-{stem}.npy",
            lambda handle: np.save(handle, images, allow_pickle=False),
        )
        sizes["labels"], digests["labels"] = self._write(
            folder / f"labels-{stem}.npy",
            lambda handle: np.save(handle, labels, allow_pickle=False),
        )
        if groups is not None:
            groups = np.ascontiguousarray(groups, np.int64)
            if groups.shape != labels.shape:
                raise StoreError(f"shard {split}/{stem}: {len(groups)} groups for {len(labels)} images")
            sizes["groups"], digests["groups"] = self._write(
                folder / f"groups-{stem}.npy",
                lambda handle: np.save(handle, groups, allow_pickle=False),
            )
        if names is not None:
            sizes["names"], digests["names"] = self._write_json(
                folder / f"names-{stem}.json", [encode_name(n) for n in names]
            )
        counts = (
            np.bincount(labels, minlength=len(classes))
            if len(labels)
            else np.zeros(len(classes), int)
        )
        per_class = {name: int(c) for name, c in zip(classes, counts)}
        record = ShardRecord(
            split, index, int(len(labels)), per_class, skipped, upscaled, sizes, digests, filled
        )
        self._write_json(
            folder / f"shard-{stem}.json",
            {
                "count": record.count, "per_class": per_class, "skipped": skipped,
                "upscaled": upscaled, "bytes": sizes, "sha256": digests, "filled": filled,
            },
        )
        return record

    def finalize(self, manifest: dict[str, Any]) -> None:
        """Write the manifest (the completion mark, with its checksum) and drop the plan file."""
        manifest = {**manifest, "plan": self.plan}
        manifest["checksum"] = manifest_checksum(manifest)
        self._write_json(self.root / "manifest.json", manifest)
        (self.root / PLAN_FILE).unlink(missing_ok=True)
        self.complete = True
