"""llmds.inverted_index: the documented signatures, Lucene BM25 on real collections, errors."""

from __future__ import annotations

import math
import pickle
import re
import threading
from collections import Counter

import pytest

from llmds.inverted_index import ENGLISH_STOP_WORDS, InvertedIndex, porter_stem
from llmds.ir import evaluate, load_cisi, load_cranfield
from thread_helpers import readers_and_writer


def test_defaults_follow_the_seed():
    index = InvertedIndex()
    assert (index.k1, index.b, index.stem, index.stop_words) == (1.2, 0.75, False, [])
    index.add_document(1, "Hello hello world")
    assert index.search("hello") == [(1, pytest.approx(index.score("hello", 1)))]
    assert index.get_term_frequency("hello", 1) == 2
    assert index.get_document_frequency("world") == 1
    assert index.get_document_frequency("absent") == 0
    assert len(index) == 1 and 1 in index and 2 not in index
    assert "documents=1" in repr(index)


def test_default_analyzer_is_lower_cased_ascii_alphanumeric_runs():
    index = InvertedIndex()
    assert index.analyze("Naïve, x2y: THE-end 42") == ["na", "ve", "x2y", "the", "end", "42"]
    english = InvertedIndex(stem=True, stop_words=True)
    assert english.analyze("The flows of the boundary layers") == ["flow", "boundari", "layer"]
    assert len(ENGLISH_STOP_WORDS) == 33 and "the" in ENGLISH_STOP_WORDS
    custom = InvertedIndex(stop_words=["flow"])
    assert custom.analyze("flow flows") == ["flows"]


def test_porter_stemmer_matches_porters_reference_on_the_collections(shared_data):
    """Every word of Cranfield and CISI against NLTK's Porter in MARTIN_EXTENSIONS mode, which
    NLTK documents as following Martin Porter's reference implementation."""
    nltk_porter = pytest.importorskip("nltk.stem.porter")
    reference = nltk_porter.PorterStemmer(mode=nltk_porter.PorterStemmer.MARTIN_EXTENSIONS)
    words: set[str] = set()
    for collection in (load_cranfield(shared_data / "ir"), load_cisi(shared_data / "ir")):
        for text in [*collection.documents.values(), *collection.queries.values()]:
            words.update(re.findall(r"[a-z0-9]+", text.lower()))
    assert len(words) > 13_000
    mismatches = [w for w in sorted(words) if porter_stem(w) != reference.stem(w)]
    assert mismatches == []


class Bm25FromScratch:
    """Lucene's BM25, written out from its definition: N and avgdl over documents with a term."""

    def __init__(self, docs: dict[int, list[str]], k1: float, b: float) -> None:
        self.k1, self.b = k1, b
        self.lengths = {d: len(terms) for d, terms in docs.items()}
        self.n = sum(1 for dl in self.lengths.values() if dl > 0)
        self.avgdl = sum(self.lengths.values()) / self.n
        self.postings: dict[str, dict[int, int]] = {}
        for d, terms in docs.items():
            for t, tf in Counter(terms).items():
                self.postings.setdefault(t, {})[d] = tf

    def scores(self, query: list[str]) -> dict[int, float]:
        k1, b = self.k1, self.b
        scores: dict[int, float] = {}
        for t in query:
            containing = self.postings.get(t, {})
            idf = math.log(1 + (self.n - len(containing) + 0.5) / (len(containing) + 0.5))
            for d, tf in containing.items():
                part = idf * tf * (k1 + 1) / (tf + k1 * (1 - b + b * self.lengths[d] / self.avgdl))
                scores[d] = scores.get(d, 0.0) + part
        return scores


@pytest.mark.parametrize("name", ["cranfield", "cisi"])
def test_every_score_of_every_query_is_lucene_bm25(shared_data, name):
    collection = (load_cranfield if name == "cranfield" else load_cisi)(shared_data / "ir")
    index = InvertedIndex(k1=1.2, b=0.75)
    index.add_documents(list(collection.documents), list(collection.documents.values()))
    docs = {d: re.findall(r"[a-z0-9]+", text.lower()) for d, text in collection.documents.items()}
    reference = Bm25FromScratch(docs, k1=1.2, b=0.75)
    checked = 0
    for query in collection.queries.values():
        want = reference.scores(re.findall(r"[a-z0-9]+", query.lower()))
        got = index.search_exhaustive(query, top_k=len(docs))
        assert len(got) == len(want)
        for doc_id, score in got:
            assert score == pytest.approx(want[doc_id], rel=1e-5)
        # Block-max MaxScore returns exactly the exhaustive top 10.
        assert index.search(query, top_k=10) == got[:10]
        checked += len(got)
    assert checked > 100_000


REFERENCE = {  # Xapian BM25 k1=1.2, b=0.75, stemmed, stop words removed (the data folder's ir/README.md)
    "cranfield": {"MAP": 0.294, "nDCG@10": 0.373},
    "cisi": {"MAP": 0.215, "nDCG@10": 0.373},
}


