"""Shared fixtures: the real data folder, skipped (or, under LLMDS_REQUIRE_DATA=1, failed) when absent."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from llmds.data import data_dir

PROJECT_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """$LLMDS_DATA_DIR, else the project root's sibling ../shared/data, wherever pytest runs from.

    CI sets LLMDS_REQUIRE_DATA=1 so that a missing folder fails there instead of skipping.
    """
    path = data_dir(PROJECT_ROOT)
    if not path.is_dir():
        message = f"needs the shared data folder {path} (set LLMDS_DATA_DIR)"
        if os.environ.get("LLMDS_REQUIRE_DATA") == "1":
            pytest.fail(message + "; LLMDS_REQUIRE_DATA=1 forbids skipping")
        pytest.skip(message)
    return path
