"""The group each stored image belongs to, as a keyed hash.

Every image is stored with the hash of its group (:func:`group_hash`): the ``group`` column of
a labels file when given, else the DICOM PatientID, else the file itself (the study, for a
DICOMweb source), so that the slices of a volume, the frames of a file and the images of a
patient are never split apart by ``train``.
"""

from __future__ import annotations

import hashlib
import hmac

from medveil.dicomweb import DicomWebItem
from medveil.keys import Key
from medveil.layout import Item, path_bytes

__all__ = ["GROUP_SCHEME", "group_hash", "group_name"]

#: How group hashes are made (recorded in the plan and manifest).
GROUP_SCHEME = "hmac-sha256-64/v1"


def group_name(item: Item, patient: str | None) -> str:
    """What an image is grouped by: the labels file's group, else the DICOM PatientID, else its
    file (so a volume's slices and a file's frames stay together) or DICOMweb study."""
    if item.group is not None:
        return "group:" + item.group
    if patient is not None:
        return "patient:" + patient
    if isinstance(item, DicomWebItem):
        return "study:" + item.study
    return "file:" + path_bytes(item.path).hex()


def group_hash(key: Key, listing: str, name: str) -> int:
    """A 64-bit keyed hash of a group name, as stored.

    HMAC-SHA-256 under the key's secret (which never leaves the data holder), salted with the
    run's file listing, so a store holds nothing that identifies the patient or can be matched
    against a guessed PatientID, and two stores of different files do not share group values.
    """
    message = b"medveil/group/v1/" + listing.encode() + b"/" + name.encode(
        "utf-8", "surrogateescape"
    )
    digest = hmac.new(key.secret, message, hashlib.sha256).digest()
    return int.from_bytes(digest[:8], "little", signed=True)
