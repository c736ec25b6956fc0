// bf16 score tiles for the planners' scoring passes over packed operands (Bf16Matrix):
//   s[i, j] = scale * sum_p (q_lo k_lo + q_hi k_hi)   over packed pairs p of the head dim,
// products of bf16-rounded operands summed in f32, as InfLLM-V2's official kernels score
// (bf16 operands on FlashAttention's tensor cores, f32 accumulation).
//
// Two back ends of one contract:
// - AVX512-BF16 (`vdpbf16ps`: 16 lanes x 2 products per instruction, twice the f32 FMA rate on
//   Zen 4/5 and Sapphire Rapids). Debian's Highway (1.0.3) has no target with this instruction, so
//   it is written with intrinsics behind a function-level target attribute and chosen at run time
//   from CPUID, and only while Highway dispatches to AVX-512, so tests that restrict Highway's
//   targets also turn it off.
// - Everywhere else, Highway: each pair widened to two f32 lanes (a shift and a mask) and two
//   FMAs. The same products (exact in f32: 8-bit x 8-bit mantissas), summed in another order.
//   (vdpbf16ps also reads bf16 denormals as zero; the two differ only for products below about
//   1e-38, which no selection notices.)
#include <algorithm>
#include <cstdint>
#include <cstring>
#include <vector>

#include "kernels/cpu/gemm.h"
#include "kernels/cpu/planner_ops.h"

#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "kernels/cpu/score_tile_bf16.cc"
#include "hwy/foreach_target.h"  // IWYU pragma: keep
#include "hwy/highway.h"

HWY_BEFORE_NAMESPACE();
namespace attnkit::cpu {
namespace HWY_NAMESPACE {
namespace hn = hwy::HWY_NAMESPACE;

// Round-to-nearest-even of f32 bit patterns to their top 16 bits (round_to_bf16 on lanes).
template <class DU, class V = hn::Vec<DU>>
HWY_INLINE V RoundToBf16Bits(DU du, V u) {
  const V odd = hn::And(hn::ShiftRight<16>(u), hn::Set(du, 1u));
  return hn::And(hn::Add(u, hn::Add(hn::Set(du, 0x7fffu), odd)), hn::Set(du, 0xffff0000u));
}

void PrimPackBf16Pairs(const float* xt, int64_t dim, int64_t n, int64_t ldx, uint32_t* out,
                       int64_t ldo) {
  const hn::ScalableTag<uint32_t> du;
  const hn::RebindToFloat<decltype(du)> df;
  const int64_t lanes = static_cast<int64_t>(hn::Lanes(du));
  for (int64_t p = 0; p < (dim + 1) / 2; ++p) {
    const float* lo = xt + 2 * p * ldx;
    const float* hi = 2 * p + 1 < dim ? lo + ldx : nullptr;
    uint32_t* dst = out + p * ldo;
    int64_t j = 0;
    for (; j + lanes <= n; j += lanes) {
      auto pair = hn::ShiftRight<16>(RoundToBf16Bits(du, hn::BitCast(du, hn::LoadU(df, lo + j))));
      if (hi) pair = hn::Or(pair, RoundToBf16Bits(du, hn::BitCast(du, hn::LoadU(df, hi + j))));
      hn::StoreU(pair, du, dst + j);
    }
    for (; j < n; ++j) dst[j] = bf16_pair(lo[j], hi ? hi[j] : 0.0f);
  }
}

// f32 lanes of the low and high halves of packed pairs.
template <class DF, class VU>
HWY_INLINE hn::Vec<DF> PairLow(DF df, VU pairs) {
  return hn::BitCast(df, hn::ShiftLeft<16>(pairs));
}
template <class DF, class VU>
HWY_INLINE hn::Vec<DF> PairHigh(DF df, VU pairs) {
  const hn::RebindToUnsigned<DF> du;
  return hn::BitCast(df, hn::And(pairs, hn::Set(du, 0xffff0000u)));
}

// Rows [i0, i0 + R) x columns [j, j + lanes) (masked to `valid` columns).
template <int R>
HWY_INLINE void PortableRows(const uint32_t* qp, int64_t ldq, int64_t i0, const uint32_t* kp,
                             int64_t ldk, int64_t j, int64_t valid, int64_t pairs, float scale,
                             float* s, int64_t lds) {
  const hn::ScalableTag<float> df;
  const hn::RebindToUnsigned<decltype(df)> du;
  const auto mask = hn::FirstN(df, static_cast<size_t>(valid));
  const auto mask_u = hn::RebindMask(du, mask);
  hn::Vec<decltype(df)> acc[R];
  for (int r = 0; r < R; ++r) acc[r] = hn::Zero(df);
  for (int64_t p = 0; p < pairs; ++p) {
    const auto keys = hn::MaskedLoad(mask_u, du, kp + p * ldk + j);
    const auto k_lo = PairLow(df, keys), k_hi = PairHigh(df, keys);
    for (int r = 0; r < R; ++r) {
      const uint32_t q = qp[p * ldq + i0 + r];
      acc[r] = hn::MulAdd(hn::BitCast(df, hn::Set(du, q << 16)), k_lo, acc[r]);
      acc[r] = hn::MulAdd(hn::BitCast(df, hn::Set(du, q & 0xffff0000u)), k_hi, acc[r]);
    }
  }
  for (int r = 0; r < R; ++r)
    hn::BlendedStore(hn::Mul(acc[r], hn::Set(df, scale)), mask, df, s + (i0 + r) * lds + j);
}

void PrimScoreTileBf16(const uint32_t* qp, int64_t ldq, int64_t rows, const uint32_t* kp,
                       int64_t ldk, int64_t cols, int64_t pairs, float scale, float* s,
                       int64_t lds) {
  const int64_t lanes = static_cast<int64_t>(hn::Lanes(hn::ScalableTag<float>()));
  for (int64_t j = 0; j < cols; j += lanes) {
    const int64_t valid = std::min(lanes, cols - j);
    int64_t i = 0;
    for (; i + 4 <= rows; i += 4)
      PortableRows<4>(qp, ldq, i, kp, ldk, j, valid, pairs, scale, s, lds);
    for (; i < rows; ++i) PortableRows<1>(qp, ldq, i, kp, ldk, j, valid, pairs, scale, s, lds);
  }
}

// The target dynamic dispatch picked (cached by Highway, so cheap per call; follows the test hook).
int64_t PrimDispatchedTarget() { return HWY_TARGET; }

}  // namespace HWY_NAMESPACE
}  // namespace attnkit::cpu
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#define ATTNKIT_HAS_BF16_DOT 1
#endif

