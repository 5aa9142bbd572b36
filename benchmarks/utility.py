"""Utility benchmark: the same classifier on plaintext and obfuscated images, over several keys.

Usage::

    .venv/bin/python benchmarks/utility.py DATASET_DIR [--schemes plaintext,svd,multistage]
        [--models smallcnn] [--stems default] [--keys 3] [--size 224] [--rank 32]
        [--input-size 64] [--epochs 8] [--batch-size 32] [--lr 1e-3] [--augment none]
        [--group-distance 4] [--out benchmarks/out/utility]

Splits do not leak: near-duplicate groups (perceptual hashes within ``--group-distance`` bits,
:mod:`medveil.duplicates`) are kept on one side (20% test, 15% of the rest for validation), the
same split for every scheme, key and stem. For each of ``--keys`` repetitions ``i`` a fresh key is
drawn (in memory only), calibrated on 512 images, and the dataset obfuscated into a store; the
model is trained with seed ``i`` (plaintext too, so that its spread is comparable), with the
library's default recipe. ``--stems default`` uses the library's default stem for the data's kind;
a list (``linear,resize``) compares stems on obfuscated data.

``lowrank`` is a control, not a scheme: each image truncated to rank ``--rank`` at ``--size``
(``U_k S_k V_k^T``, written once as 8-bit PNGs under ``--out``) and trained as plaintext. It keeps
what the ``svd`` factor ``Z = U_k S_k`` discards, ``V_k``, so plaintext → ``lowrank`` is what the
truncation costs and ``lowrank`` → ``svd`` what discarding ``V_k`` costs.

After every epoch the run's current weights are scored on the test split (never used for any
choice): the table reports the selected epoch's test accuracy (what the run returns), and how far
it ends below the run's best epoch on test (the recipe's "regret").

Prints a Markdown table of mean ± sd over keys (also ``utility-<dataset>-stems-<stems>.md`` and
the per-run ``utility-<dataset>-stems-<stems>-runs.csv`` in ``--out``). Each scored run is kept in
the committed ledger, ``benchmarks/results/utility/<dataset>/<settings>/`` (one JSON per scheme,
key, model and stem; ``--first-key`` adds keys to a measured point); stores and run folders are
throwaway (``--out``). A scored run is never trained again, and an interrupted benchmark resumes.
"""

from __future__ import annotations

import argparse
import io
import json
import shutil
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from common import dataset_name, duplicate_groups, ledger_path, record, scheme_params
from PIL import Image

from medveil.atomic import atomic_write_bytes
from medveil.calibration import calibrate, load_calibration_images
from medveil.errors import StoreError
from medveil.keys import generate_key
from medveil.layout import scan_dataset
from medveil.loading import LoadOptions, load_image
from medveil.machine import describe
from medveil.obfuscate import obfuscate_dataset
from medveil.stages import truncated_svd
from medveil.store import ObfuscatedStore
from medveil.training import TrainConfig, evaluate, load_run, open_data, train
from medveil.training.stems import stem_alignment


def run_settings(args: argparse.Namespace) -> str:
    """The settings that change a run's result, as the ledger's folder name."""
    scale = args.stem_lr_scale
    return (
        f"size{args.size}-rank{args.rank}-in{args.input_size}-ep{args.epochs}-bs{args.batch_size}"
        f"-lr{args.lr:g}-{args.augment}-d{args.group_distance}"
        + ("" if scale == 1 else f"-slr{scale:g}")  # the default keeps its older folder name
    )


def store_folder(args: argparse.Namespace, name: str, scheme: str, rep: int) -> Path:
    """The throwaway store of one scheme and key (its matrices beside it, ``.matrices.npz``)."""
    return args.out / "stores" / name / f"size{args.size}-rank{args.rank}" / f"{scheme}-key{rep}"


def run_folder(args: argparse.Namespace, name: str, scheme: str, rep: int, model: str,
               stem: str) -> Path:
    """The throwaway run folder of one scheme, key, model and stem option."""
    return args.out / "runs" / name / run_settings(args) / f"{scheme}-key{rep}" / f"{model}-{stem}"


def _store(args: argparse.Namespace, scheme: str, rep: int, name: str) -> tuple[Path, object]:
    path = store_folder(args, name, scheme, rep)
    try:
        ObfuscatedStore(path)
        print(f"== {scheme} key {rep}: reusing the complete store {path}", flush=True)
        keyfile = path.with_name(path.name + ".matrices.npz")
        return path, (np.load(keyfile) if keyfile.is_file() else None)
    except StoreError:
        pass
    key = generate_key(**{"size": args.size, "rank": args.rank, **scheme_params(scheme)})
    key = calibrate(
        key,
        load_calibration_images(
            args.dataset, count=512, options=LoadOptions(size=args.size), seed=rep
        ),
    )
    result = obfuscate_dataset(args.dataset, key=key, output=path, overwrite=True)
    print(f"== {scheme} key {rep}: {result.summary()}", flush=True)
    # Only for the stem-alignment measurement: the derived matrices (not the secret), kept beside
    # the benchmark's throwaway store so that a resumed benchmark can still score alignment.
    matrices = {
        name: m for name, m in (("left", key.left_matrix()), ("right", key.right_matrix()))
        if m is not None
    }
    np.savez(path.with_name(path.name + ".matrices.npz"), **matrices)
    return path, matrices


