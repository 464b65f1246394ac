"""Classic IR test collections (Cranfield, CISI) and trec_eval-style ranking metrics.

Pure Python, no compiled code and no numpy: importing this module needs nothing from
``llmds._core``. The collections are read from the shared data folder (``<data>/ir``, see its
``README.md``); on a machine without it, ``load_debian_packages`` gives a real collection without
judgments (the descriptions of the Debian archive's packages)::

    from llmds.ir import evaluate, load_collection

    cran = load_collection("cranfield")          # binary relevance (Cleverdon codes 1-4)
    runs = {qid: my_ranker(text) for qid, text in cran.queries.items()}
    print(evaluate(runs, cran.qrels))            # {'MAP': ..., 'nDCG@10': ..., 'P@10': ..., 'R@100': ...}

Conventions, which reproduce the README's reference BM25 table (Xapian 1.4.22) exactly:

* A document's indexed text is its title and abstract joined by a newline (``.T`` + ``\\n`` +
  ``.W``); authors, bibliographic notes, CISI's ``.K``/``.C`` and the ``.X`` citation triples are
  left out. Cranfield's abstract repeats the title, so its title words count twice, as in the
  reference. Cranfield documents 471 and 995 are empty (``""``).
* A query's text is likewise its title and ``.W`` text: only 55 CISI queries (ids 58..112, which
  are document abstracts) have a ``.T``; their ``.A``/``.B`` are left out. Cranfield queries are
  numbered by their position 1..225 in ``cran.qry`` (the ``.I`` numbers there skip: 001, 002,
  004, ..., 365), which is how ``cranqrel`` refers to them.
* Texts keep their case and punctuation; the reference search lowercases a query and parses it
  with no QueryParser features (``parse_query(text.lower(), 0)``), see
  ``llmds/benchmarks/xapian_reference.py``.
* Cranfield relevance codes: 1 complete answer, 2 high, 3 useful background, 4 minimum interest,
  -1 no interest. Binary: codes 1-4 are relevant (gain 1). Graded: gain ``5 - code``. ``-1`` rows
  are not relevant but still mark the query as judged.
* CISI's ``CISI.REL`` is binary; only 76 of the 112 queries are judged.
* Metrics follow trec_eval: a run is cut at ``depth``; AP divides by all relevant documents;
  P@k divides by k even when fewer were retrieved; nDCG@k uses linear gain and a
  ``log2(rank + 1)`` discount, the ideal ranking being all judged gains sorted; averages are over
  the judged queries, a judged query without a run scoring 0.
"""

from __future__ import annotations

import itertools
import math
import re
import subprocess
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from llmds.progress import Progress

__all__ = [
    "IRCollection",
    "average_precision",
    "evaluate",
    "load_cisi",
    "load_collection",
    "load_cranfield",
    "load_debian_packages",
    "ndcg_at",
    "precision_at",
    "recall_at",
]

COLLECTIONS = ("cranfield", "cranfield-graded", "cisi")

# A SMART field marker: ".I 12", ".T", ".W" ... alone on its line (CISI has some with trailing spaces).
_MARKER = re.compile(r"^\.([A-Z])(?:\s+(\S+))?\s*$")


@dataclass(frozen=True)
class IRCollection:
    """A test collection: documents, queries, and the relevant documents of each judged query.

    ``qrels`` maps query id -> doc id -> gain and holds only relevant documents (gain > 0); a
    query judged with nothing relevant would map to an empty dict. Query ids are the ones the
    relevance judgments use.
    """

    name: str
    documents: dict[int, str]
    queries: dict[int, str]
    qrels: dict[int, dict[int, int]]

    @property
    def judged_query_ids(self) -> list[int]:
        """The ids of the queries that have relevance judgments, ascending."""
        return sorted(self.qrels)

    def __repr__(self) -> str:
        return (
            f"IRCollection(name={self.name!r}, documents={len(self.documents)}, "
            f"queries={len(self.queries)}, judged={len(self.qrels)})"
        )


# --------------------------------------------------------------------------- parsing


