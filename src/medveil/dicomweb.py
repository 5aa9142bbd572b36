"""Read labelled studies straight from a PACS over DICOMweb, in memory.

``medveil obfuscate http(s)://HOST:PORT/dicom-web --labels studies.csv`` reads its images here:

1. the labels CSV (:func:`medveil.layout.read_label_rows`) names studies: the columns
   ``StudyInstanceUID`` and ``label``, optionally ``split`` and ``group``;
2. one QIDO-RS search per study lists its instances (paged, all of them), ordered by series
   number, series UID, instance number and SOP instance UID, so every run sees the same order;
3. WADO-RS retrieves each instance into memory as stored (transfer syntax ``*``: compressed
   instances are decoded by the same pydicom plugins as files) and
   :func:`medveil.loading.load_dicom_dataset` decodes it with the checks of a DICOM file. No
   pixel data is written to disk: the caller keeps only the obfuscated images.

Transient failures (HTTP 408, 429, 500, 502, 503, 504, a refused, reset or timed-out
connection, a truncated answer) are retried with exponential back-off (:class:`RetryPolicy`; a
``Retry-After`` header is honoured up to ``max_wait``); when every attempt fails,
:class:`DicomWebUnavailableError` stops the run, and a rerun resumes. The first request checks
the URL, so a wrong host, port or path, a refused login and an unknown study are reported at
once (:class:`DicomWebError`), without retries.

Credentials never appear on the command line, in a URL or in a store: a bearer token from
``MEDVEIL_DICOMWEB_TOKEN``, else a user name and password (HTTP basic) from
``MEDVEIL_DICOMWEB_USER`` and ``MEDVEIL_DICOMWEB_PASSWORD``, else the entry for the host in a
netrc file (``$NETRC``, else ``~/.netrc``, read by ``requests``), else none.

Examples
--------
>>> is_dicomweb_url("https://pacs.example.org/dicom-web"), is_dicomweb_url("scans/")
(True, False)
>>> public_url("http://127.0.0.1:8042/dicom-web/")
'http://127.0.0.1:8042/dicom-web'
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

import requests
from dicomweb_client.api import DICOMwebClient
from pydicom.errors import InvalidDicomError

from medveil.errors import ConfigError, DatasetLayoutError, ImageLoadError, LoadError
from medveil.layout import SPLIT_ORDER, DatasetIndex, Item, read_label_rows
from medveil.loading import LoadedFile, LoadOptions, load_dicom_dataset

__all__ = [
    "PASSWORD_VARIABLE",
    "TOKEN_VARIABLE",
    "USER_VARIABLE",
    "DicomWebError",
    "DicomWebIndex",
    "DicomWebItem",
    "DicomWebSource",
    "DicomWebUnavailableError",
    "RetryPolicy",
    "is_dicomweb_url",
    "public_url",
]

TOKEN_VARIABLE = "MEDVEIL_DICOMWEB_TOKEN"
USER_VARIABLE = "MEDVEIL_DICOMWEB_USER"
PASSWORD_VARIABLE = "MEDVEIL_DICOMWEB_PASSWORD"

_TRANSIENT_STATUS = frozenset({408, 429, 500, 502, 503, 504})
_NETWORK_ERRORS = (
    requests.ConnectionError,
    requests.Timeout,
    requests.exceptions.ChunkedEncodingError,
    requests.exceptions.ContentDecodingError,
)
# A UID is digits and dots, at most 64 characters (DICOM PS3.5, 9.1).
_UID = re.compile(r"[0-9]+(\.[0-9]+)*")
_STUDY_COLUMN = "StudyInstanceUID"
# QIDO-RS result attributes, as DICOM JSON tags.
_SERIES_UID, _SOP_UID = "0020000E", "00080018"
_SERIES_NUMBER, _INSTANCE_NUMBER = "00200011", "00200013"

T = TypeVar("T")


class _NoRetryingTracebacks(logging.Filter):
    """dicomweb-client wraps every request in the ``retrying`` package, which logs each failed
    try as a WARNING with a traceback even with its retries off; medveil retries itself and
    reports failures as messages, so those records are dropped."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("Attempts:")


