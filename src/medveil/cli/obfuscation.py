"""Obfuscation commands: ``obfuscate`` writes a store, ``show`` plots one image's stages,
``info`` summarises a store.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.table import Table

from medveil.cli.app import (
    AllowOpenKeyOption,
    FillNonfiniteOption,
    NiftiVolumeOption,
    _nifti_volume,
    _percentile,
    _print_json,
    _progress,
    _text,
    app,
    console,
)

__all__ = ["info", "obfuscate", "show"]


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
    nifti_volume: NiftiVolumeOption = None,
    fill_nonfinite: FillNonfiniteOption = None,
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
    allow_open_key: AllowOpenKeyOption = False,
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
    nifti_volume: NiftiVolumeOption = None,
    fill_nonfinite: FillNonfiniteOption = None,
    allow_open_key: AllowOpenKeyOption = False,
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
