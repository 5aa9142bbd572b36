"""A training run's settings: :class:`TrainConfig`, its bounds and its data-dependent defaults."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any, Literal

from medveil.errors import ConfigError
from medveil.training.data import AUGMENTATIONS, DataSource
from medveil.training.models import get_spec
from medveil.training.stems import STEMS, default_stem

__all__ = ["TrainConfig"]


def _check(condition: bool, field: str, problem: str) -> None:
    if not condition:
        raise ConfigError(problem, field=field)


@dataclass(frozen=True, kw_only=True)
class TrainConfig:
    """Everything that determines a training run.

    Parameters
    ----------
    model : str
        ``resnet50``, ``mobilenetv2``, ``inceptionv3`` or ``smallcnn``.
    epochs : int
        Maximum number of epochs.
    batch_size : int
        Examples per optimisation step (the last incomplete batch of an epoch is dropped).
    lr, weight_decay : float
        AdamW's peak learning rate and decoupled weight decay.
    schedule : {"onecycle", "cosine"}
        Per-step learning-rate schedule: one-cycle (30% warm-up) or cosine decay to 0.
    seed : int
        Seeds the weights, the splits, shuffling and augmentation.
    device : str
        ``cpu``, ``cuda`` or ``auto``.
    patience : int or None
        Stop after this many epochs without a better validation score (see ``selection``),
        counted only after the learning-rate peak; ``None`` never stops early.
    selection : {"val_acc", "val_loss"}
        Which epoch ``best.pt`` keeps: the highest validation accuracy (ties: lower loss), or the
        lowest validation loss.
    stem : str or None
        The model's input stem (:mod:`medveil.training.stems`): ``linear`` (learned, started
        as a resize), ``fitted`` (learned, started from the principal axes of the training
        arrays' rows and columns) or ``resize``; ``None`` picks ``linear`` for obfuscated data
        and ``resize`` for plaintext.
    stem_lr_scale : float
        The stem's peak learning rate as a multiple of ``lr`` (its own AdamW parameter group,
        under the same schedule); 1 trains it with the backbone's rate.
    val_fraction : float
        Stratified fraction of the training data held out for validation (when the data has no
        ``val`` split of its own).
    test_fraction : float
        Stratified fraction held out for testing when the data has no ``test`` split.
    input_size : int or None
        Side of the model's square input; ``None`` takes the architecture's default.
    weights : Path or None
        Local state dict to start from (see :func:`medveil.training.models.load_weights`).
    num_workers : int
        ``DataLoader`` worker processes (0 reads in the training process).
    augment : str
        ``none`` (the default, on plaintext and obfuscated data alike: see
        :mod:`medveil.training.data` for the measurement), ``flip`` or ``flip-shift``.
    normalisation : {"dataset", "model"}
        ``dataset``: standardise with the training split's mean and std; ``model``: use the
        constants the architecture's pretrained weights expect (plaintext only).

    Examples
    --------
    Each bound names its field; ``config.json`` holds :meth:`to_dict` and reads back equal:

    >>> TrainConfig(epochs=0)
    Traceback (most recent call last):
        ...
    medveil.errors.ConfigError: epochs: must be at least 1, got 0
    >>> config = TrainConfig(model="smallcnn", epochs=3, schedule="cosine")
    >>> TrainConfig.from_dict(config.to_dict()) == config
    True
    """

    model: str = "smallcnn"
    epochs: int = 10
    batch_size: int = 32
    lr: float = 1e-3
    weight_decay: float = 1e-4
    schedule: Literal["onecycle", "cosine"] = "onecycle"
    seed: int = 0
    device: str = "auto"
    patience: int | None = 5
    val_fraction: float = 0.15
    test_fraction: float = 0.2
    input_size: int | None = None
    weights: Path | None = None
    num_workers: int = 0
    augment: str = "none"
    normalisation: Literal["dataset", "model"] = "dataset"
    selection: Literal["val_acc", "val_loss"] = "val_acc"
    stem: str | None = None
    stem_lr_scale: float = 1.0

    def __post_init__(self) -> None:
        # Each check names its field (ConfigError.field): the study reports it as training.FIELD.
        try:
            spec = get_spec(self.model)
        except ValueError as exc:
            raise ConfigError(str(exc), field="model") from None
        _check(self.epochs >= 1, "epochs", f"must be at least 1, got {self.epochs}")
        # A batch of one example breaks batch normalisation.
        _check(self.batch_size >= 2, "batch_size", f"must be at least 2, got {self.batch_size}")
        _check(self.lr > 0, "lr", f"must be positive, got {self.lr}")
        _check(self.weight_decay >= 0, "weight_decay", f"must be non-negative, got {self.weight_decay}")
        _check(
            self.schedule in ("onecycle", "cosine"), "schedule",
            f"must be 'onecycle' or 'cosine', got {self.schedule!r}",
        )
        _check(
            self.patience is None or self.patience >= 1, "patience",
            f"must be at least 1 (or None to disable early stopping), got {self.patience}",
        )
        _check(
            0 < self.val_fraction < 1, "val_fraction", f"must be in (0, 1), got {self.val_fraction}"
        )
        _check(
            0 <= self.test_fraction < 1, "test_fraction",
            f"must be in [0, 1), got {self.test_fraction}",
        )
        _check(
            self.input_size is None or self.input_size >= spec.min_input_size, "input_size",
            f"must be at least {spec.min_input_size} for {self.model} (or None for its default "
            f"{spec.input_size}), got {self.input_size}",
        )
        _check(self.num_workers >= 0, "num_workers", f"must be non-negative, got {self.num_workers}")
        _check(
            self.augment in AUGMENTATIONS, "augment",
            f"must be one of {', '.join(AUGMENTATIONS)}, got {self.augment!r}",
        )
        _check(
            self.normalisation in ("dataset", "model"), "normalisation",
            f"must be 'dataset' or 'model', got {self.normalisation!r}",
        )
        _check(
            self.selection in ("val_acc", "val_loss"), "selection",
            f"must be 'val_acc' or 'val_loss', got {self.selection!r}",
        )
        _check(
            self.stem is None or self.stem in STEMS, "stem",
            f"must be one of {', '.join(STEMS)} (or None), got {self.stem!r}",
        )
        _check(
            self.stem_lr_scale > 0, "stem_lr_scale", f"must be positive, got {self.stem_lr_scale}"
        )
        if self.weights is not None:
            object.__setattr__(self, "weights", Path(self.weights))

    def resolve(self, data: DataSource) -> TrainConfig:
        """Fill in the defaults that depend on the model and the data."""
        spec = get_spec(self.model)
        if self.normalisation == "model" and data.kind != "plaintext":
            raise ConfigError(
                "normalisation='model' applies to plaintext images in [0, 1]; obfuscated data "
                "is standardised on its training split (normalisation='dataset')"
            )
        return replace(
            self,
            input_size=self.input_size or spec.input_size,
            stem=self.stem or default_stem(data.kind),
        )

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["weights"] = None if self.weights is None else str(self.weights)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"unknown training setting(s): {', '.join(unknown)}")
        return cls(**data)
