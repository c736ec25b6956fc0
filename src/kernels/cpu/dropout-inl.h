// Attention dropout in the fused kernels (included once per Highway target): the keep mask of
// core/dropout.h evaluated per lane, in the "lanes = query rows" layout St[j][r].
#if defined(ATTNKIT_DROPOUT_INL_H_) == defined(HWY_TARGET_TOGGLE)
#ifdef ATTNKIT_DROPOUT_INL_H_
#undef ATTNKIT_DROPOUT_INL_H_
#else
#define ATTNKIT_DROPOUT_INL_H_
#endif

#include <cstdint>

#include "core/dropout.h"
#include "hwy/highway.h"

HWY_BEFORE_NAMESPACE();
namespace attnkit::cpu {
namespace HWY_NAMESPACE {
namespace hn = hwy::HWY_NAMESPACE;

// Zt[j][r] = keep(row r, key k0 + j) ? scale : 0, for r < m_pad; row_keys[r] = dropout_row_key
// of row r (padding rows: any value).
HWY_INLINE void DropoutFactors(float* HWY_RESTRICT zt, int64_t m_pad, int64_t keys, int64_t k0,
                               const uint32_t* HWY_RESTRICT row_keys, int32_t threshold,
                               float scale) {
  const hn::ScalableTag<float> df;
  const hn::RebindToUnsigned<decltype(df)> du;
  const hn::RebindToSigned<decltype(df)> di;
  const int64_t n = hn::Lanes(df);
  const auto keep_scale = hn::Set(df, scale);
  const auto limit = hn::Set(di, threshold - 1);  // x >= threshold as x > threshold - 1
  for (int64_t j = 0; j < keys; ++j) {
    const auto step = hn::Set(du, static_cast<uint32_t>(k0 + j) * kDropoutKeyStep);
    for (int64_t r0 = 0; r0 < m_pad; r0 += n) {
      auto x = hn::Xor(hn::LoadU(du, row_keys + r0), step);
      x = hn::Xor(x, hn::ShiftRight<16>(x));
      x = hn::Mul(x, hn::Set(du, 0x85EBCA6Bu));
      x = hn::Xor(x, hn::ShiftRight<13>(x));
      x = hn::Mul(x, hn::Set(du, 0xC2B2AE35u));
      x = hn::Xor(x, hn::ShiftRight<16>(x));
      const auto keep = hn::Gt(hn::BitCast(di, hn::ShiftRight<8>(x)), limit);
      hn::StoreU(hn::IfThenElseZero(hn::RebindMask(df, keep), keep_scale), df, zt + j * m_pad + r0);
    }
  }
}

// a[x] *= b[x] for x < count (a multiple of the lane count).
HWY_INLINE void MultiplyInPlace(float* HWY_RESTRICT a, const float* HWY_RESTRICT b, int64_t count) {
  const hn::ScalableTag<float> df;
  const int64_t n = hn::Lanes(df);
  for (int64_t x = 0; x < count; x += n)
    hn::StoreU(hn::Mul(hn::LoadU(df, a + x), hn::LoadU(df, b + x)), df, a + x);
}

}  // namespace HWY_NAMESPACE
}  // namespace attnkit::cpu
HWY_AFTER_NAMESPACE();

#endif  // include guard
