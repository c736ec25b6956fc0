// Score tiles for the planners' passes (LSE-only pass, probability reduction, tree search):
//   s[i, j] = scale * q_i . k_j   with keys pre-transposed (kt [dim][ldkt]), a product on gemm.h,
// plus the row max and exp-shift-sum used by online log-sum-exp. Written once with Highway and
// dispatched at run time (AVX2 / AVX-512 / NEON).
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>

#include "kernels/cpu/gemm.h"
#include "kernels/cpu/planner_ops.h"

#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "kernels/cpu/score_tile.cc"
#include "hwy/foreach_target.h"  // IWYU pragma: keep
#include "hwy/highway.h"
#include "kernels/cpu/simd_math-inl.h"

HWY_BEFORE_NAMESPACE();
namespace attnkit::cpu {
namespace HWY_NAMESPACE {
namespace hn = hwy::HWY_NAMESPACE;

// e^x as 2^(x log2 e) with the kernels' polynomial Exp2 (cheaper than a full-range exp; 0 for
// x below about -88, like the float exp).
template <class D, class V = hn::Vec<D>>
HWY_INLINE V ExpViaExp2(D d, V x) {
  return Exp2(d, hn::Mul(x, hn::Set(d, 1.4426950408889634f)));
}

float PrimRowMax(const float* s, int64_t n) {
  const hn::ScalableTag<float> d;
  const int64_t lanes = static_cast<int64_t>(hn::Lanes(d));
  const auto neg_inf = hn::Set(d, -std::numeric_limits<float>::infinity());
  auto best = neg_inf;
  int64_t j = 0;
  for (; j + lanes <= n; j += lanes) best = hn::Max(best, hn::LoadU(d, s + j));
  if (j < n) {
    const auto mask = hn::FirstN(d, static_cast<size_t>(n - j));
    best = hn::Max(best, hn::IfThenElse(mask, hn::MaskedLoad(mask, d, s + j), neg_inf));
  }
  return hn::GetLane(hn::MaxOfLanes(d, best));
}

float PrimExpShiftSum(float* s, int64_t n, float shift, bool write) {
  const hn::ScalableTag<float> d;
  const int64_t lanes = static_cast<int64_t>(hn::Lanes(d));
  const auto vshift = hn::Set(d, shift);
  auto sum = hn::Zero(d);
  int64_t j = 0;
  for (; j + lanes <= n; j += lanes) {
    const auto e = ExpViaExp2(d, hn::Sub(hn::LoadU(d, s + j), vshift));
    sum = hn::Add(sum, e);
    if (write) hn::StoreU(e, d, s + j);
  }
  if (j < n) {
    const auto mask = hn::FirstN(d, static_cast<size_t>(n - j));
    const auto e =
        hn::IfThenElseZero(mask, ExpViaExp2(d, hn::Sub(hn::MaskedLoad(mask, d, s + j), vshift)));
    sum = hn::Add(sum, e);
    if (write) hn::BlendedStore(e, mask, d, s + j);
  }
  return hn::GetLane(hn::SumOfLanes(d, sum));
}

void PrimExpShiftAdd(const float* s, int64_t n, float shift, float* dst) {
  const hn::ScalableTag<float> d;
  const int64_t lanes = static_cast<int64_t>(hn::Lanes(d));
  const auto vshift = hn::Set(d, shift);
  int64_t j = 0;
  for (; j + lanes <= n; j += lanes) {
    const auto e = ExpViaExp2(d, hn::Sub(hn::LoadU(d, s + j), vshift));
    hn::StoreU(hn::Add(hn::LoadU(d, dst + j), e), d, dst + j);
  }
  if (j < n) {
    const auto mask = hn::FirstN(d, static_cast<size_t>(n - j));
    const auto e =
        hn::IfThenElseZero(mask, ExpViaExp2(d, hn::Sub(hn::MaskedLoad(mask, d, s + j), vshift)));
    hn::BlendedStore(hn::Add(hn::MaskedLoad(mask, d, dst + j), e), mask, d, dst + j);
  }
}

// dst[j] += sum over rows r with j < seen[r] of exp(s[r * lds + j] - shift[r]): a whole score
// tile in one sweep, each column vector summed over the rows in registers before dst is touched.
void PrimExpShiftAddRows(const float* s, int64_t lds, int64_t rows, const int64_t* seen,
                         const float* shift, float* dst) {
  const hn::ScalableTag<float> d;
  const int64_t lanes = static_cast<int64_t>(hn::Lanes(d));
  int64_t width = 0;
  for (int64_t r = 0; r < rows; ++r)
    if (!(std::isinf(shift[r]) && shift[r] < 0)) width = std::max(width, seen[r]);
  for (int64_t j = 0; j < width; j += lanes) {
    auto acc0 = hn::Zero(d), acc1 = hn::Zero(d);  // two chains: alternate rows
    for (int64_t r = 0; r < rows; ++r) {
      const int64_t n = seen[r] - j;
      if (n <= 0 || (std::isinf(shift[r]) && shift[r] < 0)) continue;
      const float* row = s + r * lds + j;
      const auto vshift = hn::Set(d, shift[r]);
      hn::Vec<decltype(d)> e;
      if (n >= lanes) {
        e = ExpViaExp2(d, hn::Sub(hn::LoadU(d, row), vshift));
      } else {
        const auto mask = hn::FirstN(d, static_cast<size_t>(n));
        e = hn::IfThenElseZero(mask, ExpViaExp2(d, hn::Sub(hn::MaskedLoad(mask, d, row), vshift)));
      }
      if (r & 1)
        acc1 = hn::Add(acc1, e);
      else
        acc0 = hn::Add(acc0, e);
    }
    const auto sum = hn::Add(acc0, acc1);
    if (j + lanes <= width) {
      hn::StoreU(hn::Add(hn::LoadU(d, dst + j), sum), d, dst + j);
    } else {
      const auto mask = hn::FirstN(d, static_cast<size_t>(width - j));
      hn::BlendedStore(hn::Add(hn::MaskedLoad(mask, d, dst + j), sum), mask, d, dst + j);
    }
  }
}

// Online log-sum-exp of each row r over s[r * lds + j], j < seen[r], into (max[r], sum[r]).
void PrimLseAbsorbRows(const float* s, int64_t lds, int64_t rows, const int64_t* seen, float* max,
                       float* sum) {
  for (int64_t r = 0; r < rows; ++r) {
    if (seen[r] <= 0) continue;
    const float* row = s + r * lds;
    const float m_new = std::max(max[r], PrimRowMax(row, seen[r]));
    if (std::isinf(m_new)) continue;  // every score so far is -inf
    const float rescale = std::isinf(max[r]) ? 0.0f : std::exp(max[r] - m_new);
    sum[r] = sum[r] * rescale + PrimExpShiftSum(const_cast<float*>(row), seen[r], m_new, false);
    max[r] = m_new;
  }
}

}  // namespace HWY_NAMESPACE
}  // namespace attnkit::cpu
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
namespace attnkit::cpu {

HWY_EXPORT(PrimRowMax);
HWY_EXPORT(PrimExpShiftSum);
HWY_EXPORT(PrimExpShiftAdd);
HWY_EXPORT(PrimExpShiftAddRows);
HWY_EXPORT(PrimLseAbsorbRows);

void transpose_keys(const float* keys, int64_t nk, int64_t dim, int64_t ldk, float* kt,
                    int64_t ldkt) {
  transpose(keys, nk, dim, ldk, kt, ldkt);
}

void score_tile(const float* q, int64_t ldq, int64_t rows, const float* kt, int64_t ldkt,
                int64_t cols, int64_t dim, float scale, float* s, int64_t lds) {
  gemm(rows, cols, dim, scale, row_major(q, ldq), kt, ldkt, 0.0f, s, lds);
}

float row_max(const float* s, int64_t n) {
  if (n <= 0) return -std::numeric_limits<float>::infinity();
  return HWY_DYNAMIC_DISPATCH(PrimRowMax)(s, n);
}

float exp_shift_sum(float* s, int64_t n, float shift, bool write) {
  if (n <= 0) return 0.0f;
  if (std::isinf(shift) && shift < 0) {  // every entry is -inf too: nothing to add
    if (write)
      for (int64_t j = 0; j < n; ++j) s[j] = 0.0f;
    return 0.0f;
  }
  return HWY_DYNAMIC_DISPATCH(PrimExpShiftSum)(s, n, shift, write);
}

void exp_shift_add(const float* s, int64_t n, float shift, float* dst) {
  if (n <= 0 || (std::isinf(shift) && shift < 0)) return;
  HWY_DYNAMIC_DISPATCH(PrimExpShiftAdd)(s, n, shift, dst);
}

void exp_shift_add_rows(const float* s, int64_t lds, int64_t rows, const int64_t* seen,
                        const float* shift, float* dst) {
  if (rows <= 0) return;
  HWY_DYNAMIC_DISPATCH(PrimExpShiftAddRows)(s, lds, rows, seen, shift, dst);
}

void lse_absorb_rows(const float* s, int64_t lds, int64_t rows, const int64_t* seen, float* max,
                     float* sum) {
  if (rows <= 0) return;
  HWY_DYNAMIC_DISPATCH(PrimLseAbsorbRows)(s, lds, rows, seen, max, sum);
}

}  // namespace attnkit::cpu
#endif  // HWY_ONCE
