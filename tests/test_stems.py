"""Input stems: shapes and gradients for every model, the exact unmixing, the data-fitted start,
saving and resuming."""

from __future__ import annotations

import importlib
import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from conftest import smooth_images
from medveil.calibration import calibrate
from medveil.errors import ConfigError
from medveil.keys import generate_key
from medveil.obfuscator import Obfuscator
from medveil.training import DataSource, TrainConfig, load_run, train
from medveil.training.data import plan_splits, prepare_data
from medveil.training.models import MODELS, StemmedClassifier, create_model
from medveil.training.optim import make_optimizer, make_scheduler
from medveil.training.stems import (
    TwoSidedStem,
    create_stem,
    default_stem,
    fit_stem,
    resize_matrix,
    stem_alignment,
)

N, K = 32, 8
# The module whose fit_stem the training loop calls (``medveil.training.train`` is the function).
train_module = importlib.import_module("medveil.training.train")


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
    with pytest.raises(ValueError, match="choose one of resize, linear, fitted"):
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


class Interrupt(Exception):
    pass


def interrupt_in_epoch_two(source, config, run_dir):  # type: ignore[no-untyped-def]
    """Start a run in ``run_dir`` and stop it at the first step of its second epoch."""

    def stop(event):  # type: ignore[no-untyped-def]
        if event.epoch == 2 and event.step == 1:
            raise Interrupt

    with pytest.raises(Interrupt):
        train(source, config=config, run_dir=run_dir, progress=stop)


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
    interrupt_in_epoch_two(source, config, tmp_path / "cut")
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


def test_the_stem_learns_at_its_own_rate_through_the_schedule_and_a_resume(tmp_path):
    source, _ = _obfuscated_source()
    config = TrainConfig(
        model="smallcnn", epochs=3, batch_size=16, lr=3e-3, input_size=16, device="cpu",
        patience=None, test_fraction=0.25, stem_lr_scale=10,
    )
    model = create_model("smallcnn", num_classes=2, input_size=16, stem="linear", in_shape=(N, N))
    optimizer = make_optimizer(model, config)
    scheduler = make_scheduler(optimizer, config, total_steps=20)
    for _ in range(7):  # through the warm-up, past its peak at step 6, the rates keep their ratio
        optimizer.step()
        scheduler.step()
        backbone, stem = (group["lr"] for group in optimizer.param_groups)
        assert stem == pytest.approx(10 * backbone)
    assert {id(p) for p in optimizer.param_groups[1]["params"]} == {
        id(model.stem.left), id(model.stem.right)
    }
    # The stem moves further from its start than at the backbone's rate, on the same data.
    runs = {
        scale: train(source, config=TrainConfig(**{**config.to_dict(), "stem_lr_scale": scale}),
                     run_dir=tmp_path / f"scale{scale}")
        for scale in (1, 10)
    }
    moved = {
        scale: float((load_run(run.run_dir).model.stem.left.detach() - resize_matrix(N, 16)).norm())
        for scale, run in runs.items()
    }
    assert moved[10] > 3 * moved[1], moved
    assert json.loads((tmp_path / "scale10" / "config.json").read_text())["stem_lr_scale"] == 10

    interrupt_in_epoch_two(source, config, tmp_path / "cut")
    resumed = train(source, config=config, run_dir=tmp_path / "cut", resume=True)
    assert [h.val_loss for h in resumed.history] == [h.val_loss for h in runs[10].history]
    with pytest.raises(ConfigError, match="stem_lr_scale: must be positive"):
        TrainConfig(stem_lr_scale=0)


def test_a_run_with_a_stem_can_start_another_from_its_backbone(tmp_path):
    source, _ = _obfuscated_source(32)
    config = TrainConfig(model="smallcnn", epochs=1, batch_size=16, input_size=16, device="cpu",
                         patience=None, test_fraction=0.25)
    train(source, config=config, run_dir=tmp_path / "a")
    started = train(source, config=TrainConfig(**{**config.to_dict(),
                                                  "weights": tmp_path / "a" / "best.pt"}),
                    run_dir=tmp_path / "b")
    assert started.epochs_run == 1


def _orthonormal(rows: int, cols: int, *, seed: int) -> np.ndarray:
    """A ``rows x cols`` matrix with orthonormal columns (rows >= cols)."""
    return np.linalg.qr(np.random.default_rng(seed).standard_normal((rows, rows)))[0][:, :cols]


