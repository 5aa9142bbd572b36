"""Study commands: ``study`` runs the whole study, ``report`` rebuilds its report."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console

from medveil.cli.app import _text, app, console

__all__ = ["report_command", "study_command"]


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
