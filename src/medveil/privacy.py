"""A privacy evaluation of one key on one dataset: every attack, every threat model, saved.

The custodian's question is "what does an attacker get back from what I hand out?". This module
draws disjoint victim, known-pair and public image sets from a dataset folder, obfuscates the
victims and pairs with the key, runs the attack suite (:mod:`medveil.attacks`) under each
requested threat model (A2 once per number of known pairs), and writes per-image and summary
results (JSON and CSV) and a figure of example reconstructions.
"""

from __future__ import annotations

import hashlib
import io
import json
import time
from collections.abc import Callable, Sequence
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
    CovarianceAttack,
    GramAttack,
    KnownPlaintextDecoderAttack,
    KnownPlaintextLinearAttack,
    LeadingBitAttack,
    MatchingAttack,
    MeanImageBaseline,
    MinimumDifferenceAttack,
    MinimumDifferencePoolAttack,
    NearestPublicAttack,
    PublicBasisAttack,
    ReidentificationAttack,
    ThreatModel,
    Victims,
)
from medveil.errors import ConfigError, ImageLoadError
from medveil.keys import Key
from medveil.layout import scan_dataset
from medveil.loading import LoadOptions, load_image
from medveil.machine import resolve_device
from medveil.obfuscator import Obfuscator
from medveil.outputs import mark_output

__all__ = [
    "ATTACK_NAMES",
    "ImageSets",
    "PrivacyConfig",
    "PrivacyReport",
    "run_privacy",
    "save_report",
    "select_images",
]

ATTACK_NAMES = (
    "mean_image",
    "nearest_public",
    "public_basis",
    "lba",
    "mda",
    "mda_pool",
    "kpl",
    "kpd",
    "reid",
    "gram",
    "covariance",
)


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
        Threat models among ``A1``, ``A2``, ``A3``.
    attacks
        Attack names (:data:`ATTACK_NAMES`) or ``("all",)``.
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
        for threat in self.threats:
            if threat not in ("A1", "A2", "A3"):
                raise ConfigError(f"unknown threat model {threat!r} (A1, A2, A3)", field="threats")
        unknown = [a for a in self.attacks if a != "all" and a not in ATTACK_NAMES]
        if unknown:
            raise ConfigError(
                f"unknown attack {unknown[0]!r}; choose from all, {', '.join(ATTACK_NAMES)}",
                field="attacks",
            )
        if self.decoder_steps < 1 or self.decoder_seconds <= 0 or self.mda_steps < 1:
            raise ConfigError("decoder_steps, decoder_seconds and mda_steps must be positive")

    def build_attacks(self, progress: Callable[[str], None] | None = None) -> list[Attack]:
        def decoder_progress(step: int, total: int, loss: float) -> None:
            if progress is not None:
                progress(f"kpd step {step}/{total} loss {loss:.4f}")

        every = {
            "mean_image": MeanImageBaseline(),
            "nearest_public": NearestPublicAttack(),
            "public_basis": PublicBasisAttack(),
            "lba": LeadingBitAttack(),
            "mda": MinimumDifferenceAttack(steps=self.mda_steps),
            "mda_pool": MinimumDifferencePoolAttack(seed=self.seed),
            "kpl": KnownPlaintextLinearAttack(),
            "kpd": KnownPlaintextDecoderAttack(
                max_steps=self.decoder_steps,
                max_seconds=self.decoder_seconds,
                seed=self.seed,
                progress=decoder_progress,
            ),
            "reid": ReidentificationAttack(seed=self.seed),
            "gram": GramAttack(seed=self.seed),
            "covariance": CovarianceAttack(seed=self.seed),
        }
        names = ATTACK_NAMES if "all" in self.attacks else self.attacks
        return [every[name] for name in names]


@dataclass(frozen=True)
class ImageSets:
    """Disjoint image sets ``(B, n, n)`` in [0, 1] with stable ids (relative paths)."""

    victims: torch.Tensor
    victim_ids: tuple[str, ...]
    pairs: torch.Tensor
    pair_ids: tuple[str, ...]
    public: torch.Tensor
    public_ids: tuple[str, ...]
    skipped: tuple[str, ...] = ()


