"""medveil: keyed multistage SVD obfuscation of medical images."""

__version__ = "0.1.0"

import importlib  # noqa: E402
from typing import TYPE_CHECKING, Any  # noqa: E402

if TYPE_CHECKING:
    from medveil.calibration import calibrate
    from medveil.keys import Calibration, Key, Preset, SchemeParams, generate_key
    from medveil.obfuscator import Obfuscator

__all__ = [
    "Calibration",
    "Key",
    "Obfuscator",
    "Preset",
    "SchemeParams",
    "calibrate",
    "generate_key",
]

# Imported on first use, so that `import medveil` (and `medveil --help`) does not load torch.
_HOMES = {
    "Calibration": "medveil.keys",
    "Key": "medveil.keys",
    "Preset": "medveil.keys",
    "SchemeParams": "medveil.keys",
    "generate_key": "medveil.keys",
    "calibrate": "medveil.calibration",
    "Obfuscator": "medveil.obfuscator",
}


def __getattr__(name: str) -> Any:
    if name not in _HOMES:
        raise AttributeError(f"module 'medveil' has no attribute '{name}'")
    value = getattr(importlib.import_module(_HOMES[name]), name)
    globals()[name] = value
    return value
