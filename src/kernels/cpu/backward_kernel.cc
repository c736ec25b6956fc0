// The attention backward on the CPU (FlashAttention-2's recomputation), written once with Highway.
//
// 1. Pack, per (b, h, query tile), in the forward's "lanes = query rows" layout:
//      Qt  [D][M]   Q^T pre-multiplied by scale*log2(e) (as the forward scores it)
//      dOt [Dv][M]  dO^T
//      lse2[M]      LSE * log2(e) (+inf for rows that saw no key and for padding: P = 0 there)
//      delta[M]     rowsum(dO * O) - dLSE
// 2. Each unit (b, g, key blocks) walks its key blocks; for each, every (query head of the group,
//    query tile) that sees it, with the forward's micro-kernels:
//      St  [Bc][M] = K Qt                 -> causal / predicate masks -> P = exp2(St - lse2)
//      dV  [Bc][Dv] += P^T dO             (PvTile with P's rows and columns swapped)
//      dPt [Bc][M] = V dOt
//      dS  = P * (dPt - delta) * scale    (in place of P)
//      dK  [Bc][D] += dS^T Q,   dQ partial [M][D] += dS K
//    dK and dV of the block are written once, after its last query tile.
//    With dropout, Zt [Bc][M] (keep / (1 - p), redrawn from the seed) enters twice:
//      dV += (P * Zt)^T dO,   dPt *= Zt   (then dS as above, with the undropped P).
// 3. dQ = sum of the units' partial planes in chunk order.
// Q, dO and K are read in place (widened in registers) when their rows fill whole vectors; else
// from padded f32 copies. Extra memory: the packs (about one copy of Q and one of dO in f32) and
// the dQ planes.
#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "kernels/cpu/backward_kernel.cc"
#include "hwy/foreach_target.h"  // IWYU pragma: keep
// Must come after foreach_target.h.
#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "core/dropout.h"
#include "core/memory.h"
#include "core/score_modifiers.h"
#include "hwy/aligned_allocator.h"
#include "hwy/cache_control.h"
#include "hwy/highway.h"
#include "kernels/cpu/backward_plan.h"
#include "kernels/cpu/dropout-inl.h"
#include "kernels/cpu/tile_ops-inl.h"
#include "kernels/cpu/tile_plan.h"

HWY_BEFORE_NAMESPACE();
namespace attnkit::cpu {
namespace HWY_NAMESPACE {
namespace hn = hwy::HWY_NAMESPACE;

inline int64_t RoundUp(int64_t x, int64_t to) { return (x + to - 1) / to * to; }

// Sizes and packed buffers shared by every unit of one run. (Class names must differ from those
// of the other kernels: each target's classes share one namespace, attnkit::cpu::N_<TARGET>, and
// two inline destructors of one name would be merged by the linker.)
struct BackwardPacks {
  int64_t m_pad = 0, d_pad = 0, dv_pad = 0, tiles = 0;
  bool q_in_place = false, do_in_place = false, k_in_place = false;
  hwy::AlignedFreeUniquePtr<float[]> qt, dot, lse2, delta, q_rows, do_rows, dq;
  hwy::AlignedFreeUniquePtr<uint32_t[]> row_keys;  // dropout's per-row keys, as lse2

  const float* qt_tile(int64_t bh, int64_t t, int64_t dim) const {
    return qt.get() + (bh * tiles + t) * dim * m_pad;
  }
  const float* dot_tile(int64_t bh, int64_t t, int64_t dim_v) const {
    return dot.get() + (bh * tiles + t) * dim_v * m_pad;
  }
  template <typename T>
  const T* row_values(const T* base, int64_t bh, int64_t t) const {
    return base + (bh * tiles + t) * m_pad;
  }
};

// Per-thread buffers for one (key block, query tile) pair and one key block's dK, dV.
struct BackwardScratch {
  hwy::AlignedFreeUniquePtr<float[]> st, dpt, k, v, dk, dv, ones, limit, zt, pz;
  std::vector<uint8_t> allow, allow_t;