def _load_many(
    root: Path, paths: Sequence[Path], size: int, want: int, seen: set[str]
) -> tuple[list, list, list, int]:
    """Load up to ``want`` images; returns images, ids, problems and how many paths were used.

    ``seen`` holds content hashes of images already drawn: an exact duplicate under another
    file name (public datasets have them) would otherwise sit on both sides of a split.
    """
    images, ids, skipped = [], [], []
    options = LoadOptions(size=size)
    used = 0
    for path in paths:
        if len(images) >= want:
            break
        used += 1
        try:
            image = load_image(root / path, options=options)
        except ImageLoadError as exc:
            skipped.append(str(exc))
            continue
        digest = hashlib.sha256(image.tobytes()).hexdigest()
        if digest in seen:
            skipped.append(f"{path}: duplicate of an image already drawn")
            continue
        seen.add(digest)
        images.append(image)
        ids.append(str(path))
    return images, ids, skipped, used


def select_images(
    dataset: str | Path,
    *,
    size: int,
    victims: int,
    pairs: int,
    public: int,
    seed: int = 0,
    public_dataset: str | Path | None = None,
) -> ImageSets:
    """Draw disjoint victims, known pairs and public images (seeded).

    Victims and pairs come from ``dataset``; the public set from ``public_dataset`` when given
    (a different source of the same modality), else from the rest of ``dataset``. Bad files and
    exact duplicates (same pixels under another name) are passed over and listed in ``skipped``.
    """
    index = scan_dataset(dataset)
    items = [item.path for split in index.splits.values() for item in split]
    order = [items[i] for i in np.random.default_rng(seed).permutation(len(items))]
    seen: set[str] = set()
    vic, vic_ids, bad1, used = _load_many(index.root, order, size, victims, seen)
    rest = order[used:]
    pr, pr_ids, bad2, used = _load_many(index.root, rest, size, pairs, seen)
    rest = rest[used:]
    if public_dataset is not None:
        pub_index = scan_dataset(public_dataset)
        pub_items = [i.path for split in pub_index.splits.values() for i in split]
        pub_order = [
            pub_items[i] for i in np.random.default_rng(seed + 1).permutation(len(pub_items))
        ]
        pub, pub_ids, bad3, _ = _load_many(pub_index.root, pub_order, size, public, seen)
        pub_ids = [f"public:{p}" for p in pub_ids]
    else:
        pub, pub_ids, bad3, _ = _load_many(index.root, rest, size, public, seen)
    if len(vic) < victims or len(pr) < pairs or len(pub) < public:
        raise ConfigError(
            f"{index.root}: not enough images for {victims} victims, {pairs} pairs and "
            f"{public} public images (got {len(vic)}, {len(pr)}, {len(pub)}); "
            "lower the counts or give a separate public dataset"
        )

    def stack(images: list[np.ndarray]) -> torch.Tensor:
        return torch.from_numpy(np.stack(images)) if images else torch.zeros(0, size, size)

    return ImageSets(
        victims=stack(vic),
        victim_ids=tuple(vic_ids),
        pairs=stack(pr),
        pair_ids=tuple(pr_ids),
        public=stack(pub),
        public_ids=tuple(pub_ids),
        skipped=tuple(bad1 + bad2 + bad3),
    )


