// dhsa: Dynamic Hierarchical Sparse Attention (Xiong, Zou, Fekri, Cho; arXiv 2510.24606), the
// arXiv-v1 algorithm with dynamic chunks (the repository's legacy/ path).
//
// Rule, per batch entry (shared by all heads):
//   boundaries B = dhsa_boundaries(...)         (see dhsa_boundaries.cc: the paper's trained
//                                                predictor is not available, so the boundary
//                                                SCORE is attnkit's heuristic; the candidate
//                                                rules are the official code's)
//   q_repr[i] = mean over heads and rows of query block i (block rows) of q, * sqrt(len_i)
//   k_repr[c] = mean over kv heads and tokens of chunk c of k, * sqrt(|C_c|)
//   S[i, c]   = q_repr[i] . k_repr[c];  token score S_t[i, j] = S[i, chunk_of(j)] (upsampled)
//   sel(i)    = the last `local` (64) keys the block can see
//               U the top (budget - local) other visible keys by S_t[i, :]
//   attention over sel(i), causal ANDed (block-sparse kernel with a range predicate).
// Defaults: block 64, local 64, boundary window 4, NMS 8, beta 8 (paper / legacy flags), rules
// official; budget 2048 tokens (the paper sets the budget per experiment; choose yours with
// budget=). The selection stage below matches the official _obtain_dhsa_mask; results measure
// the selection with heuristic chunks, not DHSA's learned chunking.
// Choices, documented:
// - Tokens of one chunk share a score, so top-k takes chunks whole in score order (ties to the
//   earlier chunk); the chunk at the cut gives its LATEST tokens (nearest the query) to fill
//   the budget exactly.
// - Visibility and the local window are taken at the block's last row (p_last); rows earlier
//   in the block lose only the causal part. Without causality every key is visible and the
//   local part is the last `local` keys of the sequence.
#include "patterns/dynamic/dhsa.h"

#include <algorithm>
#include <cmath>
#include <memory>
#include <numeric>
#include <vector>

#include "core/attention_args.h"
#include "kernels/cpu/planner_ops.h"
#include "patterns/dynamic/dynamic_patterns.h"
#include "patterns/dynamic/planner.h"

namespace attnkit::dynamic_patterns {
namespace {

using Ranges = std::vector<std::pair<int64_t, int64_t>>;  // sorted, disjoint [start, end)

// Allowed keys of each (b, query block): a list of key ranges.
class DhsaRule final : public TilePredicate {
 public:
  DhsaRule(std::vector<Ranges> ranges, int64_t q_blocks, int64_t block)
      : ranges_(std::move(ranges)), q_blocks_(q_blocks), block_(block) {}
  void fill(int64_t b, int64_t, int64_t q0, int64_t nq, int64_t k0, int64_t nk, uint8_t* allow,
            int64_t ld) const override {
    for (int64_t r = 0; r < nq; ++r) {
      uint8_t* row = allow + r * ld;
      std::fill(row, row + nk, 0);
      for (const auto& [s, e] : ranges_[b * q_blocks_ + (q0 + r) / block_])
        for (int64_t j = std::max(s, k0); j < std::min(e, k0 + nk); ++j) row[j - k0] = 1;
    }
  }

 private:
  std::vector<Ranges> ranges_;
  int64_t q_blocks_, block_;
};

class DhsaPattern final : public Pattern {
 public:
  explicit DhsaPattern(const PatternParams& params)
      : Pattern(params, Direction::kCaller),
        block_(params.get_int("block")),
        budget_(params.get_int("budget")) {
    bp_.local = params.get_int("local");
    bp_.window = params.get_int("window");
    bp_.nms = params.get_int("nms");
    bp_.beta = params.get_int("beta");
    bp_.sigma = params.get_real("sigma");
    bp_.official_rules = params.get_string("rules") == "official";
  }
  Plan plan(const PlanInputs& in) const override;

