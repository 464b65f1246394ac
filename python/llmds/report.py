"""Markdown reports with PNG plots: what ``python -m llmds demo`` and ``python -m llmds bench`` write.

A report is a list of sections. Inside ``with report.section(title):`` everything printed to
stdout still reaches the terminal and is also kept as the section's text: the demo keeps it as a
fenced block of terminal output, the benchmark comparison prints Markdown tables and keeps them as
they are. ``report.plot(...)`` draws a PNG beside the report with matplotlib when it is installed
(the quick start installs it); without it the report says that plots were left out, and why,
instead of failing.
"""

from __future__ import annotations

import contextlib
import io
import os
import platform
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

__all__ = ["Report", "cpu_model", "machine_summary"]


class _Tee(io.TextIOBase):
    """A text stream that writes to the terminal and keeps a copy."""

    def __init__(self, terminal: TextIO) -> None:
        self.terminal = terminal
        self.copy = io.StringIO()

    def write(self, text: str) -> int:
        self.terminal.write(text)
        return self.copy.write(text)

    def flush(self) -> None:
        self.terminal.flush()


@dataclass
class _Section:
    title: str
    fenced: bool
    text: str = ""
    images: list[tuple[str, str]] = field(default_factory=list)  # (title, path relative to the report)


class Report:
    """A Markdown report at `path`, its PNG plots in `images` (a folder; default: beside it)."""

    def __init__(self, title: str, path: str | Path, images: str | Path | None = None) -> None:
        self.title = title
        self.path = Path(path)
        self.images = Path(images) if images is not None else self.path.parent
        self.preamble: list[str] = []
        self.sections: list[_Section] = []
        self.plots_skipped: str | None = None
        self._pyplot: Any = None

    @contextlib.contextmanager
    def section(self, title: str, fenced: bool = True) -> Iterator[None]:
        """Prints the title, then keeps what the block prints as the section's text (a fenced
        block of terminal output, or Markdown as it is when `fenced` is false)."""
        section = _Section(title, fenced)
        self.sections.append(section)
        print(f"\n== {title}", flush=True)
        tee = _Tee(sys.stdout)
        try:
            with contextlib.redirect_stdout(tee):
                yield
        finally:
            section.text = tee.copy.getvalue()

    def plot(self, name: str, title: str, draw: Callable[[Any], None], size: tuple[float, float] = (6.4, 4.0)) -> Path | None:
        """Draws a figure with `draw(axes)` into ``<images>/<name>.png`` and attaches it to the
        current section. None (and a note in the report) when matplotlib is not installed."""
        pyplot = self._matplotlib()
        if pyplot is None:
            return None
        figure, axes = pyplot.subplots(figsize=size, dpi=110)
        try:
            draw(axes)
            axes.set_title(title)
            axes.grid(True, alpha=0.3)
            figure.tight_layout()
            self.images.mkdir(parents=True, exist_ok=True)
            path = self.images / f"{name}.png"
            figure.savefig(path)
        finally:
            pyplot.close(figure)
        target = self.sections[-1].images if self.sections else []
        target.append((title, os.path.relpath(path, self.path.parent)))
        return path

    def _matplotlib(self) -> Any:
        if self._pyplot is None and self.plots_skipped is None:
            try:
                import matplotlib

                matplotlib.use("Agg")  # files only: no display needed
                import matplotlib.pyplot as pyplot

                self._pyplot = pyplot
            except ImportError:
                self.plots_skipped = "matplotlib is not installed (pip install matplotlib), so this report has no plots"
        return self._pyplot

    def write(self) -> Path:
        """Writes the Markdown file and returns its path."""
        lines = [f"# {self.title}", "", *self.preamble]
        if self.plots_skipped:
            lines += ["", f"Note: {self.plots_skipped}."]
        for s in self.sections:
            lines += ["", f"## {s.title}", ""]
            text = s.text.strip("\n")
            if text:
                lines += ["```text", text, "```"] if s.fenced else [text]
            for title, relative in s.images:
                lines += ["", f"![{title}]({relative})"]
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.write_text("\n".join(lines) + "\n", encoding="utf-8")
        return self.path


def cpu_model() -> str:
    """The CPU's model name (from /proc/cpuinfo), else what the platform module knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _memory_gib() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) / 2**20
    except (OSError, ValueError):
        pass
    return None


def package_version(distribution: str) -> str:
    """The installed version of a distribution (a PyPI name), or "not installed"."""
    import importlib.metadata

    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def machine_summary(packages: tuple[str, ...] = ()) -> list[str]:
    """Markdown lines naming the machine and the versions a measurement ran with: date, CPU,
    cores, memory, OS, Python, llmds, numpy and each of `packages` (distribution names) that is
    installed."""
    import llmds

    memory = _memory_gib()
    versions = [f"llmds {llmds.__version__}", f"Python {platform.python_version()}"]
    versions += [f"{name} {package_version(name)}" for name in ("numpy", *packages)]
    return [
        f"- Date: {time.strftime('%Y-%m-%d %H:%M %Z')}",
        f"- Machine: {cpu_model()}, {os.cpu_count()} cores"
        + (f", {memory:.0f} GiB" if memory else "")
        + f"; {platform.system()} {platform.release()}",
        f"- Versions: {', '.join(versions)}",
    ]
