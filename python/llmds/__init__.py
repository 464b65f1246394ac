"""llmds: the data structures LLM serving is built from.

The structures live at the module paths of the API reference::

    from llmds.indexed_heap import IndexedHeap
    from llmds.token_lru import TokenLRU
    from llmds.cmsketch import CountMinSketch
    from llmds.paged_allocator import PagedAllocator
    from llmds.kv_cache import KVCache, BlockPool
    from llmds.hnsw import HNSW
    from llmds.inverted_index import InvertedIndex
    from llmds.retrieval_pipeline import RetrievalPipeline
    from llmds.scheduler import Scheduler, ManualClock
    from llmds.admissions import AdmissionController
    from llmds.token_budget import TokenBudget
    from llmds.traces import load_mooncake_trace, load_azure_trace
    from llmds.replay import replay_prefix_cache, prefix_cache_sweep, replay_azure
    from llmds.utils import Timer, MemoryProfiler, memory_profiler
    from llmds.utils import compute_percentiles, calculate_statistics

and, for convenience, at the top level. ``python -m llmds demo`` shows them at work.
"""

from llmds._core import __version__
from llmds.admissions import AdmissionController
from llmds.cmsketch import CountMinSketch
from llmds.hnsw import HNSW
from llmds.indexed_heap import IndexedHeap
from llmds.inverted_index import InvertedIndex
from llmds.kv_cache import KVCache
from llmds.paged_allocator import PagedAllocator
from llmds.retrieval_pipeline import RetrievalPipeline
from llmds.scheduler import ManualClock, Scheduler
from llmds.token_budget import TokenBudget
from llmds.token_lru import TokenLRU

__all__ = [
    "HNSW",
    "AdmissionController",
    "CountMinSketch",
    "IndexedHeap",
    "InvertedIndex",
    "KVCache",
    "ManualClock",
    "PagedAllocator",
    "RetrievalPipeline",
    "Scheduler",
    "TokenBudget",
    "TokenLRU",
    "__version__",
]
