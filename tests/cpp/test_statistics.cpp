#include "llmds/core/statistics.hpp"

#include <cmath>
#include <limits>
#include <random>
#include <vector>

#include <gtest/gtest.h>

namespace {

// Reference figures computed with numpy 2.4 and scipy 1.17:
//   np.percentile(x, [50, 95, 99]), np.std(x, ddof=1), scipy.stats.t.interval, t.ppf.
const std::vector<double> sample = {10.5, 12.3, 11.1, 15.2, 10.8, 9.9, 13.4};

TEST(Statistics, PercentilesInterpolateLinearlyAsNumpyDoes) {
  const auto p = llmds::compute_percentiles(sample);
  EXPECT_NEAR(p.p50, 11.1, 1e-12);
  EXPECT_NEAR(p.p95, 14.659999999999998, 1e-12);
  EXPECT_NEAR(p.p99, 15.091999999999999, 1e-12);
  EXPECT_DOUBLE_EQ(llmds::percentile(sample, 0.0), 9.9);
  EXPECT_DOUBLE_EQ(llmds::percentile(sample, 100.0), 15.2);
}

TEST(Statistics, PercentileOfOneValueIsThatValue) {
  const auto p = llmds::compute_percentiles(std::vector<double>{4.0});
  EXPECT_EQ(p.p50, 4.0);
  EXPECT_EQ(p.p99, 4.0);
}

TEST(Statistics, SummaryMatchesNumpyAndScipy) {
  const auto s = llmds::calculate_statistics(sample, 0.95);
  EXPECT_EQ(s.count, 7u);
  EXPECT_NEAR(s.mean, 11.885714285714286, 1e-12);
  EXPECT_NEAR(s.std, 1.875658614485919, 1e-12);
  EXPECT_EQ(s.min, 9.9);
  EXPECT_EQ(s.max, 15.2);
  EXPECT_NEAR(s.p95, 14.659999999999998, 1e-12);
  EXPECT_NEAR(s.ci_lower, 10.15101939081087, 1e-9);
  EXPECT_NEAR(s.ci_upper, 13.620409180617703, 1e-9);
  EXPECT_NEAR(s.cv, 100 * 1.875658614485919 / 11.885714285714286, 1e-9);
  const auto s90 = llmds::calculate_statistics(sample, 0.90);
  EXPECT_NEAR(s90.ci_lower, 10.508130981718441, 1e-9);
  EXPECT_NEAR(s90.ci_upper, 13.263297589710131, 1e-9);
}

TEST(Statistics, OneValueHasUndefinedSpread) {
  const auto s = llmds::calculate_statistics(std::vector<double>{3.0});
  EXPECT_EQ(s.mean, 3.0);
  EXPECT_TRUE(std::isnan(s.std));
  EXPECT_TRUE(std::isnan(s.ci_lower));
  EXPECT_TRUE(std::isnan(s.ci_upper));
  EXPECT_TRUE(std::isnan(s.cv));
}

TEST(Statistics, StdStaysAccurateForLargeCloseValues) {
  const std::vector<double> v = {1e9 + 4, 1e9 + 7, 1e9 + 13, 1e9 + 16};
  EXPECT_NEAR(llmds::calculate_statistics(v).std, std::sqrt(30.0), 1e-6);
}

TEST(Statistics, BadInputIsRejected) {
  const std::vector<double> empty;
  EXPECT_THROW((void)llmds::compute_percentiles(empty), std::invalid_argument);
  EXPECT_THROW((void)llmds::calculate_statistics(empty), std::invalid_argument);
  EXPECT_THROW((void)llmds::calculate_statistics(sample, 0.0), std::invalid_argument);
  EXPECT_THROW((void)llmds::calculate_statistics(sample, 1.0), std::invalid_argument);
  EXPECT_THROW((void)llmds::calculate_statistics(sample, std::nan("")), std::invalid_argument);
  const std::vector<double> with_nan = {1.0, std::nan("")};
  const std::vector<double> with_inf = {1.0, std::numeric_limits<double>::infinity()};
  EXPECT_THROW((void)llmds::compute_percentiles(with_nan), std::invalid_argument);
  EXPECT_THROW((void)llmds::calculate_statistics(with_inf), std::invalid_argument);
  EXPECT_THROW((void)llmds::percentile(sample, 101.0), std::invalid_argument);
}

struct Quantile {
  double p;
  double dof;
  double expected;
};

TEST(Statistics, StudentTQuantilesMatchScipy) {
  const Quantile cases[] = {
      {0.975, 1, 12.706204736174694},  {0.975, 2, 4.3026527297494619},
      {0.975, 5, 2.5705818356363146},  {0.975, 29, 2.045229642132703},
      {0.995, 3, 5.8409093097333553},  {0.95, 100, 1.6602343260853392},
      {0.9995, 1, 636.6192487687897},  {0.6, 7.5, 0.26250189880429486},
      {0.999999, 4, 41.577854150151502},
  };
  for (const auto& c : cases) {
    EXPECT_NEAR(llmds::student_t_quantile(c.p, c.dof), c.expected, 1e-9 * c.expected)
        << "p=" << c.p << " dof=" << c.dof;
    EXPECT_NEAR(llmds::student_t_quantile(1 - c.p, c.dof), -c.expected, 1e-8 * c.expected);
    EXPECT_NEAR(llmds::student_t_cdf(c.expected, c.dof), c.p, 1e-12);
  }
  EXPECT_EQ(llmds::student_t_quantile(0.5, 3), 0.0);
  EXPECT_THROW((void)llmds::student_t_quantile(1.0, 3), std::invalid_argument);
  EXPECT_THROW((void)llmds::student_t_quantile(0.9, 0), std::invalid_argument);
}

TEST(Statistics, PercentilesOfRandomDataAgreeWithSortedRanks) {
  std::mt19937_64 rng(3);
  std::normal_distribution<double> dist(100, 15);
  for (int n : {2, 3, 10, 101, 1000}) {
    std::vector<double> v(static_cast<std::size_t>(n));
    for (double& x : v) x = dist(rng);
    std::vector<double> sorted = v;
    std::sort(sorted.begin(), sorted.end());
    // With n = 101 ranks fall on whole numbers: p50 is the 51st value, p95 the 96th.
    if (n == 101) {
      EXPECT_EQ(llmds::percentile(v, 50), sorted[50]);
      EXPECT_EQ(llmds::percentile(v, 95), sorted[95]);
    }
    const double p = llmds::percentile(v, 37.5);
    const double rank = 0.375 * (n - 1);
    const auto lo = static_cast<std::size_t>(rank);
    const double hi = sorted[std::min<std::size_t>(lo + 1, sorted.size() - 1)];
    EXPECT_NEAR(p, sorted[lo] + (rank - lo) * (hi - sorted[lo]), 1e-9);
  }
}

}  // namespace
