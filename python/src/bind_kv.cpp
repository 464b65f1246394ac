// The kv family: llmds.paged_allocator (PagedAllocator, PageStats) and llmds.kv_cache (KVCache,
// BlockPool). The trace replay, which runs on a BlockPool, is bound in bind_traces.cpp.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>
#include <pybind11/stl/filesystem.h>

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <limits>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <variant>
#include <vector>

#include <fmt/format.h>

#include "llmds/core/float16.hpp"
#include "llmds/kv/block_hash.hpp"
#include "llmds/kv/block_pool.hpp"
#include "llmds/kv/kv_cache.hpp"
#include "llmds/kv/paged_allocator.hpp"

#include "arguments.hpp"
#include "initialised.hpp"
#include "stats_dict.hpp"

namespace py = pybind11;

namespace {
class PyKVCache;
}  // namespace

LLMDS_PY_REQUIRE_INIT(llmds::PageStats)
LLMDS_PY_REQUIRE_INIT(llmds::PagedAllocator)
LLMDS_PY_REQUIRE_INIT(llmds::BlockPool<std::int64_t>)
LLMDS_PY_REQUIRE_INIT(PyKVCache)

namespace {

using llmds::BlockId;
using llmds::PageId;
using llmds::PagedAllocator;
using llmds::PageStats;

using llmds::python::non_negative;
using llmds::python::positive;

py::module_ numpy() { return py::module_::import("numpy"); }

// --- BlockPool with integer keys (trace hash ids, or any caller-side 64-bit hash) ---------------

using IntBlockPool = llmds::BlockPool<std::int64_t>;

// --- KVCache: float32 or float16 pages behind one Python class ---------------------------------

// Token ids arrive as a list or an integer numpy array; they are hashed as int32, so anything
// outside that range (or not an integer) is refused rather than wrapped.
std::vector<llmds::TokenId> token_ids(const py::object& tokens, const char* name) {
  const py::array array = numpy().attr("asarray")(tokens);
  if (array.ndim() != 1) {
    throw std::invalid_argument(fmt::format("{} must be a 1-D sequence of token ids", name));
  }
  if (array.size() == 0) return {};
  const char kind = array.dtype().kind();
  if (kind != 'i' && kind != 'u') {
    throw std::invalid_argument(fmt::format("{} must hold integers, got dtype {}", name,
                                            std::string(py::str(array.dtype()))));
  }
  const auto values = py::array_t<std::int64_t, py::array::c_style | py::array::forcecast>::ensure(
      array.attr("astype")("int64", py::arg("copy") = false));
  if (!values) throw py::error_already_set();
  std::vector<llmds::TokenId> out(static_cast<std::size_t>(values.size()));
  const std::int64_t* data = values.data();
  for (std::size_t i = 0; i < out.size(); ++i) {
    if (data[i] < std::numeric_limits<llmds::TokenId>::min() ||
        data[i] > std::numeric_limits<llmds::TokenId>::max()) {
      throw std::invalid_argument(
          fmt::format("{}[{}] = {} does not fit a 32-bit token id", name, i, data[i]));
    }
    out[i] = static_cast<llmds::TokenId>(data[i]);
  }
  return out;
}

std::string salt_bytes(const py::object& salt) {
  if (salt.is_none()) return {};
  if (py::isinstance<py::bytes>(salt)) return salt.cast<std::string>();
  if (py::isinstance<py::str>(salt)) return salt.cast<std::string>();  // UTF-8
  throw std::invalid_argument("cache_salt must be str, bytes or None");
}

std::span<const std::byte> as_byte_span(const std::string& s) {
  return std::as_bytes(std::span(s.data(), s.size()));
}

llmds::BlockHash block_hash_from(const py::handle& h) {
  if (!py::isinstance<py::bytes>(h)) throw std::invalid_argument("block hashes are 32-byte bytes");
  const auto s = h.cast<std::string>();
  if (s.size() != 32) {
    throw std::invalid_argument(fmt::format("a block hash has 32 bytes, got {}", s.size()));
  }
  llmds::BlockHash out;
  std::memcpy(out.digest.data(), s.data(), 32);
  return out;
}

class PyKVCache {
 public:
  PyKVCache(llmds::KVCacheConfig config, const std::string& dtype) {
    if (dtype == "float32") {
      impl_.emplace<llmds::KVCache<float>>(config);
    } else if (dtype == "float16") {
      impl_.emplace<llmds::KVCache<llmds::Float16>>(config);
    } else {
      throw std::invalid_argument(
          fmt::format("dtype must be \"float32\" or \"float16\", got \"{}\"", dtype));
    }
  }

