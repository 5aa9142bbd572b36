"""``medveil datasets``: the embedded synthetic datasets."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from medveil.cli.app import _fail, _progress, _text, app, console

__all__ = ["datasets_app", "datasets_make"]

datasets_app = typer.Typer(help="Embedded synthetic datasets.", no_args_is_help=True)
app.add_typer(datasets_app, name="datasets")


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
