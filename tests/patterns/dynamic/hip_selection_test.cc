// hip's tree search against a slow reference written here from the rule in hip.cc's header:
// candidate units after the sink and wholly before the block's last row's window; K = k/block_k
// initial chunks (aligned to a power-of-two step, or even); rounds that halve every node, score
// each half by its centre unit (max over the sampled query rows and the unit's sampled keys of
// q . k, unscaled, with keys inside a sampled row's window and keys past Nk counting -32000) and
// keep the K best halves (ties: lower position), until every node is one unit. Dot products in
// double; the planner's units, read through its plan's predicate at each block's last row, must
// be the reference's exactly (the inputs are random, so no two scores tie to f32 rounding).
#include <gtest/gtest.h>

#include <algorithm>
#include <string>
#include <vector>

#include "support/planner_check.h"

namespace attnkit::testing {
namespace {

struct HipRule {
  int64_t k, block_q, stride_q, block_k, stride_k, sink, window;
  bool aligned;
  std::string spec() const {
    return "hip:k=" + std::to_string(k) + ",block_q=" + std::to_string(block_q) +
           ",stride_q=" + std::to_string(stride_q) + ",block_k=" + std::to_string(block_k) +
           ",stride_k=" + std::to_string(stride_k) + ",sink=" + std::to_string(sink) +
           ",window=" + std::to_string(window) +
           ",kv_block=16,init=" + (aligned ? "aligned" : "even");
  }
};

struct Node {
  int64_t first, last;
  double score;
};

// The reference's units for one (b, h, query block).
std::vector<int64_t> reference_units(const HipRule& r, const TensorView& q, const TensorView& k,
                                     int64_t b, int64_t h, int64_t group, int64_t row0,
                                     int64_t row1, bool causal) {
  const int64_t nq = q.shape[2], nk = k.shape[2], dim = q.shape[3];
  const int64_t units = (nk + r.block_k - 1) / r.block_k;
  const int64_t p_last = row1 - 1 + nk - nq;
  const int64_t window_start = std::clamp<int64_t>(p_last - r.window + 1, 0, nk);
  const int64_t lo = std::min((r.sink + r.block_k - 1) / r.block_k, units);
  const int64_t hi = std::max(lo, window_start / r.block_k);
  const int64_t range = hi - lo, keep = std::max<int64_t>(1, r.k / r.block_k);
  std::vector<int64_t> out;
  if (range <= keep) {
    for (int64_t u = lo; u < hi; ++u) out.push_back(u);
    return out;
  }
  std::vector<int64_t> rows;  // sampled rows
  for (int64_t i = row0 + std::min(r.stride_q, nq) - 1; i < row1; i += r.stride_q)
    rows.push_back(i);
  if (rows.empty()) rows.push_back(row1 - 1);
  auto score_of = [&](int64_t first, int64_t last) {
    const int64_t centre = first + (last - first + 1) / 2;
    double best = -1e300;
    for (int64_t j = r.stride_k - 1; j < r.block_k; j += r.stride_k) {
      const int64_t key = centre * r.block_k + j;
      if (key >= nk) {
        best = std::max(best, -32000.0);
        continue;
      }
      for (int64_t i : rows) {
        const int64_t pos = causal ? i + nk - nq : nk - 1;
        if (pos - r.window <= key) {  // inside this row's sliding window
          best = std::max(best, -32000.0);
          continue;
        }
        double s = 0.0;
        for (int64_t d = 0; d < dim; ++d)
          s += double(q.get(b, h, i, d)) * k.get(b, h / group, key, d);
        best = std::max(best, s);
      }
    }
    return best;
  };
  int64_t power = 1;
  while (power * 2 <= range) power *= 2;
  const int64_t step = (power + keep - 1) / keep;
  auto start = [&](int64_t c) {
    const int64_t even = c * range / keep;
    return r.aligned ? std::min(even / step * step, range) : even;
  };
  std::vector<Node> nodes;
  for (int64_t c = 0; c < keep; ++c)
    if (start(c + 1) > start(c)) nodes.push_back({lo + start(c), lo + start(c + 1) - 1, 0.0});
  while (std::any_of(nodes.begin(), nodes.end(), [](const Node& n) { return n.first < n.last; })) {
    std::vector<Node> halves;
    for (const Node& n : nodes) {
      if (n.first == n.last) {
        halves.push_back(n);
        continue;
      }
      const int64_t mid = n.first + (n.last - n.first + 1) / 2;
      halves.push_back({n.first, mid - 1, score_of(n.first, mid - 1)});
      halves.push_back({mid, n.last, score_of(mid, n.last)});
    }
    std::sort(halves.begin(), halves.end(), [](const Node& a, const Node& c) {
      return a.score != c.score ? a.score > c.score : a.first < c.first;
    });
    if (static_cast<int64_t>(halves.size()) > keep) halves.resize(keep);
    nodes = halves;
  }
  for (const Node& n : nodes) out.push_back(n.first);
  std::sort(out.begin(), out.end());
  return out;
}

void check_selection(const HipRule& r, int64_t nq, int64_t nk, bool causal) {
  Problem p;
  p.batch = 2, p.heads_q = 4, p.heads_kv = 2, p.nq = nq, p.nk = nk, p.dim = 16;
  p.seed = static_cast<uint64_t>(5 * nq + nk);
  Inputs in = make_inputs(p);
  AttentionArgs a = in.args();
  a.causal = causal;
  const ElementPredicate planned = plan_predicate(make_pattern(r.spec())->plan(PlanInputs::of(a)));
  const int64_t units = (nk + r.block_k - 1) / r.block_k;
  for (int64_t b = 0; b < p.batch; ++b)
    for (int64_t h = 0; h < p.heads_q; ++h)
      for (int64_t row0 = 0; row0 < nq; row0 += r.block_q) {
        const int64_t row1 = std::min(nq, row0 + r.block_q);
        const std::vector<int64_t> want = reference_units(
            r, in.q.view(), in.k.view(), b, h, p.heads_q / p.heads_kv, row0, row1, causal);
        // The candidate units lie after the sink and before the last row's window: there the
        // predicate is true exactly for the searched units.
        const int64_t p_last = row1 - 1 + nk - nq;
        const int64_t lo = std::min((r.sink + r.block_k - 1) / r.block_k, units);
        const int64_t hi =
            std::max(lo, std::clamp<int64_t>(p_last - r.window + 1, 0, nk) / r.block_k);
        std::vector<int64_t> got;
        for (int64_t u = lo; u < hi; ++u)
          if (planned(b, h, row1 - 1, u * r.block_k)) got.push_back(u);
        ASSERT_EQ(got, want) << r.spec() << " b" << b << " h" << h << " block at " << row0
                             << (causal ? " causal" : "");
      }
}

TEST(HipSelection, TreeSearchEqualsTheSlowReference) {
  check_selection({32, 16, 2, 2, 1, 4, 16, true}, 300, 300, true);     // the official units
  check_selection({32, 16, 2, 2, 1, 4, 16, false}, 300, 300, true);    // even chunks
  check_selection({64, 32, 3, 4, 2, 8, 24, true}, 200, 500, true);     // strides, Nq < Nk
  check_selection({48, 16, 1, 16, 1, 16, 32, true}, 400, 400, false);  // 16-token units
}

}  // namespace
}  // namespace attnkit::testing