logging.getLogger("retrying").addFilter(_NoRetryingTracebacks())


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


@dataclass(frozen=True)
class DicomWebItem(Item):
    """One instance of a labelled study; ``path`` is ``STUDY/SERIES/SOP`` (UIDs) and ``row`` the
    labels file's line that names the study."""

    study: str = ""
    series: str = ""
    sop: str = ""
    row: int = 0


@dataclass(frozen=True)
class DicomWebIndex(DatasetIndex):
    """The instances of the studies a labels CSV names, by split; ``url`` carries no
    credentials."""

    url: str = ""

    @property
    def layout(self) -> str:
        return "dicomweb"

    def listing(self) -> str:
        """SHA-256 of the URL and every instance with its split, label and group: a rerun with
        an equal listing resumes, one against another server or other instances starts clean."""
        digest = hashlib.sha256(f"dicomweb\0{self.url}\n".encode())
        for split, items in self.splits.items():
            for item in items:
                assert isinstance(item, DicomWebItem)
                digest.update(
                    f"{split}\0{item.study}\0{item.series}\0{item.sop}\0{item.label}\0"
                    f"{item.group or ''}\n".encode()
                )
        return digest.hexdigest()


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


def _auth_from_environment() -> requests.auth.AuthBase | None:
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


def _network_reason(exc: BaseException) -> str:
    """The operating system's words for a failed connection, without Python reprs."""
    seen: set[int] = set()
    todo: list[BaseException] = [exc]
    while todo:
        current = todo.pop(0)
        if id(current) in seen:
            continue
        seen.add(id(current))
        if isinstance(current, OSError) and current.strerror:
            return current.strerror
        if (
            isinstance(current, OSError)
            and not isinstance(current, requests.RequestException)
            and current.args
            and isinstance(current.args[0], str)
        ):
            return current.args[0]  # e.g. "Remote end closed connection without response"
        todo.extend(a for a in current.args if isinstance(a, BaseException))
        for nested in (getattr(current, "reason", None), current.__cause__, current.__context__):
            if isinstance(nested, BaseException):
                todo.append(nested)
    if isinstance(exc, requests.Timeout):
        return "no answer in time"
    if isinstance(exc, requests.exceptions.ChunkedEncodingError):
        return "the answer was cut off"
    return "the connection failed"


def _first(result: dict[str, Any], tag: str) -> Any:
    values = result.get(tag, {}).get("Value") or [None]
    return values[0]


def _number(value: Any) -> tuple[bool, float]:
    """A sort key that puts missing or malformed numbers last."""
    try:
        return (False, float(value))
    except (TypeError, ValueError):
        return (True, 0.0)


