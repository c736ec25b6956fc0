// ACT (include/attnkit/act.h): sink detection from the column sums of P, then the closed-form
// two-partition merge over masks of S and its complement.
#include "attnkit/act.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <memory>
#include <string>

#include "attnkit/block_mask.h"
#include "attnkit/error.h"
#include "core/attention_args.h"

namespace attnkit {
namespace {

// Keys in S (inside = true) or outside it, per (b, h) list b * Hq + h.
class SinkRule final : public TilePredicate {
 public:
  SinkRule(const std::vector<std::vector<int32_t>>& sinks, int64_t heads, bool inside)
      : sinks_(sinks), heads_(heads), inside_(inside) {}
  void fill(int64_t b, int64_t h, int64_t, int64_t nq, int64_t k0, int64_t nk, uint8_t* allow,
            int64_t ld) const override {
    const std::vector<int32_t>& s = sinks_[b * heads_ + h];
    for (int64_t j = 0; j < nk; ++j) {
      const bool in = std::binary_search(s.begin(), s.end(), static_cast<int32_t>(k0 + j));
      for (int64_t i = 0; i < nq; ++i) allow[i * ld + j] = in == inside_;
    }
  }

 private:
  const std::vector<std::vector<int32_t>>& sinks_;
  int64_t heads_;
  bool inside_;
};

// The blocks of S (PARTIAL) or of its complement (FULL where no sink falls, else PARTIAL).
BlockMask sink_mask(const AttentionArgs& args, const std::vector<std::vector<int32_t>>& sinks,
                    bool inside) {
  BlockMaskShape shape;
  shape.nq = args.q.shape[2], shape.nk = args.k.shape[2];
  shape.batch = args.q.shape[0], shape.heads = args.q.shape[1];
  const int64_t heads = shape.heads, kv_block = shape.kv_block;
  const int64_t kv_blocks = (shape.nk + kv_block - 1) / kv_block;
  return block_mask_from_rows(
      shape, std::make_shared<SinkRule>(sinks, heads, inside),
      [&](int64_t b, int64_t h, int64_t, std::vector<BlockEntry>* out) {
        const std::vector<int32_t>& s = sinks[b * heads + h];
        for (int64_t kb = 0; kb < kv_blocks; ++kb) {
          const auto first = std::lower_bound(s.begin(), s.end(), kb * kv_block);
          const bool has_sink = first != s.end() && *first < (kb + 1) * kv_block;
          if (inside && has_sink) out->push_back({static_cast<int32_t>(kb), BlockKind::kPartial});
          if (!inside)
            out->push_back(
                {static_cast<int32_t>(kb), has_sink ? BlockKind::kPartial : BlockKind::kFull});
        }
      });
}

void check_options(const AttentionArgs& args, const ActOptions& o) {
  check(std::isfinite(o.tau) && o.tau > 0.0f && o.tau <= 1.0f, "tau",
        "must be in (0, 1], got " + std::to_string(o.tau));
  check(std::isfinite(o.beta) && o.beta >= 0.0f && o.beta <= 1.0f, "beta",
        "must be in [0, 1], got " + std::to_string(o.beta));
  const int64_t lists = args.q.shape[0] * args.q.shape[1], nk = args.k.shape[2];
  check(o.sinks.empty() || static_cast<int64_t>(o.sinks.size()) == lists, "sinks",
        "needs one list per (batch, query head): " + std::to_string(lists) + ", got " +
            std::to_string(o.sinks.size()));
  for (const auto& s : o.sinks)
    for (size_t x = 0; x < s.size(); ++x)
      check(s[x] >= 0 && s[x] < nk && (x == 0 || s[x] > s[x - 1]), "sinks",
            "lists must hold ascending key indices in [0, " + std::to_string(nk) + ")");
}

}  // namespace

std::vector<std::vector<int32_t>> attention_act(const AttentionArgs& args,
                                                const ActOptions& options) {
  validate_f32_query(args);
  check_options(args, options);
  const int64_t batch = args.q.shape[0], heads = args.q.shape[1], nq = args.q.shape[2];
  const int64_t nk = args.k.shape[2], dim_v = args.v.shape[3];
  Tensor lse_store({batch, heads, nq}, DType::kF32);
  AttentionArgs full = args;
  if (full.lse.empty()) full.lse = lse_store.rows_view();
  attention(full);
  std::vector<std::vector<int32_t>> sinks = options.sinks;
  if (sinks.empty()) {
    Tensor sums({batch, heads, nk, 1}, DType::kF32);
    attention_column_sums(full, sums.view());
    sinks.resize(batch * heads);
    for (int64_t bh = 0; bh < batch * heads; ++bh) {
      bool first = true;  // the first detected sink is kept as it is
      for (int64_t j = 0; j < nk; ++j) {
        // Rows that may see key j: all, or under causality those with i + nk - nq >= j.
        const int64_t seeing = args.causal ? std::clamp<int64_t>(nq - (j - (nk - nq)), 0, nq) : nq;
        if (seeing == 0) continue;
        const double mean = sums.f32()[bh * nk + j] / static_cast<double>(seeing);
        if (mean <= options.tau) continue;
        if (!first) sinks[bh].push_back(static_cast<int32_t>(j));
        first = false;
      }
    }
  }
  const bool any =
      std::any_of(sinks.begin(), sinks.end(), [](const auto& s) { return !s.empty(); });
  if (!any || options.beta == 1.0f) return sinks;
  // O_S, LSE_S over the sinks and O_N, LSE_N over the rest, then the merge row by row.
  Tensor o_s({batch, heads, nq, dim_v}, DType::kF32), o_n({batch, heads, nq, dim_v}, DType::kF32);
  Tensor lse_s({batch, heads, nq}, DType::kF32), lse_n({batch, heads, nq}, DType::kF32);
  AttentionArgs part = full;
  part.out = o_s.view(), part.lse = lse_s.rows_view();
  attention(part, sink_mask(args, sinks, true));
  part.out = o_n.view(), part.lse = lse_n.rows_view();
  attention(part, sink_mask(args, sinks, false));
  const float beta = options.beta;
  for (int64_t b = 0; b < batch; ++b)
    for (int64_t h = 0; h < heads; ++h) {
      if (sinks[b * heads + h].empty()) continue;
      for (int64_t i = 0; i < nq; ++i) {
        const float ls = lse_s.rows_view().get(b, h, i, 0), ln = lse_n.rows_view().get(b, h, i, 0);
        if (std::isinf(ls) || std::isinf(ln)) continue;  // no sink seen, or nothing but sinks
        const float m = std::exp(ls - full.lse.get(b, h, i, 0));
        float* out = args.out.row<float>(b, h, i);
        const float* os = o_s.view().row<float>(b, h, i);
        const float* on = o_n.view().row<float>(b, h, i);
        for (int64_t d = 0; d < dim_v; ++d) out[d] = beta * m * os[d] + (1.0f - beta * m) * on[d];
      }
    }
  return sinks;
}

}  // namespace attnkit
