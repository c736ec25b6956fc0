// The fused online-softmax attention kernel, written once with Highway for every SIMD target.
//
// One work item is a tile of up to kMaxTileRows query rows (heads x tokens of one GQA group) that
// walks its list of key blocks. Layout, "lanes = query rows" (as in gemma.cpp):
//   Qt [D][M]   query tile transposed, pre-multiplied by scale*log2(e)   (M = rows padded)
//   St [Bc][M]  scores of one key block: St[j][r] = Qt[:, r] . K[j]; then P = exp2(St - m)
//   O  [M][Dv]  un-normalized output accumulator, rescaled by alpha = exp2(m_old - m_new)
// With rows in the lanes, the row max, the row sum and the rescale are vertical SIMD operations
// (no horizontal reductions), and K and V are read in their own row-major layout: f32 K is used in
// place and f16/bf16 K blocks are converted once per tile; V of any dtype is read in place and
// widened in registers. The next key block's rows are prefetched while one block is computed.
// Dropout (args.dropout > 0) multiplies P by the keep factors Zt [Bc][M] after the row sums are
// taken, so l and the LSE are those of the undropped softmax.
#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "kernels/cpu/tile_kernel.cc"
#include "hwy/foreach_target.h"  // IWYU pragma: keep
// Must come after foreach_target.h.
#include <algorithm>
#include <cmath>
#include <limits>

#include "core/dropout.h"
#include "core/score_modifiers.h"
#include "hwy/aligned_allocator.h"
#include "hwy/highway.h"
#include "kernels/cpu/dropout-inl.h"
#include "kernels/cpu/tile_ops-inl.h"
#include "kernels/cpu/tile_plan.h"

HWY_BEFORE_NAMESPACE();
namespace attnkit::cpu {
namespace HWY_NAMESPACE {
namespace hn = hwy::HWY_NAMESPACE;

// Per-thread buffers, sized once for the largest tile.
struct Scratch {
  int64_t dv_pad = 0;
  hwy::AlignedFreeUniquePtr<float[]> qt, st, o, k, v, m, l, alpha, limit, zt;
  hwy::AlignedFreeUniquePtr<uint32_t[]> row_keys;  // dropout's per-row keys
  int64_t pairs = 0;                               // attended pairs, when the caller asks for them
  std::vector<uint8_t> allow, allow_t;  // [tokens][keys] from the predicate, and transposed