 private:
  int64_t block_, budget_;
  DhsaBoundaryParams bp_;
};

Plan DhsaPattern::plan(const PlanInputs& in) const {
  in.validate(true);
  const Dims d = dims_of(in);
  const int64_t q_blocks = (d.nq + block_ - 1) / block_;
  std::vector<Ranges> ranges(d.batch * q_blocks);
  std::vector<std::vector<BlockEntry>> lists(d.batch * q_blocks);
  const int threads = effective_threads(in.threads);
  for (int64_t b = 0; b < d.batch; ++b) {
    const auto bounds = dhsa_boundaries(in, b, bp_);
    const int64_t chunks = static_cast<int64_t>(bounds.size()) - 1;
    // Chunk representatives (mean over kv heads and tokens, * sqrt(len)) and query-block ones.
    std::vector<float> k_repr(chunks * d.dim, 0.0f), q_repr(q_blocks * d.dim, 0.0f);
    std::vector<float> rows;
#pragma omp parallel for schedule(dynamic, 16) num_threads(threads) private(rows)
    for (int64_t c = 0; c < chunks; ++c) {
      const int64_t len = bounds[c + 1] - bounds[c];
      rows.resize(len * d.dim);
      std::vector<double> acc(d.dim, 0.0);
      for (int64_t g = 0; g < d.heads_kv; ++g) {
        cpu::load_rows(in.k, b, g, bounds[c], len, rows.data());
        for (int64_t t = 0; t < len; ++t)
          for (int64_t x = 0; x < d.dim; ++x) acc[x] += rows[t * d.dim + x];
      }
      for (int64_t x = 0; x < d.dim; ++x)
        k_repr[c * d.dim + x] =
            static_cast<float>(acc[x] / (d.heads_kv * len) * std::sqrt(double(len)));
    }
#pragma omp parallel for schedule(dynamic, 4) num_threads(threads) private(rows)
    for (int64_t i = 0; i < q_blocks; ++i) {
      const int64_t r0 = i * block_, len = std::min(d.nq, r0 + block_) - r0;
      rows.resize(len * d.dim);
      std::vector<double> acc(d.dim, 0.0);
      for (int64_t h = 0; h < d.heads_q; ++h) {
        cpu::load_rows(in.q, b, h, r0, len, rows.data());
        for (int64_t t = 0; t < len; ++t)
          for (int64_t x = 0; x < d.dim; ++x) acc[x] += rows[t * d.dim + x];
      }
      for (int64_t x = 0; x < d.dim; ++x)
        q_repr[i * d.dim + x] =
            static_cast<float>(acc[x] / (d.heads_q * len) * std::sqrt(double(len)));
    }
    // S = q_repr . k_repr^T, then per query block: local keys + chunks in score order.
    std::vector<float> k_t(d.dim * chunks);
    cpu::transpose_keys(k_repr.data(), chunks, d.dim, d.dim, k_t.data(), chunks);
#pragma omp parallel for schedule(dynamic, 4) num_threads(threads)
    for (int64_t i = 0; i < q_blocks; ++i) {
      const int64_t p_last = last_visible(in, std::min(d.nq, (i + 1) * block_) - 1);
      if (p_last < 0) continue;
      std::vector<float> score(chunks);
      cpu::score_tile(q_repr.data() + i * d.dim, d.dim, 1, k_t.data(), chunks, chunks, d.dim, 1.0f,
                      score.data(), chunks);
      const int64_t local_start = std::max<int64_t>(0, p_last + 1 - bp_.local);
      int64_t left = std::max<int64_t>(0, budget_ - (p_last + 1 - local_start));
      std::vector<int64_t> order;
      for (int64_t c = 0; c < chunks && bounds[c] < local_start; ++c) order.push_back(c);
      std::stable_sort(order.begin(), order.end(),
                       [&](int64_t a, int64_t c) { return score[a] > score[c]; });
      Ranges chosen;
      for (int64_t c : order) {
        if (left <= 0) break;
        const int64_t s = bounds[c], e = std::min(bounds[c + 1], local_start);
        const int64_t take = std::min(left, e - s);
        chosen.push_back({e - take, e});
        left -= take;
      }
      chosen.push_back({local_start, p_last + 1});
      std::sort(chosen.begin(), chosen.end());
      Ranges merged;
      for (const auto& r : chosen) {
        if (r.first >= r.second) continue;
        if (!merged.empty() && merged.back().second >= r.first)
          merged.back().second = std::max(merged.back().second, r.second);
        else
          merged.push_back(r);
      }
      // kv blocks: FULL when one range covers the whole block.
      auto& list = lists[b * q_blocks + i];
      for (const auto& [s, e] : merged)
        for (int64_t kb = s / block_; kb * block_ < e; ++kb) {
          const int64_t k0 = kb * block_, k1 = std::min(d.nk, k0 + block_);
          const bool full = s <= k0 && e >= k1;
          if (!list.empty() && list.back().kv_index == kb) {
            list.back().kind = BlockKind::kPartial;  // a second range in the same block
            continue;
          }
          list.push_back({static_cast<int32_t>(kb), full ? BlockKind::kFull : BlockKind::kPartial});
        }
      ranges[b * q_blocks + i] = std::move(merged);
    }
  }
  Plan plan;
  plan.mask = block_mask_from_entries(
      mask_shape(in, block_, block_, 1),
      std::make_shared<DhsaRule>(std::move(ranges), q_blocks, block_), std::move(lists));
  plan.causal = in.causal;
  return plan;
}

}  // namespace

PatternRegistration dhsa_pattern() {
  return {
      {"dhsa",
       "DHSA: dynamic chunks from a training-free boundary heuristic (key dissimilarity; the "
       "paper's trained predictor is not available), length-normalised chunk scores upsampled "
       "to tokens, last 64 tokens + top of the budget, shared across heads",
       "Xiong, Zou, Fekri, Cho 2025, Dynamic Hierarchical Sparse Attention (arXiv 2510.24606)",
       PatternFamily::kDynamic,
       {block_param("block", 64, "query block size (multiple of 16)"),
        int_param("budget", 2048, 1, int64_t{1} << 40,
                  "selected tokens per query block, local ones included"),
        int_param("local", 64, 0, int64_t{1} << 30, "last visible tokens always kept"),
        int_param("window", 4, 1, 1 << 20, "boundary rule: tokens on each side"),
        int_param("nms", 8, 0, 1 << 20, "boundary rule: non-maximum suppression radius"),
        int_param("beta", 8, 1, 1 << 20, "boundary rule: at most (Nk / 64) * beta chunks"),
        real_param("sigma", "1", -1e6, 1e6, "boundary rule: keep scores above mean + sigma * std"),
        choice_param("rules", "official", {"official", "local_max"},
                     "candidate selection: official (greedy suppression in score order, none "
                     "after the instruction boundary) or local_max")}},
      &construct_pattern<DhsaPattern>};
}

}  // namespace attnkit::dynamic_patterns
