"""A progress bar that says what is happening (compiling, training K nets, evaluating)."""

from __future__ import annotations

try:
    from tqdm.auto import tqdm
except ImportError:  # tqdm is optional: no bar without it
    tqdm = None


class Progress:
    """One tqdm bar on stderr over ``total`` units of real work (None: no total, a counter).

    ``phase(text)`` names what runs now; ``done(n)`` counts finished units. Without tqdm, or
    with ``enabled=False``, it does nothing.
    """

    def __init__(self, total: int | None, *, unit: str = "it", enabled: bool = True):
        self._bar = (
            tqdm(total=total, unit=unit, dynamic_ncols=True, leave=False)
            if enabled and tqdm is not None
            else None
        )

    def phase(self, text: str) -> None:
        if self._bar is not None:
            self._bar.set_description_str(text)
            self._bar.refresh()

    def done(self, n: int = 1) -> None:
        if self._bar is not None:
            self._bar.update(n)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
