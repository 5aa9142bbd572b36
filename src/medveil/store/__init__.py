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

The jobs live in private modules behind this face: ``_format`` (names, versions, the manifest
checksum), ``_writer`` (:class:`StoreWriter`: lock, resume, atomic shards), ``_integrity`` (the
checks before reading) and ``_reader`` (:class:`ObfuscatedStore`, :class:`StoreSplit`).
"""

from __future__ import annotations

from medveil.store._format import (
    LOCK_FILE,
    READABLE_VERSIONS,
    STORE_FORMAT,
    STORE_VERSION,
    decode_name,
    encode_name,
    manifest_checksum,
)
from medveil.store._reader import ObfuscatedStore, StoreSplit
from medveil.store._writer import ShardRecord, StoreBusyError, StoreWriteError, StoreWriter

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
