"""Training, evaluation, prediction and rank sweeps on tiny data (seconds on a CPU)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from conftest import smooth_images
from medveil.calibration import calibrate
from medveil.errors import RunError
from medveil.keys import generate_key
from medveil.loading import LoadOptions, load_image
from medveil.obfuscate import obfuscate_dataset
from medveil.training import (
    DataSource,
    TrainConfig,
    create_model,
    evaluate,
    load_run,
    predict,
    sweep_rank,
    train,
)
from medveil.training.data import (
    Standardisation,
    augment_batch,
    obfuscate_source,
    plan_splits,
    prepare_data,
)
from medveil.training.epochs import EpochStats, LoopState
from medveil.training.models import MODELS, SmallCNN
from medveil.training.optim import warmup_epochs

SIZE = 32
CLASSES = ("plain", "striped")


def striped_images(count: int, *, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Two easy classes: smooth blobs, and blobs overlaid with horizontal stripes."""
    images = smooth_images(count, SIZE, seed=seed)
    labels = np.arange(count) % 2
    stripes = 0.5 + 0.5 * np.sin(np.arange(SIZE) * 2 * np.pi / 6)
    images[labels == 1] = 0.6 * images[labels == 1] + 0.4 * stripes[:, None]
    return images.astype(np.float32), labels.astype(np.int64)


def quick_config(**changes: object) -> TrainConfig:
    settings: dict[str, object] = {
        "model": "smallcnn", "epochs": 5, "batch_size": 16, "lr": 3e-3, "input_size": SIZE,
        "device": "cpu", "patience": None,
    }
    settings.update(changes)
    return TrainConfig(**settings)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def data() -> tuple[np.ndarray, np.ndarray]:
    return striped_images(120, seed=3)


@pytest.fixture(scope="module")
def key(data):
    images, _ = data
    return calibrate(generate_key(size=SIZE, rank=8), images[:64])


@pytest.fixture(scope="module")
def obfuscated(data, key) -> DataSource:
    images, labels = data
    plain = DataSource.from_arrays(images, labels, classes=CLASSES)
    return obfuscate_source(plain, key=key, noise_seed=0)


@pytest.fixture(scope="module")
def obfuscated_run(tmp_path_factory, obfuscated):
    run_dir = tmp_path_factory.mktemp("runs") / "obfuscated"
    result = train(obfuscated, config=quick_config(), run_dir=run_dir)
    return run_dir, result


# --- models ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name, size", [("smallcnn", 32), ("mobilenetv2", 32), ("resnet50", 32), ("inceptionv3", 75)]
)
def test_every_model_runs_forward_and_backward_on_one_channel(name, size):
    torch.manual_seed(0)
    model = create_model(name, num_classes=3, input_size=size)
    x = torch.randn(2, 1, size, size)
    logits = model(x)
    assert logits.shape == (2, 3)
    logits.sum().backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)


def test_model_registry_and_refusals():
    assert MODELS["inceptionv3"].input_size == 299 and MODELS["inceptionv3"].min_input_size == 75
    with pytest.raises(ValueError, match="at least 75 px"):
        create_model("inceptionv3", num_classes=2, input_size=64)
    with pytest.raises(ValueError, match="unknown model 'vgg'"):
        create_model("vgg", num_classes=2)
    with pytest.raises(ValueError, match="at least 2"):
        create_model("smallcnn", num_classes=1)


def test_local_weights_load_strictly(tmp_path):
    torch.manual_seed(1)
    # RGB weights with a 5-class head, as from ImageNet-style training: the first convolution
    # is summed to one channel and the head of another shape is left freshly initialised.
    rgb = SmallCNN(num_classes=5, in_chans=3)
    torch.save(rgb.state_dict(), tmp_path / "rgb.pt")
    model = create_model("smallcnn", num_classes=2, weights=tmp_path / "rgb.pt")
    conv = model.state_dict()["features.0.0.weight"]
    assert torch.allclose(conv, rgb.state_dict()["features.0.0.weight"].sum(1, keepdim=True))
    assert torch.equal(
        model.state_dict()["features.3.0.weight"], rgb.state_dict()["features.3.0.weight"]
    )
    # A checkpoint wrapper ({"model": state_dict}) is accepted, as medveil's own best.pt.
    torch.save({"model": model.state_dict(), "epoch": 3}, tmp_path / "best.pt")
    again = create_model("smallcnn", num_classes=2, weights=tmp_path / "best.pt")
    loaded, original = again.state_dict(), model.state_dict()
    assert all(torch.equal(loaded[name], original[name]) for name in original)
    with pytest.raises(ValueError, match="do not fit mobilenetv2.*missing"):
        create_model("mobilenetv2", num_classes=2, weights=tmp_path / "rgb.pt")
    with pytest.raises(ValueError, match="no such weights file"):
        create_model("smallcnn", num_classes=2, weights=tmp_path / "absent.pt")


