"""Writing an obfuscation run's store from the parts an engine yields: each shard as its last
part arrives, the skipped-file report beside the store, and the manifest that completes it."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import closing
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

import medveil
from medveil.engine import Engine, Job, ShardPart, SkippedFile
from medveil.errors import ImageLoadError
from medveil.groups import GROUP_SCHEME
from medveil.keys import Key
from medveil.layout import DatasetIndex, display_path
from medveil.loading import LoadOptions
from medveil.store import STORE_FORMAT, STORE_VERSION, ShardRecord, StoreWriter

__all__ = ["Progress", "write_manifest", "write_shards", "write_skipped_report"]

#: Called with the number of files of each shard once it is written (or found written).
Progress = Callable[[int], None]


def write_shards(
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


def write_skipped_report(
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


def write_manifest(
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
            "groups": GROUP_SCHEME,
            "splits": splits,
        }
    )
    return len(everyone)
