"""Where the real data sets live ($LLMDS_DATA_DIR, else ../shared/data beside the project root),
and readers for the vector formats they come in (IDX images and labels, TEXMEX .fvecs/.ivecs)."""

from __future__ import annotations

import gzip
import os
import struct
from pathlib import Path

import numpy as np

__all__ = ["data_dir", "read_fvecs", "read_idx_images", "read_idx_labels", "read_ivecs"]


def data_dir(project_root: Path | None = None) -> Path:
    """$LLMDS_DATA_DIR if set, otherwise ``<project_root>/../shared/data``.

    project_root defaults to the working directory, as when a command runs from the project root.
    """
    configured = os.environ.get("LLMDS_DATA_DIR")
    if configured:
        return Path(configured)
    return (project_root or Path.cwd()).parent / "shared" / "data"


def _read_idx(path: Path, magic: int, header: str, n: int | None) -> tuple[tuple[int, ...], np.ndarray]:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        raw = f.read()
    size = struct.calcsize(header)
    fields = struct.unpack(header, raw[:size]) if len(raw) >= size else (None,)
    if fields[0] != magic:
        raise ValueError(f"{path}: not an IDX file with magic {magic}")
    count = fields[1] if n is None else min(n, fields[1])
    return fields[1:], np.frombuffer(raw, dtype=np.uint8, offset=size, count=count * int(np.prod(fields[2:], dtype=np.int64)))


def read_idx_images(path: Path, n: int | None = None) -> np.ndarray:
    """The first n images (all by default) of an IDX image file (.gz or raw) as (n, rows*cols) uint8."""
    dims, pixels = _read_idx(Path(path), 2051, ">IIII", n)
    return pixels.reshape(-1, dims[1] * dims[2])


def read_idx_labels(path: Path, n: int | None = None) -> np.ndarray:
    """The first n labels (all by default) of an IDX label file (.gz or raw) as uint8."""
    return _read_idx(Path(path), 2049, ">II", n)[1]


def _read_vecs(path: Path, dtype: type) -> np.ndarray:
    raw = np.fromfile(path, dtype=np.int32)
    if raw.size == 0:
        return np.empty((0, 0), dtype=dtype)
    d = int(raw[0])
    if d <= 0 or raw.size % (d + 1) != 0:
        raise ValueError(f"{path}: not a .{np.dtype(dtype).kind}vecs file of equal-length records")
    return raw.reshape(-1, d + 1)[:, 1:].view(dtype)


def read_ivecs(path: Path) -> np.ndarray:
    """A TEXMEX .ivecs file as an (n, d) int32 array."""
    return _read_vecs(Path(path), np.int32)


def read_fvecs(path: Path) -> np.ndarray:
    """A TEXMEX .fvecs file as an (n, d) float32 array."""
    return _read_vecs(Path(path), np.float32)
