"""The ``medveil`` Typer app and what every command module shares.

The error handler that turns a bad input or a failed write into ``error: MESSAGE`` and an exit
code, the console for messages (stderr), progress bars, JSON output, printable text and the
option help texts and parsers used by more than one command. Commands register themselves on
:data:`app` from the modules of :mod:`medveil.cli`.
"""
from __future__ import annotations

import json
import warnings
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
from typer.core import TyperGroup

from medveil.errors import MedveilError, MedveilWarning

__all__ = ["EXIT_BAD_INPUT", "EXIT_FAILURE", "EXIT_OK", "app", "console"]

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
        with warnings.catch_warnings():
            warnings.showwarning = _show_warning
            try:
                return super().invoke(ctx)
            except (MedveilError, ValueError, OSError) as exc:
                raise _failed(exc) from None


_default_showwarning = warnings.showwarning


def _show_warning(message: Warning | str, category: type[Warning], *args: Any, **kwargs: Any) -> None:
    """A medveil warning as ``warning: MESSAGE`` on stderr; other warnings as Python shows them."""
    if issubclass(category, MedveilWarning):
        console.print(_text(f"warning: {message}"))
    else:
        _default_showwarning(message, category, *args, **kwargs)


app = typer.Typer(
    cls=_Commands,
    help="Keyed multistage SVD obfuscation of medical images.",
    epilog=_EXIT_CODES,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
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


# Options that several commands share: one declaration, one help text.
AllowOpenKeyOption = Annotated[bool, typer.Option(help=_ALLOW_OPEN_KEY_HELP)]
NiftiVolumeOption = Annotated[
    Optional[str], typer.Option(metavar="INDEX|all", help=_NIFTI_VOLUME_HELP)
]
FillNonfiniteOption = Annotated[
    Optional[float], typer.Option(metavar="VALUE", help=_FILL_NONFINITE_HELP)
]


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
