"""Where the real data sets live: LLMDS_DATA_DIR, else ../shared/data from the working directory."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["data_dir", "data_file"]


def data_dir() -> Path:
    """The data folder: $LLMDS_DATA_DIR if set, otherwise ../shared/data (the project root's sibling)."""
    configured = os.environ.get("LLMDS_DATA_DIR")
    return Path(configured) if configured else Path("..", "shared", "data")


def data_file(relative: str) -> Path:
    """Path of a file in the data folder. FileNotFoundError, naming LLMDS_DATA_DIR, if absent."""
    path = data_dir() / relative
    if not path.exists():
        raise FileNotFoundError(f"{path} not found; set LLMDS_DATA_DIR to the shared data folder")
    return path