  [[nodiscard]] const llmds::KVCacheConfig& config() const {
    return std::visit([](const auto& c) -> const llmds::KVCacheConfig& { return c.config(); }, impl_);
  }
  [[nodiscard]] std::string dtype() const { return impl_.index() == 0 ? "float32" : "float16"; }

  template <class F>
  decltype(auto) visit(F&& f) {
    return std::visit(std::forward<F>(f), impl_);
  }
  template <class F>
  decltype(auto) visit(F&& f) const {
    return std::visit(std::forward<F>(f), impl_);
  }

  // kv_tokens as a C-contiguous array of the cache's dtype: [n] (width 1) or [n, entry_width].
  // numpy does the conversion, so float64 input rounds once, straight to float16.
  [[nodiscard]] py::array entries(const py::object& kv_tokens) const {
    const std::size_t width = config().entry_width;
    // The shape is checked on asarray's result: ascontiguousarray makes at least one dimension,
    // so it would turn a scalar into a 1-token array.
    py::array a = numpy().attr("asarray")(kv_tokens, py::arg("dtype") = dtype());
    const bool ok = (a.ndim() == 1 && (width == 1 || a.size() == 0)) ||
                    (a.ndim() == 2 && static_cast<std::size_t>(a.shape(1)) == width);
    if (!ok) {
      std::string shape = "(";
      for (py::ssize_t i = 0; i < a.ndim(); ++i) shape += (i ? ", " : "") + std::to_string(a.shape(i));
      shape += a.ndim() == 1 ? ",)" : ")";
      throw std::invalid_argument(fmt::format(
          "kv_tokens must have shape (n_tokens, {}){}; got {}", width,
          width == 1 ? " or (n_tokens,)" : "", shape));
    }
    return numpy().attr("ascontiguousarray")(a);
  }

  template <class Scalar>
  static std::span<const Scalar> span_of(const py::array& a) {
    return {static_cast<const Scalar*>(a.data()), static_cast<std::size_t>(a.size())};
  }

 private:
  std::variant<llmds::KVCache<float>, llmds::KVCache<llmds::Float16>> impl_;
};

// The numpy dtype that stores Scalar.
template <class Scalar>
py::dtype dtype_of() {
  if constexpr (std::is_same_v<Scalar, float>) {
    return py::dtype("float32");
  } else {
    return py::dtype("float16");
  }
}

py::dict cache_stats_dict(const PyKVCache& self) {
  return self.visit([](const auto& c) {
    py::dict d = llmds::python::stats_dict(c.stats());
    // Beside the figures, the reference count of every page in use (O(max_pages), so it is
    // listed here rather than computed by every C++ stats() call).
    py::dict refcounts;
    const auto& pool = c.pool();
    for (std::size_t p = 0; p < pool.num_blocks(); ++p) {
      const auto r = pool.refcount(static_cast<BlockId>(p));
      if (r > 0) refcounts[py::int_(p)] = r;
    }
    d["refcounts"] = refcounts;
    return d;
  });
}

}  // namespace

