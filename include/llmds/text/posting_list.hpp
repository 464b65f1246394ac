// PostingList: one term's compressed list of (document, term frequency) postings, in blocks
// with skip data and the per-block "impacts" that make block-max top-k retrieval possible.
//
// Layout. Documents are dense internal numbers (0, 1, 2, ... in the order they were added), so a
// list is sorted simply by being appended to. Postings are grouped in blocks of 128. Inside a
// block each posting is the varint of (gap - 1) * 2 + (tf == 1), followed by the varint of tf
// only when tf > 1: most postings have tf 1 and a small gap, and then cost one byte (Lucene's
// postings use the same flag). The first gap of a block is taken from the previous block's last
// document, so a block decodes on its own. No value is negative, so no zigzag step is needed. Per block, the skip
// entry holds the last document and where the block's bytes end, so a cursor that wants document
// d jumps over whole blocks without decoding them.
//
// Impacts. A block-max algorithm needs, per block, an upper bound of the BM25 contribution of
// any posting in it. That contribution grows with tf and shrinks with the document length, and
// avgdl changes as documents are added, so a stored score would go stale. Each block stores
// instead its Pareto frontier of (tf, document length) pairs: the postings no other posting of
// the block beats on both. The exact block maximum at the current avgdl is the best score over
// the frontier, which in practice holds 1 to 4 pairs (Lucene keeps the same "competitive
// impacts" per block).
//
// Cost: append O(1) amortised (plus the frontier upkeep of the last block); a cursor's
// next_geq(d) walks the skip entries, then decodes one block of at most 128 postings.
#pragma once

#include <algorithm>
#include <array>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <span>
#include <stdexcept>
#include <tuple>
#include <utility>
#include <vector>

#include "llmds/detail/assert.hpp"
#include "llmds/detail/reserve.hpp"
#include "llmds/detail/varint.hpp"

namespace llmds::text {

/// Internal document number: dense, in insertion order.
using DocNum = std::uint32_t;
inline constexpr DocNum kNoMoreDocs = std::numeric_limits<DocNum>::max();

/// One (tf, document length) pair of a block's Pareto frontier.
struct Impact {
  std::uint32_t tf;
  std::uint32_t doc_length;
  friend bool operator==(const Impact&, const Impact&) = default;
};

class PostingList {
 public:
  static constexpr std::size_t kBlockSize = 128;

  struct Block {
    DocNum last_doc;           // skip data: the block's last document
    std::uint32_t byte_end;    // its bytes end here (they begin where the previous block's end)
    std::uint32_t impact_end;  // its frontier ends here in impacts()
  };

  /// Reserves room for one more posting, so that the following append cannot throw. Callers
  /// that append to several lists for one document reserve all of them first.
  void reserve_one_more() {
    llmds::detail::reserve_room(bytes_, 10);
    llmds::detail::reserve_room(blocks_, 1);
    llmds::detail::reserve_room(impacts_, 1);
  }

  /// Appends a posting; `doc` must be larger than every document already in the list and tf > 0.
  /// Cannot throw after reserve_one_more().
  void append(DocNum doc, std::uint32_t tf, std::uint32_t doc_length) {
    LLMDS_ASSERT(size_ == 0 || doc > blocks_.back().last_doc, "postings must be appended in document order");
    LLMDS_ASSERT(tf > 0, "a posting has a positive term frequency");
    const bool new_block = size_ % kBlockSize == 0;
    const std::uint32_t previous = size_ == 0 ? 0 : blocks_.back().last_doc + 1;
    if (new_block) {
      const auto impact_begin = static_cast<std::uint32_t>(impacts_.size());
      blocks_.push_back(Block{doc, 0, impact_begin});
    }
    const std::uint64_t gap = doc - previous;
    llmds::detail::encode_varint(gap << 1 | (tf == 1 ? 1 : 0), bytes_);
    if (tf != 1) llmds::detail::encode_varint(tf, bytes_);
    Block& block = blocks_.back();
    block.last_doc = doc;
    block.byte_end = static_cast<std::uint32_t>(bytes_.size());
    add_to_frontier(Impact{tf, doc_length}, block_impact_begin(blocks_.size() - 1));
    block.impact_end = static_cast<std::uint32_t>(impacts_.size());
    ++size_;
  }

  [[nodiscard]] std::size_t size() const noexcept { return size_; }
  [[nodiscard]] bool empty() const noexcept { return size_ == 0; }
  [[nodiscard]] std::span<const Block> blocks() const noexcept { return blocks_; }
  [[nodiscard]] std::span<const std::uint8_t> bytes() const noexcept { return bytes_; }

