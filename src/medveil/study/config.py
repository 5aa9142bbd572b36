"""The study's configuration: one typed, validated object, from YAML plus overrides.

Resolution order: the defaults (the thesis-scale run, meant for a GPU machine), then the
``quick`` profile when asked for (a run that fits a laptop), then a YAML file, then ``--set
section.field=value`` overrides. Every value is checked before any work starts, and an error
names the field (``training.epochs: must be at least 1, got 0``).

The ``obfuscation``, ``training`` and ``privacy`` sections are the library's own configuration
classes (:class:`medveil.keys.SchemeParams`, :class:`medveil.training.TrainConfig`,
:class:`medveil.privacy.PrivacyConfig`) with the few fields the study adds. Every field of
theirs is a key of the section, checked by the library class itself (its
:class:`~medveil.errors.ConfigError` names the field, which is reported under the section),
except the fields the study sets itself, listed in each section's ``STUDY_SETS`` (the preset,
the model, the seed, the device): those keep the library's default in the section and are
filled in by :meth:`StudyConfig.scheme`, :meth:`StudyConfig.train_config` and
:meth:`StudyConfig.privacy_config`, which build what the study runs.
"""

from __future__ import annotations

import difflib
import re
import types
import typing
from dataclasses import MISSING, asdict, dataclass, field, fields, is_dataclass
from enum import Enum
from pathlib import Path
from typing import Any, ClassVar, get_args, get_origin, get_type_hints

import yaml

from medveil.errors import ConfigError
from medveil.keys import NAMED_SETTINGS, Preset, SchemeParams
from medveil.privacy import PrivacyConfig
from medveil.study.presets import DEFAULT_PRESETS, PRESET_NAMES, recorded_presets
from medveil.synthetic import DATASETS
from medveil.training.train import TrainConfig

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


def _require(condition: bool, name: str, message: str) -> None:
    if not condition:
        raise ConfigError(message, field=name)


def _renamed(error: ConfigError, names: dict[str, str], *, prefix: str = "") -> ConfigError:
    """``error`` with its field named as the study names it: ``names[field]``, or under
    ``prefix``."""
    if error.field is None:
        return ConfigError(f"{prefix.rstrip('.')}: {error}" if prefix else str(error))
    return ConfigError(error.problem, field=names.get(error.field, f"{prefix}{error.field}"))


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
class ObfuscationConfig(SchemeParams):
    """The ``multistage`` key's :class:`~medveil.keys.SchemeParams`, and its calibration.

    The study draws one key per entry of ``presets`` (:meth:`scheme`): ``multistage`` with
    these parameters; ``svd`` (stage 1 only) with the same ``size``, ``rank``, ``solver`` and
    ``block_size`` (unused by stage 1, but bounded by ``size``); a named setting
    (:data:`medveil.keys.NAMED_SETTINGS`) with these parameters and the setting's own in their
    place. The keys that need it are calibrated on ``calibration_images`` training images.
    """

    #: Fields the study sets itself, and where from.
    STUDY_SETS: ClassVar[dict[str, str]] = {"preset": "one key per entry of presets"}

    calibration_images: int = 512

    def __post_init__(self) -> None:
        super().__post_init__()
        _require(
            self.calibration_images >= 1, "calibration_images",
            f"must be at least 1, got {self.calibration_images}",
        )

    def scheme(self, preset: Preset | str) -> SchemeParams:
        """The parameters of the study's key for ``preset`` (a name in ``PRESET_NAMES``).

        Examples
        --------
        >>> params = ObfuscationConfig(size=64, rank=8).scheme("private")
        >>> str(params.preset), params.size, params.rank, params.bits, params.dp_epsilon
        ('multistage', 64, 8, None, 2.0)
        """
        if preset == Preset.SVD:
            return SchemeParams.for_preset(
                Preset.SVD, size=self.size, rank=self.rank, solver=self.solver,
                block_size=self.block_size,
            )
        own = {f.name: getattr(self, f.name) for f in fields(SchemeParams) if f.name != "preset"}
        if preset in NAMED_SETTINGS:
            setting = NAMED_SETTINGS[str(preset)]
            return SchemeParams.for_preset(
                str(preset), **{k: v for k, v in own.items() if k not in setting}
            )
        return SchemeParams(preset=Preset(preset), **own)


@dataclass(frozen=True, kw_only=True)
class TrainingStudyConfig(TrainConfig):
    """The classifiers ``models``, each trained with this :class:`~medveil.training.TrainConfig`
    on plaintext and on each preset (same split, same budget)."""

    #: Fields the study sets itself, and the study keys they come from.
    STUDY_SETS: ClassVar[dict[str, str]] = {
        "model": "training.models",
        "seed": "seed",
        "device": "device",
        "test_fraction": "data.test_fraction",
    }

    epochs: int = 30
    models: tuple[str, ...] = ("resnet50", "mobilenetv2", "inceptionv3")

    def __post_init__(self) -> None:
        _require(len(self.models) >= 1, "models", "must name at least one model")
        # TrainConfig's checks, once per model: the input size, say, must suit each.
        for model in self.models:
            try:
                self.train_config(model=model)
            except ConfigError as exc:
                raise _renamed(exc, {"model": "models"}) from None

    def train_config(self, **study_sets: Any) -> TrainConfig:
        """This recipe as a :class:`~medveil.training.TrainConfig`, with the fields the study
        sets (``model``, ``seed``, ...) given as keywords."""
        own = {f.name: getattr(self, f.name) for f in fields(TrainConfig)}
        return TrainConfig(**{**own, **study_sets})


