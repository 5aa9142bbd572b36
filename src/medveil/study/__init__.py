"""The study: one command runs the whole experiment and writes an HTML report.

- :mod:`~medveil.study.config`: the typed, validated configuration (YAML, ``--quick``, overrides);
- :mod:`~medveil.study.presets`: the presets a study may run, its default, those a saved run ran;
- :mod:`~medveil.study.run`: the resumable steps (data, keys, obfuscation, training, rank sweep,
  attacks, timings);
- :mod:`~medveil.study.metrics`: the step names and the numbers gathered from a run folder;
- :mod:`~medveil.study.claims`: the thesis's headline figures beside the run's;
- :mod:`~medveil.study.efficiency`: per-stage timings;
- :mod:`~medveil.study.report`: the self-contained ``report.html``.
"""

from medveil.errors import StudyError
from medveil.study.config import ConfigError, StudyConfig, load_config
from medveil.study.metrics import collect_metrics
from medveil.study.report import write_report
from medveil.study.run import StudyResult, run_study

__all__ = [
    "ConfigError",
    "StudyConfig",
    "StudyError",
    "StudyResult",
    "collect_metrics",
    "load_config",
    "run_study",
    "write_report",
]
