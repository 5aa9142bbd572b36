"""Obfuscate a dataset folder into a store, streaming in shards with bounded memory.

File names are handled as the operating system gives them, so a name that is not valid UTF-8
neither stops the run nor gets mangled: messages and the skipped-file report show it with
``\\xNN`` escapes (:func:`medveil.layout.display_path`), and the report and the store (with
``keep_names``) also record its exact bytes.

Every image is stored with the hash of its group (:func:`medveil.groups.group_hash`): the
``group`` column of a labels file when given, else the DICOM PatientID, else the file itself
(the study, for a DICOMweb source), so that the slices of a volume, the frames of a file and the
images of a patient are never split apart by ``train``.

The source is a folder or, given as an ``http(s)://`` URL, a DICOMweb service
(:mod:`medveil.dicomweb`) whose studies a labels CSV names; its instances are retrieved and
decoded in memory, and the run is sharded, resumed and grouped as a folder run is.

This module plans the run and resumes it; an engine (:mod:`medveil.engine`, by default
:class:`medveil.engine_local.LocalEngine`) decodes and obfuscates the files, and
:mod:`medveil.shard_writing` writes what it yields into the store.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Iterator
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from medveil.dicomweb import DicomWebIndex, DicomWebItem, RetryPolicy, is_dicomweb_url
from medveil.engine import (
    FILES_PER_TASK,
    DecodedFiles,
    Engine,
    Job,
    Reader,
    ShardPart,
    ShardTask,
    SkippedFile,
    decode_files,
    transform_arrays,
)
from medveil.engine_local import LocalEngine, torch_threads
from medveil.errors import ConfigError, StoreError
from medveil.groups import GROUP_SCHEME, group_hash, group_name
from medveil.keys import Key
from medveil.layout import DatasetIndex, Item, path_bytes, scan_dataset, scan_labels
from medveil.loading import LoadedFile, LoadOptions
from medveil.machine import resolve_device
from medveil.obfuscator import Obfuscator
from medveil.shard_writing import Progress, write_manifest, write_shards, write_skipped_report
from medveil.store import STORE_VERSION, ShardRecord, StoreWriter

if TYPE_CHECKING:
    from medveil.dicomweb.client import DicomWebSource

# The names of the engine modules are also kept here, where they were before the split.
__all__ = [
    "FILES_PER_TASK",
    "DecodedFiles",
    "Engine",
    "Job",
    "LocalEngine",
    "ObfuscationResult",
    "ShardPart",
    "ShardTask",
    "SkippedFile",
    "decode_files",
    "group_hash",
    "group_name",
    "obfuscate_dataset",
    "resolve_device",
    "torch_threads",
    "transform_arrays",
]


@dataclass
class ObfuscationResult:
    """What :func:`obfuscate_dataset` did."""

    store: Path
    images: dict[str, int]
    files: int
    skipped: list[SkippedFile] = field(default_factory=list)
    resumed_shards: int = 0
    already_complete: bool = False
    seconds: float = 0.0
    skipped_report: Path | None = None
    upscaled: int = 0
    size: int = 0
    filled: int = 0
    fill_value: float | None = None
    groups: int = 0
    #: What the source holds: "files" in a folder, "instances" on a DICOMweb server.
    unit: str = "files"

    @property
    def images_per_second(self) -> float:
        return sum(self.images.values()) / self.seconds if self.seconds > 0 else float("nan")

    def summary(self) -> str:
        parts = ", ".join(f"{split}: {n}" for split, n in self.images.items())
        text = (
            f"{sum(self.images.values())} images ({parts}) from {self.files} {self.unit} -> "
            f"{self.store}"
        )
        if self.already_complete:
            return text + " (already complete; nothing to do)"
        text += f" in {self.seconds:.1f} s ({self.images_per_second:.0f} images/s)"
        if self.upscaled:
            text += (
                f", {self.upscaled} image(s) smaller than {self.size}x{self.size} upscaled "
                "(--min-size refuses them)"
            )
        if self.filled:
            text += (
                f", {self.filled} image(s) with NaN or infinite values filled with "
                f"{self.fill_value:g} (--fill-nonfinite)"
            )
        if self.groups:
            text += f", {self.groups} group(s) (patients or files) that train never splits"
        if self.resumed_shards:
            text += f", resumed after {self.resumed_shards} finished shard(s)"
        if self.skipped:
            bad = "instance(s)" if self.unit == "instances" else "file(s)"
            text += f", {len(self.skipped)} bad {bad} skipped, listed in {self.skipped_report}"
        return text


def _plan(
    index: DatasetIndex,
    key: Key,
    options: LoadOptions,
    files_per_shard: int,
    keep_names: bool,
    skip_bad: bool,
) -> dict[str, object]:
    """What identifies a run: a rerun with an equal plan resumes, a different one starts clean."""
    plan: dict[str, object] = {
        "format_version": STORE_VERSION,
        "files": _listing(index),
        "classes": list(index.classes),
        "key_fingerprint": key.fingerprint,
        "load": asdict(options),
        "files_per_shard": files_per_shard,
        "keep_names": keep_names,
        "skip_bad": skip_bad,
        "layout": index.layout,
        "groups": GROUP_SCHEME,
    }
    if isinstance(index, DicomWebIndex):
        plan["source"] = index.url  # never with credentials: public_url refuses them
    return plan


def _listing(index: DatasetIndex) -> str:
    """A hash of the inputs: every file with its size and time (or every DICOMweb instance),
    split, label and group."""
    if isinstance(index, DicomWebIndex):
        return index.listing()
    listing = hashlib.sha256()
    for split, items in index.splits.items():
        for item in items:
            path = index.root / item.path
            try:
                stat = path.stat()
            except OSError:  # a broken link or a loop: the link itself identifies the input
                stat = path.lstat()
            # The name's bytes, not its text: it need not be valid UTF-8.
            listing.update(
                f"{split}\0".encode() + path_bytes(item.path)
                + f"\0{item.label}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode()
            )
            if item.group is not None:
                listing.update(b"group\0" + item.group.encode("utf-8", "surrogateescape"))
    return listing.hexdigest()


def _shards(items: list[Item], size: int) -> Iterator[tuple[int, list[Item]]]:
    for index, start in enumerate(range(0, len(items), size)):
        yield index, items[start : start + size]


def _source(
    source: str | Path, labels: str | Path | None, options: LoadOptions, retry: RetryPolicy | None
) -> tuple[DatasetIndex, Reader | None, DicomWebSource | None]:
    """The index of a folder or DICOMweb source, how to read one of its DICOMweb instances,
    and the DICOMweb connection to close after the run (both ``None`` for a folder, whose
    files a :class:`Job` reads under its root)."""
    if not is_dicomweb_url(source):
        index = scan_labels(source, labels) if labels is not None else scan_dataset(source)
        return index, None, None
    from medveil.dicomweb.client import DicomWebSource  # its HTTP stack: for PACS runs only

    pacs = DicomWebSource(str(source), retry=retry)
    try:
        index = pacs.scan(labels)
    except BaseException:
        pacs.close()
        raise

    def read(item: Item) -> LoadedFile:
        assert isinstance(item, DicomWebItem)
        return pacs.read(item, options=options)

    return index, read, pacs


def obfuscate_dataset(
    source: str | Path,
    *,
    key: Key,
    output: str | Path,
    options: LoadOptions | None = None,
    files_per_shard: int = 512,
    batch_size: int = 256,
    workers: int = 2,
    device: str = "auto",
    skip_bad: bool = False,
    keep_names: bool = False,
    overwrite: bool = False,
    noise_seed: int | None = None,
    progress: Progress | None = None,
    on_start: Callable[[int], None] | None = None,
    labels: str | Path | None = None,
    retry: RetryPolicy | None = None,
    engine: Engine | None = None,
) -> ObfuscationResult:
    """Obfuscate every image of a Kaggle-layout folder (or the files a ``labels`` CSV names,
    see :func:`medveil.layout.scan_labels`) into a store at ``output``.

    By default a :class:`LocalEngine` of ``workers`` threads decodes and obfuscates the files
    (``batch_size`` images per transform batch, on ``device``); ``engine`` runs them elsewhere
    (:class:`medveil.obfuscate_ray.RayEngine`), and the store is the same. At most one shard of
    outputs and a few tasks of images are in memory whatever the dataset size. A bad file
    stops the run with an :class:`ImageLoadError` naming it (the finished shards are kept for a
    rerun), or with ``skip_bad`` is left out and listed in ``<output>.skipped.json`` beside the
    store (outside it, since it names source files). Images smaller than the working size are
    upscaled and counted (:attr:`ObfuscationResult.upscaled`, ``upscaled`` per split in the
    manifest) unless ``options.min_size`` refuses them; images whose NaN/inf values
    ``options.fill_nonfinite`` replaced are counted the same way (``filled``). Each image's
    group is stored as a keyed hash (:func:`group_hash`), never as the PatientID or a name.
    ``progress(files)`` is called after each shard is written.

    ``source`` may be a DICOMweb service URL (``http(s)://HOST:PORT/PATH``), with ``labels`` a
    CSV of ``StudyInstanceUID,label[,split][,group]``: see :mod:`medveil.dicomweb`, whose
    ``retry`` policy applies; ``keep_names`` then stores ``STUDY/SERIES/SOP`` UIDs.

    Only one run writes into a store at a time: a second one raises
    :class:`medveil.store.StoreBusyError`. A file that cannot be written (disk full, a
    file-size limit) raises :class:`medveil.store.StoreWriteError` naming it; nothing is left
    under its final name and a rerun resumes after the last whole shard.
    """
    started = time.perf_counter()
    output = Path(output).expanduser()
    options = options or LoadOptions(size=key.params.size)
    if options.size != key.params.size:
        raise ValueError(f"load size {options.size} differs from the key's size {key.params.size}")
    if files_per_shard < 1 or batch_size < 1 or workers < 1:
        raise ValueError("files_per_shard, batch_size and workers must be positive")
    index, read, pacs = _source(source, labels, options, retry)
    Obfuscator(key)  # refuses an uncalibrated key before anything is written
    if engine is None:
        engine = LocalEngine(
            workers=workers, batch_size=batch_size, device=str(resolve_device(device))
        )
    elif pacs is not None:
        pacs.close()
        raise ConfigError("a DICOMweb source runs on the local engine only")
    plan = _plan(index, key, options, files_per_shard, keep_names, skip_bad)
    unit = "instances" if pacs is not None else "files"
    with pacs or nullcontext(), StoreWriter(output, plan=plan, overwrite=overwrite) as writer:
        if on_start is not None:
            on_start(len(index))
        if writer.complete:
            manifest = json.loads((output / "manifest.json").read_text())
            images = {s: v["count"] for s, v in manifest["splits"].items()}
            upscaled = sum(v.get("upscaled", 0) for v in manifest["splits"].values())
            filled = sum(v.get("filled", 0) for v in manifest["splits"].values())
            return ObfuscationResult(
                store=output, images=images, files=len(index), already_complete=True,
                upscaled=upscaled, size=options.size, filled=filled,
                fill_value=options.fill_nonfinite, unit=unit,
            )
        records: dict[str, list[ShardRecord]] = {}
        resumed = 0
        todo = []
        for split, items in index.splits.items():
            for shard, chunk in _shards(items, files_per_shard):
                record = writer.shard_record(split, shard)
                if record is None:
                    todo.append(ShardTask(split, shard, chunk))
                    continue
                records.setdefault(split, []).append(record)
                resumed += 1
                if progress:
                    progress(len(chunk))
        job = Job(
            root=None if pacs is not None else index.root, shards=todo, key=key,
            options=options, listing=str(plan["files"]), skip_bad=skip_bad,
            keep_names=keep_names, noise_seed=noise_seed, read=read,
        )
        skipped = write_shards(writer, index, job, engine, records, progress)
        report = None
        if skipped or any(r.skipped for rs in records.values() for r in rs):
            report = write_skipped_report(writer, skipped, records)
        images = {split: sum(r.count for r in rs) for split, rs in records.items()}
        if sum(images.values()) == 0:
            where = index.url if isinstance(index, DicomWebIndex) else index.root
            raise StoreError(f"{where}: no image could be loaded (all {unit} were bad)")
        distinct = write_manifest(writer, index, key, records, keep_names=keep_names, options=options)

    return ObfuscationResult(
        store=output,
        images=images,
        files=len(index),
        unit=unit,
        skipped=skipped,
        resumed_shards=resumed,
        seconds=time.perf_counter() - started,
        skipped_report=report,
        upscaled=sum(r.upscaled for rs in records.values() for r in rs),
        size=options.size,
        filled=sum(r.filled for rs in records.values() for r in rs),
        fill_value=options.fill_nonfinite,
        groups=distinct,
    )
