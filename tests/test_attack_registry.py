"""The attack registry drives the runner, the command line and the docs; the privacy summary's
views (terminal, Markdown, HTML) show the numbers of its frame."""

from __future__ import annotations

import io
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np
import pandas as pd
import pytest
import torch
from rich.console import Console
from typer.testing import CliRunner

from conftest import write_png_folder
from medveil.attacks import (
    AttackContext,
    KnownPlaintextDecoderAttack,
    LeadingBitAttack,
    MinimumDifferenceAttack,
    PrivacySummary,
    ReconstructionAttack,
    ThreatModel,
    attack_spec,
    attack_specs,
    create_attack,
    list_attacks,
    register_attack,
    registry,
)
from medveil.attacks.base import Reconstructor
from medveil.attacks.registry import Knowledge, attacks_markdown
from medveil.calibration import calibrate
from medveil.cli import app
from medveil.errors import ConfigError
from medveil.keys import generate_key
from medveil.privacy import PrivacyConfig, select_images

ROOT = Path(__file__).resolve().parents[1]


def test_registry_holds_every_attack_in_table_order() -> None:
    assert list_attacks() == (
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
    for spec in attack_specs():
        assert spec.cls.name == spec.name and spec.threats == spec.cls.threats
    assert attack_spec("lba").cls is LeadingBitAttack
    assert attack_spec("lba").label == "Leading Bit Attack"
    assert attack_spec("kpl").needs == {Knowledge.PUBLIC, Knowledge.PAIRS}
    assert attack_spec("reid").kind == "matching" and attack_spec("mda").kind == "reconstruction"
    mda = create_attack("mda", steps=7)
    assert isinstance(mda, MinimumDifferenceAttack) and mda.steps == 7
    with pytest.raises(ConfigError, match="attack lba: unknown parameter.*steps"):
        create_attack("lba", steps=3)
    with pytest.raises(ConfigError, match="unknown attack lbb; choose from mean_image"):
        attack_spec("lbb")


def test_no_registered_attack_runs_without_public_images() -> None:
    # Why there is no A0 (observer with obfuscated arrays alone): nothing could run under it.
    assert [str(t) for t in ThreatModel] == ["A1", "A2", "A3"]
    assert all(Knowledge.PUBLIC in spec.needs for spec in attack_specs())


def test_config_hands_budgets_and_seed_to_the_attacks_that_take_them() -> None:
    config = PrivacyConfig(mda_steps=9, decoder_steps=11, decoder_seconds=5.0, seed=4)
    attacks = {a.name: a for a in config.build_attacks()}
    assert list(attacks) == list(list_attacks())
    assert attacks["mda"].steps == 9
    kpd = attacks["kpd"]
    assert isinstance(kpd, KnownPlaintextDecoderAttack)
    assert (kpd.max_steps, kpd.max_seconds, kpd.seed) == (11, 5.0, 4)
    assert {n for n, a in attacks.items() if getattr(a, "seed", None) == 4} == {
        "mda_pool",
        "kpd",
        "reid",
        "gram",
        "covariance",
    }
    with pytest.raises(ConfigError, match="attacks: unknown attack 'lbb'; choose from all, mean_image"):
        PrivacyConfig(attacks=("lbb",))


def test_registration_refuses_what_a_threat_model_does_not_grant(monkeypatch) -> None:
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))

    @dataclass(frozen=True, kw_only=True)
    class Greedy(ReconstructionAttack):
        name: ClassVar[str] = "greedy"
        threats: ClassVar[frozenset[ThreatModel]] = frozenset({ThreatModel.A1, ThreatModel.A2})

        def fit(self, context: AttackContext, observed: torch.Tensor, extra: dict) -> Reconstructor:
            raise AssertionError("never run")

    with pytest.raises(ConfigError, match="greedy needs pairs, which A1 does not grant"):
        register_attack(label="Greedy", summary="", needs=("public", "pairs"), order=1)(Greedy)
    assert "greedy" not in list_attacks()

    @dataclass(frozen=True, kw_only=True)
    class Impostor(Greedy):
        name: ClassVar[str] = "lba"

    with pytest.raises(ConfigError, match="attack name lba is registered twice"):
        register_attack(label="Impostor", summary="", needs=("public",), order=1)(Impostor)
    assert attack_spec("lba").cls is LeadingBitAttack


@dataclass(frozen=True, kw_only=True)
class ZeroImage(ReconstructionAttack):
    """Reconstructs every victim as the black image: MSE is then the victim's mean square."""

    name: ClassVar[str] = "zero_image"
    threats: ClassVar[frozenset[ThreatModel]] = frozenset({ThreatModel.A1})

    def fit(self, context: AttackContext, observed: torch.Tensor, extra: dict) -> Reconstructor:
        n = context.params.size
        return lambda y: {"zero": torch.zeros(len(y), n, n)}