# --- data --------------------------------------------------------------------------------------


def test_splits_are_stratified_seeded_and_disjoint(data):
    images, labels = data
    source = DataSource.from_arrays(images, labels, classes=CLASSES)
    plan = plan_splits(source, val_fraction=0.2, test_fraction=0.25, seed=4)
    assert plan == plan_splits(source, val_fraction=0.2, test_fraction=0.25, seed=4)
    assert plan != plan_splits(source, val_fraction=0.2, test_fraction=0.25, seed=5)
    parts = {role: idx for role, (_, idx) in plan.parts.items()}
    assert sorted(np.concatenate(list(parts.values())).tolist()) == list(range(len(labels)))
    assert plan.sizes() == {"train": 72, "val": 18, "test": 30}
    for idx in parts.values():
        counts = np.bincount(labels[idx], minlength=2)
        assert abs(counts[0] - counts[1]) <= 1


def test_prepared_data_is_what_the_trainer_reads(data, tmp_path):
    images, labels = data
    source = DataSource.from_arrays(images, labels, classes=CLASSES)
    splits = {"val_fraction": 0.2, "test_fraction": 0.25, "seed": 4}
    prepared = prepare_data(source, image_size=SIZE, **splits)
    plan = plan_splits(source, **splits)
    assert prepared.plan == plan and prepared.in_shape == (SIZE, SIZE)
    table, train_indices = plan.parts["train"]
    fitted = Standardisation.fit(source.tables[table], train_indices, seed=4)
    assert prepared.standardisation == fitted
    assert {role: len(s) for role, s in prepared.sets.items()} == plan.sizes()
    x, y = prepared.sets["val"][0]
    first = plan.parts["val"][1][0]
    expected = (images[first] - fitted.mean) / fitted.std
    assert torch.allclose(x[0], torch.from_numpy(expected)) and y == labels[first]
    # A saved plan is used as it is, and only on the data it was made on.
    saved = plan_splits(source, **{**splits, "seed": 5})
    assert prepare_data(source, image_size=SIZE, **splits, plan=saved,
                        identity=source.identity).plan == saved
    fewer = DataSource.from_arrays(images[:-2], labels[:-2], classes=CLASSES)
    with pytest.raises(RunError, match="^cannot resume on different data"):
        prepare_data(fewer, image_size=SIZE, **splits, plan=saved, identity=source.identity)
    # train() records the prepared standardisation and refuses to resume on other data.
    config = quick_config(epochs=1, val_fraction=0.2, test_fraction=0.25, seed=4)
    train(source, config=config, run_dir=tmp_path / "run")
    info = json.loads((tmp_path / "run" / "run.json").read_text())
    assert info["standardisation"] == {"mean": fitted.mean, "std": fitted.std}
    with pytest.raises(RunError, match=f"^{tmp_path / 'run'}: cannot resume on different data"):
        train(fewer, config=config, run_dir=tmp_path / "run", resume=True)


def test_augmentation_is_seeded_and_keeps_shape():
    x = torch.arange(2 * 16 * 16, dtype=torch.float32).reshape(2, 1, 16, 16)
    assert augment_batch(x, "none", generator=torch.Generator()) is x
    a = augment_batch(x, "flip-shift", generator=torch.Generator().manual_seed(1))
    b = augment_batch(x, "flip-shift", generator=torch.Generator().manual_seed(1))
    assert a.shape == x.shape and torch.equal(a, b)
    with pytest.raises(ValueError, match="augmentation must be"):
        augment_batch(x, "rotate", generator=torch.Generator())


# --- training on plaintext folders and obfuscated stores ---------------------------------------


def write_folder(root, images, labels, *, split_at: int):
    for i, (image, label) in enumerate(zip(images, labels)):
        split = "Training" if i < split_at else "Testing"
        folder = root / split / CLASSES[label]
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray((image * 255).round().astype(np.uint8)).save(folder / f"scan-{i:03d}.png")
    return root


