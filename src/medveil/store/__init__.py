"""The obfuscated dataset store: sharded ``.npy`` arrays and a versioned manifest.

Layout of a store folder::

    manifest.json               written last; its presence marks a complete store
    .medveil-output             marker "medveil store" (:mod:`medveil.outputs`; keys are refused here)
    .medveil.lock               held while a run writes (removed when it ends)
    <split>/images-00000.npy    float32 (count, n, m), memory-mappable
    <split>/labels-00000.npy    int64 (count,)
    <split>/shard-00000.json    shard metadata; written after its arrays (the shard's done mark)
    <split>/names-00000.json    source names relative to the dataset root, only with keep_names
    <split>/groups-00000.npy    int64 (count,): keyed hash of each image's group (patient, file)

Every file is written to a temporary name and renamed into place, so a killed run leaves either
whole shards or nothing; a rerun with the same plan resumes at the first missing shard. One run
at a time: a writer holds an OS lock on ``.medveil.lock`` (``flock``, through :mod:`filelock`),
which the kernel drops when the process dies, so a lock file left by a crash is stale and taken
over by the next run.

Since format version 2 the manifest records each shard file's size and SHA-256 and its own
checksum; :class:`ObfuscatedStore` checks them (and that every shard path stays inside the
store) before anything is read, and refuses a truncated shard or an edited manifest with an
error naming the shard. Version 1 stores (no checksums) are still read, with the sizes checked
against the arrays' headers.

Group arrays (since issue 17; optional, older stores have none) hold, for each image, a 64-bit
keyed hash of the group it belongs to (a patient, or the file its slices or frames came from):
equal values mean "never split apart", and the value says nothing about the patient.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import IO, Any

import numpy as np
import torch
from filelock import FileLock, Timeout
from torch.utils.data import Dataset

from medveil.atomic import atomic_write, atomic_write_json
from medveil.errors import StoreError
from medveil.layout import SPLIT_ORDER, display_path, is_valid_utf8, path_bytes
from medveil.outputs import MARKER, UNKNOWN, mark_output, output_kind

__all__ = [
    "LOCK_FILE",
    "READABLE_VERSIONS",
    "STORE_FORMAT",
    "STORE_VERSION",
    "ObfuscatedStore",
    "ShardRecord",
    "StoreBusyError",
    "StoreSplit",
    "StoreWriteError",
    "StoreWriter",
    "decode_name",
    "encode_name",
    "manifest_checksum",
]

STORE_FORMAT = "medveil-store"
STORE_VERSION = 2
#: Versions this medveil reads: 1 (no checksums) and 2.
READABLE_VERSIONS = (1, 2)
STORE_KIND = "store"
PLAN_FILE = ".plan.json"
LOCK_FILE = ".medveil.lock"
#: Key of a stored source name that is not valid UTF-8: the name's bytes in hex.
NAME_BYTES_KEY = "path_bytes_hex"
_HASH_CHUNK = 1 << 22


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


def shard_stem(index: int) -> str:
    return f"{index:05d}"


def encode_name(name: str) -> str | dict[str, str]:
    """A source name as stored: itself when it is valid UTF-8, else its exact bytes in hex."""
    return name if is_valid_utf8(name) else {NAME_BYTES_KEY: path_bytes(name).hex()}


def decode_name(stored: str | dict[str, str]) -> str:
    """Inverse of :func:`encode_name`: ``os.fsencode`` of the result gives the name's bytes."""
    if isinstance(stored, str):
        return stored
    return os.fsdecode(bytes.fromhex(stored[NAME_BYTES_KEY]))


def manifest_checksum(manifest: dict[str, Any]) -> str:
    """SHA-256 of the manifest's canonical JSON, without its own ``checksum`` field."""
    body = {k: v for k, v in manifest.items() if k != "checksum"}
    text = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(text.encode()).hexdigest()


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


