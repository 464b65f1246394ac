"""Where the real data sets live, and readers for the vector formats they come in (IDX images and
labels, TEXMEX .fvecs/.ivecs).

The full data folder is $LLMDS_DATA_DIR, else ../shared/data beside the project root. A machine
without it still has real data: the package ships the small files the demo needs (the stories260K
model and tokenizer, the Mooncake conversation trace and the Azure 2023 traces, gzipped; see
``llmds/datasets/README.md`` for their sources and licences), and Debian's package
``dataset-fashion-mnist`` provides Fashion-MNIST. ``locate`` looks in that order."""

from __future__ import annotations

import gzip
import os
import struct
from pathlib import Path
from typing import IO

import numpy as np

__all__ = ["BUNDLED_DIR", "DEBIAN_DATASETS_DIR", "data_dir", "locate", "open_text", "read_fvecs", "read_idx_images", "read_idx_labels", "read_ivecs"]


def data_dir(project_root: Path | None = None) -> Path:
    """$LLMDS_DATA_DIR if set, otherwise ``<project_root>/../shared/data``.

    project_root defaults to the working directory, as when a command runs from the project root.
    """
    configured = os.environ.get("LLMDS_DATA_DIR")
    if configured:
        return Path(configured)
    return (project_root or Path.cwd()).parent / "shared" / "data"


BUNDLED_DIR = Path(__file__).resolve().parent / "datasets"
"""The real data shipped inside the package (small files only)."""

DEBIAN_DATASETS_DIR = Path("/usr/share/datasets")
"""Where Debian's dataset packages install (``dataset-fashion-mnist`` as ``fashion-mnist/``)."""


def locate(relative: str | Path, data: str | Path | None = None) -> Path:
    """The first existing copy of a data file or folder, by its path inside the data folder
    (``"models/stories260K.bin"``, ``"traces/azure_llm_2023_conv.csv"``, ``"ann/fashion-mnist"``).

    Looks in `data` (default: ``data_dir()``), then in the package's own data, where a file may be
    gzipped (``<relative>.gz``, which the trace readers take as it is), then for ``ann/<name>`` in
    Debian's ``/usr/share/datasets/<name>``. FileNotFoundError lists every place it looked.
    """
    relative = Path(relative)
    folder = Path(data) if data is not None else data_dir()
    candidates = [folder / relative, BUNDLED_DIR / relative, BUNDLED_DIR / f"{relative}.gz"]
    if relative.parts[:1] == ("ann",) and len(relative.parts) > 1:
        candidates.append(DEBIAN_DATASETS_DIR.joinpath(*relative.parts[1:]))
    for path in candidates:
        if path.exists():
            return path
    raise FileNotFoundError(
        f"{relative} not found; looked in: {', '.join(map(str, candidates))} "
        "(set LLMDS_DATA_DIR to the data folder, or install Debian's dataset-fashion-mnist for ann/fashion-mnist)"
    )


def open_text(path: str | Path) -> IO[str]:
    """A text file opened for reading (UTF-8, newlines kept as they are), gunzipped on the fly when
    its name ends in ``.gz``, as the copies of the traces inside the package are."""
    path = Path(path)
    if path.suffix == ".gz":
        return gzip.open(path, "rt", encoding="utf-8", newline="")
    return path.open(encoding="utf-8", newline="")


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
