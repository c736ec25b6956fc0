// SIMD score tiles for the planners' passes (LSE-only pass, probability reduction, tree search):
//   s[i, j] = scale * q_i . k_j   with keys pre-transposed (kt [dim][ldkt]),
// plus the row max and exp-shift-sum used by online log-sum-exp. Written once with Highway and
// dispatched at run time (AVX2 / AVX-512 / NEON).
//
// Register blocking: R query rows x 2 vectors of keys = 2R accumulators; each step loads 2 key
// vectors, broadcasts R query scalars and issues 2R FMAs. R = 8 on AVX-512 (32 registers: 16
// accumulators keep both FMA ports busy with loads to spare), R = 4 on AVX2 (16 registers).
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>

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

// One panel of kRows query rows x 2 key vectors: 2 * kRows accumulators.
template <int kRows, class D>
HWY_INLINE void ScorePanel(D d, const float* q, int64_t ldq, const float* kt, int64_t ldkt,
                           int64_t dim, float scale, float* s, int64_t lds) {
  const int64_t lanes = static_cast<int64_t>(hn::Lanes(d));
  using V = hn::Vec<D>;
  V acc0[kRows], acc1[kRows];
  for (int r = 0; r < kRows; ++r) acc0[r] = hn::Zero(d), acc1[r] = hn::Zero(d);
  for (int64_t c = 0; c < dim; ++c) {
    const float* kc = kt + c * ldkt;
    const V k0 = hn::LoadU(d, kc), k1 = hn::LoadU(d, kc + lanes);
    for (int r = 0; r < kRows; ++r) {
      const V b = hn::Set(d, q[r * ldq + c]);
      acc0[r] = hn::MulAdd(b, k0, acc0[r]);
      acc1[r] = hn::MulAdd(b, k1, acc1[r]);
    }
  }
  const V vscale = hn::Set(d, scale);
  for (int r = 0; r < kRows; ++r) {
    hn::StoreU(hn::Mul(acc0[r], vscale), d, s + r * lds);
    hn::StoreU(hn::Mul(acc1[r], vscale), d, s + r * lds + lanes);
  }
}

void PrimScoreTile(const float* q, int64_t ldq, int64_t rows, const float* kt, int64_t ldkt,
                   int64_t cols, int64_t dim, float scale, float* s, int64_t lds) {
  const hn::ScalableTag<float> d;
  const int64_t lanes = static_cast<int64_t>(hn::Lanes(d));
  // 8 rows (16 accumulators) where there are 32 vector registers, else 4 rows: callers pass
  // 64-row query blocks, which these divide (12 rows measured slower: a 4-row remainder).
  constexpr int kRows = HWY_TARGET <= HWY_AVX3 ? 8 : 4;
  int64_t j = 0;
  for (; j + 2 * lanes <= cols; j += 2 * lanes) {
    int64_t i = 0;
    for (; i + kRows <= rows; i += kRows)
      ScorePanel<kRows>(d, q + i * ldq, ldq, kt + j, ldkt, dim, scale, s + i * lds + j, lds);
    for (; i < rows; ++i)
      ScorePanel<1>(d, q + i * ldq, ldq, kt + j, ldkt, dim, scale, s + i * lds + j, lds);
  }
  const auto vscale = hn::Set(d, scale);
  // Fewer than two vectors of keys left: masked loads/stores never touch past `cols`.
  for (; j < cols; j += lanes) {
    const auto mask = hn::FirstN(d, static_cast<size_t>(cols - j));
    for (int64_t i = 0; i < rows; ++i) {
      auto acc = hn::Zero(d);
      const float* qi = q + i * ldq;
      for (int64_t c = 0; c < dim; ++c)
        acc = hn::MulAdd(hn::Set(d, qi[c]), hn::MaskedLoad(mask, d, kt + c * ldkt + j), acc);
      hn::BlendedStore(hn::Mul(acc, vscale), mask, d, s + i * lds + j);
    }
  }
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

}  // namespace HWY_NAMESPACE
}  // namespace attnkit::cpu
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
namespace attnkit::cpu {

HWY_EXPORT(PrimScoreTile);
HWY_EXPORT(PrimRowMax);
HWY_EXPORT(PrimExpShiftSum);
HWY_EXPORT(PrimExpShiftAdd);

void transpose_keys(const float* keys, int64_t nk, int64_t dim, int64_t ldk, float* kt,
                    int64_t ldkt) {
  // Blocked so both sides stay in cache lines for long key runs.
  constexpr int64_t kTile = 16;
  for (int64_t j0 = 0; j0 < nk; j0 += kTile)
    for (int64_t c = 0; c < dim; ++c)
      for (int64_t j = j0; j < std::min(nk, j0 + kTile); ++j) kt[c * ldkt + j] = keys[j * ldk + c];
}

void score_tile(const float* q, int64_t ldq, int64_t rows, const float* kt, int64_t ldkt,
                int64_t cols, int64_t dim, float scale, float* s, int64_t lds) {
  if (rows <= 0 || cols <= 0) return;
  HWY_DYNAMIC_DISPATCH(PrimScoreTile)(q, ldq, rows, kt, ldkt, cols, dim, scale, s, lds);
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

}  // namespace attnkit::cpu
#endif  // HWY_ONCE
