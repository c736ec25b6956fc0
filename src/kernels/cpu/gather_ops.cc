// Dot products with, and weighted sums of, listed rows (index-list attention's two products),
// written once with Highway and dispatched at run time.
//
// Each listed row is used once per call, so both products stream rows from cache: one vector
// load per FMA. Keys go four at a time with two accumulators each (eight independent FMA chains,
// enough for two FMA ports at latency 4), and each key's lanes are summed once at the end. The
// weighted sum keeps a block of up to four output vectors in registers for two interleaved
// parities of rows (again eight chains) and walks the rows once per block.
#include "kernels/cpu/gather_ops.h"

#include <algorithm>
#include <cstring>

#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "kernels/cpu/gather_ops.cc"
#include "hwy/foreach_target.h"  // IWYU pragma: keep
#include "hwy/highway.h"
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

template <int kKeys, typename T>
HWY_INLINE void DotGroup(const float* HWY_RESTRICT x, const T* const* rows, int64_t dim,
                         float* out) {
  const DF df;
  const int64_t n = static_cast<int64_t>(hn::Lanes(df));
  VF acc[kKeys][2];
  for (int r = 0; r < kKeys; ++r) acc[r][0] = hn::Zero(df), acc[r][1] = hn::Zero(df);
  int64_t c = 0;
  for (; c + 2 * n <= dim; c += 2 * n) {
    const VF x0 = hn::LoadU(df, x + c), x1 = hn::LoadU(df, x + c + n);
    for (int r = 0; r < kKeys; ++r) {
      acc[r][0] = hn::MulAdd(x0, LoadAsFloat(rows[r] + c), acc[r][0]);
      acc[r][1] = hn::MulAdd(x1, LoadAsFloat(rows[r] + c + n), acc[r][1]);
    }
  }
  for (; c + n <= dim; c += n) {
    const VF x0 = hn::LoadU(df, x + c);
    for (int r = 0; r < kKeys; ++r) acc[r][0] = hn::MulAdd(x0, LoadAsFloat(rows[r] + c), acc[r][0]);
  }
  for (int r = 0; r < kKeys; ++r) {
    float sum = hn::GetLane(hn::SumOfLanes(df, hn::Add(acc[r][0], acc[r][1])));
    for (int64_t t = c; t < dim; ++t) sum += x[t] * Widen(rows[r] + t);
    out[r] = sum;
  }
}

template <typename T>
void DotsOf(const float* x, const T* base, int64_t stride, int64_t dim, const int32_t* index,
            int64_t count, float* out) {
  int64_t e = 0;
  for (; e + 4 <= count; e += 4) {
    const T* rows[4];
    for (int r = 0; r < 4; ++r) rows[r] = base + index[e + r] * stride;
    DotGroup<4>(x, rows, dim, out + e);
  }
  for (; e < count; ++e) {
    const T* row = base + index[e] * stride;
    DotGroup<1>(x, &row, dim, out + e);
  }
}

// out[c0 .. c0 + C*N) for C full vectors, rows in two parities.
template <int C, typename T>
HWY_INLINE void AxpyBlock(const float* HWY_RESTRICT weight, const int32_t* HWY_RESTRICT index,
                          int64_t count, const T* base, int64_t stride, int64_t c0, float* out,
                          bool accumulate) {
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
    AxpyBlock<4>(weight, index, count, base, stride, c0, out, accumulate);
  for (; c0 + n <= dim; c0 += n) AxpyBlock<1>(weight, index, count, base, stride, c0, out, accumulate);
  for (int64_t c = c0; c < dim; ++c) {  // the tail, shorter than a vector
    float sum = accumulate ? out[c] : 0.0f;
    for (int64_t e = 0; e < count; ++e) sum += weight[e] * Widen(base + index[e] * stride + c);
    out[c] = sum;
  }
}

void GatheredDots(const float* x, const void* base, DType dtype, int64_t stride, int64_t dim,
                  const int32_t* index, int64_t count, float* out) {
  switch (dtype) {
    case DType::kF32:
      return DotsOf(x, static_cast<const float*>(base), stride, dim, index, count, out);
    case DType::kF16:
      return DotsOf(x, static_cast<const hwy::float16_t*>(base), stride, dim, index, count, out);
    case DType::kBF16:
      return DotsOf(x, static_cast<const hwy::bfloat16_t*>(base), stride, dim, index, count, out);
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

void gathered_dots(const float* x, const RowSource& rows, const int32_t* index, int64_t count,
                   float* out) {
  if (count <= 0) return;
  HWY_DYNAMIC_DISPATCH(GatheredDots)(x, rows.base, rows.dtype, rows.stride, rows.dim, index, count,
                                     out);
}

void gathered_axpy(const float* weight, const int32_t* index, int64_t count, const RowSource& rows,
                   float* out, bool accumulate) {
  HWY_DYNAMIC_DISPATCH(GatheredAxpy)(weight, index, count, rows.base, rows.dtype, rows.stride,
                                     rows.dim, out, accumulate);
}

}  // namespace attnkit::cpu
#endif  // HWY_ONCE
