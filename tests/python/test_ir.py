"""llmds.ir: the Cranfield and CISI loaders and the trec_eval-style metrics.

The loaders' conventions are the ones that reproduce the shared data's reference BM25 table
(ir/README.md) exactly; llmds/benchmarks/xapian_reference.py checks that with Xapian.
"""

from __future__ import annotations

import math
import re
import subprocess
import sys
from collections import Counter

import pytest

import llmds.ir
from llmds.ir import (
    IRCollection,
    average_precision,
    evaluate,
    load_cisi,
    load_collection,
    load_cranfield,
    ndcg_at,
    precision_at,
    recall_at,
)

# --------------------------------------------------------------------------- loaders

CITATION = re.compile(r"^\d+\t\d+\t\d+$", re.MULTILINE)  # a CISI .X line


@pytest.fixture(scope="module")
def ir_root(shared_data):
    return shared_data / "ir"


@pytest.fixture(scope="module")
def cranfield(ir_root) -> IRCollection:
    return load_cranfield(ir_root)


@pytest.fixture(scope="module")
def cisi(ir_root) -> IRCollection:
    return load_cisi(ir_root)


def test_cranfield_counts(cranfield):
    assert cranfield.name == "cranfield"
    assert sorted(cranfield.documents) == list(range(1, 1401))
    assert sorted(cranfield.queries) == list(range(1, 226))
    assert cranfield.judged_query_ids == list(range(1, 226))
    # 1837 judgment lines: 1612 relevant (codes 1-4), one -1 ("no interest") per query.
    assert sum(len(judged) for judged in cranfield.qrels.values()) == 1612
    assert {gain for judged in cranfield.qrels.values() for gain in judged.values()} == {1}


def test_cranfield_texts(cranfield):
    assert cranfield.documents[471] == ""
    assert cranfield.documents[995] == ""
    assert sum(1 for text in cranfield.documents.values() if not text) == 2
    assert "\r" not in "".join(cranfield.documents.values()) + "".join(cranfield.queries.values())
    # Title, newline, abstract (which repeats the title); author and bibliography left out.
    first = cranfield.documents[1]
    assert first.startswith(
        "experimental investigation of the aerodynamics of a\nwing in a slipstream .\n"
        "experimental investigation of the aerodynamics of a\nwing in a slipstream ."
    )
    assert first.endswith("the specific configuration of the experiment .")
    assert "brenckman" not in first and "j. ae. scs." not in first
    # Doc 578 has two .W markers: both parts are abstract text.
    assert "compressor operation with one or more blade rows stalled" in cranfield.documents[578]
    # Doc 240 has stray .A/.B lines inside its abstract, read as markers (as the reference did).
    assert cranfield.documents[240].endswith("where air is injected into the separated region  .")


def test_cranfield_queries_are_positional(cranfield):
    # .I 001, 002, 004, 008, ...: the qrels number them 1, 2, 3, 4, ...
    assert cranfield.queries[3] == "what problems of heat conduction in composite slabs have been solved so\nfar ."
    assert cranfield.queries[225].startswith("what design factors can be used to control lift-drag")


def test_cranfield_relevance_codes(cranfield, ir_root):
    graded = load_cranfield(ir_root, graded=True)
    assert graded.name == "cranfield-graded"
    assert graded.documents == cranfield.documents and graded.queries == cranfield.queries
    # Gain 5 - code: codes 1, 2, 3, 4 occur 128, 387, 734, 363 times.
    gains = Counter(gain for judged in graded.qrels.values() for gain in judged.values())
    assert gains == {4: 128, 3: 387, 2: 734, 1: 363}
    assert graded.qrels[1][184] == 3  # "1 184 2"
    assert graded.qrels[1].keys() == cranfield.qrels[1].keys()
    assert 486 not in graded.qrels[1]  # "1 486 -1": judged, not relevant
    assert 1188 not in graded.qrels[225]  # the file's last line, "225 1188 -1" without a newline


def test_cisi_counts_and_texts(cisi):
    assert cisi.name == "cisi"
    assert sorted(cisi.documents) == list(range(1, 1461))
    assert sorted(cisi.queries) == list(range(1, 113))
    assert len(cisi.judged_query_ids) == 76
    assert sum(len(judged) for judged in cisi.qrels.values()) == 3114
    assert {gain for judged in cisi.qrels.values() for gain in judged.values()} == {1}
    first = cisi.documents[1]
    assert first.startswith("18 Editions of the Dewey Decimal Classifications\nThe present study is a history")
    assert first.endswith("librarianship in this country and abroad.")
    assert "Comaromi" not in first
    # .X citation triples (docid TAB n TAB docid) are excluded everywhere.
    assert not any(CITATION.search(text) for text in cisi.documents.values())
    assert "1024\t1\t1" not in first
    # Doc 321 alone has .K keywords and .C categories: excluded too.
    assert "bit vector" not in cisi.documents[321]


