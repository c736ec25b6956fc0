// infllm_v2: InfLLM-V2 dense-sparse switchable attention (Zhao et al., arXiv 2509.24663;
// MiniCPM4 `sparse_config`). Training-free block selection from pooled keys:
//
//   if Nk < dense_len (8192): dense (causal) attention
//   K1 = meanpool(K, kernel 32, stride 16)          scoring keys ("semantic kernels")
//   K2 = meanpool(K, kernel 128, stride 64)         only for the LSE approximation
//   lse_h(t)  = log sum_{j visible} exp(scale q_h(t) . K2[j])                (LSE-only pass)
//   S(t, j)   = sum_{h in GQA group} exp(scale q_h(t) . K1[j] - lse_h(t))
//   Sblk(t, b) = max over the K1 windows overlapping kv block b (64 keys; max-pool 5/4/pad 1)
//   forced (+inf): the first `init` blocks and the local blocks b_t - local .. b_t
//   I(t) = top-`topk` blocks (forced ones count), causal at block level; shared by the query
//          heads of a kv head.
//
// Defaults (MiniCPM4/4.1): kernel 32, stride 16, lse_kernel 128, lse_stride 64, block 64, init 1,
// local 32 (window 2048), topk 96, dense_len 8192. The forced blocks are 1 init + 33 local (the
// diagonal block and the 32 before it), so 62 of the 96 are chosen freely.
//
// granularity=token (the official code's selection): every query token t has its own set I(t);
// the kernel visits, per query block, the union of its rows' sets, PARTIAL where rows differ,
// and the tile predicate keeps each row to its own blocks. granularity=block (default, cheaper):
// S is summed over the 64 rows of the query block (the attention mass the block gives each K1
// window) and one set serves the whole block, anchored at its last row. Since all rows of a
// block share the forced init and local blocks, only the 62 free choices differ between the two.
// Choices, documented:
// - A pooled window is visible to a row only when all its keys are (window end <= row). Rows
//   that see no K2 window yet (the first 127 tokens) add nothing to the scores; they are in
//   the forced init/local blocks anyway.
// - Scores of K1 windows that overlap only forced local blocks are not computed (they would be
//   overwritten by +inf); the LSE pass still covers every visible K2 window. Same selection,
//   ~10% less stage-1 work.
// - score_dtype=bf16 (default): the stage-1 operands, q and the pooled keys (pooled in f32), are
//   rounded to bf16 (nearest even) and their products summed in f32. The official kernels
//   (infllmv2_cuda_impl) are built on FlashAttention, whose operands are fp16/bf16 with f32
//   accumulation, and MiniCPM4 runs in bf16, so this is the official arithmetic; on CPUs with
//   AVX512-BF16 it also runs at twice the f32 rate. score_dtype=f32 scores the f32 values
//   exactly; the two can only choose differently where block scores tie to about 2^-8.
// - Bounded work: stage 1 scores every query against Nk / stride pooled keys and Nk / lse_stride
//   coarse ones, so planning costs at most about twice a dense pass (kernel = stride = 1);
//   topk beyond the kv blocks is clamped to them (they are all selected), which bounds the
//   per-token selections of granularity=token at Nq x min(topk, kv blocks) entries.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <memory>
#include <vector>

#include "core/attention_args.h"
#include "kernels/cpu/planner_ops.h"
#include "patterns/dynamic/dynamic_patterns.h"
#include "patterns/dynamic/planner.h"

namespace attnkit::dynamic_patterns {
namespace {

// Per-token selections of every (batch, kv head): row i keeps blocks[i * topk .. + count[i]),
// ascending. Query head h reads the selections of its kv head h / group.
class TokenSelectionRule final : public TilePredicate {
 public:
  TokenSelectionRule(int64_t heads_kv, int64_t group, int64_t block, int64_t topk,
                     std::vector<std::vector<int32_t>> blocks,
                     std::vector<std::vector<int32_t>> count)
      : heads_kv_(heads_kv),
        group_(group),
        block_(block),
        topk_(topk),
        blocks_(std::move(blocks)),
        count_(std::move(count)) {}