#: Trained from image folders (no key, no store, the plaintext stem).
IMAGE_SCHEMES = ("plaintext", "lowrank")


def _lowrank(args: argparse.Namespace, name: str) -> Path:
    """The dataset's images truncated to rank ``args.rank`` (the ``lowrank`` control), as PNGs.

    Same class folders and file order as the dataset (``NAME.jpg`` becomes ``NAME.jpg.png``), so
    the near-duplicate groups and the split carry over.
    """
    folder = args.out / "lowrank" / f"{name}-size{args.size}-k{args.rank}"
    done = folder / ".complete"
    if done.is_file():
        return folder
    items = scan_dataset(args.dataset).splits["all"]
    for start in range(0, len(items), 256):
        batch = items[start : start + 256]
        images = torch.as_tensor(np.stack([
            load_image(args.dataset / item.path, options=LoadOptions(size=args.size))
            for item in batch
        ]))
        cut = truncated_svd(images, args.rank)
        low = (cut.factor @ cut.basis.transpose(-1, -2)).clamp(0, 1).numpy()
        for item, image in zip(batch, low, strict=True):
            target = folder / item.path.with_name(item.path.name + ".png")
            target.parent.mkdir(parents=True, exist_ok=True)
            buffer = io.BytesIO()
            Image.fromarray(np.round(image * 255).astype(np.uint8)).save(buffer, format="PNG")
            atomic_write_bytes(target, buffer.getvalue())
    written = [str(item.path) for item in scan_dataset(folder).splits["all"]]
    if written != [str(item.path.with_name(item.path.name + ".png")) for item in items]:
        raise SystemExit(f"{folder}: its files do not scan in the dataset's order")
    done.write_text("")
    return folder


