"""Read labelled studies straight from a PACS over DICOMweb, in memory.

``medveil obfuscate http(s)://HOST:PORT/dicom-web --labels studies.csv`` reads its images here:

1. the labels CSV (:func:`medveil.layout.read_label_rows`) names studies: the columns
   ``StudyInstanceUID`` and ``label``, optionally ``split`` and ``group``;
2. one QIDO-RS search per study lists its instances (paged, all of them), ordered by series
   number, series UID, instance number and SOP instance UID, so every run sees the same order
   (:mod:`medveil.dicomweb.studies`);
3. WADO-RS retrieves each instance into memory as stored (transfer syntax ``*``: compressed
   instances are decoded by the same pydicom plugins as files) and
   :func:`medveil.loading.load_dicom_dataset` decodes it with the checks of a DICOM file. No
   pixel data is written to disk: the caller keeps only the obfuscated images.

Transient failures (HTTP 408, 429, 500, 502, 503, 504, a refused, reset or timed-out
connection, a truncated answer) are retried with exponential back-off (:class:`RetryPolicy`; a
``Retry-After`` header is honoured up to ``max_wait``); when every attempt fails,
:class:`DicomWebUnavailableError` stops the run, and a rerun resumes. The first request checks
the URL, so a wrong host, port or path, a refused login and an unknown study are reported at
once (:class:`DicomWebError`), without retries (:mod:`medveil.dicomweb.client`).

Credentials never appear on the command line, in a URL or in a store: a bearer token from
``MEDVEIL_DICOMWEB_TOKEN``, else a user name and password (HTTP basic) from
``MEDVEIL_DICOMWEB_USER`` and ``MEDVEIL_DICOMWEB_PASSWORD``, else the entry for the host in a
netrc file (``$NETRC``, else ``~/.netrc``, read by ``requests``), else none
(:mod:`medveil.dicomweb.access`).

Examples
--------
>>> is_dicomweb_url("https://pacs.example.org/dicom-web"), is_dicomweb_url("scans/")
(True, False)
>>> public_url("http://127.0.0.1:8042/dicom-web/")
'http://127.0.0.1:8042/dicom-web'
"""

from medveil.dicomweb.access import (
    PASSWORD_VARIABLE,
    TOKEN_VARIABLE,
    USER_VARIABLE,
    DicomWebError,
    DicomWebUnavailableError,
    RetryPolicy,
    is_dicomweb_url,
    public_url,
)
from medveil.dicomweb.studies import DicomWebIndex, DicomWebItem

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


def __getattr__(name: str) -> object:
    # The client pulls in dicomweb-client and its HTTP stack (about 0.4 s), which a folder run
    # never uses: it loads on first use.
    if name == "DicomWebSource":
        from medveil.dicomweb.client import DicomWebSource

        return DicomWebSource
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
