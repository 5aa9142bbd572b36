from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from typer.testing import CliRunner

from conftest import smooth_images
from medveil.calibration import calibrate
from medveil.cli import app
from medveil.keys import generate_key
from medveil.metrics import reconstruction_metrics
from medveil.privacy import PrivacyConfig, run_privacy, select_images


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("privacy") / "data"
    images = smooth_images(60, 40, seed=21)
    for i, image in enumerate(images):
        folder = root / ("a" if i % 2 else "b")
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray((image * 255).astype(np.uint8)).save(folder / f"{i:03d}.png")
    return root


def test_selected_sets_are_disjoint_and_seeded(dataset):
    sets = select_images(dataset, size=32, victims=10, pairs=20, public=25, seed=3)
    ids = [set(sets.victim_ids), set(sets.pair_ids), set(sets.public_ids)]
    assert [len(s) for s in ids] == [10, 20, 25]
    assert not (ids[0] & ids[1] or ids[0] & ids[2] or ids[1] & ids[2])
    again = select_images(dataset, size=32, victims=10, pairs=20, public=25, seed=3)
    assert again.victim_ids == sets.victim_ids
    with pytest.raises(ValueError, match="not enough images"):
        select_images(dataset, size=32, victims=30, pairs=20, public=25)


def test_svd_preset_is_reconstructed_and_results_are_saved(dataset, tmp_path):
    key = generate_key(preset="svd", size=32, rank=8)
    config = PrivacyConfig(
        victims=10,
        public=30,
        pairs=(10,),
        threats=("A1", "A2"),
        attacks=("public_basis", "reid", "kpl"),
        device="cpu",
    )
    report = run_privacy(dataset, key=key, config=config, output=tmp_path / "attack")
    summary = report.summary().to_frame().set_index(["attack", "threat"])
    # The svd preset hands out Z itself: the public basis gets much closer than the best
    # key-free guess, the mean public image.
    sets = select_images(dataset, size=32, victims=10, pairs=10, public=30)
    guess = sets.public.mean(0, keepdim=True).expand_as(sets.victims)
    baseline = float(reconstruction_metrics(sets.victims, guess)["ssim"].mean())
    assert summary.loc[("public_basis", "A1"), "ssim_mean"] > baseline + 0.1
    assert summary.loc[("reid", "A1"), "top1_mean"] > summary.loc[("reid", "A1"), "chance_top1"]
    assert summary.loc[("kpl", "A2"), "pairs"] == 10
    saved = json.loads((tmp_path / "attack" / "summary.json").read_text())
    assert saved["info"]["key_fingerprint"] == key.fingerprint and saved["info"]["victims"] == 10
    assert key.secret.hex() not in (tmp_path / "attack" / "summary.json").read_text()
    per_image = pd.read_csv(tmp_path / "attack" / "per_image.csv")
    assert len(per_image) == 10 * len(report.results)
    assert (tmp_path / "attack" / "examples.png").read_bytes()[:4] == b"\x89PNG"


def test_attack_command(dataset, tmp_path):
    key = calibrate(generate_key(size=32, rank=6), smooth_images(16, 32, seed=2))
    key.save(tmp_path / "keys" / "site.key")
    result = CliRunner().invoke(
        app,
        [
            "attack",
            str(dataset),
            "--key",
            str(tmp_path / "keys" / "site.key"),
            "-o",
            str(tmp_path / "out"),
            "--attacks",
            "lba,public_basis",
            "--threat",
            "A3",
            "--victims",
            "8",
            "--public-images",
            "20",
            "--device",
            "cpu",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "lba" in result.output and (tmp_path / "out" / "summary.csv").is_file()
    bad = CliRunner().invoke(
        app,
        [
            "attack",
            str(dataset),
            "--key",
            str(tmp_path / "keys" / "site.key"),
            "-o",
            str(tmp_path / "out2"),
            "--threat",
            "A9",
        ],
    )
    assert bad.exit_code == 2 and "A9" in bad.output


def test_exact_duplicates_never_land_on_two_sides(tmp_path):
    root = tmp_path / "dup"
    images = smooth_images(12, 40, seed=5)
    for i, image in enumerate(images):
        (root / "a").mkdir(parents=True, exist_ok=True)
        pixels = (image * 255).astype(np.uint8)
        Image.fromarray(pixels).save(root / "a" / f"{i:03d}.png")
        Image.fromarray(pixels).save(root / "a" / f"copy-{i:03d}.png")
    sets = select_images(root, size=32, victims=4, pairs=4, public=4, seed=0)
    drawn = np.concatenate([sets.victims.numpy(), sets.pairs.numpy(), sets.public.numpy()])
    assert len({x.tobytes() for x in drawn}) == 12
    assert any("duplicate" in s for s in sets.skipped)
