"""Shared by the benchmark scripts: the scheme variants they compare and dataset naming."""

from __future__ import annotations

from pathlib import Path
from typing import Any

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
}


def dataset_name(path: Path) -> str:
    """``brain-tumor-mri`` for ``.../brain-tumor-mri/Training``: split folders are not names."""
    path = path.resolve()
    return path.parent.name if path.name.lower() in ("training", "testing") else path.name