def test_cisi_queries(cisi):
    assert cisi.queries[3] == "What is information science?  Give definitions where possible."
    # Queries 58..112 carry a title (kept) and authors/bibliography (left out).
    assert cisi.queries[58].startswith("Directions in Library Networking\nBibliographic control before")
    assert "Avram" not in cisi.queries[58] and "JASIS" not in cisi.queries[58]


def test_load_collection_by_name(ir_root, cranfield):
    assert load_collection("Cranfield", ir_root).qrels == cranfield.qrels
    assert load_collection("cranfield-graded", ir_root).qrels[1][184] == 3
    assert load_collection("cisi", ir_root).name == "cisi"
    with pytest.raises(ValueError, match="unknown IR collection 'trec'"):
        load_collection("trec", ir_root)


def test_collection_is_frozen(cisi):
    with pytest.raises(AttributeError):
        cisi.name = "other"  # type: ignore[misc]


# --------------------------------------------------------------------------- errors


def write_cranfield(folder, docs="", queries="", qrels=""):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "cran.all.1400").write_text(docs)
    (folder / "cran.qry").write_text(queries)
    (folder / "cranqrel").write_text(qrels)


GOOD_DOCS = ".I 1\r\n.T\r\nwings .\r\n.A\r\nx\r\n.B\r\ny\r\n.W\r\nwings .\r\nlift .\r\n.I 2\r\n.T\r\n.W\r\n"
GOOD_QUERIES = ".I 007\r\n.W\r\nlift of wings .\r\n"


def test_small_cranfield_folder(tmp_path):
    write_cranfield(tmp_path / "cranfield", GOOD_DOCS, GOOD_QUERIES, "1 1 2 \r\n1 2 -1 ")
    collection = load_cranfield(tmp_path)
    assert collection.documents == {1: "wings .\nwings .\nlift .", 2: ""}
    assert collection.queries == {1: "lift of wings ."}
    assert collection.qrels == {1: {1: 1}}
    assert load_cranfield(tmp_path, graded=True).qrels == {1: {1: 3}}


def test_missing_file_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="cran.all.1400"):
        load_cranfield(tmp_path)
    (tmp_path / "cisi").mkdir()
    with pytest.raises(FileNotFoundError, match="CISI.ALL"):
        load_cisi(tmp_path)


@pytest.mark.parametrize(
    ("docs", "qrels", "where", "what"),
    [
        (".I 1\n.W\nok\n.I two\n.W\nbad\n", "1 1 1\n", "cran.all.1400:4", "malformed record id"),
        ("stray text\n.I 1\n.W\nok\n", "1 1 1\n", "cran.all.1400:1", "outside a record"),
        (".I 1\n.W\nok\n.I 1\n.W\nagain\n", "1 1 1\n", "cran.all.1400:4", "duplicate record id 1"),
        (".I 1\n.W\nok\n", "1 1 1\n1 x 1\n", "cranqrel:2", "malformed judgment"),
        (".I 1\n.W\nok\n", "1 1 7\n", "cranqrel:1", "unknown relevance code '7'"),
        (".I 1\n.W\nok\n", "1 9 1\n", "cranqrel:1", "unknown document 9"),
        (".I 1\n.W\nok\n", "\n2 1 1\n", "cranqrel:2", "unknown query 2"),
    ],
)
def test_malformed_records_name_file_and_line(tmp_path, docs, qrels, where, what):
    write_cranfield(tmp_path / "cranfield", docs, ".I 1\n.W\nq\n", qrels)
    with pytest.raises(ValueError, match=what) as info:
        load_cranfield(tmp_path)
    assert where in str(info.value)


# --------------------------------------------------------------------------- metrics


def test_average_precision_by_hand():
    # Relevant at ranks 2 and 4, a third relevant document never retrieved: (1/2 + 2/4) / 3.
    assert average_precision([1, 2, 3, 4, 5], {2: 1, 4: 1, 9: 1}) == pytest.approx(1 / 3)
    assert average_precision([2, 4], {2: 1, 4: 1}) == 1.0
    # Graded gains count as relevant when > 0.
    assert average_precision([7, 2], {2: 3, 7: 0}) == pytest.approx(0.5)