def _file_digest(path: Path) -> tuple[int, str]:
    digest = hashlib.sha256()
    size = 0
    with path.open("rb") as handle:
        while chunk := handle.read(_HASH_CHUNK):
            digest.update(chunk)
            size += len(chunk)
    return size, digest.hexdigest()


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
    """A complete store opened for reading (see module docs for the layout).

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
        self._check(verify=verify)

    # --- integrity ---------------------------------------------------------------------------

    def _shard_files(self) -> Iterator[tuple[dict[str, Any], str, Path]]:
        """Every file a shard entry names: ``(entry, role, path)``, paths confined to the store."""
        splits = self.manifest.get("splits")
        if not isinstance(splits, dict):
            raise StoreError(f"{self.root / 'manifest.json'}: no valid 'splits' table")
        root = self.root.resolve()
        for split, data in splits.items():
            for entry in data.get("shards", []):
                for role in ("images", "labels", "groups", "names"):
                    if role in ("groups", "names") and role not in entry:
                        continue
                    yield entry, role, self._confined(root, split, entry.get(role))

    def _confined(self, root: Path, split: str, relative: object) -> Path:
        where = f"{self.root / 'manifest.json'}: split {split!r}"
        if not isinstance(relative, str) or not relative:
            raise StoreError(f"{where}: a shard entry has no valid file path")
        pure = PurePosixPath(relative)
        if pure.is_absolute() or "\\" in relative or ".." in pure.parts:
            raise StoreError(
                f"{where}: shard path {relative} leaves the store (absolute, or with '..'); "
                "the manifest was edited or damaged"
            )
        resolved = (root / pure).resolve()
        if not resolved.is_relative_to(root):
            raise StoreError(
                f"{where}: shard path {relative} resolves to {resolved}, outside the store "
                "(a symbolic link?); refusing to read it"
            )
        return root / pure

    def _check(self, *, verify: bool) -> None:
        files = list(self._shard_files())
        if not verify:
            return
        for entry, role, path in files:
            relative = entry[role]
            if not path.is_file():
                raise StoreError(f"{self.root}: shard file {relative} is missing")
            size = path.stat().st_size
            recorded = entry.get("bytes", {}).get(role)
            if recorded is not None and size != recorded:
                raise StoreError(
                    f"{self.root}: shard file {relative} is {size} bytes, the manifest records "
                    f"{recorded} (truncated or replaced); rebuild the store with `medveil "
                    "obfuscate`"
                )
            if role != "names":
                self._check_array(relative, path, size, entry.get("count"), role)
            digest = entry.get("sha256", {}).get(role)
            if digest is not None and _file_digest(path)[1] != digest:
                raise StoreError(
                    f"{self.root}: shard file {relative} does not match its SHA-256 in the "
                    "manifest (damaged or replaced); rebuild the store with `medveil obfuscate`"
                )
        recorded = self.manifest.get("checksum")
        if self.manifest["format_version"] >= 2 and recorded != manifest_checksum(self.manifest):
            raise StoreError(
                f"{self.root / 'manifest.json'}: the manifest was changed after it was written "
                "(its checksum does not match); restore it, or rebuild the store with `medveil "
                "obfuscate`"
            )

    def _check_array(self, relative: str, path: Path, size: int, count: object, role: str) -> None:
        readers = {
            (1, 0): np.lib.format.read_array_header_1_0,
            (2, 0): np.lib.format.read_array_header_2_0,
        }
        try:
            with path.open("rb") as handle:
                version = np.lib.format.read_magic(handle)
                if version not in readers:
                    raise ValueError(f"unsupported .npy version {version}")
                shape, fortran, dtype = readers[version](handle)
                offset = handle.tell()
        except (ValueError, OSError, SyntaxError) as exc:
            raise StoreError(
                f"{self.root}: shard file {relative} is not a valid array ({exc})"
            ) from None
        expected_shape = (
            (count, *self.shape) if role == "images" else (count,)
        )
        expected_dtype = np.dtype(np.float32 if role == "images" else np.int64)  # labels, groups
        if tuple(shape) != tuple(expected_shape) or dtype != expected_dtype or fortran:
            raise StoreError(
                f"{self.root}: shard file {relative} holds {dtype} {tuple(shape)}, the manifest "
                f"says {expected_dtype} {tuple(expected_shape)}"
            )
        needed = offset + int(np.prod(shape)) * dtype.itemsize
        if size != needed:
            raise StoreError(
                f"{self.root}: shard file {relative} is {size} bytes, its header needs {needed} "
                "(truncated); rebuild the store with `medveil obfuscate`"
            )

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