def test_plaintext_folder_and_obfuscated_store_train_well_above_chance(tmp_path, data, key):
    images, labels = data
    folder = write_folder(tmp_path / "dataset", images, labels, split_at=90)
    plain = train(folder, config=quick_config(), run_dir=tmp_path / "plain")
    plain_eval = evaluate(tmp_path / "plain", folder, device="cpu")
    assert plain.split_sizes["test"] == 30 and plain_eval.count == 30
    assert plain_eval.accuracy >= 0.8, plain_eval.summary()
    # Prediction on the same files, loaded as a user would, agrees with the evaluation.
    files = sorted((folder / "Testing").rglob("*.png"))
    test_images = np.stack([load_image(f, options=LoadOptions(size=SIZE)) for f in files])
    test_labels = np.array([CLASSES.index(f.parent.name) for f in files])
    plain_predictions = predict(tmp_path / "plain", test_images, None, device="cpu")
    assert np.isclose(np.mean(plain_predictions.labels == test_labels), plain_eval.accuracy)
    with pytest.raises(ValueError, match="trained on plaintext images; predict without a key"):
        predict(tmp_path / "plain", test_images, key, device="cpu")

    obfuscate_dataset(folder, key=key, output=tmp_path / "store", device="cpu", noise_seed=0)
    obf = train(tmp_path / "store", config=quick_config(), run_dir=tmp_path / "obf")
    obf_eval = evaluate(tmp_path / "obf", tmp_path / "store", device="cpu")
    assert obf.split_sizes == {"train": 76, "val": 14, "test": 30}
    assert obf_eval.accuracy >= 0.75, obf_eval.summary()
    # Plaintext test data cannot score an obfuscated model, nor can arrays of another key.
    with pytest.raises(ValueError, match="trained on obfuscated data"):
        evaluate(tmp_path / "obf", folder, device="cpu")


def test_run_folder_records_provenance_but_no_key_material(obfuscated_run, key):
    run_dir, result = obfuscated_run
    names = {p.name for p in run_dir.iterdir()}
    assert {"config.json", "run.json", "splits.json", "history.csv", "best.pt", "last.pt"} <= names
    info = json.loads((run_dir / "run.json").read_text())
    assert info["status"] == "complete" and info["classes"] == list(CLASSES)
    assert info["data"]["key_fingerprint"] == key.fingerprint
    assert info["data"]["preset"] == "multistage" and info["data"]["params"]["rank"] == 8
    assert info["standardisation"]["std"] > 0 and info["best_epoch"] == result.best_epoch
    config = json.loads((run_dir / "config.json").read_text())
    assert config["augment"] == "none" and config["input_size"] == SIZE
    history = pd.read_csv(run_dir / "history.csv")
    assert list(history["epoch"]) == [1, 2, 3, 4, 5]
    for path in run_dir.iterdir():
        assert key.secret.hex().encode() not in path.read_bytes()
        assert key.secret not in path.read_bytes()


def test_evaluation_reports_and_files(obfuscated_run, obfuscated, tmp_path):
    run_dir, _ = obfuscated_run
    result = evaluate(run_dir, obfuscated, device="cpu")
    assert result.accuracy >= 0.75 and result.count == 24
    assert result.confusion.sum() == 24 and result.confusion.shape == (2, 2)
    assert np.isclose(result.accuracy, np.trace(result.confusion) / 24)
    assert 0 <= result.macro_auc <= 1 and result.to_frame().shape == (2, 5)
    assert "accuracy" in result.summary()
    paths = result.save(tmp_path / "eval")
    saved = json.loads(paths["json"].read_text())
    assert saved["confusion_matrix"] == result.confusion.tolist()
    assert set(saved["per_class"]) == set(CLASSES)
    assert paths["confusion_png"].read_bytes()[:4] == b"\x89PNG"
    assert pd.read_csv(paths["confusion_csv"], index_col=0).shape == (2, 2)


def test_predict_obfuscates_with_the_key_and_refuses_another(obfuscated_run, data, key):
    run_dir, _ = obfuscated_run
    images, labels = data
    run = load_run(run_dir)
    held_out = json.loads((run_dir / "splits.json").read_text())["test"]["indices"]
    predictions = predict(run_dir, images[held_out], key, device="cpu", noise_seed=0)
    assert predictions.probabilities.shape == (len(held_out), 2)
    assert np.mean(predictions.labels == labels[held_out]) >= 0.75
    assert set(predictions.names) <= set(run.classes)
    other = calibrate(generate_key(size=SIZE, rank=8), images[:64])
    with pytest.raises(ValueError, match=f"trained under key fingerprint {key.fingerprint}; "
                                         f"the key given has {other.fingerprint}"):
        predict(run_dir, images[:4], other, device="cpu")
    with pytest.raises(ValueError, match="pass that key"):
        predict(run_dir, images[:4], None, device="cpu")
    foreign = obfuscate_source(
        DataSource.from_arrays(images[:8], labels[:8], classes=CLASSES), key=other
    )
    with pytest.raises(ValueError, match=f"trained under key fingerprint {key.fingerprint}"):
        evaluate(run_dir, foreign, device="cpu")


# --- checkpoints and resumption ----------------------------------------------------------------


class Interrupt(Exception):
    pass