def test_ndcg_by_hand():
    # One relevant document at rank 2: 1 / log2(3).
    assert ndcg_at([5, 6, 7], {6: 1}) == pytest.approx(1 / math.log2(3))
    assert ndcg_at([5, 6, 7], {6: 1}) == pytest.approx(0.6309297535714575)
    # Graded: ranking 2, 4, 1 with gains {1: 3, 2: 2, 5: 1}.
    dcg = 2 / 1 + 0 / math.log2(3) + 3 / 2
    idcg = 3 / 1 + 2 / math.log2(3) + 1 / 2
    assert ndcg_at([2, 4, 1], {1: 3, 2: 2, 5: 1}) == pytest.approx(dcg / idcg)
    assert ndcg_at([2, 4, 1], {1: 3, 2: 2, 5: 1}) == pytest.approx(0.7350070, abs=1e-7)
    # The cutoff applies to the ranking and to the ideal list alike.
    assert ndcg_at([9, 1], {1: 1}, k=1) == 0.0
    assert ndcg_at([1, 9], {1: 1, 2: 1, 3: 1}, k=1) == 1.0
    assert ndcg_at([1, 2, 3], {1: 1}, k=3) == 1.0


def test_precision_and_recall_by_hand():
    assert precision_at([1, 2, 3], {1: 1, 3: 1}, k=2) == 0.5
    assert precision_at([1], {1: 1}, k=10) == pytest.approx(0.1)  # divides by k, like trec_eval
    assert recall_at([1, 2, 3], {1: 1, 3: 1, 8: 1, 9: 1}, k=2) == 0.25
    assert recall_at([1, 2, 3], {1: 1, 3: 1, 8: 1, 9: 1}, k=100) == 0.5


def test_query_with_no_relevant_retrieved_scores_zero():
    ranking = [10, 11, 12]
    judged = {1: 1, 2: 2}
    assert average_precision(ranking, judged) == 0.0
    assert ndcg_at(ranking, judged) == 0.0
    assert precision_at(ranking, judged) == 0.0
    assert recall_at(ranking, judged) == 0.0
    # Nothing relevant at all: 0, not a division by zero.
    assert average_precision(ranking, {}) == 0.0
    assert ndcg_at(ranking, {}) == 0.0
    assert recall_at(ranking, {}) == 0.0


def test_metrics_reject_bad_input():
    with pytest.raises(ValueError, match="more than once"):
        average_precision([1, 2, 1], {1: 1})
    with pytest.raises(ValueError, match="k must be positive"):
        ndcg_at([1], {1: 1}, k=0)
    with pytest.raises(ValueError, match="no judged queries"):
        evaluate({1: [1]}, {})
    with pytest.raises(ValueError, match="depth must be positive"):
        evaluate({1: [1]}, {1: {1: 1}}, depth=0)


def test_evaluate_averages_over_judged_queries():
    qrels = {1: {1: 1}, 2: {5: 1, 6: 1}, 3: {9: 1}}
    runs = {
        1: [1, 2],  # AP 1
        2: [5, 7, 6],  # AP (1 + 2/3) / 2
        # query 3 judged but without a run: scores 0
        4: [1],  # unjudged: ignored
    }
    scores = evaluate(runs, qrels)
    assert set(scores) == {"MAP", "nDCG@10", "P@10", "R@100"}
    assert scores["MAP"] == pytest.approx((1 + (1 + 2 / 3) / 2 + 0) / 3)
    assert scores["P@10"] == pytest.approx((0.1 + 0.2 + 0) / 3)
    assert scores["R@100"] == pytest.approx((1 + 1 + 0) / 3)
    idcg2 = 1 + 1 / math.log2(3)
    assert scores["nDCG@10"] == pytest.approx((1 + (1 + 1 / math.log2(4)) / idcg2 + 0) / 3)
    # The depth cuts each run before scoring: query 2's second hit (rank 3) drops out.
    assert evaluate(runs, qrels, depth=2)["MAP"] == pytest.approx((1 + 1 / 2 + 0) / 3)


def test_module_needs_no_compiled_extension():
    # Loaded by file path with llmds._core unimportable, as llmds/benchmarks/xapian_reference.py does.
    code = (
        "import importlib.util, sys\n"
        "sys.modules['llmds._core'] = None\n"
        "sys.modules['numpy'] = None\n"
        f"spec = importlib.util.spec_from_file_location('ir_alone', {llmds.ir.__file__!r})\n"
        "module = importlib.util.module_from_spec(spec)\n"
        "sys.modules['ir_alone'] = module\n"
        "spec.loader.exec_module(module)\n"
        "print(module.average_precision([1, 2], {2: 1}))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "0.5"
