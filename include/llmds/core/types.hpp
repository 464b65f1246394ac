// The ids every family of llmds speaks in, defined once.
//
// A token id is what a tokenizer produces and a model consumes; a document id is the caller's
// name for a text or vector; a sequence id names one sequence's block table in a KV cache; a
// request id names one request in a scheduler or an engine. The widths follow what their users
// take: int32 tokens and pages (llama2.c's tokenizer, paged-attention kernels' block tables),
// int64 for ids a caller chooses, so any Python int a user is likely to pass fits.
//
// Page and block. The KV cache's memory is one arena cut into fixed-size pages: a *page* is a
// slot of that arena, page_size tokens of keys and values, named by a PageId. PagedAllocator
// hands pages out and takes them back (alloc / free) and knows nothing of their contents. A
// *block* is what lives in a page once a sequence fills it: the unit that is hashed (a chained
// block hash names a full block by its tokens and everything before them), shared between
// sequences by refcount, registered, cached and evicted. BlockPool manages blocks (allocate /
// touch / release: release drops one reference, and a block is only freed, its page returned to
// the allocator, when nothing refers to it and it is not cached). A block occupies exactly one
// page, so a BlockId is the PageId of the page holding it, and a block holds page_size tokens
// (a trace's block_size is the same number seen from the hashing side).
#pragma once

#include <cstdint>

namespace llmds {

/// A vocabulary index, as llama2.c-format tokenizers and models number their tokens.
using TokenId = std::int32_t;

/// A slot of a paged KV arena. int32 because that is what paged-attention kernels take for
/// block tables.
using PageId = std::int32_t;

/// A block of a BlockPool: the page that holds it (see the note above on pages and blocks).
using BlockId = PageId;

/// A sequence of a KV cache, chosen by the caller.
using SeqId = std::int64_t;

/// A document of an InvertedIndex or a RetrievalPipeline, chosen by the caller.
using DocId = std::int64_t;

/// A request of a Scheduler or an Engine, handed out by it.
using RequestId = std::int64_t;

}  // namespace llmds
