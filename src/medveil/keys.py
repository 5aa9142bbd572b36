"""Secret keys: drawing, owner-only key files, fingerprints.

A :class:`Key` is the random part of the scheme (256 secret bits from :mod:`secrets`) together
with every parameter needed to obfuscate new images identically. The parameters and calibration
constants are defined in :mod:`medveil.scheme` and where a key file may live in
:mod:`medveil.key_folders`; both are re-exported here. Applying a key is the job of the
deterministic :class:`medveil.obfuscator.Obfuscator`; fixing its calibration constants is the
job of :func:`medveil.calibration.calibrate`, which needs the obfuscator (so it lives above it).
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import stat
from dataclasses import asdict, dataclass, field, fields, replace
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
from medveil.errors import InvalidKeyError
from medveil.key_folders import ensure_key_folder, ensure_not_in_output
from medveil.scheme import (
    NAMED_SETTINGS,
    OPTIONAL_PARAMS,
    Calibration,
    LeftProjection,
    Preset,
    RightProjection,
    SchemeParams,
)

__all__ = [
    "KEY_FORMAT",
    "KEY_VERSION",
    "NAMED_SETTINGS",
    "OPTIONAL_PARAMS",
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


def _require_fields(data: Any, kind: type, source: Path) -> dict[str, Any]:
    if not isinstance(data, dict):
        raise InvalidKeyError(f"{source}: {kind.__name__} must be an object")
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
