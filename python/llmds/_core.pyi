"""Type stubs for llmds._core, the compiled core of llmds (bindings in python/src/*.cpp).

Hand-written; tests/python/test_stubs.py checks them against the runtime module.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Hashable, Iterable, Sequence
from typing import Any, Generic, TypedDict, TypeVar

import numpy
from numpy.typing import ArrayLike, NDArray

__version__: str
"""The version of the compiled library, "major.minor.patch" (include/llmds/version.hpp)."""

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")

# A CountMinSketch item: a str counts as its UTF-8 bytes, so "abc" and b"abc" are one item.
Item = str | bytes

class Percentiles(TypedDict):
    """The result of compute_percentiles."""

    p50: float
    p95: float
    p99: float

class Statistics(TypedDict):
    """The result of calculate_statistics."""

    mean: float
    std: float
    min: float
    max: float
    p50: float
    p95: float
    p99: float
    ci_lower: float
    ci_upper: float
    cv: float
    count: int

class HNSWStats(TypedDict):
    num_vectors: int
    num_deleted: int
    capacity: int
    num_layers: int
    entry_point: int | None
    edges: int
    memory_bytes: int
    dim: int
    M: int
    ef_construction: int
    ef_search: int
    metric: str
    simd: str

class HNSW:
    """Approximate nearest-neighbour search on a Hierarchical Navigable Small World graph."""

    def __init__(
        self,
        dim: int,
        M: int = 16,
        ef_construction: int = 200,
        ef_search: int = 50,
        ml: float = 1.4426950408889634,
        seed: int | None = None,
        metric: str = "l2",
        initial_capacity: int = 1024,
    ) -> None: ...
    def add(self, vec: ArrayLike, vec_id: int, replace_deleted: bool = False) -> None:
        """Add one vector; ValueError (nothing added) for a wrong shape, NaN/inf or a duplicate id.
        With replace_deleted it takes a deleted vector's slot, and that slot's old neighbours choose
        their links again. MemoryError leaves the index as it was."""
    def add_batch(
        self, vectors: ArrayLike, ids: Sequence[int], num_threads: int = 1, replace_deleted: bool = False
    ) -> None:
        """Add rows of a 2-D array under ids on num_threads threads (0: all cores); all or nothing
        (checked before any is added; if memory runs out partway, the rows added so far stay)."""
    def search(
        self,
        query: ArrayLike,
        k: int,
        ef: int | None = None,
        filter: Iterable[int] | Callable[[int], bool] | None = None,
    ) -> list[tuple[int, float]]:
        """The k nearest (vec_id, distance) pairs, nearest first."""
    def search_batch(
        self,
        queries: ArrayLike,
        k: int,
        ef: int | None = None,
        num_threads: int = 1,
        filter: Iterable[int] | None = None,
    ) -> tuple[NDArray[numpy.int64], NDArray[numpy.float32]]:
        """Search each row; (ids (n, k), distances (n, k)), padded with -1 and inf."""
    def mark_deleted(self, vec_id: int) -> None:
        """Exclude an id from results (KeyError if unknown)."""
    def unmark_deleted(self, vec_id: int) -> None:
        """Make a deleted id searchable again; KeyError if unknown, ValueError if it is not deleted."""
    def is_deleted(self, vec_id: int) -> bool:
        """Whether vec_id is marked deleted; KeyError if the index has no such id."""
    def get_vector(self, vec_id: int) -> NDArray[numpy.float32]:
        """The stored vector (normalised under cosine)."""
    def stats(self) -> HNSWStats:
        """Vector, deleted, layer and edge counts, capacity, entry point, memory in bytes, the parameters
        and the SIMD distance kernels in use."""
    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the index to path (replaced whole or not at all); OSError if it cannot be written."""
    @staticmethod
    def load(path: str | os.PathLike[str]) -> HNSW:
        """An index saved by save(); ValueError if the file is damaged."""
    @property
    def ef_search(self) -> int:
        """Candidate list size of a search without ef (default 50; at least k is used); settable, >= 1."""
    @ef_search.setter
    def ef_search(self, value: int) -> None: ...
    @property
    def dim(self) -> int:
        """Dimension of the vectors."""
    @property
    def metric(self) -> str:
        """'l2' (squared Euclidean), 'ip' (1 - dot) or 'cosine' (1 - cosine similarity)."""
    def __len__(self) -> int: ...
    def __contains__(self, vec_id: int, /) -> bool: ...

class IndexedHeap:
    """Binary heap of (score, key_id) entries, addressable by key_id."""

    def __init__(self, max_heap: bool = False) -> None:
        """A min-heap, or a max-heap with max_heap=True; ties pop the smaller key_id first."""
    def push(self, key_id: int, score: float) -> None:
        """Add key_id with score. ValueError if key_id is present or score is NaN."""
    def pop(self) -> tuple[float, int]:
        """Remove and return the top (score, key_id). IndexError if empty."""
    def peek(self) -> tuple[float, int] | None:
        """The top (score, key_id) without removing it, or None if empty."""
    def decrease_key(self, key_id: int, new_score: float) -> None:
        """Lower the score. KeyError if absent, ValueError if new_score is greater."""
    def increase_key(self, key_id: int, new_score: float) -> None:
        """Raise the score. KeyError if absent, ValueError if new_score is smaller."""
    def update_key(self, key_id: int, new_score: float) -> None:
        """Set the score in either direction. KeyError if absent."""
    def delete(self, key_id: int) -> tuple[float, int]:
        """Remove key_id and return its (score, key_id). KeyError if absent."""
    def get_score(self, key_id: int) -> float | None:
        """The score of key_id, or None if absent."""
    def size(self) -> int:
        """The number of entries."""
    def is_empty(self) -> bool:
        """Whether the heap has no entries."""
    @property
    def max_heap(self) -> bool:
        """Whether the largest score pops first."""
    def __len__(self) -> int: ...
    def __contains__(self, key: object, /) -> bool: ...

class InvertedIndexStats(TypedDict):
    num_documents: int
    scored_documents: int
    num_terms: int
    num_postings: int
    stored_postings: int
    dead_documents: int
    total_terms: int
    avg_doc_length: float
    posting_bytes: int
    skip_bytes: int
    bits_per_posting: float
    bits_per_posting_with_skips: float
    forward_bytes: int
    memory_bytes: int
    k1: float
    b: float

