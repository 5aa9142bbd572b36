"""``medveil keygen``: draw a key, calibrated on a dataset or a PACS where its preset needs it."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from medveil.cli.app import (
    FillNonfiniteOption,
    NiftiVolumeOption,
    _fail,
    _nifti_volume,
    _text,
    app,
    console,
)

__all__ = ["keygen"]


@app.command()
def keygen(
    output: Annotated[Path, typer.Option("-o", "--output", help="Key file to write (mode 0600).")],
    preset: Annotated[
        str, typer.Option(help="'multistage', 'svd', or a named setting of the multistage stages: 'private' (DP-SVD at epsilon 2), 'balanced' (epsilon 4), 'dp-svd' (epsilon 1).")
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
    nifti_volume: NiftiVolumeOption = None,
    fill_nonfinite: FillNonfiniteOption = None,
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
