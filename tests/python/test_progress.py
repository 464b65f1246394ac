"""llmds.progress: bars appear only when enabled and after min_seconds, on one redrawn line."""

from __future__ import annotations

import io

import pytest

from llmds.progress import Progress, log, track


def test_log_writes_a_line_to_standard_error_only(capsys) -> None:
    log("building")
    out, err = capsys.readouterr()
    assert (out, err) == ("", "building\n")


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_no_bar_for_quick_steps_or_when_disabled() -> None:
    out, clock = io.StringIO(), FakeClock()
    with Progress(10, "quick", stream=out, enabled=True, clock=clock) as bar:
        clock.now = 0.5
        bar.update(10)
    assert out.getvalue() == ""
    with Progress(10, "off", stream=out, enabled=False, clock=clock) as bar:
        clock.now = 5.0
        bar.update(10)
    assert out.getvalue() == ""


def test_a_slow_step_draws_a_bar_on_one_line() -> None:
    out, clock = io.StringIO(), FakeClock()
    with Progress(200, "build", stream=out, enabled=True, clock=clock) as bar:
        for i in range(4):
            clock.now = 1.0 + i
            bar.update(50)
    text = out.getvalue()
    assert text.endswith("\n") and text.count("\n") == 1
    last = text.rstrip("\n").split("\r")[-1]
    assert last.startswith("build [" + "#" * 30 + "] 100.0% 200/200")
    assert "50/s" in last


def test_track_counts_items_and_handles_unknown_totals() -> None:
    out, clock = io.StringIO(), FakeClock()

    def slow():
        for i in range(3):
            clock.now += 1.0
            yield i

    assert list(track(slow(), "items", stream=out, enabled=True, clock=clock)) == [0, 1, 2]
    assert out.getvalue().rstrip("\n").split("\r")[-1].startswith("items: 3")
    assert list(track([1, 2], "list", stream=out, enabled=False)) == [1, 2]


def test_bad_arguments() -> None:
    with pytest.raises(ValueError):
        Progress(-1, "x")
    with pytest.raises(ValueError):
        Progress(1, "x", enabled=False).update(-1)