class InvertedIndex:
    """Compressed inverted index with BM25 scored as Lucene scores it."""

    def __init__(
        self, k1: float = 1.2, b: float = 0.75, *, stem: bool = False, stop_words: bool | Iterable[str] | None = False
    ) -> None: ...
    def add_document(self, doc_id: int, text: str) -> None:
        """Indexes text under doc_id; ValueError if doc_id is already indexed."""
    def add_documents(self, doc_ids: Sequence[int], texts: Sequence[str]) -> None:
        """Indexes many documents in one call; all or nothing for repeated ids."""
    def remove_document(self, doc_id: int) -> None:
        """Removes a document; KeyError if it is not indexed."""
    def search(self, query: str, top_k: int = 10) -> list[tuple[int, float]]:
        """The top_k (doc_id, score) pairs, best first; only documents sharing a term with the query."""
    def search_exhaustive(self, query: str, top_k: int = 10) -> list[tuple[int, float]]:
        """search() by scoring every posting: the same answer, slower; a reference and a baseline."""
    def search_batch(self, queries: Sequence[str], top_k: int = 10, num_threads: int = 1) -> list[list[tuple[int, float]]]:
        """search() for each query on num_threads threads (0: every core)."""
    def score(self, query: str, doc_id: int) -> float:
        """The BM25 score of one document (0.0 if it shares no term); KeyError if unknown."""
    def get_term_frequency(self, term: str, doc_id: int) -> int:
        """Occurrences of term (analysed like a query: one term) in the document."""
    def get_document_frequency(self, term: str) -> int:
        """Number of documents that contain term (analysed like a query)."""
    def document_length(self, doc_id: int) -> int:
        """Number of indexed terms of the document (BM25's dl)."""
    def document_ids(self) -> list[int]:
        """The indexed document ids in the order they were added."""
    def analyze(self, text: str) -> list[str]:
        """The terms this index makes of text, in order, repeats included."""
    def compact(self) -> None:
        """Drops the postings of removed documents now (it also happens by itself)."""
    def stats(self) -> InvertedIndexStats:
        """Document, term and posting counts, avgdl, compressed sizes in bytes and bits per posting,
        memory in bytes, k1 and b."""
    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the index to path (replaced whole or not at all); OSError if it cannot be written."""
    @staticmethod
    def load(path: str | os.PathLike[str]) -> InvertedIndex:
        """An index saved by save(); ValueError if the file is damaged."""
    @property
    def k1(self) -> float:
        """BM25's term-frequency saturation k1, >= 0 (default 1.2)."""
    @property
    def b(self) -> float:
        """BM25's document-length normalisation b, in [0, 1] (default 0.75)."""
    @property
    def stem(self) -> bool:
        """Whether terms are Porter-stemmed."""
    @property
    def stop_words(self) -> list[str]:
        """The stop words dropped from documents and queries; empty when none."""
    def __len__(self) -> int: ...
    def __contains__(self, doc_id: int, /) -> bool: ...

ENGLISH_STOP_WORDS: tuple[str, ...]
"""Lucene's 33 English stop words, lower case: what InvertedIndex(stop_words=True) drops."""

def porter_stem(word: str) -> str:
    """The original Porter (1980) stem of a lower-case ASCII word, as Porter's reference C code gives it."""

class RetrievalPipelineStats(TypedDict):
    documents: int
    documents_with_embeddings: int
    searches: int
    cache_hits: int
    cache_misses: int
    cache_hit_rate: float
    cached_queries: int
    cached_entries: int
    cache_invalidations: int
    dense_searches: int
    sparse_searches: int
    hot_query_threshold: int
    fusion: str
    dim: int

class RetrievalPipeline:
    """Hybrid retrieval: BM25 over the text and HNSW over embeddings, fused."""

    def __init__(
        self,
        dim: int,
        *,
        M: int = 16,
        ef_construction: int = 200,
        ef_search: int = 50,
        metric: str = "cosine",
        seed: int | None = None,
        k1: float = 1.2,
        b: float = 0.75,
        stem: bool = False,
        stop_words: bool = False,
        fusion: str = "weighted",
        rrf_k: float = 60.0,
        candidates: int = 100,
        hot_query_threshold: int = 2,
        cache_budget: int = 100000,
    ) -> None: ...
    def add_document(self, doc_id: int, text: str, embedding: ArrayLike | None = None) -> None:
        """Indexes a document; ValueError (nothing added) for a duplicate id or a bad embedding."""
    def remove_document(self, doc_id: int) -> None:
        """Removes a document from both indexes; KeyError if unknown."""
    def search(
        self,
        query: str,
        query_embedding: ArrayLike | None = None,
        top_k: int = 10,
        fusion_weight: float = 0.5,
        fusion: str | None = None,
    ) -> list[tuple[int, float]]:
        """The top_k (doc_id, score) pairs, best first."""
    def clear_cache(self) -> None:
        """Empties the hot-query cache (the query counts stay)."""
    def stats(self) -> RetrievalPipelineStats:
        """Document counts; searches; hot-query cache hits, misses, rate, queries, entries and
        invalidations; dense and sparse searches; hot_query_threshold, fusion and dim."""
    @property
    def dim(self) -> int:
        """Dimension of the embeddings."""
    def __len__(self) -> int: ...
    def __contains__(self, doc_id: int, /) -> bool: ...

class TokenLRU(Generic[K, V]):
    """Least-recently-used cache whose budget is counted in tokens."""

    def __init__(
        self, token_of: Callable[[V], int] = ..., max_tokens: int | None = None
    ) -> None:
        """Each value costs token_of(value) tokens (len by default); max_tokens=None is unbounded."""
    def put(self, key: K, value: V) -> None:
        """Insert or replace key as the most recent entry, evicting to stay within max_tokens."""
    def get(self, key: K) -> V | None:
        """The value of key, made most recent; None if absent."""
    def peek(self, key: K) -> V | None:
        """The value of key without touching its recency; None if absent."""
    def delete(self, key: K) -> V:
        """Remove key and return its value. KeyError if absent."""
    def evict_until_budget(self, target_budget: int) -> list[tuple[K, V]]:
        """Evict until total_tokens() <= target_budget; return the evicted (key, value) pairs."""
    def total_tokens(self) -> int:
        """The sum of token_of(value) over the entries."""
    @property
    def max_tokens(self) -> int | None:
        """The token budget, or None if unbounded."""
    def keys(self) -> list[K]:
        """The keys, least recently used first."""
    def stats(self) -> dict[str, Any]:
        """size, total_tokens, max_tokens, hits, misses, hit_rate and evictions."""
    def clear(self) -> None:
        """Remove every entry."""
    def __len__(self) -> int: ...
    def __contains__(self, key: object, /) -> bool: ...