  BackwardScratch(const BackwardPlan& plan, const BackwardPacks& p) {
    const AttentionArgs& f = plan.args->forward;
    const int64_t kvb = plan.kv_block, dim_v = f.v.shape[3];
    st = hwy::AllocateAligned<float>(kvb * p.m_pad);
    dpt = hwy::AllocateAligned<float>(kvb * p.m_pad);
    k = hwy::AllocateAligned<float>(kvb * p.d_pad);
    v = hwy::AllocateAligned<float>(kvb * dim_v);
    dk = hwy::AllocateAligned<float>(kvb * p.d_pad);
    dv = hwy::AllocateAligned<float>(kvb * p.dv_pad);
    ones = hwy::AllocateAligned<float>(std::max(kvb, p.m_pad));
    std::fill(ones.get(), ones.get() + std::max(kvb, p.m_pad), 1.0f);
    limit = hwy::AllocateAligned<float>(p.m_pad);
    if (f.dropout > 0.0f) {
      zt = hwy::AllocateAligned<float>(kvb * p.m_pad);
      pz = hwy::AllocateAligned<float>(kvb * p.m_pad);
    }
    allow.resize(p.m_pad * kvb);
    allow_t.resize(p.m_pad * kvb);
  }
};

// St[j][r] = exp2(St[j][r] - lse2[r]): the probabilities, recomputed from the forward's LSE.
HWY_INLINE void ProbsFromLse(float* st, int64_t m_pad, int64_t keys, const float* lse2) {
  const DF df;
  const int64_t n = hn::Lanes(df);
  for (int64_t r0 = 0; r0 < m_pad; r0 += n) {
    const VF l = hn::LoadU(df, lse2 + r0);
    for (int64_t j = 0; j < keys; ++j) {
      float* s = st + j * m_pad + r0;
      hn::StoreU(Exp2(df, hn::Sub(hn::LoadU(df, s), l)), df, s);
    }
  }
}

// St[j][r] = P[j][r] * (dPt[j][r] - delta[r]) * scale: dS with the softmax scale folded in.
HWY_INLINE void ScoreGradients(float* st, const float* dpt, int64_t m_pad, int64_t keys,
                               const float* delta, float scale) {
  const DF df;
  const int64_t n = hn::Lanes(df);
  const VF sc = hn::Set(df, scale);
  for (int64_t r0 = 0; r0 < m_pad; r0 += n) {
    const VF dl = hn::LoadU(df, delta + r0);
    for (int64_t j = 0; j < keys; ++j) {
      float* s = st + j * m_pad + r0;
      const VF ds = hn::Mul(hn::LoadU(df, s), hn::Sub(hn::LoadU(df, dpt + j * m_pad + r0), dl));
      hn::StoreU(hn::Mul(ds, sc), df, s);
    }
  }
}

// Step 1 for tile t of (b, h).
void PackTile(const BackwardPlan& plan, BackwardPacks& p, int64_t b, int64_t h, int64_t t) {
  const BackwardArgs& a = *plan.args;
  const AttentionArgs& f = a.forward;
  const int64_t heads_q = f.q.shape[1], dim = f.q.shape[3], dim_v = f.v.shape[3];
  const int64_t bh = b * heads_q + h, m_pad = p.m_pad, nq = f.q.shape[2];
  int64_t q0 = 0, nt = 0;
  plan.tile_rows(t, &q0, &nt);
  float* qt = p.qt.get() + (bh * p.tiles + t) * dim * m_pad;
  float* dot = p.dot.get() + (bh * p.tiles + t) * dim_v * m_pad;
  float* lse2 = p.lse2.get() + (bh * p.tiles + t) * m_pad;
  float* delta = p.delta.get() + (bh * p.tiles + t) * m_pad;
  uint32_t* row_keys = f.dropout > 0.0f ? p.row_keys.get() + (bh * p.tiles + t) * m_pad : nullptr;
  float q[1024], dout[1024];  // validate() caps the head dims at 1024
  for (int64_t r = 0; r < m_pad; ++r) {
    if (r >= nt) {
      for (int64_t d = 0; d < dim; ++d) qt[d * m_pad + r] = 0.0f;
      for (int64_t d = 0; d < dim_v; ++d) dot[d * m_pad + r] = 0.0f;
      lse2[r] = std::numeric_limits<float>::infinity();
      delta[r] = 0.0f;
      if (row_keys) row_keys[r] = 0;
      continue;
    }
    const int64_t i = q0 + r;
    if (row_keys) row_keys[r] = dropout_row_key(f.dropout_seed, b, h, i);
    ConvertRows(f.q, RowPointer(f.q, b, h, i), 0, 1, dim, dim, q);
    ConvertRows(a.dout, RowPointer(a.dout, b, h, i), 0, 1, dim_v, dim_v, dout);
    // D = rowsum(dO . O) from the gated output and its gradient (equal to the ungated pair's);
    // then Q takes the row's temperature factor and dO its gate (the ungated output's gradient).
    const float* out = f.out.row<float>(b, h, i);
    float dot_o = 0.0f;
    for (int64_t d = 0; d < dim_v; ++d) dot_o += dout[d] * out[d];
    if (has_score_modifiers(f)) {
      const RowFactors factors = row_factors(f, b, h, i);
      for (int64_t d = 0; d < dim; ++d) q[d] *= factors.tau;
      for (int64_t d = 0; d < dim_v; ++d) dout[d] *= factors.gate;
    }
    for (int64_t d = 0; d < dim; ++d) qt[d * m_pad + r] = q[d] * plan.qscale;
    for (int64_t d = 0; d < dim_v; ++d) dot[d * m_pad + r] = dout[d];
    const float lse = *f.lse.row<float>(b, h, i);
    const bool seen = lse > -std::numeric_limits<float>::infinity();
    lse2[r] = seen ? lse * static_cast<float>(M_LOG2E) : std::numeric_limits<float>::infinity();
    delta[r] = seen ? dot_o - (a.dlse.empty() ? 0.0f : a.dlse.get(b, h, i, 0)) : 0.0f;
    if (!p.q_in_place) {
      float* row = p.q_rows.get() + (bh * nq + i) * p.d_pad;
      std::copy(q, q + dim, row);
      std::fill(row + dim, row + p.d_pad, 0.0f);
    }
    if (!p.do_in_place) {
      float* row = p.do_rows.get() + (bh * nq + i) * p.dv_pad;
      std::copy(dout, dout + dim_v, row);
      std::fill(row + dim_v, row + p.dv_pad, 0.0f);
    }
  }
}

// One (key block, query tile) pair of step 2.
void ProcessPair(const BackwardPlan& plan, const BackwardPacks& p, BackwardScratch& s, int64_t b,
                 int64_t h, int64_t t, int64_t q0, int64_t nt, int64_t chunk, int64_t k0,
                 int64_t keys, const float* k, int64_t k_stride, const float* v, int64_t v_stride,
                 bool partial) {
  const BackwardArgs& a = *plan.args;
  const AttentionArgs& f = a.forward;
  const int64_t heads_q = f.q.shape[1], nq = f.q.shape[2], nk = f.k.shape[2];
  const int64_t dim = f.q.shape[3], dim_v = f.v.shape[3], bh = b * heads_q + h;
  const int64_t m_pad = p.m_pad;
  float* dq = p.dq.get() + ((chunk * f.q.shape[0] * heads_q + bh) * nq + q0) * p.d_pad;
  // The tile's rows of dQ, Q and dO come from L3 at long lengths: ask for them while the scores
  // are computed.
  PrefetchBytes(dq, nt * p.d_pad * sizeof(float));
  PrefetchRows(f.q, RowPointer(f.q, b, h, q0), f.q.stride[2], nt, dim);
  PrefetchRows(a.dout, RowPointer(a.dout, b, h, q0), a.dout.stride[2], nt, dim_v);
  if (f.causal) {
    const int64_t min_limit = q0 + (nk - nq), max_limit = q0 + nt - 1 + (nk - nq);
    if (k0 > max_limit) return;
    // Padding rows take the last row's limit; their P is 0 anyway (lse2 = +inf).
    for (int64_t r = 0; r < m_pad; ++r)
      s.limit[r] = static_cast<float>(std::min(r, nt - 1) + min_limit);
    Scores(p.qt_tile(bh, t, dim), m_pad, k, k_stride, keys, dim, s.st.get());
    if (k0 + keys - 1 > min_limit) MaskCausal(s.st.get(), m_pad, keys, k0, s.limit.get());
  } else {
    Scores(p.qt_tile(bh, t, dim), m_pad, k, k_stride, keys, dim, s.st.get());
  }
  if (partial) {
    plan.mask->predicate->fill(b, h, q0, nt, k0, keys, s.allow.data(), keys);
    TransposeBytes(s.allow.data(), nt, keys, keys, s.allow_t.data(), nt);
    MaskFromBytes(s.st.get(), m_pad, keys, 0, nt, s.allow_t.data(), nt);
  }
  ProbsFromLse(s.st.get(), m_pad, keys, p.row_values(p.lse2.get(), bh, t));
  // With dropout, dV takes the dropped probabilities P * Zt (in pz); dS the undropped P.
  const bool dropout = f.dropout > 0.0f;
  const float* p_used = s.st.get();
  if (dropout) {
    DropoutFactors(s.zt.get(), m_pad, keys, k0, p.row_values(p.row_keys.get(), bh, t),
                   dropout_threshold(f.dropout), 1.0f / (1.0f - f.dropout));
    std::copy_n(s.st.get(), keys * m_pad, s.pz.get());
    MultiplyInPlace(s.pz.get(), s.zt.get(), keys * m_pad);
    p_used = s.pz.get();
  }

  // dV[j] += sum_r P[j][r] dO[r]: rows of the product are keys, its inner index query rows.
  const PLayout by_key{1, m_pad};
  if (p.do_in_place) {
    AccumulatePvAny(a.dout.dtype, p_used, by_key, keys, RowPointer(a.dout, b, h, q0),
                    a.dout.stride[2], nt, s.ones.get(), s.dv.get(), p.dv_pad);
  } else {
    AccumulatePv(p_used, by_key, keys, p.do_rows.get() + (bh * nq + q0) * p.dv_pad, p.dv_pad, nt,
                 s.ones.get(), s.dv.get(), p.dv_pad);
  }
  Scores(p.dot_tile(bh, t, dim_v), m_pad, v, v_stride, keys, dim_v, s.dpt.get());
  if (dropout) MultiplyInPlace(s.dpt.get(), s.zt.get(), keys * m_pad);
  ScoreGradients(s.st.get(), s.dpt.get(), m_pad, keys, p.row_values(p.delta.get(), bh, t),
                 plan.scale);
  // dK[j] += sum_r dS[j][r] Q[r] (unscaled Q).
  if (p.q_in_place) {
    AccumulatePvAny(f.q.dtype, s.st.get(), by_key, keys, RowPointer(f.q, b, h, q0), f.q.stride[2],
                    nt, s.ones.get(), s.dk.get(), p.d_pad);
  } else {
    AccumulatePv(s.st.get(), by_key, keys, p.q_rows.get() + (bh * nq + q0) * p.d_pad, p.d_pad, nt,
                 s.ones.get(), s.dk.get(), p.d_pad);
  }
  // dQ[r] += sum_j dS[j][r] K[j], into this unit's partial plane.
  AccumulatePv(s.st.get(), PLayout{m_pad, 1}, nt, k, k_stride, keys, s.ones.get(), dq, p.d_pad);
}

void ProcessUnit(const BackwardPlan& plan, const BackwardPacks& p, BackwardScratch& s,
                 const BackwardUnit& u) {
  const BackwardArgs& a = *plan.args;
  const AttentionArgs& f = a.forward;
  const int64_t nq = f.q.shape[2], nk = f.k.shape[2], dim = f.q.shape[3], dim_v = f.v.shape[3];
  const int64_t group = f.q.shape[1] / f.k.shape[1], kvb = plan.kv_block, b = u.b, g = u.g;
  for (int64_t kb = u.kb_begin; kb < u.kb_end; ++kb) {
    const int64_t k0 = kb * kvb, keys = std::min(kvb, nk - k0);
    int64_t k_stride = 0, v_stride = 0;
    const float* k = RowsAsF32(f.k, RowPointer(f.k, b, g, k0), f.k.stride[2], keys, dim,
                               p.k_in_place, p.d_pad, s.k.get(), &k_stride);
    const float* v = RowsAsF32(f.v, RowPointer(f.v, b, g, k0), f.v.stride[2], keys, dim_v,
                               f.v.dtype == DType::kF32, dim_v, s.v.get(), &v_stride);
    std::fill(s.dk.get(), s.dk.get() + keys * p.d_pad, 0.0f);
    std::fill(s.dv.get(), s.dv.get() + keys * p.dv_pad, 0.0f);
    for (int64_t h = g * group; h < (g + 1) * group; ++h) {
      auto pair = [&](int64_t t, bool partial) {
        int64_t q0 = 0, nt = 0;
        plan.tile_rows(t, &q0, &nt);
        if (nt > 0)
          ProcessPair(plan, p, s, b, h, t, q0, nt, u.chunk, k0, keys, k, k_stride, v, v_stride,
                      partial);
      };
      if (!plan.mask) {
        // Causal: rows before k0 - (nk - nq) do not see this block.
        const int64_t first_row = f.causal ? std::max<int64_t>(0, k0 - (nk - nq)) : 0;
        for (int64_t t = std::min(first_row / plan.q_tile, plan.tiles); t < plan.tiles; ++t)
          pair(t, false);
        continue;
      }
      const BlockMask& m = *plan.mask;
      const int64_t set = (m.batch == 1 ? 0 : b) * m.heads + (m.heads == 1 ? 0 : h);
      const int64_t list = set * m.kv_blocks() + kb;
      for (int64_t e = plan.transposed.start[list]; e < plan.transposed.start[list + 1]; ++e)
        for (int64_t sub = 0; sub < plan.sub_tiles; ++sub)
          pair(plan.transposed.q_index[e] * plan.sub_tiles + sub,
               plan.transposed.kind[e] == BlockKind::kPartial);
    }
    for (int64_t j = 0; j < keys; ++j) {
      std::copy_n(s.dk.get() + j * p.d_pad, dim, a.dk.row<float>(b, g, k0 + j));
      std::copy_n(s.dv.get() + j * p.dv_pad, dim_v, a.dv.row<float>(b, g, k0 + j));
    }
  }
}

void RunBackwardPlan(const BackwardPlan& plan) {
  const BackwardArgs& a = *plan.args;
  const AttentionArgs& f = a.forward;
  const int64_t batch = f.q.shape[0], heads_q = f.q.shape[1], nq = f.q.shape[2];
  const int64_t dim = f.q.shape[3], dim_v = f.v.shape[3];
  const int64_t n = hn::Lanes(DF()), chunk = kCols * n;
  BackwardPacks p;
  p.m_pad = RoundUp(plan.q_tile, chunk);
  p.d_pad = RoundUp(dim, n);
  p.dv_pad = RoundUp(dim_v, n);
  p.tiles = plan.tiles;
  // Score modifiers change Q and dO per row: they are then packed, not read in place.
  const bool modified = has_score_modifiers(f);
  p.q_in_place = dim % n == 0 && !modified;
  p.do_in_place = dim_v % n == 0 && !modified;
  p.k_in_place = f.k.dtype == DType::kF32 && dim % n == 0;
  const int64_t bhs = batch * heads_q, rows = bhs * p.tiles * p.m_pad;
  check_memory(4.0 * (double(rows) * double(dim + dim_v + 2) +
                      double(plan.chunks * bhs * nq) * double(p.d_pad) +
                      (p.q_in_place ? 0.0 : double(bhs * nq * p.d_pad)) +
                      (p.do_in_place ? 0.0 : double(bhs * nq * p.dv_pad))),
               "q", "the backward's packed Q, dO and dQ partials");
  p.qt = hwy::AllocateAligned<float>(rows * dim);
  p.dot = hwy::AllocateAligned<float>(rows * dim_v);
  p.lse2 = hwy::AllocateAligned<float>(rows);
  p.delta = hwy::AllocateAligned<float>(rows);
  if (f.dropout > 0.0f) p.row_keys = hwy::AllocateAligned<uint32_t>(rows);
  if (!p.q_in_place) p.q_rows = hwy::AllocateAligned<float>(bhs * nq * p.d_pad);
  if (!p.do_in_place) p.do_rows = hwy::AllocateAligned<float>(bhs * nq * p.dv_pad);
  const int64_t plane = bhs * nq * p.d_pad;
  p.dq = hwy::AllocateAligned<float>(plan.chunks * plane);
  const int64_t units = static_cast<int64_t>(plan.units.size());

#pragma omp parallel num_threads(plan.threads)
  {
#pragma omp for schedule(static)
    for (int64_t x = 0; x < plan.chunks * plane; x += 4096)
      std::fill(p.dq.get() + x, p.dq.get() + std::min(x + 4096, plan.chunks * plane), 0.0f);
#pragma omp for schedule(dynamic, 1)
    for (int64_t x = 0; x < bhs * p.tiles; ++x)
      PackTile(plan, p, x / p.tiles / heads_q, x / p.tiles % heads_q, x % p.tiles);
    BackwardScratch scratch(plan, p);
#pragma omp for schedule(dynamic, 1)
    for (int64_t x = 0; x < units; ++x) ProcessUnit(plan, p, scratch, plan.units[x]);
      // dQ: the partial planes summed in chunk order, whatever thread wrote them.
#pragma omp for schedule(static)
    for (int64_t row = 0; row < bhs * nq; ++row) {
      const int64_t b = row / (heads_q * nq), h = row / nq % heads_q, i = row % nq;
      float* dq = a.dq.row<float>(b, h, i);
      const float* part = p.dq.get() + row * p.d_pad;
      std::copy_n(part, dim, dq);
      for (int64_t c = 1; c < plan.chunks; ++c)
        for (int64_t d = 0; d < dim; ++d) dq[d] += part[c * plane + d];
      if (modified) {  // the scores are tau * scale * q . k: dQ takes tau too
        const float tau = row_factors(f, b, h, i).tau;
        for (int64_t d = 0; d < dim; ++d) dq[d] *= tau;
      }
    }
  }
}

}  // namespace HWY_NAMESPACE
}  // namespace attnkit::cpu
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
namespace attnkit::cpu {

HWY_EXPORT(RunBackwardPlan);

void run_backward_plan(const BackwardPlan& plan) { HWY_DYNAMIC_DISPATCH(RunBackwardPlan)(plan); }

}  // namespace attnkit::cpu
#endif  // HWY_ONCE
