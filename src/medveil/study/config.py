"""The study's configuration: one typed, validated object, from YAML plus overrides.

Resolution order: the defaults (the thesis-scale run, meant for a GPU machine), then the
``quick`` profile when asked for (a run that fits a laptop), then a YAML file, then ``--set
section.field=value`` overrides. Every value is checked before any work starts, and an error
names the field (``training.epochs: must be at least 1, got 0``).
"""

from __future__ import annotations

import difflib
import types
import typing
from dataclasses import MISSING, asdict, dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any, get_args, get_origin, get_type_hints

import yaml

from medveil.attacks import list_attacks
from medveil.errors import ConfigError
from medveil.keys import LeftProjection, Preset, RightProjection
from medveil.synthetic import DATASETS
from medveil.training.models import MODELS
from medveil.training.stems import STEMS

__all__ = [
    "ConfigError",
    "DataConfig",
    "EfficiencyConfig",
    "ObfuscationConfig",
    "PrivacyStudyConfig",
    "StudyConfig",
    "SweepConfig",
    "TrainingStudyConfig",
    "load_config",
]


class _Invalid(Exception):
    """Raised by a section's checks with the field name relative to the section."""

    def __init__(self, name: str, message: str) -> None:
        super().__init__(name, message)
        self.name, self.message = name, message


def _require(condition: bool, name: str, message: str) -> None:
    if not condition:
        raise _Invalid(name, message)


@dataclass(frozen=True, kw_only=True)
class DataConfig:
    """Where the images come from.

    ``path`` is a Kaggle-layout folder (class sub-folders, optionally under ``Training/`` and
    ``Testing/``); ``None`` writes the embedded synthetic set ``embedded`` into the run
    (``per_class`` images per class at ``image_size`` pixels, ``test_fraction`` in ``Testing/``).
    """

    path: str | None = None
    embedded: str = "brain-mri"
    per_class: int = 400
    image_size: int = 256
    test_fraction: float = 0.2

    def __post_init__(self) -> None:
        _require(self.embedded in DATASETS, "embedded", f"must be one of {', '.join(DATASETS)}")
        _require(self.per_class >= 4, "per_class", f"must be at least 4, got {self.per_class}")
        _require(self.image_size >= 32, "image_size", f"must be at least 32, got {self.image_size}")
        _require(
            0 < self.test_fraction < 1, "test_fraction", f"must be in (0, 1), got {self.test_fraction}"
        )


@dataclass(frozen=True, kw_only=True)
class ObfuscationConfig:
    """The two presets compared, at working size ``size`` and rank ``rank``.

    ``bits``, ``noise``, ``left`` and ``right`` set the ``multistage`` preset's stages (``bits:
    null`` turns quantization off); ``svd`` is always the plain truncation.
    """

    size: int = 224
    rank: int = 32
    bits: int | None = 8
    noise: float = 0.02
    left: str = "orthogonal"
    right: str = "gaussian"
    calibration_images: int = 512

    def __post_init__(self) -> None:
        _require(self.size >= 8, "size", f"must be at least 8, got {self.size}")
        _require(
            1 <= self.rank <= self.size, "rank", f"must be in [1, size={self.size}], got {self.rank}"
        )
        _require(
            self.bits is None or 1 <= self.bits <= 16, "bits", f"must be in [1, 16] or null, got {self.bits}"
        )
        _require(self.noise >= 0, "noise", f"must be non-negative, got {self.noise}")
        lefts = [str(v) for v in LeftProjection]
        rights = [str(v) for v in RightProjection]
        _require(self.left in lefts, "left", f"must be one of {', '.join(lefts)}, got {self.left!r}")
        _require(
            self.right in rights, "right", f"must be one of {', '.join(rights)}, got {self.right!r}"
        )
        _require(self.calibration_images >= 1, "calibration_images", "must be at least 1")

    def key_params(self, preset: Preset) -> dict[str, Any]:
        """Keyword arguments of :func:`medveil.keys.generate_key` for ``preset``."""
        if preset is Preset.SVD:
            return {"preset": "svd", "size": self.size, "rank": self.rank}
        return {
            "preset": "multistage",
            "size": self.size,
            "rank": self.rank,
            "bits": self.bits,
            "noise": self.noise,
            "left": self.left,
            "right": self.right,
        }