def _principal_cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Cosines of the principal angles between the column spans of ``a`` and ``b``."""
    qa, qb = np.linalg.qr(a)[0], np.linalg.qr(b)[0]
    return np.linalg.svd(qa.T @ qb, compute_uv=False)


def _mean_square(stem: TwoSidedStem, y: torch.Tensor) -> float:
    with torch.no_grad():
        return float(stem(y).double().square().mean())


def test_the_fitted_start_reads_the_principal_axes_of_the_arrays_rows_and_columns():
    # Y = R_L Z R_R: R_L orthogonal, R_R with orthonormal rows (k x m), Z = P diag(sigma) W of
    # rank k whose row second moment k P diag(sigma^2) P^T has distinct eigenvalues.
    n, k, s, count = N, K, 16, 400
    rng = np.random.default_rng(1)
    r_left, r_right = _orthonormal(n, n, seed=2), _orthonormal(n, k, seed=3).T
    basis, sigma = _orthonormal(n, n, seed=4), np.linspace(3.0, 0.2, n)
    z = basis @ (sigma[:, None] * rng.standard_normal((count, n, k)))
    y = torch.from_numpy(r_left @ z @ r_right).float()[:, None]
    stem = create_stem("fitted", in_shape=(n, n), size=s)
    fit = fit_stem(stem, lambda: y.split(64))
    left, right = stem.left.detach().double().numpy(), stem.right.detach().double().numpy()
    assert np.isfinite(left).all() and np.isfinite(right).all()
    assert (fit.left_axes, fit.right_axes, fit.count) == (s, k, count)
    # Left: the rows span R_L applied to the top s principal row axes of the factor Z (those
    # of the sample it saw exactly, the population's P closely).
    zz = np.einsum("bik,bjk->ij", z, z)
    top = np.linalg.eigh(zz)[1][:, ::-1][:, :s]
    assert _principal_cosines(left.T, r_left @ top).min() > 1 - 1e-6
    assert _principal_cosines(left.T, r_left @ basis[:, :s]).min() > 0.9
    # Eigenvalue order: row i of L is R_L's image of the i-th axis (up to the scale), with the
    # sign that makes its largest entry positive.
    rows = left / np.linalg.norm(left, axis=1, keepdims=True)
    assert np.abs(np.sum(rows * (r_left @ top).T, axis=1)) == pytest.approx(np.ones(s), abs=1e-5)
    assert (rows[np.arange(s), np.abs(rows).argmax(axis=1)] > 0).all()
    # Right: E[Y^T Y] has rank k, so its k axes (exactly the row space of R_R) are stretched
    # over the s outputs; no output column is empty.
    cosines = _principal_cosines(right, r_right.T)
    assert np.linalg.matrix_rank(right, tol=1e-6) == k and cosines.min() > 1 - 1e-6
    with torch.no_grad():
        out = stem(y).double()
    per_column = out.square().mean(dim=(0, 1, 2))
    assert per_column.min() > 0.05 * per_column.mean()
    # The backbone sees inputs of the resize's magnitude.
    resize = create_stem("resize", in_shape=(n, n), size=s)
    assert _mean_square(stem, y) == pytest.approx(_mean_square(resize, y), rel=1e-5)
    assert fit.resize_mean_square == pytest.approx(_mean_square(resize, y), rel=1e-5)
    # Deterministic: a second fit of the same batches gives the same matrices, bit for bit.
    again = create_stem("fitted", in_shape=(n, n), size=s)
    fit_stem(again, lambda: y.split(64))
    assert torch.equal(again.left, stem.left) and torch.equal(again.right, stem.right)


def test_a_fitted_stem_on_a_factor_narrower_than_the_input_stretches_its_axes():
    # The svd preset's n x k factor with k < s: k right axes, stretched to s outputs.
    s = 16
    z = torch.randn(100, 1, N, K, generator=torch.Generator().manual_seed(5))
    z = z * torch.linspace(2.0, 0.5, K)
    stem = create_stem("fitted", in_shape=(N, K), size=s)
    fit = fit_stem(stem, lambda: z.split(32))
    assert (fit.left_axes, fit.right_axes) == (s, K)
    right = stem.right.detach().double()
    # R0 = c V E: V orthogonal (K x K), E the resize of K axes to s.
    axes = right @ torch.linalg.pinv(resize_matrix(K, s).double().T)
    gram = axes.T @ axes
    assert torch.allclose(gram / gram[0, 0], torch.eye(K, dtype=torch.float64), atol=1e-5)
    with torch.no_grad():
        out = stem(z)
    assert torch.isfinite(out).all() and out.square().mean(dim=(0, 1, 2)).min() > 0
    resize = create_stem("resize", in_shape=(N, K), size=s)
    assert _mean_square(stem, z) == pytest.approx(_mean_square(resize, z), rel=1e-5)
    with pytest.raises(ValueError, match="reads \\(B, 1, 32, 8\\) arrays, got \\(2, 1, 8, 32\\)"):
        fit_stem(stem, lambda: [torch.zeros(2, 1, K, N)])
    with pytest.raises(ValueError, match="all zero"):
        fit_stem(stem, lambda: [torch.zeros(2, 1, N, K)])


class _Starts:
    """Records the start each call of the real :func:`fit_stem` gives a run's stem."""

    def __init__(self) -> None:
        self.starts: list[tuple[torch.Tensor, torch.Tensor]] = []
        self.global_rng_kept: list[bool] = []

    def __call__(self, stem, batches, **kwargs):  # type: ignore[no-untyped-def]
        before = torch.random.get_rng_state()
        fit = fit_stem(stem, batches, **kwargs)
        self.global_rng_kept.append(torch.equal(before, torch.random.get_rng_state()))
        self.starts.append((stem.left.detach().clone(), stem.right.detach().clone()))
        return fit