@dataclass
class PrivacyReport:
    """Every attack result of one evaluation, with the settings that produced them."""

    results: list[tuple[AttackResult, int | None]]
    skipped: list[dict[str, str]] = field(default_factory=list)
    info: dict[str, Any] = field(default_factory=dict)

    def summary(self) -> pd.DataFrame:
        """One row per (attack, threat, pairs): mean/std/max of every metric."""
        rows = []
        for result, pairs in self.results:
            row = result.summary()
            row["pairs"] = pairs
            rows.append(row)
        return pd.DataFrame(rows)

    def per_image(self) -> pd.DataFrame:
        frames = []
        for result, pairs in self.results:
            frame = result.to_frame()
            frame.insert(3, "pairs", pairs)
            frames.append(frame)
        return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def run_privacy(
    dataset: str | Path,
    *,
    key: Key,
    config: PrivacyConfig,
    output: str | Path | None = None,
    public_dataset: str | Path | None = None,
    noise_seed: int | None = None,
    progress: Callable[[str], None] | None = None,
) -> PrivacyReport:
    """Evaluate ``key`` against the attack suite on images of ``dataset``; see module docs.

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
    >>> print(report.summary()[["attack", "threat", "images"]].to_string(index=False))
            attack threat  images
        mean_image     A1       2
    nearest_public     A1       2
    """
    started = time.perf_counter()
    say = progress or (lambda message: None)
    device = resolve_device(config.device)
    need_pairs = max(config.pairs) if "A2" in config.threats else 0
    say("loading images")
    sets = select_images(
        dataset,
        size=key.params.size,
        victims=config.victims,
        pairs=need_pairs,
        public=config.public,
        seed=config.seed,
        public_dataset=public_dataset,
    )
    obfuscator = Obfuscator(key, noise_seed=noise_seed)
    say("obfuscating victims and pairs")
    victims = Victims.obfuscate(sets.victims, obfuscator, ids=sets.victim_ids)
    known = Victims.obfuscate(sets.pairs, obfuscator, ids=sets.pair_ids) if need_pairs else None
    attacks = config.build_attacks(progress)
    report = PrivacyReport(results=[])
    runs: list[tuple[ThreatModel, int | None]] = []
    for threat in config.threats:
        if threat == "A2":
            runs.extend((ThreatModel.A2, n) for n in sorted(config.pairs))
        else:
            runs.append((ThreatModel(threat), None))
    kept: list[tuple[str, torch.Tensor]] = []
    for threat, pairs in runs:
        context = AttackContext(
            threat=threat,
            params=key.params,
            public=sets.public,
            public_ids=sets.public_ids,
            pair_originals=known.originals[:pairs] if pairs else None,
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
                    kept.append((label, result.reconstructions[: config.examples]))
                    result.reconstructions = None
            report.results.append((result, pairs))
    report.info = {
        "dataset": Path(dataset).name,
        "public_dataset": None if public_dataset is None else Path(public_dataset).name,
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
    if output is not None:
        save_report(report, Path(output), victims=victims, examples=kept, count=config.examples)
    return report


def save_report(
    report: PrivacyReport,
    output: Path,
    *,
    victims: Victims | None = None,
    examples: Sequence[tuple[str, torch.Tensor]] = (),
    count: int = 4,
) -> None:
    """Write ``summary.csv/json``, ``per_image.csv``, one JSON per result and ``examples.png``."""
    output.mkdir(parents=True, exist_ok=True)
    mark_output(output, kind="attack-run")  # keys are refused in here
    (output / "results").mkdir(exist_ok=True)
    for result, pairs in report.results:
        name = f"{result.attack}__{result.threat}" + (f"__pairs{pairs}" if pairs else "")
        atomic_write_bytes(output / "results" / f"{name}.json", result.to_json().encode())
    summary = report.summary()
    atomic_write_bytes(output / "summary.csv", summary.to_csv(index=False).encode())
    atomic_write_bytes(output / "per_image.csv", report.per_image().to_csv(index=False).encode())
    records = json.loads(summary.to_json(orient="records"))
    atomic_write_json(
        output / "summary.json",
        {"info": report.info, "summary": records, "skipped": report.skipped},
    )
    if victims is not None and examples:
        atomic_write_bytes(output / "examples.png", _examples_png(victims, examples, count))


def _examples_png(
    victims: Victims, examples: Sequence[tuple[str, torch.Tensor]], count: int
) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    count = min(count, len(victims))
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