  explicit Scratch(const TilePlan& plan) {
    const DF df;
    const int64_t n = hn::Lanes(df), chunk = kCols * n;
    const AttentionArgs& a = *plan.args;
    const int64_t dim = a.q.shape[3], dim_v = a.v.shape[3], kvb = plan.kv_block;
    const int64_t m_pad = (kMaxTileRows + chunk - 1) / chunk * chunk;
    dv_pad = (dim_v + n - 1) / n * n;
    qt = hwy::AllocateAligned<float>(dim * m_pad);
    st = hwy::AllocateAligned<float>(kvb * m_pad);
    o = hwy::AllocateAligned<float>(m_pad * dv_pad);
    k = hwy::AllocateAligned<float>(kvb * dim);
    v = hwy::AllocateAligned<float>(kvb * dv_pad);
    m = hwy::AllocateAligned<float>(m_pad);
    l = hwy::AllocateAligned<float>(m_pad);
    alpha = hwy::AllocateAligned<float>(m_pad);
    limit = hwy::AllocateAligned<float>(m_pad);
    if (a.dropout > 0.0f) {
      zt = hwy::AllocateAligned<float>(kvb * m_pad);
      row_keys = hwy::AllocateAligned<uint32_t>(m_pad);
    }
    allow.resize(kMaxTileRows * kvb);
    allow_t.resize(kMaxTileRows * kvb);
  }
};

// Entry e of an item's key-block list: block index and whether it is PARTIAL.
struct ListView {
  const int32_t* index = nullptr;
  const BlockKind* kind = nullptr;
  int64_t count = 0;
  int32_t block(int64_t e) const { return index ? index[e] : static_cast<int32_t>(e); }
  bool partial(int64_t e) const { return kind && kind[e] == BlockKind::kPartial; }
};

void ProcessItem(const TilePlan& plan, const WorkItem& item, Scratch& s) {
  const AttentionArgs& a = *plan.args;
  const DF df;
  const int64_t n = hn::Lanes(df), chunk = kCols * n;
  const int64_t nq = a.q.shape[2], nk = a.k.shape[2], dim = a.q.shape[3], dim_v = a.v.shape[3];
  const int64_t group = a.q.shape[1] / a.k.shape[1], g = item.h0 / group, b = item.b;
  const int64_t rows = item.nh * item.nt, m_pad = (rows + chunk - 1) / chunk * chunk;
  const int64_t dv_pad = s.dv_pad, kvb = plan.kv_block;

  // Score modifiers: each row's temperature factor folds into its Q scale, its gate into the
  // normalisation. Rows that are all gated off skip the item when no LSE is asked for.
  const bool modified = has_score_modifiers(a);
  if (gated_off(a, b, item.h0, item.nh, item.q0, item.nt)) {
    for (int64_t r = 0; r < rows; ++r) {
      float* out = a.out.row<float>(b, item.h0 + r / item.nt, item.q0 + r % item.nt);
      std::fill(out, out + dim_v, 0.0f);
    }
    return;
  }
  // Q^T, scaled; padding rows are zero. Causal limits per row (bottom-right aligned).
  float min_limit = std::numeric_limits<float>::infinity(), max_limit = -min_limit;
  for (int64_t r = 0; r < m_pad; ++r) {
    if (r < rows) {
      const int64_t h = item.h0 + r / item.nt, i = item.q0 + r % item.nt;
      float q[1024];  // validate() caps the head dim at 1024
      ConvertRows(a.q, RowPointer(a.q, b, h, i), 0, 1, dim, dim, q);
      const float qscale = modified ? plan.qscale * row_factors(a, b, h, i).tau : plan.qscale;
      for (int64_t d = 0; d < dim; ++d) s.qt[d * m_pad + r] = q[d] * qscale;
      s.limit[r] = static_cast<float>(i + (nk - nq));
      if (a.dropout > 0.0f) s.row_keys[r] = dropout_row_key(a.dropout_seed, b, h, i);
      min_limit = std::min(min_limit, s.limit[r]);
      max_limit = std::max(max_limit, s.limit[r]);
    } else {
      for (int64_t d = 0; d < dim; ++d) s.qt[d * m_pad + r] = 0.0f;
      s.limit[r] = s.limit[0];
      if (a.dropout > 0.0f) s.row_keys[r] = 0;
    }
    s.m[r] = -std::numeric_limits<float>::infinity();
    s.l[r] = 0.0f;
  }
  std::fill(s.o.get(), s.o.get() + m_pad * dv_pad, 0.0f);

  ListView list;
  if (item.list >= 0) {
    const int64_t begin = plan.mask->row_start[item.list];
    list = {plan.mask->kv_index.data() + begin, plan.mask->kind.data() + begin,
            plan.mask->row_start[item.list + 1] - begin};
  } else {
    list.count = (nk + kvb - 1) / kvb;
  }
  const bool k_in_place = a.k.dtype == DType::kF32;
  // V is read in place (widened in registers) when its rows fill whole vectors.
  const bool v_in_place = dim_v % n == 0;
  const int32_t drop_threshold = dropout_threshold(a.dropout);
  const float keep_scale = 1.0f / (1.0f - a.dropout);

  for (int64_t e = 0; e < list.count; ++e) {
    const int64_t k0 = static_cast<int64_t>(list.block(e)) * kvb;
    if (k0 >= nk) break;
    const int64_t keys = std::min(kvb, nk - k0);
    bool causal_mask = false;
    if (a.causal) {
      if (static_cast<float>(k0) > max_limit) break;  // blocks are sorted: the rest is hidden too
      causal_mask = static_cast<float>(k0 + keys - 1) > min_limit;
    }
    // K and V stream from L3 or DRAM at long lengths: ask for the next block's rows now.
    if (e + 1 < list.count) {
      const int64_t next = static_cast<int64_t>(list.block(e + 1)) * kvb;
      if (next < nk) {
        const int64_t next_keys = std::min(kvb, nk - next);
        PrefetchRows(a.k, RowPointer(a.k, b, g, next), a.k.stride[2], next_keys, dim);
        PrefetchRows(a.v, RowPointer(a.v, b, g, next), a.v.stride[2], next_keys, dim_v);
      }
    }
    const float* k = s.k.get();
    int64_t k_stride = dim;
    if (k_in_place) {
      k = static_cast<const float*>(RowPointer(a.k, b, g, k0));
      k_stride = a.k.stride[2];
    } else {
      ConvertRows(a.k, RowPointer(a.k, b, g, k0), a.k.stride[2], keys, dim, dim, s.k.get());
    }
    Scores(s.qt.get(), m_pad, k, k_stride, keys, dim, s.st.get());
    if (causal_mask) MaskCausal(s.st.get(), m_pad, keys, k0, s.limit.get());
    if (list.partial(e)) {
      // Shared lists need not share a rule: the predicate is asked per head unless it says
      // that it is the same for every head. Its [query][key] bytes are transposed to the
      // lanes-are-rows layout and applied with vector selects.
      const TilePredicate& predicate = *plan.mask->predicate;
      const bool once = predicate.same_for_all_heads();
      for (int64_t hh = 0; hh < item.nh; ++hh) {
        if (hh == 0 || !once) {
          predicate.fill(b, item.h0 + hh, item.q0, item.nt, k0, keys, s.allow.data(), keys);
          TransposeBytes(s.allow.data(), item.nt, keys, keys, s.allow_t.data(), item.nt);
        }
        MaskFromBytes(s.st.get(), m_pad, keys, hh * item.nt, item.nt, s.allow_t.data(), item.nt);
      }
    }
    if (a.attended_pairs)
      s.pairs +=
          causal_mask || list.partial(e) ? CountFinite(s.st.get(), m_pad, keys, rows) : rows * keys;
    OnlineSoftmax(s.st.get(), m_pad, keys, s.m.get(), s.l.get(), s.alpha.get());
    if (a.dropout > 0.0f) {
      DropoutFactors(s.zt.get(), m_pad, keys, k0, s.row_keys.get(), drop_threshold, keep_scale);
      MultiplyInPlace(s.st.get(), s.zt.get(), keys * m_pad);
    }
    if (v_in_place) {
      AccumulatePvAny(a.v.dtype, s.st.get(), {m_pad, 1}, rows, RowPointer(a.v, b, g, k0),
                      a.v.stride[2], keys, s.alpha.get(), s.o.get(), dv_pad);
    } else {
      ConvertRows(a.v, RowPointer(a.v, b, g, k0), a.v.stride[2], keys, dim_v, dv_pad, s.v.get());
      AccumulatePv(s.st.get(), {m_pad, 1}, rows, s.v.get(), dv_pad, keys, s.alpha.get(), s.o.get(),
                   dv_pad);
    }
  }

  // Normalize once; rows that saw no key get O = 0, LSE = -inf.
  for (int64_t r = 0; r < rows; ++r) {
    const int64_t h = item.h0 + r / item.nt, i = item.q0 + r % item.nt;
    float* out = a.out.row<float>(b, h, i);
    const float l = s.l[r];
    float inv = l > 0.0f ? 1.0f / l : 0.0f;
    if (modified) inv *= row_factors(a, b, h, i).gate;
    for (int64_t d = 0; d < dim_v; ++d) out[d] = s.o[r * dv_pad + d] * inv;
    if (!a.lse.empty()) {
      *a.lse.row<float>(b, h, i) = l > 0.0f ? (s.m[r] + std::log2(l)) * static_cast<float>(M_LN2)
                                            : -std::numeric_limits<float>::infinity();
    }
  }
}

void RunTilePlan(const TilePlan& plan) {
  const int64_t count = static_cast<int64_t>(plan.items.size());
#pragma omp parallel num_threads(plan.threads)
  {
    Scratch scratch(plan);
#pragma omp for schedule(dynamic, 1)
    for (int64_t it = 0; it < count; ++it) ProcessItem(plan, plan.items[it], scratch);
    if (plan.args->attended_pairs) {
#pragma omp atomic
      *plan.args->attended_pairs += scratch.pairs;
    }
  }
}

const char* TargetName() { return hwy::TargetName(HWY_TARGET); }

}  // namespace HWY_NAMESPACE
}  // namespace attnkit::cpu
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
namespace attnkit::cpu {

HWY_EXPORT(RunTilePlan);
HWY_EXPORT(TargetName);

void run_tile_plan(const TilePlan& plan) { HWY_DYNAMIC_DISPATCH(RunTilePlan)(plan); }
const char* kernel_target_name() { return HWY_DYNAMIC_DISPATCH(TargetName)(); }

}  // namespace attnkit::cpu
#endif  // HWY_ONCE
