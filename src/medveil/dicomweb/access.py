"""Reaching a DICOMweb service: its URL checked, credentials from the environment, how failed
requests are retried, and the errors that say why the service cannot be read.

Credentials never appear on the command line, in a URL or in a store: a bearer token from
``MEDVEIL_DICOMWEB_TOKEN``, else a user name and password (HTTP basic) from
``MEDVEIL_DICOMWEB_USER`` and ``MEDVEIL_DICOMWEB_PASSWORD``, else the entry for the host in a
netrc file (``$NETRC``, else ``~/.netrc``, read by ``requests``), else none.
"""

from __future__ import annotations

import os
import time
import warnings
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from urllib.parse import urlsplit

import requests

from medveil.errors import ConfigError, LoadError, MedveilWarning

__all__ = [
    "warn_plaintext_credentials",
    "PASSWORD_VARIABLE",
    "TOKEN_VARIABLE",
    "USER_VARIABLE",
    "DicomWebError",
    "DicomWebUnavailableError",
    "RetryPolicy",
    "auth_from_environment",
    "is_dicomweb_url",
    "public_url",
]

TOKEN_VARIABLE = "MEDVEIL_DICOMWEB_TOKEN"
USER_VARIABLE = "MEDVEIL_DICOMWEB_USER"
PASSWORD_VARIABLE = "MEDVEIL_DICOMWEB_PASSWORD"


class DicomWebError(LoadError):
    """The DICOMweb server cannot be read as asked: a wrong URL, a refused login, an unknown
    study, an answer that is not DICOMweb."""


class DicomWebUnavailableError(DicomWebError):
    """The server kept failing (errors 5xx, broken connections) after every retry; a rerun
    resumes where the run stopped."""


@dataclass(frozen=True, kw_only=True)
class RetryPolicy:
    """How transient failures are retried.

    Parameters
    ----------
    attempts : int
        Tries per request, the first included (default 5).
    backoff : float
        Seconds before the first retry, doubled before each next one (default 1: waits of 1,
        2, 4 and 8 s).
    max_wait : float
        Longest wait between two tries, also for a server's ``Retry-After`` (default 30 s).
    timeout : tuple of float
        Seconds to wait for a connection and, then, between two received pieces of an answer.
    """

    attempts: int = 5
    backoff: float = 1.0
    max_wait: float = 30.0
    timeout: tuple[float, float] = (10.0, 120.0)

    def __post_init__(self) -> None:
        if isinstance(self.attempts, bool) or not isinstance(self.attempts, int) or (
            self.attempts < 1
        ):
            raise ConfigError(f"attempts must be a positive int, got {self.attempts!r}")
        if not (self.backoff >= 0 and self.max_wait >= 0):
            raise ConfigError("backoff and max_wait must be non-negative")

    def wait(self, attempt: int, retry_after: str | None = None) -> float:
        """Seconds to wait after failed try number ``attempt`` (1, 2, ...).

        Examples
        --------
        >>> policy = RetryPolicy(backoff=0.5, max_wait=3)
        >>> [policy.wait(n) for n in (1, 2, 3, 4)], policy.wait(1, "2"), policy.wait(1, "60")
        ([0.5, 1.0, 2.0, 3.0], 2.0, 3.0)
        """
        seconds = self.backoff * 2 ** (attempt - 1)
        if retry_after:
            seconds = max(seconds, _retry_after_seconds(retry_after))
        return float(min(seconds, self.max_wait))


def _retry_after_seconds(value: str) -> float:
    """A ``Retry-After`` header as seconds: a number of seconds or an HTTP date."""
    try:
        return max(float(value), 0.0)
    except ValueError:
        pass
    try:
        return max(parsedate_to_datetime(value).timestamp() - time.time(), 0.0)
    except (TypeError, ValueError):
        return 0.0


def is_dicomweb_url(source: object) -> bool:
    """Whether a source is a DICOMweb service URL (``http://`` or ``https://``) rather than a
    folder."""
    return isinstance(source, str) and source.lower().startswith(("http://", "https://"))


def public_url(url: str) -> str:
    """The service URL without a trailing slash, checked: scheme http(s), a host, and no
    credentials, query or fragment (credentials belong in the environment or a netrc file)."""
    parts = urlsplit(url.strip())
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        raise DicomWebError(
            f"{url}: not a DICOMweb URL; expected http(s)://HOST[:PORT]/PATH, e.g. "
            "http://pacs.example.org:8042/dicom-web"
        )
    if parts.username is not None or parts.password is not None:
        # Never echo the URL: it holds the password.
        raise DicomWebError(
            f"the DICOMweb URL for {parts.hostname} holds a user name or password; remove "
            f"them and set {USER_VARIABLE} and {PASSWORD_VARIABLE} (or {TOKEN_VARIABLE}) in the "
            "environment, or add the host to a netrc file"
        )
    if parts.query or parts.fragment:
        raise DicomWebError(f"{url}: a DICOMweb service URL has no query (?...) or fragment (#...)")
    try:
        parts.port  # noqa: B018 -- raises for a port that is not a number
    except ValueError:
        raise DicomWebError(f"{url}: the port is not a number from 0 to 65535") from None
    return parts.geturl().rstrip("/")


class _BearerAuth(requests.auth.AuthBase):
    def __init__(self, token: str) -> None:
        self._token = token

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        request.headers["Authorization"] = f"Bearer {self._token}"
        return request

    def __repr__(self) -> str:
        return "BearerAuth(<hidden>)"


def auth_from_environment() -> requests.auth.AuthBase | None:
    """Credentials from the environment; ``None`` lets ``requests`` read a netrc file."""
    token = os.environ.get(TOKEN_VARIABLE, "").strip()
    user = os.environ.get(USER_VARIABLE)
    password = os.environ.get(PASSWORD_VARIABLE)
    if token and (user or password):
        raise DicomWebError(
            f"both {TOKEN_VARIABLE} and {USER_VARIABLE}/{PASSWORD_VARIABLE} are set; set one"
        )
    if token:
        return _BearerAuth(token)
    if user and password is None:
        raise DicomWebError(f"{USER_VARIABLE} is set but {PASSWORD_VARIABLE} is not")
    if password is not None and not user:
        raise DicomWebError(f"{PASSWORD_VARIABLE} is set but {USER_VARIABLE} is not")
    if user:
        return requests.auth.HTTPBasicAuth(user, password or "")
    return None


_LOOPBACK = {"localhost", "127.0.0.1", "::1"}


def warn_plaintext_credentials(url: str, auth: requests.auth.AuthBase | None) -> None:
    """Warn (:class:`~medveil.errors.MedveilWarning`) when credentials, from the environment or
    a netrc file, would go to a host other than this machine over plain ``http://``."""
    parts = urlsplit(url)
    if parts.scheme.lower() != "http" or (parts.hostname or "").lower() in _LOOPBACK:
        return
    if auth is None and requests.utils.get_netrc_auth(url) is None:
        return
    warnings.warn(
        f"{url}: the credentials will cross the network unencrypted (http://); use the "
        "server's https:// URL",
        MedveilWarning,
        stacklevel=3,
    )