void bind_kv(py::module_& m) {
  py::class_<PageStats>(m, "PageStats", "Allocation statistics of a PagedAllocator.")
      .def_readonly("total_pages", &PageStats::total_pages)
      .def_readonly("used_pages", &PageStats::used_pages)
      .def_readonly("free_pages", &PageStats::free_pages)
      .def_readonly("utilization", &PageStats::utilization, "used / total")
      .def_readonly("fragmentation", &PageStats::fragmentation,
                    "holes below the highest used page id, as a share of that range")
      .def_readonly("alloc_count", &PageStats::alloc_count)
      .def_readonly("free_count", &PageStats::free_count)
      .def("__repr__", [](const PageStats& s) {
        return fmt::format(
            "PageStats(total_pages={}, used_pages={}, free_pages={}, utilization={:.4f}, "
            "fragmentation={:.4f}, alloc_count={}, free_count={})",
            s.total_pages, s.used_pages, s.free_pages, s.utilization, s.fragmentation,
            s.alloc_count, s.free_count);
      });

  py::class_<PagedAllocator>(m, "PagedAllocator", R"doc(
Fixed-size pages of a KV arena, handed out by id from a free list: O(1) per page.

alloc is all or nothing (MemoryError if too few pages are free); free rejects a double free or an
id never handed out (ValueError) and then frees nothing of that call.
)doc")
      .def(py::init([](std::int64_t page_size, std::int64_t max_pages) {
             return PagedAllocator(llmds::PagedAllocatorConfig{positive(page_size, "page_size"),
                                                               positive(max_pages, "max_pages")});
           }),
           py::arg("page_size") = 512, py::arg("max_pages") = 10000)
      .def("alloc",
           [](PagedAllocator& a, std::int64_t num_pages) {
             return a.alloc(non_negative(num_pages, "num_pages"));
           },
           py::arg("num_pages"), "Allocate num_pages pages; MemoryError (nothing allocated) if too few are free.")
      .def("free", [](PagedAllocator& a, const std::vector<PageId>& page_ids) { a.free(page_ids); },
           py::arg("page_ids"), "Return pages; ValueError (nothing freed) on a double free or unknown id.")
      .def("stats", &PagedAllocator::stats)
      .def("defragment",
           [](PagedAllocator& a) {
             py::dict moves;
             for (const auto& [from, to] : a.defragment()) moves[py::int_(from)] = to;
             return moves;
           },
           "Pack used pages at the lowest ids; return {old_id: new_id} for every page that moved.")
      .def("is_allocated", &PagedAllocator::is_allocated, py::arg("page_id"))
      .def_property_readonly("page_size", &PagedAllocator::page_size)
      .def_property_readonly("max_pages", &PagedAllocator::max_pages)
      .def("__repr__", [](const PagedAllocator& a) {
        return fmt::format("PagedAllocator(page_size={}, max_pages={}, used_pages={})",
                           a.page_size(), a.max_pages(), a.used_pages());
      });

  py::class_<IntBlockPool>(m, "BlockPool", R"doc(
The block registry under a prefix cache, keyed by integer block hashes.

Each block is free, in use (refcount >= 1) or cached (refcount 0, registered under a hash, kept
for later requests until evicted, least recently released first). allocate takes free blocks
first, then evicts cached ones; it is all or nothing (MemoryError). Release a request's blocks
tail first, so that the tail of a prompt is evicted before its head.
)doc")
      .def(py::init([](std::int64_t num_blocks) {
             return IntBlockPool(positive(num_blocks, "num_blocks"));
           }),
           py::arg("num_blocks"))
      .def("lookup",
           [](const IntBlockPool& p, const std::vector<std::int64_t>& hashes) {
             std::vector<BlockId> blocks;
             p.match_prefix(hashes, &blocks);
             return blocks;
           },
           py::arg("block_hashes"),
           "Blocks of the longest run of leading hashes that are registered. Changes nothing; "
           "touch() them to take them.")
      .def("find", &IntBlockPool::find, py::arg("block_hash"), "The block registered under a hash, or None.")
      .def("allocate",
           [](IntBlockPool& p, std::int64_t n) { return p.allocate(non_negative(n, "num_blocks")); },
           py::arg("num_blocks"),
           "num_blocks blocks with refcount 1: free ones first, then cached ones evicted. "
           "MemoryError, changing nothing, if there are too few.")
      .def("register",
           [](IntBlockPool& p, BlockId block, std::int64_t hash) { return p.register_block(block, hash); },
           py::arg("block_id"), py::arg("block_hash"),
           "Register an in-use block under a hash; False if another block already holds it.")
      .def("touch", [](IntBlockPool& p, const std::vector<BlockId>& blocks) { p.touch(blocks); },
           py::arg("block_ids"), "Take one more reference to each block (a cached block comes back into use).")
      .def("release", [](IntBlockPool& p, const std::vector<BlockId>& blocks) { p.release(blocks); },
           py::arg("block_ids"),
           "Drop one reference to each block, in order; at 0 a registered block is cached, any other freed.")
      .def("refcount", &IntBlockPool::refcount, py::arg("block_id"))
      .def("is_cached", &IntBlockPool::is_cached, py::arg("block_id"))
      .def("is_free", &IntBlockPool::is_free, py::arg("block_id"))
      .def("eviction_order", &IntBlockPool::eviction_order,
           "Cached blocks, the next to be evicted first.")
      .def("defragment",
           [](IntBlockPool& p) {
             py::dict moves;
             for (const auto& [from, to] : p.defragment()) moves[py::int_(from)] = to;
             return moves;
           },
           "Pack used and cached blocks at the lowest ids; return {old_id: new_id} for every move.")
      .def("stats", [](const IntBlockPool& p) { return llmds::python::stats_dict(p.stats()); })
      .def_property_readonly("num_blocks", &IntBlockPool::num_blocks)
      .def("__repr__", [](const IntBlockPool& p) {
        return fmt::format("BlockPool(num_blocks={}, in_use={}, cached={}, free={})", p.num_blocks(),
                           p.in_use_blocks(), p.cached_blocks(), p.free_blocks());
      });

  py::class_<PyKVCache>(m, "KVCache", R"doc(
A paged KV cache with prefix sharing, copy-on-write and prefix caching across time.

Each sequence stores one KV entry (entry_width scalars) per token in pages of page_size tokens,
all in one arena of max_pages pages (dtype "float32" or "float16"). attach() shares the longest
cached run of full pages of prefix_tokens (chained SHA-256 block hashes, salted per tenant by
cache_salt) instead of storing it again; fork() shares every page, and the first append into a
shared partial page copies it. detach() releases pages tail first; hashed pages nobody holds stay
cached until the room is needed. Running out of pages raises MemoryError and changes nothing.
)doc")
      .def(py::init([](std::int64_t page_size, std::int64_t max_pages, bool enable_prefix_sharing,
                       std::int64_t entry_width, const std::string& dtype) {
             llmds::KVCacheConfig config;
             config.page_size = positive(page_size, "page_size");
             config.max_pages = positive(max_pages, "max_pages");
             config.entry_width = positive(entry_width, "entry_width");
             config.enable_prefix_sharing = enable_prefix_sharing;
             return std::make_unique<PyKVCache>(config, dtype);
           }),
           py::arg("page_size") = 512, py::arg("max_pages") = 10000,
           py::arg("enable_prefix_sharing") = true, py::arg("entry_width") = 1,
           py::arg("dtype") = "float32")
      .def("attach",
           [](PyKVCache& self, llmds::SeqId seq_id, const py::object& kv_tokens,
              const py::object& prefix_tokens, const py::object& cache_salt) {
             const py::array kv = self.entries(kv_tokens);
             const auto prefix = prefix_tokens.is_none() ? std::vector<llmds::TokenId>{}
                                                         : token_ids(prefix_tokens, "prefix_tokens");
             const std::string salt = salt_bytes(cache_salt);
             self.visit([&](auto& c) {
               using Scalar = typename std::decay_t<decltype(c)>::scalar_type;
               c.attach(seq_id, PyKVCache::span_of<Scalar>(kv), prefix, as_byte_span(salt));
             });
           },
           py::arg("seq_id"), py::arg("kv_tokens"), py::arg("prefix_tokens") = py::none(),
           py::arg("cache_salt") = py::none(),
           "Store a sequence's KV entries; share the longest cached run of full pages of prefix_tokens.")
      .def("append",
           [](PyKVCache& self, llmds::SeqId seq_id, const py::object& kv_tokens) {
             const py::array kv = self.entries(kv_tokens);
             self.visit([&](auto& c) {
               using Scalar = typename std::decay_t<decltype(c)>::scalar_type;
               c.append(seq_id, PyKVCache::span_of<Scalar>(kv));
             });
           },
           py::arg("seq_id"), py::arg("kv_tokens"),
           "Append entries (decode steps); a shared partial last page is copied first.")
      .def("fork",
           [](PyKVCache& self, llmds::SeqId src, llmds::SeqId dst) {
             self.visit([&](auto& c) { c.fork(src, dst); });
           },
           py::arg("src_seq_id"), py::arg("new_seq_id"),
           "A new sequence sharing every page of src_seq_id, copied on first write.")
      .def("detach",
           [](PyKVCache& self, llmds::SeqId seq_id) { self.visit([&](auto& c) { c.detach(seq_id); }); },
           py::arg("seq_id"), "Release a sequence's pages, tail first; hashed pages stay cached.")
      .def("get",
           [](const PyKVCache& self, llmds::SeqId seq_id) -> py::object {
             return self.visit([&](const auto& c) -> py::object {
               using Scalar = typename std::decay_t<decltype(c)>::scalar_type;
               auto data = c.get(seq_id);
               if (!data) return py::none();
               const auto width = static_cast<py::ssize_t>(c.config().entry_width);
               const auto n = static_cast<py::ssize_t>(data->size()) / width;
               py::array out(dtype_of<Scalar>(), {n, width});
               std::memcpy(out.mutable_data(), data->data(), data->size() * sizeof(Scalar));
               if (width == 1) return out.attr("reshape")(-1).attr("tolist")();
               return std::move(out);
             });
           },
           py::arg("seq_id"),
           "A deep copy of the sequence's entries, or None: a list of floats when entry_width is "
           "1, else an array (n_tokens, entry_width).")
      .def("num_tokens",
           [](const PyKVCache& self, llmds::SeqId seq_id) {
             return self.visit([&](const auto& c) { return c.num_tokens(seq_id); });
           },
           py::arg("seq_id"))
      .def("block_table",
           [](const PyKVCache& self, llmds::SeqId seq_id) {
             return self.visit([&](const auto& c) {
               const auto table = c.block_table(seq_id);
               return py::array_t<std::int32_t>(static_cast<py::ssize_t>(table.size()), table.data());
             });
           },
           py::arg("seq_id"),
           "The sequence's page ids as an int32 array (a copy): token t is row t % page_size of "
           "page table[t // page_size].")
      .def("page",
           [](const py::object& self_obj, BlockId page_id) {
             const auto& self = self_obj.cast<const PyKVCache&>();
             return self.visit([&](const auto& c) {
               using Scalar = typename std::decay_t<decltype(c)>::scalar_type;
               const auto data = c.page(page_id);
               const auto width = static_cast<py::ssize_t>(c.config().entry_width);
               const auto rows = static_cast<py::ssize_t>(c.config().page_size);
               py::array view(dtype_of<Scalar>(), {rows, width},
                              {static_cast<py::ssize_t>(sizeof(Scalar)) * width,
                               static_cast<py::ssize_t>(sizeof(Scalar))},
                              data.data(), self_obj);
               // Read-only: writing through a view would bypass copy-on-write.
               py::detail::array_proxy(view.ptr())->flags &= ~py::detail::npy_api::NPY_ARRAY_WRITEABLE_;
               return view;
             });
           },
           py::arg("page_id"),
           "Page page_id as a read-only, zero-copy array (page_size, entry_width) over the arena. "
           "It shows whatever the page holds at the time it is read.")
      .def("block_hashes",
           [](PyKVCache& self, const py::object& prefix_tokens, const py::object& cache_salt) {
             const auto tokens = token_ids(prefix_tokens, "prefix_tokens");
             const std::string salt = salt_bytes(cache_salt);
             const auto hashes = self.visit(
                 [&](auto& c) { return c.block_hashes(tokens, as_byte_span(salt)); });
             py::list out;
             for (const auto& h : hashes) {
               out.append(py::bytes(reinterpret_cast<const char*>(h.digest.data()), h.digest.size()));
             }
             return out;
           },
           py::arg("prefix_tokens"), py::arg("cache_salt") = py::none(),
           "The chained SHA-256 hashes (32-byte bytes) of the full pages of prefix_tokens.")
      .def("lookup",
           [](const PyKVCache& self, const py::iterable& block_hashes) {
             std::vector<llmds::BlockHash> hashes;
             for (const auto& h : block_hashes) hashes.push_back(block_hash_from(h));
             std::vector<BlockId> blocks;
             self.visit([&](const auto& c) { c.pool().match_prefix(hashes, &blocks); });
             return blocks;
           },
           py::arg("block_hashes"),
           "Pages of the longest run of leading block hashes that are cached or in use.")
      .def("defragment",
           [](PyKVCache& self) {
             py::dict moves;
             self.visit([&](auto& c) {
               for (const auto& [from, to] : c.defragment()) moves[py::int_(from)] = to;
             });
             return moves;
           },
           "Pack used and cached pages at the lowest ids, moving their data and rewriting every "
           "block table; return {old_id: new_id}.")
      .def("stats", &cache_stats_dict,
           "Pages (free, cached, used, shared), reference counts, prefix hits, evictions, "
           "copy-on-write copies and the memory sharing saves.")
      .def("__contains__",
           [](const PyKVCache& self, llmds::SeqId seq_id) {
             return self.visit([&](const auto& c) { return c.contains(seq_id); });
           })
      .def("__len__",
           [](const PyKVCache& self) {
             return self.visit([](const auto& c) { return c.num_sequences(); });
           })
      .def_property_readonly("page_size", [](const PyKVCache& s) { return s.config().page_size; })
      .def_property_readonly("max_pages", [](const PyKVCache& s) { return s.config().max_pages; })
      .def_property_readonly("entry_width", [](const PyKVCache& s) { return s.config().entry_width; })
      .def_property_readonly("enable_prefix_sharing",
                             [](const PyKVCache& s) { return s.config().enable_prefix_sharing; })
      .def_property_readonly("dtype", &PyKVCache::dtype)
      .def("__repr__", [](const PyKVCache& self) {
        const auto& c = self.config();
        const auto sequences = self.visit([](const auto& k) { return k.num_sequences(); });
        return fmt::format(
            "KVCache(page_size={}, max_pages={}, enable_prefix_sharing={}, entry_width={}, "
            "dtype='{}', sequences={})",
            c.page_size, c.max_pages, c.enable_prefix_sharing ? "True" : "False", c.entry_width,
            self.dtype(), sequences);
      });
}