def build_parser() -> argparse.ArgumentParser:
    """The command line (also read by frontier.py, which runs this script)."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("dataset", type=Path)
    parser.add_argument("--schemes", default="plaintext,svd,multistage")
    parser.add_argument("--models", default="smallcnn")
    parser.add_argument("--stems", default="default")
    parser.add_argument("--keys", type=int, default=3)
    parser.add_argument(
        "--first-key", type=int, default=0,
        help="number of the first repetition (its training seed): more keys for a measured point",
    )
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--rank", type=int, default=32)
    parser.add_argument("--input-size", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--augment", default="none", help="none, flip or flip-shift")
    parser.add_argument("--group-distance", type=int, default=4)
    parser.add_argument(
        "--stem-lr-scale", type=float, default=1.0,
        help="the stem's learning rate as a multiple of --lr (TrainConfig.stem_lr_scale)",
    )
    parser.add_argument("--device", default="auto")
    parser.add_argument(
        "--tag", default="", help="suffix of the output tables' names (runs are shared)"
    )
    parser.add_argument(
        "--drop-stores", action="store_true",
        help="delete each store once its runs are scored (about 1 GB each at 224 px)",
    )
    parser.add_argument("--out", type=Path, default=Path("benchmarks/out/utility"))
    return parser


def main() -> None:
    args = build_parser().parse_args()
    name = dataset_name(args.dataset)
    started = time.perf_counter()
    groups = duplicate_groups(
        args.dataset, size=args.size, distance=args.group_distance,
    )
    sizes = np.bincount(np.unique(groups, return_inverse=True)[1])
    print(
        f"{len(groups)} images in {len(sizes)} near-duplicate groups (largest {sizes.max()})",
        flush=True,
    )
    rows: list[dict] = []
    settings = run_settings(args)
    tag = f"{name}-stems-{args.stems.replace(',', '+')}" + (f"-{args.tag}" if args.tag else "")
    runs_csv = args.out / f"utility-{tag}-runs.csv"
    # Keys outermost: an interrupted benchmark has every scheme at its first keys.
    for rep in range(args.first_key, args.first_key + args.keys):
        for scheme in args.schemes.split(","):
            stems = ["default"] if scheme in IMAGE_SCHEMES else args.stems.split(",")
            combos = [(m, st) for m in args.models.split(",") for st in stems]
            kept = {
                (m, st): ledger_path("utility", name, settings, f"{scheme}-key{rep}-{m}-{st}")
                for m, st in combos
            }
            if all(path.is_file() for path in kept.values()):
                # Finished and scored: no store needed (it may have been dropped).
                rows.extend(json.loads(path.read_text()) for path in kept.values())
                print(f"== {scheme} key {rep}: reusing {len(kept)} scored runs", flush=True)
                continue
            if scheme == "plaintext":
                data, matrices = args.dataset, None
            elif scheme == "lowrank":
                data, matrices = _lowrank(args, name), None
            else:
                data, matrices = _store(args, scheme, rep, name)
            source = open_data(data, image_size=args.input_size)
            source = source.with_groups({"all": groups})
            for model, stem in combos:
                if kept[model, stem].is_file():  # scored before, perhaps on another machine
                    rows.append(json.loads(kept[model, stem].read_text()))
                    continue
                config = TrainConfig(
                    model=model, epochs=args.epochs, batch_size=args.batch_size,
                    lr=args.lr, input_size=args.input_size, seed=rep, device=args.device,
                    augment=args.augment, stem=None if stem == "default" else stem,
                    stem_lr_scale=args.stem_lr_scale,
                )
                run_dir = run_folder(args, name, scheme, rep, model, stem)
                per_epoch: list[float] = []

                def on_epoch(event, run_dir=run_dir, source=source, per_epoch=per_epoch):
                    if event.kind != "epoch":
                        return
                    per_epoch.append(
                        evaluate(run_dir, source, checkpoint="last", device=args.device).accuracy
                    )
                    print(
                        f"   epoch {event.epoch}: val acc {event.stats.val_acc:.3f}, "
                        f"test acc {per_epoch[-1]:.3f}", flush=True,
                    )

                if (run_dir / "run.json").is_file():
                    info = json.loads((run_dir / "run.json").read_text())
                    if info.get("status") == "complete" and (run_dir / "epochs.json").is_file():
                        per_epoch.extend(json.loads((run_dir / "epochs.json").read_text()))
                    else:
                        shutil.rmtree(run_dir)  # per-epoch test scores need a whole run
                if not per_epoch:
                    train(source, config=config, run_dir=run_dir, progress=on_epoch)
                    (run_dir / "epochs.json").write_text(json.dumps(per_epoch))
                info = json.loads((run_dir / "run.json").read_text())
                scored = evaluate(run_dir, source, device=args.device)
                row = {
                    "scheme": scheme, "model": model, "stem": info["stem"], "stem_option": stem,
                    "key": rep,
                    "test_images": scored.count, "accuracy": scored.accuracy,
                    "macro_f1": scored.macro_f1, "best_epoch": info["best_epoch"],
                    "epochs": info["epochs_run"], "best_test_epoch_acc": max(per_epoch),
                    "regret": max(per_epoch) - scored.accuracy,
                    "per_epoch_test": " ".join(f"{a:.3f}" for a in per_epoch),
                    "train_seconds": info["wall_time_s"], "settings": settings,
                    "machine": describe(),
                }
                if matrices is not None and info["stem"] != "resize":
                    align = stem_alignment(
                        load_run(run_dir).model.stem,
                        left=matrices.get("left"),
                        right=matrices.get("right"),
                    )
                    row.update({f"align_{k}": v for k, v in align.items()})
                rows.append(row)
                record(kept[model, stem], row)
                print(
                    f"   {scheme} key {rep} {model} stem {info['stem']}: test accuracy "
                    f"{scored.accuracy:.3f} (best epoch on test {max(per_epoch):.3f}; "
                    f"selected epoch {info['best_epoch']})", flush=True,
                )
                args.out.mkdir(parents=True, exist_ok=True)
                pd.DataFrame(rows).to_csv(runs_csv, index=False)
            if args.drop_stores and scheme not in IMAGE_SCHEMES:
                # Every run of this store is scored (in the ledger): the store is no longer needed.
                shutil.rmtree(data)
    table = pd.DataFrame(rows)
    summary = (
        table.groupby(["scheme", "model", "stem"], sort=False)
        .agg(
            keys=("key", "count"), acc_mean=("accuracy", "mean"), acc_sd=("accuracy", "std"),
            acc_min=("accuracy", "min"), regret_max=("regret", "max"),
            seconds=("train_seconds", "mean"),
        )
        .reset_index()
    )
    header = (
        f"Command: `python benchmarks/utility.py {args.dataset} --schemes {args.schemes} "
        f"--models {args.models} --stems {args.stems} --keys {args.keys} "
        f"--first-key {args.first_key} --size {args.size} "
        f"--rank {args.rank} --input-size {args.input_size} --epochs {args.epochs} "
        f"--batch-size {args.batch_size} --lr {args.lr:g} --augment {args.augment} "
        f"--group-distance {args.group_distance} --stem-lr-scale {args.stem_lr_scale:g}`  \n"
        f"Machine: {describe()}; total {time.perf_counter() - started:.0f} s. "
        f"{len(groups)} images in {len(sizes)} near-duplicate groups; test split "
        f"{int(table['test_images'].iloc[0])} images.\n\n"
        "| scheme | model | stem | keys | accuracy (mean ± sd) | worst key | max regret | "
        "train s |\n|---|---|---|---|---|---|---|---|\n"
    )
    lines = [
        f"| {r.scheme} | {r.model} | {r.stem} | {r.keys} | {r.acc_mean:.3f} ± "
        f"{0 if np.isnan(r.acc_sd) else r.acc_sd:.3f} | {r.acc_min:.3f} | {r.regret_max:.3f} | "
        f"{r.seconds:.0f} |"
        for r in summary.itertuples()
    ]
    text = header + "\n".join(lines) + "\n"
    (args.out / f"utility-{tag}.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
