"""medveil: keyed multistage SVD obfuscation of medical images."""

__version__ = "0.1.0"

from medveil.calibration import calibrate  # noqa: E402
from medveil.keys import Calibration, Key, Preset, SchemeParams, generate_key  # noqa: E402
from medveil.obfuscator import Obfuscator  # noqa: E402

__all__ = [
    "Calibration",
    "Key",
    "Obfuscator",
    "Preset",
    "SchemeParams",
    "calibrate",
    "generate_key",
]