@pytest.mark.parametrize("name", ["cranfield", "cisi"])
def test_map_and_ndcg_reach_the_reference(shared_data, name):
    collection = (load_cranfield if name == "cranfield" else load_cisi)(shared_data / "ir")
    index = InvertedIndex(k1=1.2, b=0.75, stem=True, stop_words=True)
    index.add_documents(list(collection.documents), list(collection.documents.values()))
    runs = {q: [d for d, _ in index.search(text, top_k=1000)] for q, text in collection.queries.items()}
    metrics = evaluate(runs, collection.qrels)
    for metric, reference in REFERENCE[name].items():
        assert metrics[metric] >= reference - 0.01, (metric, metrics[metric], reference)


def test_removal_changes_the_statistics_at_once():
    index = InvertedIndex()
    index.add_documents([1, 2, 3], ["common rare", "common", "common other words"])
    index.remove_document(1)
    fresh = InvertedIndex()
    fresh.add_documents([2, 3], ["common", "common other words"])
    assert index.search("common rare other") == fresh.search("common rare other")
    assert index.get_document_frequency("rare") == 0
    with pytest.raises(KeyError):
        index.remove_document(1)
    with pytest.raises(KeyError):
        index.get_term_frequency("common", 1)


def test_errors_leave_the_index_unchanged():
    index = InvertedIndex()
    index.add_document(1, "alpha beta")
    before = pickle.dumps(index)
    with pytest.raises(ValueError, match="already indexed"):
        index.add_document(1, "gamma")
    with pytest.raises(ValueError, match="nothing was added"):
        index.add_documents([5, 5], ["x", "y"])
    with pytest.raises(ValueError):
        index.add_documents([6], ["x", "y"])
    with pytest.raises(ValueError, match="top_k"):
        index.search("alpha", top_k=0)
    with pytest.raises(ValueError):
        index.get_term_frequency("alpha beta", 1)
    with pytest.raises(KeyError):
        index.document_length(9)
    with pytest.raises(TypeError):
        index.add_document("one", "text")
    assert pickle.dumps(index) == before
    assert 5 not in index and 6 not in index
    for bad in ({"k1": -1.0}, {"b": 2.0}, {"k1": float("nan")}, {"stop_words": "the"}, {"stop_words": ["two words"]}):
        with pytest.raises(ValueError):
            InvertedIndex(**bad)


def test_save_load_pickle_and_damage(tmp_path):
    index = InvertedIndex(k1=0.9, b=0.4, stem=True, stop_words=True)
    index.add_documents(list(range(200)), [f"flows of boundary layers {i % 7} number {i}" for i in range(200)])
    index.remove_document(3)
    path = tmp_path / "index.llmds"
    index.save(path)
    loaded = InvertedIndex.load(path)
    assert (loaded.k1, loaded.b, loaded.stem, loaded.stop_words) == (0.9, 0.4, True, list(ENGLISH_STOP_WORDS))
    assert loaded.search("boundary flow 3", 20) == index.search("boundary flow 3", 20)
    assert pickle.loads(pickle.dumps(index)).document_ids() == index.document_ids()
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x10
    path.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="corrupted"):
        InvertedIndex.load(path)
    with pytest.raises(OSError):
        InvertedIndex.load(tmp_path / "missing")


def test_batch_search_and_threads_agree_with_single_calls(shared_data):
    collection = load_cranfield(shared_data / "ir")
    index = InvertedIndex(stem=True, stop_words=True)
    index.add_documents(list(collection.documents), list(collection.documents.values()))
    queries = list(collection.queries.values())
    single = [index.search(q, 10) for q in queries]
    assert index.search_batch(queries, top_k=10, num_threads=2) == single
    results: list[list] = [None] * len(queries)  # type: ignore[list-item]

    def work(start: int) -> None:
        for i in range(start, len(queries), 4):
            results[i] = index.search(queries[i], 10)

    threads = [threading.Thread(target=work, args=(s,)) for s in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == single
    stats = index.stats()
    assert stats["num_documents"] == 1400 and stats["scored_documents"] == 1398
    assert 4 < stats["bits_per_posting"] < 24


def test_changes_get_their_turn_between_searches_from_other_threads():
    index = InvertedIndex()
    index.add_documents(list(range(300)), [f"common word{i % 37} text{i}" for i in range(300)])
    def search() -> None:
        index.search("common word3", 5)
        index.score("common", 1)

    def change() -> None:
        for i in range(300, 1300):
            index.add_document(i, f"common word{i % 37} text{i}")
            if i % 100 == 0:
                index.remove_document(i)

    readers_and_writer(search, change)
    assert len(index.document_ids()) == 1300 - 10
    assert index.get_document_frequency("common") == 1290