class CountMinSketch:
    """Count-min sketch: approximate counts of str/bytes items in fixed memory."""

    def __init__(
        self,
        width: int = 2048,
        depth: int = 4,
        seed: int = 0,
        conservative: bool = True,
        top_k: int = 0,
    ) -> None:
        """A width x depth sketch; top_k > 0 also tracks the top_k items (heavy_hitters())."""
    @staticmethod
    def from_error(
        epsilon: float,
        delta: float,
        seed: int = 0,
        conservative: bool = True,
        top_k: int = 0,
    ) -> CountMinSketch:
        """The smallest sketch with error epsilon * N at probability 1 - delta."""
    def add(self, item: Item, count: int = 1) -> None:
        """Count `count` more occurrences of item. ValueError if count is negative."""
    def add_many(
        self,
        items: Iterable[Item],
        counts: Sequence[int] | NDArray[numpy.integer[Any]] | None = None,
    ) -> None:
        """Add every item (counts: None for 1 each, or one int per item); all or nothing."""
    def estimate(self, item: Item) -> int:
        """An upper bound on item's count, never below the true count."""
    def estimate_many(self, items: Iterable[Item]) -> NDArray[numpy.uint64]:
        """estimate() of every item, as a numpy uint64 array."""
    def is_hot(self, item: Item, threshold: int) -> bool:
        """Whether estimate(item) >= threshold."""
    def get_error_bound(self) -> float:
        """epsilon * N: the error bound that holds with probability 1 - delta."""
    def total_count(self) -> int:
        """N, the sum of all counts added."""
    def merge(self, other: CountMinSketch) -> None:
        """Add other's counts into this sketch. ValueError unless width, depth and seed match."""
    def heavy_hitters(self) -> list[tuple[str | bytes, int]]:
        """The tracked top_k items as (item, estimate), largest first."""
    def clear(self) -> None:
        """Reset every counter and the tracked heavy hitters."""
    def stats(self) -> dict[str, Any]:
        """The parameters, total_count, epsilon, delta, error_bound and memory_bytes."""
    @property
    def width(self) -> int:
        """Counters per row."""
    @property
    def depth(self) -> int:
        """Rows (hash functions)."""
    @property
    def seed(self) -> int:
        """The hash seed."""
    @property
    def conservative(self) -> bool:
        """Whether conservative update is used."""
    @property
    def top_k(self) -> int:
        """How many heavy hitters are tracked."""
    @property
    def epsilon(self) -> float:
        """e / width."""
    @property
    def delta(self) -> float:
        """e ** -depth."""
    def to_bytes(self) -> bytes:
        """The sketch as checksummed bytes."""
    @staticmethod
    def from_bytes(data: bytes) -> CountMinSketch:
        """Read to_bytes() output. ValueError if it is not valid."""
    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the sketch to path (replaced whole or not at all)."""
    @staticmethod
    def load(path: str | os.PathLike[str]) -> CountMinSketch:
        """Read a sketch written by save. OSError or ValueError."""
    def __getstate__(self, /) -> bytes: ...
    def __setstate__(self, state: bytes, /) -> None: ...

class PageStats:
    """Allocation statistics of a PagedAllocator."""

    @property
    def total_pages(self) -> int:
        """Pages the allocator manages (its max_pages)."""
    @property
    def used_pages(self) -> int:
        """Pages allocated now: total_pages - free_pages."""
    @property
    def free_pages(self) -> int:
        """Pages free now."""
    @property
    def utilization(self) -> float:
        """used / total"""
    @property
    def fragmentation(self) -> float:
        """Holes below the highest used page id, as a share of that range."""
    @property
    def alloc_count(self) -> int:
        """Pages handed out over the allocator's life."""
    @property
    def free_count(self) -> int:
        """Pages returned over the allocator's life."""

class PagedAllocator:
    """Fixed-size pages of a KV arena, handed out by id from a free list: O(1) per page."""

    def __init__(self, page_size: int = 512, max_pages: int = 10000) -> None: ...
    def alloc(self, num_pages: int) -> list[int]:
        """Allocate num_pages pages; MemoryError (nothing allocated) if too few are free."""
    def free(self, page_ids: Sequence[int]) -> None:
        """Return pages; ValueError (nothing freed) on a double free or unknown id."""
    def stats(self) -> PageStats:
        """Use, utilization, fragmentation and lifetime alloc/free counts."""
    def defragment(self) -> dict[int, int]:
        """Pack used pages at the lowest ids; return {old_id: new_id} for every page that moved."""
    def is_allocated(self, page_id: int) -> bool:
        """Whether page_id is currently handed out."""
    @property
    def page_size(self) -> int:
        """Tokens per page (default 512); the allocator hands out ids and stores no data."""
    @property
    def max_pages(self) -> int:
        """Pages it manages, ids 0 to max_pages - 1 (default 10000)."""

class BlockPoolStats(TypedDict):
    num_blocks: int
    free_blocks: int
    cached_blocks: int
    in_use_blocks: int
    shared_blocks: int
    total_refs: int
    registered_blocks: int
    evictions: int

class BlockPool:
    """The block registry under a prefix cache, keyed by integer block hashes."""

    def __init__(self, num_blocks: int) -> None: ...
    def lookup(self, block_hashes: Sequence[int]) -> list[int]:
        """Blocks of the longest run of leading hashes that are registered; changes nothing."""
    def find(self, block_hash: int) -> int | None:
        """The block registered under a hash, or None."""
    def allocate(self, num_blocks: int) -> list[int]:
        """Blocks with refcount 1, free ones first, then cached ones evicted; MemoryError if too few."""
    def register(self, block_id: int, block_hash: int) -> bool:
        """Register an in-use block under a hash; False if another block already holds it."""
    def touch(self, block_ids: Sequence[int]) -> None:
        """Take one more reference to each block (a cached block comes back into use)."""
    def release(self, block_ids: Sequence[int]) -> None:
        """Drop one reference to each block, in order; at 0 a registered block is cached, any other freed."""
    def refcount(self, block_id: int) -> int:
        """References held on the block (0 if free or cached); IndexError if out of range."""
    def is_cached(self, block_id: int) -> bool:
        """Whether the block is cached (refcount 0, registered, evictable); IndexError if out of range."""
    def is_free(self, block_id: int) -> bool:
        """Whether the block is free (no reference, no hash); IndexError if out of range."""
    def eviction_order(self) -> list[int]:
        """Cached blocks, the next to be evicted first."""
    def defragment(self) -> dict[int, int]:
        """Pack used and cached blocks at the lowest ids; return {old_id: new_id}."""
    def stats(self) -> BlockPoolStats:
        """Blocks free, cached, in use, shared (refcount >= 2) and registered; the sum of refcounts;
        evictions over the pool's life."""
    @property
    def num_blocks(self) -> int:
        """Blocks in the pool, ids 0 to num_blocks - 1."""

class TierStats(TypedDict):
    tier: str
    capacity_blocks: int
    cached_blocks: int
    in_use_blocks: int
    lookups: int
    hit_blocks: int
    hit_tokens: int
    stored_blocks: int
    evicted_blocks: int
    reclaimed_blocks: int
    onboarded_blocks: int
    dropped_offloads: int
    filter_rejected: int
    failed_transfers: int
    bytes_in: int
    bytes_out: int
    queued_writes: int
    queue_high_water: int
    copy_in_us: dict[str, float] | None
    copy_out_us: dict[str, float] | None

class PrefixMatch:
    """A run of leading block hashes found in some tier, pinned until onboard() or cancel()."""

    def __len__(self) -> int: ...
    @property
    def hashes(self) -> list[int]:
        """The matched hashes, in order."""
    @property
    def tiers(self) -> list[str]:
        """The tier each matched block was found in (the fastest that holds it)."""
    def count(self, tier: str) -> int:
        """Matched blocks found in `tier`."""
    @property
    def to_onboard(self) -> int:
        """Blocks onboard() will copy up: those not already in primary."""
    @property
    def open(self) -> bool:
        """False once onboarded or cancelled."""