@dataclass(frozen=True, kw_only=True)
class TrainingStudyConfig:
    """The classifiers trained on plaintext and on each preset (same split, same budget)."""

    models: tuple[str, ...] = ("resnet50", "mobilenetv2", "inceptionv3")
    epochs: int = 30
    batch_size: int = 32
    lr: float = 1e-3
    input_size: int | None = None
    patience: int | None = 5
    val_fraction: float = 0.15
    stem: str | None = None

    def __post_init__(self) -> None:
        _require(len(self.models) >= 1, "models", "must name at least one model")
        _require(
            self.stem is None or self.stem in STEMS, "stem",
            f"unknown stem {self.stem!r}; choose from {', '.join(STEMS)} or null (the default: "
            "linear on obfuscated data, resize on plaintext)",
        )
        for model in self.models:
            _require(model in MODELS, "models", f"unknown model {model!r}; choose from {', '.join(MODELS)}")
        _require(self.epochs >= 1, "epochs", f"must be at least 1, got {self.epochs}")
        _require(self.batch_size >= 2, "batch_size", f"must be at least 2, got {self.batch_size}")
        _require(self.lr > 0, "lr", f"must be positive, got {self.lr}")
        _require(
            self.input_size is None or self.input_size >= 16,
            "input_size",
            f"must be at least 16 or null, got {self.input_size}",
        )
        _require(
            self.patience is None or self.patience >= 1, "patience", "must be at least 1 or null"
        )
        _require(0 < self.val_fraction < 1, "val_fraction", "must be in (0, 1)")


@dataclass(frozen=True, kw_only=True)
class SweepConfig:
    """Accuracy against the rank k on the ``multistage`` preset (``ranks: []`` skips it)."""

    ranks: tuple[int, ...] = (1, 2, 4, 8, 16, 32, 64)
    model: str = "resnet50"
    epochs: int = 15

    def __post_init__(self) -> None:
        for k in self.ranks:
            _require(k >= 1, "ranks", f"every rank must be at least 1, got {k}")
        _require(self.model in MODELS, "model", f"unknown model {self.model!r}")
        _require(self.epochs >= 1, "epochs", f"must be at least 1, got {self.epochs}")


@dataclass(frozen=True, kw_only=True)
class PrivacyStudyConfig:
    """The attack suite's sizes and budgets (see :class:`medveil.privacy.PrivacyConfig`)."""

    victims: int = 200
    public: int = 1000
    pairs: tuple[int, ...] = (100, 1000)
    threats: tuple[str, ...] = ("A1", "A2", "A3")
    attacks: tuple[str, ...] = ("all",)
    decoder_steps: int = 2000
    decoder_seconds: float = 600.0
    mda_steps: int = 300

    def __post_init__(self) -> None:
        _require(self.victims >= 1, "victims", f"must be at least 1, got {self.victims}")
        _require(self.public >= 1, "public", f"must be at least 1, got {self.public}")
        _require(all(p >= 1 for p in self.pairs), "pairs", "every count must be at least 1")
        for threat in self.threats:
            _require(threat in ("A1", "A2", "A3"), "threats", f"unknown threat model {threat!r}")
        _require(len(self.threats) >= 1, "threats", "must name at least one threat model")
        for attack in self.attacks:
            _require(
                attack == "all" or attack in list_attacks(),
                "attacks",
                f"unknown attack {attack!r}; choose from all, {', '.join(list_attacks())}",
            )
        _require(self.decoder_steps >= 1, "decoder_steps", "must be at least 1")
        _require(self.decoder_seconds > 0, "decoder_seconds", "must be positive")
        _require(self.mda_steps >= 1, "mda_steps", "must be at least 1")


@dataclass(frozen=True, kw_only=True)
class EfficiencyConfig:
    """How the per-stage timings are taken: ``images`` images in batches, best of ``repeats``."""

    images: int = 256
    batch_size: int = 64
    repeats: int = 3

    def __post_init__(self) -> None:
        _require(self.images >= 1, "images", "must be at least 1")
        _require(self.batch_size >= 1, "batch_size", "must be at least 1")
        _require(self.repeats >= 1, "repeats", "must be at least 1")


@dataclass(frozen=True, kw_only=True)
class StudyConfig:
    """Everything that determines a study run; saved resolved as ``RUN_DIR/config.yaml``."""

    data: DataConfig = field(default_factory=DataConfig)
    obfuscation: ObfuscationConfig = field(default_factory=ObfuscationConfig)
    training: TrainingStudyConfig = field(default_factory=TrainingStudyConfig)
    sweep: SweepConfig = field(default_factory=SweepConfig)
    privacy: PrivacyStudyConfig = field(default_factory=PrivacyStudyConfig)
    efficiency: EfficiencyConfig = field(default_factory=EfficiencyConfig)
    seed: int = 0
    device: str = "auto"

    def __post_init__(self) -> None:
        _require(self.seed >= 0, "seed", f"must be non-negative, got {self.seed}")
        _require(
            self.device in ("auto", "cpu", "cuda") or self.device.startswith("cuda:"),
            "device",
            f"must be auto, cpu or cuda, got {self.device!r}",
        )
        for k in self.sweep.ranks:
            _require(
                k <= self.obfuscation.size,
                "sweep.ranks",
                f"rank {k} exceeds obfuscation.size={self.obfuscation.size}",
            )

    def to_dict(self) -> dict[str, Any]:
        """Plain data (lists for tuples), the form written to ``config.yaml``."""
        return _plain(asdict(self))

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False, default_flow_style=None)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> StudyConfig:
        """Build and validate; a :class:`ConfigError` names the first bad field."""
        return _build(cls, data, prefix="")