class DicomWebSource:
    """A DICOMweb service: QIDO-RS search and WADO-RS retrieval, with retries.

    One HTTP session per thread (``requests`` sessions are not meant to be shared between
    threads); :meth:`close` closes them all. Use as a context manager.
    """

    def __init__(self, url: str, *, retry: RetryPolicy | None = None) -> None:
        self.url = public_url(url)
        self.retry = retry or RetryPolicy()
        self._auth = _auth_from_environment()
        self._local = threading.local()
        self._sessions: list[requests.Session] = []
        self._lock = threading.Lock()
        # The first error that stops the run: the other loader threads' requests then fail at
        # once instead of each retrying against a server that is down.
        self._stopped: DicomWebError | None = None

    def __enter__(self) -> DicomWebSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        with self._lock:
            for session in self._sessions:
                session.close()
            self._sessions.clear()

    def _client(self) -> DICOMwebClient:
        client = getattr(self._local, "client", None)
        if client is None:
            session = requests.Session()
            session.auth = self._auth
            with self._lock:
                self._sessions.append(session)
            client = DICOMwebClient(self.url, session=session, timeout=self.retry.timeout)
            client.set_http_retry_params(retry=False)  # retried here, with our policy
            self._local.client = client
        return client

    def _call(
        self,
        what: str,
        call: Callable[[DICOMwebClient], T],
        *,
        first: bool = False,
        not_found: str | None = None,
    ) -> T:
        """``call`` with retries; ``first``: the run's first request, which checks the URL;
        ``not_found``: the error for an answer 404 (Not Found)."""
        if self._stopped is not None:
            raise self._stopped
        try:
            return self._try(what, call, first=first, not_found=not_found)
        except DicomWebError as exc:
            self._stopped = exc
            raise

    def _try(
        self,
        what: str,
        call: Callable[[DICOMwebClient], T],
        *,
        first: bool,
        not_found: str | None,
    ) -> T:
        client = self._client()
        for attempt in range(1, self.retry.attempts + 1):
            retry_after = None
            try:
                return call(client)
            except requests.HTTPError as exc:
                response = exc.response
                status = response.status_code if response is not None else 0
                reason = f"HTTP {status} {response.reason if response is not None else ''}"
                if status in (401, 403):
                    raise self._refused(status, reason.strip()) from None
                if status == 404 and not_found is not None:
                    raise DicomWebError(not_found) from None
                if first and 400 <= status < 500 and status not in _TRANSIENT_STATUS:
                    raise DicomWebError(
                        f"{self.url}: not a DICOMweb service ({reason.strip()} for {what}); "
                        "check the path of the URL, e.g. http://HOST:PORT/dicom-web"
                    ) from None
                if status not in _TRANSIENT_STATUS:
                    raise DicomWebError(f"{self.url}: {what} failed: {reason.strip()}") from None
                problem = reason.strip()
                retry_after = response.headers.get("Retry-After") if response is not None else None
            except requests.exceptions.SSLError as exc:
                raise DicomWebError(
                    f"{self.url}: the TLS (https) connection failed ({_network_reason(exc)})"
                ) from None
            except _NETWORK_ERRORS as exc:
                problem = _network_reason(exc)
                if first and isinstance(exc, requests.ConnectionError) and not isinstance(
                    exc, requests.exceptions.ChunkedEncodingError
                ):
                    raise DicomWebError(
                        f"{self.url}: cannot connect ({problem}); check the host and port of "
                        "the URL and that the DICOMweb server is running"
                    ) from None
            except requests.exceptions.JSONDecodeError:
                raise DicomWebError(
                    f"{self.url}: not a DICOMweb service (its answer to {what} is not DICOM "
                    "JSON); check the path of the URL, e.g. http://HOST:PORT/dicom-web"
                ) from None
            except requests.RequestException as exc:
                raise DicomWebError(f"{self.url}: {what} failed ({_network_reason(exc)})") from None
            if attempt == self.retry.attempts:
                raise DicomWebUnavailableError(
                    f"{self.url}: {what} failed {attempt} time(s), last with {problem}; the "
                    "server may be down or overloaded: rerun the same command later to resume"
                )
            time.sleep(self.retry.wait(attempt, retry_after))
        raise AssertionError("unreachable")

    def _refused(self, status: int, reason: str) -> DicomWebError:
        if status == 403:
            return DicomWebError(
                f"{self.url}: the server refused access ({reason}): the account is not allowed "
                "to search or retrieve these studies"
            )
        given = (
            "the credentials from the environment were not accepted"
            if self._auth is not None
            else "no credentials were given"
        )
        return DicomWebError(
            f"{self.url}: the server refused the login ({reason}; {given}); set "
            f"{USER_VARIABLE} and {PASSWORD_VARIABLE} (or {TOKEN_VARIABLE}) in the environment, "
            "or add the host to a netrc file"
        )

    def scan(self, labels: str | Path | None) -> DicomWebIndex:
        """Index the instances of the studies a labels CSV names.

        Raises
        ------
        ConfigError
            No labels file (``labels`` is ``None``).
        DicomWebError
            A wrong URL, a refused login, or (naming the labels file, the row and the UID) a
            study that the server does not hold.
        DatasetLayoutError
            A bad labels file (as :func:`medveil.layout.read_label_rows`), or a study UID that
            is not a UID.
        """
        if labels is None:
            raise ConfigError(
                f"{self.url}: a DICOMweb source needs --labels STUDIES.csv with the columns "
                "StudyInstanceUID,label[,split][,group]"
            )
        labels = Path(labels).expanduser()

        def check(raw: str, where: str) -> str:
            if len(raw) > 64 or not _UID.fullmatch(raw):
                raise DatasetLayoutError(
                    f"{where}: {raw or '(empty)'} is not a StudyInstanceUID (digits and dots, "
                    "at most 64 characters)"
                )
            return raw

        rows = read_label_rows(labels, key=_STUDY_COLUMN, check=check, noun="studies")
        probe = "a QIDO-RS search of studies"
        studies = self._call(probe, lambda c: c.search_for_studies(limit=1), first=True)
        if not all(isinstance(study, dict) for study in studies):
            # E.g. Orthanc's own REST API at the server's root: JSON, but not DICOM JSON.
            raise DicomWebError(
                f"{self.url}: not a DICOMweb service (its answer to {probe} is not DICOM JSON); "
                "check the path of the URL, e.g. http://HOST:PORT/dicom-web"
            )
        classes = tuple(sorted({row.label for row in rows}))
        splits: dict[str, list[Item]] = {}
        for row in sorted(rows, key=lambda r: SPLIT_ORDER.index(r.split)):
            study = str(row.key)
            unknown = (
                f"{labels}, row {row.line}: study {study} is not on the server {self.url} "
                "(a QIDO-RS search finds no instance of it)"
            )
            found = self._call(
                f"the QIDO-RS search of study {study}",
                lambda c, study=study: c.search_for_instances(
                    study_instance_uid=study,
                    fields=("SeriesNumber", "InstanceNumber"),
                    get_remaining=True,
                ),
                not_found=unknown,
            )
            if not found:
                raise DicomWebError(unknown)
            instances = []
            for result in found:
                series, sop = _first(result, _SERIES_UID), _first(result, _SOP_UID)
                if not series or not sop:
                    raise DicomWebError(
                        f"{labels}, row {row.line}: the server's QIDO-RS answer for study {study} "
                        "lacks a SeriesInstanceUID or SOPInstanceUID"
                    )
                instances.append((
                    _number(_first(result, _SERIES_NUMBER)), str(series),
                    _number(_first(result, _INSTANCE_NUMBER)), str(sop),
                ))
            splits.setdefault(row.split, []).extend(
                DicomWebItem(
                    path=Path(study, series, sop), label=classes.index(row.label),
                    group=row.group, study=study, series=series, sop=sop, row=row.line,
                )
                for _, series, _, sop in sorted(instances)
            )
        return DicomWebIndex(
            root=Path(), classes=classes, splits=splits, labels_file=labels, url=self.url
        )

    def read(self, item: DicomWebItem, *, options: LoadOptions) -> LoadedFile:
        """Retrieve one instance into memory and decode it as :func:`load_file` does a file.

        Raises
        ------
        ImageLoadError
            The instance is not valid DICOM or fails a loader check (bad input:
            ``skip_bad`` applies).
        DicomWebError
            The server cannot give it (:class:`DicomWebUnavailableError` after the retries).
        """
        name = os.fspath(item.path)
        try:
            dataset = self._call(
                f"retrieving instance {item.sop} of study {item.study} (row {item.row})",
                lambda c: c.retrieve_instance(item.study, item.series, item.sop),
                not_found=(
                    f"{self.url}: instance {item.sop} of study {item.study} (row {item.row}) is "
                    "no longer on the server (deleted since the search?); rerun to start over"
                ),
            )
        except DicomWebError:
            raise
        except (InvalidDicomError, EOFError, KeyError, ValueError) as exc:
            raise ImageLoadError(
                name, f"the server sent an instance that is not DICOM ({exc})"
            ) from exc
        return load_dicom_dataset(dataset, name=name, options=options)
