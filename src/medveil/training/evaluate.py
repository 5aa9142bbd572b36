"""Evaluation of a trained run on test data, and the hospital-side prediction path.

:func:`evaluate` scores a run's best weights (accuracy, macro-F1, per-class precision and
recall, one-vs-rest ROC-AUC, confusion matrix). :func:`predict` obfuscates new plaintext images
with the custodian's key and classifies them; a key other than the one the model was trained
under is refused, since its arrays would be meaningless to the model.
"""

from __future__ import annotations

import io
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from torch import nn
from torchmetrics.functional.classification import (
    multiclass_accuracy,
    multiclass_auroc,
    multiclass_confusion_matrix,
    multiclass_f1_score,
    multiclass_precision,
    multiclass_recall,
)

from medveil.atomic import atomic_write_bytes, atomic_write_json
from medveil.errors import (
    ConfigError,
    DatasetLayoutError,
    InvalidKeyError,
    LoadError,
    RunError,
)
from medveil.keys import Key
from medveil.machine import resolve_device
from medveil.obfuscator import Obfuscator
from medveil.outputs import mark_output
from medveil.training.data import (
    ArrayTable,
    DataSource,
    SplitPlan,
    Standardisation,
    open_data,
    to_model_input,
)
from medveil.training.models import create_model
from medveil.training.train import RUN_FORMAT

__all__ = ["EvalResult", "Predictions", "TrainedRun", "evaluate", "load_run", "predict", "scores"]


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


def _check_compatible(run: TrainedRun, source: DataSource) -> None:
    if source.kind != run.kind:
        raise RunError(
            f"{run.run_dir}: the model was trained on {run.kind} data; the data given is "
            f"{source.kind}"
        )
    if source.kind == "obfuscated" and source.key_fingerprint != run.key_fingerprint:
        raise RunError(
            f"this model was trained under key fingerprint {run.key_fingerprint}; the data given "
            f"was obfuscated under {source.key_fingerprint}"
        )
    if source.classes != run.classes:
        raise RunError(
            f"class mismatch: the model has {list(run.classes)}, the data {list(source.classes)}"
        )


def _select(
    run: TrainedRun, source: DataSource, split: str | None
) -> tuple[ArrayTable, np.ndarray, str]:
    if split is not None:
        if split not in source.tables:
            raise DatasetLayoutError(f"no split {split!r} in the data (has {', '.join(source.tables)})")
        table = source.tables[split]
        return table, np.arange(len(table.labels)), f"split {split!r}"
    if source.identity == run.info["data"]["identity"]:
        plan = SplitPlan.from_dict(json.loads((run.run_dir / "splits.json").read_text()))
        if "test" not in plan.parts:
            raise DatasetLayoutError(
                f"{run.run_dir}: the run held out no test split (test_fraction 0); evaluate on "
                "separate test data or name a split"
            )
        name, indices = plan.parts["test"]
        return source.tables[name], indices, "the run's held-out test split"
    for name in ("test", "all"):
        if name in source.tables:
            table = source.tables[name]
            return table, np.arange(len(table.labels)), f"split {name!r}"
    raise DatasetLayoutError(
        f"the data has no 'test' or 'all' split (has {', '.join(source.tables)}); name one"
    )


