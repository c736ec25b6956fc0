// Vector math shared by the SIMD kernels (included once per Highway target).
//
// Exp2(x): 2^x for float lanes, relative error about 1e-7 (degree-5 Chebyshev fit of 2^f on
// [0, 1)). x <= -127 (including -inf) gives exactly 0, so masked scores contribute nothing.
#if defined(ATTNKIT_SIMD_MATH_INL_H_) == defined(HWY_TARGET_TOGGLE)
#ifdef ATTNKIT_SIMD_MATH_INL_H_
#undef ATTNKIT_SIMD_MATH_INL_H_
#else
#define ATTNKIT_SIMD_MATH_INL_H_
#endif

#include "hwy/highway.h"

HWY_BEFORE_NAMESPACE();
namespace attnkit::cpu {
namespace HWY_NAMESPACE {
namespace hn = hwy::HWY_NAMESPACE;

template <class D, class V = hn::Vec<D>>
HWY_INLINE V Exp2(D d, V x) {
  const hn::RebindToSigned<D> di;
  x = hn::Min(hn::Max(x, hn::Set(d, -127.0f)), hn::Set(d, 127.0f));
  const V whole = hn::Floor(x);
  const V f = hn::Sub(x, whole);  // [0, 1)
  V p = hn::Set(d, 1.8937540581920975e-3f);
  p = hn::MulAdd(p, f, hn::Set(d, 8.94959042337237e-3f));
  p = hn::MulAdd(p, f, hn::Set(d, 5.586033707720827e-2f));
  p = hn::MulAdd(p, f, hn::Set(d, 2.4014181820146044e-1f));
  p = hn::MulAdd(p, f, hn::Set(d, 6.931544896632286e-1f));
  p = hn::MulAdd(p, f, hn::Set(d, 9.999998983500245e-1f));
  // 2^whole from the exponent bits; whole = -127 gives the bit pattern of +0.
  const auto bits = hn::ShiftLeft<23>(hn::Add(hn::ConvertTo(di, whole), hn::Set(di, 127)));
  return hn::Mul(p, hn::BitCast(d, bits));
}

}  // namespace HWY_NAMESPACE
}  // namespace attnkit::cpu
HWY_AFTER_NAMESPACE();

#endif  // include guard
