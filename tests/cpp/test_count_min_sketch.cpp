#include "llmds/sketch/count_min_sketch.hpp"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <fstream>
#include <random>
#include <string>
#include <unordered_map>
#include <vector>

#include <gtest/gtest.h>

#include "saved_bytes.hpp"
#include "test_data.hpp"

namespace {

using llmds::CountMinSketch;
using llmds::CountMinSketchConfig;

CountMinSketchConfig config(std::uint32_t width, std::uint32_t depth, bool conservative = true,
                            std::uint32_t top_k = 0, std::uint64_t seed = 0) {
  CountMinSketchConfig c;
  c.width = width;
  c.depth = depth;
  c.conservative = conservative;
  c.top_k = top_k;
  c.seed = seed;
  return c;
}

// A Zipf(s) stream over `distinct` items named "item-<rank>", drawn by inverse CDF.
std::vector<std::string> zipf_stream(std::size_t n, std::size_t distinct, double s,
                                     std::uint64_t seed) {
  std::vector<double> cdf(distinct);
  double sum = 0.0;
  for (std::size_t r = 0; r < distinct; ++r) cdf[r] = sum += 1.0 / std::pow(double(r + 1), s);
  for (double& c : cdf) c /= sum;
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<double> u(0.0, 1.0);
  std::vector<std::string> out;
  out.reserve(n);
  for (std::size_t i = 0; i < n; ++i) {
    const auto r = std::lower_bound(cdf.begin(), cdf.end(), u(rng)) - cdf.begin();
    out.push_back("item-" + std::to_string(r));
  }
  return out;
}

std::unordered_map<std::string, std::uint64_t> exact_counts(const std::vector<std::string>& s) {
  std::unordered_map<std::string, std::uint64_t> counts;
  for (const auto& item : s) ++counts[item];
  return counts;
}

TEST(CountMinSketch, DefaultsAreThePythonAPIs) {
  const CountMinSketch sketch;
  EXPECT_EQ(sketch.config().width, 2048u);
  EXPECT_EQ(sketch.config().depth, 4u);
  EXPECT_EQ(sketch.config().seed, 0u);
  EXPECT_TRUE(sketch.config().conservative);
  EXPECT_DOUBLE_EQ(sketch.epsilon(), std::exp(1.0) / 2048);
}

TEST(CountMinSketch, CountsExactlyWithoutCollisions) {
  CountMinSketch sketch(config(1 << 16, 4));
  sketch.add("a", 3);
  sketch.add("b");
  sketch.add("a", 2);
  EXPECT_EQ(sketch.estimate("a"), 5u);
  EXPECT_EQ(sketch.estimate("b"), 1u);
  EXPECT_EQ(sketch.estimate("never"), 0u);
  EXPECT_EQ(sketch.total_count(), 6u);
  EXPECT_TRUE(sketch.is_hot("a", 5));
  EXPECT_FALSE(sketch.is_hot("a", 6));
}

TEST(CountMinSketch, ErrorBoundIsEpsilonTimesTotal) {
  CountMinSketch sketch(config(100, 3));
  sketch.add("x", 1000);
  EXPECT_DOUBLE_EQ(sketch.get_error_bound(), std::exp(1.0) / 100 * 1000);
}

TEST(CountMinSketch, NeverUnderestimatesAndConservativeIsNeverWorse) {
  const auto stream = zipf_stream(200000, 20000, 1.1, 1);
  const auto truth = exact_counts(stream);
  CountMinSketch plain(config(512, 4, false));
  CountMinSketch conservative(config(512, 4, true));
  for (const auto& item : stream) {
    plain.add(item);
    conservative.add(item);
  }
  double plain_error = 0.0;
  double conservative_error = 0.0;
  std::size_t beyond_bound = 0;
  for (const auto& [item, count] : truth) {
    const std::uint64_t p = plain.estimate(item);
    const std::uint64_t c = conservative.estimate(item);
    ASSERT_GE(p, count) << item;
    ASSERT_GE(c, count) << item;
    ASSERT_LE(c, p) << item;  // conservative counters never exceed plain ones
    plain_error += double(p - count);
    conservative_error += double(c - count);
    if (double(p - count) > plain.get_error_bound()) ++beyond_bound;
  }
  EXPECT_LT(conservative_error, 0.75 * plain_error);  // measured: 0.56
  // P(error > epsilon N) <= delta = e^-4, per item; allow sampling slack.
  EXPECT_LE(double(beyond_bound) / double(truth.size()), 2 * plain.delta());
}

TEST(CountMinSketch, FromErrorSizesTheSketch) {
  const auto c = CountMinSketchConfig::from_error(0.001, 0.01);
  EXPECT_EQ(c.width, 2719u);  // ceil(e / 0.001)
  EXPECT_EQ(c.depth, 5u);     // ceil(ln 100)
  EXPECT_THROW(CountMinSketchConfig::from_error(0.0, 0.1), std::invalid_argument);
  EXPECT_THROW(CountMinSketchConfig::from_error(0.1, 1.0), std::invalid_argument);
  EXPECT_THROW(CountMinSketchConfig::from_error(1e-12, 0.1), std::invalid_argument);
}

TEST(CountMinSketch, BadConfigurationIsRejected) {
  EXPECT_THROW(CountMinSketch(config(0, 4)), std::invalid_argument);
  EXPECT_THROW(CountMinSketch(config(16, 0)), std::invalid_argument);
  EXPECT_THROW(CountMinSketch(config(16, 65)), std::invalid_argument);
}

TEST(CountMinSketch, NegativeCountOrThresholdIsRejectedAndChangesNothing) {
  CountMinSketch sketch(config(64, 2));
  sketch.add("a", 2);
  EXPECT_THROW(sketch.add("a", -1), std::invalid_argument);
  EXPECT_THROW((void)sketch.is_hot("a", -1), std::invalid_argument);
  EXPECT_EQ(sketch.estimate("a"), 2u);
  EXPECT_EQ(sketch.total_count(), 2u);
}

TEST(CountMinSketch, TotalPastTwoToTheSixtyFourIsRejected) {
  CountMinSketch sketch(config(64, 2));
  sketch.add("a", INT64_MAX);
  sketch.add("b", INT64_MAX);
  EXPECT_THROW(sketch.add("c", 2), std::overflow_error);
  EXPECT_EQ(sketch.total_count(), 2 * std::uint64_t{INT64_MAX});
  EXPECT_EQ(sketch.estimate("c"), 0u);
}

TEST(CountMinSketch, SeedsChangeTheHashFunctions) {
  CountMinSketch a(config(64, 1, true, 0, 1));
  CountMinSketch b(config(64, 1, true, 0, 2));
  for (int i = 0; i < 64; ++i) {
    a.add(std::to_string(i), i + 1);
    b.add(std::to_string(i), i + 1);
  }
  EXPECT_NE(a.to_bytes(), b.to_bytes());
}

TEST(CountMinSketch, MergeOfPlainSketchesEqualsSketchOfBothStreams) {
  const auto s1 = zipf_stream(20000, 3000, 1.1, 2);
  const auto s2 = zipf_stream(20000, 3000, 1.1, 3);
  CountMinSketch a(config(256, 4, false));
  CountMinSketch b(config(256, 4, false));
  CountMinSketch both(config(256, 4, false));
  for (const auto& item : s1) a.add(item), both.add(item);
  for (const auto& item : s2) b.add(item), both.add(item);
  a.merge(b);
  EXPECT_EQ(a.to_bytes(), both.to_bytes());
}

TEST(CountMinSketch, MergeOfConservativeSketchesStillNeverUnderestimates) {
  const auto s1 = zipf_stream(20000, 3000, 1.1, 4);
  const auto s2 = zipf_stream(20000, 3000, 1.1, 5);
  CountMinSketch a(config(256, 4));
  CountMinSketch b(config(256, 4));
  for (const auto& item : s1) a.add(item);
  for (const auto& item : s2) b.add(item);
  a.merge(b);
  auto truth = exact_counts(s1);
  for (const auto& [item, count] : exact_counts(s2)) truth[item] += count;
  for (const auto& [item, count] : truth) ASSERT_GE(a.estimate(item), count);
  EXPECT_EQ(a.total_count(), 40000u);
}

TEST(CountMinSketch, MergeOfMismatchedSketchesThrowsAndChangesNothing) {
  CountMinSketch a(config(64, 4));
  a.add("x", 3);
  const std::string before = a.to_bytes();
  EXPECT_THROW(a.merge(CountMinSketch(config(32, 4))), std::invalid_argument);
  EXPECT_THROW(a.merge(CountMinSketch(config(64, 3))), std::invalid_argument);
  EXPECT_THROW(a.merge(CountMinSketch(config(64, 4, true, 0, 9))), std::invalid_argument);
  // One plain and one conservative: their sum would be neither, and would not load again.
  EXPECT_THROW(a.merge(CountMinSketch(config(64, 4, false))), std::invalid_argument);
  EXPECT_EQ(a.to_bytes(), before);
}

TEST(CountMinSketch, HeavyHittersMatchTheExactTopItemsOfASkewedStream) {
  const auto stream = zipf_stream(100000, 10000, 1.1, 6);
  const auto truth = exact_counts(stream);
  CountMinSketch sketch(config(4096, 4, true, 10));
  for (const auto& item : stream) sketch.add(item);
  std::vector<std::pair<std::uint64_t, std::string>> exact;
  for (const auto& [item, count] : truth) exact.emplace_back(count, item);
  std::sort(exact.rbegin(), exact.rend());
  const auto hitters = sketch.heavy_hitters();
  ASSERT_EQ(hitters.size(), 10u);
  for (std::size_t i = 0; i < 10; ++i) {
    EXPECT_EQ(hitters[i].item, exact[i].second) << "rank " << i;
    EXPECT_GE(hitters[i].estimate, exact[i].first);
  }
}

TEST(CountMinSketch, MergeReRanksHeavyHittersOverBothSketches) {
  CountMinSketch a(config(1024, 4, true, 2));
  CountMinSketch b(config(1024, 4, true, 2));
  a.add("p", 10);
  a.add("q", 9);
  b.add("r", 30);
  b.add("q", 5);
  a.merge(b);
  const auto hitters = a.heavy_hitters();
  ASSERT_EQ(hitters.size(), 2u);
  EXPECT_EQ(hitters[0], (CountMinSketch::HeavyHitter{"r", 30}));
  EXPECT_EQ(hitters[1], (CountMinSketch::HeavyHitter{"q", 14}));
}

TEST(CountMinSketch, BytesRoundTripKeepsCountsAndHeavyHitters) {
  CountMinSketch sketch(config(300, 5, false, 4, 42));
  for (const auto& item : zipf_stream(5000, 500, 1.2, 7)) sketch.add(item);
  const CountMinSketch copy = CountMinSketch::from_bytes(sketch.to_bytes());
  EXPECT_EQ(copy.to_bytes(), sketch.to_bytes());
  EXPECT_EQ(copy.heavy_hitters(), sketch.heavy_hitters());
  EXPECT_EQ(copy.config().seed, 42u);
  EXPECT_FALSE(copy.config().conservative);
  EXPECT_EQ(copy.estimate("item-0"), sketch.estimate("item-0"));
}

TEST(CountMinSketch, CorruptedOrTruncatedBytesAreRejected) {
  CountMinSketch sketch(config(16, 2, true, 2));
  sketch.add("a", 3);
  sketch.add("b", 1);
  const std::string bytes = sketch.to_bytes();
  for (std::size_t i = 0; i < bytes.size(); ++i) {
    std::string bad = bytes;
    bad[i] = static_cast<char>(bad[i] ^ 0x20);
    EXPECT_THROW(CountMinSketch::from_bytes(bad), std::invalid_argument) << "byte " << i;
  }
  for (std::size_t n = 0; n < bytes.size(); ++n) {
    EXPECT_THROW(CountMinSketch::from_bytes(bytes.substr(0, n)), std::invalid_argument);
  }
  EXPECT_THROW(CountMinSketch::from_bytes(""), std::invalid_argument);
}

TEST(CountMinSketch, ClearForgetsEverything) {
  CountMinSketch sketch(config(64, 2, true, 3));
  sketch.add("a", 3);
  sketch.clear();
  EXPECT_EQ(sketch.estimate("a"), 0u);
  EXPECT_EQ(sketch.total_count(), 0u);
  EXPECT_TRUE(sketch.heavy_hitters().empty());
}

// Real data: the prefix-block ids of the Mooncake conversation trace are a real, skewed stream
// (the shared system-prompt blocks recur thousands of times).
TEST(CountMinSketch, MooncakeBlockIdsAreNeverUnderestimated) {
  LLMDS_REQUIRE_DATA_FILE(path, "traces/mooncake_fast25_conversation_trace.jsonl");
  std::ifstream in(path);
  std::vector<std::string> blocks;
  for (std::string line; std::getline(in, line);) {
    const auto open = line.find("\"hash_ids\": [");
    ASSERT_NE(open, std::string::npos) << line;
    std::size_t pos = open + 13;
    while (pos < line.size() && line[pos] != ']') {
      const std::size_t end = line.find_first_of(",]", pos);
      blocks.push_back(line.substr(pos, end - pos));
      pos = line[end] == ',' ? end + 2 : end;
    }
  }
  ASSERT_EQ(blocks.size(), 288500u);  // as the data README counts them
  const auto truth = exact_counts(blocks);
  ASSERT_EQ(truth.size(), 182790u);

  CountMinSketch sketch(config(2048, 4, true, 5));
  CountMinSketch plain(config(2048, 4, false));
  for (const auto& b : blocks) sketch.add(b), plain.add(b);
  double error = 0.0;
  double plain_error = 0.0;
  for (const auto& [block, count] : truth) {
    ASSERT_GE(sketch.estimate(block), count);
    error += double(sketch.estimate(block) - count);
    plain_error += double(plain.estimate(block) - count);
  }
  EXPECT_LT(error, plain_error);
  // Block 0 (the shared first block) is by far the most frequent.
  EXPECT_EQ(sketch.heavy_hitters().front().item, "0");
}

}  // namespace

