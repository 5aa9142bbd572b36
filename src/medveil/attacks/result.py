"""The outcome of one attack: per-image scores, their summary row, and strict JSON."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from medveil.attacks.context import ThreatModel

__all__ = ["RESULT_FORMAT", "RESULT_VERSION", "AttackResult", "to_json_value"]

RESULT_FORMAT = "medveil-attack-result"
RESULT_VERSION = 1


def to_json_value(value: Any) -> Any:
    """``value`` as strict JSON values: NumPy scalars and arrays as Python ones, ``inf``/``nan``
    as the strings ``"inf"``, ``"-inf"``, ``"nan"`` (perfect reconstructions have PSNR inf).

    Examples
    --------
    >>> import numpy as np
    >>> to_json_value({"psnr": np.array([1.5, np.inf]), 2: (np.int64(3),)})
    {'psnr': [1.5, 'inf'], '2': [3]}
    """
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, (np.floating, np.integer)):
        return to_json_value(value.item())
    if isinstance(value, np.ndarray):
        return [to_json_value(v) for v in value.tolist()]
    if isinstance(value, Mapping):
        return {str(k): to_json_value(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_json_value(v) for v in value]
    return value


def _from_json_value(value: Any) -> Any:
    if value in ("inf", "-inf", "nan"):
        return float(value)
    if isinstance(value, dict):
        return {k: _from_json_value(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_from_json_value(v) for v in value]
    return value


@dataclass(kw_only=True)
class AttackResult:
    """Outcome of one attack on one set of victims.

    ``metrics`` holds per-image float arrays (SSIM, PSNR, PSNR unclipped, MSE for reconstruction
    attacks; rank, top-1, top-5 for matching attacks), aligned with ``ids``. ``extra`` holds
    JSON-serialisable scalars and tables specific to the attack (best ``t`` for LBA, chance
    levels for matching, training history for the decoder). ``reconstructions`` (CPU, float32)
    are kept only on request and never serialised.
    """

    attack: str
    threat: ThreatModel
    preset: str
    parameters: dict[str, Any]
    ids: list[str]
    metrics: dict[str, np.ndarray]
    extra: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0
    reconstructions: torch.Tensor | None = field(default=None, repr=False, compare=False)

    def summary(self) -> dict[str, Any]:
        """One flat row: mean, std and max of every per-image metric, plus the scalar extras.

        For matching attacks the ``top1_mean`` and ``top5_mean`` columns are the accuracies and
        ``chance_top1``/``chance_top5`` their chance levels.
        """
        row: dict[str, Any] = {
            "attack": self.attack,
            "threat": str(self.threat),
            "preset": self.preset,
            "images": len(self.ids),
        }
        for name, values in self.metrics.items():
            v = np.asarray(values, dtype=np.float64)
            # A perfect reconstruction has PSNR inf: the mean is then inf and the std nan.
            with np.errstate(invalid="ignore"):
                row[f"{name}_mean"] = float(v.mean())
                row[f"{name}_std"] = float(v.std())
            row[f"{name}_max"] = float(v.max())
        row.update({k: v for k, v in self.extra.items() if isinstance(v, (int, float, str))})
        row["seconds"] = self.seconds
        return row

    def to_frame(self) -> pd.DataFrame:
        """Per-image DataFrame: ``id``, ``attack``, ``threat`` and one column per metric."""
        frame = pd.DataFrame(
            {"id": self.ids, **{k: np.asarray(v) for k, v in self.metrics.items()}}
        )
        frame.insert(1, "attack", self.attack)
        frame.insert(2, "threat", str(self.threat))
        return frame

    def to_csv(self, path: str | Path) -> Path:
        """Write :meth:`to_frame` as CSV; returns the path."""
        path = Path(path)
        self.to_frame().to_csv(path, index=False)
        return path

    def to_json(self) -> str:
        """Strict JSON (non-finite numbers as the strings ``"inf"``, ``"-inf"``, ``"nan"``)."""
        data = {
            "format": RESULT_FORMAT,
            "version": RESULT_VERSION,
            "attack": self.attack,
            "threat": str(self.threat),
            "preset": self.preset,
            "parameters": self.parameters,
            "ids": self.ids,
            "metrics": self.metrics,
            "extra": self.extra,
            "seconds": self.seconds,
        }
        return json.dumps(to_json_value(data), indent=1, allow_nan=False)

    @classmethod
    def from_json(cls, text: str) -> AttackResult:
        data = _from_json_value(json.loads(text))
        if data.get("format") != RESULT_FORMAT or data.get("version") != RESULT_VERSION:
            raise ValueError(f"not a {RESULT_FORMAT} v{RESULT_VERSION} document")
        return cls(
            attack=data["attack"],
            threat=ThreatModel(data["threat"]),
            preset=data["preset"],
            parameters=data["parameters"],
            ids=list(data["ids"]),
            metrics={k: np.asarray(v, dtype=np.float64) for k, v in data["metrics"].items()},
            extra=data["extra"],
            seconds=float(data["seconds"]),
        )
