"""Privacy benchmark: the whole attack suite against several schemes on one dataset.

Usage::

    .venv/bin/python benchmarks/privacy.py DATASET_DIR [--size 224] [--rank 32]
        [--victims 200] [--public 1000] [--pairs 100,1000] [--decoder-seconds 120]
        [--mda-steps 100] [--schemes svd,multistage,multistage-right] [--attacks all]
        [--out DIR]

Schemes are the names in ``common.SCHEMES`` or ``multistage-b<bits>-eta<noise>-k<rank>``
(any subset of the options). For each scheme a fresh key is drawn and calibrated on the public
images only; victims, known pairs and public images are disjoint (drawn by
``medveil.privacy.select_images``; with ``--distinct-groups`` no near-duplicate group is in two
of them). Writes, per scheme, the full results folder (``summary.csv``, ``per_image.csv``,
``examples.png``) under ``--out``, keeps its scores in the committed ledger
(``benchmarks/results/privacy/<dataset>/<settings>/<scheme>-seed<seed>.json``; a scheme scored
there is reused unless ``--rerun``, and ``--collect`` reads only the ledger) and prints the scores as Markdown (``medveil.attacks.PrivacySummary``, one row per
scheme, attack, threat model and pairs count; also saved as ``privacy-<dataset>.md`` in
``--out``).
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from pathlib import Path

import pandas as pd
from common import (
    dataset_name,
    duplicate_groups,
    groups_by_path,
    ledger_path,
    record,
    scheme_params,
)

from medveil.attacks import PrivacySummary
from medveil.calibration import calibrate
from medveil.keys import generate_key
from medveil.machine import describe
from medveil.privacy import PrivacyConfig, run_privacy, select_images


def peak_rss_gib() -> float:
    """Peak resident memory of this process so far (``ru_maxrss``: KiB on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (2**30 if sys.platform == "darwin" else 2**20)


def privacy_settings(args: argparse.Namespace) -> str:
    """The settings that change a scheme's scores, as the ledger's folder name."""
    return (
        f"size{args.size}-rank{args.rank}-victims{args.victims}-public{args.public}"
        f"-pairs{args.pairs.replace(',', '+')}-decoder{args.decoder_steps}x{args.decoder_seconds:g}"
        f"-mda{args.mda_steps}-{args.threats.replace(',', '+')}-{args.attacks.replace(',', '+')}"
        + (f"-distinct{args.group_distance}" if args.distinct_groups else "")
    )


def build_parser() -> argparse.ArgumentParser:
    """The command line (also read by frontier.py, which runs this script)."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("dataset", type=Path)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--rank", type=int, default=32)
    parser.add_argument("--victims", type=int, default=200)
    parser.add_argument("--public", type=int, default=1000)
    parser.add_argument("--pairs", default="100,1000")
    parser.add_argument("--decoder-steps", type=int, default=2000)
    parser.add_argument("--decoder-seconds", type=float, default=120.0)
    parser.add_argument("--mda-steps", type=int, default=100)
    parser.add_argument("--schemes", default="svd,multistage,multistage-right")
    parser.add_argument("--attacks", default="all", help="comma-separated attack names or 'all'")
    parser.add_argument("--threats", default="A1,A2,A3", help="comma-separated threat models")
    parser.add_argument(
        "--collect",
        action="store_true",
        help="only rebuild the table from the schemes already saved under --out",
    )
    parser.add_argument(
        "--rerun", action="store_true",
        help="attack again the schemes whose results are already saved under --out (default: "
        "reuse them, so that an interrupted benchmark resumes)",
    )
    parser.add_argument(
        "--distinct-groups", action="store_true",
        help="keep near-duplicate groups (perceptual hashes within --group-distance bits) out "
        "of more than one of the victim, pair and public sets",
    )
    parser.add_argument("--group-distance", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/out/privacy"))
    return parser


def main() -> None:
    args = build_parser().parse_args()
    pairs = tuple(int(p) for p in args.pairs.split(","))
    config = PrivacyConfig(
        victims=args.victims,
        public=args.public,
        pairs=pairs,
        decoder_steps=args.decoder_steps,
        decoder_seconds=args.decoder_seconds,
        mda_steps=args.mda_steps,
        attacks=tuple(args.attacks.split(",")),
        threats=tuple(args.threats.split(",")),
        seed=args.seed,
    )
    frames = []
    started = time.perf_counter()
    settings = privacy_settings(args)
    name = dataset_name(args.dataset)
    if args.collect:
        for scheme in args.schemes.split(","):
            kept = ledger_path("privacy", name, settings, f"{scheme}-seed{args.seed}")
            if kept.is_file():
                frames.append(pd.DataFrame(json.loads(kept.read_text())["rows"]))
    else:
        # The public images (never victims or pairs) calibrate every key, as a custodian would
        # calibrate on its own data; the selection is the same one run_privacy draws.
        groups = None
        if args.distinct_groups:
            groups = groups_by_path(args.dataset, duplicate_groups(
                args.dataset, size=args.size, distance=args.group_distance,
            ))
        sets = select_images(
            args.dataset,
            size=args.size,
            victims=args.victims,
            pairs=max(pairs),
            public=args.public,
            seed=args.seed,
            groups=groups,
        )
        for scheme in args.schemes.split(","):
            out = args.out / dataset_name(args.dataset) / scheme
            kept = ledger_path("privacy", name, settings, f"{scheme}-seed{args.seed}")
            if kept.is_file() and not args.rerun:
                print(f"== {scheme}: reusing the scored results in {kept}", flush=True)
                frames.append(pd.DataFrame(json.loads(kept.read_text())["rows"]))
                continue
            params = {"size": args.size, "rank": args.rank, **scheme_params(scheme)}
            key = calibrate(generate_key(**params), sets.public)
            print(
                f"== {scheme}: key {key.fingerprint} {json.dumps(key.params.to_dict())}", flush=True
            )
            report = run_privacy(
                args.dataset,
                key=key,
                config=config,
                output=out,
                groups=groups,
                progress=lambda message: print(
                    f"   {message} [peak RSS so far {peak_rss_gib():.2f} GiB]", flush=True
                ),
            )
            print(f"   done [peak RSS so far {peak_rss_gib():.2f} GiB]", flush=True)
            frame = report.summary().to_frame()
            frame.insert(0, "scheme", scheme)
            frames.append(frame)
            record(kept, {
                "seed": args.seed, "key_fingerprint": key.fingerprint, "machine": describe(),
                "rows": json.loads(frame.to_json(orient="records")),
            })
    table = pd.concat(frames, ignore_index=True)
    header = (
        f"Command: `python benchmarks/privacy.py {args.dataset} --size {args.size} --rank "
        f"{args.rank} --victims {args.victims} --public {args.public} --pairs {args.pairs} "
        f"--decoder-steps {args.decoder_steps} --decoder-seconds {args.decoder_seconds:g} "
        f"--mda-steps {args.mda_steps} --schemes {args.schemes} --attacks {args.attacks} "
        f"--threats {args.threats}"
        + (f" --distinct-groups --group-distance {args.group_distance}" if args.distinct_groups
           else "")
        + " "
        f"--seed {args.seed}`  \n"
        f"Machine: {describe()}"
        + (
            " (table collected from saved results)"
            if args.collect
            else f"; total {time.perf_counter() - started:.0f} s"
        )
        + ".\n\n"
    )
    text = header + PrivacySummary.from_frame(table, groups=("scheme",)).to_markdown() + "\n"
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"privacy-{name}.md").write_text(text)
    table.to_csv(args.out / f"privacy-{name}.csv", index=False)
    print(text)


if __name__ == "__main__":
    main()
