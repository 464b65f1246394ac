"""Progress bars for long steps, without dependencies.

A bar appears only on a terminal (or with ``LLMDS_PROGRESS=1``) and only once a step has run for
``min_seconds`` (1 s by default), so quick steps and captured output stay clean. It is redrawn in
place on standard error at most ten times a second::

    from llmds.progress import Progress, track

    with Progress(total=60_000, label="HNSW build") as bar:
        for chunk in chunks:
            index.add_batch(chunk, ...)
            bar.update(len(chunk))

    for trace in track(traces, "replaying"):
        ...
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from typing import TextIO, TypeVar

T = TypeVar("T")

WIDTH = 30


class Progress:
    """A bar for `total` units of work (None: a counter without a bar)."""

    def __init__(
        self,
        total: int | None,
        label: str,
        *,
        stream: TextIO | None = None,
        min_seconds: float = 1.0,
        enabled: bool | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if total is not None and total < 0:
            raise ValueError(f"total must be non-negative, got {total}")
        self.total = total
        self.label = label
        self.stream = stream if stream is not None else sys.stderr
        if enabled is None:
            enabled = os.environ.get("LLMDS_PROGRESS") == "1" or bool(getattr(self.stream, "isatty", lambda: False)())
        self.enabled = enabled
        self.min_seconds = min_seconds
        self.clock = clock
        self.done = 0
        self.start = clock()
        self._last_draw = -1.0
        self._drawn = False

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def update(self, n: int = 1) -> None:
        """Records `n` more units done and redraws the bar if it is due."""
        if n < 0:
            raise ValueError(f"progress cannot go back ({n})")
        self.done += n
        now = self.clock()
        if self.enabled and now - self.start >= self.min_seconds and now - self._last_draw >= 0.1:
            self._draw(now)

    def line(self, now: float) -> str:
        """The bar as text: label, bar and percentage (or a count), elapsed seconds, rate."""
        elapsed = now - self.start
        rate = self.done / elapsed if elapsed > 0 else 0.0
        if self.total:
            frac = min(1.0, self.done / self.total)
            filled = int(frac * WIDTH)
            bar = "#" * filled + "-" * (WIDTH - filled)
            return f"{self.label} [{bar}] {frac:6.1%} {self.done:,}/{self.total:,} {elapsed:5.1f} s ({rate:,.0f}/s)"
        return f"{self.label}: {self.done:,} {elapsed:5.1f} s ({rate:,.0f}/s)"

    def _draw(self, now: float) -> None:
        self.stream.write("\r" + self.line(now))
        self.stream.flush()
        self._last_draw = now
        self._drawn = True

    def close(self) -> None:
        """Draws the final state and ends the line, if a bar was shown."""
        if self._drawn:
            self._draw(self.clock())
            self.stream.write("\n")
            self.stream.flush()
            self._drawn = False


def log(message: str) -> None:
    """A note on what a long run is doing, on standard error (so it never mixes with the results
    a benchmark prints on standard output)."""
    print(message, file=sys.stderr, flush=True)


def track(items: Iterable[T], label: str, total: int | None = None, **options: object) -> Iterator[T]:
    """Yields `items`, advancing a Progress by one per item (total from len() when it has one)."""
    if total is None and hasattr(items, "__len__"):
        total = len(items)  # type: ignore[arg-type]
    with Progress(total, label, **options) as bar:  # type: ignore[arg-type]
        for item in items:
            yield item
            bar.update()