#: The ``--quick`` profile: the whole study on the embedded data in a few minutes on 2 cores.
QUICK: dict[str, Any] = {
    "data": {"per_class": 200, "image_size": 128},
    "obfuscation": {"size": 96, "rank": 16, "calibration_images": 256},
    "training": {"models": ["smallcnn"], "epochs": 10, "input_size": 64, "lr": 3e-3,
                 "patience": None},
    "sweep": {"ranks": [2, 8, 32], "model": "smallcnn", "epochs": 10},
    "privacy": {"victims": 40, "public": 100, "pairs": [60], "decoder_steps": 150,
                "decoder_seconds": 30.0, "mda_steps": 40},
    "efficiency": {"images": 128, "batch_size": 64, "repeats": 3},
}


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for name, value in update.items():
        if isinstance(value, dict) and isinstance(merged.get(name), dict):
            merged[name] = _merge(merged[name], value)
        else:
            merged[name] = value
    return merged


def _type_name(kind: Any) -> str:
    return getattr(kind, "__name__", str(kind))


def _coerce(kind: Any, value: Any, name: str) -> Any:
    """Check ``value`` against the annotation ``kind``; YAML lists become tuples."""
    origin = get_origin(kind)
    if origin in (typing.Union, types.UnionType):
        options = get_args(kind)
        if value is None and type(None) in options:
            return None
        (inner,) = [o for o in options if o is not type(None)]
        return _coerce(inner, value, name)
    if origin is tuple:
        inner = get_args(kind)[0]
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            value = [value]  # a single value where a list is expected: `--set training.models=resnet50`
        if not isinstance(value, (list, tuple)):
            raise _Invalid(name, f"must be a list, got {value!r}")
        return tuple(_coerce(inner, v, name) for v in value)
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if kind in (int, float, str, bool) and (
        not isinstance(value, kind) or (kind is not bool and isinstance(value, bool))
    ):
        raise _Invalid(name, f"must be {_type_name(kind)}, got {value!r}")
    return value


def _build(cls: type, data: Any, *, prefix: str) -> Any:
    if not isinstance(data, dict):
        where = prefix.rstrip(".") or "the configuration"
        raise ConfigError(f"{where}: must be a mapping of fields, got {data!r}")
    hints = get_type_hints(cls)
    known = {f.name: f for f in fields(cls)}
    for name in data:
        if name not in known:
            close = difflib.get_close_matches(str(name), list(known), n=1)
            hint = f" (did you mean '{prefix}{close[0]}'?)" if close else ""
            raise ConfigError(
                f"{prefix}{name}: unknown field{hint}; known: {', '.join(known)}"
            )
    values: dict[str, Any] = {}
    for name, spec in known.items():
        kind = hints[name]
        if name not in data:
            if spec.default is MISSING and spec.default_factory is MISSING:
                raise ConfigError(f"{prefix}{name}: missing")
            continue
        if is_dataclass(kind):
            values[name] = _build(kind, data[name], prefix=f"{prefix}{name}.")
            continue
        try:
            values[name] = _coerce(kind, data[name], name)
        except _Invalid as exc:
            raise ConfigError(f"{prefix}{exc.name}: {exc.message}") from None
    try:
        return cls(**values)
    except _Invalid as exc:
        raise ConfigError(f"{prefix}{exc.name}: {exc.message}") from None


def parse_override(text: str) -> dict[str, Any]:
    """``"training.epochs=3"`` to ``{"training": {"epochs": 3}}`` (the value read as YAML)."""
    name, sep, raw = text.partition("=")
    if not sep or not name.strip():
        raise ConfigError(f"{text!r}: an override is SECTION.FIELD=VALUE, e.g. training.epochs=3")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{name.strip()}: cannot read the value {raw!r} ({exc})") from None
    nested: dict[str, Any] = value
    for part in reversed(name.strip().split(".")):
        nested = {part: nested}
    return nested


def load_config(
    path: str | Path | None = None,
    *,
    quick: bool = False,
    overrides: typing.Sequence[str] = (),
    dataset: str | Path | None = None,
) -> StudyConfig:
    """Resolve a study configuration: defaults, ``--quick``, YAML file, overrides, dataset.

    Raises
    ------
    ConfigError
        Unreadable YAML (naming the file), an unknown field or a bad value (naming the field).
    """
    data: dict[str, Any] = _merge({}, QUICK) if quick else {}
    if path is not None:
        path = Path(path).expanduser()
        try:
            loaded = yaml.safe_load(path.read_text())
        except OSError as exc:
            raise ConfigError(f"{path}: cannot read the configuration ({exc.strerror})") from None
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path}: not valid YAML ({exc})") from None
        if loaded is not None and not isinstance(loaded, dict):
            raise ConfigError(f"{path}: the configuration must be a mapping of sections")
        data = _merge(data, loaded or {})
    for text in overrides:
        data = _merge(data, parse_override(text))
    if dataset is not None:
        data = _merge(data, {"data": {"path": str(dataset)}})
    return StudyConfig.from_dict(data)
