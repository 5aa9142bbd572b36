"""Model commands: ``train``, ``evaluate``, ``predict`` and ``sweep-rank``."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from medveil.cli.app import (
    AllowOpenKeyOption,
    _print_json,
    _progress,
    _text,
    app,
    console,
)

__all__ = ["evaluate_command", "predict_command", "sweep_rank_command", "train_command"]


def _train_progress(bar: Progress, task: object, name: str) -> Callable[[Any], None]:
    def update(event: Any) -> None:
        if event.kind == "step":
            bar.update(
                task,
                total=event.epochs * event.steps,
                completed=(event.epoch - 1) * event.steps + event.step,
                description=f"{name} epoch {event.epoch}/{event.epochs} "
                f"loss {event.loss:.3f} acc {event.acc:.3f}",
            )
        elif event.stats is not None:
            st = event.stats
            console.print(
                f"epoch {event.epoch}: train loss {st.train_loss:.3f} acc {st.train_acc:.3f} | "
                f"val loss {st.val_loss:.3f} acc {st.val_acc:.3f}"
            )

    return update


_STEM_HELP = (
    "Input stem: linear (learned two-sided map that can absorb the key's projection), fitted "
    "(the same, started from the principal axes of the training arrays) or resize; default "
    "linear on obfuscated data, resize on plaintext."
)
_PATIENCE_HELP = (
    "Early stopping patience: epochs without a better validation accuracy, counted after the "
    "learning-rate peak (0 disables)."
)


@app.command("train")
def train_command(
    data: Annotated[Path, typer.Argument(help="An obfuscated store or a plaintext image folder.")],
    output: Annotated[Path, typer.Option("-o", "--output", help="Run folder to write.")],
    model: Annotated[
        str, typer.Option(help="resnet50, mobilenetv2, inceptionv3 or smallcnn.")
    ] = "smallcnn",
    epochs: Annotated[int, typer.Option(help="Maximum epochs.")] = 10,
    batch_size: Annotated[int, typer.Option(help="Batch size.")] = 32,
    lr: Annotated[float, typer.Option(help="Peak learning rate (AdamW, one-cycle).")] = 1e-3,
    input_size: Annotated[
        Optional[int], typer.Option(help="Model input side (default: the model's).")
    ] = None,
    patience: Annotated[int, typer.Option(help=_PATIENCE_HELP)] = 5,
    val_fraction: Annotated[float, typer.Option(help="Stratified validation fraction.")] = 0.15,
    test_fraction: Annotated[
        float, typer.Option(help="Held-out test fraction when the data has no Testing/ split.")
    ] = 0.2,
    seed: Annotated[int, typer.Option(help="Seed of weights, splits and shuffling.")] = 0,
    device: Annotated[str, typer.Option(help="cpu, cuda or auto.")] = "auto",
    weights: Annotated[
        Optional[Path], typer.Option(help="Local pretrained weights (never downloaded).")
    ] = None,
    workers: Annotated[int, typer.Option(help="DataLoader worker processes.")] = 0,
    stem: Annotated[Optional[str], typer.Option(help=_STEM_HELP)] = None,
    stem_lr_scale: Annotated[
        float, typer.Option(help="The stem's learning rate as a multiple of --lr.")
    ] = 1.0,
    resume: Annotated[bool, typer.Option(help="Continue an interrupted run in OUTPUT.")] = False,
) -> None:
    """Train a classifier on obfuscated (or, for the baseline, plaintext) images.

    Under `torchrun --nproc-per-node N -m medveil train ...` the N processes train together
    (DistributedDataParallel); process 0 writes OUTPUT and reports progress.
    """
    from medveil.training import TrainConfig, train
    from medveil.training.distributed import main_process

    config = TrainConfig(
        model=model,
        epochs=epochs,
        batch_size=batch_size,
        lr=lr,
        input_size=input_size,
        patience=patience or None,
        val_fraction=val_fraction,
        test_fraction=test_fraction,
        seed=seed,
        device=device,
        weights=weights,
        num_workers=workers,
        stem=stem,
        stem_lr_scale=stem_lr_scale,
    )
    if not main_process():
        train(data, config=config, run_dir=output, resume=resume)
        return
    with _progress() as bar:
        task = bar.add_task(model, total=None)
        result = train(
            data,
            config=config,
            run_dir=output,
            resume=resume,
            progress=_train_progress(bar, task, model),
        )
    console.print(_text(result.summary()))


@app.command("evaluate")
def evaluate_command(
    run: Annotated[Path, typer.Argument(help="A run folder from `medveil train`.")],
    data: Annotated[Path, typer.Option("--data", help="Test store or image folder.")],
    output: Annotated[
        Optional[Path],
        typer.Option("-o", "--output", help="Where to save metrics (default RUN/evaluation)."),
    ] = None,
    device: Annotated[str, typer.Option(help="cpu, cuda or auto.")] = "auto",
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the metrics as JSON on stdout.")
    ] = False,
) -> None:
    """Accuracy, macro-F1, per-class precision/recall, ROC-AUC and the confusion matrix."""
    from medveil.training import evaluate

    result = evaluate(run, data, device=device)
    saved = result.save(output or run / "evaluation")
    if as_json:
        _print_json(result.to_dict())
    else:
        Console().print(_text(result.summary()))
    folder = next(iter(saved.values())).parent
    names = ", ".join(path.name for path in saved.values())
    console.print(_text(f"saved metrics in {folder}: {names}"))


@app.command("predict")
def predict_command(
    run: Annotated[Path, typer.Argument(help="A run folder from `medveil train`.")],
    images: Annotated[list[Path], typer.Argument(help="Image files to classify.")],
    key_file: Annotated[
        Optional[Path], typer.Option("--key", help="The key the model was trained under.")
    ] = None,
    device: Annotated[str, typer.Option(help="cpu, cuda or auto.")] = "auto",
    allow_open_key: AllowOpenKeyOption = False,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the predictions as JSON on stdout.")
    ] = False,
) -> None:
    """Obfuscate new images with the site key and classify them (hospital-side inference)."""
    import numpy as np

    from medveil.keys import Key
    from medveil.loading import LoadOptions, load_image
    from medveil.training import load_run, predict

    key = Key.load(key_file, allow_open=allow_open_key) if key_file is not None else None
    size = key.params.size if key is not None else load_run(run).input_size
    arrays = np.stack([load_image(p, options=LoadOptions(size=size)) for p in images])
    result = predict(run, arrays, key, device=device)
    if as_json:
        _print_json([
            {"image": _text(path), "class": result.classes[int(label)],
             "probabilities": dict(zip(result.classes, map(float, probs)))}
            for path, label, probs in zip(images, result.labels, result.probabilities)
        ])
        return
    table = Table(title=_text(f"predictions of {run}"))
    table.add_column("image")
    table.add_column("class")
    table.add_column("probability", justify="right")
    for path, label, probs in zip(images, result.labels, result.probabilities):
        table.add_row(
            _text(path), _text(result.classes[int(label)]), f"{float(probs[int(label)]):.3f}"
        )
    Console().print(table)


@app.command("sweep-rank")
def sweep_rank_command(
    dataset: Annotated[Path, typer.Argument(help="Plaintext dataset folder.")],
    output: Annotated[
        Path, typer.Option("-o", "--output", help="Folder for runs, table and plot.")
    ],
    ranks: Annotated[str, typer.Option(help="Comma-separated ranks k.")] = "1,2,4,8,16,32,64",
    key_file: Annotated[
        Optional[Path],
        typer.Option(
            "--key",
            help="Key whose secret and parameters are used; each rank gets its own matrices "
            "derived from the secret with k in the label (keys from before medveil-derive-v2 "
            "share R_L across ranks and slice R_R).",
        ),
    ] = None,
    preset: Annotated[
        str, typer.Option(help="Preset when no key is given (a fresh key, kept in memory only).")
    ] = "multistage",
    size: Annotated[int, typer.Option(help="Working size n when no key is given.")] = 224,
    model: Annotated[str, typer.Option(help="Model trained for each k.")] = "smallcnn",
    epochs: Annotated[int, typer.Option(help="Epochs per k.")] = 10,
    patience: Annotated[int, typer.Option(help=_PATIENCE_HELP)] = 5,
    input_size: Annotated[Optional[int], typer.Option(help="Model input side.")] = None,
    stem: Annotated[Optional[str], typer.Option(help=_STEM_HELP)] = None,
    seed: Annotated[int, typer.Option(help="Seed.")] = 0,
    device: Annotated[str, typer.Option(help="cpu, cuda or auto.")] = "auto",
    allow_open_key: AllowOpenKeyOption = False,
) -> None:
    """Train one model per rank k and write the accuracy-against-k table and plot.

    Each k uses the key's secret and parameters with only the rank changed; under the current
    derivation (medveil-derive-v2) the rank is bound into the derivation, so every k gets
    projection matrices independent of the other ranks', as separate keys would.
    """
    from medveil.keys import Key, generate_key
    from medveil.training import TrainConfig, sweep_rank

    ks = [int(k) for k in ranks.split(",") if k.strip()]
    key = (
        Key.load(key_file, allow_open=allow_open_key)
        if key_file
        else generate_key(preset=preset, size=size, rank=max(ks))
    )
    config = TrainConfig(
        model=model, epochs=epochs, input_size=input_size, seed=seed, device=device,
        patience=patience or None, stem=stem,
    )
    with _progress() as bar:
        task = bar.add_task("sweep", total=None)
        result = sweep_rank(
            dataset,
            ranks=ks,
            key=key,
            config=config,
            out_dir=output,
            progress=lambda k, ev: _train_progress(bar, task, f"k={k}")(ev),
        )
    Console().print(result.table.to_string(index=False))
