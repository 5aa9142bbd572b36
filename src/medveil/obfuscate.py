"""Obfuscate a dataset folder into a store, streaming in shards with bounded memory.

File names are handled as the operating system gives them, so a name that is not valid UTF-8
neither stops the run nor gets mangled: messages and the skipped-file report show it with
``\\xNN`` escapes (:func:`medveil.layout.display_path`), and the report and the store (with
``keep_names``) also record its exact bytes.

Every image is stored with the hash of its group (:func:`group_hash`): the ``group`` column of
a labels file when given, else the DICOM PatientID, else the file itself (the study, for a
DICOMweb source), so that the slices of a volume, the frames of a file and the images of a
patient are never split apart by ``train``.

The source is a folder or, given as an ``http(s)://`` URL, a DICOMweb service
(:mod:`medveil.dicomweb`) whose studies a labels CSV names; its instances are retrieved and
decoded in memory, and the run is sharded, resumed and grouped as a folder run is.
"""

from __future__ import annotations

import hashlib
import hmac
import itertools
import json
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import closing, contextmanager, nullcontext
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol

import numpy as np
import torch

import medveil
from medveil.batched import obfuscate_batches
from medveil.dicomweb import (
    DicomWebIndex,
    DicomWebItem,
    DicomWebSource,
    RetryPolicy,
    is_dicomweb_url,
)
from medveil.errors import ConfigError, ImageLoadError, StoreError
from medveil.keys import Key
from medveil.layout import (
    DatasetIndex,
    Item,
    display_path,
    is_valid_utf8,
    path_bytes,
    scan_dataset,
    scan_labels,
)
from medveil.loading import LoadedFile, LoadOptions, load_file
from medveil.machine import resolve_device
from medveil.obfuscator import Obfuscator
from medveil.store import STORE_FORMAT, STORE_VERSION, ShardRecord, StoreWriter

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

Progress = Callable[[int], None]
Reader = Callable[[Item], LoadedFile]


@dataclass(frozen=True)
class SkippedFile:
    """A bad input file left out with ``skip_bad``.

    ``path`` is relative to the dataset root and printable (bytes that are not UTF-8 appear as
    ``\\xNN``); ``path_bytes_hex`` holds the name's exact bytes when it is not valid UTF-8.
    """

    path: str
    problem: str
    path_bytes_hex: str | None = None

    def to_dict(self) -> dict[str, str]:
        data = {"path": self.path, "problem": self.problem}
        if self.path_bytes_hex is not None:
            data["path_bytes_hex"] = self.path_bytes_hex
        return data


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
        "groups": _GROUP_SCHEME,
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


#: How group hashes are made (recorded in the plan and manifest).
_GROUP_SCHEME = "hmac-sha256-64/v1"


def group_name(item: Item, patient: str | None) -> str:
    """What an image is grouped by: the labels file's group, else the DICOM PatientID, else its
    file (so a volume's slices and a file's frames stay together) or DICOMweb study."""
    if item.group is not None:
        return "group:" + item.group
    if patient is not None:
        return "patient:" + patient
    if isinstance(item, DicomWebItem):
        return "study:" + item.study
    return "file:" + path_bytes(item.path).hex()


def group_hash(key: Key, listing: str, name: str) -> int:
    """A 64-bit keyed hash of a group name, as stored.

    HMAC-SHA-256 under the key's secret (which never leaves the data holder), salted with the
    run's file listing, so a store holds nothing that identifies the patient or can be matched
    against a guessed PatientID, and two stores of different files do not share group values.
    """
    message = b"medveil/group/v1/" + listing.encode() + b"/" + name.encode(
        "utf-8", "surrogateescape"
    )
    digest = hmac.new(key.secret, message, hashlib.sha256).digest()
    return int.from_bytes(digest[:8], "little", signed=True)


def _load(read: Reader, item: Item) -> LoadedFile | ImageLoadError:
    try:
        return read(item)
    except ImageLoadError as exc:
        # Relative to the dataset root, and printable whatever the name's bytes.
        exc.path = display_path(item.path)
        if isinstance(item, DicomWebItem):
            # STUDY/SERIES/SOP UIDs alone do not tell a person which of their studies it was.
            exc.problem = f"{exc.problem} (study of labels row {item.row})"
        exc.args = (f"{exc.path}: {exc.problem}",)
        return exc
    except Exception as exc:
        # Not a known kind of bad input (a decoder's bug, memory): it stops the run with its
        # traceback, which then at least says which file was being read.
        exc.add_note(f"while loading {display_path(item.path)}")
        raise