def _read_lines(path: Path) -> list[str]:
    """The file's lines without line terminators (CRLF or LF); FileNotFoundError names the file."""
    if not path.is_file():
        raise FileNotFoundError(f"IR collection file not found: {path}")
    with path.open(encoding="ascii", errors="strict", newline="") as handle:
        text = handle.read()
    return text.replace("\r\n", "\n").replace("\r", "\n").split("\n")


def _parse_smart(path: Path) -> list[tuple[int, dict[str, str]]]:
    """Records of a SMART file as (``.I`` id, {field letter: text}), in file order.

    Each field's text is its lines joined by newlines, stripped. A marker that repeats within a
    record continues that field (Cranfield 578 has two ``.W``; Cranfield 240 has stray ``.A``/``.B``
    lines inside its abstract, which a SMART reader takes for markers).
    """
    records: list[tuple[int, dict[str, list[str]]]] = []
    seen: set[int] = set()
    field: str | None = None
    for number, line in enumerate(_read_lines(path), start=1):
        match = _MARKER.match(line)
        if match and match.group(1) == "I":
            value = match.group(2)
            if value is None or not value.isdigit():
                raise ValueError(f"{path}:{number}: malformed record id line {line!r}")
            record_id = int(value)
            if record_id in seen:
                raise ValueError(f"{path}:{number}: duplicate record id {record_id}")
            seen.add(record_id)
            records.append((record_id, {}))
            field = None
        elif match:
            if match.group(2) is not None:
                raise ValueError(f"{path}:{number}: malformed field marker {line!r}")
            if not records:
                raise ValueError(f"{path}:{number}: field marker {line!r} before the first .I record")
            field = match.group(1)
            records[-1][1].setdefault(field, [])
        elif not records or field is None:
            if line.strip():
                raise ValueError(f"{path}:{number}: text outside a record field: {line!r}")
        else:
            records[-1][1][field].append(line)
    return [(rid, {f: "\n".join(lines).strip() for f, lines in fields.items()}) for rid, fields in records]


def _title_abstract(fields: Mapping[str, str]) -> str:
    """The text of a document or query: title, newline, ``.W`` text (empty parts left out)."""
    return "\n".join(part for part in (fields.get("T", ""), fields.get("W", "")) if part)


def _parse_qrels(
    path: Path, gain_of: dict[str, int | None], queries: Mapping[int, str], documents: Mapping[int, str]
) -> dict[int, dict[int, int]]:
    """``qid docid code ...`` lines -> {qid: {docid: gain}}; a code mapping to None judges, not relevant."""
    qrels: dict[int, dict[int, int]] = {}
    for number, line in enumerate(_read_lines(path), start=1):
        parts = line.split()
        if not parts:
            continue
        if len(parts) < 3 or not parts[0].isdigit() or not parts[1].isdigit():
            raise ValueError(f"{path}:{number}: malformed judgment line {line!r}")
        query_id, doc_id, code = int(parts[0]), int(parts[1]), parts[2]
        if code not in gain_of:
            raise ValueError(f"{path}:{number}: unknown relevance code {code!r} in {line!r}")
        if query_id not in queries:
            raise ValueError(f"{path}:{number}: judgment for unknown query {query_id}")
        if doc_id not in documents:
            raise ValueError(f"{path}:{number}: judgment for unknown document {doc_id}")
        judged = qrels.setdefault(query_id, {})
        gain = gain_of[code]
        if gain is not None:
            if doc_id in judged:
                raise ValueError(f"{path}:{number}: duplicate judgment for query {query_id}, doc {doc_id}")
            judged[doc_id] = gain
    return qrels


def _default_root() -> Path:
    # Imported here so that this module loads without the llmds package (whose __init__ needs
    # the compiled extension), e.g. by file path under another Python.
    from llmds.data import data_dir

    return data_dir() / "ir"


