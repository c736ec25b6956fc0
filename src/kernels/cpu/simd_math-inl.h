// Vector math shared by the SIMD kernels (included once per Highway target).
//
// Exp2(x): 2^x for float lanes, relative error below 2.2e-7 (2^f on [0, 1) as 1 + f * a
// degree-4 Chebyshev fit, exact at integers). x < -126 (including -inf, and NaN) gives exactly
// 0, so masked scores contribute nothing; x >= 128 gives inf.
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

// 2^f = 1 + f * poly(f) on [0, 1): exactly 1 at f = 0, so a block that leaves a row's max
// unchanged rescales it by exactly 1.
template <class D, class V = hn::Vec<D>>
HWY_INLINE V Exp2Fraction(D d, V f) {
  V p = hn::Set(d, 1.7883687415289483e-3f);
  p = hn::MulAdd(p, f, hn::Set(d, 9.19938759954215e-3f));
  p = hn::MulAdd(p, f, hn::Set(d, 5.565705438618287e-2f));
  p = hn::MulAdd(p, f, hn::Set(d, 2.4020719419078534e-1f));
  p = hn::MulAdd(p, f, hn::Set(d, 6.931475675579636e-1f));
  return hn::MulAdd(p, f, hn::Set(d, 1.0f));
}

template <class D, class V = hn::Vec<D>>
HWY_INLINE V Exp2(D d, V x) {
#if HWY_ARCH_X86 && HWY_TARGET <= HWY_AVX3 && HWY_TARGET != HWY_SCALAR && HWY_TARGET != HWY_EMU128
  if constexpr (hn::MaxLanes(d) == 16) {
    // AVX-512: p * 2^whole in one VSCALEFPS, zeroed below 2^-126 as the bit version below
    // does (10 operations instead of 13: the softmax's share of a d = 64 tile).
    // (NaN compares false: 0, as below; then Min, which maps NaN to its second operand.)
    const __mmask16 normal = _mm512_cmp_ps_mask(x.raw, _mm512_set1_ps(-126.0f), _CMP_GE_OQ);
    x = hn::Min(x, hn::Set(d, 128.0f));  // +inf -> 2^128 = inf, not NaN
    const V whole = hn::Floor(x);
    const V p = Exp2Fraction(d, hn::Sub(x, whole));
    return V{_mm512_maskz_scalef_ps(normal, p.raw, whole.raw)};
  }
#endif
  const hn::RebindToSigned<D> di;
  x = hn::Min(hn::Max(x, hn::Set(d, -127.0f)), hn::Set(d, 128.0f));
  const V whole = hn::Floor(x);
  const V p = Exp2Fraction(d, hn::Sub(x, whole));
  // 2^whole from the exponent bits; whole = -127 gives the bit pattern of +0, 128 that of inf.
  const auto bits = hn::ShiftLeft<23>(hn::Add(hn::ConvertTo(di, whole), hn::Set(di, 127)));
  return hn::Mul(p, hn::BitCast(d, bits));
}

}  // namespace HWY_NAMESPACE
}  // namespace attnkit::cpu
HWY_AFTER_NAMESPACE();

#endif  // include guard
