"""Utility benchmark: the same classifiers on plaintext and on obfuscated images.

Usage::

    .venv/bin/python benchmarks/utility.py DATASET_DIR [--schemes plaintext,svd,multistage]
        [--models smallcnn,resnet50,mobilenetv2,inceptionv3] [--size 224] [--rank 32]
        [--input-size 64] [--epochs 8] [--batch-size 32] [--lr 1e-3] [--augment none] [--seed 0]
        [--out benchmarks/out/utility]

For every scheme a fresh key is drawn (kept in memory only) and calibrated on up to 512 images
of the dataset; the dataset is obfuscated into a store; each model is trained on the plaintext
folder or the store with the same seed, the same stratified split (20% test, 15% of the rest for
validation, when the data has no Testing/ folder) and the same budget, then evaluated on the
held-out test split. Prints a Markdown table (also saved as ``utility-<dataset>.md`` in --out).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import pandas as pd
from common import SCHEMES, dataset_name

from medveil.calibration import load_calibration_images
from medveil.errors import StoreError
from medveil.keys import generate_key
from medveil.loading import LoadOptions
from medveil.machine import describe
from medveil.obfuscate import obfuscate_dataset
from medveil.store import ObfuscatedStore
from medveil.training import TrainConfig, evaluate, train


def _complete_store(path: Path, scheme: str, size: int, rank: int) -> bool:
    try:
        params = ObfuscatedStore(path).manifest["params"]
    except StoreError:
        return False
    wanted = {"size": size, "rank": rank, **SCHEMES[scheme]}
    return all(params.get(name) == value for name, value in wanted.items())


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("dataset", type=Path)
    parser.add_argument("--schemes", default="plaintext,svd,multistage")
    parser.add_argument("--models", default="smallcnn")
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--rank", type=int, default=32)
    parser.add_argument("--input-size", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--augment", default="none", help="none, flip or flip-shift")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/out/utility"))
    args = parser.parse_args()
    name = dataset_name(args.dataset)
    rows = []
    started = time.perf_counter()
    for scheme in args.schemes.split(","):
        data = args.dataset if scheme == "plaintext" else args.out / "stores" / name / scheme
        if scheme != "plaintext" and _complete_store(data, scheme, args.size, args.rank):
            # Keys live in memory only; a complete store is reused so that interrupted
            # training runs (trained on that store) can resume in a later session.
            print(f"== {scheme}: reusing the complete store {data}", flush=True)
        elif scheme != "plaintext":
            key = generate_key(size=args.size, rank=args.rank, **SCHEMES[scheme])
            key.calibrate(
                load_calibration_images(
                    args.dataset, count=512, options=LoadOptions(size=args.size), seed=args.seed
                )
            )
            result = obfuscate_dataset(args.dataset, key=key, output=data, overwrite=True)
            print(f"== {scheme}: {result.summary()}", flush=True)
        for model in args.models.split(","):
            config = TrainConfig(
                model=model,
                epochs=args.epochs,
                batch_size=args.batch_size,
                lr=args.lr,
                input_size=args.input_size,
                seed=args.seed,
                device=args.device,
                patience=None,
                augment=args.augment,
            )
            run_dir = args.out / "runs" / name / scheme / model
            resume = (run_dir / "last.pt").is_file()
            trained = train(data, config=config, run_dir=run_dir, resume=resume)
            scored = evaluate(run_dir, data, device=args.device)
            print(f"   {scheme} {model}: {trained.summary()}; test {scored.summary()}", flush=True)
            rows.append(
                {
                    "scheme": scheme,
                    "model": model,
                    "input_size": args.input_size,
                    "epochs": trained.epochs_run,
                    "test_images": scored.count,
                    "accuracy": scored.accuracy,
                    "macro_f1": scored.macro_f1,
                    "macro_auc": scored.macro_auc,
                    "train_seconds": trained.wall_time_s,
                }
            )
    table = pd.DataFrame(rows)
    header = (
        f"Command: `python benchmarks/utility.py {args.dataset} --schemes {args.schemes} "
        f"--models {args.models} --size {args.size} --rank {args.rank} --input-size "
        f"{args.input_size} --epochs {args.epochs} --batch-size {args.batch_size} --lr {args.lr:g} "
        f"--augment {args.augment} --seed {args.seed}`  \n"
        f"Machine: {describe()}; total {time.perf_counter() - started:.0f} s.\n\n"
        "| scheme | model | input | epochs | test images | accuracy | macro-F1 | macro AUC | "
        "train s |\n|---|---|---|---|---|---|---|---|---|\n"
    )
    lines = [
        f"| {r['scheme']} | {r['model']} | {r['input_size']} | {r['epochs']} | {r['test_images']} "
        f"| {r['accuracy']:.3f} | {r['macro_f1']:.3f} | {r['macro_auc']:.3f} | "
        f"{r['train_seconds']:.0f} |"
        for r in rows
    ]
    text = header + "\n".join(lines) + "\n"
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"utility-{name}.md").write_text(text)
    table.to_csv(args.out / f"utility-{name}.csv", index=False)
    print(text)


if __name__ == "__main__":
    main()
