"""Obfuscation on a Ray cluster: Ray Data reads the files and an actor pool obfuscates them.

The optional extra ``pip install 'medveil[ray]'`` installs Ray. :class:`RayEngine` plugs into
:func:`medveil.obfuscate.obfuscate_dataset`, which writes the same store as on one machine
(shards, manifest, atomic renames, resumable, the skipped-file report); only decoding and the
transform move to the cluster.

Where the secrets go: the rows that Ray Data moves hold file paths, labels and group names,
never pixels of the source images or key bytes. Each actor reads the key file itself, from the
same path on its own node, and checks its fingerprint; the key therefore never enters Ray's
object store (where Ray also keeps the actors' constructor arguments), its spill files or its
logs. What comes back through the object store is what the store holds anyway: obfuscated
images and keyed group hashes.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from medveil.engine import (
    FILES_PER_TASK,
    Job,
    ShardPart,
    SkippedFile,
    decode_files,
    transform_arrays,
)
from medveil.errors import ConfigError, InvalidKeyError
from medveil.keys import Key
from medveil.layout import Item, path_bytes
from medveil.loading import LoadOptions
from medveil.obfuscator import Obfuscator

__all__ = ["RayEngine", "require_ray"]


def require_ray() -> Any:
    """The ``ray`` module, or a :class:`ConfigError` that says how to install it."""
    try:
        import ray
        import ray.data  # noqa: F401  (Ray Data ships with ray but loads apart)
    except ImportError:
        raise ConfigError(
            "the Ray engine needs Ray: pip install 'medveil[ray]'"
        ) from None
    return ray


class ObfuscateFiles:
    """Ray Data callable class: one actor decodes and obfuscates batches of file rows.

    Each row names one file (``path`` as bytes relative to ``root``, ``label``, ``group``);
    each output row is one image slice of a file, or one row with a ``problem`` for a file
    that could not be read.
    """

    def __init__(
        self,
        *,
        key_file: str,
        fingerprint: str,
        allow_open_key: bool,
        root: str,
        options: LoadOptions,
        listing: str,
        keep_names: bool,
        batch_size: int,
    ) -> None:
        # One intra-op thread per actor: the pool, not torch, uses the node's cores.
        torch.set_num_threads(1)
        key = Key.load(key_file, allow_open=allow_open_key)
        if key.fingerprint != fingerprint:
            raise InvalidKeyError(
                f"{key_file}: on this node the key file holds the key with fingerprint "
                f"{key.fingerprint}, not {fingerprint}"
            )
        self.job = Job(
            root=Path(root), shards=[], key=key, options=options, listing=listing,
            skip_bad=True, keep_names=keep_names,
        )
        self.obfuscator = Obfuscator(key)
        self.batch_size = batch_size
        self.blank = np.zeros(key.params.out_shape, np.float32)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        columns: dict[str, list[Any]] = {
            name: [] for name in
            ("file", "slice", "slices", "label", "group", "upscaled", "filled", "problem")
        }
        arrays: list[np.ndarray] = []
        for i, file in enumerate(batch["file"]):
            group = str(batch["group"][i]) if batch["has_group"][i] else None
            item = Item(Path(os.fsdecode(bytes(batch["path"][i]))), int(batch["label"][i]), group)
            decoded = decode_files([item], job=self.job, skip_bad=True)
            rows = len(decoded.arrays) if not decoded.bad else 1
            columns["file"] += [int(file)] * rows
            columns["slice"] += list(range(rows)) if not decoded.bad else [-1]
            columns["slices"] += [rows] * rows
            columns["label"] += [item.label] * rows
            columns["group"] += decoded.groups or [0]
            columns["upscaled"] += [decoded.upscaled] + [0] * (rows - 1)
            columns["filled"] += [decoded.filled] + [0] * (rows - 1)
            columns["problem"] += [decoded.bad[0].problem if decoded.bad else ""] * rows
            arrays += decoded.arrays
        images = transform_arrays(
            self.obfuscator, arrays, batch_size=self.batch_size, device=torch.device("cpu")
        )
        # A bad file's row carries a blank image, so that every row has the same columns.
        slots = iter(images)
        out = {name: np.asarray(values) for name, values in columns.items()}
        out["label"] = out["label"].astype(np.int64)
        out["group"] = out["group"].astype(np.int64)
        out["image"] = np.stack(
            [self.blank if s < 0 else next(slots) for s in columns["slice"]]
        ) if columns["slice"] else np.empty((0, *self.blank.shape), np.float32)
        return out


@dataclass(frozen=True)
class RayEngine:
    """Decode and obfuscate on a Ray cluster with Ray Data.

    Parameters
    ----------
    key_file
        The key file, at this same path on every node (a secrets volume mounted owner-only):
        each actor reads it there. The key the run was given must be the one in this file.
    address
        ``None`` starts a local Ray instance with ``workers`` CPUs for the run; ``"auto"`` joins
        the cluster this machine belongs to; ``"HOST:PORT"`` (or ``ray://HOST:PORT``) joins that
        one. When Ray is already initialised in this process, that instance is used.
    workers
        Actors in the pool, one CPU each.
    files_per_batch
        Files per ``map_batches`` batch.
    batch_size
        Images per transform batch inside an actor.
    allow_open_key
        Accept a key file that group or others may read (:meth:`medveil.keys.Key.load`).

    Notes
    -----
    The source files must be readable by every node at the paths the driver sees (a shared
    file system). A pinned noise seed is refused: each actor draws its own fresh noise.
    """

    key_file: Path
    address: str | None = None
    workers: int = 2
    files_per_batch: int = FILES_PER_TASK
    batch_size: int = 256
    allow_open_key: bool = False

    def parts(self, job: Job) -> Iterator[ShardPart]:
        ray = require_ray()
        if job.noise_seed is not None:
            raise ConfigError("a pinned noise seed is for the local engine's tests only")
        if self.workers < 1 or self.files_per_batch < 1 or self.batch_size < 1:
            raise ConfigError("workers, files_per_batch and batch_size must be positive")
        key_file = Path(self.key_file).expanduser().absolute()
        on_disk = Key.load(key_file, allow_open=self.allow_open_key)
        if on_disk.fingerprint != job.key.fingerprint or (
            on_disk.calibration != job.key.calibration
        ):
            raise InvalidKeyError(
                f"{key_file}: the file does not hold the key (and calibration) of this run; "
                "the Ray workers read the key from this file"
            )
        if not job.shards:
            return
        started = not ray.is_initialized()
        if started:
            init = dict(include_dashboard=False, logging_level="ERROR", log_to_driver=False)
            init |= (
                {"address": self.address} if self.address is not None
                else {"num_cpus": self.workers}
            )
            ray.init(**init)
        try:
            yield from self._run(ray, job, key_file)
        finally:
            if started:
                ray.shutdown()

    def _run(self, ray: Any, job: Job, key_file: Path) -> Iterator[ShardPart]:
        files: list[tuple[int, Item]] = []  # (shard position in job.shards, item)
        for position, shard in enumerate(job.shards):
            files += [(position, item) for item in shard.items]
        rows = [
            {
                "file": number,
                "path": path_bytes(item.path),
                "label": item.label,
                "group": item.group or "",
                "has_group": item.group is not None,
            }
            for number, (_, item) in enumerate(files)
        ]
        context = ray.data.DataContext.get_current()
        context.enable_progress_bars = False
        blocks = max(1, -(-len(rows) // self.files_per_batch))
        dataset = ray.data.from_items(rows, override_num_blocks=blocks).map_batches(
            ObfuscateFiles,
            fn_constructor_kwargs=dict(
                key_file=str(key_file), fingerprint=job.key.fingerprint,
                allow_open_key=self.allow_open_key, root=str(job.root.absolute()),
                options=job.options, listing=job.listing, keep_names=job.keep_names,
                batch_size=self.batch_size,
            ),
            batch_size=self.files_per_batch,
            batch_format="numpy",
            compute=ray.data.ActorPoolStrategy(size=self.workers),
            num_cpus=1,
        )
        remaining = [len(shard.items) for shard in job.shards]
        received: list[dict[int, list[dict[str, Any]]]] = [{} for _ in job.shards]
        for batch in dataset.iter_batches(batch_size=None, batch_format="numpy"):
            for i, number in enumerate(batch["file"]):
                position = files[int(number)][0]
                row = {name: column[i] for name, column in batch.items()}
                got = received[position].setdefault(int(number), [])
                got.append(row)
                if len(got) == int(row["slices"]):
                    remaining[position] -= 1
                    if remaining[position] == 0:
                        yield _part(job, job.shards[position], files, received[position])
                        received[position] = {}


def _part(
    job: Job, shard: Any, files: list[tuple[int, Item]], received: dict[int, list[dict[str, Any]]]
) -> ShardPart:
    """A whole shard from its files' rows, in file order."""
    images, labels, groups, names, bad = [], [], [], [], []
    upscaled = filled = 0
    for number in sorted(received):
        item = files[number][1]
        rows = sorted(received[number], key=lambda row: int(row["slice"]))
        if int(rows[0]["slice"]) < 0:
            bad.append(SkippedFile.of(item, str(rows[0]["problem"])))
            continue
        for row in rows:
            images.append(row["image"])
            labels.append(int(row["label"]))
            groups.append(int(row["group"]))
            upscaled += int(row["upscaled"])
            filled += int(row["filled"])
        if job.keep_names:
            name = os.fspath(item.path)
            names += [name] if len(rows) == 1 else [f"{name}#{i}" for i in range(len(rows))]
    shape = job.key.params.out_shape
    return ShardPart(
        split=shard.split, shard=shard.index, files=len(shard.items),
        images=np.stack(images) if images else np.empty((0, *shape), np.float32),
        labels=labels, groups=groups, names=names, bad=bad, upscaled=upscaled, filled=filled,
    )
