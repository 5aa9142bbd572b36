"""Input stems: shapes and gradients for every model, the exact unmixing, saving and resuming."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from conftest import smooth_images
from medveil.calibration import calibrate
from medveil.keys import generate_key
from medveil.obfuscator import Obfuscator
from medveil.training import DataSource, TrainConfig, load_run, train
from medveil.training.models import MODELS, StemmedClassifier, create_model
from medveil.training.stems import (
    TwoSidedStem,
    create_stem,
    default_stem,
    resize_matrix,
    stem_alignment,
)

N, K = 32, 8


def test_resize_matrices_reproduce_antialiased_resizing_of_non_square_arrays():
    x = torch.rand(3, 1, N, K, dtype=torch.float64)
    for size in (16, 24, 40):
        ref = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True)
        out = resize_matrix(N, size).double() @ x @ resize_matrix(K, size).double().T
        assert torch.allclose(out, ref, atol=1e-6)
    assert torch.equal(resize_matrix(20, 20), torch.eye(20))


def test_the_resize_stem_is_the_plain_resize_and_has_no_parameters():
    stem = create_stem("resize", in_shape=(N, K), size=24)
    x = torch.rand(2, 1, N, K)
    ref = F.interpolate(x, size=(24, 24), mode="bilinear", antialias=True)
    assert torch.allclose(stem(x), ref, atol=1e-5)
    assert not list(stem.parameters())
    with pytest.raises(ValueError, match="reads \\(B, 1, 32, 8\\)"):
        stem(torch.rand(2, 1, K, N))


@pytest.mark.parametrize("preset", ["svd", "multistage"])
@pytest.mark.parametrize("name", sorted(MODELS))
def test_every_model_with_a_stem_runs_forward_and_backward(name, preset):
    key = generate_key(preset=preset, size=N, rank=K)
    shape = key.params.out_shape
    size = MODELS[name].min_input_size
    torch.manual_seed(0)
    model = create_model(name, num_classes=3, input_size=size, stem="linear", in_shape=shape)
    assert isinstance(model, StemmedClassifier)
    model.train()
    x = torch.randn(2, 1, *shape)
    logits = model(x)
    assert logits.shape == (2, 3) and torch.isfinite(logits).all()
    logits.sum().backward()
    # The stem learns: both of its matrices receive a gradient.
    assert model.stem.left.grad.abs().sum() > 0 and model.stem.right.grad.abs().sum() > 0


def test_a_stem_set_to_the_exact_unmixing_turns_multistage_output_into_the_svd_factor():
    images = smooth_images(6, N, seed=4)
    multistage = generate_key(preset="multistage", size=N, rank=K, bits=None, noise=0.0)
    multistage = calibrate(multistage, images)
    svd = multistage.with_params(preset="svd", left="none", right="none")
    y = Obfuscator(multistage)(images)
    z = Obfuscator(svd)(images)
    assert y.shape == (6, N, N) and z.shape == (6, N, K)
    left, right = multistage.left_matrix(), multistage.right_matrix()
    calib = multistage.calibration
    # Undo the output standardisation, then L* = D R_L^T and R* = R_R^+ E^T.
    raw = torch.from_numpy(y * calib.std + calib.mean)[:, None]
    size = 24
    stem = create_stem("linear", in_shape=(N, N), size=size)
    with torch.no_grad():
        stem.left.copy_(resize_matrix(N, size) @ torch.from_numpy(left.T).float())
        stem.right.copy_(
            torch.from_numpy(np.linalg.pinv(right)).float() @ resize_matrix(K, size).T
        )
    unmixed = stem(raw)
    expected = F.interpolate(torch.from_numpy(z)[:, None], size=(size, size), mode="bilinear",
                             antialias=True)
    scale = expected.abs().max()
    assert torch.allclose(unmixed / scale, expected / scale, atol=1e-4)
    # The alignment measure calls this stem a full recovery of both sides of the key, and the
    # untrained (resize) stem a near-random reader.
    align = stem_alignment(stem, left=left, right=right)
    assert align["left"] == pytest.approx(1.0, abs=1e-6)
    assert align["right"] == pytest.approx(1.0, abs=1e-6)
    assert align["left_resize"] < 0.95 and align["right_resize"] < 0.7
    untrained = stem_alignment(create_stem("linear", in_shape=(N, N), size=size), left=left,
                               right=right)
    assert untrained["left"] == pytest.approx(untrained["left_resize"])


def test_default_stems_by_kind():
    assert default_stem("obfuscated") == "linear" and default_stem("plaintext") == "resize"
    with pytest.raises(ValueError, match="choose one of resize, linear"):
        create_stem("conv", in_shape=(N, N), size=16)
    with pytest.raises(ValueError, match="stem: must be one of"):
        TrainConfig(stem="conv")


def _obfuscated_source(count: int = 64) -> tuple[DataSource, object]:
    images = smooth_images(count, N, seed=7)
    labels = np.arange(count) % 2
    images[labels == 1] = np.clip(images[labels == 1] + 0.3 * (np.arange(N) % 4 < 2), 0, 1)
    key = calibrate(generate_key(preset="multistage", size=N, rank=K), images)
    arrays = Obfuscator(key)(images)
    source = DataSource.from_arrays(
        arrays, labels, classes=("a", "b"), kind="obfuscated",
        provenance={"key_fingerprint": key.fingerprint, "preset": "multistage",
                    "params": key.params.to_dict(), "shape": list(key.params.out_shape)},
    )
    return source, key


def test_a_run_records_its_stem_and_reloads_and_resumes_with_it(tmp_path):
    source, _ = _obfuscated_source()
    config = TrainConfig(
        model="smallcnn", epochs=3, batch_size=16, lr=3e-3, input_size=16, device="cpu",
        patience=None, test_fraction=0.25,
    )
    full = train(source, config=config, run_dir=tmp_path / "full")
    info = json.loads((tmp_path / "full" / "run.json").read_text())
    assert info["stem"] == "linear" and info["in_shape"] == [N, N]
    assert json.loads((tmp_path / "full" / "config.json").read_text())["stem"] == "linear"
    run = load_run(tmp_path / "full")
    best = torch.load(tmp_path / "full" / "best.pt", weights_only=True)["model"]
    assert torch.equal(run.model.stem.left, best["stem.left"])
    # The stem moved away from its start (it is trained with the backbone).
    assert not torch.allclose(best["stem.left"], resize_matrix(N, 16), atol=1e-4)
    # Interrupted in its second epoch and resumed: the same stem and history as the full run.
    class Interrupt(Exception):
        pass

    def stop(event):
        if event.epoch == 2 and event.step == 1:
            raise Interrupt

    with pytest.raises(Interrupt):
        train(source, config=config, run_dir=tmp_path / "cut", progress=stop)
    resumed = train(source, config=config, run_dir=tmp_path / "cut", resume=True)
    assert [h.val_loss for h in resumed.history] == [h.val_loss for h in full.history]
    a = torch.load(tmp_path / "full" / "last.pt", weights_only=True)["model"]
    b = torch.load(tmp_path / "cut" / "last.pt", weights_only=True)["model"]
    assert torch.equal(a["stem.left"], b["stem.left"])
    assert torch.equal(a["stem.right"], b["stem.right"])
    # The resize stem is a choice too, recorded and kept fixed.
    fixed = train(source, config=TrainConfig(**{**config.to_dict(), "stem": "resize"}),
                  run_dir=tmp_path / "fixed")
    stem = load_run(fixed.run_dir).model.stem
    assert isinstance(stem, TwoSidedStem) and not list(stem.parameters())


def test_a_run_with_a_stem_can_start_another_from_its_backbone(tmp_path):
    source, _ = _obfuscated_source(32)
    config = TrainConfig(model="smallcnn", epochs=1, batch_size=16, input_size=16, device="cpu",
                         patience=None, test_fraction=0.25)
    train(source, config=config, run_dir=tmp_path / "a")
    started = train(source, config=TrainConfig(**{**config.to_dict(),
                                                  "weights": tmp_path / "a" / "best.pt"}),
                    run_dir=tmp_path / "b")
    assert started.epochs_run == 1
