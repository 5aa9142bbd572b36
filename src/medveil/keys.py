"""Secret keys: drawing, parameters, calibration constants, owner-only storage, fingerprints.

A :class:`Key` is the random part of the scheme (256 secret bits from :mod:`secrets`) together
with every parameter needed to obfuscate new images identically. Applying it is the job of the
deterministic :class:`medveil.obfuscator.Obfuscator`; fixing its calibration constants is the
job of :func:`medveil.calibration.calibrate`, which needs the obfuscator (so it lives above it).
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import stat
from dataclasses import asdict, dataclass, field, replace
from enum import StrEnum
from pathlib import Path
from typing import Any

import numpy as np

from medveil.atomic import atomic_write_bytes, remove_stale_temporaries
from medveil.derive import (
    DERIVATION,
    DERIVATION_V1,
    DERIVATION_V2,
    DERIVATIONS,
    bound_label,
    keyed_block_orthogonal,
    keyed_gaussian,
    keyed_orthogonal,
)
from medveil.errors import InvalidKeyError, KeyParameterError
from medveil.outputs import MARKER
from medveil.stages import Solver

__all__ = [
    "KEY_FORMAT",
    "KEY_VERSION",
    "Calibration",
    "Key",
    "LeftProjection",
    "Preset",
    "RightProjection",
    "SchemeParams",
    "ensure_key_folder",
    "ensure_not_in_output",
    "generate_key",
]

KEY_FORMAT = "medveil-key"
# The file version follows the derivation: version 1 files (derive-v1) predate the check value
# and are still read without it; version 2 files (derive-v2) must carry it.
_FILE_VERSION = {DERIVATION_V1: 1, DERIVATION_V2: 2}
KEY_VERSION = _FILE_VERSION[DERIVATION]
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
#: ``dp-svd``: the spectrum gets DP-SVD's Laplace noise (provable for the singular values, see
#: ``SchemeParams.dp_epsilon``) in place of quantization and entry noise; the keyed projections
#: stay, because the singular vectors have no formal protection of their own.
NAMED_SETTINGS: dict[str, dict[str, Any]] = {
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


@dataclass(kw_only=True)
class Key:
    """A secret key and the scheme parameters it is used with.

    Draw one with :func:`generate_key`; load one with :meth:`Key.load`.
    The secret never appears in ``repr`` or in any output; outputs carry :attr:`fingerprint`.
    ``derivation`` names how the keyed matrices come from the secret
    (:mod:`medveil.derive`): new keys use the current one, a key loaded from a file keeps the
    one it was made with, so its transform never changes.

    Examples
    --------
    A key file is written owner-only and reads back as the same key:

    >>> import tempfile
    >>> from pathlib import Path
    >>> from medveil import Key, generate_key
    >>> key = generate_key(preset="svd", size=32, rank=8)
    >>> with tempfile.TemporaryDirectory() as folder:
    ...     path = key.save(Path(folder) / "site.key")
    ...     again = Key.load(path)
    ...     print(oct(path.stat().st_mode & 0o777), again.fingerprint == key.fingerprint)
    0o600 True
    >>> again.secret == key.secret, key.secret.hex() in repr(key)
    (True, False)
    """

    secret: bytes = field(repr=False)
    params: SchemeParams
    calibration: Calibration | None = None
    derivation: str = DERIVATION

    def __post_init__(self) -> None:
        if not isinstance(self.secret, bytes) or len(self.secret) != SECRET_BYTES:
            raise InvalidKeyError(f"the secret must be {SECRET_BYTES} bytes")
        if self.derivation not in DERIVATIONS:
            raise InvalidKeyError(
                f"unknown derivation {self.derivation!r}; known: {', '.join(DERIVATIONS)}"
            )

    @property
    def fingerprint(self) -> str:
        """Short public identifier of the key and everything it obfuscates with.

        ``SHA-256(b"medveil/fingerprint/v1/" + K + canonical-json(version, derivation, params,
        calibration))``, first 16 hex digits. It reveals nothing useful about ``K`` (a one-way
        hash of 256 bits). Key files also carry it as their check value.
        """
        public = json.dumps(self._public_dict(), sort_keys=True).encode()
        digest = hashlib.sha256(b"medveil/fingerprint/v1/" + self.secret + public).hexdigest()
        return digest[:16]

    @property
    def is_calibrated(self) -> bool:
        return self.calibration is not None or not self.params.needs_calibration

    def _label(self, name: str) -> str:
        if self.derivation == DERIVATION_V1:
            return name
        p = self.params
        return bound_label(
            name, size=p.size, rank=p.rank, width=p.out_width, block_size=p.block_size
        )

    def left_matrix(self) -> np.ndarray | None:
        """``R_L`` (float64, ``n x n`` orthogonal) or ``None`` when the side is off."""
        p = self.params
        if p.left is LeftProjection.NONE:
            return None
        if p.left is LeftProjection.BLOCK:
            return keyed_block_orthogonal(
                self.secret, "left-block", p.size, p.block_size,
                derivation=self.derivation, suffix=self._label(""),
            )
        return keyed_orthogonal(self.secret, self._label("left"), p.size, derivation=self.derivation)

    def right_matrix(self) -> np.ndarray | None:
        """``R_R`` (float64, ``k x m`` with N(0, 1/k) entries) or ``None`` when the side is off."""
        p = self.params
        if p.right is RightProjection.NONE:
            return None
        return keyed_gaussian(
            self.secret, self._label("right"), p.rank, p.out_width, derivation=self.derivation
        )

    def save(self, path: str | os.PathLike[str], *, overwrite: bool = False) -> Path:
        """Write the key to ``path`` with mode 0600, atomically and durably.

        Missing parent folders are created owner-only (0700). Refused: a path inside a medveil
        output folder, a path that is a symbolic link (the check and the write would see
        different places), and a folder that others may write to and that is not sticky
        (whoever can write there could swap in a key they know). Temporaries left by an
        interrupted earlier save of the same path are removed. Without ``overwrite`` an existing
        file is never replaced, not even one created while this call runs.

        Returns
        -------
        Path
            Where the key was written (its folder resolved).
        """
        given = Path(path).expanduser()
        # Resolve the folder once and write exactly there; the name itself is not followed.
        target = given.parent.resolve() / given.name
        if target.is_symlink():
            raise InvalidKeyError(
                f"{given}: refusing to write a key through a symbolic link; "
                "give the real path of the key file"
            )
        if os.path.lexists(target) and not overwrite:
            raise FileExistsError(f"{target}: a key file already exists (pass overwrite=True)")
        ensure_not_in_output(target)
        ensure_key_folder(target.parent)
        remove_stale_temporaries(target)
        payload = json.dumps(
            {
                "format": KEY_FORMAT,
                "secret": self.secret.hex(),
                **self._public_dict(),
                "fingerprint": self.fingerprint,
            },
            indent=2,
        ).encode()
        try:
            atomic_write_bytes(target, payload, mode=0o600, exclusive=not overwrite)
        except FileExistsError:
            raise FileExistsError(
                f"{target}: a key file appeared there while this one was written; nothing was "
                "replaced"
            ) from None
        return target

    @classmethod
    def load(cls, path: str | os.PathLike[str], *, allow_open: bool = False) -> Key:
        """Read a key file written by :meth:`save`; fails with a message naming the problem.

        Parameters
        ----------
        path
            The key file.
        allow_open
            Accept a file that group or others may read or write (for a key on read-only media
            whose mode cannot be changed). By default such a file is refused, as ssh refuses an
            unprotected private key.

        Raises
        ------
        InvalidKeyError
            The file is missing, unreadable, open to others, not a medveil key, of an unknown
            version or derivation, incomplete, or damaged (its check value does not match).
        """
        source = Path(path).expanduser()
        try:
            info = source.stat()
        except FileNotFoundError:
            raise InvalidKeyError(f"{source}: no such key file") from None
        except OSError as exc:
            raise InvalidKeyError(f"{source}: cannot read the key file ({exc.strerror})") from None
        if not stat.S_ISREG(info.st_mode):
            raise InvalidKeyError(f"{source}: not a key file (not a regular file)")
        mode = stat.S_IMODE(info.st_mode)
        if mode & 0o077 and not allow_open:
            raise InvalidKeyError(
                f"{source}: key file permissions {mode:04o} are too open: group or others can "
                f"access the secret. Make it owner-only with: chmod 600 {source}  "
                "(for a key on read-only media, pass --allow-open-key, or allow_open=True "
                "in Python)"
            )
        try:
            data = json.loads(source.read_bytes().decode("utf-8"))
        except OSError as exc:
            raise InvalidKeyError(f"{source}: cannot read the key file ({exc.strerror})") from None
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise InvalidKeyError(
                f"{source}: not a medveil key file ({exc.__class__.__name__})"
            ) from None
        if not isinstance(data, dict) or data.get("format") != KEY_FORMAT:
            raise InvalidKeyError(
                f"{source}: not a medveil key file (missing format '{KEY_FORMAT}')"
            )
        version = data.get("version")
        versions = sorted(_FILE_VERSION.values())
        if version not in versions or isinstance(version, bool):
            raise InvalidKeyError(
                f"{source}: key version {version!r} is not supported by this medveil "
                f"(supports versions {', '.join(map(str, versions))})"
            )
        required = ["secret", "derivation", "params", "calibration"]
        if version >= 2:
            required.append("fingerprint")
        missing = [f for f in required if f not in data]
        if missing:
            raise InvalidKeyError(f"{source}: key file is missing field(s): {', '.join(missing)}")
        derivation = data["derivation"]
        if _FILE_VERSION.get(derivation) != version:
            raise InvalidKeyError(
                f"{source}: derivation {derivation!r} is not valid in a version {version} key file"
            )
        try:
            if not isinstance(data["secret"], str):
                raise ValueError("the secret must be a string of hex digits")
            secret = bytes.fromhex(data["secret"])
            params = SchemeParams(**_require_fields(data["params"], SchemeParams, source))
            cal = data["calibration"]
            calibration = (
                None if cal is None else Calibration(**_require_fields(cal, Calibration, source))
            )
            key = cls(
                secret=secret, params=params, calibration=calibration, derivation=derivation
            )
        except (TypeError, ValueError) as exc:
            raise InvalidKeyError(f"{source}: invalid key file: {exc}") from None
        # Version 1 files written before the check value existed cannot be verified.
        stored = data.get("fingerprint")
        if stored is not None and stored != key.fingerprint:
            raise InvalidKeyError(
                f"{source}: the key file is damaged: its secret or parameters no longer match "
                f"its check value (fingerprint {stored}, contents give {key.fingerprint}). "
                "Restore the key file from a backup; a damaged key would obfuscate under a "
                "different transform"
            )
        return key

    def with_params(self, **changes: Any) -> Key:
        """Same secret and derivation, changed public parameters (calibration is dropped).

        Under ``medveil-derive-v2`` the keyed matrices depend on ``size``, ``rank``, ``width``
        and ``block_size``, so changing any of them gives matrices independent of this key's.
        """
        return Key(
            secret=self.secret, params=replace(self.params, **changes), derivation=self.derivation
        )

    def _public_dict(self) -> dict[str, Any]:
        return {
            "version": _FILE_VERSION[self.derivation],
            "derivation": self.derivation,
            "params": self.params.to_dict(),
            "calibration": None if self.calibration is None else asdict(self.calibration),
        }


def generate_key(*, preset: Preset | str = Preset.MULTISTAGE, **params: Any) -> Key:
    """Draw a new key: 256 bits from :mod:`secrets` and the preset's parameters.

    The key uses the current derivation (``medveil-derive-v2``).

    Keyword arguments override the preset's defaults (``size``, ``rank``, ``bits``, ``noise``,
    ``left``, ``right``, ``width``, ``clip_percentile``).

    Examples
    --------
    >>> from medveil import generate_key
    >>> key = generate_key(preset="svd", size=32, rank=8)
    >>> key.params.size, key.params.rank, key.is_calibrated
    (32, 8, True)
    >>> generate_key(size=32, rank=8).is_calibrated  # multistage: see medveil.calibration
    False
    >>> key.secret == generate_key(preset="svd", size=32, rank=8).secret  # fresh secret each time
    False
    """
    return Key(
        secret=secrets.token_bytes(SECRET_BYTES),
        params=SchemeParams.for_preset(preset, **params),
    )


# Write bits for group and others; a folder with them is safe only when sticky (like /tmp).
_SHARED_WRITE = stat.S_IWGRP | stat.S_IWOTH


def ensure_key_folder(folder: Path) -> None:
    """Create ``folder`` for a key file, each missing level owner-only (0700), and check it.

    Raises
    ------
    InvalidKeyError
        ``folder`` or one of its parents may be written by group or others and is not sticky:
        whoever can write there could replace the key (or a folder on its path) with one they
        know, and the data would be obfuscated under it.
    """
    folder = Path(folder).expanduser().resolve()
    levels = (folder, *folder.parents)
    # Check what exists before creating anything, so a refusal leaves no folder behind.
    for level in levels:
        if not level.exists():
            continue
        mode = level.stat().st_mode
        if mode & _SHARED_WRITE and not mode & stat.S_ISVTX:
            raise InvalidKeyError(
                f"{level}: refusing to keep a key under this folder: group or others can write "
                f"to it (mode {stat.S_IMODE(mode):04o}) and it is not sticky, so someone else "
                f"could swap in a key they know. Use another folder, or run: chmod go-w {level}"
            )
    for level in reversed([p for p in levels if not p.exists()]):
        try:
            level.mkdir(mode=0o700)
        except FileExistsError:
            continue
        # mkdir applies the umask; a key's folder is owner-only whatever the umask.
        os.chmod(level, 0o700)


def ensure_not_in_output(key_path: Path, output_dir: Path | None = None) -> None:
    """Refuse a key path inside ``output_dir`` or inside any medveil output folder.

    Every folder medveil writes (stores, studies, training, evaluation, attack and sweep runs)
    carries the marker :data:`medveil.outputs.MARKER`; a key is refused under any of them.
    """
    key_path = key_path.expanduser().resolve()
    if output_dir is not None:
        out = output_dir.expanduser().resolve()
        if key_path == out or out in key_path.parents:
            raise InvalidKeyError(
                f"{key_path}: refusing to keep a key inside the output folder {out}; "
                "store keys apart from the data they protect"
            )
    for parent in key_path.parents:
        if (parent / MARKER).is_file():
            raise InvalidKeyError(
                f"{key_path}: refusing to write a key inside the medveil output folder {parent}"
            )


def _enum(kind: type[StrEnum], value: Any, name: str) -> Any:
    try:
        return kind(value)
    except ValueError:
        choices = ", ".join(repr(str(c)) for c in kind)
        raise KeyParameterError(f"must be one of {choices}, got {value!r}", field=name) from None


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _require_fields(data: Any, kind: type, source: Path) -> dict[str, Any]:
    if not isinstance(data, dict):
        raise InvalidKeyError(f"{source}: {kind.__name__} must be an object")
    from dataclasses import fields

    # Every field must be present: a default filled in silently could change the transform.
    optional = OPTIONAL_PARAMS if kind is SchemeParams else {}
    missing = [f.name for f in fields(kind) if f.name not in data and f.name not in optional]
    if missing:
        raise InvalidKeyError(f"{source}: key file is missing field(s): {', '.join(missing)}")
    known = {f.name for f in fields(kind)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise InvalidKeyError(f"{source}: unknown field(s) in key file: {', '.join(unknown)}")
    return data
