"""Which presets a study runs: the names it accepts, its default, and those a saved run ran."""

from __future__ import annotations

from typing import Any

from medveil.keys import NAMED_SETTINGS, Preset

__all__ = ["DEFAULT_PRESETS", "PRESET_NAMES", "recorded_presets", "resumed_presets"]

#: What ``presets`` may name: the two schemes of the method and the library's named settings.
PRESET_NAMES: tuple[str, ...] = (*(str(p) for p in Preset), *NAMED_SETTINGS)
#: The presets a new study runs: the prior scheme, the method's default and ``private``.
DEFAULT_PRESETS: tuple[str, ...] = ("svd", "multistage", "private")
#: The presets of a study whose ``config.yaml`` predates the ``presets`` field.
_UNRECORDED_PRESETS: tuple[str, ...] = ("svd", "multistage")


def recorded_presets(saved: dict[str, Any]) -> tuple[str, ...]:
    """The presets a study ran, from its saved ``config.yaml`` (read as a mapping).

    A study saved before the configuration had ``presets`` ran ``svd`` and ``multistage``.

    Examples
    --------
    >>> recorded_presets({"presets": ["svd", "private"]})
    ('svd', 'private')
    >>> recorded_presets({"seed": 0})
    ('svd', 'multistage')
    """
    return tuple(saved.get("presets", _UNRECORDED_PRESETS))


def resumed_presets(saved: dict[str, Any], asked: tuple[str, ...]) -> tuple[str, ...]:
    """The presets a rerun of the study saved as ``saved`` runs, when asked for ``asked``.

    What was asked, except that a study saved before ``presets`` existed, rerun with the
    default, resumes with the presets it ran: the ones added to the default since (``private``)
    are not added to it. Asking it for a list of one's own is a change of configuration.

    Examples
    --------
    >>> resumed_presets({"seed": 0}, DEFAULT_PRESETS)
    ('svd', 'multistage')
    >>> resumed_presets({"presets": ["svd"]}, DEFAULT_PRESETS)
    ('svd', 'multistage', 'private')
    >>> resumed_presets({"seed": 0}, ("private",))
    ('private',)
    """
    return recorded_presets(saved) if "presets" not in saved and asked == DEFAULT_PRESETS else asked
