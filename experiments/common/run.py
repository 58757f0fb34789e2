"""The run directory: config.json, a JSON-lines metrics log, results files and a timer."""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import time
from importlib import metadata
from pathlib import Path

FIGURES_DIR = Path(__file__).parents[1] / "figures"


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


def parser(description: str, *, out_dir: str) -> argparse.ArgumentParser:
    """An argument parser showing ``description`` as written, with --out-dir, --data-dir,
    --seed and --no-progress."""
    p = argparse.ArgumentParser(
        description=description, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_common_args(p, out_dir=out_dir)
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    return p


def require_positive(p: argparse.ArgumentParser, args: argparse.Namespace, *names: str) -> None:
    """Stop with a usage error naming the first flag in ``names`` whose value is below 1."""
    for name in names:
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")


def finite_or_none(value):
    """``value`` with every NaN or infinity (also inside lists and dicts) replaced by None."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: finite_or_none(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite_or_none(v) for v in value]
    return value


def load_average() -> tuple[float, float, float]:
    """The 1, 5 and 15 minute load averages (NaN where the platform has none)."""
    try:
        return os.getloadavg()
    except (AttributeError, OSError):
        return (math.nan,) * 3


def write_json(path: Path, obj) -> Path:
    """Write ``obj`` as indented JSON, atomically (jaxbn's writer: temp file, then rename)."""
    from jaxbn._io import write_json as atomic_write_json  # jaxbn imports jax: not before --help

    return atomic_write_json(path, obj)


def atomic_write_text(path: Path, text: str) -> Path:
    from jaxbn._io import atomic_write_text as write  # jaxbn imports jax: not before --help

    return write(path, text)


def _environment() -> dict:
    jax = sys.modules.get("jax")  # the scripts import jax after parsing their flags
    env = {
        "jax": metadata.version("jax"),
        "python": sys.version.split()[0],
        "machine": platform.platform(),
        "cpu_count": os.cpu_count(),
        "started": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    if jax is not None:
        env.update(backend=jax.default_backend(), devices=len(jax.devices()))
    return env


def start_run(args: argparse.Namespace, **extra) -> tuple[Path, dict]:
    """Create the output directory and write config.json (flags, ``extra``, environment)."""
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    config = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
    config.update(extra)
    config["environment"] = _environment()
    write_json(out / "config.json", config)
    return out, config


class MetricsLog:
    """Append-only JSON-lines log; each record is flushed to disk when written."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = open(self.path, "w", encoding="utf-8")

    def write(self, **record) -> None:
        """Append one record; NaN and infinities become null, so every line is strict JSON."""
        self._file.write(json.dumps(finite_or_none(record), sort_keys=True, allow_nan=False))
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


class Run:
    """One run's output directory; it remembers every file written, to list them at the end.

    ``Run(args, **extra)`` creates ``args.out_dir`` and writes ``config.json``; ``log()`` opens
    ``metrics.jsonl``; ``text``, ``json`` and ``figure`` write the other files atomically;
    ``wrote()`` is the closing line naming them all.
    """

    def __init__(self, args: argparse.Namespace, **extra):
        self.dir, self.config = start_run(args, **extra)
        self.files: list[Path] = [self.dir / "config.json"]

    def path(self, name: str) -> Path:
        path = self.dir / name
        if path not in self.files:
            self.files.append(path)
        return path

    def log(self) -> MetricsLog:
        return MetricsLog(self.path("metrics.jsonl"))

    def text(self, name: str, text: str) -> Path:
        return atomic_write_text(self.path(name), text)

    def json(self, name: str, obj) -> Path:
        return write_json(self.path(name), finite_or_none(obj))

    def figure(self, name: str, fig, *, dpi: int = 110, tight: bool = True) -> Path:
        from experiments.common.plots import save_figure  # matplotlib: only for figures

        return save_figure(fig, self.path(name), dpi=dpi, tight=tight)

    def wrote(self) -> str:
        return f"wrote {len(self.files)} files in {self.dir}: " + ", ".join(
            p.name for p in self.files
        )


class Timer:
    """Wall and CPU seconds of a ``with`` block: ``with Timer() as t: ...; t.wall, t.cpu``."""

    def __enter__(self) -> Timer:
        self._wall, self._cpu = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc) -> None:
        self.wall = time.perf_counter() - self._wall
        self.cpu = time.process_time() - self._cpu
