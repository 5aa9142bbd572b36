"""Secret keys: drawing, parameters, calibration, owner-only storage and fingerprints.

A :class:`Key` is the random part of the scheme (256 secret bits from :mod:`secrets`) together
with every parameter needed to obfuscate new images identically. Applying it is the job of the
deterministic :class:`medveil.obfuscator.Obfuscator`.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
from dataclasses import asdict, dataclass, field, replace
from enum import StrEnum
from pathlib import Path
from typing import Any

import numpy as np

from medveil.atomic import atomic_write_bytes
from medveil.derive import (
    DERIVATION,
    keyed_block_orthogonal,
    keyed_gaussian,
    keyed_orthogonal,
)
from medveil.errors import InvalidKeyError
from medveil.stages import Solver

KEY_FORMAT = "medveil-key"
KEY_VERSION = 1
SECRET_BYTES = 32


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

    def __post_init__(self) -> None:
        object.__setattr__(self, "preset", _enum(Preset, self.preset, "preset"))
        object.__setattr__(self, "solver", _enum(Solver, self.solver, "solver"))
        object.__setattr__(self, "left", _enum(LeftProjection, self.left, "left"))
        object.__setattr__(self, "right", _enum(RightProjection, self.right, "right"))
        if not isinstance(self.size, int) or self.size < 2:
            raise InvalidKeyError(f"size must be an integer >= 2, got {self.size!r}")
        if not isinstance(self.rank, int) or not 1 <= self.rank <= self.size:
            raise InvalidKeyError(
                f"rank must be an integer in [1, size={self.size}], got {self.rank!r}"
            )
        if self.bits is not None and (not isinstance(self.bits, int) or not 1 <= self.bits <= 16):
            raise InvalidKeyError(f"bits must be an integer in [1, 16] or None, got {self.bits!r}")
        if not (isinstance(self.noise, (int, float)) and 0.0 <= self.noise < 10.0):
            raise InvalidKeyError(f"noise must be a number in [0, 10), got {self.noise!r}")
        if self.width is not None and (not isinstance(self.width, int) or self.width < 1):
            raise InvalidKeyError(f"width must be a positive integer or None, got {self.width!r}")
        if not isinstance(self.block_size, int) or not 1 <= self.block_size <= self.size:
            raise InvalidKeyError(
                f"block_size must be an integer in [1, size], got {self.block_size!r}"
            )
        if not 50.0 <= self.clip_percentile <= 100.0:
            raise InvalidKeyError(
                f"clip_percentile must be in [50, 100], got {self.clip_percentile!r}"
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
        """Defaults of a preset, with explicit overrides (``bits=None`` switches quantization off)."""
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
        return data


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


@dataclass(kw_only=True)
class Key:
    """A secret key and the scheme parameters it is used with.

    Draw one with :func:`generate_key`; load one with :meth:`Key.load`.
    The secret never appears in ``repr`` or in any output; outputs carry :attr:`fingerprint`.
    """

    secret: bytes = field(repr=False)
    params: SchemeParams
    calibration: Calibration | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.secret, bytes) or len(self.secret) != SECRET_BYTES:
            raise InvalidKeyError(f"the secret must be {SECRET_BYTES} bytes")

    @property
    def fingerprint(self) -> str:
        """Short public identifier of the key and everything it obfuscates with.

        ``SHA-256(b"medveil/fingerprint/v1/" + K + canonical-json(params, calibration))``,
        first 16 hex digits. It reveals nothing useful about ``K`` (a one-way hash of 256 bits).
        """
        public = json.dumps(self._public_dict(), sort_keys=True).encode()
        digest = hashlib.sha256(b"medveil/fingerprint/v1/" + self.secret + public).hexdigest()
        return digest[:16]

    @property
    def is_calibrated(self) -> bool:
        return self.calibration is not None or not self.params.needs_calibration

    def left_matrix(self) -> np.ndarray | None:
        """``R_L`` (float64, ``n x n`` orthogonal) or ``None`` when the side is off."""
        if self.params.left is LeftProjection.NONE:
            return None
        if self.params.left is LeftProjection.BLOCK:
            return keyed_block_orthogonal(
                self.secret, "left-block", self.params.size, self.params.block_size
            )
        return keyed_orthogonal(self.secret, "left", self.params.size)

    def right_matrix(self) -> np.ndarray | None:
        """``R_R`` (float64, ``k x m`` with N(0, 1/k) entries) or ``None`` when the side is off."""
        if self.params.right is RightProjection.NONE:
            return None
        return keyed_gaussian(self.secret, "right", self.params.rank, self.params.out_width)

    def calibrate(self, images: Any, *, batch_size: int = 256) -> Key:
        """Fix the quantizer range and output standardisation from a calibration batch.

        ``images`` is an array/tensor of shape ``(B, n, n)`` or ``(B, 1, n, n)`` in [0, 1], or an
        iterable of such batches. Returns ``self``.
        """
        from medveil.calibration import calibrate_key

        self.calibration = calibrate_key(self, images, batch_size=batch_size)
        return self

    def save(self, path: str | os.PathLike[str], *, overwrite: bool = False) -> Path:
        """Write the key to ``path`` with mode 0600, atomically (temporary file + rename)."""
        target = Path(path).expanduser()
        if target.exists() and not overwrite:
            raise FileExistsError(f"{target}: a key file already exists (pass overwrite=True)")
        ensure_not_in_output(target)
        target.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        payload = json.dumps(
            {"format": KEY_FORMAT, "secret": self.secret.hex(), **self._public_dict()}, indent=2
        ).encode()
        atomic_write_bytes(target, payload, mode=0o600)
        return target

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Key:
        """Read a key file written by :meth:`save`; fails with a message naming the problem."""
        source = Path(path).expanduser()
        try:
            data = json.loads(source.read_text())
        except FileNotFoundError:
            raise InvalidKeyError(f"{source}: no such key file") from None
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise InvalidKeyError(
                f"{source}: not a medveil key file ({exc.__class__.__name__})"
            ) from None
        if not isinstance(data, dict) or data.get("format") != KEY_FORMAT:
            raise InvalidKeyError(
                f"{source}: not a medveil key file (missing format '{KEY_FORMAT}')"
            )
        version = data.get("version")
        if version != KEY_VERSION:
            raise InvalidKeyError(
                f"{source}: key version {version!r} is not supported by this medveil "
                f"(supports version {KEY_VERSION})"
            )
        missing = [f for f in ("secret", "derivation", "params", "calibration") if f not in data]
        if missing:
            raise InvalidKeyError(f"{source}: key file is missing field(s): {', '.join(missing)}")
        if data["derivation"] != DERIVATION:
            raise InvalidKeyError(f"{source}: unknown derivation {data['derivation']!r}")
        try:
            secret = bytes.fromhex(data["secret"])
            params = SchemeParams(**_require_fields(data["params"], SchemeParams, source))
            cal = data["calibration"]
            calibration = (
                None if cal is None else Calibration(**_require_fields(cal, Calibration, source))
            )
            return cls(secret=secret, params=params, calibration=calibration)
        except (TypeError, ValueError) as exc:
            raise InvalidKeyError(f"{source}: invalid key file: {exc}") from None

    def with_params(self, **changes: Any) -> Key:
        """Same secret, changed public parameters (calibration is dropped)."""
        return Key(secret=self.secret, params=replace(self.params, **changes))

    def _public_dict(self) -> dict[str, Any]:
        return {
            "version": KEY_VERSION,
            "derivation": DERIVATION,
            "params": self.params.to_dict(),
            "calibration": None if self.calibration is None else asdict(self.calibration),
        }


def generate_key(*, preset: Preset | str = Preset.MULTISTAGE, **params: Any) -> Key:
    """Draw a new key: 256 bits from :mod:`secrets` and the preset's parameters.

    Keyword arguments override the preset's defaults (``size``, ``rank``, ``bits``, ``noise``,
    ``left``, ``right``, ``width``, ``clip_percentile``).
    """
    return Key(
        secret=secrets.token_bytes(SECRET_BYTES),
        params=SchemeParams.for_preset(preset, **params),
    )


OUTPUT_MARKERS = ("manifest.json", ".medveil-output")


def ensure_not_in_output(key_path: Path, output_dir: Path | None = None) -> None:
    """Refuse a key path inside ``output_dir`` or inside any medveil output folder."""
    key_path = key_path.expanduser().resolve()
    if output_dir is not None:
        out = output_dir.expanduser().resolve()
        if key_path == out or out in key_path.parents:
            raise InvalidKeyError(
                f"{key_path}: refusing to keep a key inside the output folder {out}; "
                "store keys apart from the data they protect"
            )
    for parent in key_path.parents:
        if any((parent / marker).is_file() for marker in OUTPUT_MARKERS):
            raise InvalidKeyError(
                f"{key_path}: refusing to write a key inside the medveil output folder {parent}"
            )


def _enum(kind: type[StrEnum], value: Any, name: str) -> Any:
    try:
        return kind(value)
    except ValueError:
        choices = ", ".join(repr(str(c)) for c in kind)
        raise InvalidKeyError(f"{name} must be one of {choices}, got {value!r}") from None


def _require_fields(data: Any, kind: type, source: Path) -> dict[str, Any]:
    if not isinstance(data, dict):
        raise InvalidKeyError(f"{source}: {kind.__name__} must be an object")
    from dataclasses import fields

    # Every field must be present: a default filled in silently could change the transform.
    missing = [f.name for f in fields(kind) if f.name not in data]
    if missing:
        raise InvalidKeyError(f"{source}: key file is missing field(s): {', '.join(missing)}")
    known = {f.name for f in fields(kind)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise InvalidKeyError(f"{source}: unknown field(s) in key file: {', '.join(unknown)}")
    return data
