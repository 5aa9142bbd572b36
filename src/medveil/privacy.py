"""A privacy evaluation of one key on one dataset: every attack, every threat model, saved.

The custodian's question is "what does an attacker get back from what I hand out?". This module
draws disjoint victim, known-pair and public image sets from a dataset folder
(:mod:`medveil.image_sets`, whose names it re-exports), obfuscates the victims and pairs with
the key, runs the registered attacks (:mod:`medveil.attacks`) under each requested threat
model (A2 once per number of known pairs), and writes per-image and summary results (JSON and
CSV) and a figure of example reconstructions.
"""

from __future__ import annotations

import io
import json
import time
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from medveil.atomic import atomic_write_bytes, atomic_write_json
from medveil.attacks import (
    Attack,
    AttackContext,
    AttackResult,
    MatchingAttack,
    PrivacySummary,
    ThreatModel,
    Victims,
    attack_spec,
    list_attacks,
)
from medveil.errors import ConfigError
from medveil.image_sets import ImageSets, select_images
from medveil.keys import Key
from medveil.machine import resolve_device
from medveil.obfuscator import Obfuscator
from medveil.outputs import mark_output

__all__ = [
    "ImageSets",
    "PrivacyConfig",
    "PrivacyReport",
    "run_attacks",
    "run_privacy",
    "save_report",
    "select_images",
]


@dataclass(frozen=True, kw_only=True)
class PrivacyConfig:
    """What to attack and with which budgets.

    Parameters
    ----------
    victims, public
        Number of victim images and of public images (A1 and above).
    pairs
        Numbers of known (original, obfuscated) pairs; A2 is evaluated once per number.
    threats
        Threat models (:class:`~medveil.attacks.ThreatModel`): ``A1``, ``A2``, ``A3``.
    attacks
        Names of registered attacks (:func:`~medveil.attacks.list_attacks`) or ``("all",)``.
    decoder_steps, decoder_seconds
        Budget of the learned decoder (KPD): whichever ends first.
    mda_steps
        Gradient steps of the Minimum Difference Attack.
    seed
        Seeds the choice of victims, pairs and public images and the attacks.
    examples
        Victims shown in the reconstruction figure.
    """

    victims: int = 200
    public: int = 1000
    pairs: tuple[int, ...] = (100, 1000)
    threats: tuple[str, ...] = ("A1", "A2", "A3")
    attacks: tuple[str, ...] = ("all",)
    decoder_steps: int = 2000
    decoder_seconds: float = 600.0
    mda_steps: int = 300
    seed: int = 0
    device: str = "auto"
    batch_size: int = 64
    examples: int = 4

    def __post_init__(self) -> None:
        if self.victims < 1 or self.public < 1 or any(p < 1 for p in self.pairs):
            raise ConfigError("victims, public and every pairs count must be positive")
        if not self.threats:
            raise ConfigError("must name at least one threat model", field="threats")
        known = [str(t) for t in ThreatModel]
        for threat in self.threats:
            if threat not in known:
                raise ConfigError(
                    f"unknown threat model {threat!r} ({', '.join(known)})", field="threats"
                )
        unknown = [a for a in self.attacks if a != "all" and a not in list_attacks()]
        if unknown:
            raise ConfigError(
                f"unknown attack {unknown[0]!r}; choose from all, {', '.join(list_attacks())}",
                field="attacks",
            )
        if self.decoder_steps < 1 or self.decoder_seconds <= 0 or self.mda_steps < 1:
            raise ConfigError("decoder_steps, decoder_seconds and mda_steps must be positive")

    def attack_names(self) -> tuple[str, ...]:
        """The attacks to run, in the order given (``all``: every registered one, in table order)."""
        return list_attacks() if "all" in self.attacks else tuple(self.attacks)

    def build_attacks(self, progress: Callable[[str], None] | None = None) -> list[Attack]:
        """The attacks of :meth:`attack_names` with this configuration's budgets and seed.

        ``seed`` goes to every attack that takes one; the step and time budgets to the
        attacks they name.
        """

        def decoder_progress(step: int, total: int, loss: float) -> None:
            if progress is not None:
                progress(f"kpd step {step}/{total} loss {loss:.4f}")

        budgets: dict[str, dict[str, Any]] = {
            "mda": {"steps": self.mda_steps},
            "kpd": {
                "max_steps": self.decoder_steps,
                "max_seconds": self.decoder_seconds,
                "progress": decoder_progress,
            },
        }
        attacks = []
        for name in self.attack_names():
            spec = attack_spec(name)
            params = dict(budgets.get(name, {}))
            if "seed" in spec.parameters:
                params["seed"] = self.seed
            attacks.append(spec.create(**params))
        return attacks