@dataclass(frozen=True, kw_only=True)
class PrivacyStudyConfig(PrivacyConfig):
    """The attack suite's :class:`~medveil.privacy.PrivacyConfig` (sizes and budgets)."""

    #: Fields the study sets itself, and the study keys they come from.
    STUDY_SETS: ClassVar[dict[str, str]] = {"seed": "seed", "device": "device"}


@dataclass(frozen=True, kw_only=True)
class SweepConfig:
    """Accuracy against the rank k on the ``multistage`` preset (``ranks: []`` skips it)."""

    ranks: tuple[int, ...] = (1, 2, 4, 8, 16, 32, 64)
    model: str = "resnet50"
    epochs: int = 15

    def __post_init__(self) -> None:
        # model and epochs are checked as a TrainConfig's by StudyConfig.
        for k in self.ranks:
            _require(k >= 1, "ranks", f"every rank must be at least 1, got {k}")


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
    presets: tuple[str, ...] = DEFAULT_PRESETS
    seed: int = 0
    device: str = "auto"

    def __post_init__(self) -> None:
        _require(len(self.presets) >= 1, "presets", "must name at least one preset")
        for name in self.presets:
            _require(
                name in PRESET_NAMES, "presets",
                f"unknown preset '{name}'; valid: {', '.join(PRESET_NAMES)}",
            )
            _require(
                self.presets.count(name) == 1, "presets", f"'{name}' is named more than once"
            )
            try:
                self.scheme(name)
            except ConfigError as exc:
                raise ConfigError(f"{name}: {exc}", field="presets") from None
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
        try:
            self.train_config(self.sweep.model, epochs=self.sweep.epochs)
        except ConfigError as exc:
            names = {**self.training.STUDY_SETS, "model": "sweep.model", "epochs": "sweep.epochs"}
            raise _renamed(exc, names, prefix="training.") from None

    def scheme(self, preset: Preset | str) -> SchemeParams:
        """The parameters of the study's key for ``preset``."""
        return self.obfuscation.scheme(preset)

    def train_config(self, model: str, *, epochs: int | None = None) -> TrainConfig:
        """The :class:`~medveil.training.TrainConfig` of a study run of ``model`` (``epochs``
        defaults to ``training.epochs``; the rank sweep gives its own)."""
        return self.training.train_config(
            model=model, epochs=self.training.epochs if epochs is None else epochs,
            seed=self.seed, device=self.device, test_fraction=self.data.test_fraction,
        )

    def privacy_config(self) -> PrivacyConfig:
        """The attack suite's :class:`~medveil.privacy.PrivacyConfig`."""
        own = {f.name: getattr(self.privacy, f.name) for f in fields(PrivacyConfig)}
        return PrivacyConfig(**{**own, "seed": self.seed, "device": self.device})

    def to_dict(self) -> dict[str, Any]:
        """Plain data (lists for tuples), the form written to ``config.yaml``; the fields the
        study sets itself (each section's ``STUDY_SETS``) are left out."""
        data = _plain(asdict(self))
        for f in fields(self):
            for name in getattr(getattr(self, f.name), "STUDY_SETS", {}):
                del data[f.name][name]
        return data

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False, default_flow_style=None)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> StudyConfig:
        """Build and validate; a :class:`ConfigError` names the first bad field."""
        return _build(cls, data, prefix="")

    @classmethod
    def from_saved(cls, data: dict[str, Any]) -> StudyConfig:
        """The configuration a study saved in its ``config.yaml``: as :meth:`from_dict`, with
        the presets it ran (:func:`recorded_presets`) where it predates ``presets``."""
        return cls.from_dict({**data, "presets": list(recorded_presets(data))})


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
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, Path):
        return str(value)
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


_EXPONENT = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+")


def _coerce(kind: Any, value: Any, name: str) -> Any:
    """Check ``value`` against the annotation ``kind``; YAML lists become tuples.

    Enumerations and literals pass as they are: the library class checks their values.
    """
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
            raise ConfigError(f"must be a list, got {value!r}", field=name)
        return tuple(_coerce(inner, v, name) for v in value)
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if kind is float and isinstance(value, str) and _EXPONENT.fullmatch(value):
        return float(value)  # YAML 1.1 reads 1e-3 (no dot) as a string
    if kind is Path:
        kind = str
    if kind in (int, float, str, bool) and (
        not isinstance(value, kind) or (kind is not bool and isinstance(value, bool))
    ):
        raise ConfigError(f"must be {_type_name(kind)}, got {value!r}", field=name)
    return value


def _build(cls: type, data: Any, *, prefix: str) -> Any:
    if not isinstance(data, dict):
        where = prefix.rstrip(".") or "the configuration"
        raise ConfigError(f"{where}: must be a mapping of fields, got {data!r}")
    hints = get_type_hints(cls)
    study_sets: dict[str, str] = getattr(cls, "STUDY_SETS", {})
    known = {f.name: f for f in fields(cls) if f.name not in study_sets}
    for name in data:
        if name in study_sets:
            raise ConfigError(
                f"set by the study ({study_sets[name]}), not in this section", field=prefix + name
            )
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
        except ConfigError as exc:
            raise _renamed(exc, {}, prefix=prefix) from None
    try:
        return cls(**values)
    except ConfigError as exc:
        # Library classes raise KeyParameterError and other ConfigErrors naming their field.
        raise _renamed(exc, {}, prefix=prefix) from None


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
