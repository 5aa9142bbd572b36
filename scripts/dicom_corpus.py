"""Which of pydicom's shipped test files each pixel-data plugin decodes (docs/FORMATS.md).

Usage: ``python scripts/dicom_corpus.py``. For every ``.dcm`` file shipped in
``pydicom/data/test_files`` (78 with pydicom 3.0), tries pydicom's decoders one plugin at a time
(``pydicom``'s native RLE/uncompressed path and Pillow are always tried; then ``pylibjpeg`` and
``gdcm`` where installed) and prints, per plugin set, how many files decode, then the files no
set decodes. Plugins that are not installed are reported as such: install ``python-gdcm`` into
a scratch environment to compare it.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import pydicom
from pydicom.pixels import pixel_array

CORPUS = Path(pydicom.__file__).parent / "data" / "test_files"
SETS = {
    "pydicom + pillow": ("pydicom", "pillow"),
    "+ pylibjpeg": ("pydicom", "pillow", "pylibjpeg"),
    "+ gdcm": ("pydicom", "pillow", "gdcm"),
    "+ pylibjpeg + gdcm": ("pydicom", "pillow", "pylibjpeg", "gdcm"),
}


def decodes(ds: pydicom.Dataset, plugins: tuple[str, ...]) -> bool:
    for plugin in plugins:
        try:
            pixel_array(ds, decoding_plugin=plugin)
            return True
        except Exception:  # noqa: BLE001 - any failure means "this plugin cannot"
            continue
    return False


def main() -> None:
    warnings.simplefilter("ignore")
    files = sorted(CORPUS.glob("*.dcm"))
    counts = dict.fromkeys(SETS, 0)
    nowhere = []
    for path in files:
        try:
            ds = pydicom.dcmread(path, force=True)
        except Exception:  # noqa: BLE001
            nowhere.append(path.name)
            continue
        results = {name: decodes(ds, plugins) for name, plugins in SETS.items()}
        for name, ok in results.items():
            counts[name] += ok
        if not any(results.values()):
            nowhere.append(path.name)
    print(f"{len(files)} files in {CORPUS}")
    for name, count in counts.items():
        print(f"{name:>20}: {count} decode")
    print(f"decoded by none ({len(nowhere)}): {', '.join(nowhere)}")


if __name__ == "__main__":
    main()