def _skipped(item: Item, problem: str) -> SkippedFile:
    exact = None if is_valid_utf8(item.path) else path_bytes(item.path).hex()
    return SkippedFile(path=display_path(item.path), problem=problem, path_bytes_hex=exact)


def _shards(items: list[Item], size: int) -> Iterator[tuple[int, list[Item]]]:
    for index, start in enumerate(range(0, len(items), size)):
        yield index, items[start : start + size]


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


@dataclass
class ShardPart:
    """Consecutive files of one shard, decoded and obfuscated.

    An engine yields the parts of a shard one after another, in file order, the last one with
    ``last`` set; the store's writer writes the shard when that one arrives.
    """

    split: str
    shard: int
    files: int
    images: np.ndarray
    labels: list[int]
    groups: list[int]
    names: list[str]
    bad: list[SkippedFile]
    upscaled: int = 0
    filled: int = 0
    last: bool = True


class Engine(Protocol):
    """Something that runs a :class:`Job`: :class:`LocalEngine`, or
    :class:`medveil.obfuscate_ray.RayEngine` for a Ray cluster."""

    def parts(self, job: Job) -> Iterator[ShardPart]:
        """Every file of ``job.shards`` as parts, the parts of each shard consecutive."""
        ...


@dataclass
class DecodedFiles:
    """Files decoded to working-size slices, with the per-image columns of the store."""

    arrays: list[np.ndarray]
    labels: list[int]
    groups: list[int]
    names: list[str]
    bad: list[SkippedFile]
    upscaled: int = 0
    filled: int = 0


def decode_files(
    items: list[Item], *, job: Job, skip_bad: bool, stop: threading.Event | None = None
) -> DecodedFiles | None:
    """Load ``items`` (files relative to ``job.root``, or through ``job.read``) and hash their
    groups.

    A bad file raises its :class:`ImageLoadError` (named relative to the root), or with
    ``skip_bad`` is listed in :attr:`DecodedFiles.bad` instead. ``None`` when ``stop`` was set
    before the last file.
    """
    out = DecodedFiles([], [], [], [], [])
    read = job.reader()
    for item in items:
        if stop is not None and stop.is_set():
            return None
        result = _load(read, item)
        if isinstance(result, ImageLoadError):
            if not skip_bad:
                raise result
            out.bad.append(_skipped(item, result.problem))
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


@contextmanager
def torch_threads(count: int) -> Iterator[None]:
    """Run torch's CPU operators with ``count`` intra-op threads inside the block.

    torch's setting is process-wide; it is restored on leaving the block.
    """
    before = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)


#: Files that one worker decodes and obfuscates as one task: small enough that every worker
#: stays busy up to the end of a shard and that few images are in flight, large enough for
#: efficient batched products.
FILES_PER_TASK = 64


