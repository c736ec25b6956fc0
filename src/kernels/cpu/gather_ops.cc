// Dot products with, and weighted sums of, listed rows (index-list attention's two products),
// written once with Highway and dispatched at run time.
//
// Each listed row is used once per call, so both products stream rows from cache: one vector
// load per FMA. Dot products go one vector of keys at a time (16 on AVX-512: 16 independent FMA
// chains, one accumulator per key), then one transposing reduction turns the 16 accumulators
// into the 16 sums. The weighted sum keeps a block of up to four output vectors in registers for
// two interleaved parities of rows (eight chains) and walks the rows once per block.
#include "kernels/cpu/gather_ops.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <utility>

#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "kernels/cpu/gather_ops.cc"
#include "hwy/foreach_target.h"  // IWYU pragma: keep
#include "hwy/highway.h"
#include "kernels/cpu/simd_math-inl.h"
#include "kernels/cpu/tile_ops-inl.h"

HWY_BEFORE_NAMESPACE();
namespace attnkit::cpu {
namespace HWY_NAMESPACE {
namespace hn = hwy::HWY_NAMESPACE;

// Scalar widening of one element (tails shorter than a vector). The 16-bit types are read as
// their bits: float16_t is a native type on some Arm compilers.
HWY_INLINE float Widen(const float* p) { return *p; }
HWY_INLINE float Widen(const hwy::float16_t* p) {
  uint16_t bits;
  std::memcpy(&bits, p, sizeof(bits));
  return f16_to_f32(bits);
}
HWY_INLINE float Widen(const hwy::bfloat16_t* p) {
  uint16_t bits;
  std::memcpy(&bits, p, sizeof(bits));
  return bf16_to_f32(bits);
}

// Lane-sums of kN accumulators (kN = lanes) as one vector: lane j = sum of acc[j]'s lanes. A
// transposing reduction: pairs interleaved within 128-bit blocks, then 64-bit pairs (each block
// then holds four keys' block sums), then the blocks themselves: about three shuffles or adds
// per key instead of a full horizontal sum each.
#if HWY_TARGET == HWY_SCALAR  // one lane: nothing to reduce (and no block shuffles)
template <size_t kN>
HWY_INLINE VF ReduceKeys(VF* acc) {
  return acc[0];
}
#else
template <size_t kN>
HWY_INLINE VF ReduceKeys(VF* acc) {
  const DF df;
  {
    const hn::Repartition<uint64_t, DF> du64;
    VF t[kN / 2];
    for (size_t i = 0; i < kN / 2; ++i)
      t[i] = hn::Add(hn::InterleaveLower(df, acc[2 * i], acc[2 * i + 1]),
                     hn::InterleaveUpper(df, acc[2 * i], acc[2 * i + 1]));
    VF u[kN / 4];
    for (size_t i = 0; i < kN / 4; ++i) {
      const auto x = hn::BitCast(du64, t[2 * i]), y = hn::BitCast(du64, t[2 * i + 1]);
      u[i] = hn::Add(hn::BitCast(df, hn::InterleaveLower(du64, x, y)),
                     hn::BitCast(df, hn::InterleaveUpper(du64, x, y)));
    }
    if constexpr (kN == 4) {
      return u[0];
    } else if constexpr (kN == 8) {  // two blocks: [u0 lower + upper, u1 lower + upper]
      return hn::Add(hn::ConcatLowerLower(df, u[1], u[0]), hn::ConcatUpperUpper(df, u[1], u[0]));
    } else {  // four blocks: adjacent blocks first, then halves
      static_assert(kN == 16, "vectors of 1, 4, 8 or 16 floats");
      const VF v01 = hn::Add(hn::OddEvenBlocks(u[1], u[0]),
                             hn::OddEvenBlocks(hn::SwapAdjacentBlocks(u[1]),
                                               hn::SwapAdjacentBlocks(u[0])));
      const VF v23 = hn::Add(hn::OddEvenBlocks(u[3], u[2]),
                             hn::OddEvenBlocks(hn::SwapAdjacentBlocks(u[3]),
                                               hn::SwapAdjacentBlocks(u[2])));
      return hn::Add(hn::ConcatLowerLower(df, v23, v01), hn::ConcatUpperUpper(df, v23, v01));
    }
  }
}
#endif

// acc[r] += x[c0 .. c0 + kX*N) . row_r[c0 ..] for the kN rows of a group: x's kX vectors stay
// in registers while each row streams through once (one pointer live at a time).
template <int kX, typename T>
HWY_INLINE void DotBlock(const float* HWY_RESTRICT x, const T* base, int64_t stride,
                         const int32_t* index, int64_t c0, VF* acc) {
  const DF df;
  constexpr size_t kN = hn::MaxLanes(DF());
  constexpr int64_t n = static_cast<int64_t>(kN);
  VF xv[kX];
  for (int v = 0; v < kX; ++v) xv[v] = hn::LoadU(df, x + c0 + v * n);
  HWY_UNROLL(16)  // acc[] must stay in registers: a rolled loop keeps it on the stack
  for (size_t r = 0; r < kN; ++r) {
    const T* row = base + index[r] * stride + c0;
    VF a = acc[r];
    for (int v = 0; v < kX; ++v) a = hn::MulAdd(xv[v], LoadAsFloat(row + v * n), a);
    acc[r] = a;
  }
}

// out[r] = scale * x . row(index[r]) for the kN rows of one group (one vector of keys).
template <typename T>
HWY_INLINE void DotGroup(const float* HWY_RESTRICT x, float scale, const T* base, int64_t stride,
                         int64_t dim, const int32_t* index, float* out) {
  const DF df;
  constexpr size_t kN = hn::MaxLanes(DF());
  constexpr int64_t n = static_cast<int64_t>(kN);
  VF acc[kN];
  for (size_t r = 0; r < kN; ++r) acc[r] = hn::Zero(df);
  int64_t c = 0;
  for (; c + 4 * n <= dim; c += 4 * n) DotBlock<4>(x, base, stride, index, c, acc);
  switch ((dim - c) / n) {
    case 3: DotBlock<3>(x, base, stride, index, c, acc); break;
    case 2: DotBlock<2>(x, base, stride, index, c, acc); break;
    case 1: DotBlock<1>(x, base, stride, index, c, acc); break;
    default: break;
  }
  c += (dim - c) / n * n;
  hn::StoreU(hn::Mul(ReduceKeys<kN>(acc), hn::Set(df, scale)), df, out);
  for (; c < dim; ++c)  // the head dim's tail, shorter than a vector
    for (size_t r = 0; r < kN; ++r) out[r] += scale * x[c] * Widen(base + index[r] * stride + c);
}

template <typename T>
void DotsOf(const float* x, float scale, const T* base, int64_t stride, int64_t dim,
            const int32_t* index, int64_t count, float* out) {
  constexpr int64_t kN = static_cast<int64_t>(hn::MaxLanes(DF()));
  int64_t e = 0;
  for (; e + kN <= count; e += kN) DotGroup(x, scale, base, stride, dim, index + e, out + e);
  if (e < count) {  // a short last group: the missing slots repeat its first key
    int32_t tail[kN];
    float sums[kN];
    for (int64_t r = 0; r < kN; ++r) tail[r] = index[e + r < count ? e + r : e];
    DotGroup(x, scale, base, stride, dim, tail, sums);
    std::copy(sums, sums + (count - e), out + e);
  }
}

// out[c0 .. c0 + C*N) for C full vectors, rows in two parities.
template <int C, typename T>
HWY_INLINE void AxpyBlock(const float* HWY_RESTRICT weight, const int32_t* HWY_RESTRICT index,
                          int64_t count, const T* base, int64_t stride, int64_t dim, int64_t c0,
                          float* out, bool accumulate) {
  const DF df;
  const int64_t n = static_cast<int64_t>(hn::Lanes(df));
  VF acc[2][C];
  for (int c = 0; c < C; ++c) {
    acc[0][c] = accumulate ? hn::LoadU(df, out + c0 + c * n) : hn::Zero(df);
    acc[1][c] = hn::Zero(df);
  }
  int64_t e = 0;
  for (; e + 2 <= count; e += 2) {
    const T* r0 = base + index[e] * stride + c0;
    const T* r1 = base + index[e + 1] * stride + c0;
    const VF w0 = hn::Set(df, weight[e]), w1 = hn::Set(df, weight[e + 1]);
    for (int c = 0; c < C; ++c) {
      acc[0][c] = hn::MulAdd(w0, LoadAsFloat(r0 + c * n), acc[0][c]);
      acc[1][c] = hn::MulAdd(w1, LoadAsFloat(r1 + c * n), acc[1][c]);
    }
  }
  if (e < count) {
    const T* r0 = base + index[e] * stride + c0;
    const VF w0 = hn::Set(df, weight[e]);
    for (int c = 0; c < C; ++c) acc[0][c] = hn::MulAdd(w0, LoadAsFloat(r0 + c * n), acc[0][c]);
  }
  for (int c = 0; c < C; ++c) hn::StoreU(hn::Add(acc[0][c], acc[1][c]), df, out + c0 + c * n);
}

template <typename T>
void AxpyOf(const float* weight, const int32_t* index, int64_t count, const T* base,
            int64_t stride, int64_t dim, float* out, bool accumulate) {
  const int64_t n = static_cast<int64_t>(hn::Lanes(DF()));
  int64_t c0 = 0;
  for (; c0 + 4 * n <= dim; c0 += 4 * n)
    AxpyBlock<4>(weight, index, count, base, stride, dim, c0, out, accumulate);
  for (; c0 + n <= dim; c0 += n) AxpyBlock<1>(weight, index, count, base, stride, dim, c0, out, accumulate);
  for (int64_t c = c0; c < dim; ++c) {  // the tail, shorter than a vector
    float sum = accumulate ? out[c] : 0.0f;
    for (int64_t e = 0; e < count; ++e) sum += weight[e] * Widen(base + index[e] * stride + c);
    out[c] = sum;
  }
}

// p = 2^(s - max) in place over `count` scores; returns (max, sum p).
HWY_INLINE std::pair<float, float> Exp2Shifted(float* s, int64_t count) {
  const DF df;
  const int64_t n = static_cast<int64_t>(hn::Lanes(df));
  const VF neg_inf = hn::Set(df, -std::numeric_limits<float>::infinity());
  VF top = neg_inf;
  int64_t e = 0;
  for (; e + n <= count; e += n) top = hn::Max(top, hn::LoadU(df, s + e));
  const auto tail = hn::FirstN(df, static_cast<size_t>(count - e));
  if (e < count) top = hn::Max(top, hn::IfThenElse(tail, hn::MaskedLoad(tail, df, s + e), neg_inf));
  const float top_scalar = hn::GetLane(hn::MaxOfLanes(df, top));
  const VF shift = hn::Set(df, top_scalar);
  VF sum = hn::Zero(df);
  for (e = 0; e + n <= count; e += n) {
    const VF p = Exp2(df, hn::Sub(hn::LoadU(df, s + e), shift));
    sum = hn::Add(sum, p);
    hn::StoreU(p, df, s + e);
  }
  if (e < count) {
    const VF p = hn::IfThenElseZero(tail, Exp2(df, hn::Sub(hn::MaskedLoad(tail, df, s + e), shift)));
    sum = hn::Add(sum, p);
    hn::BlendedStore(p, tail, df, s + e);
  }
  return {top_scalar, hn::GetLane(hn::SumOfLanes(df, sum))};
}

template <typename T>
float AttentionRowOf(const float* x, float scale, const T* keys, int64_t key_stride, int64_t dim,
                     const T* values, int64_t value_stride, int64_t dim_v, const int32_t* index,
                     int64_t count, float* scores, float* out) {
  DotsOf(x, scale, keys, key_stride, dim, index, count, scores);
  const auto [top, sum] = Exp2Shifted(scores, count);
  AxpyOf(scores, index, count, values, value_stride, dim_v, out, false);
  const DF df;
  const int64_t n = static_cast<int64_t>(hn::Lanes(df));
  const VF inv = hn::Set(df, 1.0f / sum);
  int64_t c = 0;
  for (; c + n <= dim_v; c += n) hn::StoreU(hn::Mul(hn::LoadU(df, out + c), inv), df, out + c);
  for (; c < dim_v; ++c) out[c] *= 1.0f / sum;
  return (top + std::log2(sum)) * 0.6931471805599453f;
}

float GatheredAttentionRow(const float* x, float scale, const void* keys, const void* values, DType dtype,
                           int64_t key_stride, int64_t dim, int64_t value_stride, int64_t dim_v,
                           const int32_t* index, int64_t count, float* scores, float* out) {
  switch (dtype) {
    case DType::kF32:
      return AttentionRowOf(x, scale, static_cast<const float*>(keys), key_stride, dim,
                            static_cast<const float*>(values), value_stride, dim_v, index, count,
                            scores, out);
    case DType::kF16:
      return AttentionRowOf(x, scale, static_cast<const hwy::float16_t*>(keys), key_stride, dim,
                            static_cast<const hwy::float16_t*>(values), value_stride, dim_v, index,
                            count, scores, out);
    case DType::kBF16:
      return AttentionRowOf(x, scale, static_cast<const hwy::bfloat16_t*>(keys), key_stride, dim,
                            static_cast<const hwy::bfloat16_t*>(values), value_stride, dim_v,
                            index, count, scores, out);
  }
  return 0.0f;
}

void GatheredDots(const float* x, float scale, const void* base, DType dtype, int64_t stride,
                  int64_t dim, const int32_t* index, int64_t count, float* out) {
  switch (dtype) {
    case DType::kF32:
      return DotsOf(x, scale, static_cast<const float*>(base), stride, dim, index, count, out);
    case DType::kF16:
      return DotsOf(x, scale, static_cast<const hwy::float16_t*>(base), stride, dim, index, count, out);
    case DType::kBF16:
      return DotsOf(x, scale, static_cast<const hwy::bfloat16_t*>(base), stride, dim, index, count, out);
  }
}

void GatheredAxpy(const float* weight, const int32_t* index, int64_t count, const void* base,
                  DType dtype, int64_t stride, int64_t dim, float* out, bool accumulate) {
  switch (dtype) {
    case DType::kF32:
      return AxpyOf(weight, index, count, static_cast<const float*>(base), stride, dim, out,
                    accumulate);
    case DType::kF16:
      return AxpyOf(weight, index, count, static_cast<const hwy::float16_t*>(base), stride, dim,
                    out, accumulate);
    case DType::kBF16:
      return AxpyOf(weight, index, count, static_cast<const hwy::bfloat16_t*>(base), stride, dim,
                    out, accumulate);
  }
}

}  // namespace HWY_NAMESPACE
}  // namespace attnkit::cpu
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
namespace attnkit::cpu {

HWY_EXPORT(GatheredDots);
HWY_EXPORT(GatheredAxpy);
HWY_EXPORT(GatheredAttentionRow);

float gathered_attention_row(const float* x, float scale, const RowSource& keys,
                             const RowSource& values, const int32_t* index, int64_t count,
                             float* scores, float* out) {
  return HWY_DYNAMIC_DISPATCH(GatheredAttentionRow)(x, scale, keys.base, values.base, keys.dtype,
                                                    keys.stride, keys.dim, values.stride,
                                                    values.dim, index, count, scores, out);
}

void gathered_dots(const float* x, float scale, const RowSource& rows, const int32_t* index,
                   int64_t count, float* out) {
  if (count <= 0) return;
  HWY_DYNAMIC_DISPATCH(GatheredDots)(x, scale, rows.base, rows.dtype, rows.stride, rows.dim, index,
                                     count, out);
}

void gathered_axpy(const float* weight, const int32_t* index, int64_t count, const RowSource& rows,
                   float* out, bool accumulate) {
  HWY_DYNAMIC_DISPATCH(GatheredAxpy)(weight, index, count, rows.base, rows.dtype, rows.stride,
                                     rows.dim, out, accumulate);
}

}  // namespace attnkit::cpu
#endif  // HWY_ONCE
