"""Obfuscation on this machine: :class:`LocalEngine` decodes and obfuscates with threads."""

from __future__ import annotations

import itertools
import threading
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass

import torch

from medveil.engine import (
    FILES_PER_TASK,
    Job,
    ShardPart,
    ShardTask,
    decode_files,
    transform_arrays,
)
from medveil.layout import Item
from medveil.machine import load_cuda_linalg, resolve_device
from medveil.obfuscator import Obfuscator

__all__ = ["LocalEngine", "torch_threads"]



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
        load_cuda_linalg(device)  # before the worker threads: its first loading is not thread-safe
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
