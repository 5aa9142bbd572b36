"""Talking to a DICOMweb service: QIDO-RS searches and WADO-RS retrieval into memory, with
retries (:class:`DicomWebSource`).

Transient failures (HTTP 408, 429, 500, 502, 503, 504, a refused, reset or timed-out
connection, a truncated answer) are retried with exponential back-off
(:class:`medveil.dicomweb.access.RetryPolicy`); when every attempt fails,
:class:`DicomWebUnavailableError` stops the run, and a rerun resumes. The first request checks
the URL, so a wrong host, port or path, a refused login and an unknown study are reported at
once (:class:`DicomWebError`), without retries.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import requests
from dicomweb_client.api import DICOMwebClient
from pydicom.errors import InvalidDicomError

from medveil.dicomweb.access import (
    PASSWORD_VARIABLE,
    TOKEN_VARIABLE,
    USER_VARIABLE,
    DicomWebError,
    DicomWebUnavailableError,
    RetryPolicy,
    auth_from_environment,
    public_url,
    warn_plaintext_credentials,
)
from medveil.dicomweb.studies import DicomWebIndex, DicomWebItem, read_studies, study_items
from medveil.errors import ConfigError, ImageLoadError
from medveil.layout import SPLIT_ORDER, Item
from medveil.loading import LoadedFile, LoadOptions, load_dicom_dataset

__all__ = ["DicomWebSource"]

_TRANSIENT_STATUS = frozenset({408, 429, 500, 502, 503, 504})
_NETWORK_ERRORS = (
    requests.ConnectionError,
    requests.Timeout,
    requests.exceptions.ChunkedEncodingError,
    requests.exceptions.ContentDecodingError,
)

T = TypeVar("T")


class _NoRetryingTracebacks(logging.Filter):
    """dicomweb-client wraps every request in the ``retrying`` package, which logs each failed
    try as a WARNING with a traceback even with its retries off; medveil retries itself and
    reports failures as messages, so those records are dropped."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("Attempts:")


logging.getLogger("retrying").addFilter(_NoRetryingTracebacks())


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


class DicomWebSource:
    """A DICOMweb service: QIDO-RS search and WADO-RS retrieval, with retries.

    One HTTP session per thread (``requests`` sessions are not meant to be shared between
    threads); :meth:`close` closes them all. Use as a context manager.
    """

    def __init__(self, url: str, *, retry: RetryPolicy | None = None) -> None:
        self.url = public_url(url)
        self.retry = retry or RetryPolicy()
        self._auth = auth_from_environment()
        warn_plaintext_credentials(self.url, self._auth)
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
        rows = read_studies(labels)
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
            splits.setdefault(row.split, []).extend(
                study_items(found, row=row, label=classes.index(row.label), labels=labels)
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
                name, f"the server sent an instance that is not DICOM ({exc}){_row_note(item)}"
            ) from exc
        try:
            return load_dicom_dataset(dataset, name=name, options=options)
        except ImageLoadError as exc:
            raise ImageLoadError(name, f"{exc.problem}{_row_note(item)}") from exc


def _row_note(item: DicomWebItem) -> str:
    # STUDY/SERIES/SOP UIDs alone do not tell a person which of their studies it was.
    return f" (study of labels row {item.row})"
