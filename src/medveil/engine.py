"""What an obfuscation engine is given and gives back, and the work every engine does.

:func:`medveil.obfuscate.obfuscate_dataset` hands an :class:`Engine` a :class:`Job` (the shards
left to write and how to read their files); the engine yields :class:`ShardPart` objects, which
the run writes into the store. Every engine decodes its files with :func:`decode_files` and
obfuscates them with :func:`transform_arrays`: :class:`medveil.engine_local.LocalEngine` on this
machine, :class:`medveil.obfuscate_ray.RayEngine` on a Ray cluster.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np
import torch

from medveil.batched import obfuscate_batches
from medveil.errors import ImageLoadError
from medveil.groups import group_hash, group_name
from medveil.keys import Key
from medveil.layout import Item, display_path, is_valid_utf8, path_bytes
from medveil.loading import LoadedFile, LoadOptions, load_file
from medveil.obfuscator import Obfuscator

__all__ = [
    "FILES_PER_TASK",
    "DecodedFiles",
    "Engine",
    "ImageColumns",
    "Job",
    "Reader",
    "ShardPart",
    "ShardTask",
    "SkippedFile",
    "decode_files",
    "transform_arrays",
]

Reader = Callable[[Item], LoadedFile]

#: Files that one worker decodes and obfuscates as one task: small enough that every worker
#: stays busy up to the end of a shard and that few images are in flight, large enough for
#: efficient batched products.
FILES_PER_TASK = 64


@dataclass(frozen=True)
class SkippedFile:
    """A bad input file left out with ``skip_bad``.

    ``path`` is relative to the dataset root and printable (bytes that are not UTF-8 appear as
    ``\\xNN``); ``path_bytes_hex`` holds the name's exact bytes when it is not valid UTF-8.
    """

    path: str
    problem: str
    path_bytes_hex: str | None = None

    @classmethod
    def of(cls, item: Item, problem: str) -> SkippedFile:
        """The record of ``item`` left out for ``problem``."""
        exact = None if is_valid_utf8(item.path) else path_bytes(item.path).hex()
        return cls(path=display_path(item.path), problem=problem, path_bytes_hex=exact)

    def to_dict(self) -> dict[str, str]:
        data = {"path": self.path, "problem": self.problem}
        if self.path_bytes_hex is not None:
            data["path_bytes_hex"] = self.path_bytes_hex
        return data


@dataclass(frozen=True)
class ShardTask:
    """One shard still to be written: its split, index and files (in store order)."""

    split: str
    index: int
    items: list[Item]


@dataclass(frozen=True)
class Job:
    """What an :class:`Engine` turns into :class:`ShardPart` objects: the shards left to write
    and how to load and obfuscate their files."""

    root: Path | None
    shards: list[ShardTask]
    key: Key
    options: LoadOptions
    listing: str
    skip_bad: bool
    keep_names: bool
    noise_seed: int | None = None
    #: How to read an item when it is not a file under ``root`` (a DICOMweb instance); such a
    #: job runs on the local engine only (its reader holds a connection).
    read: Reader | None = None

    def reader(self) -> Reader:
        if self.read is not None:
            return self.read
        if self.root is None:
            raise ValueError("a job needs a root folder or a reader")
        root, options = self.root, self.options
        return lambda item: load_file(root / item.path, options=options)


@dataclass(kw_only=True)
class ImageColumns:
    """What consecutive files add to the store besides pixels: each image's label, keyed group
    hash and (with ``keep_names``) name, the bad files left out, and how many images were
    upscaled or had non-finite values filled."""

    labels: list[int] = field(default_factory=list)
    groups: list[int] = field(default_factory=list)
    names: list[str] = field(default_factory=list)
    bad: list[SkippedFile] = field(default_factory=list)
    upscaled: int = 0
    filled: int = 0


@dataclass(kw_only=True)
class DecodedFiles(ImageColumns):
    """Files decoded to working-size slices (``arrays``), with their :class:`ImageColumns`."""

    arrays: list[np.ndarray] = field(default_factory=list)


@dataclass(kw_only=True)
class ShardPart(ImageColumns):
    """Consecutive files of one shard, decoded and obfuscated (``images``), with their
    :class:`ImageColumns`.

    An engine yields the parts of a shard one after another, in file order, the last one with
    ``last`` set; the store's writer writes the shard when that one arrives.
    """

    split: str
    shard: int
    files: int
    images: np.ndarray
    last: bool = True


class Engine(Protocol):
    """Something that runs a :class:`Job`: :class:`medveil.engine_local.LocalEngine`, or
    :class:`medveil.obfuscate_ray.RayEngine` for a Ray cluster."""

    def parts(self, job: Job) -> Iterator[ShardPart]:
        """Every file of ``job.shards`` as parts, the parts of each shard consecutive."""
        ...


def _load(read: Reader, item: Item) -> LoadedFile | ImageLoadError:
    try:
        return read(item)
    except ImageLoadError as exc:
        # Relative to the dataset root, and printable whatever the name's bytes.
        exc.path = display_path(item.path)
        exc.args = (f"{exc.path}: {exc.problem}",)
        return exc
    except Exception as exc:
        # Not a known kind of bad input (a decoder's bug, memory): it stops the run with its
        # traceback, which then at least says which file was being read.
        exc.add_note(f"while loading {display_path(item.path)}")
        raise


def decode_files(
    items: list[Item], *, job: Job, skip_bad: bool, stop: threading.Event | None = None
) -> DecodedFiles | None:
    """Load ``items`` (files relative to ``job.root``, or through ``job.read``) and hash their
    groups.

    A bad file raises its :class:`ImageLoadError` (named relative to the root), or with
    ``skip_bad`` is listed in :attr:`DecodedFiles.bad` instead. ``None`` when ``stop`` was set
    before the last file.
    """
    out = DecodedFiles()
    read = job.reader()
    for item in items:
        if stop is not None and stop.is_set():
            return None
        result = _load(read, item)
        if isinstance(result, ImageLoadError):
            if not skip_bad:
                raise result
            out.bad.append(SkippedFile.of(item, result.problem))
            continue
        slices = result.slices
        out.arrays.extend(slices)
        out.upscaled += result.upscaled
        out.filled += result.filled
        out.labels.extend([item.label] * len(slices))
        group = group_hash(job.key, job.listing, group_name(item, result.patient))
        out.groups.extend([group] * len(slices))
        if job.keep_names:
            # os.fspath keeps undecodable bytes as surrogates; the store encodes them.
            name = os.fspath(item.path)
            out.names.extend(
                [name] if len(slices) == 1 else [f"{name}#{i}" for i in range(len(slices))]
            )
    return out


def transform_arrays(
    obfuscator: Obfuscator,
    arrays: list[np.ndarray],
    *,
    batch_size: int,
    device: torch.device,
) -> np.ndarray:
    """Obfuscate ``(n, n)`` arrays in batches of ``batch_size`` into one ``(count, n, m)``
    float32 array (:func:`medveil.batched.obfuscate_batches`, brought back to the CPU)."""
    out = obfuscate_batches(obfuscator, arrays, batch_size=batch_size, device=device)
    return out.float().cpu().numpy()