@dataclass
class PrivacyReport:
    """Every attack result of one evaluation, with the settings that produced them.

    ``victims`` and ``examples`` (each reconstruction attack's first reconstructions, named
    by attack, threat and pairs) feed the figure of :func:`save_report`; they are not saved
    otherwise.
    """

    results: list[tuple[AttackResult, int | None]]
    skipped: list[dict[str, str]] = field(default_factory=list)
    info: dict[str, Any] = field(default_factory=dict)
    victims: Victims | None = field(default=None, repr=False)
    examples: list[tuple[str, torch.Tensor]] = field(default_factory=list, repr=False)

    def summary(self) -> PrivacySummary:
        """One row per (attack, threat, pairs): mean/std/max of every metric, and its views."""
        rows = []
        for result, pairs in self.results:
            row = result.summary()
            row["pairs"] = pairs
            rows.append(row)
        return PrivacySummary(rows=tuple(rows))

    def per_image(self) -> pd.DataFrame:
        frames = []
        for result, pairs in self.results:
            frame = result.to_frame()
            frame.insert(3, "pairs", pairs)
            frames.append(frame)
        return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def run_attacks(
    sets: ImageSets,
    *,
    key: Key,
    config: PrivacyConfig,
    attacks: Sequence[Attack] | None = None,
    noise_seed: int | None = None,
    progress: Callable[[str], None] | None = None,
) -> PrivacyReport:
    """Obfuscate ``sets``' victims and pairs with ``key`` and run every applicable attack.

    Each threat model of ``config`` is evaluated in turn, A2 once per number of known pairs
    (the first that many of ``sets.pairs``); under each, every attack that applies (threat
    model and scheme) runs, and the others are listed in ``skipped`` with the reason.

    Parameters
    ----------
    sets
        Disjoint victims, known pairs and public images (:func:`select_images`).
    key
        The victims' (calibrated) key; handed to the attacker only under A3.
    config
        Threat models, pair counts, attack names and budgets, device, batch size.
    attacks
        Attack instances to run instead of ``config``'s names (their own parameters).
    noise_seed
        Pins the obfuscation noise (reproducibility studies only).

    Raises
    ------
    DisjointnessError
        If the victims share an image (by id) with the public set or the pairs.
    ConfigError
        If A2 is asked for and ``sets`` holds no pairs.
    """
    started = time.perf_counter()
    say = progress or (lambda message: None)
    device = resolve_device(config.device)
    if "A2" in config.threats and len(sets.pairs) == 0:
        raise ConfigError("threats: A2 needs known pairs, and the image sets hold none")
    obfuscator = Obfuscator(key, noise_seed=noise_seed)
    say("obfuscating victims and pairs")
    victims = Victims.obfuscate(sets.victims, obfuscator, ids=sets.victim_ids)
    known = (
        Victims.obfuscate(sets.pairs, obfuscator, ids=sets.pair_ids)
        if "A2" in config.threats
        else None
    )
    attacks = list(attacks) if attacks is not None else config.build_attacks(progress)
    report = PrivacyReport(results=[], victims=victims)
    runs: list[tuple[ThreatModel, int | None]] = []
    for threat in config.threats:
        if threat == "A2":
            runs.extend((ThreatModel.A2, n) for n in sorted(config.pairs))
        else:
            runs.append((ThreatModel(threat), None))
    for threat, pairs in runs:
        context = AttackContext(
            threat=threat,
            params=key.params,
            public=sets.public,
            public_ids=sets.public_ids,
            pair_originals=known.originals[:pairs] if pairs and known else None,
            pair_obfuscated=known.obfuscated[:pairs] if pairs and known else None,
            pair_ids=known.ids[:pairs] if pairs and known else None,
            key=key if threat is ThreatModel.A3 else None,
            device=device,
        )
        context.check_victims(victims)
        for attack in attacks:
            reason = attack.applicable(context)
            label = f"{attack.name} {threat}" + (f" ({pairs} pairs)" if pairs else "")
            if reason is not None:
                report.skipped.append(
                    {
                        "attack": attack.name,
                        "threat": str(threat),
                        "pairs": str(pairs or ""),
                        "reason": reason,
                    }
                )
                continue
            say(f"running {label}")
            if isinstance(attack, MatchingAttack):
                result = attack.run(context, victims)
            else:
                result = attack.run(
                    context, victims, batch_size=config.batch_size, keep_reconstructions=True
                )
                if result.reconstructions is not None:
                    report.examples.append((label, result.reconstructions[: config.examples]))
                    result.reconstructions = None
            report.results.append((result, pairs))
    report.info = {
        "key_fingerprint": key.fingerprint,
        "params": key.params.to_dict(),
        "config": asdict(config),
        "victims": len(victims),
        "pairs_available": len(known) if known else 0,
        "public": len(sets.public),
        "skipped_files": len(sets.skipped),
        "device": str(device),
        "seconds": time.perf_counter() - started,
    }
    return report


