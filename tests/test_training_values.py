"""Training checkpoints by their contents: ``best.pt`` holds the weights of the run's best epoch,
and only those."""

from __future__ import annotations

import json

import numpy as np
import torch

from conftest import smooth_images
from medveil.training import DataSource, TrainConfig, load_run, train


def test_best_checkpoint_holds_the_best_epoch_not_the_last(tmp_path) -> None:
    # Random labels: the model can only memorise, so the validation loss soon rises and early
    # stopping ends the run after its best epoch (which a best.pt saved every epoch would miss).
    images = smooth_images(96, 32, seed=3)
    labels = np.random.default_rng(0).permutation(np.arange(96) % 2)
    source = DataSource.from_arrays(images, labels, classes=("a", "b"))
    config = TrainConfig(
        model="smallcnn", epochs=30, batch_size=16, lr=3e-3, input_size=32, device="cpu",
        patience=2,
    )
    result = train(source, config=config, run_dir=tmp_path / "run")
    assert result.stopped_early and result.best_epoch < result.epochs_run
    best = torch.load(tmp_path / "run" / "best.pt", weights_only=True)
    last = torch.load(tmp_path / "run" / "last.pt", weights_only=True)
    assert best["epoch"] == result.best_epoch and last["epoch"] == result.epochs_run
    assert best["val_loss"] == result.best_val_loss
    assert any(not torch.equal(best["model"][n], last["model"][n]) for n in best["model"])
    # The weights in best.pt give the recorded best validation loss on the validation split.
    split = json.loads((tmp_path / "run" / "splits.json").read_text())["val"]
    val = np.asarray(split["indices"])
    probs = load_run(tmp_path / "run").probabilities(images[val])
    loss = -np.mean(np.log(probs[np.arange(len(val)), labels[val]]))
    assert abs(loss - result.best_val_loss) < 1e-4
    history = {h.epoch: h.val_loss for h in result.history}
    assert history[result.best_epoch] == result.best_val_loss != history[result.epochs_run]
