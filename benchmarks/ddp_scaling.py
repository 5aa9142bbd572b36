"""Training on 1 and 2 processes (DistributedDataParallel, gloo on the CPU): images/s and accuracy.

Usage::

    .venv/bin/python benchmarks/ddp_scaling.py [--data FOLDER_OR_STORE] [--runs 1x1,1x2,2x1]
        [--epochs 4] [--batch-size 32] [--input-size 64] [--device cpu] [--json PATH]

Each run ``PxT`` is ``torchrun --standalone --nproc-per-node P -m medveil train DATA ...`` with
``OMP_NUM_THREADS=T`` (T intra-op threads per process), exactly as a user starts it; one
process runs alone, without DDP. The default compares two processes of one thread with one
process of one and of two threads, on a two-core machine. Without ``--data`` the script
writes the embedded SYNTHETIC brain-MRI set (``--per-class`` images per class at
``--input-size``, 20% held out for testing) under ``benchmarks/out/ddp-data``. Reported per
run: training images per second (training examples x epochs over the summed epoch times of
``history.csv``, validation included, start-up and data loading excluded), the launch-to-exit
wall time, the best validation accuracy and the accuracy of the selected weights on the test
split (``medveil.training.evaluate``, one process). Prints JSON (also written to ``--json``),
then a Markdown table.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from medveil.machine import describe
from medveil.synthetic.write import write_dataset
from medveil.training import evaluate

OUT = Path(__file__).resolve().parent / "out"


def run_once(
    processes: int, threads: int, data: Path, run_dir: Path, args: argparse.Namespace
) -> dict:
    """Train on ``processes`` processes of ``threads`` threads; the run's speed and accuracy."""
    shutil.rmtree(run_dir, ignore_errors=True)
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone",
        "--nproc-per-node", str(processes), "-m", "medveil", "train", str(data),
        "-o", str(run_dir), "--model", args.model, "--epochs", str(args.epochs),
        "--batch-size", str(args.batch_size), "--input-size", str(args.input_size),
        "--device", args.device, "--seed", str(args.seed), "--patience", "0",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    start = time.perf_counter()
    subprocess.run(command, check=True, env=env, stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - start
    info = json.loads((run_dir / "run.json").read_text())
    with open(run_dir / "history.csv") as file:
        seconds = sum(float(row["seconds"]) for row in csv.DictReader(file))
    test = evaluate(run_dir, data, device=args.device)
    return {
        "processes": processes,
        "threads_per_process": threads,
        "train_images": info["splits"]["train"],
        "epochs": info["epochs_run"],
        "images_per_second": info["splits"]["train"] * info["epochs_run"] / seconds,
        "wall_seconds": wall,
        "val_accuracy": info["val_accuracy"],
        "test_accuracy": test.accuracy,
        "test_count": test.count,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", type=Path, help="Store or image folder (default: synthetic).")
    parser.add_argument("--per-class", type=int, default=150)
    parser.add_argument("--runs", default="1x1,1x2,2x1", help="PROCESSESxTHREADS, ...")
    parser.add_argument("--model", default="smallcnn")
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--input-size", type=int, default=64)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, help="Also write the JSON report here.")
    args = parser.parse_args()
    data, described = args.data, str(args.data)
    if data is None:
        data = OUT / "ddp-data"
        described = (
            f"SYNTHETIC brain-mri, {args.per_class} per class, {args.input_size} px, seed "
            f"{args.seed}, 20% test (benchmarks/out/ddp-data)"
        )
        write_dataset(
            "brain-mri", data, per_class=args.per_class, size=args.input_size, seed=args.seed,
            test_fraction=0.2,
        )
    runs = []
    for spec in args.runs.split(","):
        processes, threads = (int(v) for v in spec.split("x"))
        runs.append(run_once(processes, threads, data, OUT / f"ddp-run-{spec}", args))
    report = json.dumps({"machine": describe(), "data": described, "runs": runs}, indent=2)
    print(report)
    if args.json is not None:
        args.json.write_text(report + "\n")
    print(
        "\n| processes | threads each | train images/s | wall (s) | val accuracy "
        "| test accuracy |\n| ---: | ---: | ---: | ---: | ---: | ---: |"
    )
    for run in runs:
        print(
            f"| {run['processes']} | {run['threads_per_process']} | "
            f"{run['images_per_second']:.0f} | {run['wall_seconds']:.1f} | "
            f"{run['val_accuracy']:.3f} | {run['test_accuracy']:.3f} (n = {run['test_count']}) |"
        )


if __name__ == "__main__":
    main()
