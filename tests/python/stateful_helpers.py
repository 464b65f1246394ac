"""Shared pieces of the Hypothesis state-machine tests (tests/python/test_stateful_*.py).

- ``stateful_settings``: deterministic settings (derandomized, no example database, no deadline,
  no shrinking unless asked for), sized so that all the state machines together run in about a
  minute on 2 cores;
- ``plain`` / ``assert_same``: snapshots of observable state made plain and exactly comparable
  (numpy arrays and scalars included), so that "the structure is unchanged" is a single ``==``;
- ``refused``: runs an invalid call, checks it raises the documented exception type, and checks
  the observable state is the same before and after it;
- ``fresh_id(s)``: ids not in use, without filters that Hypothesis may give up on.

Environment, for longer local explorations: LLMDS_STATEFUL_SCALE=k runs k times the examples,
LLMDS_STATEFUL_RANDOM=1 draws them at random, LLMDS_STATEFUL_SHRINK=1 shrinks a failing run.
"""

from __future__ import annotations

import math
import os
from typing import Any, Callable

import numpy as np
from hypothesis import HealthCheck, Phase, settings
from hypothesis import strategies as st


def stateful_settings(max_examples: int, steps: int) -> settings:
    """Deterministic settings (see the module docstring for the environment variables)."""
    scale = float(os.environ.get("LLMDS_STATEFUL_SCALE", "1"))
    # Shrinking a failing run of a state machine can take minutes; CI reports the first failing
    # run as found (deterministic, so it reproduces), LLMDS_STATEFUL_SHRINK=1 shrinks it locally.
    phases = [Phase.explicit, Phase.reuse, Phase.generate]
    if os.environ.get("LLMDS_STATEFUL_SHRINK") == "1":
        phases.append(Phase.shrink)
    return settings(
        phases=phases,
        report_multiple_bugs=False,
        max_examples=max(1, int(max_examples * scale)),
        stateful_step_count=steps,
        deadline=None,
        derandomize=os.environ.get("LLMDS_STATEFUL_RANDOM") != "1",
        database=None,
        print_blob=False,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.data_too_large],
    )


def plain(value: Any) -> Any:
    """value with numpy arrays / scalars, tuples and nested containers made plain and comparable."""
    if isinstance(value, np.ndarray):
        return ("ndarray", str(value.dtype), value.shape, plain(value.tolist()))
    if isinstance(value, np.generic):
        return plain(value.item())
    if isinstance(value, dict):
        return {plain(k): plain(v) for k, v in value.items()}
    if isinstance(value, tuple):
        return tuple(plain(v) for v in value)
    if isinstance(value, list):
        return [plain(v) for v in value]
    if isinstance(value, float) and math.isnan(value):
        return "nan"
    return value


def diff(before: Any, after: Any, path: str = "") -> list[str]:
    """Where two plain() snapshots differ (for readable assertion messages)."""
    if type(before) is not type(after):
        return [f"{path}: {before!r} -> {after!r}"]
    if isinstance(before, dict):
        out = []
        for k in sorted(set(before) | set(after), key=repr):
            if k not in before or k not in after:
                out.append(f"{path}[{k!r}]: {before.get(k, '<missing>')!r} -> {after.get(k, '<missing>')!r}")
            else:
                out += diff(before[k], after[k], f"{path}[{k!r}]")
        return out
    if isinstance(before, (list, tuple)):
        if len(before) != len(after):
            return [f"{path}: {before!r} -> {after!r}"]
        out = []
        for i, (a, b) in enumerate(zip(before, after)):
            out += diff(a, b, f"{path}[{i}]")
        return out
    return [] if before == after else [f"{path}: {before!r} -> {after!r}"]


def assert_same(before: Any, after: Any, what: str) -> None:
    b, a = plain(before), plain(after)
    if b != a:
        raise AssertionError(f"{what} changed the structure:\n  " + "\n  ".join(diff(b, a)[:20]))