  /// The frontier of block `b`: pairs sorted by tf ascending (and so by length ascending).
  [[nodiscard]] std::span<const Impact> impacts(std::size_t b) const noexcept {
    const std::uint32_t begin = block_impact_begin(b);
    return std::span<const Impact>(impacts_).subspan(begin, blocks_[b].impact_end - begin);
  }

  [[nodiscard]] std::uint32_t block_byte_begin(std::size_t b) const noexcept {
    return b == 0 ? 0 : blocks_[b - 1].byte_end;
  }
  [[nodiscard]] std::size_t block_postings(std::size_t b) const noexcept {
    return b + 1 < blocks_.size() ? kBlockSize : size_ - b * kBlockSize;
  }

  /// Decodes block `b` into docs/tfs (each of kBlockSize room); returns the posting count.
  std::size_t decode_block(std::size_t b, DocNum* docs, std::uint32_t* tfs) const noexcept {
    const std::uint8_t* p = bytes_.data() + block_byte_begin(b);
    DocNum doc = b == 0 ? 0 : blocks_[b - 1].last_doc + 1;
    const std::size_t n = block_postings(b);
    for (std::size_t i = 0; i < n; ++i) {
      const std::uint64_t code = llmds::detail::decode_varint(p);
      doc += static_cast<DocNum>(code >> 1);
      docs[i] = doc++;
      tfs[i] = (code & 1) != 0 ? 1 : static_cast<std::uint32_t>(llmds::detail::decode_varint(p));
    }
    return n;
  }

  /// Rebuilds a list from untrusted bytes in the layout bytes() holds (the postings of a saved
  /// index): exactly `count` postings, each of a document below `num_docs` (at most
  /// kNoMoreDocs). Skip entries and impacts are recomputed, with doc_length(doc) giving each
  /// document's length; on_posting(doc, tf) sees each posting in order once it is checked.
  /// Refused with std::invalid_argument saying what is wrong: a varint that runs past the end,
  /// does not fit 64 bits or is not the shortest spelling of its value (so that a list has one
  /// spelling, and a saved index reads back as the bytes it was saved as); a document at or
  /// past num_docs; a tf of 0, above 2^32 - 1, or of 1 without the flag; bytes left over.
  template <class DocLength, class OnPosting>
  static PostingList decode_checked(std::span<const std::uint8_t> bytes, std::uint64_t count,
                                    std::uint64_t num_docs, DocLength&& doc_length, OnPosting&& on_posting) {
    if (num_docs > kNoMoreDocs) throw std::invalid_argument("a posting list of more documents than a DocNum numbers");
    // Skip entries hold 32-bit byte offsets; every posting takes at least one byte, so a count
    // above the byte count is refused before anything is sized by it.
    if (bytes.size() > std::numeric_limits<std::uint32_t>::max()) {
      throw std::invalid_argument("a posting list of more than 2^32 - 1 bytes");
    }
    if (count > bytes.size()) throw std::invalid_argument("a posting list of more postings than bytes");
    auto next_value = [&, p = bytes.data(), end = bytes.data() + bytes.size()]() mutable {
      const std::uint8_t* start = p;
      std::uint64_t value = 0;
      if (!llmds::detail::decode_varint_checked(p, end, value) ||
          static_cast<std::size_t>(p - start) != llmds::detail::varint_size(value)) {
        throw std::invalid_argument("a posting list holds a malformed varint");
      }
      return std::pair{value, static_cast<std::size_t>(p - bytes.data())};
    };
    PostingList list;
    list.bytes_.reserve(bytes.size());
    list.blocks_.reserve(static_cast<std::size_t>((count + kBlockSize - 1) / kBlockSize));
    std::uint64_t next_doc = 0;  // the smallest document the next posting may name
    std::size_t consumed = 0;
    for (std::uint64_t i = 0; i < count; ++i) {
      const auto [code, after_code] = next_value();
      consumed = after_code;
      std::uint64_t tf = 1;
      if ((code & 1) == 0) {
        std::tie(tf, consumed) = next_value();
        if (tf < 2 || tf > std::numeric_limits<std::uint32_t>::max()) {
          throw std::invalid_argument("a posting list holds a term frequency of 0, of 1 without the flag, or past 2^32 - 1");
        }
      }
      const std::uint64_t gap = code >> 1;
      if (gap >= num_docs - next_doc) throw std::invalid_argument("a posting list names a document past the last");
      const auto doc = static_cast<DocNum>(next_doc + gap);
      list.reserve_one_more();
      list.append(doc, static_cast<std::uint32_t>(tf), doc_length(doc));
      on_posting(doc, static_cast<std::uint32_t>(tf));
      next_doc = std::uint64_t{doc} + 1;
    }
    if (consumed != bytes.size()) throw std::invalid_argument("a posting list has bytes after its last posting");
    list.shrink_to_fit();
    return list;
  }

