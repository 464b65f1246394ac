// Summary statistics for benchmark and replay figures: percentiles, mean, spread and a
// confidence interval of the mean.
//
// Percentiles interpolate linearly between the closest ranks, as numpy.percentile does by
// default: the q-th percentile of sorted x[0..n-1] sits at rank q/100 * (n - 1). The standard
// deviation is the sample one (n - 1 in the denominator). The confidence interval of the mean is
// mean +- t * std / sqrt(n), with t the quantile of Student's t distribution with n - 1 degrees of
// freedom, which is what a handful of benchmark repetitions call for (the normal quantile would
// make the interval too narrow for small n).
//
// Empty input, a NaN or infinite value, or a confidence level outside (0, 1) is
// std::invalid_argument. With a single value, std, cv and the interval are undefined and NaN.
#pragma once

#include <cstddef>
#include <span>

#include "llmds/core/stats_fields.hpp"

namespace llmds {

struct Percentiles {
  double p50;
  double p95;
  double p99;

  /// Every figure by name (core/stats_fields.hpp).
  template <class Visit>
  void for_each_field(Visit&& visit) const {
    visit("p50", p50);
    visit("p95", p95);
    visit("p99", p99);
  }
};

struct Statistics {
  double mean;
  double std;  // sample standard deviation
  double min;
  double max;
  double p50;
  double p95;
  double p99;
  double ci_lower;
  double ci_upper;
  double cv;  // coefficient of variation, 100 * std / |mean|, in percent
  std::size_t count;

  /// Every figure by name (core/stats_fields.hpp).
  template <class Visit>
  void for_each_field(Visit&& visit) const {
    visit("mean", mean);
    visit("std", std);
    visit("min", min);
    visit("max", max);
    visit("p50", p50);
    visit("p95", p95);
    visit("p99", p99);
    visit("ci_lower", ci_lower);
    visit("ci_upper", ci_upper);
    visit("cv", cv);
    visit("count", count);
  }
};

/// The q-th percentile (q in [0, 100]) of `values`, by linear interpolation. O(n log n).
[[nodiscard]] double percentile(std::span<const double> values, double q);

/// p50, p95 and p99 of `values`. O(n log n).
[[nodiscard]] Percentiles compute_percentiles(std::span<const double> values);

/// Mean, sample std, extremes, percentiles, the Student-t confidence interval of the mean at
/// `confidence_level`, the coefficient of variation and the count. O(n log n).
[[nodiscard]] Statistics calculate_statistics(std::span<const double> values,
                                              double confidence_level = 0.95);

/// P(T <= t) for Student's t distribution with `dof` > 0 degrees of freedom.
[[nodiscard]] double student_t_cdf(double t, double dof);

/// The t with P(T <= t) = p, for p in (0, 1) and `dof` > 0.
[[nodiscard]] double student_t_quantile(double p, double dof);

}  // namespace llmds