def test_resume_after_interruption_gives_the_same_weights(tmp_path, obfuscated):
    config = quick_config(epochs=4, augment="flip-shift")
    full = train(obfuscated, config=config, run_dir=tmp_path / "full")

    def stop_in_epoch_3(event):
        if event.epoch == 3 and event.step == 2:
            raise Interrupt

    with pytest.raises(Interrupt):
        train(obfuscated, config=config, run_dir=tmp_path / "cut", progress=stop_in_epoch_3)
    assert torch.load(tmp_path / "cut" / "last.pt", weights_only=True)["epoch"] == 2
    with pytest.raises(ValueError, match="not empty"):
        train(obfuscated, config=config, run_dir=tmp_path / "cut")
    with pytest.raises(ValueError, match="different settings.*lr"):
        train(obfuscated, config=quick_config(epochs=4, augment="flip-shift", lr=1e-2),
              run_dir=tmp_path / "cut", resume=True)
    resumed = train(obfuscated, config=config, run_dir=tmp_path / "cut", resume=True)
    assert [h.val_loss for h in resumed.history] == [h.val_loss for h in full.history]
    a = torch.load(tmp_path / "full" / "last.pt", weights_only=True)["model"]
    b = torch.load(tmp_path / "cut" / "last.pt", weights_only=True)["model"]
    assert all(torch.equal(a[name], b[name]) for name in a)


def test_early_stopping_stops_when_validation_loss_rises(tmp_path, data):
    # Random labels: the model can only memorise, so the validation loss soon rises.
    images, labels = data
    shuffled = np.random.default_rng(0).permutation(labels)
    source = DataSource.from_arrays(images, shuffled, classes=CLASSES)
    config = quick_config(epochs=30, patience=2)
    result = train(source, config=config, run_dir=tmp_path / "r")
    assert result.stopped_early and result.epochs_run < 30
    warmup = warmup_epochs(config)
    assert warmup == 9
    # Patience is counted only after the warm-up, from the selected (best-accuracy) epoch.
    assert result.epochs_run == max(result.best_epoch, warmup) + 2
    best = max(h.val_acc for h in result.history)
    assert result.history[result.best_epoch - 1].val_acc == best
    assert load_run(tmp_path / "r").info["best_epoch"] == result.best_epoch


def _stats(epoch: int, val_loss: float, val_acc: float) -> EpochStats:
    return EpochStats(
        epoch=epoch, train_loss=1.0, train_acc=0.5, val_loss=val_loss, val_acc=val_acc, lr=1e-3,
        seconds=1.0,
    )


@pytest.mark.parametrize(
    ("selection", "best", "stops_after"),
    [("val_acc", 7, None), ("val_loss", 1, 6)],
)
def test_the_selection_rule_on_a_scripted_curve(selection, best, stops_after):
    # The curve of issue 12: the loss is erratic while the learning rate is high and the accuracy
    # climbs. By loss (the old rule) epoch 1 is kept and the run stops at epoch 6; by accuracy,
    # with patience counted after a 3-epoch warm-up, the last epochs win.
    losses = [0.97, 6.3, 2.4, 1.6, 3.3, 1.7, 1.1, 1.0]
    accs = [0.50, 0.46, 0.28, 0.33, 0.57, 0.44, 0.86, 0.85]
    state = LoopState()
    for epoch, (loss, acc) in enumerate(zip(losses, accs), start=1):
        counts = selection == "val_loss" or epoch > 3
        state.record(_stats(epoch, loss, acc), patience=5, selection=selection, counts=counts)
        if state.stopped:
            break
    assert state.best_epoch == best
    assert (len(state.history) if state.stopped else None) == stops_after


def test_warmup_epochs_follow_the_schedule():
    assert warmup_epochs(TrainConfig(epochs=8)) == 3
    assert warmup_epochs(TrainConfig(epochs=10)) == 3
    assert warmup_epochs(TrainConfig(epochs=8, schedule="cosine")) == 0


# --- rank sweep --------------------------------------------------------------------------------


def test_rank_sweep_writes_table_and_plot(tmp_path, data, key):
    images, labels = data
    source = DataSource.from_arrays(images, labels, classes=CLASSES)
    result = sweep_rank(
        source, ranks=[8, 2], key=key, config=quick_config(epochs=2), out_dir=tmp_path,
        noise_seed=0,
    )
    assert list(result.table["rank"]) == [2, 8]
    assert result.table["key_fingerprint"].nunique() == 2
    assert key.fingerprint not in set(result.table["key_fingerprint"])
    assert pd.read_csv(result.csv).shape == (2, 8)
    assert result.plot.read_bytes()[:4] == b"\x89PNG"
    assert (tmp_path / "rank-002" / "evaluation" / "metrics.json").is_file()