class WorkerScore(TypedDict):
    worker: int
    blocks: int
    by_tier: dict[str, int]

class WorkerIndexState(TypedDict):
    next_seq: int
    blocks: int
    gaps: int
    in_sync: bool

class KVIndexer:
    """Which worker (server) holds which KV block in which tier, from the workers' KV event batches;
    scores a request's block hashes per worker by the longest leading run it holds."""

    def __init__(self) -> None: ...
    def apply(self, worker: int, batch: dict[str, Any]) -> str:
        """Apply one of a worker's event batches ({'seq': n, 'events': [...]}, as KVBlockManager.subscribe
        delivers them): 'applied', 'duplicate' (already applied: skipped) or 'after_gap' (applied, but
        earlier batches were missed: out of sync until mark_synced). ValueError for a malformed batch,
        which changes nothing."""
    def score(self, hashes: Sequence[int]) -> list[WorkerScore]:
        """Workers holding a run of the request's leading blocks, best first (ties by worker); workers
        holding none are left out."""
    def remove_worker(self, worker: int) -> bool:
        """Forget a worker's blocks and sequence; False if unknown."""
    def mark_synced(self, worker: int) -> bool:
        """Declare a worker resynchronised after a gap; False if unknown."""
    def worker(self, worker: int) -> WorkerIndexState | None:
        """A worker's sequence, block count, gaps and sync state, or None if unknown."""
    @property
    def workers(self) -> list[int]:
        """Every known worker, ascending."""
    def __len__(self) -> int:
        """Distinct blocks held by at least one worker."""
    def __repr__(self) -> str: ...

class RedisStoreStats(TypedDict):
    lookups: int
    lookup_hits: int
    stored_blocks: int
    dropped_stores: int
    read_blocks: int
    missed_reads: int
    corrupt_blocks: int
    foreign_blocks: int
    connects: int
    connection_failures: int
    bytes_written: int
    bytes_read: int
    connected: bool

class RedisBlockStore:
    """KV blocks in a Redis server that many servers share: one key per block,
    <namespace>:<model>:<block hash in hex>, a checked header before the block's bytes; pipelined
    put, get and lookup; a server that is down, restarts, times out or refuses costs misses and
    dropped stores (counted in stats()), never an exception, and is reconnected with a doubling
    backoff. Available when llmds was built with hiredis."""

    def __init__(
        self,
        block_bytes: int,
        host: str = "127.0.0.1",
        port: int = 6379,
        *,
        password: str | None = None,
        username: str | None = None,
        unix_socket: str | None = None,
        database: int = 0,
        namespace: str = "llmds",
        model: str = "",
        connect_timeout: float = 0.5,
        command_timeout: float = 2.0,
        backoff_min: float = 0.1,
        backoff_max: float = 5.0,
        ttl: int | None = None,
    ) -> None: ...
    @property
    def block_bytes(self) -> int:
        """Bytes of one block (every value's payload)."""
    def key_of(self, hash: bytes) -> str:
        """The key a block hash is stored under."""
    def lookup(self, hashes: Sequence[bytes]) -> int:
        """How many leading hashes the server holds (one round trip); 0 if it cannot be reached."""
    def put(self, hashes: Sequence[bytes], blocks: ArrayLike) -> list[bool]:
        """Store blocks[i] (a (n, block_bytes) uint8 array) under hashes[i], pipelined; per block,
        whether it was stored."""
    def get(self, hashes: Sequence[bytes]) -> tuple[NDArray[numpy.uint8], list[bool]]:
        """Read the blocks of hashes, pipelined: (a (n, block_bytes) uint8 array, per block whether it
        was read intact; rows not read are unspecified)."""
    def remove(self, hashes: Sequence[bytes]) -> None:
        """Delete the blocks of hashes, if present."""
    def connect(self) -> bool:
        """Connect now if not connected, ignoring the backoff; whether the store is connected."""
    def stats(self) -> RedisStoreStats: ...
    def __repr__(self) -> str: ...

class KVEventPublisherStats(TypedDict):
    published_batches: int
    published_events: int
    lost_batches: int
    send_failures: int
    replay_requests: int
    replayed_batches: int
    bad_requests: int

class KVEventPublisher:
    """A KVBlockManager's KV events on ZeroMQ in vLLM's wire format (PUB: topic, 8-byte big-endian
    seq, MessagePack batch; optional ROUTER replay answering a start seq with the buffered batches
    and an end marker), for cache-aware routers such as Dynamo's KV router and llm-d's indexer.
    Available when llmds was built with ZeroMQ."""

    def __init__(
        self,
        manager: KVBlockManager,
        endpoint: str = "tcp://*:5557",
        replay_endpoint: str | None = None,
        *,
        topic: str = "",
        encoding: str = "map",
        data_parallel_rank: int | None = 0,
        buffer_steps: int = 10000,
        hwm: int = 100000,
        medium: Sequence[str] | None = None,
        linger: float = 1.0,
    ) -> None: ...
    @property
    def endpoint(self) -> str:
        """The PUB socket's address, with the port chosen for a wildcard one."""
    @property
    def replay_endpoint(self) -> str | None:
        """The ROUTER socket's address, or None."""
    def flush(self) -> None:
        """Wait until every batch the manager has published so far is sent."""
    def close(self) -> None:
        """Send what is pending, then close the sockets (waiting up to linger seconds). Idempotent."""
    def stats(self) -> KVEventPublisherStats: ...
    def __enter__(self) -> KVEventPublisher: ...
    def __exit__(self, *args: object) -> None: ...
    def __repr__(self) -> str: ...

def decode_kv_event_batch(payload: bytes, seq: int = 0) -> dict[str, Any]:
    """Decode one payload of vLLM's KV event stream (either encoding) into the batch dict
    KVBlockManager.subscribe delivers, plus 'ts' and 'data_parallel_rank'. ValueError for anything
    else. Available when llmds was built with ZeroMQ."""

