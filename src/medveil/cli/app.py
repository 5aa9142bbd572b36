"""Command-line interface: a thin layer over the Python API.

Exit codes: 0 success; 1 failure (a write failed, another run is writing the same output, an
unexpected error); 2 usage error or bad input (a bad option, data file, key or store). Messages
are for people: paths as plain text, names that are not valid UTF-8 with ``\\xNN`` escapes,
no Python reprs; commands whose output is data take ``--json``.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Optional

import click
import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table
from typer.core import TyperCommand, TyperGroup, TyperOption

from medveil.errors import MedveilError

__all__ = ["EXIT_BAD_INPUT", "EXIT_FAILURE", "EXIT_OK", "app"]

EXIT_OK, EXIT_FAILURE, EXIT_BAD_INPUT = 0, 1, 2
_EXIT_CODES = (
    "Exit codes: 0 success; 1 failure (a write failed, e.g. a full disk; another run is writing "
    "the same output; an unexpected error); 2 usage error or bad input (a bad option, data "
    "file, key or store)."
)


class _Commands(TyperGroup):
    """Runs every command (of ``app`` and its sub-groups) inside one error handler.

    A medveil error, a bad value or an unusable file ends the command with ``error: MESSAGE``
    on stderr and the exit code its kind calls for (:func:`_exit_code`); anything else is a
    bug and keeps its traceback.
    """

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (MedveilError, ValueError, OSError) as exc:
            raise _failed(exc) from None


app = typer.Typer(
    cls=_Commands,
    help="Keyed multistage SVD obfuscation of medical images.",
    epilog=_EXIT_CODES,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
datasets_app = typer.Typer(help="Embedded synthetic datasets.", no_args_is_help=True)
app.add_typer(datasets_app, name="datasets")
# Messages are not re-wrapped: a path broken over two lines cannot be copied or searched for.
console = Console(stderr=True, soft_wrap=True)


def _progress() -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=False,
    )


def _show_version(value: bool) -> None:
    if value:
        from medveil import __version__

        typer.echo(f"medveil {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_show_version, is_eager=True, help="Print the version and exit."
        ),
    ] = False,
) -> None:
    """Keyed multistage SVD obfuscation of medical images."""


def _text(message: object) -> str:
    """``message`` as printable text: no rich markup, surrogate escapes as ``\\xNN``."""
    text = str(message).encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    return escape(text)


def _exit_code(exc: BaseException) -> int:
    """1 for a failure of the run itself (writing, a busy output, a file system refusal, a PACS
    that keeps failing), 2 for bad input (every other medveil error, a bad value, a missing or
    existing file)."""
    from medveil.dicomweb import DicomWebUnavailableError
    from medveil.store import StoreBusyError, StoreWriteError

    if isinstance(exc, (StoreBusyError, StoreWriteError, DicomWebUnavailableError)):
        return EXIT_FAILURE
    if isinstance(exc, OSError) and not isinstance(exc, (FileNotFoundError, FileExistsError)):
        return EXIT_FAILURE
    return EXIT_BAD_INPUT


def _fail(message: object, *, code: int = EXIT_BAD_INPUT) -> typer.Exit:
    console.print(f"[red]error:[/red] {_text(message)}")
    return typer.Exit(code=code)


def _failed(exc: BaseException) -> typer.Exit:
    """The error message of ``exc`` and the exit code its kind calls for."""
    if isinstance(exc, OSError) and exc.filename is not None and exc.strerror:
        message = f"{exc.filename}: {exc.strerror}"
    else:
        message = str(exc)
    return _fail(message, code=_exit_code(exc))


def _print_json(data: object) -> None:
    """Machine-readable output on stdout (messages for people go to stderr)."""
    typer.echo(json.dumps(data, indent=2, sort_keys=True))


_ALLOW_OPEN_KEY_HELP = (
    "Accept a key file that group or others can read (only for a key on read-only media; "
    "otherwise run chmod 600 on it)."
)


def _percentile(value: Optional[str]) -> Optional[tuple[float, float]]:
    if value is None:
        return None
    try:
        lo, hi = (float(v) for v in value.split(","))
    except ValueError:
        raise typer.BadParameter("expected two numbers 'LOW,HIGH', e.g. 0.5,99.5") from None
    return (lo, hi)


_NIFTI_VOLUME_HELP = (
    "Volume of a 4-D NIfTI (fMRI, time series) to slice, or 'all' (default: refuse 4-D files)."
)
_FILL_NONFINITE_HELP = (
    "Replace NaN and infinite values by VALUE, counting the images touched (default: refuse "
    "such files)."
)


def _nifti_volume(value: Optional[str]) -> int | str | None:
    if value is None:
        return None
    text = value.strip().lower()
    if text == "all":
        return "all"
    if text.isdigit():
        return int(text)
    raise typer.BadParameter(
        f"expected a volume index (0, 1, ...) or 'all', got {value}", param_hint="--nifti-volume"
    )


@app.command()
def keygen(
    output: Annotated[Path, typer.Option("-o", "--output", help="Key file to write (mode 0600).")],
    preset: Annotated[
        str, typer.Option(help="'multistage', 'svd', or a named setting: 'dp-svd'.")
    ] = "multistage",
    size: Annotated[int, typer.Option(help="Working size n (images are n x n).")] = 224,
    rank: Annotated[int, typer.Option(help="Rank k kept by the SVD truncation.")] = 32,
    bits: Annotated[
        Optional[int], typer.Option(help="Quantization bits b (multistage; 0 = off).")
    ] = None,
    noise: Annotated[Optional[float], typer.Option(help="Noise level eta (multistage).")] = None,
    left: Annotated[Optional[str], typer.Option(help="'orthogonal', 'block' or 'none'.")] = None,
    block_size: Annotated[
        Optional[int], typer.Option(help="Rows per block of a block left projection.")
    ] = None,
    right: Annotated[Optional[str], typer.Option(help="'gaussian' or 'none'.")] = None,
    width: Annotated[Optional[int], typer.Option(help="Columns m of R_R (default n).")] = None,
    dp_epsilon: Annotated[
        Optional[float],
        typer.Option(help="DP-SVD: Laplace noise of scale sqrt(k)/EPSILON on the singular values."),
    ] = None,
    calibrate: Annotated[
        Optional[str],
        typer.Option(
            metavar="SOURCE",
            help="Dataset folder to calibrate the key on (class sub-folders, or any folder with "
            "--labels), or a PACS's DICOMweb URL with --labels, as for obfuscate.",
        ),
    ] = None,
    calibration_images: Annotated[int, typer.Option(help="Images used to calibrate.")] = 512,
    labels: Annotated[
        Optional[Path],
        typer.Option(
            "--labels",
            help="Labels CSV naming the calibration files (path,label,...) or, for a DICOMweb "
            "SOURCE, studies (StudyInstanceUID,label,...), as for obfuscate.",
        ),
    ] = None,
    nifti_volume: Annotated[
        Optional[str], typer.Option(metavar="INDEX|all", help=_NIFTI_VOLUME_HELP)
    ] = None,
    fill_nonfinite: Annotated[
        Optional[float], typer.Option(metavar="VALUE", help=_FILL_NONFINITE_HELP)
    ] = None,
    force: Annotated[bool, typer.Option(help="Replace an existing key file.")] = False,
) -> None:
    """Draw a new secret key (256 bits) and store it with its parameters, owner-only."""
    from medveil import calibration
    from medveil.dicomweb import is_dicomweb_url
    from medveil.keys import generate_key
    from medveil.loading import LoadOptions

    given = dict(
        noise=noise, left=left, right=right, width=width, block_size=block_size,
        dp_epsilon=dp_epsilon,
    )
    overrides = {name: value for name, value in given.items() if value is not None}
    if bits is not None:
        overrides["bits"] = bits or None  # --bits 0: no quantization
    key = generate_key(preset=preset, size=size, rank=rank, **overrides)
    if key.params.needs_calibration and calibrate is None:
        raise _fail("the multistage preset needs --calibrate DATASET_DIR")
    loader = {"--labels": labels, "--nifti-volume": nifti_volume,
              "--fill-nonfinite": fill_nonfinite}
    unused = [name for name, value in loader.items() if value is not None]
    if unused and calibrate is None:
        raise _fail(f"{', '.join(unused)}: used only with --calibrate SOURCE")
    if calibrate is not None:
        options = LoadOptions(
            size=size, nifti_volume=_nifti_volume(nifti_volume),
            fill_nonfinite=fill_nonfinite,
        )
        with console.status(f"loading up to {calibration_images} calibration images"):
            images = calibration.load_calibration_images(
                calibrate if is_dicomweb_url(calibrate) else Path(calibrate),
                count=calibration_images, options=options, labels=labels,
            )
        with console.status(f"calibrating on {len(images)} images"):
            key = calibration.calibrate(key, images)
    path = key.save(output, overwrite=force)
    console.print(f"wrote key [bold]{_text(path)}[/bold] (fingerprint {key.fingerprint}, mode 0600)")


@app.command()
def obfuscate(
    dataset: Annotated[
        str,
        typer.Argument(
            metavar="SOURCE",
            help="Dataset folder (class sub-folders, or any folder with --labels), or a "
            "DICOMweb URL http(s)://HOST:PORT/PATH of a PACS (with --labels; credentials from "
            "MEDVEIL_DICOMWEB_USER and MEDVEIL_DICOMWEB_PASSWORD, MEDVEIL_DICOMWEB_TOKEN or a "
            "netrc file, never in the URL).",
        ),
    ],
    key_file: Annotated[Path, typer.Option("--key", help="Key file from `medveil keygen`.")],
    output: Annotated[Path, typer.Option("-o", "--output", help="Store folder to write.")],
    labels: Annotated[
        Optional[Path],
        typer.Option(
            "--labels",
            help="CSV with the columns path,label[,split][,group] (paths relative to SOURCE): "
            "labels for a flat folder instead of class sub-folders; for a DICOMweb SOURCE the "
            "columns StudyInstanceUID,label[,split][,group]. Rows of one group (a patient) are "
            "never split apart.",
        ),
    ] = None,
    batch_size: Annotated[int, typer.Option(help="Images per transform batch.")] = 256,
    workers: Annotated[
        int,
        typer.Option(
            help="Worker threads, each decoding and obfuscating its own files (local engine); "
            "actors in the pool (ray engine)."
        ),
    ] = 2,
    files_per_shard: Annotated[int, typer.Option(help="Files per shard.")] = 512,
    device: Annotated[str, typer.Option(help="'cpu', 'cuda' or 'auto'.")] = "auto",
    engine: Annotated[
        str,
        typer.Option(
            help="'local' (this machine) or 'ray' (Ray Data on a Ray cluster; needs "
            "pip install 'medveil[ray]', and the key file and DATASET at the same paths on "
            "every node)."
        ),
    ] = "local",
    address: Annotated[
        Optional[str],
        typer.Option(
            metavar="auto|HOST:PORT",
            help="Ray cluster to join with --engine ray (default: start a local Ray).",
        ),
    ] = None,
    skip_bad: Annotated[
        bool, typer.Option(help="Skip bad files and list them in a report.")
    ] = False,
    keep_names: Annotated[bool, typer.Option(help="Store source file names.")] = False,
    percentile: Annotated[
        Optional[str], typer.Option(help="Per-image percentile clipping 'LOW,HIGH'.")
    ] = None,
    nifti_axis: Annotated[int, typer.Option(help="Axis along which NIfTI volumes are sliced.")] = 2,
    nifti_volume: Annotated[
        Optional[str], typer.Option(metavar="INDEX|all", help=_NIFTI_VOLUME_HELP)
    ] = None,
    fill_nonfinite: Annotated[
        Optional[float], typer.Option(metavar="VALUE", help=_FILL_NONFINITE_HELP)
    ] = None,
    min_size: Annotated[
        Optional[int],
        typer.Option(
            help="Refuse images smaller than this many pixels on a side (default: upscale them "
            "to the working size, and count them)."
        ),
    ] = None,
    max_image_mb: Annotated[
        int,
        typer.Option(
            help="Refuse a file whose header claims more pixel data than this many MiB (all "
            "frames or slices), before decoding it."
        ),
    ] = 1024,
    overwrite: Annotated[bool, typer.Option(help="Replace a complete store.")] = False,
    allow_open_key: Annotated[bool, typer.Option(help=_ALLOW_OPEN_KEY_HELP)] = False,
) -> None:
    """Obfuscate a dataset folder, or studies retrieved from a PACS over DICOMweb, into an
    obfuscated dataset store.

    Every run draws fresh noise. Do not give one recipient two obfuscations of the same image:
    averaging N copies divides the noise by the square root of N.
    """
    from medveil.dicomweb import is_dicomweb_url
    from medveil.keys import Key, ensure_not_in_output
    from medveil.loading import LoadOptions
    from medveil.obfuscate import obfuscate_dataset

    if engine not in ("local", "ray"):
        raise typer.BadParameter(f"--engine must be 'local' or 'ray', not '{engine}'")
    if address is not None and engine != "ray":
        raise typer.BadParameter("--address joins a Ray cluster: it needs --engine ray")
    if engine == "ray" and is_dicomweb_url(dataset):
        raise typer.BadParameter("--engine ray reads files: a DICOMweb source runs on --engine local")
    ensure_not_in_output(key_file, output)
    key = Key.load(key_file, allow_open=allow_open_key)
    runner = None
    if engine == "ray":
        from medveil.obfuscate_ray import RayEngine, require_ray

        require_ray()
        runner = RayEngine(
            key_file, address=address, workers=workers, batch_size=batch_size,
            allow_open_key=allow_open_key,
        )
    options = LoadOptions(
        size=key.params.size, percentile=_percentile(percentile), nifti_axis=nifti_axis,
        min_size=min_size, max_bytes=max_image_mb * 2**20,
        nifti_volume=_nifti_volume(nifti_volume), fill_nonfinite=fill_nonfinite,
    )
    with _progress() as bar:
        task = bar.add_task("obfuscating", total=None)
        result = obfuscate_dataset(
            dataset if is_dicomweb_url(dataset) else Path(dataset),
            key=key,
            output=output,
            options=options,
            files_per_shard=files_per_shard,
            batch_size=batch_size,
            workers=workers,
            device=device,
            skip_bad=skip_bad,
            keep_names=keep_names,
            overwrite=overwrite,
            progress=lambda n: bar.advance(task, n),
            on_start=lambda total: bar.update(task, total=total),
            labels=labels,
            engine=runner,
        )
    console.print(_text(result.summary()))


@app.command()
def show(
    image: Annotated[Path, typer.Argument(help="An image file (any supported format).")],
    key_file: Annotated[Path, typer.Option("--key", help="Key file.")],
    output: Annotated[Path, typer.Option("-o", "--output", help="PNG to write.")],
    nifti_axis: Annotated[int, typer.Option(help="NIfTI slicing axis.")] = 2,
    nifti_volume: Annotated[
        Optional[str], typer.Option(metavar="INDEX|all", help=_NIFTI_VOLUME_HELP)
    ] = None,
    fill_nonfinite: Annotated[
        Optional[float], typer.Option(metavar="VALUE", help=_FILL_NONFINITE_HELP)
    ] = None,
    allow_open_key: Annotated[bool, typer.Option(help=_ALLOW_OPEN_KEY_HELP)] = False,
) -> None:
    """Plot one image through every stage (original, rank-k, quantized, noised, projected).

    The noise is always fresh: a figure that shows an image beside its obfuscation must not let
    anyone reproduce the noise.
    """
    from medveil.figures import save_figure, stage_figure
    from medveil.keys import Key
    from medveil.loading import LoadOptions, load_slices
    from medveil.obfuscator import Obfuscator

    key = Key.load(key_file, allow_open=allow_open_key)
    options = LoadOptions(
        size=key.params.size, nifti_axis=nifti_axis,
        nifti_volume=_nifti_volume(nifti_volume), fill_nonfinite=fill_nonfinite,
    )
    slices = load_slices(image, options=options)
    picked = slices[len(slices) // 2]
    fig = stage_figure(Obfuscator(key), picked, title=image.name)
    path = save_figure(fig, output)
    console.print(f"wrote {_text(path)}")


@app.command()
def info(
    store: Annotated[Path, typer.Argument(help="An obfuscated dataset store.")],
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the summary as JSON on stdout.")
    ] = False,
) -> None:
    """Summarise an obfuscated dataset store (its shards are checked against the manifest)."""
    from medveil.store import ObfuscatedStore

    opened = ObfuscatedStore(store)
    m = opened.manifest
    splits = {
        split: {
            "count": m["splits"][split]["count"],
            "per_class": m["splits"][split]["per_class"],
            "skipped": m["splits"][split].get("skipped", 0),
            "upscaled": m["splits"][split].get("upscaled", 0),
            "filled": m["splits"][split].get("filled", 0),
            "groups": m["splits"][split].get("groups"),
        }
        for split in opened.splits
    }
    if as_json:
        _print_json({
            "store": str(store), "format_version": m["format_version"], "preset": m["preset"],
            "key_fingerprint": m["key_fingerprint"], "shape": m["shape"],
            "classes": m["classes"], "params": m["params"], "splits": splits,
        })
        return
    shape = "x".join(str(d) for d in m["shape"])
    table = Table(title=_text(f"{store}: {m['preset']} store, key {m['key_fingerprint']}, "
                              f"images {shape}"))
    table.add_column("split")
    for name in m["classes"]:
        table.add_column(_text(name), justify="right")
    table.add_column("total", justify="right")
    table.add_column("skipped", justify="right")
    table.add_column("upscaled", justify="right")
    for split, data in splits.items():
        table.add_row(
            split, *(str(data["per_class"][c]) for c in m["classes"]), str(data["count"]),
            str(data["skipped"]), str(data["upscaled"]),
        )
    Console().print(table)
    # Below the table rather than in it: a wide table would truncate the class names.
    if all(data["groups"] is not None for data in splits.values()):
        counts = ", ".join(f"{split} {data['groups']}" for split, data in splits.items())
        Console().print(f"groups (patients or files, never split apart by train): {counts}")
    filled = sum(data["filled"] for data in splits.values())
    if filled:
        Console().print(f"images with NaN or infinite values filled (--fill-nonfinite): {filled}")
    params = Table(title="key parameters")
    params.add_column("parameter")
    params.add_column("value")
    for name, value in m["params"].items():
        params.add_row(name, _text("none" if value is None else value))
    Console().print(params)


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
    "Input stem: linear (learned two-sided map that can absorb the key's projection) or resize; "
    "default linear on obfuscated data, resize on plaintext."
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
    allow_open_key: Annotated[bool, typer.Option(help=_ALLOW_OPEN_KEY_HELP)] = False,
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
    allow_open_key: Annotated[bool, typer.Option(help=_ALLOW_OPEN_KEY_HELP)] = False,
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


class _AttackCommand(TyperCommand):
    """The ``attack`` command, whose help lists the attack registry as it stands.

    The list is read when help is shown, not when this module is imported: importing the
    attacks (torch) for every command would slow them all, and an attack registered later
    (a plug-in, a test) appears too.
    """

    def format_help(self, ctx: Any, formatter: Any) -> None:
        from medveil.attacks import ThreatModel, attack_specs
        from medveil.attacks.registry import needs_text

        specs = attack_specs()
        for param in self.params:
            if param.name == "attacks" and isinstance(param, TyperOption):
                param.help = (
                    "Comma-separated attack names, or 'all': "
                    + ", ".join(spec.name for spec in specs)
                    + "."
                )
            elif param.name == "threat" and isinstance(param, TyperOption):
                param.help = "Comma-separated threat models among " + ",".join(ThreatModel) + "."
        listing = "\n".join(
            f"{spec.name}: {spec.label} ({', '.join(sorted(spec.threats))}; needs "
            f"{needs_text(spec)})"
            for spec in specs
        )
        summary = (self.help or "").split("\n\n")[0]  # the docstring's first paragraph
        self.help = (
            f"{summary}\n\nAttacks (threat models; what the attacker needs):\n\n"
            f"\b\n{escape(listing)}"
        )
        super().format_help(ctx, formatter)


@app.command("attack", cls=_AttackCommand)
def attack_command(
    dataset: Annotated[
        Path, typer.Argument(help="The custodian's dataset folder (victims, pairs).")
    ],
    key_file: Annotated[Path, typer.Option("--key", help="The key under evaluation.")],
    output: Annotated[Path, typer.Option("-o", "--output", help="Folder for results and figure.")],
    public: Annotated[
        Optional[Path],
        typer.Option(help="Public dataset of the same modality (default: the rest of DATASET)."),
    ] = None,
    attacks: Annotated[str, typer.Option(help="Comma-separated attack names, or 'all'.")] = "all",
    threat: Annotated[
        str, typer.Option(help="Comma-separated threat models among A1,A2,A3.")
    ] = "A1,A2,A3",
    pairs: Annotated[
        str, typer.Option(help="Known-pair counts for A2, comma-separated.")
    ] = "100,1000",
    victims: Annotated[int, typer.Option(help="Victim images (not public, not pairs).")] = 200,
    public_images: Annotated[int, typer.Option(help="Public images.")] = 1000,
    decoder_steps: Annotated[int, typer.Option(help="Learned-decoder step budget.")] = 2000,
    decoder_seconds: Annotated[
        float, typer.Option(help="Learned-decoder time budget (s).")
    ] = 600.0,
    seed: Annotated[int, typer.Option(help="Seed of the image draw and the attacks.")] = 0,
    device: Annotated[str, typer.Option(help="cpu, cuda or auto.")] = "auto",
    allow_open_key: Annotated[bool, typer.Option(help=_ALLOW_OPEN_KEY_HELP)] = False,
) -> None:
    """Run the reconstruction and re-identification attacks against a key on your data."""
    from medveil.keys import Key
    from medveil.privacy import PrivacyConfig, run_privacy

    config = PrivacyConfig(
        victims=victims,
        public=public_images,
        pairs=tuple(int(p) for p in pairs.split(",") if p.strip()),
        threats=tuple(t.strip() for t in threat.split(",") if t.strip()),
        attacks=tuple(a.strip() for a in attacks.split(",") if a.strip()),
        decoder_steps=decoder_steps,
        decoder_seconds=decoder_seconds,
        seed=seed,
        device=device,
    )
    key = Key.load(key_file, allow_open=allow_open_key)
    with console.status("attacking") as status:
        report = run_privacy(
            dataset,
            key=key,
            config=config,
            output=output,
            public_dataset=public,
            progress=lambda message: status.update(message),
        )
    title = f"attacks on key {key.fingerprint} ({key.params.preset})"
    Console().print(report.summary().to_rich(title=title))
    console.print(f"results (JSON, CSV, examples.png) in {_text(output)}")


def _default_keys_dir(run: Path) -> Path:
    """``~/.medveil/keys/<run folder name>``: keys live apart from the run they protect."""
    return Path.home() / ".medveil" / "keys" / run.expanduser().resolve().name


@app.command("study")
def study_command(
    dataset: Annotated[
        Optional[Path],
        typer.Argument(help="Kaggle-layout dataset folder (default: the embedded brain-mri set)."),
    ] = None,
    output: Annotated[Path, typer.Option("-o", "--output", help="Run folder.")] = Path("study-run"),
    config_file: Annotated[
        Optional[Path], typer.Option("--config", help="YAML configuration (see docs/STUDY.md).")
    ] = None,
    quick: Annotated[
        bool, typer.Option(help="Small sizes and budgets: minutes on a laptop CPU.")
    ] = False,
    overrides: Annotated[
        Optional[list[str]],
        typer.Option("--set", help="Override a field, e.g. --set training.epochs=3 (repeatable)."),
    ] = None,
    keys: Annotated[
        Optional[Path],
        typer.Option(help="Folder for the study's keys (default ~/.medveil/keys/<run name>)."),
    ] = None,
    restart: Annotated[
        bool, typer.Option(help="Delete an existing study in OUTPUT and start again.")
    ] = False,
) -> None:
    """Run the whole study (obfuscation, training, attacks, timings) and write report.html."""
    from medveil.study import load_config, run_study

    config = load_config(config_file, quick=quick, overrides=overrides or (), dataset=dataset)
    with console.status("starting the study") as status:
        result = run_study(
            config,
            run_dir=output,
            keys_dir=keys or _default_keys_dir(output),
            restart=restart,
            progress=lambda message: status.update(message),
        )
    Console().print(_text(result.summary()))
    console.print(f"open the report: [bold]{_text(result.report)}[/bold]")


@app.command("report")
def report_command(
    run: Annotated[Path, typer.Argument(help="A study run folder.")],
) -> None:
    """Rebuild a study's report.html from its saved metrics (nothing is recomputed)."""
    from medveil.study import write_report

    path = write_report(run)
    console.print(f"wrote {_text(path)}")


