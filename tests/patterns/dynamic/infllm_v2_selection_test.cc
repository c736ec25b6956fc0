// infllm_v2's block selection against a slow float64 reference written here from the rule in
// infllm_v2.cc (not from its code): mean-pooled keys K1 (kernel, stride) and K2 (lse_kernel,
// lse_stride); lse_h(t) over the K2 windows visible to row t; window scores
// S(t, j) = sum over the kv group's query heads of exp(scale q_h(t) . K1[j] - lse_h(t)), summed
// over the rows of a query block (block granularity) or per row (token granularity); block
// score = max over the K1 windows overlapping the block (0 if none); the first `init` blocks and
// the `local` blocks before the diagonal one (and it) forced; the top `topk` among the visible
// blocks. The planner's sets, read through its plan's predicate row by row, must equal the
// reference's, except where two blocks' reference scores tie to f32 rounding.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <set>
#include <string>
#include <vector>

#include "support/planner_check.h"

namespace attnkit::testing {
namespace {

struct Rule {
  int64_t kernel, stride, lse_kernel, lse_stride, block, init, local, topk;
  bool per_token;
  std::string spec() const {
    return "infllm_v2:dense_len=0,kernel=" + std::to_string(kernel) +
           ",stride=" + std::to_string(stride) + ",lse_kernel=" + std::to_string(lse_kernel) +
           ",lse_stride=" + std::to_string(lse_stride) + ",block=" + std::to_string(block) +
           ",init=" + std::to_string(init) + ",local=" + std::to_string(local) +
           ",topk=" + std::to_string(topk) + ",granularity=" + (per_token ? "token" : "block");
  }
};

// Mean-pooled rows [m][D] of keys (b, g) over full windows only.
std::vector<std::vector<double>> pooled(const TensorView& k, int64_t b, int64_t g, int64_t kernel,
                                        int64_t stride) {
  const int64_t nk = k.shape[2], dim = k.shape[3];
  std::vector<std::vector<double>> out;
  for (int64_t start = 0; start + kernel <= nk; start += stride) {
    std::vector<double> mean(dim, 0.0);
    for (int64_t t = start; t < start + kernel; ++t)
      for (int64_t d = 0; d < dim; ++d) mean[d] += k.get(b, g, t, d) / double(kernel);
    out.push_back(mean);
  }
  return out;
}

double dot(const TensorView& q, int64_t b, int64_t h, int64_t i, const std::vector<double>& key) {
  double s = 0.0;
  for (size_t d = 0; d < key.size(); ++d) s += q.get(b, h, i, d) * key[d];
  return s;
}

// Reference block scores (forced blocks +inf) of blocks 0..last_block for the rows `rows` of
// query heads `heads`; `last` is the anchor row's last visible key.
std::vector<double> reference_scores(const TensorView& q, int64_t b,
                                     const std::vector<int64_t>& heads,
                                     const std::vector<int64_t>& rows,
                                     const std::vector<int64_t>& row_last,
                                     const std::vector<std::vector<double>>& k1,
                                     const std::vector<std::vector<double>>& k2, const Rule& r,
                                     double scale, int64_t last) {
  std::vector<double> window(k1.size(), 0.0);
  for (size_t n = 0; n < rows.size(); ++n) {
    const int64_t i = rows[n], seen = row_last[n];  // keys 0..seen visible
    for (int64_t h : heads) {
      double max = -INFINITY;
      std::vector<double> s2;
      for (size_t m = 0; m < k2.size(); ++m)
        if (int64_t(m) * r.lse_stride + r.lse_kernel - 1 <= seen) {
          s2.push_back(scale * dot(q, b, h, i, k2[m]));
          max = std::max(max, s2.back());
        }
      if (s2.empty()) continue;  // no K2 window visible: the row adds nothing
      double sum = 0.0;
      for (double s : s2) sum += std::exp(s - max);
      const double lse = max + std::log(sum);
      for (size_t j = 0; j < k1.size(); ++j)
        if (int64_t(j) * r.stride + r.kernel - 1 <= seen)
          window[j] += std::exp(scale * dot(q, b, h, i, k1[j]) - lse);
    }
  }
  const int64_t diag = last / r.block;
  std::vector<double> score(diag + 1);
  for (int64_t kb = 0; kb <= diag; ++kb) {
    double best = 0.0;
    for (size_t j = 0; j < k1.size(); ++j) {
      const int64_t lo = int64_t(j) * r.stride, hi = lo + r.kernel;  // [lo, hi)
      if (hi > kb * r.block && lo < (kb + 1) * r.block) best = std::max(best, window[j]);
    }
    const bool forced = kb < r.init || kb >= diag - r.local;
    score[kb] = forced ? std::numeric_limits<double>::infinity() : best;
  }
  return score;
}

// Fails unless `chosen` is a top-`topk` set of `score` up to ties within f32 rounding.
void expect_top_set(const std::vector<double>& score, const std::set<int64_t>& chosen, int64_t topk,
                    const std::string& where) {
  std::vector<double> sorted = score;
  std::sort(sorted.rbegin(), sorted.rend());
  const int64_t k = std::min<int64_t>(topk, score.size());
  ASSERT_EQ(static_cast<int64_t>(chosen.size()), k) << where;
  const double kth = sorted[k - 1];
  const double slack = std::isinf(kth) ? 0.0 : 1e-4 * kth + 1e-12;
  for (int64_t kb = 0; kb < static_cast<int64_t>(score.size()); ++kb) {
    const bool in = chosen.count(kb) > 0;
    if (in) {
      EXPECT_GE(score[kb], kth - slack) << where << ": block " << kb << " chosen, score "
                                        << score[kb] << " below the k-th " << kth;
    } else {
      EXPECT_LE(score[kb], kth + slack) << where << ": block " << kb << " left out, score "
                                        << score[kb] << " above the k-th " << kth;
    }
  }
}

void check_selection(const Rule& r, int64_t nq, int64_t nk, bool causal) {
  Problem p;
  p.batch = 2, p.heads_q = 4, p.heads_kv = 2, p.nq = nq, p.nk = nk, p.dim = 16;
  p.seed = static_cast<uint64_t>(nq * 7 + nk);
  Inputs in = make_inputs(p);
  AttentionArgs a = in.args();
  a.causal = causal;
  const auto pattern = make_pattern(r.spec());
  const ElementPredicate planned = plan_predicate(pattern->plan(PlanInputs::of(a)));
  const double scale = 1.0 / std::sqrt(double(p.dim));
  const int64_t group = p.heads_q / p.heads_kv;
  auto last_of = [&](int64_t i) { return causal ? std::min(nk - 1, i + nk - nq) : nk - 1; };
  for (int64_t b = 0; b < p.batch; ++b)
    for (int64_t g = 0; g < p.heads_kv; ++g) {
      const auto k1 = pooled(in.k.view(), b, g, r.kernel, r.stride);
      const auto k2 = pooled(in.k.view(), b, g, r.lse_kernel, r.lse_stride);
      std::vector<int64_t> heads;
      for (int64_t hh = 0; hh < group; ++hh) heads.push_back(g * group + hh);
      for (int64_t q0 = 0; q0 < nq; q0 += r.block) {
        const int64_t q1 = std::min(nq, q0 + r.block);
        for (int64_t i = q0; i < q1; ++i) {
          if (last_of(i) < 0) continue;
          // Block granularity: the block's rows, anchored at its last row; token: row i alone.
          std::vector<int64_t> rows, lasts;
          for (int64_t t = r.per_token ? i : q0; t < (r.per_token ? i + 1 : q1); ++t)
            if (last_of(t) >= 0) rows.push_back(t), lasts.push_back(last_of(t));
          const int64_t anchor = r.per_token ? last_of(i) : last_of(q1 - 1);
          const std::vector<double> score =
              reference_scores(in.q.view(), b, heads, rows, lasts, k1, k2, r, scale, anchor);
          for (int64_t h : heads) {
            std::set<int64_t> chosen;
            for (int64_t kb = 0; kb * r.block < nk; ++kb)
              if (planned(b, h, i, kb * r.block)) chosen.insert(kb);
            expect_top_set(score, chosen, r.topk,
                           r.spec() + " b" + std::to_string(b) + " h" + std::to_string(h) +
                               " row " + std::to_string(i));
          }
          if (::testing::Test::HasFailure()) return;  // one reported row is enough
        }
      }
    }
}

TEST(InfllmV2Selection, BlockGranularityEqualsTheSlowReference) {
  const Rule r{8, 4, 32, 16, 16, 1, 2, 6, false};
  check_selection(r, 200, 200, true);
  check_selection(r, 70, 300, true);
  check_selection(r, 150, 150, false);
}

TEST(InfllmV2Selection, TokenGranularityEqualsTheSlowReference) {
  const Rule r{8, 4, 32, 16, 16, 1, 1, 5, true};
  check_selection(r, 130, 130, true);
  check_selection(r, 40, 260, true);
}

TEST(InfllmV2Selection, OtherPoolsAndBudgets) {
  check_selection({16, 16, 64, 32, 32, 2, 1, 4, false}, 300, 300, true);  // stride = kernel
  check_selection({12, 4, 24, 8, 16, 0, 0, 3, false}, 250, 250, true);    // nothing forced
}

}  // namespace
}  // namespace attnkit::testing