// Saved sketches whose checksum is right but whose counters no stream of adds could leave (the
// fuzz target tests/fuzz/fuzz_count_min_sketch.cpp found them accepted). Offsets: conservative
// flag 28, top_k 29, total 33, counters from 41 row by row, then the heavy hitters.
TEST(CountMinSketch, ASavedSketchWhoseCountersContradictItsTotalIsRefused) {
  CountMinSketch plain(config(4, 2, false));
  plain.add("a", 3);
  plain.add("b", 2);
  const std::string p = plain.to_bytes();
  ASSERT_EQ(CountMinSketch::from_bytes(llmds::test::resealed(p)).to_bytes(), p);
  // Every add adds to one counter per row: a plain row sums to the total (5). Raising the
  // total, or moving counts into one row, breaks that, counter by counter within the total.
  EXPECT_THROW((void)CountMinSketch::from_bytes(llmds::test::with_u64(p, 33, 6)), std::invalid_argument);
  std::string moved = p;
  for (std::size_t i = 0; i < 4; ++i) moved = llmds::test::with_u64(moved, 41 + 8 * i, i == 0 ? 5 : 0);
  ASSERT_NO_THROW((void)CountMinSketch::from_bytes(moved));  // row 0 = 5 + 0 + 0 + 0: fine
  EXPECT_THROW((void)CountMinSketch::from_bytes(llmds::test::with_u64(moved, 49, 1)), std::invalid_argument);

  CountMinSketch conservative(config(4, 2, true));
  conservative.add("a", 3);
  conservative.add("b", 2);
  const std::string c = conservative.to_bytes();
  ASSERT_EQ(CountMinSketch::from_bytes(c).to_bytes(), c);
  // With conservative update a row sums to at most the total, and all rows to at least it.
  std::string over = c;
  for (std::size_t i = 0; i < 4; ++i) over = llmds::test::with_u64(over, 41 + 8 * i, 4);
  EXPECT_THROW((void)CountMinSketch::from_bytes(over), std::invalid_argument);
  std::string under = c;
  for (std::size_t i = 0; i < 8; ++i) under = llmds::test::with_u64(under, 41 + 8 * i, 0);
  EXPECT_THROW((void)CountMinSketch::from_bytes(under), std::invalid_argument);
  // The flag is 0 or 1, so that a sketch has one spelling.
  std::string flag = c;
  flag[28] = 2;
  EXPECT_THROW((void)CountMinSketch::from_bytes(llmds::test::resealed(flag)), std::invalid_argument);
}