  /// Heap bytes: postings, skip entries, impacts.
  [[nodiscard]] std::size_t posting_bytes() const noexcept { return bytes_.size(); }
  [[nodiscard]] std::size_t skip_bytes() const noexcept {
    return blocks_.size() * sizeof(Block) + impacts_.size() * sizeof(Impact);
  }
  [[nodiscard]] std::size_t memory_bytes() const noexcept {
    return bytes_.capacity() + blocks_.capacity() * sizeof(Block) +
           impacts_.capacity() * sizeof(Impact);
  }

  /// Drops spare capacity (after bulk building or loading).
  void shrink_to_fit() {
    bytes_.shrink_to_fit();
    blocks_.shrink_to_fit();
    impacts_.shrink_to_fit();
  }

 private:
  [[nodiscard]] std::uint32_t block_impact_begin(std::size_t b) const noexcept {
    return b == 0 ? 0 : blocks_[b - 1].impact_end;
  }

  // Adds `p` to the frontier that occupies impacts_[begin, end): unless a pair with tf >= and
  // length <= already dominates it, it replaces the pairs it dominates. The frontier is the tail
  // of impacts_, so this only touches the end of the vector, and with the room reserved by
  // reserve_one_more() nothing here allocates.
  void add_to_frontier(Impact p, std::size_t begin) noexcept {
    for (std::size_t i = begin; i < impacts_.size(); ++i) {
      if (impacts_[i].tf >= p.tf && impacts_[i].doc_length <= p.doc_length) return;
    }
    std::size_t kept = begin;
    for (std::size_t i = begin; i < impacts_.size(); ++i) {
      const bool dominated = p.tf >= impacts_[i].tf && p.doc_length <= impacts_[i].doc_length;
      if (!dominated) impacts_[kept++] = impacts_[i];
    }
    impacts_.erase(impacts_.begin() + static_cast<std::ptrdiff_t>(kept), impacts_.end());
    std::size_t at = begin;
    while (at < impacts_.size() && impacts_[at].tf < p.tf) ++at;
    impacts_.insert(impacts_.begin() + static_cast<std::ptrdiff_t>(at), p);
  }

  std::vector<std::uint8_t> bytes_;
  std::vector<Block> blocks_;
  std::vector<Impact> impacts_;
  std::size_t size_ = 0;
};

/// Reads a PostingList in document order, one decoded block at a time.
class PostingCursor {
 public:
  explicit PostingCursor(const PostingList& list) : list_(&list) {
    if (!list.empty()) load_block(0);
  }

  [[nodiscard]] DocNum doc() const noexcept { return pos_ < count_ ? docs_[pos_] : kNoMoreDocs; }
  [[nodiscard]] std::uint32_t tf() const noexcept { return tfs_[pos_]; }
  [[nodiscard]] std::size_t block() const noexcept { return block_; }

  void next() noexcept {
    if (++pos_ == count_ && block_ + 1 < list_->blocks().size()) load_block(block_ + 1);
  }

  /// Moves to the first posting with doc >= target (or past the end).
  void next_geq(DocNum target) noexcept {
    if (doc() >= target) return;
    const std::size_t b = block_of(target);
    if (b == list_->blocks().size()) {
      pos_ = count_;  // exhausted
      return;
    }
    if (b != block_) load_block(b);
    while (docs_[pos_] < target) ++pos_;
  }

  /// The block that holds the first doc >= target, from the current block on, without decoding
  /// anything; blocks().size() when there is none.
  [[nodiscard]] std::size_t block_of(DocNum target) const noexcept {
    const auto blocks = list_->blocks();
    std::size_t b = block_;
    while (b < blocks.size() && blocks[b].last_doc < target) ++b;
    return b;
  }

 private:
  void load_block(std::size_t b) noexcept {
    block_ = b;
    count_ = list_->decode_block(b, docs_.data(), tfs_.data());
    pos_ = 0;
  }

  const PostingList* list_;
  std::size_t block_ = 0;
  std::size_t pos_ = 0;
  std::size_t count_ = 0;
  std::array<DocNum, PostingList::kBlockSize> docs_{};
  std::array<std::uint32_t, PostingList::kBlockSize> tfs_{};
};

/// Calls on_posting(doc, tf) for every posting of list, in document order, a block at a time.
template <class OnPosting>
void for_each_posting(const PostingList& list, OnPosting&& on_posting) {
  std::array<DocNum, PostingList::kBlockSize> docs{};
  std::array<std::uint32_t, PostingList::kBlockSize> tfs{};
  for (std::size_t b = 0; b < list.blocks().size(); ++b) {
    const std::size_t count = list.decode_block(b, docs.data(), tfs.data());
    for (std::size_t i = 0; i < count; ++i) on_posting(docs[i], tfs[i]);
  }
}

}  // namespace llmds::text
