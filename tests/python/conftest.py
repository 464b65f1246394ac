"""Shared fixtures for the data the tests read.

``data_file`` finds a file the way the package does (llmds.data.locate): in the data folder if it
is there, else in the copies shipped inside the package (the stories260K model and tokenizer, the
Mooncake conversation trace and the Azure traces, gzipped), so a fresh clone runs those tests.
``shared_data`` is the data folder itself, for the tests that need what only it holds (the IR
collections, the reference outputs, Fashion-MNIST, the synthetic Mooncake trace).

What neither has is skipped, or failed under LLMDS_REQUIRE_DATA=1, which CI sets: there every test
must find the full data folder, and ``data_file`` insists on the folder's own copy.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import NoReturn

import pytest

from llmds.data import data_dir, locate

PROJECT_ROOT = Path(__file__).resolve().parents[2]
DATA_DIR = data_dir(PROJECT_ROOT)
"""$LLMDS_DATA_DIR, else the project root's sibling ../shared/data, wherever pytest runs from."""


def data_required() -> bool:
    return os.environ.get("LLMDS_REQUIRE_DATA") == "1"


def data_missing(message: str) -> NoReturn:
    """Skips the test, or fails it where CI requires the data."""
    if data_required():
        pytest.fail(message + "; LLMDS_REQUIRE_DATA=1 forbids skipping")
    pytest.skip(message)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The data folder."""
    if not DATA_DIR.is_dir():
        data_missing(f"needs the shared data folder {DATA_DIR} (set LLMDS_DATA_DIR)")
    return DATA_DIR


@pytest.fixture(scope="session")
def data_file() -> Callable[[str], Path]:
    """A function from a path inside the data folder ("models/stories260K.bin") to the copy the
    package would read: the folder's, else the package's own (a trace may be its .gz)."""

    def find(relative: str) -> Path:
        if data_required():
            path = DATA_DIR / relative
            if not path.exists():
                data_missing(f"needs {path}")
            return path
        try:
            return locate(relative, DATA_DIR)
        except FileNotFoundError as e:
            data_missing(str(e))

    return find


@pytest.fixture()
def data_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """LLMDS_DATA_DIR for code that finds its data itself (the examples of the docs): the data
    folder if there is one, else a folder that does not exist, so the package's own copies serve."""
    if data_required() and not DATA_DIR.is_dir():
        data_missing(f"needs the shared data folder {DATA_DIR}")
    monkeypatch.setenv("LLMDS_DATA_DIR", str(DATA_DIR))
