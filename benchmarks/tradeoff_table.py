"""Join utility and privacy benchmark outputs into one trade-off table (Markdown).

Usage::

    .venv/bin/python benchmarks/tradeoff_table.py --utility U1.csv [U2.csv ...]
        --privacy P1.csv [P2.csv ...] [--model smallcnn]

The CSVs are the ``utility-<dataset>.csv`` and ``privacy-<dataset>.csv`` files that
``utility.py`` and ``privacy.py`` write in their ``--out`` folders. One row per scheme found in
both: test accuracy and macro-F1 of ``--model``, the public-basis SSIM under A3 and under A2
(each pairs count), the KPL SSIM under A2, the keyless covariance SSIM (A1) and keyless
re-identification top-1 (A1).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--utility", type=Path, nargs="+", required=True)
    parser.add_argument("--privacy", type=Path, nargs="+", required=True)
    parser.add_argument("--model", default="smallcnn")
    args = parser.parse_args()
    utility = pd.concat([pd.read_csv(p) for p in args.utility], ignore_index=True)
    utility = utility[utility["model"] == args.model].set_index("scheme")
    privacy = pd.concat([pd.read_csv(p) for p in args.privacy], ignore_index=True)

    def ssim(scheme: str, attack: str, threat: str) -> str:
        rows = privacy[
            (privacy["scheme"] == scheme)
            & (privacy["attack"] == attack)
            & (privacy["threat"] == threat)
        ]
        return ", ".join(f"{v:.3f}" for v in rows["ssim_mean"]) if len(rows) else ""

    def top1(scheme: str) -> str:
        rows = privacy[
            (privacy["scheme"] == scheme) & (privacy["attack"] == "reid") & (privacy["threat"] == "A1")
        ]
        return f"{rows['top1_mean'].iloc[0]:.3f}" if len(rows) else ""

    print(
        f"| scheme | accuracy ({args.model}) | macro-F1 | PB SSIM A3 (key) | PB SSIM A2 (pairs) | "
        "KPL SSIM A2 | covariance SSIM A1 | re-identification top-1 A1 |\n"
        "|---|---|---|---|---|---|---|---|"
    )
    for scheme in utility.index:
        if scheme not in set(privacy["scheme"]):
            continue
        u = utility.loc[scheme]
        print(
            f"| {scheme} | {u['accuracy']:.3f} | {u['macro_f1']:.3f} | "
            f"{ssim(scheme, 'public_basis', 'A3')} | {ssim(scheme, 'public_basis', 'A2')} | "
            f"{ssim(scheme, 'kpl', 'A2')} | {ssim(scheme, 'covariance', 'A1')} | {top1(scheme)} |"
        )


if __name__ == "__main__":
    main()
