"""The accuracy–privacy frontier: stage settings measured for utility and for privacy, side by side.

Usage::

    .venv/bin/python benchmarks/frontier.py DATASET_DIR [--points multistage,multistage-b4,...]
        [--keys 3] [--privacy-keys 3] [--victims 200] [--public 1000] [--pairs 100] [--collect]
        [--utility-out benchmarks/out/utility] [--out benchmarks/out/frontier]

Each point is a scheme name (``common.scheme_params``: ``multistage-b<bits>-eta<noise>-k<rank>``).
For every point this runs

- ``privacy.py`` for each of ``--privacy-keys`` seeds ``i`` (its own fresh key, victims, pairs
  and public images, no near-duplicate group in two of them): keyless
  re-identification top-1 among the public images (A1), keyless look-alikes (``nearest_public``
  under A1), the tuned ridge with ``--pairs`` known pairs (``kpl`` under A2), and the mean-image
  yardstick;
- ``utility.py`` for each of ``--keys`` keys ``i`` (seed ``i``; the library's default recipe and
  input stem, smallcnn at 64 px for 8 epochs, a near-duplicate-grouped 20% test split): test
  accuracy, and how much of the key's projection the learned stem absorbed (the trainer-side
  unmixing).

Both scripts keep their scores in the committed ledger (``benchmarks/results/utility`` and
``benchmarks/results/privacy``) and reuse what it holds (stores are dropped once scored), so an
interrupted frontier picks up where it stopped, on any machine. ``--collect`` only joins what the
ledger holds.

Writes ``frontier-<dataset>.md``, ``.csv`` and ``.png`` (accuracy against re-identification and
against look-alike SSIM above the yardstick, presets marked) in ``--out``, and names the points
that meet the ``private`` targets: re-identification at most 1%, keyless look-alikes at or below
the yardstick, accuracy within 5 points of plaintext. When none does, it names the best trade-off:
the most accurate (mean over ``--keys`` keys) of the points that meet the two privacy targets.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import privacy
import utility
from common import dataset_name, recorded

from medveil.machine import describe

HERE = Path(__file__).resolve().parent
DEFAULT_POINTS = (
    "multistage,multistage-b4,multistage-b3,dp-svd,multistage-eta0.05,multistage-eta0.1,"
    "multistage-b4-eta0.05,multistage-b0-eta0-dp0.25,multistage-k16,multistage-k8,multistage-b6,"
    "multistage-b3-eta0.05,multistage-b0-eta0-dp4,multistage-b0-eta0-dp2,multistage-b4-k16,multistage-eta0,svd"
)
#: Points drawn as presets on the plot (the rest are settings of the multistage stages).
PRESETS = {
    "multistage": "multistage (default)", "svd": "svd", "dp-svd": "dp-svd (ε 1)",
    "multistage-b0-eta0-dp2": "private (dp-svd ε 2)",
    "multistage-b0-eta0-dp4": "balanced (dp-svd ε 4)",
}


#: The frontier's two privacy.py commands per seed: keyless attacks under A1 and the ridge under
#: A2 only (the A2 runs of the look-alike and re-identification attacks would repeat their A1
#: numbers at twice the cost).
ATTACKS = (("A1", "mean_image,nearest_public,reid"), ("A2", "kpl"))


def _run(command: list[str]) -> None:
    print("$ " + " ".join(command), flush=True)
    subprocess.run(command, check=True)


def _privacy_argv(args: argparse.Namespace, points: list[str], threat: str, attacks: str,
                  seed: int) -> list[str]:
    return [
        str(args.dataset), "--size", str(args.size), "--rank", str(args.rank),
        "--victims", str(args.victims), "--public", str(args.public),
        "--pairs", str(args.pairs), "--attacks", attacks, "--threats", threat,
        "--distinct-groups", "--schemes", ",".join(points), "--seed", str(seed),
        "--out", str(args.out / f"privacy-{threat}-seed{seed}"),
    ]


def _utility_argv(args: argparse.Namespace, points: list[str]) -> list[str]:
    return [
        str(args.dataset), "--schemes", ",".join(["plaintext", *points]),
        "--keys", str(args.keys), "--size", str(args.size), "--rank", str(args.rank),
        "--drop-stores", "--tag", "frontier", "--out", str(args.utility_out),
    ]


def _privacy(args: argparse.Namespace, points: list[str]) -> None:
    for seed in range(args.privacy_keys):
        for threat, attacks in ATTACKS:
            _run([sys.executable, str(HERE / "privacy.py"),
                  *_privacy_argv(args, points, threat, attacks, seed)])


def _utility(args: argparse.Namespace, points: list[str]) -> None:
    _run([sys.executable, str(HERE / "utility.py"), *_utility_argv(args, points)])


def _utility_rows(args: argparse.Namespace, points: list[str]) -> pd.DataFrame:
    """Every scored smallcnn run of plaintext and ``points`` with the default stem and one of
    the frontier's ``--keys`` keys (0 to keys - 1) that the frontier's utility.py command kept in
    the ledger (its settings read by that script's own parser). Runs of further keys, kept by
    other benchmarks at the same settings, are left out so that every point is the mean over the
    same keys."""
    settings = utility.run_settings(utility.build_parser().parse_args(_utility_argv(args, points)))
    rows = [
        row for row in recorded("utility", dataset_name(args.dataset), settings)
        if row["scheme"] in ("plaintext", *points) and row["model"] == "smallcnn"
        and row["stem_option"] == "default" and row["key"] < args.keys
    ]
    return pd.DataFrame(rows, columns=None if rows else ["scheme", "model", "accuracy"])


def _privacy_rows(args: argparse.Namespace, points: list[str], threat: str,
                  attacks: str) -> pd.DataFrame:
    """The scores that one of the frontier's two privacy.py commands kept in the ledger."""
    command = privacy.build_parser().parse_args(_privacy_argv(args, points, threat, attacks, 0))
    frames = []
    for row in recorded("privacy", dataset_name(args.dataset), privacy.privacy_settings(command)):
        frame = pd.DataFrame(row["rows"])
        frame["seed"] = row["seed"]
        frames.append(frame)
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def collect(args: argparse.Namespace, points: list[str]) -> pd.DataFrame:
    runs = _utility_rows(args, points)
    plain = runs[runs["scheme"] == "plaintext"]["accuracy"]
    scores = pd.concat(
        [_privacy_rows(args, points, threat, attacks) for threat, attacks in ATTACKS],
        ignore_index=True,
    )
    if not scores.empty:
        scores = scores[scores["seed"] < args.privacy_keys]

    def score(scheme: str, attack: str, threat: str, column: str) -> tuple[float, int]:
        if scores.empty:
            return float("nan"), 0
        rows = scores[
            (scores["scheme"] == scheme) & (scores["attack"] == attack)
            & (scores["threat"] == threat)
        ].drop_duplicates(subset=["seed"])  # a result saved under both threat folders
        return (float(rows[column].mean()) if len(rows) else float("nan")), len(rows)

    table = []
    for point in points:
        acc = runs[runs["scheme"] == point]["accuracy"]
        reid, reid_n = score(point, "reid", "A1", "top1_mean")
        yard, _ = score(point, "mean_image", "A1", "ssim_mean")
        look, _ = score(point, "nearest_public", "A1", "ssim_mean")
        kpl, _ = score(point, "kpl", "A2", "ssim_mean")
        align = runs[runs["scheme"] == point]
        table.append({
            "point": point,
            "keys_utility": len(acc),
            "accuracy": acc.mean() if len(acc) else float("nan"),
            "accuracy_sd": acc.std() if len(acc) > 1 else float("nan"),
            "accuracy_min": acc.min() if len(acc) else float("nan"),
            "keys_privacy": reid_n,
            "reid_top1": reid,
            "yardstick_ssim": yard,
            "lookalike_ssim": look,
            "kpl_ssim": kpl,
            "align_left": align["align_left"].mean() if "align_left" in align else float("nan"),
            "align_right": align["align_right"].mean() if "align_right" in align else float("nan"),
        })
    frame = pd.DataFrame(table)
    frame["plaintext_accuracy"] = plain.mean() if len(plain) else float("nan")
    frame["meets_private"] = (
        (frame["reid_top1"] <= 0.01)
        & (frame["lookalike_ssim"] <= frame["yardstick_ssim"])
        & (frame["accuracy"] >= frame["plaintext_accuracy"] - 0.05)
    )
    return frame


def private_candidates(frame: pd.DataFrame) -> pd.DataFrame:
    """The points that meet both privacy targets (re-identification at most 1%, keyless
    look-alikes at or below the yardstick), most accurate first."""
    meets = (frame["reid_top1"] <= 0.01) & (frame["lookalike_ssim"] <= frame["yardstick_ssim"])
    return frame[meets].sort_values("accuracy", ascending=False, na_position="last")


def _choice(frame: pd.DataFrame, keys: int) -> list[str]:
    """Sentences naming the ``private`` choice: a point that meets all targets, else the most
    accurate of those that meet the privacy targets, over ``keys`` keys."""
    plain = frame["plaintext_accuracy"].iloc[0]
    candidates = private_candidates(frame)
    measured = candidates[candidates["keys_utility"] >= keys]
    pending = candidates[candidates["keys_utility"] < keys]["point"].tolist()
    lines = []
    if frame["meets_private"].any():
        chosen = frame[frame["meets_private"]].sort_values("accuracy").iloc[-1]
        lines.append(f"Meets all three `private` targets: {chosen['point']}.")
    elif len(measured):
        chosen = measured.iloc[0]
        lines.append(
            f"No point meets all three `private` targets. Best trade-off (both privacy targets "
            f"met, highest mean accuracy over {keys} keys): **{chosen['point']}**, "
            f"{100 * chosen['accuracy']:.1f}% (worst key {100 * chosen['accuracy_min']:.1f}%), "
            f"{100 * (plain - chosen['accuracy']):.1f} points under plaintext; re-identification "
            f"{100 * chosen['reid_top1']:.1f}%, look-alikes {chosen['lookalike_ssim']:.3f} "
            f"against the yardstick's {chosen['yardstick_ssim']:.3f}."
        )
    else:
        lines.append(f"No point that meets the privacy targets has accuracy over {keys} keys yet.")
    if pending:
        lines.append(
            f"Also meeting the privacy targets, accuracy over fewer than {keys} keys: "
            + ", ".join(pending) + "."
        )
    return lines


def _markdown(frame: pd.DataFrame, args: argparse.Namespace) -> str:
    def pct(x: float) -> str:
        return "" if np.isnan(x) else f"{100 * x:.1f}%"

    def num(x: float) -> str:
        return "" if np.isnan(x) else f"{x:.3f}"

    plain = frame["plaintext_accuracy"].iloc[0]
    lines = [
        f"Command: `python benchmarks/frontier.py {args.dataset} --points {args.points} --keys "
        f"{args.keys} --privacy-keys {args.privacy_keys} --victims {args.victims} --public {args.public} --pairs {args.pairs}`  ",
        f"Machine: {describe()}. Plaintext smallcnn accuracy {pct(plain)} (mean over keys).",
        "",
        "| setting | accuracy (mean ± sd, keys) | worst key | keyless re-identification top-1 "
        "(keys) | keyless look-alikes SSIM | tuned ridge SSIM, "
        f"{args.pairs} pairs | yardstick SSIM | stem alignment L / R | private targets |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in frame.itertuples():
        sd = "" if np.isnan(r.accuracy_sd) else f" ± {100 * r.accuracy_sd:.1f}"
        lines.append(
            f"| {r.point} | {pct(r.accuracy)}{sd} ({r.keys_utility}) | {pct(r.accuracy_min)} | "
            f"{pct(r.reid_top1)} ({r.keys_privacy}) | {num(r.lookalike_ssim)} | "
            f"{num(r.kpl_ssim)} | {num(r.yardstick_ssim)} | {num(r.align_left)} / "
            f"{num(r.align_right)} | {'met' if r.meets_private else 'no'} |"
        )
    return "\n".join([*lines, "", *_choice(frame, args.keys)]) + "\n"


def _plot(frame: pd.DataFrame, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.5), constrained_layout=True)
    above = frame["lookalike_ssim"] - frame["yardstick_ssim"]
    for ax, x, label in (
        (axes[0], 100 * frame["reid_top1"], "keyless re-identification top-1 (%)"),
        (axes[1], above, "keyless look-alike SSIM above the yardstick"),
    ):
        ax.scatter(x, 100 * frame["accuracy"], color="tab:blue")
        for xi, yi, point in zip(x, 100 * frame["accuracy"], frame["point"], strict=True):
            marker = PRESETS.get(point)
            ax.annotate(
                marker or point.replace("multistage-", ""), (xi, yi), fontsize=8,
                xytext=(3, 3), textcoords="offset points",
                fontweight="bold" if marker else "normal",
            )
        ax.axhline(100 * frame["plaintext_accuracy"].iloc[0], color="gray", ls="--", lw=1)
        ax.axhline(100 * frame["plaintext_accuracy"].iloc[0] - 5, color="gray", ls=":", lw=1)
        ax.set_xlabel(label)
        ax.set_ylabel("smallcnn test accuracy (%)")
    axes[0].axvline(1.0, color="tab:red", ls=":", lw=1)
    axes[1].axvline(0.0, color="tab:red", ls=":", lw=1)
    fig.suptitle("Accuracy against privacy (dashed: plaintext; dotted: the private targets)")
    fig.savefig(path, dpi=120)
    plt.close(fig)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("dataset", type=Path)
    parser.add_argument("--points", default=DEFAULT_POINTS)
    parser.add_argument("--keys", type=int, default=3, help="keys (and seeds) for accuracy")
    parser.add_argument(
        "--privacy-keys", type=int, default=3, help="keys (and image draws) for the attacks"
    )
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--rank", type=int, default=32)
    parser.add_argument("--victims", type=int, default=200)
    parser.add_argument("--public", type=int, default=1000)
    parser.add_argument("--pairs", type=int, default=100)
    parser.add_argument("--collect", action="store_true", help="only join the saved results")
    parser.add_argument("--skip-utility", action="store_true", help="run the privacy half only")
    parser.add_argument("--utility-out", type=Path, default=Path("benchmarks/out/utility"))
    parser.add_argument("--out", type=Path, default=Path("benchmarks/out/frontier"))
    return parser


def main() -> None:
    args = build_parser().parse_args()
    points = args.points.split(",")
    if not args.collect:
        _privacy(args, points)
        if not args.skip_utility:
            _utility(args, points)
    frame = collect(args, points)
    name = dataset_name(args.dataset)
    args.out.mkdir(parents=True, exist_ok=True)
    frame.to_csv(args.out / f"frontier-{name}.csv", index=False)
    text = _markdown(frame, args)
    (args.out / f"frontier-{name}.md").write_text(text)
    _plot(frame, args.out / f"frontier-{name}.png")
    print(text)


if __name__ == "__main__":
    main()
