#include "llmds/core/statistics.hpp"

#include <algorithm>
#include <cmath>
#include <limits>
#include <stdexcept>
#include <vector>

#include <fmt/format.h>

namespace llmds {
namespace {

constexpr double nan = std::numeric_limits<double>::quiet_NaN();

std::vector<double> sorted_copy(std::span<const double> values, const char* op) {
  if (values.empty()) throw std::invalid_argument(fmt::format("{}: no values", op));
  for (std::size_t i = 0; i < values.size(); ++i) {
    if (!std::isfinite(values[i])) {
      throw std::invalid_argument(
          fmt::format("{}: value {} at index {} is not finite", op, values[i], i));
    }
  }
  std::vector<double> sorted(values.begin(), values.end());
  std::sort(sorted.begin(), sorted.end());
  return sorted;
}

double percentile_of_sorted(const std::vector<double>& sorted, double q) {
  const double rank = q / 100.0 * static_cast<double>(sorted.size() - 1);
  const auto below = static_cast<std::size_t>(std::floor(rank));
  const std::size_t above = std::min(below + 1, sorted.size() - 1);
  const double frac = rank - static_cast<double>(below);
  return sorted[below] + frac * (sorted[above] - sorted[below]);
}

// The continued fraction of the regularised incomplete beta function I_x(a, b), evaluated with
// the modified Lentz method; it converges fast for x < (a + 1) / (a + b + 2).
double beta_continued_fraction(double a, double b, double x) {
  constexpr double tiny = 1e-300;
  constexpr double eps = 1e-16;
  auto guard = [](double v) { return std::abs(v) < tiny ? tiny : v; };
  double c = 1.0;
  double d = 1.0 / guard(1.0 - (a + b) * x / (a + 1.0));
  double result = d;
  for (int m = 1; m <= 1000; ++m) {
    const double m2 = 2.0 * m;
    double term = m * (b - m) * x / ((a - 1.0 + m2) * (a + m2));  // even step
    d = 1.0 / guard(1.0 + term * d);
    c = guard(1.0 + term / c);
    result *= d * c;
    term = -(a + m) * (a + b + m) * x / ((a + m2) * (a + 1.0 + m2));  // odd step
    d = 1.0 / guard(1.0 + term * d);
    c = guard(1.0 + term / c);
    const double delta = d * c;
    result *= delta;
    if (std::abs(delta - 1.0) < eps) break;
  }
  return result;
}

double regularized_incomplete_beta(double a, double b, double x) {
  if (x <= 0.0) return 0.0;
  if (x >= 1.0) return 1.0;
  const double log_front = std::lgamma(a + b) - std::lgamma(a) - std::lgamma(b) +
                           a * std::log(x) + b * std::log1p(-x);
  if (x < (a + 1.0) / (a + b + 2.0)) {
    return std::exp(log_front) * beta_continued_fraction(a, b, x) / a;
  }
  return 1.0 - std::exp(log_front) * beta_continued_fraction(b, a, 1.0 - x) / b;
}

// P(T > t) for t >= 0, computed directly (not as 1 - cdf) so that far tails keep their
// precision.
double student_t_upper_tail(double t, double dof) {
  return 0.5 * regularized_incomplete_beta(dof / 2.0, 0.5, dof / (dof + t * t));
}

void check_dof(double dof, const char* op) {
  if (!(dof > 0.0) || !std::isfinite(dof)) {
    throw std::invalid_argument(fmt::format("{}: degrees of freedom must be > 0, got {}", op, dof));
  }
}

}  // namespace

double percentile(std::span<const double> values, double q) {
  if (!(q >= 0.0 && q <= 100.0)) {
    throw std::invalid_argument(fmt::format("percentile: q must be in [0, 100], got {}", q));
  }
  return percentile_of_sorted(sorted_copy(values, "percentile"), q);
}

Percentiles compute_percentiles(std::span<const double> values) {
  const auto sorted = sorted_copy(values, "compute_percentiles");
  return {percentile_of_sorted(sorted, 50.0), percentile_of_sorted(sorted, 95.0),
          percentile_of_sorted(sorted, 99.0)};
}

Statistics calculate_statistics(std::span<const double> values, double confidence_level) {
  if (!(confidence_level > 0.0 && confidence_level < 1.0)) {
    throw std::invalid_argument(fmt::format(
        "calculate_statistics: confidence_level must be in (0, 1), got {}", confidence_level));
  }
  const auto sorted = sorted_copy(values, "calculate_statistics");
  const auto n = static_cast<double>(sorted.size());

  // Two passes: the mean, then squared deviations from it, which stays accurate when the values
  // are large and close together (where sum(x^2) - n * mean^2 cancels catastrophically).
  double sum = 0.0;
  for (double v : sorted) sum += v;
  const double mean = sum / n;
  double squares = 0.0;
  for (double v : sorted) squares += (v - mean) * (v - mean);

  Statistics s{};
  s.count = sorted.size();
  s.mean = mean;
  s.min = sorted.front();
  s.max = sorted.back();
  s.p50 = percentile_of_sorted(sorted, 50.0);
  s.p95 = percentile_of_sorted(sorted, 95.0);
  s.p99 = percentile_of_sorted(sorted, 99.0);
  if (sorted.size() < 2) {
    s.std = s.ci_lower = s.ci_upper = s.cv = nan;
    return s;
  }
  s.std = std::sqrt(squares / (n - 1.0));
  const double t = student_t_quantile(0.5 + confidence_level / 2.0, n - 1.0);
  const double half_width = t * s.std / std::sqrt(n);
  s.ci_lower = mean - half_width;
  s.ci_upper = mean + half_width;
  s.cv = mean == 0.0 ? nan : 100.0 * s.std / std::abs(mean);
  return s;
}

double student_t_cdf(double t, double dof) {
  check_dof(dof, "student_t_cdf");
  if (std::isnan(t)) return nan;
  const double tail = student_t_upper_tail(std::abs(t), dof);
  return t >= 0.0 ? 1.0 - tail : tail;
}

double student_t_quantile(double p, double dof) {
  check_dof(dof, "student_t_quantile");
  if (!(p > 0.0 && p < 1.0)) {
    throw std::invalid_argument(fmt::format("student_t_quantile: p must be in (0, 1), got {}", p));
  }
  if (p == 0.5) return 0.0;
  if (p < 0.5) return -student_t_quantile(1.0 - p, dof);
  // Solve upper_tail(t) = 1 - p by bisection: the tail is monotone in t, and bracketing makes
  // the search safe for any dof, including the heavy tails of dof = 1.
  const double target = 1.0 - p;
  double lo = 0.0;
  double hi = 1.0;
  while (student_t_upper_tail(hi, dof) > target) {
    lo = hi;
    hi *= 2.0;
  }
  for (int i = 0; i < 200 && hi - lo > 1e-15 * hi; ++i) {
    const double mid = 0.5 * (lo + hi);
    (student_t_upper_tail(mid, dof) > target ? lo : hi) = mid;
  }
  return 0.5 * (lo + hi);
}

}  // namespace llmds