  void fill(int64_t b, int64_t h, int64_t q0, int64_t nq, int64_t k0, int64_t nk, uint8_t* allow,
            int64_t ld) const override {
    const int64_t slice = b * heads_kv_ + h / group_;
    const int32_t* all = blocks_[slice].data();
    for (int64_t r = 0; r < nq; ++r) {
      uint8_t* row = allow + r * ld;
      std::memset(row, 0, static_cast<size_t>(nk));
      const int64_t i = q0 + r;
      const int32_t* first = all + i * topk_;
      const int32_t* last = first + count_[slice][i];
      for (const int32_t* at = std::lower_bound(first, last, static_cast<int32_t>(k0 / block_));
           at != last && int64_t{*at} * block_ < k0 + nk; ++at) {
        const int64_t lo = std::max(k0, int64_t{*at} * block_);
        const int64_t hi = std::min(k0 + nk, (int64_t{*at} + 1) * block_);
        std::memset(row + (lo - k0), 1, static_cast<size_t>(hi - lo));
      }
    }
  }

 private:
  int64_t heads_kv_, group_, block_, topk_;
  std::vector<std::vector<int32_t>> blocks_, count_;  // per (b, kv head)
};

// Pooled keys of every (b, kv head) over the first nk keys, kept between decode steps.
struct PooledKeys final : PlanState {
  int64_t batch = 0, heads_kv = 0, dim = 0, kernel = 0, stride = 0, lse_kernel = 0, lse_stride = 0,
          nk = 0;
  std::vector<std::vector<float>> k1, k2;  // [B * Hkv][m * D]
};

class InfLlmV2Pattern final : public Pattern {
 public:
  explicit InfLlmV2Pattern(const PatternParams& params)
      : Pattern(params, Direction::kCaller),
        dense_len_(params.get_int("dense_len")),
        kernel_(params.get_int("kernel")),
        stride_(params.get_int("stride")),
        lse_kernel_(params.get_int("lse_kernel")),
        lse_stride_(params.get_int("lse_stride")),
        block_(params.get_int("block")),
        init_(params.get_int("init")),
        local_(params.get_int("local")),
        topk_(params.get_int("topk")),
        per_token_(params.get_string("granularity") == "token"),
        bf16_(params.get_string("score_dtype") == "bf16") {}
  Plan plan(const PlanInputs& in) const override;

 private:
  // The pooled keys of in.k: from in.state, extended by the windows its new keys complete, or
  // from scratch (then kept in in.state when given).
  const PooledKeys& pooled_keys(const PlanInputs& in, const Dims& d, PooledKeys& scratch) const;
  // Sblk for kv blocks 0..diag from the K1 window scores `s`, forced blocks +inf.
  void block_scores(const float* s, int64_t m1, int64_t diag, float* out) const;

