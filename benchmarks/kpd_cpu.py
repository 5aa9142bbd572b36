"""The learned decoder (KPD) on a CPU budget, beside the tuned ridge (KPL), on the same pairs.

Usage::

    .venv/bin/python benchmarks/kpd_cpu.py DATASET_DIR [--scheme multistage] [--size 96]
        [--rank 16] [--victims 200] [--public 1000] [--pairs 1000] [--holdout 100]
        [--seconds 2700] [--eval-every 500] [--seed 0] [--device cpu] [--out benchmarks/out/kpd]

One fresh key (calibrated on the public images). Victims, known pairs, ``--holdout`` extra pairs
and public images are disjoint, and no near-duplicate group (perceptual hashes within 4 bits)
has an image in two of them. KPD trains on the ``--pairs`` pairs for ``--seconds`` (or
``--steps``) and scores its SSIM on the held-out pairs every ``--eval-every`` steps (the training
curve: has it converged?); KPL (ridge strength chosen by leave-one-out) fits the same pairs.
Both are scored on the same victims, beside the mean-image yardstick. ``--device cuda`` trains
and scores on a GPU (the obfuscation stays on the CPU), for the 224 px run a CPU budget does not
reach, e.g. ``--size 224 --rank 32 --device cuda --seconds 420``.

Writes ``kpd-<dataset>-<scheme>-<size>.md`` (table and command), ``...-curve.csv`` and
``...-curve.png`` in ``--out``.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import pandas as pd
from common import dataset_name, duplicate_groups, groups_by_path, scheme_params

from medveil.attacks import (
    AttackContext,
    KnownPlaintextDecoderAttack,
    KnownPlaintextLinearAttack,
    MeanImageBaseline,
    ThreatModel,
    Victims,
)
from medveil.calibration import calibrate
from medveil.keys import generate_key
from medveil.machine import describe
from medveil.obfuscator import Obfuscator
from medveil.privacy import select_images


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("dataset", type=Path)
    parser.add_argument("--scheme", default="multistage")
    parser.add_argument("--size", type=int, default=96)
    parser.add_argument("--rank", type=int, default=16)
    parser.add_argument("--victims", type=int, default=200)
    parser.add_argument("--public", type=int, default=1000)
    parser.add_argument("--pairs", type=int, default=1000)
    parser.add_argument("--holdout", type=int, default=100)
    parser.add_argument("--seconds", type=float, default=2700.0)
    parser.add_argument("--steps", type=int, default=10**7)
    parser.add_argument("--eval-every", type=int, default=500)
    parser.add_argument("--group-distance", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu", help="where the attacks run: cpu or cuda")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/out/kpd"))
    args = parser.parse_args()
    name = dataset_name(args.dataset)
    started = time.perf_counter()
    groups = groups_by_path(args.dataset, duplicate_groups(
        args.dataset, size=224, distance=args.group_distance,
    ))
    sets = select_images(
        args.dataset, size=args.size, victims=args.victims, pairs=args.pairs + args.holdout,
        public=args.public, seed=args.seed, groups=groups,
    )
    params = {"size": args.size, "rank": args.rank, **scheme_params(args.scheme)}
    key = calibrate(generate_key(**params), sets.public)
    obfuscator = Obfuscator(key)
    victims = Victims.obfuscate(sets.victims, obfuscator, ids=sets.victim_ids)
    known = Victims.obfuscate(sets.pairs, obfuscator, ids=sets.pair_ids)
    print(f"{len(victims)} victims, {len(known)} pairs, {len(sets.public)} public; key "
          f"{key.fingerprint} {key.params.to_dict()}", flush=True)

    def context(pairs: int) -> AttackContext:
        return AttackContext(
            threat=ThreatModel.A2, params=key.params, public=sets.public,
            public_ids=sets.public_ids, pair_originals=known.originals[:pairs],
            pair_obfuscated=known.obfuscated[:pairs], pair_ids=known.ids[:pairs],
            device=args.device,
        )

    rows = []
    for label, attack, ctx in (
        (
            "mean image (yardstick)", MeanImageBaseline(),
            AttackContext(threat=ThreatModel.A1, params=key.params, public=sets.public,
                          device=args.device),
        ),
        ("KPL, tuned ridge", KnownPlaintextLinearAttack(), context(args.pairs)),
        (
            "KPD, learned decoder",
            KnownPlaintextDecoderAttack(
                max_steps=args.steps, max_seconds=args.seconds, seed=args.seed,
                holdout=args.holdout, eval_every=args.eval_every,
                progress=lambda step, total, loss: print(
                    f"   kpd step {step} loss {loss:.4f}", flush=True
                ) if step % (10 * args.eval_every) == 0 else None,
            ),
            context(args.pairs + args.holdout),
        ),
    ):
        tick = time.perf_counter()
        result = attack.run(ctx, victims)
        summary = result.summary()
        row = {
            "attack": label, "ssim_mean": summary["ssim_mean"], "ssim_std": summary["ssim_std"],
            "psnr_mean": summary["psnr_mean"], "seconds": time.perf_counter() - tick,
        }
        if "curve" in result.extra:
            curve = pd.DataFrame(result.extra["curve"], columns=["step", "seconds", "ssim"])
            row["steps"] = result.extra["steps"]
        rows.append(row)
        print(f"   {label}: SSIM {row['ssim_mean']:.3f}", flush=True)
    table = pd.DataFrame(rows)
    stem = f"kpd-{name}-{args.scheme}-{args.size}"
    args.out.mkdir(parents=True, exist_ok=True)
    curve.to_csv(args.out / f"{stem}-curve.csv", index=False)
    _plot(curve, table, args.out / f"{stem}-curve.png", title=f"{name}, {args.scheme}, "
          f"{args.size} px, k {args.rank}, {args.pairs} pairs")
    last = curve.iloc[-1]
    tail = curve[curve["seconds"] >= 0.75 * last["seconds"]]["ssim"]
    lines = [
        f"Command: `python benchmarks/kpd_cpu.py {args.dataset} --scheme {args.scheme} --size "
        f"{args.size} --rank {args.rank} --victims {args.victims} --public {args.public} "
        f"--pairs {args.pairs} --holdout {args.holdout} --seconds {args.seconds:g} --eval-every "
        f"{args.eval_every} --seed {args.seed}"
        + ("" if args.device == "cpu" else f" --device {args.device}") + "`  ",
        f"Machine: {describe()}; total {time.perf_counter() - started:.0f} s. "
        f"{len(sets.skipped)} files passed over (near-duplicates of drawn images, bad files).",
        "",
        "| attack | victims' SSIM (mean ± sd) | PSNR | seconds |",
        "|---|---|---|---|",
        *(
            f"| {r.attack} | {r.ssim_mean:.3f} ± {r.ssim_std:.3f} | {r.psnr_mean:.2f} | "
            f"{r.seconds:.0f} |"
            for r in table.itertuples()
        ),
        "",
        f"KPD: {int(last['step'])} steps; held-out SSIM {curve['ssim'].iloc[0]:.3f} after "
        f"{int(curve['step'].iloc[0])} steps, {last['ssim']:.3f} at the end; over the last "
        f"quarter of the time it moved by {tail.max() - tail.min():.3f} "
        f"(curve: `{stem}-curve.csv`, `.png`).",
    ]
    text = "\n".join(lines) + "\n"
    (args.out / f"{stem}.md").write_text(text)
    print(text)


def _plot(curve: pd.DataFrame, table: pd.DataFrame, path: Path, *, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4), constrained_layout=True)
    ax.plot(curve["step"], curve["ssim"], label="KPD, held-out pairs")
    for r, style in zip(table.itertuples(), ("--", ":", "-."), strict=False):
        ax.axhline(r.ssim_mean, ls=style, color="gray", lw=1, label=f"{r.attack}, victims")
    ax.set_xlabel("decoder training step")
    ax.set_ylabel("SSIM")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8)
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    main()