@dataclass(frozen=True)
class LocalEngine:
    """Obfuscate on this machine with ``workers`` threads.

    Each thread decodes a task of files and obfuscates them with torch on one intra-op thread,
    so decoding and the transform overlap across threads, and the store is written (by the
    caller's thread) while the workers go on. One torch thread per worker matters on a busy
    machine: torch's batched LAPACK calls on small matrices slow down tens of times when their
    threads compete with other processes for the cores. A pinned ``noise_seed`` draws its noise
    in file order, so it runs one worker.
    """

    workers: int = 2
    batch_size: int = 256
    device: str = "auto"

    def parts(self, job: Job) -> Iterator[ShardPart]:
        obfuscator = Obfuscator(job.key, noise_seed=job.noise_seed)
        device = resolve_device(self.device)
        lanes = 1 if obfuscator.noise.pinned else self.workers
        tasks = [
            (shard, shard.items[lo : lo + FILES_PER_TASK], lo + FILES_PER_TASK >= len(shard.items))
            for shard in job.shards
            for lo in range(0, len(shard.items), FILES_PER_TASK)
        ]

        # A task that fails (a PACS that stays down) stops the others before their next file:
        # the run ends now instead of after every queued task has retried on its own.
        stop = threading.Event()

        def run(shard: ShardTask, items: list[Item], last: bool) -> ShardPart | None:
            if stop.is_set():
                return None
            try:
                decoded = decode_files(items, job=job, skip_bad=job.skip_bad, stop=stop)
            except BaseException:
                stop.set()
                raise
            if decoded is None:
                return None
            images = transform_arrays(
                obfuscator, decoded.arrays, batch_size=self.batch_size, device=device
            )
            return ShardPart(
                split=shard.split, shard=shard.index, files=len(items), images=images,
                labels=decoded.labels, groups=decoded.groups, names=decoded.names,
                bad=decoded.bad, upscaled=decoded.upscaled, filled=decoded.filled, last=last,
            )

        if job.read is not None:
            # A DICOMweb source: one request after another, in file order, and none after the
            # one that failed, so that a server in trouble is not pressed further and a rerun
            # resumes exactly where the run stopped.
            with torch_threads(1):
                for task in tasks:
                    part = run(*task)
                    if part is not None:
                        yield part
            return
        pending = iter(tasks)
        window: deque[Future[ShardPart]] = deque()
        with torch_threads(1), ThreadPoolExecutor(lanes, thread_name_prefix="medveil") as pool:
            try:
                # Two tasks per worker in flight: the next is ready when one is handed over.
                for task in itertools.islice(pending, 2 * lanes):
                    window.append(pool.submit(run, *task))
                while window:
                    part = window.popleft().result()
                    if part is None:  # stopped because another task failed
                        continue
                    task = next(pending, None)
                    if task is not None:
                        window.append(pool.submit(run, *task))
                    yield part
            finally:
                stop.set()
                for future in window:
                    future.cancel()


def _source(
    source: str | Path, labels: str | Path | None, options: LoadOptions, retry: RetryPolicy | None
) -> tuple[DatasetIndex, Reader, DicomWebSource | None]:
    """The index of a folder or DICOMweb source, how to read one of its items, and the
    DICOMweb connection to close after the run (``None`` for a folder)."""
    if not is_dicomweb_url(source):
        index = scan_labels(source, labels) if labels is not None else scan_dataset(source)
        return index, lambda item: load_file(index.root / item.path, options=options), None
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
            keep_names=keep_names, noise_seed=noise_seed, read=None if pacs is None else read,
        )
        skipped = _write_shards(writer, index, job, engine, records, progress)
        report = None
        if skipped or any(r.skipped for rs in records.values() for r in rs):
            report = _write_skipped_report(writer, skipped, records)
        images = {split: sum(r.count for r in rs) for split, rs in records.items()}
        if sum(images.values()) == 0:
            where = index.url if isinstance(index, DicomWebIndex) else index.root
            raise StoreError(f"{where}: no image could be loaded (all {unit} were bad)")
        distinct = _finalize(writer, index, key, records, keep_names=keep_names, options=options)

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


def _write_shards(
    writer: StoreWriter,
    index: DatasetIndex,
    job: Job,
    engine: Engine,
    records: dict[str, list[ShardRecord]],
    progress: Progress | None,
) -> list[SkippedFile]:
    """Write each shard as the engine's parts complete it; the bad files skipped.

    A shard is written by a thread of its own while the next one's parts arrive (writes fsync,
    and a disk is slower than the transform); the previous write is waited for, and reported
    to ``progress``, before the next one starts.
    """
    skipped: list[SkippedFile] = []
    parts: list[ShardPart] = []
    writing: tuple[Future[ShardRecord], list[ShardPart]] | None = None

    def done(write: Future[ShardRecord], written: list[ShardPart]) -> None:
        record = write.result()
        records.setdefault(record.split, []).append(record)
        skipped.extend(bad for p in written for bad in p.bad)
        if progress:
            progress(sum(p.files for p in written))

    with (
        ThreadPoolExecutor(1, thread_name_prefix="medveil-write") as pool,
        closing(engine.parts(job)) as stream,
    ):
        for part in stream:
            if part.bad and not job.skip_bad:
                raise ImageLoadError(part.bad[0].path, part.bad[0].problem)
            parts.append(part)
            if not part.last:
                continue
            if writing is not None:
                done(*writing)
            writing = (pool.submit(_write_shard, writer, index, job, parts), parts)
            parts = []
            if job.read is not None:  # a DICOMweb source: written before the next is fetched
                done(*writing)
                writing = None
        if writing is not None:
            done(*writing)
    return skipped


