"""Every ```python block of the README and of the docs pages runs as shown. The README's blocks
each run in a fresh namespace; a docs page's blocks run in order in one namespace, as a reader
would type them."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def python_blocks(page: Path) -> list[str]:
    return re.findall(r"^```python\n(.*?)^```", page.read_text(), re.S | re.M)


README_BLOCKS = python_blocks(ROOT / "README.md")
# python-api.md is generated from docstrings, whose examples are fragments of a larger program.
DOC_PAGES = [page for page in PAGES[1:] if python_blocks(page) and page.name != "python-api.md"]


def test_the_readme_and_docs_have_python_examples() -> None:
    assert len(README_BLOCKS) >= 4
    assert {"kv-cache.md", "scheduling.md", "hnsw.md", "text-search.md"} <= {p.name for p in DOC_PAGES}


@pytest.mark.parametrize("index", range(len(README_BLOCKS)))
def test_readme_python_block_runs(index: int, data_env: None) -> None:
    # The engine example loads stories260K: from the data folder, else the package's own copy.
    exec(compile(README_BLOCKS[index], f"README.md python block {index}", "exec"), {"__name__": "readme"})


@pytest.mark.parametrize("page", DOC_PAGES, ids=lambda p: p.name)
def test_docs_python_blocks_run(page: Path, data_env: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # examples that save files write them here
    namespace: dict[str, object] = {"__name__": "docs"}
    for index, block in enumerate(python_blocks(page)):
        exec(compile(block, f"{page.name} python block {index}", "exec"), namespace)
