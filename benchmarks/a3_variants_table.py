"""The key holder's two public-basis reconstructions beside the known-pair one, per scheme.

Usage::

    .venv/bin/python benchmarks/a3_variants_table.py benchmarks/out/privacy-a3pairs/brain-tumor-mri

Reads ``<scheme>/results/public_basis__A3.json`` and ``public_basis__A2__pairs*.json`` written
by ``privacy.py --attacks public_basis`` and prints the mean SSIM of the variants: the exact
inverse with the key (``pb``), the fit on pairs the key holder makes from public images
(``pb-pairs``) and the fit on the known pairs (A2).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("results", type=Path, help="privacy.py's --out folder for one dataset")
    root = parser.parse_args().results
    print(
        "| scheme | A3 exact inverse (`pb`) | A3 self-made pairs (`pb-pairs`) | A2 known pairs |\n"
        "|---|---|---|---|"
    )
    for folder in sorted(p for p in root.iterdir() if (p / "results").is_dir()):
        a3 = folder / "results" / "public_basis__A3.json"
        a2 = sorted((folder / "results").glob("public_basis__A2__pairs*.json"))
        if not a3.is_file() or not a2:
            continue
        key = json.loads(a3.read_text())["extra"]["variants"]
        pairs = json.loads(a2[0].read_text())["extra"]["variants"]
        print(
            f"| {folder.name} | {key['pb']['ssim_mean']:.3f} | "
            f"{key.get('pb-pairs', {}).get('ssim_mean', float('nan')):.3f} | "
            f"{pairs['pb']['ssim_mean']:.3f} |"
        )


if __name__ == "__main__":
    main()
