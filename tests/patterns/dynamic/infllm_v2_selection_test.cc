// infllm_v2's block selection against a slow float64 reference written here from the rule in
// infllm_v2.cc (not from its code): mean-pooled keys K1 (kernel, stride) and K2 (lse_kernel,
// lse_stride); lse_h(t) over the K2 windows visible to row t; window scores
// S(t, j) = sum over the kv group's query heads of exp(scale q_h(t) . K1[j] - lse_h(t)), summed
// over the rows of a query block (block granularity) or per row (token granularity); block
// score = max over the K1 windows overlapping the block (0 if none); the first `init` blocks and
// the `local` blocks before the diagonal one (and it) forced; the top `topk` among the visible
// blocks. score_dtype=bf16 rounds q and the pooled keys to bf16 before the dot products. The
// planner's sets, read through its plan's predicate row by row, must equal the reference's,
// except where two blocks' reference scores tie to f32 rounding.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <set>
#include <string>
#include <vector>

#include "kernels/cpu/planner_ops.h"
#include "support/planner_check.h"

namespace attnkit::testing {
namespace {

struct Rule {
  int64_t kernel, stride, lse_kernel, lse_stride, block, init, local, topk;
  bool per_token;
  bool bf16 = true;  // score_dtype
  std::string spec() const {
    return "infllm_v2:dense_len=0,kernel=" + std::to_string(kernel) +
           ",stride=" + std::to_string(stride) + ",lse_kernel=" + std::to_string(lse_kernel) +
           ",lse_stride=" + std::to_string(lse_stride) + ",block=" + std::to_string(block) +
           ",init=" + std::to_string(init) + ",local=" + std::to_string(local) +
           ",topk=" + std::to_string(topk) + ",granularity=" + (per_token ? "token" : "block") +
           ",score_dtype=" + (bf16 ? "bf16" : "f32");
  }
};

// Mean-pooled rows [m][D] of keys (b, g) over full windows only (each mean rounded to bf16).
std::vector<std::vector<double>> pooled(const TensorView& k, int64_t b, int64_t g, int64_t kernel,
                                        int64_t stride, bool bf16) {
  const int64_t nk = k.shape[2], dim = k.shape[3];
  std::vector<std::vector<double>> out;
  for (int64_t start = 0; start + kernel <= nk; start += stride) {
    std::vector<double> mean(dim, 0.0);
    for (int64_t t = start; t < start + kernel; ++t)
      for (int64_t d = 0; d < dim; ++d) mean[d] += k.get(b, g, t, d) / double(kernel);
    if (bf16)
      for (double& x : mean) x = cpu::round_to_bf16(static_cast<float>(x));
    out.push_back(mean);
  }
  return out;
}

double dot(const TensorView& q, int64_t b, int64_t h, int64_t i, const std::vector<double>& key,
           bool bf16) {
  double s = 0.0;
  for (size_t d = 0; d < key.size(); ++d) {
    const double x = q.get(b, h, i, d);
    s += (bf16 ? cpu::round_to_bf16(static_cast<float>(x)) : x) * key[d];
  }
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
          s2.push_back(scale * dot(q, b, h, i, k2[m], r.bf16));
          max = std::max(max, s2.back());
        }
      if (s2.empty()) continue;  // no K2 window visible: the row adds nothing
      double sum = 0.0;
      for (double s : s2) sum += std::exp(s - max);
      const double lse = max + std::log(sum);
      for (size_t j = 0; j < k1.size(); ++j)
        if (int64_t(j) * r.stride + r.kernel - 1 <= seen)
          window[j] += std::exp(scale * dot(q, b, h, i, k1[j], r.bf16) - lse);
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
      const auto k1 = pooled(in.k.view(), b, g, r.kernel, r.stride, r.bf16);
      const auto k2 = pooled(in.k.view(), b, g, r.lse_kernel, r.lse_stride, r.bf16);
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
  for (bool bf16 : {true, false}) {
    const Rule r{8, 4, 32, 16, 16, 1, 2, 6, false, bf16};
    check_selection(r, 200, 200, true);
    check_selection(r, 70, 300, true);
    check_selection(r, 150, 150, false);
  }
}

TEST(InfllmV2Selection, TokenGranularityEqualsTheSlowReference) {
  for (bool bf16 : {true, false}) {
    const Rule r{8, 4, 32, 16, 16, 1, 1, 5, true, bf16};
    check_selection(r, 130, 130, true);
    check_selection(r, 40, 260, true);
  }
}

TEST(InfllmV2Selection, Bf16RoundsTheQueriesBeforeScoring) {
  // One free choice between block 1 (keys e1) and block 2 (keys e0) for queries (1 + 2^-10, 1):
  // f32 scores block 2 higher; in bf16 the query is (1, 1), the two scores tie exactly and the
  // tie goes to the lower block. Pools = blocks = 16 tokens, so the pooled keys are the keys.
  Problem p;
  p.nq = 64, p.nk = 64, p.dim = 16;
  Inputs in = make_inputs(p);
  std::fill(in.q.f32(), in.q.f32() + in.q.numel(), 0.0f);
  std::fill(in.k.f32(), in.k.f32() + in.k.numel(), 0.0f);
  for (int64_t i = 0; i < 64; ++i) {
    in.q.f32()[i * 16] = 1.0f + std::ldexp(1.0f, -10);
    in.q.f32()[i * 16 + 1] = 1.0f;
  }
  for (int64_t t = 16; t < 32; ++t) in.k.f32()[t * 16 + 1] = 1.0f;  // block 1: e1
  for (int64_t t = 32; t < 48; ++t) in.k.f32()[t * 16] = 1.0f;      // block 2: e0
  AttentionArgs a = in.args();
  a.causal = true;
  const std::string spec =
      "infllm_v2:dense_len=0,kernel=16,stride=16,lse_kernel=16,lse_stride=16,block=16,init=0,"
      "local=0,topk=2,score_dtype=";
  for (auto [dtype, chosen] : {std::pair<std::string, int64_t>{"f32", 2}, {"bf16", 1}}) {
    const ElementPredicate planned =
        plan_predicate(make_pattern(spec + dtype)->plan(PlanInputs::of(a)));
    for (int64_t kb = 0; kb < 3; ++kb)  // row 63: block 3 is forced, one of 0..2 chosen
      EXPECT_EQ(planned(0, 0, 63, kb * 16), kb == chosen) << dtype << " block " << kb;
  }
}

TEST(InfllmV2Selection, OtherPoolsAndBudgets) {
  check_selection({16, 16, 64, 32, 32, 2, 1, 4, false}, 300, 300, true);  // stride = kernel
  check_selection({12, 4, 24, 8, 16, 0, 0, 3, false}, 250, 250, true);    // nothing forced
  check_selection({12, 4, 24, 8, 16, 0, 0, 3, false, false}, 250, 250, true);
}

}  // namespace
}  // namespace attnkit::testing
