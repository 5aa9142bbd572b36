"""Whether a store is intact, checked before anything is read from it.

Every shard path must stay inside the store; with ``verify``, every shard file must also have the
size (and, since format version 2, the SHA-256) the manifest records and the shape its header
declares, and the manifest its own checksum. Each failure is a :class:`StoreError` naming the
shard (or the manifest).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np

from medveil.errors import StoreError
from medveil.store._format import manifest_checksum

__all__ = ["check_store"]

_HASH_CHUNK = 1 << 22


def _file_digest(path: Path) -> tuple[int, str]:
    digest = hashlib.sha256()
    size = 0
    with path.open("rb") as handle:
        while chunk := handle.read(_HASH_CHUNK):
            digest.update(chunk)
            size += len(chunk)
    return size, digest.hexdigest()


def _shard_files(
    store: Path, manifest: dict[str, Any]
) -> Iterator[tuple[dict[str, Any], str, Path]]:
    """Every file a shard entry names: ``(entry, role, path)``, paths confined to the store."""
    splits = manifest.get("splits")
    if not isinstance(splits, dict):
        raise StoreError(f"{store / 'manifest.json'}: no valid 'splits' table")
    root = store.resolve()
    for split, data in splits.items():
        for entry in data.get("shards", []):
            for role in ("images", "labels", "groups", "names"):
                if role in ("groups", "names") and role not in entry:
                    continue
                yield entry, role, _confined(store, root, split, entry.get(role))


def _confined(store: Path, root: Path, split: str, relative: object) -> Path:
    where = f"{store / 'manifest.json'}: split {split!r}"
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


def check_store(store: Path, manifest: dict[str, Any], *, verify: bool) -> None:
    """Check the store at ``store`` against its ``manifest`` (see the module notes); without
    ``verify``, only that every shard path stays inside the store.

    Raises
    ------
    StoreError
        The first problem found, naming the shard file or the manifest.
    """
    files = list(_shard_files(store, manifest))
    if not verify:
        return
    for entry, role, path in files:
        relative = entry[role]
        if not path.is_file():
            raise StoreError(f"{store}: shard file {relative} is missing")
        size = path.stat().st_size
        recorded = entry.get("bytes", {}).get(role)
        if recorded is not None and size != recorded:
            raise StoreError(
                f"{store}: shard file {relative} is {size} bytes, the manifest records "
                f"{recorded} (truncated or replaced); rebuild the store with `medveil "
                "obfuscate`"
            )
        if role != "names":
            _check_array(store, manifest, relative, path, size, entry.get("count"), role)
        digest = entry.get("sha256", {}).get(role)
        if digest is not None and _file_digest(path)[1] != digest:
            raise StoreError(
                f"{store}: shard file {relative} does not match its SHA-256 in the "
                "manifest (damaged or replaced); rebuild the store with `medveil obfuscate`"
            )
    recorded = manifest.get("checksum")
    if manifest["format_version"] >= 2 and recorded != manifest_checksum(manifest):
        raise StoreError(
            f"{store / 'manifest.json'}: the manifest was changed after it was written "
            "(its checksum does not match); restore it, or rebuild the store with `medveil "
            "obfuscate`"
        )


def _check_array(
    store: Path,
    manifest: dict[str, Any],
    relative: str,
    path: Path,
    size: int,
    count: object,
    role: str,
) -> None:
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
            f"{store}: shard file {relative} is not a valid array ({exc})"
        ) from None
    expected_shape = (
        (count, *tuple(manifest["shape"])) if role == "images" else (count,)
    )
    expected_dtype = np.dtype(np.float32 if role == "images" else np.int64)  # labels, groups
    if tuple(shape) != tuple(expected_shape) or dtype != expected_dtype or fortran:
        raise StoreError(
            f"{store}: shard file {relative} holds {dtype} {tuple(shape)}, the manifest "
            f"says {expected_dtype} {tuple(expected_shape)}"
        )
    needed = offset + int(np.prod(shape)) * dtype.itemsize
    if size != needed:
        raise StoreError(
            f"{store}: shard file {relative} is {size} bytes, its header needs {needed} "
            "(truncated); rebuild the store with `medveil obfuscate`"
        )
