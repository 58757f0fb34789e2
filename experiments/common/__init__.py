"""Plumbing shared by the experiment scripts: flags, the run directory, logs, tables, figures.

Every script writes into its ``--out-dir``: ``config.json`` (the flags and the environment),
``metrics.jsonl`` (one JSON object per line, flushed as it goes), its figures (PNG) and a markdown
table, all atomically (temp file + rename), and its closing lines list every file it wrote.

Importing this package is cheap (no jax, no matplotlib): scripts parse their flags, so that
``--help`` answers at once, before they import jax. ``plots`` (matplotlib) and ``timing`` (jax)
are imported by the scripts that need them.
"""

from experiments.common.progress import Progress as Progress
from experiments.common.run import FIGURES_DIR as FIGURES_DIR
from experiments.common.run import MetricsLog as MetricsLog
from experiments.common.run import Run as Run
from experiments.common.run import Timer as Timer
from experiments.common.run import add_common_args as add_common_args
from experiments.common.run import finite_or_none as finite_or_none
from experiments.common.run import load_average as load_average
from experiments.common.run import parser as parser
from experiments.common.run import require_positive as require_positive
from experiments.common.run import start_run as start_run
from experiments.common.run import write_json as write_json
from experiments.common.run import write_table as write_table
from experiments.common.tables import markdown_table as markdown_table

__all__ = [
    "FIGURES_DIR",
    "MetricsLog",
    "Progress",
    "Run",
    "Timer",
    "add_common_args",
    "finite_or_none",
    "load_average",
    "markdown_table",
    "parser",
    "require_positive",
    "start_run",
    "write_json",
    "write_table",
]
