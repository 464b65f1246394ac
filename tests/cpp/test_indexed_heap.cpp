#include "llmds/core/indexed_heap.hpp"

#include <cmath>
#include <cstdint>
#include <limits>
#include <map>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include <gtest/gtest.h>

namespace {

using llmds::HeapOrder;
using Heap = llmds::IndexedHeap<>;
using Entry = Heap::entry_type;

// The naive model: a map of key -> score, the top found by a linear scan with the same order
// and tie rule (smaller key first) as the heap promises.
struct ReferenceHeap {
  HeapOrder order;
  std::map<std::int64_t, double> scores;

  [[nodiscard]] std::optional<Entry> top() const {
    std::optional<Entry> best;
    for (const auto& [key, score] : scores) {
      const bool better = !best || (order == HeapOrder::min ? score < best->score
                                                            : score > best->score);
      if (better) best = Entry{score, key};  // keys ascend, so ties keep the smaller key
    }
    return best;
  }
};

TEST(IndexedHeap, MinHeapPopsInAscendingScoreOrder) {
  Heap heap;
  heap.push(1, 5.0);
  heap.push(2, 1.0);
  heap.push(3, 3.0);
  EXPECT_EQ(heap.pop(), (Entry{1.0, 2}));
  EXPECT_EQ(heap.pop(), (Entry{3.0, 3}));
  EXPECT_EQ(heap.pop(), (Entry{5.0, 1}));
  EXPECT_TRUE(heap.is_empty());
}

TEST(IndexedHeap, MaxHeapPopsInDescendingScoreOrder) {
  Heap heap(HeapOrder::max);
  for (std::int64_t k = 0; k < 10; ++k) heap.push(k, static_cast<double>((k * 7) % 10));
  double previous = std::numeric_limits<double>::infinity();
  while (!heap.is_empty()) {
    const Entry e = heap.pop();
    EXPECT_LE(e.score, previous);
    previous = e.score;
  }
}

TEST(IndexedHeap, EqualScoresPopSmallerKeyFirstInBothOrders) {
  for (HeapOrder order : {HeapOrder::min, HeapOrder::max}) {
    Heap heap(order);
    heap.push(9, 1.0);
    heap.push(4, 1.0);
    heap.push(6, 1.0);
    EXPECT_EQ(heap.pop().key, 4);
    EXPECT_EQ(heap.pop().key, 6);
    EXPECT_EQ(heap.pop().key, 9);
  }
}

TEST(IndexedHeap, DecreaseKeyInMinHeapMovesEntryUp) {
  Heap heap;
  heap.push(1, 1.0);
  heap.push(2, 5.0);
  heap.decrease_key(2, 0.5);
  EXPECT_EQ(heap.peek(), (Entry{0.5, 2}));
}

TEST(IndexedHeap, DecreaseKeyInMaxHeapMovesEntryDown) {
  Heap heap(HeapOrder::max);
  heap.push(1, 10.0);
  heap.push(2, 5.0);
  heap.decrease_key(1, 1.0);
  EXPECT_EQ(heap.peek(), (Entry{5.0, 2}));
}

TEST(IndexedHeap, IncreaseKeyInMaxHeapMovesEntryUp) {
  Heap heap(HeapOrder::max);
  heap.push(1, 10.0);
  heap.push(2, 5.0);
  heap.increase_key(2, 20.0);
  EXPECT_EQ(heap.peek(), (Entry{20.0, 2}));
}

TEST(IndexedHeap, IncreaseKeyInMinHeapMovesEntryDown) {
  Heap heap;
  heap.push(1, 1.0);
  heap.push(2, 5.0);
  heap.increase_key(1, 9.0);
  EXPECT_EQ(heap.peek(), (Entry{5.0, 2}));
}

TEST(IndexedHeap, RescoringToTheSameScoreIsAllowed) {
  Heap heap;
  heap.push(1, 3.0);
  heap.decrease_key(1, 3.0);
  heap.increase_key(1, 3.0);
  EXPECT_EQ(heap.get_score(1), 3.0);
}

TEST(IndexedHeap, EraseRemovesFromTheMiddleAndReturnsTheEntry) {
  Heap heap;
  for (std::int64_t k = 0; k < 8; ++k) heap.push(k, static_cast<double>(k));
  EXPECT_EQ(heap.erase(5), (Entry{5.0, 5}));
  EXPECT_FALSE(heap.contains(5));
  EXPECT_EQ(heap.size(), 7u);
  std::vector<std::int64_t> order;
  while (!heap.is_empty()) order.push_back(heap.pop().key);
  EXPECT_EQ(order, (std::vector<std::int64_t>{0, 1, 2, 3, 4, 6, 7}));
}

TEST(IndexedHeap, GetScoreAndPeekReturnNulloptWhenAbsent) {
  Heap heap;
  EXPECT_EQ(heap.peek(), std::nullopt);
  EXPECT_EQ(heap.get_score(3), std::nullopt);
  heap.push(3, 2.5);
  EXPECT_EQ(heap.get_score(3), 2.5);
}

TEST(IndexedHeap, PopOnEmptyThrowsOutOfRange) {
  Heap heap;
  EXPECT_THROW(heap.pop(), std::out_of_range);
}

TEST(IndexedHeap, DuplicatePushThrowsAndChangesNothing) {
  Heap heap;
  heap.push(1, 2.0);
  EXPECT_THROW(heap.push(1, 0.0), std::invalid_argument);
  EXPECT_EQ(heap.size(), 1u);
  EXPECT_EQ(heap.get_score(1), 2.0);
}

TEST(IndexedHeap, UnknownKeyThrowsKeyError) {
  Heap heap;
  heap.push(1, 2.0);
  EXPECT_THROW(heap.decrease_key(7, 1.0), llmds::KeyError);
  EXPECT_THROW(heap.increase_key(7, 3.0), llmds::KeyError);
  EXPECT_THROW(heap.update_key(7, 3.0), llmds::KeyError);
  EXPECT_THROW(heap.erase(7), llmds::KeyError);
  EXPECT_EQ(heap.size(), 1u);
}

TEST(IndexedHeap, RescoringTheWrongWayThrowsAndChangesNothing) {
  for (HeapOrder order : {HeapOrder::min, HeapOrder::max}) {
    Heap heap(order);
    heap.push(1, 2.0);
    heap.push(2, 4.0);
    EXPECT_THROW(heap.decrease_key(1, 3.0), std::invalid_argument);
    EXPECT_THROW(heap.increase_key(2, 1.0), std::invalid_argument);
    EXPECT_EQ(heap.get_score(1), 2.0);
    EXPECT_EQ(heap.get_score(2), 4.0);
  }
}

TEST(IndexedHeap, NanScoresAreRejected) {
  Heap heap;
  const double nan = std::nan("");
  EXPECT_THROW(heap.push(1, nan), std::invalid_argument);
  heap.push(1, 1.0);
  EXPECT_THROW(heap.decrease_key(1, nan), std::invalid_argument);
  EXPECT_THROW(heap.increase_key(1, nan), std::invalid_argument);
  EXPECT_THROW(heap.update_key(1, nan), std::invalid_argument);
  EXPECT_EQ(heap.get_score(1), 1.0);
  EXPECT_EQ(heap.size(), 1u);
}

TEST(IndexedHeap, SortedListsEntriesInPopOrderWithoutChangingTheHeap) {
  Heap heap(HeapOrder::max);
  heap.push(1, 1.0);
  heap.push(2, 3.0);
  heap.push(3, 2.0);
  EXPECT_EQ(heap.sorted(), (std::vector<Entry>{{3.0, 2}, {2.0, 3}, {1.0, 1}}));
  EXPECT_EQ(heap.size(), 3u);
}

TEST(IndexedHeap, CopiesPopIndependently) {
  Heap heap;
  for (std::int64_t k = 0; k < 100; ++k) heap.push(k, static_cast<double>(k % 7));
  Heap copy = heap;
  for (int i = 0; i < 100; ++i) ASSERT_EQ(copy.pop(), heap.pop());
  EXPECT_TRUE(copy.is_empty());
}

TEST(IndexedHeap, WorksWithStringKeys) {
  llmds::IndexedHeap<std::string, int> heap;
  heap.push("b", 2);
  heap.push("a", 2);
  heap.push("c", 1);
  heap.update_key("c", 5);
  EXPECT_EQ(heap.pop().key, "a");
  EXPECT_EQ(heap.pop().key, "b");
  EXPECT_EQ(heap.pop().key, "c");
}

TEST(IndexedHeap, ManyRoundsOfFillingAndDrainingKeepTheOrder) {
  Heap heap;
  for (int round = 0; round < 100; ++round) {
    for (std::int64_t k = 0; k < 50; ++k) heap.push(k + round * 50, static_cast<double>(-k));
    for (std::int64_t k = 49; k >= 0; --k) ASSERT_EQ(heap.pop(), (Entry{double(-k), k + round * 50}));
  }
  heap.push(1, 1.0);
  EXPECT_EQ(heap.peek(), (Entry{1.0, 1}));
}

// Random operations against the reference model, in both orders, with many equal scores so that
// the tie rule is exercised.
class IndexedHeapRandomized : public ::testing::TestWithParam<HeapOrder> {};

TEST_P(IndexedHeapRandomized, AgreesWithReferenceModel) {
  const HeapOrder order = GetParam();
  std::mt19937_64 rng(20261123);
  Heap heap(order);
  ReferenceHeap model{order, {}};
  std::uniform_int_distribution<std::int64_t> key_dist(0, 299);
  std::uniform_int_distribution<int> score_dist(0, 40);
  std::uniform_int_distribution<int> op_dist(0, 6);

  for (int step = 0; step < 60000; ++step) {
    const std::int64_t key = key_dist(rng);
    const double score = score_dist(rng);
    const bool present = model.scores.contains(key);
    switch (op_dist(rng)) {
      case 0:
      case 1:
        if (present) {
          EXPECT_THROW(heap.push(key, score), std::invalid_argument);
        } else {
          heap.push(key, score);
          model.scores[key] = score;
        }
        break;
      case 2:
        if (model.scores.empty()) {
          EXPECT_THROW(heap.pop(), std::out_of_range);
        } else {
          const Entry expected = *model.top();
          ASSERT_EQ(heap.pop(), expected) << "step " << step;
          model.scores.erase(expected.key);
        }
        break;
      case 3: {
        if (!present) {
          EXPECT_THROW(heap.decrease_key(key, score), llmds::KeyError);
        } else if (score > model.scores[key]) {
          EXPECT_THROW(heap.decrease_key(key, score), std::invalid_argument);
        } else {
          heap.decrease_key(key, score);
          model.scores[key] = score;
        }
        break;
      }
      case 4: {
        if (!present) {
          EXPECT_THROW(heap.increase_key(key, score), llmds::KeyError);
        } else if (score < model.scores[key]) {
          EXPECT_THROW(heap.increase_key(key, score), std::invalid_argument);
        } else {
          heap.increase_key(key, score);
          model.scores[key] = score;
        }
        break;
      }
      case 5:
        if (present) {
          ASSERT_EQ(heap.erase(key), (Entry{model.scores[key], key}));
          model.scores.erase(key);
        } else {
          EXPECT_THROW(heap.erase(key), llmds::KeyError);
        }
        break;
      case 6:
        if (present) {
          heap.update_key(key, score);
          model.scores[key] = score;
        }
        break;
    }
    ASSERT_EQ(heap.size(), model.scores.size());
    ASSERT_EQ(heap.peek(), model.top()) << "step " << step;
    const auto it = model.scores.find(key);
    ASSERT_EQ(heap.get_score(key),
              it == model.scores.end() ? std::nullopt : std::optional<double>(it->second));
  }
  // Drain: the full pop order matches the model's.
  while (!model.scores.empty()) {
    const Entry expected = *model.top();
    ASSERT_EQ(heap.pop(), expected);
    model.scores.erase(expected.key);
  }
  EXPECT_TRUE(heap.is_empty());
}

INSTANTIATE_TEST_SUITE_P(BothOrders, IndexedHeapRandomized,
                         ::testing::Values(HeapOrder::min, HeapOrder::max),
                         [](const auto& test) {
                           return test.param == HeapOrder::min ? std::string("Min")
                                                               : std::string("Max");
                         });

}  // namespace