class KVBlockManager:
    """A prefix cache over storage tiers (primary, host, disk): evicted blocks are offloaded down,
    and a hit in a lower tier is onboarded back into primary."""

    def __init__(
        self,
        primary_blocks: int,
        host_blocks: int = 0,
        disk_blocks: int = 0,
        block_size: int = 16,
        block_bytes: int = 0,
        offload_policy: str = "write-back",
        offload_min_priority: int = 0,
        disk_min_uses: int = 0,
        event_log_batches: int = 10000,
    ) -> None: ...
    @property
    def tiers(self) -> list[str]:
        """The tiers, fastest first."""
    def allocate(self, num_blocks: int) -> list[int]:
        """Primary blocks with one reference each; MemoryError, changing nothing, if too few."""
    def register_blocks(
        self,
        blocks: Sequence[int],
        hashes: Sequence[int],
        parent: int | None = None,
        token_ids: Sequence[int] | None = None,
        priority: int = 35,
    ) -> list[int]:
        """Register a sequence's full blocks under their hashes; per block, the block now registered."""
    def match(self, hashes: Sequence[int]) -> PrefixMatch:
        """The longest run of leading hashes some tier holds, pinned until onboard() or cancel()."""
    def onboard(self, match: PrefixMatch) -> list[int]:
        """The match's blocks in primary, one reference each; MemoryError if primary is too full."""
    def cancel(self, match: PrefixMatch) -> None:
        """Unpin a match without onboarding it."""
    def release(self, blocks: Sequence[int]) -> None:
        """Drop one reference to each primary block, in order (tail first)."""
    def clear(self) -> bool:
        """Empty every tier if nothing is in use or pinned; False otherwise."""
    def find(self, hash: int) -> str | None:
        """The fastest tier holding `hash`, or None."""
    def contents(self, tier: str) -> list[int]:
        """Every hash `tier` holds."""
    def stats(self) -> dict[str, TierStats]:
        """Per tier, fastest first."""
    def subscribe(self, callback: Callable[[dict[str, Any]], object]) -> int:
        """Call callback(batch) with every batch of events from now on; returns a subscription id."""
    def unsubscribe(self, subscription: int) -> bool:
        """Stop a subscription; False if it was already gone."""
    def events_since(self, seq: int) -> list[dict[str, Any]]:
        """Kept event batches with seq >= `seq`; KeyError if some have left the log."""
    @property
    def next_event_seq(self) -> int:
        """The sequence number of the next batch."""

class KVCacheStats(TypedDict):
    sequences: int
    tokens: int
    total_pages: int
    free_pages: int
    cached_pages: int
    used_pages: int
    shared_pages: int
    total_refs: int
    logical_pages: int
    pages_saved: int
    bytes_per_page: int
    bytes_saved: int
    prefix_lookup_pages: int
    prefix_hit_pages: int
    prefix_hit_rate: float
    evictions: int
    cow_copies: int
    refcounts: dict[int, int]

class KVCache:
    """A paged KV cache with prefix sharing, copy-on-write and prefix caching across time."""

    def __init__(
        self,
        page_size: int = 512,
        max_pages: int = 10000,
        enable_prefix_sharing: bool = True,
        entry_width: int = 1,
        dtype: str = "float32",
    ) -> None: ...
    def attach(
        self,
        seq_id: int,
        kv_tokens: ArrayLike,
        prefix_tokens: Sequence[int] | NDArray[numpy.integer[Any]] | None = None,
        cache_salt: str | bytes | None = None,
    ) -> None:
        """Store a sequence's KV entries; share the longest cached run of full pages of prefix_tokens."""
    def append(self, seq_id: int, kv_tokens: ArrayLike) -> None:
        """Append entries (decode steps); a shared partial last page is copied first."""
    def fork(self, src_seq_id: int, new_seq_id: int) -> None:
        """A new sequence sharing every page of src_seq_id, copied on first write."""
    def detach(self, seq_id: int) -> None:
        """Release a sequence's pages, tail first; hashed pages stay cached."""
    def get(self, seq_id: int) -> list[float] | NDArray[Any] | None:
        """A deep copy of the entries: a list when entry_width is 1, else (n_tokens, entry_width)."""
    def num_tokens(self, seq_id: int) -> int:
        """Tokens stored for seq_id; KeyError if it is not attached."""
    def block_table(self, seq_id: int) -> NDArray[numpy.int32]:
        """The sequence's page ids as an int32 array (a copy)."""
    def page(self, page_id: int) -> NDArray[Any]:
        """A read-only, zero-copy view (page_size, entry_width) of one page of the arena."""
    def block_hashes(
        self, prefix_tokens: Sequence[int] | NDArray[numpy.integer[Any]], cache_salt: str | bytes | None = None
    ) -> list[bytes]:
        """The chained SHA-256 hashes (32 bytes each) of the full pages of prefix_tokens."""
    def lookup(self, block_hashes: Iterable[bytes]) -> list[int]:
        """Pages of the longest run of leading block hashes that are cached or in use."""
    def defragment(self) -> dict[int, int]:
        """Pack used and cached pages at the lowest ids, moving data and rewriting block tables."""
    def stats(self) -> KVCacheStats: ...
    def __contains__(self, seq_id: int, /) -> bool: ...
    def __len__(self) -> int: ...
    @property
    def page_size(self) -> int:
        """Tokens per page (default 512)."""
    @property
    def max_pages(self) -> int:
        """Pages in the arena (default 10000)."""
    @property
    def entry_width(self) -> int:
        """Scalars per token's KV entry (default 1)."""
    @property
    def enable_prefix_sharing(self) -> bool:
        """Whether attach() shares cached full pages of equal prefixes and registers its own (default True)."""
    @property
    def dtype(self) -> str:
        """'float32' or 'float16': the scalar type of the entries."""

class MooncakeTrace:
    """A parsed Mooncake trace (JSON Lines), held in C++."""

    def __len__(self) -> int: ...
    @property
    def total_input_tokens(self) -> int:
        """Prompt tokens of all requests: the sum of their input_length."""

class PrefixCacheReplayResult:
    """What a prefix-cache replay of a trace measured."""

    @property
    def requests(self) -> int:
        """Requests replayed: every request of the trace."""
    @property
    def capacity_blocks(self) -> int:
        """Blocks the replayed cache held (the capacity_blocks argument)."""
    @property
    def lookup_blocks(self) -> int: ...
    @property
    def hit_blocks(self) -> int: ...
    @property
    def allocated_blocks(self) -> int: ...
    @property
    def evictions(self) -> int:
        """Cached blocks evicted to make room."""
    @property
    def seconds(self) -> float: ...
    @property
    def hit_rate(self) -> float:
        """hit_blocks / lookup_blocks (0.0 when nothing was looked up)."""
    @property
    def microseconds_per_request(self) -> float:
        """Replay time per request in microseconds: seconds * 1e6 / requests (0.0 without requests)."""

def load_mooncake_trace(path: str | os.PathLike[str]) -> MooncakeTrace:
    """Parse a Mooncake trace file; OSError if unreadable, ValueError naming a malformed line."""

def parse_mooncake_trace(text: str) -> MooncakeTrace:
    """Parse the text of a Mooncake trace; ValueError naming a malformed line."""

def replay_prefix_cache(trace: MooncakeTrace, capacity_blocks: int, block_size: int = 512) -> PrefixCacheReplayResult:
    """Replay a trace through an LRU prefix cache of capacity_blocks blocks."""

class TieredReplayResult:
    """What a replay of a trace through a tiered prefix cache measured."""

    @property
    def requests(self) -> int:
        """Requests replayed: every request of the trace."""
    @property
    def lookup_blocks(self) -> int: ...
    @property
    def hit_blocks(self) -> int: ...
    @property
    def seconds(self) -> float: ...
    @property
    def hit_rate(self) -> float: ...
    def tier_hit_rate(self, tier: str) -> float:
        """The share of looked-up blocks served from `tier`."""
    @property
    def tiers(self) -> dict[str, TierStats]:
        """Per tier, fastest first: the manager's figures at the end of the replay."""
    @property
    def microseconds_per_request(self) -> float:
        """Wall time of the replay loop per request, in microseconds."""
    @property
    def disk(self) -> dict[str, Any] | None:
        """With move_bytes and a disk tier: the disk store's figures, else None."""

