"""Shared by the benchmark scripts: the scheme variants they compare and dataset naming."""

from __future__ import annotations

from pathlib import Path

#: Key parameters of each compared scheme (on top of the preset defaults, n and k).
SCHEMES: dict[str, dict[str, str]] = {
    "svd": dict(preset="svd"),
    "multistage": dict(preset="multistage"),
    "multistage-right": dict(preset="multistage", left="none"),
    "multistage-block": dict(preset="multistage", left="block"),
}


def dataset_name(path: Path) -> str:
    """``brain-tumor-mri`` for ``.../brain-tumor-mri/Training``: split folders are not names."""
    path = path.resolve()
    return path.parent.name if path.name.lower() in ("training", "testing") else path.name