@datasets_app.command("make")
def datasets_make(
    name: Annotated[str, typer.Argument(help="'brain-mri' or 'ovary-us'.")],
    output: Annotated[Path, typer.Option("-o", "--output", help="Folder to write.")],
    per_class: Annotated[int, typer.Option(help="Images per class.")] = 100,
    size: Annotated[int, typer.Option(help="Image size in pixels.")] = 256,
    seed: Annotated[int, typer.Option(help="Random seed (same seed, same images).")] = 0,
    test_fraction: Annotated[
        float, typer.Option(help="Fraction written to Testing/ (0: class folders only).")
    ] = 0.0,
) -> None:
    """Write an embedded SYNTHETIC dataset as PNGs in the Kaggle layout."""
    from medveil.synthetic import DATASETS
    from medveil.synthetic.write import write_dataset

    if name not in DATASETS:
        raise _fail(f"unknown dataset {name!r}; choose from {', '.join(DATASETS)}")
    with _progress() as bar:
        task = bar.add_task(f"writing {name}", total=per_class * len(DATASETS[name].classes))
        result = write_dataset(
            name,
            output,
            per_class=per_class,
            size=size,
            seed=seed,
            test_fraction=test_fraction,
            progress=lambda n: bar.advance(task, n),
        )
    console.print(f"wrote synthetic {name} to {_text(result.path)}")


if __name__ == "__main__":
    app()
