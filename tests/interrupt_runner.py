"""Run the medveil command line in a child process, with a deterministic point of interruption.

Used by ``tests/test_interruptions.py`` (not a test module itself). Usage::

    python tests/interrupt_runner.py HOOK ARG -- MEDVEIL ARGUMENTS...

HOOK is one of

``none``
    run the command as it is;
``kill-train`` ``EPOCH:STEP``
    SIGKILL the process itself right after training step STEP of epoch EPOCH (mid-epoch: the
    checkpoint of epoch EPOCH - 1 is on disk, the epoch in progress is lost);
``kill-study`` ``TEXT``
    SIGKILL the process itself when the study reports a progress message containing TEXT;
``pause-obfuscate`` ``FOLDER``
    once the store is open (its lock taken) and before the first shard, create
    ``FOLDER/ready`` and wait until ``FOLDER/go`` exists.

``--fixed-noise`` (before ``--``) keys every noise generator with the same number, so that two
runs draw the same noise and their results can be compared exactly; the keys stay random.
SIGKILL, not an exception: nothing in the process gets to clean up, as after a crash or the
OOM killer.
"""

from __future__ import annotations

import os
import signal
import sys
import time
import types
from pathlib import Path

import torch

FIXED_NOISE_KEY = 20240517


def fix_noise() -> None:
    """Every noise generator gets the same 128-bit key (tests only: outputs become comparable)."""
    import medveil.stages

    medveil.stages.secrets = types.SimpleNamespace(  # type: ignore[attr-defined]
        randbits=lambda bits: FIXED_NOISE_KEY
    )


def _kill() -> None:
    sys.stdout.flush()
    sys.stderr.flush()
    os.kill(os.getpid(), signal.SIGKILL)


def _hook_train(target: str) -> None:
    import medveil.cli.training

    epoch, step = (int(v) for v in target.split(":"))
    original = medveil.cli.training._train_progress

    def progress(bar, task, name):  # type: ignore[no-untyped-def]
        update = original(bar, task, name)

        def hook(event):  # type: ignore[no-untyped-def]
            update(event)
            if event.kind == "step" and (event.epoch, event.step) == (epoch, step):
                _kill()

        return hook

    medveil.cli.training._train_progress = progress


def _hook_study(text: str) -> None:
    import medveil.study

    original = medveil.study.run_study

    def run_study(config, *, progress=None, **kwargs):  # type: ignore[no-untyped-def]
        def hook(message: str) -> None:
            if progress is not None:
                progress(message)
            if text in message:
                _kill()

        return original(config, progress=hook, **kwargs)

    medveil.study.run_study = run_study


def _hook_obfuscate(folder: str) -> None:
    import medveil.obfuscate

    original = medveil.obfuscate.obfuscate_dataset

    def obfuscate_dataset(source, *, on_start=None, **kwargs):  # type: ignore[no-untyped-def]
        def hook(total: int) -> None:
            if on_start is not None:
                on_start(total)
            Path(folder, "ready").touch()
            while not Path(folder, "go").exists():
                time.sleep(0.02)

        return original(source, on_start=hook, **kwargs)

    medveil.obfuscate.obfuscate_dataset = obfuscate_dataset


def main(argv: list[str]) -> None:
    split = argv.index("--")
    options, command = argv[:split], argv[split + 1 :]
    hook, argument = options[0], options[1] if len(options) > 1 else ""
    # The same thread count as the test process (tests/conftest.py): results must match bit for
    # bit across the two, and a different count changes the order of float reductions.
    torch.set_num_threads(1)
    if "--fixed-noise" in options:
        fix_noise()
    hooks = {
        "none": lambda _: None,
        "kill-train": _hook_train,
        "kill-study": _hook_study,
        "pause-obfuscate": _hook_obfuscate,
    }
    hooks[hook](argument)
    from medveil.cli import app

    app(command, prog_name="medveil")


if __name__ == "__main__":
    main(sys.argv[1:])
