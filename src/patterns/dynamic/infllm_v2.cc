// infllm_v2: InfLLM-V2 dense-sparse switchable attention (Zhao et al., arXiv 2509.24663;
// MiniCPM4 `sparse_config`). Training-free block selection from pooled keys:
//
//   if Nk < dense_len (8192): dense (causal) attention
//   K1 = meanpool(K, kernel 32, stride 16)          scoring keys ("semantic kernels")
//   K2 = meanpool(K, kernel 128, stride 64)         only for the LSE approximation
//   lse_h(t)  = log sum_{j visible} exp(scale q_h(t) . K2[j])                (LSE-only pass)
//   S(qb, j)  = sum_{t in qb} sum_{h in GQA group} exp(scale q_h(t) . K1[j] - lse_h(t))
//   Sblk(qb, b) = max over the K1 windows overlapping kv block b (64 keys; max-pool 5/4/pad 1)
//   forced (+inf): the first `init` blocks and the local blocks b_t - local .. b_t
//   I(qb) = top-`topk` blocks (forced ones count), causal at block level; shared by the
//           query heads of a kv head.
//
// Defaults (MiniCPM4/4.1): kernel 32, stride 16, lse_kernel 128, lse_stride 64, block 64, init 1,
// local 32 (window 2048), topk 96 (the paper's 1 init + 63 top-k + 32 local), dense_len 8192.
// Choices, documented:
// - The paper selects per query token; our BlockMask selects per query block, so the scores of
//   the block's 64 rows are summed (the attention mass the block gives each K1 window). The
//   local window is anchored at the block's last row, as in the kernel's block-level view.
// - A pooled window is visible to a row only when all its keys are (window end <= row). Rows
//   that see no K2 window yet (the first 127 tokens) add nothing to the scores; they are in
//   the forced init/local blocks anyway.
// - Scores of K1 windows that overlap only forced local blocks are not computed (they would be
//   overwritten by +inf); the LSE pass still covers every visible K2 window. Same selection,
//   ~10% less stage-1 work.
#include <algorithm>
#include <cmath>
#include <limits>
#include <memory>
#include <vector>

#include "attnkit/error.h"
#include "attnkit/pattern.h"
#include "core/timing.h"
#include "kernels/cpu/planner_ops.h"
#include "patterns/dynamic/planner.h"

namespace attnkit {
namespace {

constexpr char kName[] = "infllm_v2";

class InfLlmV2 final : public Pattern {
 public:
  explicit InfLlmV2(const PatternParams& params)
      : dense_len_(planner::int_param(params, kName, "dense_len", 0, int64_t{1} << 40)),
        kernel_(planner::int_param(params, kName, "kernel", 1, 1 << 16)),
        stride_(planner::int_param(params, kName, "stride", 1, 1 << 16)),
        lse_kernel_(planner::int_param(params, kName, "lse_kernel", 1, 1 << 16)),
        lse_stride_(planner::int_param(params, kName, "lse_stride", 1, 1 << 16)),
        block_(planner::block_param(params, kName, "block")),
        init_(planner::int_param(params, kName, "init", 0, 1 << 24)),
        local_(planner::int_param(params, kName, "local", 0, 1 << 24)),
        topk_(planner::int_param(params, kName, "topk", 1, 1 << 24)),
        canonical_(params.canonical()) {}

  std::string name() const override { return kName; }
  std::string spec() const override { return std::string(kName) + ":" + canonical_; }
  Plan plan(const AttentionArgs& args) const override;

