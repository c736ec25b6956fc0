// Vector math shared by the SIMD kernels (included once per Highway target).
//
// Exp2(x): 2^x for float lanes, relative error below 2.2e-7 (2^f on [0, 1) as 1 + f * a
// degree-4 Chebyshev fit, exact at integers). x <= -127 (including -inf) gives exactly 0, so masked scores contribute nothing.
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
  // 2^f = 1 + f * poly(f): exactly 1 at f = 0, so a block that leaves a row's max unchanged
  // rescales it by exactly 1.
  V p = hn::Set(d, 1.7883687415289483e-3f);
  p = hn::MulAdd(p, f, hn::Set(d, 9.19938759954215e-3f));
  p = hn::MulAdd(p, f, hn::Set(d, 5.565705438618287e-2f));
  p = hn::MulAdd(p, f, hn::Set(d, 2.4020719419078534e-1f));
  p = hn::MulAdd(p, f, hn::Set(d, 6.931475675579636e-1f));
  p = hn::MulAdd(p, f, hn::Set(d, 1.0f));
  // 2^whole from the exponent bits; whole = -127 gives the bit pattern of +0.
  const auto bits = hn::ShiftLeft<23>(hn::Add(hn::ConvertTo(di, whole), hn::Set(di, 127)));
  return hn::Mul(p, hn::BitCast(d, bits));
}

}  // namespace HWY_NAMESPACE
}  // namespace attnkit::cpu
HWY_AFTER_NAMESPACE();

#endif  // include guard
