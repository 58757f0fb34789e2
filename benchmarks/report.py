"""What the benchmark scripts share besides timing: shapes, tables, verdicts, files written."""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from pathlib import Path

from jaxbn._io import atomic_write_text, write_json

# A target's verdict needs at least this many timed rounds of every competitor involved; a
# --quick run never gets one (its few samples on a shared machine can be off by 2x).
VERDICT_MIN_RUNS = 10


def parse_shape(text: str) -> tuple[tuple[int, ...], str]:
    """'256x1024' -> ((256, 1024), '(256, 1024)'); 'nhwc:64x56x56x64' -> the NHWC shape."""
    layout, _, dims = text.rpartition(":")
    try:
        shape = tuple(int(d) for d in dims.split("x"))
    except ValueError:
        raise ValueError(f"shape must look like 256x1024 or nhwc:8x4x4x3, got {text!r}") from None
    if len(shape) < 2 or min(shape) < 1:
        raise ValueError(f"shape needs at least 2 positive sizes, got {text!r}")
    label = f"{layout.upper()} {shape}" if layout else str(shape)
    return shape, label


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A GitHub markdown table."""
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(" --- " for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def verdict(met: bool | None, runs: int, *, quick: bool, busy: str | None = None) -> str:
    """'met' / 'NOT met' when the measurement can carry one, else why there is none.

    Args:
      met: whether the target is met; None when it does not apply.
      runs: the fewest timed rounds of the competitors involved.
      quick: a --quick run (never a verdict).
      busy: why the machine was too busy to trust a timing (see ``machine.busy``), or None.
    """
    if met is None:
        return "n/a"
    if quick:
        return "no verdict (--quick)"
    if busy:
        return f"no verdict ({busy})"
    if runs < VERDICT_MIN_RUNS:
        return f"no verdict ({runs} runs < {VERDICT_MIN_RUNS})"
    return "met" if met else "NOT met"


def write_outputs(out_dir: Path, files: dict[str, str | dict]) -> list[Path]:
    """Write each named file atomically (temp file + rename): dicts as JSON, strings as text.

    Returns:
      The paths written, in order.
    """
    written = []
    for name, content in files.items():
        path = out_dir / name
        if isinstance(content, str):
            atomic_write_text(path, content)
        else:
            write_json(path, content)
        written.append(path)
    return written


def closing_lines(paths: Sequence[Path]) -> str:
    """The lines a script ends with: every file it wrote."""
    return "wrote:\n" + "\n".join(f"  {p}" for p in paths)


def optional_import(name: str, missing: dict[str, str]):
    """Import an optional peer; None when it is not installed (the reason goes in ``missing``)."""
    try:
        return importlib.import_module(name)
    except ImportError as e:
        package = name.split(".")[0]  # one note per package
        missing.setdefault(package, f"{package} not installed ({e.__class__.__name__}): skipped")
        return None