def run_privacy(
    dataset: str | Path,
    *,
    key: Key,
    config: PrivacyConfig,
    output: str | Path | None = None,
    public_dataset: str | Path | None = None,
    noise_seed: int | None = None,
    progress: Callable[[str], None] | None = None,
    groups: Mapping[str, Hashable] | None = None,
) -> PrivacyReport:
    """Evaluate ``key`` against the attack suite on images of ``dataset``; see module docs.

    Draws the image sets (:func:`select_images`) and runs :func:`run_attacks` on them.
    ``groups`` (relative path -> near-duplicate group) keeps re-saved copies of one image out
    of more than one of the victim, pair and public sets.

    Returns
    -------
    PrivacyReport
        One result per attack and threat model (and pairs count under A2); ``summary()`` is
        the table of their scores. With ``output``, it is also saved there (:func:`save_report`).

    Examples
    --------
    >>> import tempfile
    >>> from pathlib import Path
    >>> from medveil import generate_key
    >>> from medveil.privacy import PrivacyConfig, run_privacy
    >>> from medveil.synthetic.write import write_dataset
    >>> config = PrivacyConfig(
    ...     victims=2, public=6, threats=("A1",), attacks=("mean_image", "nearest_public"),
    ...     device="cpu",
    ... )
    >>> key = generate_key(preset="svd", size=32, rank=8)
    >>> with tempfile.TemporaryDirectory() as folder:
    ...     data = write_dataset("ovary-us", Path(folder) / "data", per_class=6, size=32)
    ...     report = run_privacy(data.path, key=key, config=config)
    >>> frame = report.summary().to_frame()
    >>> print(frame[["attack", "threat", "images"]].to_string(index=False))
            attack threat  images
        mean_image     A1       2
    nearest_public     A1       2
    """
    started = time.perf_counter()
    say = progress or (lambda message: None)
    say("loading images")
    sets = select_images(
        dataset,
        size=key.params.size,
        victims=config.victims,
        pairs=max(config.pairs) if "A2" in config.threats else 0,
        public=config.public,
        seed=config.seed,
        public_dataset=public_dataset,
        groups=groups,
    )
    report = run_attacks(sets, key=key, config=config, noise_seed=noise_seed, progress=progress)
    report.info = {
        "dataset": Path(dataset).name,
        "public_dataset": None if public_dataset is None else Path(public_dataset).name,
        **report.info,
        "near_duplicate_groups": groups is not None,
        "seconds": time.perf_counter() - started,
    }
    if output is not None:
        save_report(report, Path(output))
    return report


def save_report(report: PrivacyReport, output: Path) -> None:
    """Write ``summary.csv/json``, ``per_image.csv``, one JSON per result and ``examples.png``."""
    output.mkdir(parents=True, exist_ok=True)
    mark_output(output, kind="attack-run")  # keys are refused in here
    (output / "results").mkdir(exist_ok=True)
    for result, pairs in report.results:
        name = f"{result.attack}__{result.threat}" + (f"__pairs{pairs}" if pairs else "")
        atomic_write_bytes(output / "results" / f"{name}.json", result.to_json().encode())
    summary = report.summary().to_frame()
    atomic_write_bytes(output / "summary.csv", summary.to_csv(index=False).encode())
    atomic_write_bytes(output / "per_image.csv", report.per_image().to_csv(index=False).encode())
    records = json.loads(summary.to_json(orient="records"))
    atomic_write_json(
        output / "summary.json",
        {"info": report.info, "summary": records, "skipped": report.skipped},
    )
    if report.victims is not None and report.examples:
        atomic_write_bytes(output / "examples.png", _examples_png(report.victims, report.examples))


def _examples_png(victims: Victims, examples: Sequence[tuple[str, torch.Tensor]]) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    count = min(len(victims), *(len(images) for _, images in examples))
    rows = [("original", victims.originals[:count]), ("obfuscated", victims.obfuscated[:count])]
    rows += list(examples)
    fig = Figure(figsize=(1.9 * count + 1.6, 1.9 * len(rows)))
    for r, (label, images) in enumerate(rows):
        for c in range(count):
            ax = fig.add_subplot(len(rows), count, r * count + c + 1)
            img = images[c].float().numpy()
            if label == "obfuscated":
                ax.imshow(img, cmap="gray", aspect="auto", interpolation="nearest")
            else:
                ax.imshow(np.clip(img, 0, 1), cmap="gray", vmin=0, vmax=1)
            ax.set_xticks([])
            ax.set_yticks([])
            if c == 0:
                ax.set_ylabel(label, fontsize=7, rotation=0, ha="right", va="center")
    # Room on the left for row labels such as "public_basis A2 (100 pairs)".
    fig.tight_layout(rect=(0.14, 0, 1, 1))
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=90)
    return buffer.getvalue()
