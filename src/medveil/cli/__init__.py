"""Command-line interface: a thin layer over the Python API.

Exit codes: 0 success; 1 failure (a write failed, another run is writing the same output, an
unexpected error); 2 usage error or bad input (a bad option, data file, key or store). Messages
are for people: paths as plain text, names that are not valid UTF-8 with ``\\xNN`` escapes,
no Python reprs; commands whose output is data take ``--json``.

One module per command group registers its commands on :data:`app` when imported here (the
order of the imports is the order of ``medveil --help``): :mod:`~medveil.cli.keys`,
:mod:`~medveil.cli.obfuscation`, :mod:`~medveil.cli.training`, :mod:`~medveil.cli.attacks`,
:mod:`~medveil.cli.study` and :mod:`~medveil.cli.datasets`. They import torch and the other
heavy modules inside the commands, so ``medveil --help`` stays fast.
"""

# Each import registers its commands; isort must not reorder them: this is the order of --help.
# isort: off
from medveil.cli import keys, obfuscation, training, attacks, study, datasets  # noqa: F401
# isort: on
from medveil.cli.app import EXIT_BAD_INPUT, EXIT_FAILURE, EXIT_OK, app

__all__ = ["EXIT_BAD_INPUT", "EXIT_FAILURE", "EXIT_OK", "app"]
