"""One scaling table from the two scaling benchmarks' JSON results.

Usage::

    .venv/bin/python benchmarks/scaling_table.py [--obfuscation benchmarks/results/obfuscation_throughput-cpu.json]
        [--training benchmarks/results/ddp_scaling-cpu.json]

``make scaling`` runs ``obfuscation_throughput.py`` (the ``medveil obfuscate`` command on the
3,000-JPEG folder with the local and Ray engines at 1 and 2 workers) and ``ddp_scaling.py``
(``torchrun`` training on 1 and 2 processes), then this script, which prints the rows of both
as one Markdown table with the machine each ran on.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def rows(obfuscation: dict, training: dict) -> list[str]:
    """Markdown rows: what ran, how many workers, its throughput, wall time and a quality note."""
    out = []
    for name, run in sorted(obfuscation.get("cli", {}).items()):
        engine, workers = name.rsplit("_", 1)
        out.append(
            f"| `medveil obfuscate`, {run['images']:,} JPEGs | {engine} engine | {workers} "
            f"worker(s) | {run['images_per_second']:.0f} images/s | {run['seconds']:.1f} s | "
            f"peak RSS {run['peak_rss_mib']:,.0f} MiB |"
        )
    for run in training.get("runs", []):
        processes, threads = run["processes"], run["threads_per_process"]
        kind = "DDP (gloo)" if processes > 1 else "one process"
        out.append(
            f"| `torchrun ... medveil train`, {run['train_images']} images x {run['epochs']} "
            f"epochs | {kind} | {processes} process(es) x {threads} thread(s) | "
            f"{run['images_per_second']:.0f} images/s | {run['wall_seconds']:.1f} s | "
            f"test accuracy {run['test_accuracy']:.3f} (n = {run['test_count']}) |"
        )
    return out


def table(obfuscation: dict, training: dict) -> str:
    machines = sorted({obfuscation.get("machine", "?"), training.get("machine", "?")})
    lines = [
        f"Machine: {'; '.join(machines)}.",
        "",
        "| what | engine | workers | throughput | wall | note |",
        "| --- | --- | --- | ---: | ---: | --- |",
        *rows(obfuscation, training),
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--obfuscation", type=Path, default=RESULTS / "obfuscation_throughput-cpu.json"
    )
    parser.add_argument("--training", type=Path, default=RESULTS / "ddp_scaling-cpu.json")
    args = parser.parse_args()
    print(table(json.loads(args.obfuscation.read_text()), json.loads(args.training.read_text())))


if __name__ == "__main__":
    main()
