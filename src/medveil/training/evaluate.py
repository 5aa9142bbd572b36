"""Evaluation of a trained run on test data, and the hospital-side prediction path.

:func:`evaluate` scores a run's best weights (accuracy, macro-F1, per-class precision and
recall, one-vs-rest ROC-AUC, confusion matrix: :mod:`medveil.training.scoring`) of a run read
back by :func:`~medveil.training.runs.load_run`. :func:`predict` obfuscates new plaintext images
with the custodian's key and classifies them; a key other than the one the model was trained
under is refused, since its arrays would be meaningless to the model.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from medveil.errors import DatasetLayoutError, InvalidKeyError, LoadError, RunError
from medveil.keys import Key
from medveil.machine import resolve_device
from medveil.obfuscator import Obfuscator
from medveil.training.runs import TrainedRun, load_run
from medveil.training.scoring import EvalResult, scores
from medveil.training.sources import ArrayTable, DataSource, open_data
from medveil.training.splits import SplitPlan

__all__ = ["EvalResult", "Predictions", "TrainedRun", "evaluate", "load_run", "predict", "scores"]


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
