"""Generation speed of the embedded synthetic datasets.

Usage::

    .venv/bin/python benchmarks/synthetic_throughput.py [--per-class 128] [--size 224]

Times ``medveil.synthetic.make_dataset`` (rendering only, no file writing) for each dataset,
after one warm-up call, and prints images per second with the machine description.
"""

from __future__ import annotations

import argparse
import json
import time

from medveil.machine import describe
from medveil.synthetic import DATASETS, make_dataset


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--per-class", type=int, default=128)
    parser.add_argument("--size", type=int, default=224)
    args = parser.parse_args()
    report: dict[str, object] = {"machine": describe(), "size": args.size}
    for name in DATASETS:
        make_dataset(name, per_class=2, size=args.size, seed=1)
        start = time.perf_counter()
        images, _ = make_dataset(name, per_class=args.per_class, size=args.size, seed=0)
        seconds = time.perf_counter() - start
        report[name] = {
            "images": len(images),
            "seconds": seconds,
            "images_per_second": len(images) / seconds,
        }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
