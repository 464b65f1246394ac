"""``python -m llmds bench``: llmds beside its peers, in one run, written to docs/benchmarks.md.

Every comparison runs the peer library in the same process on the same data and states ratios
next to absolute figures:

* HNSW against hnswlib, USearch and FAISS on Fashion-MNIST (``llmds.benchmarks.hnsw``): build
  time, size, recall@10 against queries per second;
* HNSW recall after rounds of deletes and slot-reusing adds, against hnswlib and a fresh build
  (``llmds.benchmarks.hnsw_churn``);
* BM25 against bm25s, rank_bm25 and tantivy on Cranfield and CISI (``llmds.benchmarks.bm25``):
  build, queries per second, agreement of the top 10, retrieval quality;
* count-min updates and error against Apache DataSketches (``llmds.benchmarks.cmsketch``);
* the prefix cache's hit rate against capacity on the Mooncake traces, beside the reference
  figures of a widely used serving engine's block pool (the shared data's traces/README.md);
* the tiered KV cache's hit rate by tier on the same traces, against one tier of the summed size
  and an unlimited cache, and its data paths against their limits (``llmds.benchmarks.kv_tiers``);
* scheduler latency distributions on the Azure traces (FCFS, maximal batching, llmds);
* engine tokens per second, one sequence and 16 at once;
* the Google Benchmark suites' JSON, when ``cmake --build build/cpp --target run_benchmarks`` has
  written it.

Two more benchmarks here run on their own, not in that report, for what they need:
``llmds.benchmarks.hybrid_minilm`` (the hybrid pipeline's retrieval quality with real MiniLM
embeddings; needs torch) and ``llmds/benchmarks/xapian_reference.py`` (the IR reference figures
reproduced with Xapian; runs under Debian's python3). The runner is llmds.benchmarks.runner.

Nothing is installed by this command: ``pip install .[bench]`` brings the peers and matplotlib. A
peer that is missing is named in the report, and its columns are left out.
"""

from llmds.benchmarks.runner import SECTIONS as SECTIONS  # documented in llmds.benchmarks.runner
from llmds.benchmarks.runner import run

__all__ = ["run"]
