"""A trained run read back: its best (or latest) weights and what is needed to feed them."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from medveil.errors import ConfigError, LoadError, RunError
from medveil.training.checkpoints import RUN_FORMAT
from medveil.training.inputs import Standardisation, to_model_input
from medveil.training.models import create_model

__all__ = ["TrainedRun", "load_run"]


@dataclass(frozen=True)
class TrainedRun:
    """A run folder's best model with what is needed to feed it."""

    run_dir: Path
    info: dict[str, Any]
    model: nn.Module
    standardisation: Standardisation

    @property
    def classes(self) -> tuple[str, ...]:
        return tuple(self.info["classes"])

    @property
    def input_size(self) -> int:
        return int(self.info["input_size"])

    @property
    def stem(self) -> str | None:
        """The model's input stem, or ``None`` for runs made before stems existed."""
        return self.info.get("stem")

    def model_input(self, arrays: np.ndarray) -> torch.Tensor:
        """``(B, h, w)`` arrays as the model reads them, standardised."""
        if self.stem is None:  # a run from before stems: the arrays are resized as images
            return to_model_input(
                arrays, size=self.input_size, standardisation=self.standardisation
            )
        n, m = self.info["in_shape"]
        if arrays.shape[1:] != (n, m):
            if self.kind == "obfuscated" or n != m:
                raise LoadError(
                    f"this model reads {n}x{m} arrays, got {arrays.shape[1]}x{arrays.shape[2]}"
                )
            return to_model_input(arrays, size=n, standardisation=self.standardisation)
        return to_model_input(arrays, size=None, standardisation=self.standardisation)

    @property
    def kind(self) -> str:
        return str(self.info["data"]["kind"])

    @property
    def key_fingerprint(self) -> str | None:
        return self.info["data"].get("key_fingerprint")

    def probabilities(
        self, arrays: np.ndarray, *, batch_size: int = 64, device: torch.device | None = None
    ) -> np.ndarray:
        """Class probabilities ``(B, classes)`` for ``(B, h, w)`` arrays of the run's kind."""
        device = device or torch.device("cpu")
        model = self.model.to(device).eval()
        out = []
        with torch.no_grad():
            for lo in range(0, len(arrays), batch_size):
                x = self.model_input(arrays[lo : lo + batch_size])
                out.append(torch.softmax(model(x.to(device)), dim=1).cpu())
        return torch.cat(out).numpy() if out else np.zeros((0, len(self.classes)), np.float32)


def load_run(run_dir: str | Path, *, checkpoint: str = "best") -> TrainedRun:
    """Open a run folder written by :func:`medveil.training.train.train`.

    ``checkpoint="best"`` (the default) loads the selected epoch's weights (``best.pt``);
    ``"last"`` loads the latest epoch's (``last.pt``), e.g. to score a run while it trains.
    """
    if checkpoint not in ("best", "last"):
        raise ConfigError(f"checkpoint must be 'best' or 'last', got {checkpoint!r}")
    run_dir = Path(run_dir).expanduser()
    path = run_dir / "run.json"
    if not path.is_file():
        raise RunError(f"{run_dir}: not a medveil training run (no run.json)")
    info = json.loads(path.read_text())
    if info.get("format") != RUN_FORMAT:
        raise RunError(f"{path}: not a medveil run description")
    weights = run_dir / f"{checkpoint}.pt"
    if not weights.is_file():
        raise RunError(f"{run_dir}: no {weights.name}; the run has not finished an epoch")
    stem = info.get("stem")
    model = create_model(
        info["model"], num_classes=len(info["classes"]), input_size=info["input_size"],
        stem=stem, in_shape=tuple(info["in_shape"]) if stem is not None else None,
    )
    state = torch.load(weights, map_location="cpu", weights_only=True)
    model.load_state_dict(state["model"])
    return TrainedRun(
        run_dir=run_dir, info=info, model=model.eval(),
        standardisation=Standardisation(**info["standardisation"]),
    )