def load_cranfield(root: Path | None = None, graded: bool = False) -> IRCollection:
    """Cranfield 1400 from ``root/cranfield`` (root defaults to ``data_dir() / "ir"``).

    225 queries, ids 1..225 by position in ``cran.qry``, all judged. ``graded=False``: gain 1 for
    codes 1-4; ``graded=True``: gain ``5 - code``. Code -1 is not relevant.
    """
    folder = Path(root if root is not None else _default_root()) / "cranfield"
    documents = {rid: _title_abstract(fields) for rid, fields in _parse_smart(folder / "cran.all.1400")}
    queries = {
        position: _title_abstract(fields)
        for position, (_, fields) in enumerate(_parse_smart(folder / "cran.qry"), start=1)
    }
    gain_of: dict[str, int | None] = {"-1": None}
    for code in (1, 2, 3, 4):
        gain_of[str(code)] = 5 - code if graded else 1
    qrels = _parse_qrels(folder / "cranqrel", gain_of, queries, documents)
    name = "cranfield-graded" if graded else "cranfield"
    return IRCollection(name=name, documents=documents, queries=queries, qrels=qrels)


def load_cisi(root: Path | None = None) -> IRCollection:
    """CISI from ``root/cisi`` (root defaults to ``data_dir() / "ir"``): 1460 docs, 112 queries, 76 judged."""
    folder = Path(root if root is not None else _default_root()) / "cisi"
    documents = {rid: _title_abstract(fields) for rid, fields in _parse_smart(folder / "CISI.ALL")}
    queries = {rid: _title_abstract(fields) for rid, fields in _parse_smart(folder / "CISI.QRY")}
    qrels = _parse_qrels(folder / "CISI.REL", {"0": 1}, queries, documents)
    return IRCollection(name="cisi", documents=documents, queries=queries, qrels=qrels)


def load_collection(name: str, root: Path | None = None) -> IRCollection:
    """``"cranfield"``, ``"cranfield-graded"`` or ``"cisi"`` (case-insensitive)."""
    key = name.strip().lower()
    if key == "cranfield":
        return load_cranfield(root)
    if key == "cranfield-graded":
        return load_cranfield(root, graded=True)
    if key == "cisi":
        return load_cisi(root)
    raise ValueError(f"unknown IR collection {name!r}; expected one of {', '.join(COLLECTIONS)}")


def _debian_stanzas(lines: Iterable[str], progress: Progress | None = None) -> dict[str, str]:
    """Package name -> "name: summary" + the long description, from the lines of Debian control
    stanzas (the first stanza of a name wins; continuation lines start with a space, " ." is a
    blank line). Reads the lines as they come, counting stanzas on `progress`."""
    packages: dict[str, str] = {}
    name, description, in_description = None, [], False
    for line in itertools.chain(lines, [""]):  # an empty line ends the last stanza too
        line = line.rstrip("\n")
        if not line:
            if name and description and name not in packages:
                packages[name] = f"{name}: " + "\n".join(description)
            if name and progress is not None:
                progress.update()
            name, description, in_description = None, [], False
        elif line.startswith("Package:"):
            name = line.split(":", 1)[1].strip()
        elif line.startswith("Description:"):
            description, in_description = [line.split(":", 1)[1].strip()], True
        elif in_description and line.startswith(" "):
            description.append("" if line.strip() == "." else line.strip())
        else:
            in_description = False
    return packages