def replay_tiered_prefix_cache(
    trace: MooncakeTrace,
    primary_blocks: int,
    host_blocks: int = 0,
    disk_blocks: int = 0,
    block_size: int = 512,
    offload_policy: str = "write-back",
    disk_min_uses: int = 0,
    block_bytes: int = 0,
    move_bytes: bool = False,
    disk_directory: str | os.PathLike[str] | None = None,
    offload_queue_blocks: int = 64,
    remote: RedisBlockStore | None = None,
) -> TieredReplayResult:
    """Replay a trace through a KVBlockManager of primary, host and disk tiers; with move_bytes, real
    blocks of block_bytes move between them. offload_queue_blocks: disk writes waiting for the disk
    worker (0: each written on the replay's thread). remote: a RedisBlockStore shared with other
    replicas (with move_bytes, of block_bytes blocks): computed blocks are put there, and prompt
    blocks the local tiers miss are read back from it."""

class RoutedReplayResult:
    """What a replay of a trace over several routed replicas measured."""

    @property
    def requests(self) -> int:
        """Requests replayed: every request of the trace."""
    @property
    def lookup_blocks(self) -> int: ...
    @property
    def hit_blocks(self) -> int: ...
    @property
    def routed_to_best(self) -> int:
        """kv-aware: requests sent to a replica with the best score."""
    @property
    def best_scores(self) -> int:
        """kv-aware: blocks the best scores promised, summed."""
    @property
    def requests_per_replica(self) -> list[int]:
        """Requests each replica served, in replica order."""
    @property
    def seconds(self) -> float: ...
    @property
    def hit_rate(self) -> float:
        """Hits in the chosen replicas / full prompt blocks looked up."""
    @property
    def imbalance(self) -> float:
        """Most over fewest requests per replica (1 is even)."""
    @property
    def microseconds_per_request(self) -> float:
        """Wall time of the replay loop per request, routing included, in microseconds."""

def replay_routed_prefix_cache(
    trace: MooncakeTrace,
    replicas: int,
    primary_blocks: int,
    host_blocks: int = 0,
    block_size: int = 512,
    routing: str = "kv-aware",
    max_imbalance: float = 1.2,
) -> RoutedReplayResult:
    """Replay a trace over `replicas` block managers of primary_blocks (+ host_blocks) each, every
    request sent to one replica: in turn ('round-robin'), or ('kv-aware') to the one holding the longest
    run of its leading blocks by a KVIndexer fed every replica's KV events, ties and misses to the least
    loaded, a replica with more than max_imbalance times the least loaded one's requests (plus one) passed
    over. ValueError for a bad value."""

class Timer:
    """Wall-clock timer on the monotonic clock, as a context manager."""

    def __init__(self) -> None: ...
    def __enter__(self) -> Timer:
        """Restart the interval; return the timer."""
    def __exit__(self, *args: object) -> None:
        """Freeze the interval."""
    def start(self) -> None:
        """Restart the interval from now."""
    def stop(self) -> None:
        """Freeze the interval."""
    @property
    def elapsed(self) -> float:
        """Seconds from start to stop, or to now while running."""
    @property
    def running(self) -> bool:
        """Whether the interval is still open (a Timer runs from construction until stop())."""

class MemoryProfiler:
    """Resident set size of this process over an interval, and its peak."""

    def __init__(self) -> None: ...
    def start(self) -> None:
        """Start (or restart) the interval."""
    def sample(self) -> int:
        """Sample the current RSS, raise the peak if needed; return the RSS in bytes."""
    def get_peak_rss_mb(self) -> float:
        """The peak RSS of the interval, in megabytes."""
    def get_peak_rss_bytes(self) -> int:
        """The peak RSS of the interval, in bytes."""
    def get_current_rss_mb(self) -> float:
        """The current RSS, in megabytes."""
    def get_memory_delta_mb(self) -> float:
        """Peak minus initial RSS, in megabytes."""

def compute_percentiles(values: ArrayLike) -> Percentiles:
    """p50, p95 and p99 of a one-dimensional `values`, as numpy.percentile computes them."""

def calculate_statistics(values: ArrayLike, confidence_level: float = 0.95) -> Statistics:
    """Mean, sample std, min, max, percentiles, Student-t CI of the mean, cv (%) and count."""

# --- scheduling: llmds.scheduler, llmds.admissions, llmds.token_budget ---------------------------

class ManualClock:
    """A clock that stands still until advanced (seconds), for tests and simulated replays."""

    def __init__(self, start: float = 0.0) -> None: ...
    def now(self) -> float: ...
    def __call__(self) -> float: ...
    def advance(self, seconds: float) -> None:
        """Moves the time forward; ValueError if `seconds` is negative or not finite."""
    def set(self, seconds: float) -> None:
        """Sets the time; ValueError if it is earlier than now()."""

class MetricSummary(TypedDict):
    count: int
    mean: float
    p50: float
    p95: float
    p99: float
    max: float

class SchedulerStats(TypedDict):
    submitted: int
    dispatched: int
    completed: int
    cancelled: int
    preempted: int
    batches: int
    queued: int
    in_flight: int
    queued_tokens: int
    queue_wait_ms: MetricSummary
    latency_ms: MetricSummary
    batch_size: MetricSummary
    slo_requests: int
    slo_met: int
    slo_attainment: float
    elapsed_s: float
    throughput_rps: float
    throughput_tokens_per_s: float
    clock_went_back: int

class Scheduler:
    """Dynamic micro-batching: at-risk SLOs first (earliest deadline), then fewer remaining
    tokens, then arrival. Also builds an engine's prefill (chunked) and decode batches."""

    def __init__(
        self,
        max_batch_size: int = 32,
        max_wait_ms: float = 50.0,
        *,
        max_batch_tokens: int | None = None,
        slo_risk_ms: float | None = None,
        clock: ManualClock | Callable[[], float] | None = None,
    ) -> None: ...
    def submit(self, tokens: int, slo_ms: float | None = None) -> int:
        """Queues a request; returns its id. ValueError for negative tokens or slo_ms <= 0."""
    def get_batch(self, force: bool = False) -> list[int] | None:
        """The next batch if one is due (or forced and something is queued), else None."""
    def complete_batch(self, request_ids: Sequence[int]) -> None:
        """KeyError for an unknown id, ValueError for one never dispatched; all or nothing."""
    def complete(self, request_id: int) -> None:
        """complete_batch([request_id]): KeyError for an unknown id, ValueError if it is still queued."""
    def update_priority(self, request_id: int, new_tokens: int) -> None:
        """Sets the remaining tokens (KeyError unknown id, ValueError negative)."""
    def cancel(self, request_id: int) -> None: ...
    def preempt(self, request_id: int, recompute_tokens: int) -> None: ...
    def build_prefill_batch(self, token_budget: int, max_sequences: int | None = None) -> list[tuple[int, int, int, bool]]:
        """[(request_id, start, tokens, last)] for one engine step under the token budget."""
    def build_decode_batch(self, max_sequences: int | None = None) -> list[int]: ...
    def time_until_due(self) -> float | None: ...
    def state(self, request_id: int) -> str:
        """'queued' or 'in_flight'; KeyError for an unknown id."""
    def remaining_tokens(self, request_id: int) -> int:
        """The request's remaining tokens, its ordering key; KeyError for an unknown id."""
    def __contains__(self, arg0: int, /) -> bool: ...
    def queued(self) -> int: ...
    def in_flight(self) -> int: ...
    def queued_tokens(self) -> int:
        """The sum of the remaining tokens of the queued requests."""
    def __len__(self) -> int: ...
    def reset_metrics(self) -> None:
        """Forget the recorded waits, latencies, batch sizes and counters (after a warm-up, say);
        queued and in-flight requests stay."""
    def stats(self) -> SchedulerStats:
        """Request counters, queue-wait and latency (ms) and batch-size summaries, SLO attainment and
        throughput in requests and tokens per second."""
    @property
    def max_batch_size(self) -> int:
        """Most requests in a get_batch batch, and the default max_sequences (default 32)."""
    @property
    def max_wait_ms(self) -> float:
        """A batch is due once the oldest queued request has waited this many ms (default 50.0)."""
    @property
    def max_batch_tokens(self) -> int | None:
        """Cap on the remaining tokens of a get_batch batch (whose first request is always taken), or None."""
    @property
    def slo_risk_ms(self) -> float:
        """A request with an SLO is at risk this many ms before its deadline; max_wait_ms unless given."""