def test_a_newly_registered_attack_is_in_the_help_the_config_and_the_runner(
    monkeypatch, tmp_path
) -> None:
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))
    runner = CliRunner()
    assert "zero_image" not in runner.invoke(app, ["attack", "--help"]).output
    register_attack(
        label="Black image", summary="Every victim as the black image.", needs=("public",), order=15
    )(ZeroImage)
    wide = {"COLUMNS": "200", "TERMINAL_WIDTH": "200"}  # one option's help on one line
    assert list_attacks()[:2] == ("mean_image", "zero_image")
    help_text = runner.invoke(app, ["attack", "--help"], env=wide).output
    assert "zero_image: Black image (A1; needs public)" in help_text
    assert "'all': mean_image, zero_image, nearest_public" in help_text

    data = tmp_path / "data"
    write_png_folder(data, classes=("a", "b"), per_class=12, seed=3)
    key = calibrate(generate_key(size=32, rank=6), torch.rand(8, 32, 32))
    key.save(tmp_path / "keys" / "site.key")
    args = ["attack", str(data), "--key", str(tmp_path / "keys" / "site.key"), "--device", "cpu"]
    args += ["--attacks", "zero_image", "--threat", "A1", "--victims", "5", "--public-images", "10"]
    result = runner.invoke(app, [*args, "-o", str(tmp_path / "out")], env=wide)
    assert result.exit_code == 0, result.output
    summary = pd.read_csv(tmp_path / "out" / "summary.csv")
    assert list(summary["attack"]) == ["zero_image"]
    victims = select_images(data, size=32, victims=5, pairs=0, public=10).victims
    expected = float((victims.double() ** 2).mean(dim=(1, 2)).mean())
    assert summary.loc[0, "mse_mean"] == pytest.approx(expected, rel=1e-5)
    assert "zero_image" in result.output and f"{summary.loc[0, 'ssim_mean']:.3f}" in result.output


def test_docs_list_the_registry() -> None:
    assert attacks_markdown() in (ROOT / "docs" / "ATTACKS.md").read_text()


ROWS = [
    {
        "attack": "public_basis",
        "threat": "A1",
        "preset": "svd",
        "images": 4,
        "ssim_mean": 0.2196,
        "ssim_std": 0.0754,
        "ssim_max": 0.4631,
        "psnr_mean": 14.5649,
        "psnr_unclipped_mean": 14.3712,
        "seconds": 28.04,
        "pairs": None,
    },
    {
        "attack": "kpl",
        "threat": "A2",
        "preset": "svd",
        "images": 4,
        "ssim_mean": 0.9991,
        "ssim_std": 0.0004,
        "ssim_max": 1.0,
        "psnr_mean": math.inf,
        "psnr_unclipped_mean": 61.237,
        "seconds": 3.96,
        "pairs": 100,
    },
    {
        "attack": "reid",
        "threat": "A3",
        "preset": "svd",
        "images": 4,
        "top1_mean": 0.75,
        "top5_mean": 1.0,
        "chance_top1": 0.0012,
        "seconds": 0.44,
        "pairs": None,
    },
]


def _expected_cells(frame: pd.DataFrame) -> list[list[str]]:
    """What every view must show, written out from the frame's numbers."""
    out = []
    for row in frame.to_dict(orient="records"):
        pairs = "" if pd.isna(row["pairs"]) else str(int(row["pairs"]))
        cells = [row["preset"], row["attack"], row["threat"], pairs]
        if pd.isna(row.get("ssim_mean")):
            top = f"{row['top1_mean']:.3f} ({row['chance_top1']:.3f})"
            cells += ["", "", "", "", top, f"{row['top5_mean']:.3f}"]
        else:
            psnr = "inf" if math.isinf(row["psnr_mean"]) else f"{row['psnr_mean']:.2f}"
            cells += [
                f"{row['ssim_mean']:.3f} ± {row['ssim_std']:.3f}",
                f"{row['ssim_max']:.3f}",
                psnr,
                f"{row['psnr_unclipped_mean']:.2f}",
                "",
                "",
            ]
        out.append([*cells, f"{row['seconds']:.1f}"])
    return out


def test_every_view_shows_the_numbers_of_the_frame(tmp_path) -> None:
    summary = PrivacySummary.from_records(ROWS, groups=("preset",))
    frame = summary.to_frame()
    assert frame.loc[1, "psnr_mean"] == math.inf and frame.loc[1, "pairs"] == 100
    expected = _expected_cells(frame)
    assert expected[0][4] == "0.220 ± 0.075" and expected[2][8] == "0.750 (0.001)"
    assert [list(c) for c in summary.cells()] == expected
    header = list(summary.header())

    lines = summary.to_markdown().splitlines()
    assert [c.strip() for c in lines[0].strip("|").split("|")] == header
    assert [[c.strip() for c in line[2:-2].split(" | ")] for line in lines[2:]] == expected

    page = summary.to_html(table_id="privacy-svd")
    assert page.count("<tr>") == len(ROWS) + 1 and 'id="privacy-svd"' in page
    rows = re.findall(r"<tr>(.*?)</tr>", page)
    assert re.findall(r"<th[^>]*>(.*?)</th>", rows[0]) == header
    html_cells = [re.findall(r"<td[^>]*>(.*?)</td>", r) for r in rows[1:]]
    assert html_cells == expected

    buffer = io.StringIO()
    Console(file=buffer, width=250).print(summary.to_rich(title="scores"))
    shown = [
        [c.strip() for c in line.split("│")[1:-1]]
        for line in buffer.getvalue().splitlines()
        if line.startswith("│")
    ]
    assert shown == expected

    # summary.csv read back (the benchmark's --collect) renders the same cells.
    frame.to_csv(tmp_path / "summary.csv", index=False)
    again = PrivacySummary.from_frame(pd.read_csv(tmp_path / "summary.csv"), groups=("preset",))
    assert [list(c) for c in again.cells()] == expected
    np.testing.assert_allclose(again.to_frame()["ssim_mean"], frame["ssim_mean"])