def load_debian_packages(status_file: Path = Path("/var/lib/dpkg/status")) -> tuple[IRCollection, list[str]]:
    """A real text collection every Debian machine has: the descriptions of the packages its
    archive offers (``apt-cache dumpavail``; if that lists nothing, the installed packages of
    `status_file`). Returns the collection, with no queries or judgments, and the package names
    by document id. FileNotFoundError if neither source exists. Shows progress on a terminal: the
    archive's listing takes a couple of seconds.
    """
    # Imported here: the rest of this module must load without the llmds package (see its docstring).
    from llmds.progress import Progress

    packages: dict[str, str] = {}
    with Progress(None, "reading package descriptions") as bar:
        try:
            # Read as apt-cache writes, so that the stanzas are parsed while it still lists.
            with subprocess.Popen(["apt-cache", "dumpavail"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                  encoding="utf-8", errors="replace") as apt:
                assert apt.stdout is not None
                packages = _debian_stanzas(apt.stdout, bar)
            if apt.returncode != 0:
                packages = {}
        except OSError:
            pass
        if not packages:
            if not status_file.exists():
                raise FileNotFoundError(f"no Debian package descriptions: apt-cache dumpavail gave none and {status_file} is absent")
            with status_file.open(encoding="utf-8", errors="replace") as f:
                packages = _debian_stanzas(f, bar)
    names = sorted(packages)
    documents = {i: packages[name] for i, name in enumerate(names)}
    return IRCollection(name="debian-packages", documents=documents, queries={}, qrels={}), names


# --------------------------------------------------------------------------- metrics


def _check_unique(ranking: Sequence[int]) -> None:
    if len(set(ranking)) != len(ranking):
        raise ValueError("ranking lists a document more than once")


def average_precision(ranking: Sequence[int], relevant: Mapping[int, int]) -> float:
    """Mean of the precision at each relevant document's rank, over all relevant documents.

    Relevant means gain > 0; relevant documents not retrieved contribute 0. No relevant -> 0.
    """
    _check_unique(ranking)
    total = sum(1 for gain in relevant.values() if gain > 0)
    if total == 0:
        return 0.0
    hits = 0
    precision_sum = 0.0
    for rank, doc in enumerate(ranking, start=1):
        if relevant.get(doc, 0) > 0:
            hits += 1
            precision_sum += hits / rank
    return precision_sum / total


def ndcg_at(ranking: Sequence[int], gains: Mapping[int, int], k: int = 10) -> float:
    """nDCG@k, trec_eval style: DCG = sum of gain_i / log2(i + 1) over ranks i = 1..k.

    The ideal DCG ranks all judged positive gains in decreasing order. No positive gain -> 0.
    """
    if k <= 0:
        raise ValueError(f"k must be positive, got {k}")
    _check_unique(ranking)
    dcg = sum(gains.get(doc, 0) / math.log2(rank + 1) for rank, doc in enumerate(ranking[:k], start=1))
    ideal = sorted((gain for gain in gains.values() if gain > 0), reverse=True)[:k]
    idcg = sum(gain / math.log2(rank + 1) for rank, gain in enumerate(ideal, start=1))
    return dcg / idcg if idcg > 0 else 0.0


def precision_at(ranking: Sequence[int], relevant: Mapping[int, int], k: int = 10) -> float:
    """Relevant documents among the first k, divided by k (even if fewer were retrieved)."""
    if k <= 0:
        raise ValueError(f"k must be positive, got {k}")
    _check_unique(ranking)
    return sum(1 for doc in ranking[:k] if relevant.get(doc, 0) > 0) / k


def recall_at(ranking: Sequence[int], relevant: Mapping[int, int], k: int = 100) -> float:
    """Relevant documents among the first k, divided by all relevant documents (0 if none)."""
    if k <= 0:
        raise ValueError(f"k must be positive, got {k}")
    _check_unique(ranking)
    total = sum(1 for gain in relevant.values() if gain > 0)
    if total == 0:
        return 0.0
    return sum(1 for doc in ranking[:k] if relevant.get(doc, 0) > 0) / total


def evaluate(
    runs: Mapping[int, Sequence[int]], qrels: Mapping[int, Mapping[int, int]], depth: int = 1000
) -> dict[str, float]:
    """MAP, nDCG@10, P@10 and R@100 of ``runs`` (query id -> ranked doc ids), each run cut at ``depth``.

    Averaged over the judged queries (the keys of ``qrels``); a judged query missing from ``runs``
    scores 0, runs of unjudged queries are ignored. With graded gains, MAP, P@10 and R@100 count
    gain > 0 as relevant and nDCG@10 uses the gains.
    """
    if depth <= 0:
        raise ValueError(f"depth must be positive, got {depth}")
    if not qrels:
        raise ValueError("no judged queries to evaluate")
    totals = {"MAP": 0.0, "nDCG@10": 0.0, "P@10": 0.0, "R@100": 0.0}
    for query_id, judged in qrels.items():
        ranking = list(runs.get(query_id, ()))[:depth]
        totals["MAP"] += average_precision(ranking, judged)
        totals["nDCG@10"] += ndcg_at(ranking, judged, 10)
        totals["P@10"] += precision_at(ranking, judged, 10)
        totals["R@100"] += recall_at(ranking, judged, 100)
    return {metric: total / len(qrels) for metric, total in totals.items()}