class AdmissionStats(TypedDict):
    admitted: int
    rejected: int
    rejected_by_reason: dict[str, int]
    recorded: int
    current_qps: float
    current_token_rate: float
    tenants: int
    clock_went_back: int

class AdmissionController:
    """Request-rate and token-rate limits over a moving window or token buckets, per tenant."""

    def __init__(
        self,
        qps_limit: float | None = None,
        token_rate_limit: float | None = None,
        window_s: float = 1.0,
        *,
        mode: str = "moving_window",
        burst: float | None = None,
        token_burst: float | None = None,
        clock: ManualClock | Callable[[], float] | None = None,
    ) -> None: ...
    def should_admit(self, estimated_tokens: int = 0, tenant: str | None = None) -> tuple[bool, str]:
        """(admitted, reason): reason 'ok', 'qps_limit' or 'token_rate_limit'. Charges nothing."""
    def record_request(self, tokens: int, tenant: str | None = None) -> None: ...
    def try_admit(self, estimated_tokens: int = 0, tenant: str | None = None) -> tuple[bool, str]: ...
    def tenant_rates(self, tenant: str) -> tuple[float, float]: ...
    def stats(self) -> AdmissionStats:
        """Answers counted (admitted, rejected by reason), requests recorded, the current request and
        token rates summed over tenants, and the number of tenants."""
    @property
    def qps_limit(self) -> float | None:
        """Requests per second each tenant may make, or None (unlimited)."""
    @property
    def token_rate_limit(self) -> float | None:
        """Tokens per second each tenant may use, or None (unlimited)."""
    @property
    def window_s(self) -> float:
        """The moving window in seconds (default 1.0); it also sets token_bucket's default bursts."""
    @property
    def mode(self) -> str:
        """'moving_window' (the default) or 'token_bucket': how the rates are measured."""

class ResourceStats(TypedDict):
    limit: int | None
    reserved: int
    committed: int
    available: int | None
    peak: int
    refusals: int

class TokenBudget:
    """Global budgets of KV-cache, prompt and context tokens: reserve, commit, release."""

    def __init__(
        self,
        kv_cache_limit: int | None = None,
        prompt_limit: int | None = None,
        context_limit: int | None = None,
        context_window: int | None = None,
    ) -> None: ...
    def reserve(self, key: int, kv_cache: int = 0, prompt: int = 0, context: int = 0) -> None:
        """MemoryError naming the resource when a limit would be exceeded; nothing changes."""
    def try_reserve(self, key: int, kv_cache: int = 0, prompt: int = 0, context: int = 0) -> tuple[bool, str]: ...
    def commit(self, key: int, kv_cache: int | None = None, prompt: int | None = None, context: int | None = None) -> None: ...
    def release(self, key: int) -> dict[str, int]: ...
    def holding(self, key: int) -> dict[str, int]:
        """What key holds, reserved or committed, as {'kv_cache': n, 'prompt': n, 'context': n};
        KeyError for an unknown key."""
    def is_committed(self, key: int) -> bool:
        """Whether key's holding is committed, not only reserved; KeyError for an unknown key."""
    def available(self, resource: str) -> int | None: ...
    def __contains__(self, arg0: int, /) -> bool: ...
    def __len__(self) -> int: ...
    def stats(self) -> dict[str, Any]:
        """Per resource ('kv_cache', 'prompt', 'context'): limit, reserved, committed, available, peak
        and refusals; also reservations and committed_reservations."""

# --- engine: llmds.engine ----------------------------------------------------------------------

class SamplingParams:
    """Temperature (0 = greedy), top_k (0 = off), top_p (1 = off) and an optional seed."""

    def __init__(self, temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0, seed: int | None = None) -> None: ...
    @property
    def temperature(self) -> float:
        """Divides the logits before the softmax; 0 samples greedily, the argmax (default 1.0)."""
    @property
    def top_k(self) -> int:
        """Sample among the k most probable tokens only; 0 is off (the default)."""
    @property
    def top_p(self) -> float:
        """Keep the shortest most-probable prefix whose mass exceeds top_p; 1 (or 0) is off (default 1.0)."""
    @property
    def seed(self) -> int | None:
        """Seed of the request's random generator (run.c's xorshift*), or None for a random one."""

class Request:
    """What to generate: a prompt (text or token ids), limits, sampling and stops."""

    def __init__(
        self,
        prompt: str = "",
        *,
        prompt_tokens: Sequence[int] | None = None,
        max_tokens: int = 256,
        sampling: SamplingParams | None = None,
        priority: int = 0,
        slo_ms: float | None = None,
        stop_token_ids: Sequence[int] = (),
        stop_strings: Sequence[str] = (),
        reuse_cache: bool = True,
        free_cache_on_finish: bool = True,
        cache_salt: str = "",
        on_token: Callable[[int, str], object] | None = None,
        top_logits: int = 0,
        ignore_eos: bool = False,
    ) -> None: ...
    @property
    def prompt(self) -> str:
        """The prompt text, encoded with BOS unless prompt_tokens is given."""
    @property
    def prompt_tokens(self) -> list[int]:
        """The prompt's token ids, used as they are when not empty (prompt is then ignored)."""
    @property
    def max_tokens(self) -> int:
        """Most tokens to generate, >= 1 (default 256); the model's context length also ends generation."""
    @property
    def sampling(self) -> SamplingParams:
        """How tokens are sampled; default SamplingParams(): temperature 1.0, no top-k or top-p, no seed."""
    @property
    def priority(self) -> int:
        """Preemption order (default 0): when KV pages run out, the lowest-priority running request
        is preempted first."""
    @property
    def slo_ms(self) -> float | None:
        """Latency SLO in ms, or None; a request past its deadline is scheduled before the others,
        earliest deadline first."""
    @property
    def stop_token_ids(self) -> list[int]:
        """Token ids that end generation (reason 'stop_token'); they are not part of the output."""
    @property
    def stop_strings(self) -> list[str]:
        """Strings that end generation (reason 'stop_string'); Response.text stops before the match."""
    @property
    def reuse_cache(self) -> bool:
        """Whether to reuse cached prefix pages and register the request's own full pages (default True)."""
    @property
    def free_cache_on_finish(self) -> bool:
        """Whether its KV pages are freed when it ends (default True); False keeps them until
        Engine.release(id), unless it was cancelled or failed."""
    @property
    def cache_salt(self) -> str:
        """Prefix pages are shared only between requests with equal salts (default '')."""
    @property
    def on_token(self) -> Callable[[int, str], object] | None:
        """Called on the engine thread with (token_id, text piece) for each generated token, or None."""
    @property
    def top_logits(self) -> int:
        """How many of the largest raw logits to record per sampled step in Response.top_logits (default 0)."""
    @property
    def ignore_eos(self) -> bool:
        """Whether to keep generating past the model's end of text, BOS or EOS (default False)."""

