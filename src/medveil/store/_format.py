"""What a store's writer and reader agree on: its format name and versions, its file names, how a
source name is stored, and the manifest's checksum."""

from __future__ import annotations

import hashlib
import json
import os
from typing import Any

from medveil.layout import is_valid_utf8, path_bytes

__all__ = [
    "LOCK_FILE",
    "NAME_BYTES_KEY",
    "PLAN_FILE",
    "READABLE_VERSIONS",
    "STORE_FORMAT",
    "STORE_KIND",
    "STORE_VERSION",
    "decode_name",
    "encode_name",
    "manifest_checksum",
    "shard_stem",
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

