"""Real request traces, read into memory (llmds.replay runs them through a prefix cache, or
through admission control and batching):

* Mooncake FAST'25 traces: JSON Lines with a timestamp, token counts and the hash ids of each
  request's 512-token blocks (``load_mooncake_trace``, ``parse_mooncake_trace``; parsed in C++);
* Azure LLM inference traces (2023): CSV with each request's arrival time and its prompt and
  generated token counts (``load_azure_trace``).

Both read plain or gzipped files (``.gz``), as the package ships its copies of them.
``replay_prefix_cache`` lives in llmds.replay and stays importable from here.
"""

from __future__ import annotations

import csv
import gzip
import os
import zlib
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from llmds import _core
from llmds._core import MooncakeTrace as MooncakeTrace
from llmds._core import PrefixCacheReplayResult as PrefixCacheReplayResult
from llmds._core import parse_mooncake_trace as parse_mooncake_trace
from llmds._core import replay_prefix_cache as replay_prefix_cache
from llmds.data import open_text


def load_mooncake_trace(path: str | os.PathLike[str]) -> MooncakeTrace:
    """Parse a Mooncake trace file (``.gz``: gzipped). OSError if it cannot be read, ValueError
    naming the line if it is malformed."""
    path = Path(path)
    if path.suffix == ".gz":
        with open_text(path) as f:
            return parse_mooncake_trace(f.read())
    return _core.load_mooncake_trace(path)


@dataclass(frozen=True)
class AzureTrace:
    """One Azure LLM inference trace: arrival seconds from the first request, token counts."""

    name: str
    arrival_s: np.ndarray  # float64, non-decreasing, starts at 0
    prompt_tokens: np.ndarray  # int64
    output_tokens: np.ndarray  # int64

    def __len__(self) -> int:
        return len(self.arrival_s)

    @property
    def duration_s(self) -> float:
        """Seconds from the first arrival to the last."""
        return float(self.arrival_s[-1]) if len(self) else 0.0


def _parse_timestamp(text: str) -> float:
    # "2023-11-16 18:17:03.9799600": seven fractional digits, more than strptime's %f takes. The
    # fraction must be digits: float() would also take "5e400" (infinity) or "5e5" (a day later).
    # The traces' clock is UTC; reading them as UTC keeps arrivals exact on a machine whose local
    # time has a daylight-saving change inside the trace (and every year in range).
    whole, _, fraction = text.partition(".")
    base = datetime.strptime(whole, "%Y-%m-%d %H:%M:%S").replace(tzinfo=timezone.utc).timestamp()
    if fraction and not (fraction.isascii() and fraction.isdigit()):
        raise ValueError(f"the fraction of a second in {text!r} is not decimal digits")
    return base + (float("0." + fraction) if fraction else 0.0)


_INT64_MAX = 2**63 - 1  # token counts are stored as int64


def _parse_count(text: str | None) -> int:
    # An optional minus and ASCII digits: int() would also take " 5", "+5", "1_000" or other
    # scripts' digits, and values past int64, which numpy refuses with OverflowError.
    digits = text[1:] if text is not None and text.startswith("-") else text
    if digits is None or not (digits.isascii() and digits.isdigit()):
        raise ValueError(f"token count {text!r} is not a decimal integer")
    value = int(text)
    if value > _INT64_MAX:
        raise ValueError(f"token count {text} does not fit 64 bits")
    return value


def load_azure_trace(path: str | Path) -> AzureTrace:
    """Reads an Azure LLM inference trace CSV (``TIMESTAMP,ContextTokens,GeneratedTokens``), plain or
    gzipped (``.gz``).

    ValueError names the line of a malformed row (or of CSV the reader cannot split into fields);
    rows out of time order are an error too. Timestamps are UTC, token counts decimal integers in
    [0, 2^63). A file that cannot be read is an OSError, a damaged ``.gz`` gzip.BadGzipFile (one).
    """
    path = Path(path)
    times: list[float] = []
    prompts: list[int] = []
    outputs: list[int] = []
    try:
        with open_text(path) as f:
            reader = csv.DictReader(f)
            expected = ("TIMESTAMP", "ContextTokens", "GeneratedTokens")
            try:
                fieldnames = reader.fieldnames
            except csv.Error as e:
                raise ValueError(f"{path}:{reader.line_num + 1}: unreadable header: {e}") from None
            if fieldnames is None or any(fieldnames.count(name) != 1 for name in expected):
                raise ValueError(f"{path}: expected the header TIMESTAMP,ContextTokens,GeneratedTokens, got {fieldnames}")
            rows = iter(reader)
            while True:
                try:
                    row = next(rows)
                except StopIteration:
                    break
                except csv.Error as e:  # line_num counts the lines read before the failing one
                    raise ValueError(f"{path}:{reader.line_num + 1}: {e}") from None
                line = reader.line_num
                if any(row[name] is None for name in expected):  # DictReader's filler for a short row
                    raise ValueError(f"{path}:{line}: row {row} has fewer fields than the header")
                try:
                    t = _parse_timestamp(row["TIMESTAMP"])
                    p, o = _parse_count(row["ContextTokens"]), _parse_count(row["GeneratedTokens"])
                except (TypeError, ValueError) as e:
                    raise ValueError(f"{path}:{line}: malformed row {row}: {e}") from None
                if p < 0 or o < 0:
                    raise ValueError(f"{path}:{line}: negative token count")
                if times and t < times[-1]:
                    raise ValueError(f"{path}:{line}: timestamp earlier than the previous row's")
                times.append(t)
                prompts.append(p)
                outputs.append(o)
    except (EOFError, zlib.error) as e:
        # gzip raises BadGzipFile for a bad header only; a truncated or damaged body surfaces as these.
        raise gzip.BadGzipFile(f"{path}: damaged gzip data: {e}") from None
    if not times:
        raise ValueError(f"{path}: no requests")
    arrival = np.asarray(times) - times[0]
    return AzureTrace(path.stem, arrival, np.asarray(prompts, dtype=np.int64), np.asarray(outputs, dtype=np.int64))


__all__ = [
    "AzureTrace",
    "MooncakeTrace",
    "PrefixCacheReplayResult",
    "load_azure_trace",
    "load_mooncake_trace",
    "parse_mooncake_trace",
    "replay_prefix_cache",
]
