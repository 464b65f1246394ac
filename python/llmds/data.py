"""Where the real data sets live: $LLMDS_DATA_DIR, else ../shared/data beside the project root."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["data_dir"]


def data_dir(project_root: Path | None = None) -> Path:
    """$LLMDS_DATA_DIR if set, otherwise ``<project_root>/../shared/data``.

    project_root defaults to the working directory, as when a command runs from the project root.
    """
    configured = os.environ.get("LLMDS_DATA_DIR")
    if configured:
        return Path(configured)
    return (project_root or Path.cwd()).parent / "shared" / "data"