namespace attnkit::cpu {

HWY_EXPORT(PrimPackBf16Pairs);
HWY_EXPORT(PrimScoreTileBf16);
HWY_EXPORT(PrimDispatchedTarget);

#ifdef ATTNKIT_HAS_BF16_DOT
namespace {

#define ATTNKIT_BF16_TARGET __attribute__((target("avx512f,avx512bw,avx512bf16")))

// R rows x 32 columns (two vectors; m0, m1 mask the valid ones): 2R accumulators, each step
// loads one pair-row of the panel's keys and broadcasts R query pairs. R = 8 gives 16
// independent chains, enough to cover vdpbf16ps's latency on two ports.
template <int R>
ATTNKIT_BF16_TARGET void NativeRows(const uint32_t* qp, int64_t ldq, const uint32_t* kp,
                                    int64_t ldk, int64_t pairs, float scale, float* s, int64_t lds,
                                    __mmask16 m0, __mmask16 m1) {
  // Unrolled by hand of the compiler so the accumulators stay in registers (a plain loop
  // becomes a memset of a stack array).
  __m512 acc0[R], acc1[R];
#pragma GCC unroll 8
  for (int r = 0; r < R; ++r) acc0[r] = acc1[r] = _mm512_setzero_ps();
  for (int64_t p = 0; p < pairs; ++p) {
    const __m512bh k0 = (__m512bh)_mm512_maskz_loadu_epi32(m0, kp + p * ldk);
    const __m512bh k1 = (__m512bh)_mm512_maskz_loadu_epi32(m1, kp + p * ldk + 16);
    const uint32_t* q = qp + p * ldq;
#pragma GCC unroll 8
    for (int r = 0; r < R; ++r) {
      const __m512bh qr = (__m512bh)_mm512_set1_epi32(static_cast<int>(q[r]));
      acc0[r] = _mm512_dpbf16_ps(acc0[r], qr, k0);
      acc1[r] = _mm512_dpbf16_ps(acc1[r], qr, k1);
    }
  }
  const __m512 vscale = _mm512_set1_ps(scale);
#pragma GCC unroll 8
  for (int r = 0; r < R; ++r) {
    _mm512_mask_storeu_ps(s + r * lds, m0, _mm512_mul_ps(acc0[r], vscale));
    _mm512_mask_storeu_ps(s + r * lds + 16, m1, _mm512_mul_ps(acc1[r], vscale));
  }
}

template <int R>
void NativeRowsAt(const uint32_t* qp, int64_t ldq, int64_t i0, const uint32_t* kp, int64_t ldk,
                  int64_t j, int64_t pairs, float scale, float* s, int64_t lds, __mmask16 m0,
                  __mmask16 m1) {
  NativeRows<R>(qp + i0, ldq, kp + j, ldk, pairs, scale, s + i0 * lds + j, lds, m0, m1);
}

void NativeScoreTile(const uint32_t* qp, int64_t ldq, int64_t rows, const uint32_t* kp, int64_t ldk,
                     int64_t cols, int64_t pairs, float scale, float* s, int64_t lds) {
  auto first = [](int64_t n) {
    return static_cast<__mmask16>(n >= 16 ? 0xffff : n <= 0 ? 0 : (1u << n) - 1);
  };
  for (int64_t j = 0; j < cols; j += 32) {
    const __mmask16 m0 = first(cols - j), m1 = first(cols - j - 16);
    int64_t i = 0;
    for (; i + 8 <= rows; i += 8)
      NativeRowsAt<8>(qp, ldq, i, kp, ldk, j, pairs, scale, s, lds, m0, m1);
    for (; i + 2 <= rows; i += 2)
      NativeRowsAt<2>(qp, ldq, i, kp, ldk, j, pairs, scale, s, lds, m0, m1);
    if (i < rows) NativeRowsAt<1>(qp, ldq, i, kp, ldk, j, pairs, scale, s, lds, m0, m1);
  }
}

}  // namespace
#endif  // ATTNKIT_HAS_BF16_DOT

bool native_bf16_dot() {
#ifdef ATTNKIT_HAS_BF16_DOT
  static const bool cpu_has_it = __builtin_cpu_supports("avx512bf16") != 0;
  // Only where dispatch runs AVX-512 (lower values are better targets): tests that narrow
  // Highway's targets (SetSupportedTargetsForTest) get the portable path.
  return cpu_has_it && HWY_DYNAMIC_DISPATCH(PrimDispatchedTarget)() <= HWY_AVX3;
#else
  return false;
#endif
}

void pack_bf16_pairs(const float* xt, int64_t dim, int64_t n, int64_t ldx, uint32_t* out,
                     int64_t ldo) {
  if (dim <= 0 || n <= 0) return;
  HWY_DYNAMIC_DISPATCH(PrimPackBf16Pairs)(xt, dim, n, ldx, out, ldo);
}

Bf16Matrix pack_bf16(const float* x, int64_t n, int64_t dim, int64_t ldx) {
  Bf16Matrix m;
  m.n = n, m.dim = dim;
  const int64_t chunks = (n + kBf16Chunk - 1) / kBf16Chunk;
  m.data.assign(chunks * ((dim + 1) / 2) * kBf16Chunk, 0u);
  std::vector<float> xt(dim * kBf16Chunk);  // one chunk transposed, for pack_bf16_pairs
  for (int64_t j0 = 0; j0 < n; j0 += kBf16Chunk) {
    const int64_t cols = std::min(kBf16Chunk, n - j0);
    transpose(x + j0 * ldx, cols, dim, ldx, xt.data(), kBf16Chunk);
    pack_bf16_pairs(xt.data(), dim, cols, kBf16Chunk, m.data.data() + m.offset(j0), kBf16Chunk);
  }
  return m;
}

void score_tile_bf16(const uint32_t* qp, int64_t ldq, int64_t rows, const uint32_t* kp, int64_t ldk,
                     int64_t cols, int64_t pairs, float scale, float* s, int64_t lds) {
  if (rows <= 0 || cols <= 0) return;
#ifdef ATTNKIT_HAS_BF16_DOT
  if (native_bf16_dot()) return NativeScoreTile(qp, ldq, rows, kp, ldk, cols, pairs, scale, s, lds);
#endif
  HWY_DYNAMIC_DISPATCH(PrimScoreTileBf16)(qp, ldq, rows, kp, ldk, cols, pairs, scale, s, lds);
}

}  // namespace attnkit::cpu
#endif  // HWY_ONCE
