"""Classifier scores: accuracy, macro-F1, per-class precision, recall and ROC-AUC, confusion.

:func:`scores` computes an :class:`EvalResult` from class probabilities; the result renders as a
table and saves as JSON, CSV and a confusion-matrix figure.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from torchmetrics.functional.classification import (
    multiclass_accuracy,
    multiclass_auroc,
    multiclass_confusion_matrix,
    multiclass_f1_score,
    multiclass_precision,
    multiclass_recall,
)

from medveil.atomic import atomic_write_bytes, atomic_write_json
from medveil.outputs import mark_output

__all__ = ["EvalResult", "scores"]


@dataclass(frozen=True)
class EvalResult:
    """Scores of a run on one set of examples.

    Per-class arrays follow :attr:`classes`; ``auc`` is NaN for a class without both positive
    and negative examples. ``confusion[i, j]`` counts examples of class ``i`` predicted as ``j``.
    """

    classes: tuple[str, ...]
    count: int
    accuracy: float
    macro_f1: float
    macro_auc: float
    precision: np.ndarray
    recall: np.ndarray
    f1: np.ndarray
    auc: np.ndarray
    confusion: np.ndarray
    data: str

    def summary(self) -> str:
        lines = [
            (
                f"{self.count} examples ({self.data}): accuracy {self.accuracy:.4f}, "
                f"macro-F1 {self.macro_f1:.4f}, macro ROC-AUC {self.macro_auc:.4f}"
            ),
            self.to_frame().to_string(float_format=lambda v: f"{v:.3f}"),
        ]
        return "\n".join(lines)

    def to_frame(self) -> pd.DataFrame:
        """Per-class precision, recall, F1, ROC-AUC and support, one row per class."""
        return pd.DataFrame(
            {
                "precision": self.precision,
                "recall": self.recall,
                "f1": self.f1,
                "roc_auc": self.auc,
                "support": self.confusion.sum(axis=1),
            },
            index=pd.Index(self.classes, name="class"),
        )

    def to_dict(self) -> dict[str, Any]:
        def clean(v: float) -> float | None:
            return None if math.isnan(v) else float(v)

        return {
            "data": self.data,
            "count": self.count,
            "accuracy": self.accuracy,
            "macro_f1": self.macro_f1,
            "macro_roc_auc": clean(self.macro_auc),
            "classes": list(self.classes),
            "per_class": {
                name: {
                    "precision": float(p), "recall": float(r), "f1": float(f),
                    "roc_auc": clean(a), "support": int(s),
                }
                for name, p, r, f, a, s in zip(
                    self.classes, self.precision, self.recall, self.f1, self.auc,
                    self.confusion.sum(axis=1),
                )
            },
            "confusion_matrix": self.confusion.tolist(),
        }

    def save(self, directory: str | Path) -> dict[str, Path]:
        """Write ``metrics.json``, ``per_class.csv``, ``confusion.csv`` and ``confusion.png``."""
        directory = Path(directory).expanduser()
        directory.mkdir(parents=True, exist_ok=True)
        mark_output(directory, kind="evaluation")  # keys are refused in here
        paths = {
            "json": directory / "metrics.json",
            "per_class": directory / "per_class.csv",
            "confusion_csv": directory / "confusion.csv",
            "confusion_png": directory / "confusion.png",
        }
        atomic_write_json(paths["json"], self.to_dict())
        atomic_write_bytes(paths["per_class"], self.to_frame().to_csv().encode())
        frame = pd.DataFrame(
            self.confusion,
            index=pd.Index(self.classes, name="true"),
            columns=pd.Index(self.classes, name="predicted"),
        )
        atomic_write_bytes(paths["confusion_csv"], frame.to_csv().encode())
        atomic_write_bytes(paths["confusion_png"], self._confusion_png())
        return paths

    def _confusion_png(self) -> bytes:
        # A bare Figure with the Agg canvas: no pyplot, so no global backend state is touched.
        n = len(self.classes)
        fig = Figure(figsize=(1.2 * n + 2.5, 1.2 * n + 2))
        FigureCanvasAgg(fig)
        ax = fig.add_subplot()
        rows = self.confusion.sum(axis=1, keepdims=True)
        share = np.divide(self.confusion, rows, out=np.zeros(self.confusion.shape), where=rows > 0)
        image = ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
        for i in range(n):
            for j in range(n):
                ax.text(
                    j, i, str(self.confusion[i, j]), ha="center", va="center",
                    color="white" if share[i, j] > 0.5 else "black",
                )
        ax.set_xticks(range(n), self.classes, rotation=45, ha="right")
        ax.set_yticks(range(n), self.classes)
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        ax.set_title(f"accuracy {self.accuracy:.3f} (n = {self.count})")
        fig.colorbar(image, ax=ax, label="share of the true class")
        fig.tight_layout()
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png", dpi=120)
        return buffer.getvalue()


def scores(
    probabilities: np.ndarray, labels: np.ndarray, *, classes: tuple[str, ...], data: str
) -> EvalResult:
    """Compute every metric of :class:`EvalResult` from class probabilities and true labels."""
    n = len(classes)
    probs = torch.as_tensor(probabilities, dtype=torch.float32)
    target = torch.as_tensor(labels, dtype=torch.int64)
    preds = probs.argmax(dim=1)
    present = np.bincount(labels, minlength=n)
    # One-vs-rest AUC is undefined for a class with no positives or no negatives.
    defined = (present > 0) & (present < len(labels))
    auc = np.full(n, np.nan)
    if defined.any():
        all_auc = multiclass_auroc(probs, target, num_classes=n, average=None).numpy()
        auc[defined] = all_auc[defined]
    return EvalResult(
        classes=classes,
        count=len(labels),
        accuracy=float(multiclass_accuracy(preds, target, num_classes=n, average="micro")),
        macro_f1=float(multiclass_f1_score(preds, target, num_classes=n, average="macro")),
        macro_auc=float(np.nanmean(auc)) if defined.any() else math.nan,
        precision=multiclass_precision(preds, target, num_classes=n, average=None).numpy(),
        recall=multiclass_recall(preds, target, num_classes=n, average=None).numpy(),
        f1=multiclass_f1_score(preds, target, num_classes=n, average=None).numpy(),
        auc=auc,
        confusion=multiclass_confusion_matrix(preds, target, num_classes=n).numpy(),
        data=data,
    )