TEST(CountMinSketch, ASavedSketchWithRepeatedUncountedOrUnorderedHeavyHittersIsRefused) {
  CountMinSketch sketch(config(64, 2, true, 3));
  sketch.add("xx", 5);
  sketch.add("yy", 2);
  const std::string bytes = sketch.to_bytes();
  ASSERT_EQ(CountMinSketch::from_bytes(bytes).heavy_hitters().size(), 2u);
  // The hitters close the file: count (8 bytes), then "xx" and "yy", each a length and 2 bytes.
  const std::size_t at = bytes.size() - 8 - 2 * (8 + 2);
  auto with_items = [&](const char* first, const char* second) {
    std::string b = bytes;
    b.replace(at + 8, 2, first);
    b.replace(at + 18, 2, second);
    return llmds::test::resealed(std::move(b));
  };
  ASSERT_EQ(CountMinSketch::from_bytes(with_items("xx", "yy")).to_bytes(), bytes);
  EXPECT_THROW((void)CountMinSketch::from_bytes(with_items("xx", "xx")), std::invalid_argument);  // repeated
  EXPECT_THROW((void)CountMinSketch::from_bytes(with_items("yy", "xx")), std::invalid_argument);  // out of order
  EXPECT_THROW((void)CountMinSketch::from_bytes(with_items("xx", "zq")), std::invalid_argument);  // never counted
}
