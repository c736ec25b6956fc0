// SIMD score tiles for the planners' passes (LSE-only pass, probability reduction, tree search):
//   s[i, j] = scale * q_i . k_j   with keys pre-transposed (kt [dim][ldkt]),
// plus the row max and exp-shift-sum used by online log-sum-exp. Written once with Highway and
// dispatched at run time (AVX2 / AVX-512 / NEON).
//
// Register blocking: 4 query rows x 2 vectors of keys = 8 accumulators, so each step loads 2 key
// vectors, broadcasts 4 query scalars and issues 8 FMAs (enough independent chains to hide the
// FMA latency on AVX2 and AVX-512).
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>

#include "kernels/cpu/primitives.h"

#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "kernels/cpu/score_tile.cc"
#include "hwy/foreach_target.h"  // IWYU pragma: keep
#include "hwy/highway.h"
#include "hwy/contrib/math/math-inl.h"

HWY_BEFORE_NAMESPACE();
namespace attnkit::kernels {
namespace HWY_NAMESPACE {
namespace hn = hwy::HWY_NAMESPACE;

void PrimScoreTile(const float* q, int64_t ldq, int64_t rows, const float* kt, int64_t ldkt,
                   int64_t cols, int64_t dim, float scale, float* s, int64_t lds) {
  const hn::ScalableTag<float> d;
  const int64_t lanes = static_cast<int64_t>(hn::Lanes(d));
  const auto vscale = hn::Set(d, scale);
  int64_t j = 0;
  for (; j + 2 * lanes <= cols; j += 2 * lanes) {
    int64_t i = 0;
    for (; i + 4 <= rows; i += 4) {
      auto a00 = hn::Zero(d), a01 = hn::Zero(d), a10 = hn::Zero(d), a11 = hn::Zero(d);
      auto a20 = hn::Zero(d), a21 = hn::Zero(d), a30 = hn::Zero(d), a31 = hn::Zero(d);
      const float* q0 = q + i * ldq;
      for (int64_t c = 0; c < dim; ++c) {
        const float* kc = kt + c * ldkt + j;
        const auto k0 = hn::LoadU(d, kc), k1 = hn::LoadU(d, kc + lanes);
        const auto b0 = hn::Set(d, q0[c]), b1 = hn::Set(d, q0[ldq + c]);
        const auto b2 = hn::Set(d, q0[2 * ldq + c]), b3 = hn::Set(d, q0[3 * ldq + c]);
        a00 = hn::MulAdd(b0, k0, a00);
        a01 = hn::MulAdd(b0, k1, a01);
        a10 = hn::MulAdd(b1, k0, a10);
        a11 = hn::MulAdd(b1, k1, a11);
        a20 = hn::MulAdd(b2, k0, a20);
        a21 = hn::MulAdd(b2, k1, a21);
        a30 = hn::MulAdd(b3, k0, a30);
        a31 = hn::MulAdd(b3, k1, a31);
      }
      float* out = s + i * lds + j;
      hn::StoreU(hn::Mul(a00, vscale), d, out);
      hn::StoreU(hn::Mul(a01, vscale), d, out + lanes);
      hn::StoreU(hn::Mul(a10, vscale), d, out + lds);
      hn::StoreU(hn::Mul(a11, vscale), d, out + lds + lanes);
      hn::StoreU(hn::Mul(a20, vscale), d, out + 2 * lds);
      hn::StoreU(hn::Mul(a21, vscale), d, out + 2 * lds + lanes);
      hn::StoreU(hn::Mul(a30, vscale), d, out + 3 * lds);
      hn::StoreU(hn::Mul(a31, vscale), d, out + 3 * lds + lanes);
    }
    for (; i < rows; ++i) {
      auto a0 = hn::Zero(d), a1 = hn::Zero(d);
      const float* qi = q + i * ldq;
      for (int64_t c = 0; c < dim; ++c) {
        const float* kc = kt + c * ldkt + j;
        const auto b = hn::Set(d, qi[c]);
        a0 = hn::MulAdd(b, hn::LoadU(d, kc), a0);
        a1 = hn::MulAdd(b, hn::LoadU(d, kc + lanes), a1);
      }
      hn::StoreU(hn::Mul(a0, vscale), d, s + i * lds + j);
      hn::StoreU(hn::Mul(a1, vscale), d, s + i * lds + j + lanes);
    }
  }
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
    const auto e = hn::Exp(d, hn::Sub(hn::LoadU(d, s + j), vshift));
    sum = hn::Add(sum, e);
    if (write) hn::StoreU(e, d, s + j);
  }
  if (j < n) {
    const auto mask = hn::FirstN(d, static_cast<size_t>(n - j));
    const auto e =
        hn::IfThenElseZero(mask, hn::Exp(d, hn::Sub(hn::MaskedLoad(mask, d, s + j), vshift)));
    sum = hn::Add(sum, e);
    if (write) hn::BlendedStore(e, mask, d, s + j);
  }
  return hn::GetLane(hn::SumOfLanes(d, sum));
}

}  // namespace HWY_NAMESPACE
}  // namespace attnkit::kernels
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
namespace attnkit::kernels {

HWY_EXPORT(PrimScoreTile);
HWY_EXPORT(PrimRowMax);
HWY_EXPORT(PrimExpShiftSum);

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

}  // namespace attnkit::kernels
#endif  // HWY_ONCE
