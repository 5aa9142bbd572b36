"""The public parameters of the obfuscation scheme and the constants calibration fixes.

:class:`SchemeParams` holds every parameter a key is used with (validated once, here);
:class:`Calibration` the constants fixed per key from a calibration batch. Both are written into
key files by :mod:`medveil.keys`, which adds the secret.

Examples
--------
>>> from medveil.scheme import SchemeParams
>>> params = SchemeParams.for_preset("svd", size=32, rank=8)
>>> params.out_shape, params.needs_calibration
((32, 8), False)
>>> SchemeParams.for_preset("dp-svd", size=32, rank=8).dp_epsilon
1.0
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from enum import StrEnum
from typing import Any

import numpy as np

from medveil.errors import InvalidKeyError, KeyParameterError
from medveil.stages import Solver

__all__ = [
    "NAMED_SETTINGS",
    "OPTIONAL_PARAMS",
    "Calibration",
    "LeftProjection",
    "Preset",
    "RightProjection",
    "SchemeParams",
]


class Preset(StrEnum):
    SVD = "svd"
    MULTISTAGE = "multistage"


class LeftProjection(StrEnum):
    NONE = "none"
    ORTHOGONAL = "orthogonal"
    BLOCK = "block"


class RightProjection(StrEnum):
    NONE = "none"
    GAUSSIAN = "gaussian"


@dataclass(frozen=True, kw_only=True)
class SchemeParams:
    """Every public parameter of the obfuscation scheme.

    Parameters
    ----------
    preset
        ``svd`` (stage 1 only, the prior scheme) or ``multistage`` (stages 1-4).
    size
        Working size ``n``: images are resized to ``n x n``.
    rank
        ``k``, the number of singular triplets kept.
    bits
        ``b`` for the uniform quantizer, or ``None`` to skip quantization.
    noise
        ``eta``: Gaussian noise of standard deviation ``eta * c`` is added (0 switches it off).
    left, right
        Which keyed projections are applied, ``Y = R_L Z R_R``: ``R_L`` dense Haar orthogonal
        (``orthogonal``), block-diagonal with Haar blocks of ``block_size`` rows (``block``), or
        none; ``R_R`` Gaussian with N(0, 1/k) entries, or none.
    block_size
        Rows per block of a ``block`` left projection.
    width
        ``m``, the number of columns of ``R_R`` (defaults to ``n``).
    clip_percentile
        Percentile of ``|Z|`` over the calibration batch that fixes the quantizer range ``c``.
    solver
        How the truncated SVD is computed (:class:`medveil.stages.Solver`).
    dp_epsilon
        ``epsilon`` of the Laplace mechanism on the k singular values, after Fan (ICME 2019,
        DP-SVD), or ``None`` to keep them exact. Each singular value gets noise of scale
        ``sqrt(k) / epsilon``; by Mirsky's inequality the spectrum is then
        ``epsilon``-metric-private under the Frobenius image distance (pixels in [0, 1]):
        ``P(s | X) <= exp(epsilon * ||X - X'||_F) P(s | X')``. The singular vectors carry no
        formal guarantee (:func:`medveil.stages.perturb_spectrum`).
    """

    preset: Preset = Preset.MULTISTAGE
    size: int = 224
    rank: int = 32
    bits: int | None = 8
    noise: float = 0.02
    left: LeftProjection = LeftProjection.ORTHOGONAL
    right: RightProjection = RightProjection.GAUSSIAN
    width: int | None = None
    block_size: int = 16
    clip_percentile: float = 99.9
    solver: Solver = Solver.SUBSPACE
    dp_epsilon: float | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "preset", _enum(Preset, self.preset, "preset"))
        object.__setattr__(self, "solver", _enum(Solver, self.solver, "solver"))
        object.__setattr__(self, "left", _enum(LeftProjection, self.left, "left"))
        object.__setattr__(self, "right", _enum(RightProjection, self.right, "right"))
        # Each message names its field (KeyParameterError.field), so that the study can report
        # a bad ``obfuscation.rank`` under its own name.
        if not _is_int(self.size) or self.size < 2:
            raise KeyParameterError(f"must be an integer >= 2, got {self.size!r}", field="size")
        if not _is_int(self.rank):
            raise KeyParameterError(f"must be an integer, got {self.rank!r}", field="rank")
        if not 1 <= self.rank <= self.size:
            raise KeyParameterError(
                f"must be in [1, size={self.size}], got {self.rank!r}", field="rank"
            )
        if self.bits is not None and (not _is_int(self.bits) or not 1 <= self.bits <= 16):
            raise KeyParameterError(
                f"must be an integer in [1, 16] or None, got {self.bits!r}", field="bits"
            )
        if not (isinstance(self.noise, (int, float)) and 0.0 <= self.noise < 10.0):
            raise KeyParameterError(f"must be a number in [0, 10), got {self.noise!r}", field="noise")
        if self.width is not None and (not _is_int(self.width) or self.width < 1):
            raise KeyParameterError(
                f"must be a positive integer or None, got {self.width!r}", field="width"
            )
        if not _is_int(self.block_size) or not 1 <= self.block_size <= self.size:
            raise KeyParameterError(
                f"must be an integer in [1, size={self.size}], got {self.block_size!r}",
                field="block_size",
            )
        if not (
            isinstance(self.clip_percentile, (int, float)) and 50.0 <= self.clip_percentile <= 100.0
        ):
            raise KeyParameterError(
                f"must be in [50, 100], got {self.clip_percentile!r}", field="clip_percentile"
            )
        if self.dp_epsilon is not None and not (
            isinstance(self.dp_epsilon, (int, float)) and 0.0 < self.dp_epsilon <= 1e6
        ):
            raise KeyParameterError(
                f"must be a number in (0, 1e6] or None, got {self.dp_epsilon!r}",
                field="dp_epsilon",
            )
        if self.preset is Preset.SVD and (
            self.bits is not None
            or self.noise
            or self.left is not LeftProjection.NONE
            or self.right is not RightProjection.NONE
        ):
            raise InvalidKeyError(
                "the 'svd' preset is stage 1 only: bits=None, noise=0, left='none', right='none'"
            )

    @property
    def out_width(self) -> int:
        """Number of columns of the obfuscated array."""
        if self.right is RightProjection.GAUSSIAN:
            return self.width or self.size
        return self.rank

    @property
    def out_shape(self) -> tuple[int, int]:
        return (self.size, self.out_width)

    @property
    def needs_calibration(self) -> bool:
        return self.preset is Preset.MULTISTAGE

    @classmethod
    def for_preset(cls, preset: Preset | str, **overrides: Any) -> SchemeParams:
        """Defaults of a preset, with explicit overrides (``bits=None`` switches quantization off).

        ``preset`` may also name a setting of the multistage stages (:data:`NAMED_SETTINGS`):
        the key then records ``multistage`` and the setting's parameters.
        """
        if isinstance(preset, str) and preset in NAMED_SETTINGS:
            return cls(preset=Preset.MULTISTAGE, **{**NAMED_SETTINGS[preset], **overrides})
        preset = _enum(Preset, preset, "preset")
        if preset is Preset.SVD:
            base: dict[str, Any] = dict(
                bits=None, noise=0.0, left=LeftProjection.NONE, right=RightProjection.NONE
            )
        else:
            base = {}
        base.update(overrides)
        return cls(preset=preset, **base)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        for name in ("preset", "left", "right", "solver"):
            data[name] = str(data[name])
        # Fields added after key files existed are written only when set, so that the
        # fingerprint (a hash of this dict) of every older key stays what its file says.
        for name, absent in OPTIONAL_PARAMS.items():
            if data[name] == absent:
                del data[name]
        return data


#: Named settings of the multistage stages, accepted wherever a preset name is.
#: ``private``: DP-SVD at epsilon 2 (as ``dp-svd``, with half its spectrum noise), chosen on the
#: measured accuracy-privacy frontier (``benchmarks/frontier.py``, docs/RESULTS.md) as the most
#: accurate setting that keeps keyless re-identification at or below 1% and keyless look-alikes
#: at or below the mean-image yardstick; it costs accuracy (no setting met the 5-point target).
#: ``balanced``: DP-SVD at epsilon 4, the frontier point that keeps the default's accuracy (within
#: a point, inside the spread over keys) at a tenth of its keyless re-identification, with
#: look-alikes just below the yardstick; it misses the 1% re-identification target, so it is not
#: ``private``. Measured with the small CNN on brain MRI only, so it is not (yet) the default.
#: ``dp-svd``: the spectrum gets DP-SVD's Laplace noise (provable for the singular values, see
#: ``SchemeParams.dp_epsilon``) in place of quantization and entry noise; the keyed projections
#: stay, because the singular vectors have no formal protection of their own.
NAMED_SETTINGS: dict[str, dict[str, Any]] = {
    "private": dict(bits=None, noise=0.0, dp_epsilon=2.0),
    "balanced": dict(bits=None, noise=0.0, dp_epsilon=4.0),
    "dp-svd": dict(bits=None, noise=0.0, dp_epsilon=1.0),
}

#: Parameters that a key file may omit, with the value their absence means.
OPTIONAL_PARAMS: dict[str, Any] = {"dp_epsilon": None}


@dataclass(frozen=True, kw_only=True)
class Calibration:
    """Constants fixed once per key from a calibration batch.

    ``clip`` is the quantizer range ``c``; ``mean`` and ``std`` standardise the projected output.
    """

    clip: float
    mean: float
    std: float
    images: int

    def __post_init__(self) -> None:
        for name in ("clip", "mean", "std"):
            value = getattr(self, name)
            if not np.isfinite(value):
                raise InvalidKeyError(f"calibration {name} must be finite, got {value!r}")
        if self.clip <= 0 or self.std <= 0:
            raise InvalidKeyError("calibration clip and std must be positive")



def _enum(kind: type[StrEnum], value: Any, name: str) -> Any:
    try:
        return kind(value)
    except ValueError:
        choices = ", ".join(repr(str(c)) for c in kind)
        raise KeyParameterError(f"must be one of {choices}, got {value!r}", field=name) from None


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)