def refused(
    snapshot: Callable[[], Any],
    exc_type: type[BaseException] | tuple[type[BaseException], ...],
    fn: Callable[..., Any],
    *args: Any,
    **kwargs: Any,
) -> BaseException:
    """fn(*args, **kwargs) must raise exc_type (or a subclass) and leave snapshot() as it was.

    exc_type may be a tuple where two documented conditions hold at once (either may win).
    Any other exception, or none, fails with a message naming the call. Returns the exception.
    """
    name = getattr(fn, "__name__", repr(fn))
    what = f"{name}(*{args!r:.200}, **{kwargs!r:.200})"
    before = snapshot()
    try:
        result = fn(*args, **kwargs)
    except exc_type as e:  # the documented type
        error: BaseException = e
    except Exception as e:  # noqa: BLE001 - anything else is a defect
        raise AssertionError(f"{what} raised {type(e).__name__}({e}), documented: {_names(exc_type)}") from e
    else:
        raise AssertionError(f"{what} returned {result!r:.200} instead of raising {_names(exc_type)}")
    assert_same(before, snapshot(), f"{what} (refused with {type(error).__name__})")
    return error


def _names(exc_type: type[BaseException] | tuple[type[BaseException], ...]) -> str:
    types = exc_type if isinstance(exc_type, tuple) else (exc_type,)
    return " or ".join(t.__name__ for t in types)


def fresh_ids(data: Any, strategy: Any, used: Any, n: int) -> list[int]:
    """n distinct ints drawn from strategy that are not in used. A draw that is taken is replaced by
    the next free int from 1000 instead of being filtered out (filters that keep failing make
    Hypothesis give up on the run)."""
    taken = set(used)
    out = []
    for _ in range(n):
        x = data.draw(strategy)
        if x in taken:
            x = 1000
            while x in taken:
                x += 1
        taken.add(x)
        out.append(x)
    return out


def fresh_id(data: Any, strategy: Any, used: Any) -> int:
    return fresh_ids(data, strategy, used, 1)[0]


def damaged(blob: bytes, data: Any, how: str, garbage: bytes) -> bytes:
    """A saved file spoiled one way: a bit flipped ("flip"), cut short ("truncate"), nothing
    ("empty"), or `garbage` in its place ("garbage"); `data` draws where."""
    spoiled = bytearray(blob)
    if how == "flip":
        i = data.draw(st.integers(0, len(spoiled) - 1))
        spoiled[i] ^= 1 << data.draw(st.integers(0, 7))
    elif how == "truncate":
        spoiled = spoiled[: data.draw(st.integers(0, len(spoiled) - 1))]
    elif how == "empty":
        spoiled = bytearray()
    else:
        spoiled = bytearray(garbage)
    return bytes(spoiled)


def refuses_damaged_file(snapshot: Callable[[], Any], save: Callable[[str], None], load: Callable[[str], Any],
                         folder: str, suffix: str, data: Any, garbage: bytes) -> None:
    """Saves a good file with `save`, spoils it one way (``damaged``), and checks that `load`
    refuses it with ValueError and that the state `snapshot` shows is unchanged."""
    path = os.path.join(folder, "good" + suffix)
    save(path)
    with open(path, "rb") as f:
        blob = f.read()
    how = data.draw(st.sampled_from(["flip", "truncate", "empty", "garbage"]))
    bad = os.path.join(folder, "bad" + suffix)
    with open(bad, "wb") as f:
        f.write(damaged(blob, data, how, garbage))
    refused(snapshot, ValueError, load, bad)


def refuses_unreadable_file(snapshot: Callable[[], Any], save: Callable[[str], None], load: Callable[[str], Any],
                            folder: str, suffix: str) -> None:
    """A file that is not there is OSError to `load`, a folder that is not there OSError to `save`;
    neither changes the state."""
    refused(snapshot, OSError, load, os.path.join(folder, "missing" + suffix))
    refused(snapshot, OSError, save, os.path.join(folder, "no-such-dir", "x" + suffix))