def evaluate(
    run_dir: str | Path,
    data: DataSource | str | Path,
    *,
    split: str | None = None,
    batch_size: int = 64,
    device: str = "auto",
    checkpoint: str = "best",
) -> EvalResult:
    """Score a run's best weights on test data.

    Parameters
    ----------
    run_dir : str or Path
        A finished training run.
    data : DataSource, str or Path
        Test data of the run's kind (a store under the same key, or a plaintext folder). When it
        is the data the run was trained on, the run's held-out test split is used.
    split : str, optional
        Score this whole split of ``data`` instead (e.g. ``"test"``, ``"all"``).
    batch_size : int, default 64
    device : str, default "auto"
    checkpoint : {"best", "last"}
        Score the selected epoch's weights (the default) or the latest epoch's, e.g. to follow a
        run while it trains (see :func:`load_run`).

    Raises
    ------
    RunError
        ``run_dir`` is not a finished run, or the data is of the other kind, obfuscated under
        another key, or has other classes.
    DatasetLayoutError
        The data has no split to score.

    Examples
    --------
    On the data it was trained on, a run is scored on its own held-out test split:

    >>> import tempfile
    >>> from pathlib import Path
    >>> import numpy as np
    >>> from medveil.synthetic.write import write_dataset
    >>> from medveil.training import TrainConfig, evaluate, train
    >>> config = TrainConfig(model="smallcnn", epochs=1, batch_size=4, input_size=32, device="cpu")
    >>> with tempfile.TemporaryDirectory() as folder:
    ...     data = write_dataset("ovary-us", Path(folder) / "data", per_class=8, size=32)
    ...     run = train(data.path, config=config, run_dir=Path(folder) / "run")
    ...     scores = evaluate(run.run_dir, data.path, device="cpu")
    >>> scores.classes, scores.count == run.split_sizes["test"]
    (('infected', 'notinfected'), True)
    >>> bool(scores.accuracy == np.trace(scores.confusion) / scores.count)
    True
    """
    run = load_run(run_dir, checkpoint=checkpoint)
    source = open_data(data, image_size=run.input_size)
    _check_compatible(run, source)
    table, indices, description = _select(run, source, split)
    if len(indices) == 0:
        raise DatasetLayoutError("nothing to evaluate: the selected split is empty")
    dev = resolve_device(device)
    # Read in chunks: a lazily loaded folder or a large store never sits in memory whole.
    probs = np.concatenate([
        run.probabilities(table.arrays(indices[lo : lo + batch_size]), device=dev)
        for lo in range(0, len(indices), batch_size)
    ])
    return scores(probs, table.labels[indices], classes=run.classes, data=description)


@dataclass(frozen=True)
class Predictions:
    """Predicted classes and probabilities of a batch of images."""

    classes: tuple[str, ...]
    labels: np.ndarray
    probabilities: np.ndarray

    @property
    def names(self) -> list[str]:
        return [self.classes[i] for i in self.labels]


def predict(
    run_dir: str | Path,
    images: np.ndarray,
    key: Key | None,
    *,
    batch_size: int = 64,
    device: str = "auto",
    noise_seed: int | None = None,
) -> Predictions:
    """Classify new plaintext images; for an obfuscated run, obfuscate them with ``key`` first.

    Parameters
    ----------
    run_dir : str or Path
        A finished training run.
    images : numpy.ndarray
        ``(B, n, n)`` plaintext images in [0, 1]; ``n`` is the key's working size for an
        obfuscated run.
    key : Key or None
        The custodian's key the run's training data was obfuscated with; ``None`` for a run
        trained on plaintext.
    noise_seed : int, optional
        Pins the obfuscation noise (tests and reproducibility studies only).

    Raises
    ------
    InvalidKeyError
        The key's fingerprint differs from the run's, or a key is missing for an obfuscated run
        or given for a plaintext one.
    LoadError
        The images have the wrong shape or range.
    """
    run = load_run(run_dir)
    images = np.asarray(images, dtype=np.float32)
    if images.ndim != 3:
        raise LoadError(f"expected images (B, n, n), got shape {images.shape}")
    if run.kind == "obfuscated":
        if key is None:
            raise InvalidKeyError(
                f"this model was trained on data obfuscated under key fingerprint "
                f"{run.key_fingerprint}; pass that key to obfuscate the images"
            )
        if key.fingerprint != run.key_fingerprint:
            raise InvalidKeyError(
                f"this model was trained under key fingerprint {run.key_fingerprint}; "
                f"the key given has {key.fingerprint}"
            )
        arrays = Obfuscator(key, noise_seed=noise_seed)(images)
    else:
        if key is not None:
            raise InvalidKeyError("this model was trained on plaintext images; predict without a key")
        if images.size and not (
            np.isfinite(images).all() and images.min() >= 0 and images.max() <= 1
        ):
            raise LoadError(
                f"images must be finite and lie in [0, 1], got values in "
                f"[{images.min():.4g}, {images.max():.4g}]"
            )
        arrays = images
    probs = run.probabilities(arrays, batch_size=batch_size, device=resolve_device(device))
    return Predictions(classes=run.classes, labels=probs.argmax(axis=1), probabilities=probs)