def _fitted_config(**changes: object) -> TrainConfig:
    settings: dict[str, object] = {
        "model": "smallcnn", "epochs": 1, "batch_size": 16, "lr": 3e-3, "input_size": 16,
        "device": "cpu", "patience": None, "test_fraction": 0.25, "stem": "fitted",
    }
    settings.update(changes)
    return TrainConfig(**settings)  # type: ignore[arg-type]


def test_the_fitted_start_comes_from_the_training_split_only(tmp_path, monkeypatch):
    source, _ = _obfuscated_source()
    config = _fitted_config()
    plan = plan_splits(source, val_fraction=config.val_fraction,
                       test_fraction=config.test_fraction, seed=config.seed)
    held_out = np.concatenate([plan.parts["val"][1], plan.parts["test"][1]])
    # The same training arrays; validation and test arrays from another world (the split only
    # depends on the labels and the seed, so it is the same).
    table = source.tables["all"]
    arrays = table.arrays(np.arange(len(table.labels))).copy()
    arrays[held_out] = 5.0 * np.random.default_rng(9).standard_normal(arrays[held_out].shape)
    other = DataSource.from_arrays(arrays, table.labels, classes=source.classes,
                                   kind="obfuscated", provenance=source.provenance)
    starts = _Starts()
    monkeypatch.setattr(train_module, "fit_stem", starts)
    train(source, config=config, run_dir=tmp_path / "a")
    train(other, config=config, run_dir=tmp_path / "b")
    (left_a, right_a), (left_b, right_b) = starts.starts
    assert torch.equal(left_a, left_b) and torch.equal(right_a, right_b)
    # Reading the split draws nothing from the global RNG: the dropout draws that follow are
    # those of a run with another stem.
    assert starts.global_rng_kept == [True, True]
    # It is the fit of the standardised training arrays, and a fit that read the held-out
    # arrays too would differ.
    prepared = prepare_data(other, image_size=16, val_fraction=config.val_fraction,
                            test_fraction=0.25, seed=0)
    train_set = prepared.sets["train"]
    direct = create_stem("fitted", in_shape=(N, N), size=16)
    fit_stem(direct, lambda: [torch.stack([train_set[i][0] for i in range(len(train_set))])])
    assert torch.allclose(direct.left, left_a, atol=1e-6)
    assert torch.allclose(direct.right, right_a, atol=1e-6)
    everything = torch.from_numpy(prepared.standardisation.apply(
        torch.from_numpy(arrays)).numpy())[:, None]
    leaky = create_stem("fitted", in_shape=(N, N), size=16)
    fit_stem(leaky, lambda: [everything])
    assert not torch.allclose(leaky.left.abs(), left_a.abs(), atol=1e-2)


def test_a_fitted_run_saves_loads_and_resumes_without_refitting(tmp_path, monkeypatch):
    source, _ = _obfuscated_source()
    config = _fitted_config(epochs=3)
    starts = _Starts()
    monkeypatch.setattr(train_module, "fit_stem", starts)
    full = train(source, config=config, run_dir=tmp_path / "full")
    assert len(starts.starts) == 1
    info = json.loads((tmp_path / "full" / "run.json").read_text())
    assert info["stem"] == "fitted"
    best = torch.load(tmp_path / "full" / "best.pt", weights_only=True)["model"]
    run = load_run(tmp_path / "full")
    assert torch.equal(run.model.stem.left, best["stem.left"])
    assert torch.equal(run.model.stem.right, best["stem.right"])
    # It learned from its fitted start.
    start_left, _ = starts.starts[0]
    assert not torch.allclose(best["stem.left"], start_left, atol=1e-4)

    interrupt_in_epoch_two(source, config, tmp_path / "cut")
    assert len(starts.starts) == 2
    resumed = train(source, config=config, run_dir=tmp_path / "cut", resume=True)
    assert len(starts.starts) == 2  # the checkpoint's stem, not a new fit
    assert [h.val_loss for h in resumed.history] == [h.val_loss for h in full.history]
    a = torch.load(tmp_path / "full" / "last.pt", weights_only=True)["model"]
    b = torch.load(tmp_path / "cut" / "last.pt", weights_only=True)["model"]
    assert torch.equal(a["stem.left"], b["stem.left"])
    assert torch.equal(a["stem.right"], b["stem.right"])
