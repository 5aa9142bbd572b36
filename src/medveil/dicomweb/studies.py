"""What a labels CSV of studies becomes: the instances of each study, in a fixed order.

The labels CSV (:func:`medveil.layout.read_label_rows`) names studies by the columns
``StudyInstanceUID`` and ``label``, optionally ``split`` and ``group``; a QIDO-RS search lists
each study's instances, and :func:`study_items` orders them by series number, series UID,
instance number and SOP instance UID, so every run sees the same order.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from medveil.dicomweb.access import DicomWebError
from medveil.errors import DatasetLayoutError
from medveil.layout import DatasetIndex, Item, LabelRow, read_label_rows

__all__ = ["DicomWebIndex", "DicomWebItem", "read_studies", "study_items"]

# A UID is digits and dots, at most 64 characters (DICOM PS3.5, 9.1).
_UID = re.compile(r"[0-9]+(\.[0-9]+)*")
_STUDY_COLUMN = "StudyInstanceUID"
# QIDO-RS result attributes, as DICOM JSON tags.
_SERIES_UID, _SOP_UID = "0020000E", "00080018"
_SERIES_NUMBER, _INSTANCE_NUMBER = "00200011", "00200013"


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


def read_studies(labels: Path) -> list[LabelRow]:
    """The rows of a labels CSV of studies, each :attr:`LabelRow.key` a checked study UID.

    Raises
    ------
    DatasetLayoutError
        A bad labels file (as :func:`medveil.layout.read_label_rows`), or a study UID that is
        not a UID.
    """

    def check(raw: str, where: str) -> str:
        if len(raw) > 64 or not _UID.fullmatch(raw):
            raise DatasetLayoutError(
                f"{where}: {raw or '(empty)'} is not a StudyInstanceUID (digits and dots, "
                "at most 64 characters)"
            )
        return raw

    return read_label_rows(labels, key=_STUDY_COLUMN, check=check, noun="studies")


def study_items(
    found: list[dict[str, Any]], *, row: LabelRow, label: int, labels: Path
) -> list[DicomWebItem]:
    """The instances of the study in ``row`` from its QIDO-RS answer ``found``, in order.

    Raises
    ------
    DicomWebError
        An instance in the answer lacks a SeriesInstanceUID or SOPInstanceUID (naming the
        labels file and the row).
    """
    study = str(row.key)
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
    return [
        DicomWebItem(
            path=Path(study, series, sop), label=label, group=row.group, study=study,
            series=series, sop=sop, row=row.line,
        )
        for _, series, _, sop in sorted(instances)
    ]


def _first(result: dict[str, Any], tag: str) -> Any:
    values = result.get(tag, {}).get("Value") or [None]
    return values[0]


def _number(value: Any) -> tuple[bool, float]:
    """A sort key that puts missing or malformed numbers last."""
    try:
        return (False, float(value))
    except (TypeError, ValueError):
        return (True, 0.0)
