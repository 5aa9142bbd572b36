"""Stem attack benchmark: what a trainer reads of the victims through its trained input stem.

Usage::

    .venv/bin/python benchmarks/stem_attack.py DATASET_DIR
        --utility-out benchmarks/out/utility [--keys 3] [--first-key 0] [--victims 200] [--public 1000]
        [--size 224] [--rank 32] [--model smallcnn] [--stem default] [--seed 0] [--out benchmarks/out/stem_attack]

Reads what ``benchmarks/utility.py`` left in ``--utility-out`` (read only): for each key ``i``
the trained run of ``multistage`` key ``i`` at utility.py's default settings and ``--size``,
``--rank`` (``utility.run_folder``: its learned stem, ``--stem default`` or ``fitted``, and its
``splits.json``), the store of that key (``utility.store_folder``: the obfuscated arrays; run
utility.py without ``--drop-stores``) and its ``.matrices.npz`` (``R_L``, ``R_R``; only for the
in-span bound and the alignment, which need the key). Victims: ``--victims`` images of the run's
test split; public images: ``--public`` of its train split (the split keeps near-duplicate groups
on one side); originals loaded from DATASET_DIR as the store loaded them (store row ``j`` is the
``j``-th file of the dataset's index).

For the learned stem, the starting resize stem (a control: a stem that learned nothing) and the
exact unmixing ``L* = D R_L^T``, ``R* = R_R^+ E`` (a reference: a stem that learned the whole key),
:func:`medveil.attacks.stem.stem_attack` scores under A1 (the trainer: obfuscated arrays, the
trained stem, public images, no key, no pairs) look-alikes (SSIM of the nearest public image and
of the mean of the 5 nearest), re-identification top-1 among the victims' originals hidden in the
public images (one-to-one assignment; chance 1/pool) and a reconstruction through the stem
(the best of the public-basis re-synthesis and a ridge decoder fitted on the public images),
beside the mean-image yardstick; and the same through the in-span bound (the best approximation
of the exact unmixing within the stem's spans, which needs the key: an upper bound, A3-assisted).

Writes ``stem-attack-<dataset>.md`` and ``.csv`` to ``--out`` (atomically) and prints the table.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import utility
from common import dataset_name

from medveil.atomic import atomic_write_bytes
from medveil.attacks.stem import StemView, exact_unmixing, stem_attack
from medveil.keys import SchemeParams
from medveil.layout import scan_dataset
from medveil.loading import LoadOptions, load_image
from medveil.machine import describe
from medveil.store import ObfuscatedStore
from medveil.training import load_run
from medveil.training.stems import create_stem, get_stem_spec


def _view_row(view: StemView) -> dict[str, float]:
    return {
        "nn1": view.lookalike_ssim[1], "nn5": view.lookalike_ssim[5],
        "reid_top1": view.reid_top1, "reid_top1_nearest": view.reid_top1_nearest,
        "reid_top5": view.reid_top5, "recon": view.reconstruction_ssim,
        "recon_pb": max(view.variants["pb"], view.variants["pb+mean"]),
        "recon_pb_plain": view.variants["pb"], "recon_pb_mean": view.variants["pb+mean"],
        "recon_ridge": view.variants["ridge"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("dataset", type=Path)
    parser.add_argument("--utility-out", type=Path, default=Path("benchmarks/out/utility"))
    parser.add_argument("--keys", type=int, default=3)
    parser.add_argument("--first-key", type=int, default=0, help="as utility.py's --first-key")
    parser.add_argument("--victims", type=int, default=200)
    parser.add_argument("--public", type=int, default=1000)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--rank", type=int, default=32)
    parser.add_argument("--model", default="smallcnn")
    parser.add_argument("--stem", default="default", help="the stem option of the utility runs")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/out/stem_attack"))
    args = parser.parse_args()
    name = dataset_name(args.dataset)
    started = time.perf_counter()
    items = scan_dataset(args.dataset).splits["all"]
    loaded: dict[tuple[int, LoadOptions], np.ndarray] = {}

    def originals(indices: np.ndarray, options: LoadOptions) -> np.ndarray:
        for j in indices:
            if (int(j), options) not in loaded:
                loaded[int(j), options] = load_image(
                    args.dataset / items[j].path, options=options
                )
        return np.stack([loaded[int(j), options] for j in indices])

    # The utility runs' own folder names, at that script's defaults for what is not given here.
    runs = utility.build_parser().parse_args([
        str(args.dataset), "--size", str(args.size), "--rank", str(args.rank),
        "--out", str(args.utility_out),
    ])
    rows: list[dict] = []
    for rep in range(args.first_key, args.first_key + args.keys):
        run_dir = utility.run_folder(runs, name, "multistage", rep, args.model, args.stem)
        store_dir = utility.store_folder(runs, name, "multistage", rep)
        matrices_file = store_dir.with_name(store_dir.name + ".matrices.npz")
        if not (run_dir / "run.json").is_file() or not store_dir.is_dir():
            raise SystemExit(
                f"key {rep}: no utility run at {run_dir} or no store at {store_dir}; run "
                "utility.py at the same --size and --rank (default training settings) without "
                "--drop-stores first"
            )
        info = json.loads((run_dir / "run.json").read_text())
        if not get_stem_spec(info["stem"]).learnable:
            raise SystemExit(f"{run_dir}: stem {info.get('stem')}, expected a learned one")
        stem = load_run(run_dir).model.stem
        splits = json.loads((run_dir / "splits.json").read_text())
        store = ObfuscatedStore(store_dir)
        params = SchemeParams(**store.manifest["params"])
        load = dict(store.manifest["load"])
        if load.get("percentile") is not None:
            load["percentile"] = tuple(load["percentile"])
        options = LoadOptions(**load)
        arrays = store.split("all")
        if len(arrays) != len(items) or not np.array_equal(
            arrays.labels, [it.label for it in items]
        ):
            raise SystemExit(f"{store_dir}: rows do not match the files of {args.dataset}")
        for role in ("test", "train"):
            if splits[role]["table"] != "all":
                raise SystemExit(f"{run_dir}/splits.json: {role} is not drawn from the store's all")
        rng = np.random.default_rng(args.seed)
        victims = np.sort(rng.choice(splits["test"]["indices"], args.victims, replace=False))
        public = np.sort(rng.choice(splits["train"]["indices"], args.public, replace=False))
        with np.load(matrices_file) as npz:
            matrices = {k: npz[k] for k in npz.files}
        # The reference: a stem that learned the exact unmixing (what a key holder reads).
        exact = create_stem("linear", in_shape=stem.in_shape, size=stem.size)
        with torch.no_grad():
            for param, value in zip(
                (exact.left, exact.right),
                exact_unmixing(
                    n=params.size, k=params.rank, size=stem.size,
                    left=matrices.get("left"), right=matrices.get("right"),
                ),
            ):
                param.copy_(torch.from_numpy(value))
        shown = {
            "learned": stem,
            "resize": create_stem("resize", in_shape=stem.in_shape, size=stem.size),
            "exact unmixing": exact,
        }
        for label, reader in shown.items():
            t0 = time.perf_counter()
            result = stem_attack(
                reader,
                victims_obfuscated=arrays.arrays(victims),
                victim_originals=originals(victims, options),
                public=originals(public, options),
                params=params,
                key_matrices=matrices,
                seed=args.seed,
            )
            assert result.bound is not None
            views = [("A1 stem", result.realistic), ("in-span bound", result.bound)]
            if label == "exact unmixing":
                views = [("A3 reference", result.realistic)]  # its own in-span bound
            for view_name, view in views:
                rows.append({
                    "key": rep, "stem": label, "view": view_name,
                    "yardstick": result.yardstick_ssim, **_view_row(view),
                    "pool": result.pool_size,
                    "align_left": result.alignment["left"],
                    "align_right": result.alignment["right"],
                })
            print(
                f"key {rep} {label} stem ({time.perf_counter() - t0:.0f} s): yardstick "
                f"{result.yardstick_ssim:.3f}; A1 look-alike nn1 "
                f"{result.realistic.lookalike_ssim[1]:.3f}, reid {result.realistic.reid_top1:.3f}, "
                f"recon {result.realistic.reconstruction_ssim:.3f}; bound reid "
                f"{result.bound.reid_top1:.3f}, recon {result.bound.reconstruction_ssim:.3f}",
                flush=True,
            )
    table = pd.DataFrame(rows)
    header = (
        f"Command: `python benchmarks/stem_attack.py {args.dataset} --utility-out "
        f"{args.utility_out} --keys {args.keys} --first-key {args.first_key} --victims {args.victims} --public {args.public} "
        f"--size {args.size} --rank {args.rank} --model {args.model} --stem {args.stem} "
        f"--seed {args.seed}`  \n"
        f"Machine: {describe()}; total {time.perf_counter() - started:.0f} s. Victims from the "
        f"test split, public images from the train split of each run; re-identification pool "
        f"{int(table['pool'].iloc[0])} (chance top-1 {1 / table['pool'].iloc[0]:.4f}). SSIM "
        f"columns are means over victims; recon pb: Z_est V^T re-synthesised on the public "
        f"basis; recon ridge: a linear decoder fitted on the public images. A1 stem: through the "
        f"stem's own L, R (no key); in-span bound: the exact unmixing projected on the stem's "
        f"spans (needs the key); exact unmixing: the stem L*, R* (what a key holder reads).\n\n"
        "| key | stem | view | yardstick | look-alike nn1 | look-alike nn5 | reid top-1 | "
        "recon pb | recon ridge | align L | align R |\n"
        "|---|---|---|---|---|---|---|---|---|---|---|\n"
    )

    def line(key: str, r) -> str:
        return (
            f"| {key} | {r.stem} | {r.view} | {r.yardstick:.3f} | {r.nn1:.3f} | {r.nn5:.3f} | "
            f"{r.reid_top1:.3f} | {r.recon_pb:.3f} | {r.recon_ridge:.3f} | {r.align_left:.2f} | "
            f"{r.align_right:.2f} |"
        )

    lines = [line(str(r.key), r) for r in table.itertuples()]
    means = table.drop(columns="key").groupby(["stem", "view"], sort=False).mean().reset_index()
    lines += [line(f"mean of {args.keys}", r) for r in means.itertuples()]
    text = header + "\n".join(lines) + "\n"
    args.out.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(args.out / f"stem-attack-{name}.md", text.encode())
    atomic_write_bytes(args.out / f"stem-attack-{name}.csv", table.to_csv(index=False).encode())
    print(text)


if __name__ == "__main__":
    main()