  int64_t dense_len_, kernel_, stride_, lse_kernel_, lse_stride_, block_, init_, local_, topk_;
  bool per_token_;
  bool bf16_;  // score_dtype=bf16
};

void InfLlmV2Pattern::block_scores(const float* s, int64_t m1, int64_t diag, float* out) const {
  const float inf = std::numeric_limits<float>::infinity();
  for (int64_t kb = 0; kb <= diag; ++kb) {
    // K1 windows [stride j, stride j + kernel) overlapping [block kb, block (kb + 1)).
    const int64_t lo = std::max<int64_t>(0, (kb * block_ - kernel_ + stride_) / stride_);
    const int64_t hi = std::min(m1 - 1, ((kb + 1) * block_ - 1) / stride_);
    float best = 0.0f;
    for (int64_t j = lo; j <= hi; ++j) best = std::max(best, s[j]);
    const bool forced = kb < init_ || kb >= diag - local_;
    out[kb] = forced ? inf : best;
  }
}

const PooledKeys& InfLlmV2Pattern::pooled_keys(const PlanInputs& in, const Dims& d,
                                               PooledKeys& scratch) const {
  PooledKeys* keys = in.state ? dynamic_cast<PooledKeys*>(in.state->get()) : nullptr;
  if (keys == nullptr || keys->batch != d.batch || keys->heads_kv != d.heads_kv ||
      keys->dim != d.dim || keys->kernel != kernel_ || keys->stride != stride_ ||
      keys->lse_kernel != lse_kernel_ || keys->lse_stride != lse_stride_ || keys->nk > d.nk) {
    if (in.state) {
      *in.state = std::make_unique<PooledKeys>();
      keys = static_cast<PooledKeys*>(in.state->get());
    } else {
      keys = &scratch;
    }
    keys->batch = d.batch, keys->heads_kv = d.heads_kv, keys->dim = d.dim, keys->nk = 0;
    keys->kernel = kernel_, keys->stride = stride_;
    keys->lse_kernel = lse_kernel_, keys->lse_stride = lse_stride_;
    keys->k1.assign(d.batch * d.heads_kv, {});
    keys->k2.assign(d.batch * d.heads_kv, {});
  }
  // Windows start at multiples of the stride, so pooling rows [m_old * stride, nk) gives windows
  // m_old.. exactly as pooling all rows does (mean_pool sums each window in the same order).
  const int64_t old_nk = keys->nk;
  auto extend = [&](std::vector<float>& pooled, const float* raw, int64_t raw_start, int64_t kernel,
                    int64_t stride) {
    const int64_t had = cpu::pooled_count(old_nk, kernel, stride);
    const int64_t now = cpu::pooled_count(d.nk, kernel, stride);
    pooled.resize(now * d.dim);
    if (now > had)
      cpu::mean_pool(raw + (had * stride - raw_start) * d.dim, d.nk - had * stride, d.dim, d.dim,
                     kernel, stride, pooled.data() + had * d.dim);
  };
  // Raw rows needed: from the first new window of either pooling.
  const int64_t first = std::min(cpu::pooled_count(old_nk, kernel_, stride_) * stride_,
                                 cpu::pooled_count(old_nk, lse_kernel_, lse_stride_) * lse_stride_);
#pragma omp parallel for schedule(dynamic, 1) num_threads(effective_threads(in.threads))
  for (int64_t bg = 0; bg < d.batch * d.heads_kv; ++bg) {
    std::vector<float> raw((d.nk - first) * d.dim);
    cpu::load_rows(in.k, bg / d.heads_kv, bg % d.heads_kv, first, d.nk - first, raw.data());
    extend(keys->k1[bg], raw.data(), first, kernel_, stride_);
    extend(keys->k2[bg], raw.data(), first, lse_kernel_, lse_stride_);
  }
  keys->nk = d.nk;
  return *keys;
}

Plan InfLlmV2Pattern::plan(const PlanInputs& in) const {
  in.validate(true);
  const Dims d = dims_of(in);
  Plan plan;
  plan.causal = in.causal;
  if (d.nk < dense_len_) {
    plan.mask = dense_mask(in, block_, block_);
    return plan;
  }
  const float scale = effective_scale(in.scale, d.dim);
  const int64_t q_blocks = (d.nq + block_ - 1) / block_;
  const int64_t kv_blocks = (d.nk + block_ - 1) / block_;
  const int64_t topk = std::min(topk_, kv_blocks);  // more than every block selects them all
  const int64_t m1 = cpu::pooled_count(d.nk, kernel_, stride_);
  const int64_t m2 = cpu::pooled_count(d.nk, lse_kernel_, lse_stride_);
  const int threads = effective_threads(in.threads);

  // Pooled keys per (b, kv head): [B * Hkv][m * D].
  PooledKeys scratch;
  const PooledKeys& pooled = pooled_keys(in, d, scratch);
  const std::vector<std::vector<float>>&k1 = pooled.k1, &k2 = pooled.k2;
  // bf16 scoring: the pooled keys packed once per (b, kv head) for every query chunk's passes.
  std::vector<cpu::Bf16Matrix> packed_k1(bf16_ ? d.batch * d.heads_kv : 0), packed_k2;
  packed_k2.resize(packed_k1.size());
#pragma omp parallel for schedule(dynamic, 1) num_threads(threads)
  for (int64_t bg = 0; bg < static_cast<int64_t>(packed_k1.size()); ++bg) {
    packed_k1[bg] = cpu::pack_bf16(k1[bg].data(), m1, d.dim, d.dim);
    packed_k2[bg] = cpu::pack_bf16(k2[bg].data(), m2, d.dim, d.dim);
  }

  // Stage 1 per (b, kv head, chunk of query blocks): group-summed scores over K1 (per block or
  // per row), then block max-pool, forcing and top-k. Per-row scores take [rows][m1] floats, so
  // token granularity walks smaller chunks.
  const int64_t chunk_blocks = per_token_ ? 4 : 16;  // pooled keys are transposed once per item
  const int64_t chunks = (q_blocks + chunk_blocks - 1) / chunk_blocks;
  std::vector<std::vector<BlockEntry>> lists(d.batch * d.heads_q * q_blocks);
  std::vector<std::vector<int32_t>> token_blocks, token_count;
  if (per_token_) {
    token_blocks.assign(d.batch * d.heads_kv, std::vector<int32_t>(d.nq * topk));
    token_count.assign(d.batch * d.heads_kv, std::vector<int32_t>(d.nq, 0));
  }
#pragma omp parallel for schedule(dynamic, 1) num_threads(threads)
  for (int64_t item = 0; item < d.batch * d.heads_kv * chunks; ++item) {
    // Latest query chunks first: under causality they score the most keys, and dynamic
    // scheduling balances best when the small items come last.
    const int64_t bg = item % (d.batch * d.heads_kv), b = bg / d.heads_kv, g = bg % d.heads_kv;
    const int64_t chunk = chunks - 1 - item / (d.batch * d.heads_kv);
    const int64_t qb0 = chunk * chunk_blocks, qb1 = std::min(q_blocks, qb0 + chunk_blocks);
    const int64_t row0 = qb0 * block_, rows = std::min(d.nq, qb1 * block_) - row0;
    std::vector<int64_t> limit1(rows), limit2(rows);
    for (int64_t r = 0; r < rows; ++r) {
      const int64_t last = last_visible(in, row0 + r);
      limit1[r] = cpu::pooled_visible(last, kernel_, stride_, m1);
      limit2[r] = cpu::pooled_visible(last, lse_kernel_, lse_stride_, m2);
      // K1 windows that only overlap forced local blocks are never looked at: stop scoring
      // after the last window of the last non-forced block (the LSE pass still sees all keys).
      const int64_t qb = (row0 + r) / block_;
      const int64_t anchor =
          per_token_ ? last : last_visible(in, std::min(d.nq, (qb + 1) * block_) - 1);
      const int64_t first_forced = anchor / block_ - local_;
      if (anchor >= 0 && first_forced > 0)
        limit1[r] = std::min(limit1[r], (first_forced * block_ - 1) / stride_ + 1);
    }
    const int64_t row_group = per_token_ ? 1 : block_;
    const int64_t score_rows = per_token_ ? rows : qb1 - qb0;
    std::vector<float> q(rows * d.dim), lse(rows), score(score_rows * m1, 0.0f);
    for (int64_t hh = 0; hh < d.group; ++hh) {
      cpu::load_rows(in.q, b, g * d.group + hh, row0, rows, q.data());
      if (bf16_) {
        const cpu::Bf16Matrix packed_q = cpu::pack_bf16(q.data(), rows, d.dim, d.dim);
        cpu::lse_pass(packed_q, packed_k2[bg], scale, limit2.data(), lse.data());
        cpu::prob_reduce(packed_q, lse.data(), packed_k1[bg], scale, limit1.data(), row_group, 1,
                         score.data());
        continue;
      }
      cpu::lse_pass(q.data(), rows, d.dim, k2[bg].data(), m2, d.dim, d.dim, scale, limit2.data(),
                    lse.data());
      cpu::prob_reduce(q.data(), rows, d.dim, lse.data(), k1[bg].data(), m1, d.dim, d.dim, scale,
                       limit1.data(), row_group, 1, score.data());
    }
    std::vector<float> block_score(kv_blocks);
    std::vector<int32_t> votes(kv_blocks);
    for (int64_t qb = qb0; qb < qb1; ++qb) {
      const int64_t q0 = qb * block_, q1 = std::min(d.nq, q0 + block_);
      const int64_t last = last_visible(in, q1 - 1);
      if (last < 0) continue;  // the block sees no key
      std::vector<BlockEntry> entries;
      if (!per_token_) {
        block_scores(score.data() + (qb - qb0) * m1, m1, last / block_, block_score.data());
        for (int32_t kb : cpu::topk_indices(block_score.data(), last / block_ + 1, topk))
          entries.push_back({kb, BlockKind::kFull});
      } else {
        // Each row's own set; the block lists their union, FULL where every row chose it.
        std::fill(votes.begin(), votes.end(), 0);
        for (int64_t i = q0; i < q1; ++i) {
          const int64_t row_last = last_visible(in, i);
          if (row_last < 0) continue;
          block_scores(score.data() + (i - row0) * m1, m1, row_last / block_, block_score.data());
          const auto chosen = cpu::topk_indices(block_score.data(), row_last / block_ + 1, topk);
          std::copy(chosen.begin(), chosen.end(), token_blocks[bg].begin() + i * topk);
          token_count[bg][i] = static_cast<int32_t>(chosen.size());
          for (int32_t kb : chosen) ++votes[kb];
        }
        for (int64_t kb = 0; kb < kv_blocks; ++kb)
          if (votes[kb] > 0)
            entries.push_back({static_cast<int32_t>(kb),
                               votes[kb] == q1 - q0 ? BlockKind::kFull : BlockKind::kPartial});
      }
      for (int64_t hh = 0; hh < d.group; ++hh)
        lists[(b * d.heads_q + g * d.group + hh) * q_blocks + qb] = entries;
    }
  }
  std::shared_ptr<const TilePredicate> rule;
  if (per_token_)
    rule = std::make_shared<TokenSelectionRule>(d.heads_kv, d.group, block_, topk,
                                                std::move(token_blocks), std::move(token_count));
  plan.mask = block_mask_from_entries(mask_shape(in, block_, block_, d.heads_q), std::move(rule),
                                      std::move(lists));
  return plan;
}

}  // namespace

PatternRegistration infllm_v2_pattern() {
  const int64_t kMax = 1 << 24;
  return {
      {"infllm_v2",
       "InfLLM-V2: pooled-key block scores (LSE over coarse keys), init + local forced, top-k "
       "blocks shared per kv head, per query token or per query block; dense below dense_len",
       "Zhao et al. 2025, InfLLM-V2: Dense-Sparse Switchable Attention (arXiv 2509.24663)",
       PatternFamily::kDynamic,
       {int_param("dense_len", 8192, 0, int64_t{1} << 40, "dense attention when Nk < dense_len"),
        int_param("kernel", 32, 1, 1 << 16, "scoring pool kernel (tokens)"),
        int_param("stride", 16, 1, 1 << 16, "scoring pool stride"),
        int_param("lse_kernel", 128, 1, 1 << 16, "LSE-approximation pool kernel"),
        int_param("lse_stride", 64, 1, 1 << 16, "LSE-approximation pool stride"),
        block_param("block", 64, "query and kv block size"),
        int_param("init", 1, 0, kMax, "forced initial blocks"),
        int_param("local", 32, 0, kMax, "forced local blocks before the diagonal block"),
        int_param("topk", 96, 1, kMax, "blocks per query, forced ones included"),
        choice_param("granularity", "block", {"block", "token"},
                     "token: a set per query token (official); block: one per query block"),
        choice_param("score_dtype", "bf16", {"bf16", "f32"},
                     "stage-1 score operands: bf16 (official kernels; 2x rate with AVX512-BF16) "
                     "or f32")}},
      &construct_pattern<InfLlmV2Pattern>};
}

}  // namespace attnkit::dynamic_patterns
