"""matplotlib on the Agg backend, and figures written atomically as PNG."""

from __future__ import annotations

import io
from pathlib import Path

try:
    import matplotlib
except ImportError as err:  # pragma: no cover - depends on the environment
    raise ImportError(
        'the experiments draw with matplotlib: pip install -e ".[experiments]"'
    ) from err

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from jaxbn._io import atomic_write_bytes


def pyplot():
    """matplotlib.pyplot on the non-interactive Agg backend."""
    return plt


def save_figure(fig, path: Path, *, dpi: int = 110) -> Path:
    """Render a matplotlib figure to PNG in memory, write it atomically and close it."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    plt.close(fig)
    return atomic_write_bytes(path, buf.getvalue())
