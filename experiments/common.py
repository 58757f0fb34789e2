"""Plumbing shared by the experiment scripts: flags, the output directory, logs, tables, figures.

Every script writes into its ``--out-dir``: ``config.json`` (the flags and the environment),
``metrics.jsonl`` (one JSON object per line, flushed as it goes), its figures (PNG) and a markdown
table. Files are written atomically (temp file + rename), so a crash never leaves half a file.
"""

from __future__ import annotations

import argparse
import io
import json
import math
import platform
import sys
import time
from pathlib import Path

import jax

from jaxbn._io import atomic_write_bytes, atomic_write_text, write_json

FIGURES_DIR = Path(__file__).parent / "figures"


def add_common_args(parser: argparse.ArgumentParser, *, out_dir: str) -> argparse.ArgumentParser:
    """Add --out-dir, --data-dir and --seed."""
    parser.add_argument("--out-dir", type=Path, default=Path(out_dir), help="where results go")
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=None,
        help="directory holding the data files (else $JAXBN_DATA, then ~/.cache/jaxbn)",
    )
    parser.add_argument("--seed", type=int, default=0)
    return parser


def start_run(args: argparse.Namespace, **extra) -> tuple[Path, dict]:
    """Create the output directory and write config.json (flags, versions, machine)."""
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    config = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
    config.update(extra)
    config["environment"] = {
        "jax": jax.__version__,
        "backend": jax.default_backend(),
        "devices": len(jax.devices()),
        "python": sys.version.split()[0],
        "machine": platform.platform(),
        "started": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    write_json(out / "config.json", config)
    return out, config


def _finite_or_null(value):
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite_or_null(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite_or_null(v) for v in value]
    return value


class MetricsLog:
    """Append-only JSON-lines log; each record is flushed to disk when written."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = open(self.path, "w", encoding="utf-8")

    def write(self, **record) -> None:
        """Append one record; NaN and infinities become null, so every line is strict JSON."""
        self._file.write(json.dumps(_finite_or_null(record), sort_keys=True, allow_nan=False))
        self._file.write("\n")
        self._file.flush()

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> MetricsLog:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def write_table(path: Path, markdown: str) -> Path:
    return atomic_write_text(path, markdown)


def save_figure(fig, path: Path, *, dpi: int = 110) -> Path:
    """Render a matplotlib figure to PNG in memory, then write it atomically."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    return atomic_write_bytes(path, buf.getvalue())


def pyplot():
    """matplotlib.pyplot on the non-interactive Agg backend (imported lazily: optional extra)."""
    try:
        import matplotlib
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError(
            'the experiments draw with matplotlib: pip install "jaxbn[experiments]"'
        ) from err
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


__all__ = [
    "FIGURES_DIR",
    "MetricsLog",
    "add_common_args",
    "pyplot",
    "save_figure",
    "start_run",
    "write_json",
    "write_table",
]
