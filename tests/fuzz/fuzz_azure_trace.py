"""Fuzz target (atheris, libFuzzer for Python): llmds.traces.load_azure_trace.

The input goes through a real file, as load_azure_trace reads traces: the first byte picks how,
0 a plain CSV, 1 the rest gzipped into a .csv.gz (the package's own trace copies are gzipped),
2 the rest as the bytes of a .csv.gz (a corrupt or truncated gzip file). A refusal is a
ValueError (UnicodeDecodeError included), KeyError or OSError (gzip.BadGzipFile included), as
the parser documents; anything else escapes and atheris reports it with the input. A trace that
loads must mean what AzureTrace says: arrivals finite, non-decreasing, from 0; token counts
non-negative int64; one row per request.

The module under test is python/llmds/traces.py of this checkout, loaded by path; the compiled
llmds package it imports (its Mooncake reader) must be importable.

    python3 tests/fuzz/fuzz_azure_trace.py build/fuzz/corpus/fuzz_azure_trace -max_total_time=60
"""

from __future__ import annotations

import atexit
import gzip
import importlib.util
import os
import shutil
import sys
import tempfile
from pathlib import Path

import atheris
import numpy as np

_SOURCE = Path(__file__).resolve().parents[2] / "python" / "llmds" / "traces.py"
_spec = importlib.util.spec_from_file_location("llmds_traces_under_test", _SOURCE)
traces = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = traces  # dataclasses look their module up there
_spec.loader.exec_module(traces)

EXPECTED = (ValueError, KeyError, OSError)
_DIR = tempfile.mkdtemp(prefix="llmds-fuzz-azure-")
atexit.register(shutil.rmtree, _DIR, ignore_errors=True)
_PLAIN = os.path.join(_DIR, "trace.csv")
_GZIP = os.path.join(_DIR, "trace.csv.gz")


def check(trace: traces.AzureTrace) -> None:
    n = len(trace)
    assert n >= 1
    assert trace.arrival_s.shape == trace.prompt_tokens.shape == trace.output_tokens.shape == (n,)
    assert trace.prompt_tokens.dtype == np.int64 and trace.output_tokens.dtype == np.int64
    assert np.all(np.isfinite(trace.arrival_s)), trace.arrival_s
    assert trace.arrival_s[0] == 0.0
    assert np.all(np.diff(trace.arrival_s) >= 0), trace.arrival_s
    assert np.all(trace.prompt_tokens >= 0) and np.all(trace.output_tokens >= 0)
    assert trace.name in ("trace", "trace.csv")  # Path.stem of trace.csv / trace.csv.gz
    assert np.isfinite(trace.duration_s)


def TestOneInput(data: bytes) -> None:
    if not data:
        return
    mode, body = data[0] % 3, data[1:]
    if mode == 0:
        path, content = _PLAIN, body
    elif mode == 1:
        path, content = _GZIP, gzip.compress(body, mtime=0)
    else:
        path, content = _GZIP, body
    with open(path, "wb") as f:
        f.write(content)
    try:
        trace = traces.load_azure_trace(path)
    except EXPECTED:
        return
    check(trace)


def main() -> None:
    # Coverage of every Python function loaded so far, the parser's among them (it was loaded by
    # path, which instrument_imports would not see).
    atheris.instrument_all()
    atheris.Setup(sys.argv, TestOneInput)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