 private:
  int64_t dense_len_, kernel_, stride_, lse_kernel_, lse_stride_, block_, init_, local_, topk_;
  std::string canonical_;
};

Plan InfLlmV2::plan(const AttentionArgs& args) const {
  validate(args);
  const double start = now_seconds();
  const planner::Dims d = planner::dims_of(args);
  Plan plan;
  if (d.nk < dense_len_) {
    plan.mask = planner::dense_mask(args, block_, block_);
    plan.plan_seconds = now_seconds() - start;
    return plan;
  }
  const float scale = effective_scale(args);
  const int64_t q_blocks = (d.nq + block_ - 1) / block_;
  const int64_t kv_blocks = (d.nk + block_ - 1) / block_;
  const int64_t m1 = kernels::pooled_count(d.nk, kernel_, stride_);
  const int64_t m2 = kernels::pooled_count(d.nk, lse_kernel_, lse_stride_);
  const int threads = effective_threads(args.threads);

  // Pooled keys per (b, kv head): [B * Hkv][m * D].
  std::vector<std::vector<float>> k1(d.batch * d.heads_kv), k2(d.batch * d.heads_kv);
#pragma omp parallel for schedule(dynamic, 1) num_threads(threads)
  for (int64_t bg = 0; bg < d.batch * d.heads_kv; ++bg) {
    std::vector<float> raw(d.nk * d.dim);
    kernels::load_rows(args.k, bg / d.heads_kv, bg % d.heads_kv, 0, d.nk, raw.data());
    k1[bg].resize(m1 * d.dim);
    k2[bg].resize(m2 * d.dim);
    kernels::mean_pool(raw.data(), d.nk, d.dim, d.dim, kernel_, stride_, k1[bg].data());
    kernels::mean_pool(raw.data(), d.nk, d.dim, d.dim, lse_kernel_, lse_stride_, k2[bg].data());
  }

  // Stage 1 per (b, kv head, chunk of query blocks): group-summed scores over K1, then block
  // max-pool, forcing and top-k.
  constexpr int64_t kChunkBlocks = 16;  // pooled keys are transposed once per item
  const int64_t chunks = (q_blocks + kChunkBlocks - 1) / kChunkBlocks;
  std::vector<std::vector<int32_t>> lists(d.batch * d.heads_q * q_blocks);
  const float inf = std::numeric_limits<float>::infinity();
#pragma omp parallel for schedule(dynamic, 1) num_threads(threads)
  for (int64_t item = 0; item < d.batch * d.heads_kv * chunks; ++item) {
    const int64_t bg = item / chunks, b = bg / d.heads_kv, g = bg % d.heads_kv;
    const int64_t qb0 = item % chunks * kChunkBlocks, qb1 = std::min(q_blocks, qb0 + kChunkBlocks);
    const int64_t row0 = qb0 * block_, rows = std::min(d.nq, qb1 * block_) - row0;
    std::vector<int64_t> limit1(rows), limit2(rows);
    for (int64_t r = 0; r < rows; ++r) {
      const int64_t last = planner::last_visible(args, row0 + r);
      limit1[r] = kernels::pooled_visible(last, kernel_, stride_, m1);
      limit2[r] = kernels::pooled_visible(last, lse_kernel_, lse_stride_, m2);
      // K1 windows that only overlap forced local blocks are never looked at: stop scoring
      // after the last window of the last non-forced block (the LSE pass still sees all keys).
      const int64_t qb = (row0 + r) / block_;
      const int64_t block_last = planner::last_visible(args, std::min(d.nq, (qb + 1) * block_) - 1);
      const int64_t first_forced = block_last / block_ - local_;
      if (block_last >= 0 && first_forced > 0)
        limit1[r] = std::min(limit1[r], (first_forced * block_ - 1) / stride_ + 1);
    }
    std::vector<float> q(rows * d.dim), lse(rows), score((qb1 - qb0) * m1, 0.0f);
    for (int64_t hh = 0; hh < d.group; ++hh) {
      kernels::load_rows(args.q, b, g * d.group + hh, row0, rows, q.data());
      kernels::lse_pass(q.data(), rows, d.dim, k2[bg].data(), m2, d.dim, d.dim, scale,
                        limit2.data(), lse.data());
      kernels::prob_reduce(q.data(), rows, d.dim, lse.data(), k1[bg].data(), m1, d.dim, d.dim,
                           scale, limit1.data(), block_, 1, score.data());
    }
    std::vector<float> block_score(kv_blocks);
    for (int64_t qb = qb0; qb < qb1; ++qb) {
      const int64_t last = planner::last_visible(args, std::min(d.nq, (qb + 1) * block_) - 1);
      if (last < 0) continue;  // the block sees no key
      const int64_t diag = last / block_;
      const float* s = score.data() + (qb - qb0) * m1;
      for (int64_t kb = 0; kb <= diag; ++kb) {
        // K1 windows [stride j, stride j + kernel) overlapping [block kb, block (kb + 1)).
        const int64_t lo = std::max<int64_t>(0, (kb * block_ - kernel_ + stride_) / stride_);
        const int64_t hi = std::min(m1 - 1, ((kb + 1) * block_ - 1) / stride_);
        float best = 0.0f;
        for (int64_t j = lo; j <= hi; ++j) best = std::max(best, s[j]);
        const bool forced = kb < init_ || kb >= diag - local_;
        block_score[kb] = forced ? inf : best;
      }
      const auto chosen = kernels::topk_indices(block_score.data(), diag + 1, topk_);
      for (int64_t hh = 0; hh < d.group; ++hh)
        lists[(b * d.heads_q + g * d.group + hh) * q_blocks + qb] = chosen;
    }
  }
  plan.mask = planner::mask_from_lists(args, block_, block_, d.heads_q, std::move(lists));
  plan.plan_seconds = now_seconds() - start;
  return plan;
}

[[maybe_unused]] const bool registered = register_pattern(
    {kName,
     "InfLLM-V2: pooled-key block scores (LSE over coarse keys), init + local forced, top-k "
     "blocks shared per kv head; dense below dense_len",
     "Zhao et al. 2025, InfLLM-V2: Dense-Sparse Switchable Attention (arXiv 2509.24663)",
     {{"dense_len", "8192", "dense attention when Nk < dense_len"},
      {"kernel", "32", "scoring pool kernel (tokens)"},
      {"stride", "16", "scoring pool stride"},
      {"lse_kernel", "128", "LSE-approximation pool kernel"},
      {"lse_stride", "64", "LSE-approximation pool stride"},
      {"block", "64", "query and kv block size"},
      {"init", "1", "forced initial blocks"},
      {"local", "32", "forced local blocks before the diagonal block"},
      {"topk", "96", "blocks per query block, forced ones included"}}},
    [](const PatternParams& params) -> std::unique_ptr<Pattern> {
      return std::make_unique<InfLlmV2>(params);
    });

}  // namespace
}  // namespace attnkit
