"""Shared by the benchmark scripts: the scheme variants they compare, dataset naming and the
ledger of scored results."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from medveil.atomic import atomic_write_json
from medveil.duplicates import near_duplicate_groups
from medveil.layout import scan_dataset
from medveil.loading import LoadOptions, load_image

GROUPS_CACHE = Path(__file__).resolve().parent / "out" / "groups"
#: Scored results, committed: what ``benchmarks/out`` (stores, models, images) holds does not
#: survive a new machine, and a table rebuilt from a lost run could not be checked.
LEDGER = Path(__file__).resolve().parent / "results"

#: Key parameters of each compared scheme (on top of the preset defaults, n and k). The
#: ``multistage-*`` variants change one stage of the default, for the privacy/utility trade-off.
SCHEMES: dict[str, dict[str, Any]] = {
    "svd": dict(preset="svd"),
    "multistage": dict(preset="multistage"),
    "multistage-right": dict(preset="multistage", left="none"),
    "multistage-block": dict(preset="multistage", left="block"),
    "multistage-eta0.05": dict(preset="multistage", noise=0.05),
    "multistage-eta0.1": dict(preset="multistage", noise=0.1),
    "multistage-eta0.2": dict(preset="multistage", noise=0.2),
    "multistage-b4": dict(preset="multistage", bits=4),
    "multistage-b3": dict(preset="multistage", bits=3),
    "multistage-b4-eta0.05": dict(preset="multistage", bits=4, noise=0.05),
    "dp-svd": dict(preset="dp-svd"),
}


def duplicate_groups(dataset: Path, *, size: int, distance: int) -> np.ndarray:
    """Near-duplicate group of every image of a class-folder dataset, in ``scan_dataset`` order.

    Perceptual hashes within ``distance`` bits (:func:`medveil.duplicates.near_duplicate_groups`)
    at working size ``size``; cached under ``benchmarks/out/groups`` (the whole dataset is loaded
    once), shared by every benchmark.
    """
    cache = GROUPS_CACHE / f"{dataset_name(dataset)}-size{size}-d{distance}.npy"
    if cache.is_file():
        return np.load(cache)
    index = scan_dataset(dataset)
    if list(index.splits) != ["all"]:
        raise SystemExit("this benchmark holds out its own test split: give a folder of classes")
    items = index.splits["all"]
    images = np.stack(
        [load_image(index.root / it.path, options=LoadOptions(size=size)) for it in items]
    )
    groups = near_duplicate_groups(images, max_distance=distance)
    cache.parent.mkdir(parents=True, exist_ok=True)
    np.save(cache, groups)
    return groups



def groups_by_path(dataset: Path, groups: np.ndarray) -> dict[str, int]:
    """``{relative path: group}`` for :func:`medveil.privacy.select_images`."""
    items = scan_dataset(dataset).splits["all"]
    return {str(item.path): int(g) for item, g in zip(items, groups, strict=True)}


def ledger_path(kind: str, dataset: str, settings: str, name: str) -> Path:
    """Where one scored result is kept: ``results/<kind>/<dataset>/<settings>/<name>.json``."""
    return LEDGER / kind / dataset / settings / f"{name}.json"


def record(path: Path, row: dict[str, Any]) -> None:
    """Keep one scored result in the ledger (whole or not at all)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(path, row)


def recorded(kind: str, dataset: str, settings: str) -> list[dict[str, Any]]:
    """Every result kept under one kind, dataset and settings, in name order."""
    folder = LEDGER / kind / dataset / settings
    return [json.loads(p.read_text()) for p in sorted(folder.glob("*.json"))]


def scheme_params(name: str) -> dict[str, Any]:
    """Key parameters of a scheme name: a :data:`SCHEMES` entry, or ``multistage`` with options.

    ``multistage-b4-eta0.05-k16`` is the multistage preset with 4 bits, noise 0.05 and rank 16;
    ``b0`` switches quantization off; ``dp2`` adds DP-SVD's spectrum noise with epsilon 2. Unknown parts are refused, so that a typo does not run the
    default under another name.
    """
    if name in SCHEMES:
        return dict(SCHEMES[name])
    preset, *parts = name.split("-")
    if preset != "multistage" or not parts:
        raise SystemExit(f"unknown scheme {name!r}: {', '.join(SCHEMES)} or multistage-b<bits>-"
                         "eta<noise>-k<rank>-dp<epsilon>")
    params: dict[str, Any] = dict(preset="multistage")
    for part in parts:
        try:
            if part.startswith("eta"):
                params["noise"] = float(part[3:])
            elif part.startswith("b"):
                params["bits"] = int(part[1:]) or None
            elif part.startswith("k"):
                params["rank"] = int(part[1:])
            elif part.startswith("dp"):
                params["dp_epsilon"] = float(part[2:])
            else:
                raise ValueError(part)
        except ValueError:
            raise SystemExit(f"scheme {name!r}: cannot read {part!r}") from None
    return params


def dataset_name(path: Path) -> str:
    """``brain-tumor-mri`` for ``.../brain-tumor-mri/Training``: split folders are not names."""
    path = path.resolve()
    return path.parent.name if path.name.lower() in ("training", "testing") else path.name