class Response:
    """A finished request. reason: 'eos', 'max_tokens', 'stop_token', 'stop_string', 'cancelled' or 'error'."""

    @property
    def id(self) -> int:
        """The request's id, as GenerationHandle.id; an engine numbers its requests from 1."""
    @property
    def tokens(self) -> list[int]:
        """The generated token ids; the end-of-text or stop token that ended the request is not among them."""
    @property
    def text(self) -> str:
        """The generated text (bad UTF-8 replaced), cut before a stop string."""
    @property
    def reason(self) -> str:
        """Why it ended: 'eos', 'max_tokens', 'stop_token', 'stop_string', 'cancelled' or 'error'."""
    @property
    def error(self) -> str:
        """What went wrong when reason is 'error'; '' otherwise."""
    @property
    def top_logits(self) -> list[list[tuple[int, float]]]:
        """Per sampled step, the Request.top_logits largest raw logits as (token, logit)."""
    @property
    def prompt_tokens(self) -> int:
        """Tokens in the prompt (prompt_tokens, or prompt as encoded)."""
    @property
    def output_tokens(self) -> int:
        """Generated tokens: len(tokens)."""
    @property
    def cached_prompt_tokens(self) -> int:
        """Prompt tokens served from the prefix cache rather than computed (as found before any preemption)."""
    @property
    def cached_from_host(self) -> int:
        """Of cached_prompt_tokens, those copied back from the host tier."""
    @property
    def cached_from_disk(self) -> int:
        """Of cached_prompt_tokens, those read back from the disk tier."""
    @property
    def preemptions(self) -> int:
        """Times the request was preempted: its KV pages freed and its context computed again later."""
    @property
    def time_to_first_token_s(self) -> float:
        """Seconds from submission to the first sampled token; 0.0 if no token was generated."""
    @property
    def latency_s(self) -> float:
        """Seconds from submission to the end of the request."""
    @property
    def tokens_per_s(self) -> float:
        """Decode rate: (output_tokens - 1) / (latency_s - time_to_first_token_s); 0.0 below 2 tokens."""

class GenerationHandle:
    @property
    def id(self) -> int:
        """The request's id (Response.id; Engine.cancel takes it)."""
    def cancel(self) -> None: ...
    def done(self) -> bool:
        """Whether the request has finished: result() would return at once."""
    def result(self, timeout: float | None = None) -> Response:
        """Waits for the Response; ValueError after `timeout` seconds."""

class TokenStream:
    """Iterator over (token_id, text piece) as they are generated."""

    def __iter__(self) -> TokenStream: ...
    def __next__(self) -> tuple[int, str]: ...
    def cancel(self) -> None:
        """End the request at its next step with reason 'cancelled'; iteration stops after what arrived."""
    @property
    def id(self) -> int:
        """The request's id (Response.id; Engine.cancel takes it)."""
    def response(self, timeout: float | None = None) -> Response:
        """Waits for the Response (the GIL is released); ValueError after `timeout` seconds."""

class EngineStats(TypedDict):
    steps: int
    requests_finished: int
    generated_tokens: int
    prefill_tokens: int
    cached_prompt_tokens: int
    cached_from_host: int
    cached_from_disk: int
    preemptions: int
    evicted_pages: int
    reclaimed_pages: int
    waiting: int
    running: int
    cache_used_pages: int
    cache_cached_pages: int
    cache_free_pages: int
    cache_prefix_hit_rate: float

class Engine:
    """Continuous-batching inference on a llama2.c model with paged attention over the KV cache."""

    def __init__(
        self,
        model_path: str | os.PathLike[str],
        tokenizer_path: str | os.PathLike[str],
        *,
        page_size: int = 16,
        max_pages: int = 2048,
        max_batch_tokens: int = 256,
        max_sequences: int = 64,
        enable_prefix_caching: bool = True,
        num_threads: int = 0,
        host_pages: int = 0,
        disk_pages: int = 0,
        disk_directory: str | os.PathLike[str] | None = None,
        offload_policy: str = "write-back",
        reclaim_pages: int = 0,
    ) -> None:
        """An engine over the model. Tiers below the KV arena (all off by default): host_pages of host
        memory, disk_pages of block files in disk_directory, offload_policy 'write-back' (a page is
        copied down when evicted) or 'write-through' (when computed); reclaim_pages (with host_pages):
        arena pages a background reclaimer keeps free by moving the least recently used cached pages
        to host ahead of need, so that the serving thread seldom copies a page down itself. ValueError
        for a bad value."""
    def generate(self, request: Request) -> Response: ...
    def generate_async(self, request: Request) -> GenerationHandle: ...
    def stream(self, request: Request) -> TokenStream: ...
    def cancel(self, request_id: int) -> bool:
        """Cancel a queued or running request (it ends with reason 'cancelled'); False if there is none."""
    def shutdown(self) -> None: ...
    def release(self, request_id: int) -> bool: ...
    def encode(self, text: str, bos: bool = True, eos: bool = False) -> list[int]:
        """Token ids of text as llama2.c's run.c encodes it: BOS first if bos, EOS last if eos."""
    def decode(self, tokens: Sequence[int]) -> str:
        """The text of token ids (BOS and EOS add none, bad UTF-8 is replaced); IndexError for an id
        outside the vocabulary."""
    def stats(self) -> EngineStats:
        """Steps, request and token counters, preemptions, waiting and running requests, and KV pages and
        prefix hit rate (those refreshed every 64 steps and when idle)."""
    @property
    def config(self) -> dict[str, int]:
        """The model's dim, hidden_dim, n_layers, n_heads, n_kv_heads, vocab_size, seq_len and parameters,
        and the engine's page_size, max_pages, max_batch_tokens, max_sequences, num_threads, host_pages,
        disk_pages and reclaim_pages."""