def _write_shard(
    writer: StoreWriter, index: DatasetIndex, job: Job, parts: list[ShardPart]
) -> ShardRecord:
    return writer.write_shard(
        split=parts[0].split,
        index=parts[0].shard,
        images=np.concatenate([p.images for p in parts]),
        labels=np.asarray([x for p in parts for x in p.labels], np.int64),
        classes=index.classes,
        skipped=sum(len(p.bad) for p in parts),
        names=[x for p in parts for x in p.names] if job.keep_names else None,
        upscaled=sum(p.upscaled for p in parts),
        groups=np.asarray([x for p in parts for x in p.groups], np.int64),
        filled=sum(p.filled for p in parts),
    )


def _write_skipped_report(
    writer: StoreWriter, skipped: list[SkippedFile], records: dict[str, list[ShardRecord]]
) -> Path:
    output = writer.root
    report = output.with_name(output.name + ".skipped.json")
    resumed_skips = sum(r.skipped for rs in records.values() for r in rs) - len(skipped)
    writer.write_json(
        report,
        {
            "store": display_path(output.name),
            "skipped": [s.to_dict() for s in skipped],
            "skipped_in_resumed_shards": resumed_skips,
        },
    )
    return report


def _sizes_and_digests(
    root: Path, entry: dict[str, object], record: ShardRecord
) -> tuple[dict[str, int], dict[str, str]]:
    """The shard's recorded sizes and SHA-256s; read back from disk if its done mark (written
    by an older medveil) lacks them."""
    roles = [role for role in ("images", "labels", "groups", "names") if role in entry]
    if all(role in record.sha256 and role in record.bytes for role in roles):
        return {r: record.bytes[r] for r in roles}, {r: record.sha256[r] for r in roles}
    sizes, digests = {}, {}
    for role in roles:
        data = (root / str(entry[role])).read_bytes()
        sizes[role], digests[role] = len(data), hashlib.sha256(data).hexdigest()
    return sizes, digests


def _finalize(
    writer: StoreWriter,
    index: DatasetIndex,
    key: Key,
    records: dict[str, list[ShardRecord]],
    *,
    keep_names: bool,
    options: LoadOptions,
) -> int:
    """Write the manifest; the number of distinct groups over all splits."""
    splits = {}
    everyone: set[int] = set()
    for split, recs in records.items():
        recs = sorted(recs, key=lambda r: r.index)
        per_class = {c: sum(r.per_class[c] for r in recs) for c in index.classes}
        shards = []
        for r in recs:
            stem = f"{r.index:05d}"
            entry: dict[str, object] = {
                "images": f"{split}/images-{stem}.npy",
                "labels": f"{split}/labels-{stem}.npy",
                "count": r.count,
            }
            if (writer.root / split / f"groups-{stem}.npy").is_file():
                entry["groups"] = f"{split}/groups-{stem}.npy"
            if keep_names:
                entry["names"] = f"{split}/names-{stem}.json"
            entry["bytes"], entry["sha256"] = _sizes_and_digests(writer.root, entry, r)
            shards.append(entry)
        split_groups: set[int] = set()
        for entry in shards:
            if "groups" in entry:
                split_groups.update(np.load(writer.root / str(entry["groups"])).tolist())
        everyone |= split_groups
        splits[split] = {
            "count": sum(r.count for r in recs),
            "per_class": per_class,
            "skipped": sum(r.skipped for r in recs),
            "upscaled": sum(r.upscaled for r in recs),
            "filled": sum(r.filled for r in recs),
            "groups": len(split_groups),
            "shards": shards,
        }
    writer.finalize(
        {
            "format": STORE_FORMAT,
            "format_version": STORE_VERSION,
            "medveil_version": medveil.__version__,
            "created": datetime.now(UTC).isoformat(timespec="seconds"),
            "preset": str(key.params.preset),
            "params": key.params.to_dict(),
            "key_fingerprint": key.fingerprint,
            "classes": list(index.classes),
            "shape": list(key.params.out_shape),
            "dtype": "float32",
            "layout": index.layout,
            "load": asdict(options),
            "keep_names": keep_names,
            "groups": _GROUP_SCHEME,
            "splits": splits,
        }
    )
    return len(everyone)
