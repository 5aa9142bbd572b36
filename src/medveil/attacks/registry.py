"""The attack registry: each attack module declares its attack here, everything else reads it.

In the style of timm's ``_registry.py`` and ``_factory.py``: an attack class is decorated with
:func:`register_attack`, which records its name and threat models (class attributes of the
attack), what it needs from the attacker's knowledge, a human label and a one-sentence
summary. The runner (:func:`medveil.privacy.run_privacy`), the command line's help, the study
report's legend and ``docs/ATTACKS.md`` all read :func:`list_attacks`; :func:`create_attack`
builds one by name.

Every registered attack needs public images (scale, basis or the matching pool), so an
observer who holds nothing but obfuscated arrays (the ``A0`` of ``METHOD.md``) has no attack
here: the A1 results bound what such an observer gets back.

Examples
--------
>>> from medveil.attacks import attack_spec, create_attack, list_attacks
>>> from medveil.attacks.registry import needs_text
>>> list_attacks()[:3]
('mean_image', 'nearest_public', 'public_basis')
>>> spec = attack_spec("lba")
>>> print(spec.label, "|", *sorted(spec.threats), "|", needs_text(spec))
Leading Bit Attack | A2 A3 | public + pairs or key
>>> create_attack("mda", steps=5).steps
5
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, TypeVar

from medveil.attacks.base import Attack, MatchingAttack, ThreatModel
from medveil.attacks.context import GRANTS, Knowledge
from medveil.errors import ConfigError

__all__ = [
    "GRANTS",
    "AttackSpec",
    "Knowledge",
    "attack_spec",
    "attack_specs",
    "attacks_markdown",
    "create_attack",
    "list_attacks",
    "needs_text",
    "register_attack",
]


@dataclass(frozen=True, kw_only=True)
class AttackSpec:
    """One registered attack.

    Parameters
    ----------
    name
        What users type (``--attacks lba``) and what results carry.
    label
        Human name, e.g. ``"Leading Bit Attack"``.
    summary
        One sentence: what the attack does and what it shows.
    threats
        Threat models it runs under (the class's ``threats``).
    needs
        Knowledge it cannot run without, granted by every one of its threat models; under a
        stronger model it may use more (the key, the pairs).
    order
        Position in ``all`` and in every table (smaller first).
    cls
        The attack class; a frozen keyword-only dataclass of its parameters.
    """

    name: str
    label: str
    summary: str
    threats: frozenset[ThreatModel]
    needs: frozenset[Knowledge]
    order: int
    cls: type[Attack]

    @property
    def kind(self) -> str:
        """``"matching"`` (re-identification) or ``"reconstruction"``."""
        return "matching" if issubclass(self.cls, MatchingAttack) else "reconstruction"

    @property
    def parameters(self) -> tuple[str, ...]:
        """Names of the attack's parameters (its dataclass fields)."""
        return tuple(f.name for f in dataclasses.fields(self.cls))  # type: ignore[arg-type]

    def create(self, **params: Any) -> Attack:
        """An instance with ``params`` over the defaults; unknown names are refused."""
        unknown = sorted(set(params) - set(self.parameters))
        if unknown:
            raise ConfigError(
                f"attack {self.name}: unknown parameter(s) {', '.join(unknown)}; it takes "
                f"{', '.join(self.parameters) or 'none'}"
            )
        return self.cls(**params)


_REGISTRY: dict[str, AttackSpec] = {}

A = TypeVar("A", bound=type[Attack])


def register_attack(
    *, label: str, summary: str, needs: Iterable[Knowledge | str], order: int
) -> Callable[[A], A]:
    """Class decorator: add the attack to the registry under its ``name``.

    Raises
    ------
    ConfigError
        If the name is taken, or a threat model of the attack does not grant what it needs.
    """

    def register(cls: A) -> A:
        name = cls.name
        wanted = frozenset(Knowledge(n) for n in needs)
        if name in _REGISTRY and _REGISTRY[name].cls is not cls:
            raise ConfigError(f"attack name {name} is registered twice")
        for threat in cls.threats:
            missing = wanted - GRANTS[threat]
            if missing:
                raise ConfigError(
                    f"attack {name} needs {', '.join(sorted(missing))}, which {threat} does "
                    "not grant"
                )
        _REGISTRY[name] = AttackSpec(
            name=name,
            label=label,
            summary=summary,
            threats=frozenset(cls.threats),
            needs=wanted,
            order=order,
            cls=cls,
        )
        return cls

    return register


def attack_specs() -> tuple[AttackSpec, ...]:
    """Every registered attack, in table order."""
    return tuple(sorted(_REGISTRY.values(), key=lambda spec: (spec.order, spec.name)))


def list_attacks() -> tuple[str, ...]:
    """Names of every registered attack, in table order (what ``all`` runs)."""
    return tuple(spec.name for spec in attack_specs())


def attack_spec(name: str) -> AttackSpec:
    """The registry entry of ``name``.

    Raises
    ------
    ConfigError
        If no attack of that name is registered (the message lists the names).
    """
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ConfigError(
            f"unknown attack {name}; choose from {', '.join(list_attacks())}"
        ) from None


def create_attack(name: str, **params: Any) -> Attack:
    """The attack ``name`` with ``params`` over its defaults (timm's ``create_model``)."""
    return attack_spec(name).create(**params)


def needs_text(spec: AttackSpec) -> str:
    """What the attacker must hold, in words: ``"public"``, ``"public + pairs or key"``.

    Its ``needs``, plus what the weakest of its threat models grants beyond them when none
    of them asks for less.
    """

    def words(knowledge: frozenset[Knowledge]) -> str:
        return ", ".join(k for k in Knowledge if k in knowledge)

    base = words(spec.needs)
    more = [GRANTS[t] - spec.needs for t in sorted(spec.threats)]
    if not more or any(not m for m in more):
        return base
    return base + " + " + " or ".join(dict.fromkeys(words(m) for m in more))


def attacks_markdown() -> str:
    """The registry as a Markdown table (name, label, threat models, needs, summary).

    ``docs/ATTACKS.md`` holds this table; a test keeps the two equal.
    """
    lines = [
        "| attack | label | threat models | needs | what it does |",
        "|---|---|---|---|---|",
    ]
    for spec in attack_specs():
        lines.append(
            f"| `{spec.name}` | {spec.label} | {', '.join(sorted(spec.threats))} | "
            f"{needs_text(spec)} | {spec.summary} |"
        )
    return "\n".join(lines)
