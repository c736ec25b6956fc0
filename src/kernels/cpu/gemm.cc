// C = alpha * A B + beta * C on f32, written once with Highway and dispatched at run time.
//
// Register blocking: R rows of A x 2 vectors of B's columns = 2R accumulators; each step loads
// two vectors of one B row, broadcasts R elements of A (read through its two strides, so A^T
// costs nothing) and issues 2R FMAs. R = 8 where there are 32 vector registers (AVX-512, NEON:
// 16 accumulators, enough independent chains for two FMA ports), R = 4 on AVX2 (16 registers).
// The inner dimension is cut into chunks of kDepth so that the B rows a panel streams stay in
// L1/L2 when k is long (SOFT's K1^T V runs over the whole sequence).
#include "kernels/cpu/gemm.h"

#include <algorithm>
#include <cstdint>

#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "kernels/cpu/gemm.cc"
#include "hwy/foreach_target.h"  // IWYU pragma: keep
#include "hwy/highway.h"

HWY_BEFORE_NAMESPACE();
namespace attnkit::cpu {
namespace HWY_NAMESPACE {
namespace hn = hwy::HWY_NAMESPACE;

constexpr int64_t kDepth = 256;

// Stores alpha * acc (+ beta * C): beta == 0 never reads C.
template <class D, class V = hn::Vec<D>>
HWY_INLINE void StoreScaled(D d, V acc, float alpha, float beta, float* c) {
  V out = hn::Mul(acc, hn::Set(d, alpha));
  if (beta != 0.0f) out = hn::MulAdd(hn::LoadU(d, c), hn::Set(d, beta), out);
  hn::StoreU(out, d, c);
}

template <class D, class M, class V = hn::Vec<D>>
HWY_INLINE void StoreScaledMasked(D d, M mask, V acc, float alpha, float beta, float* c) {
  V out = hn::Mul(acc, hn::Set(d, alpha));
  if (beta != 0.0f) out = hn::MulAdd(hn::MaskedLoad(mask, d, c), hn::Set(d, beta), out);
  hn::BlendedStore(out, mask, d, c);
}

// kRows rows x 2 full vectors of columns.
template <int kRows, class D>
HWY_INLINE void Panel(D d, int64_t k, float alpha, const float* a, int64_t a_row, int64_t a_col,
                      const float* b, int64_t ldb, float beta, float* c, int64_t ldc) {
  using V = hn::Vec<D>;
  const int64_t lanes = static_cast<int64_t>(hn::Lanes(d));
  V acc0[kRows], acc1[kRows];
  for (int r = 0; r < kRows; ++r) acc0[r] = hn::Zero(d), acc1[r] = hn::Zero(d);
  for (int64_t p = 0; p < k; ++p) {
    const float* bp = b + p * ldb;
    const V b0 = hn::LoadU(d, bp), b1 = hn::LoadU(d, bp + lanes);
    const float* ap = a + p * a_col;
    for (int r = 0; r < kRows; ++r) {
      const V x = hn::Set(d, ap[r * a_row]);
      acc0[r] = hn::MulAdd(x, b0, acc0[r]);
      acc1[r] = hn::MulAdd(x, b1, acc1[r]);
    }
  }
  for (int r = 0; r < kRows; ++r) {
    StoreScaled(d, acc0[r], alpha, beta, c + r * ldc);
    StoreScaled(d, acc1[r], alpha, beta, c + r * ldc + lanes);
  }
}

// kRows rows x one vector of columns, the first `cols` lanes of it (cols <= lanes).
template <int kRows, class D>
HWY_INLINE void PanelTail(D d, int64_t cols, int64_t k, float alpha, const float* a, int64_t a_row,
                          int64_t a_col, const float* b, int64_t ldb, float beta, float* c,
                          int64_t ldc) {
  using V = hn::Vec<D>;
  const auto mask = hn::FirstN(d, static_cast<size_t>(cols));
  V acc[kRows];
  for (int r = 0; r < kRows; ++r) acc[r] = hn::Zero(d);
  for (int64_t p = 0; p < k; ++p) {
    const V bp = hn::MaskedLoad(mask, d, b + p * ldb);
    const float* ap = a + p * a_col;
    for (int r = 0; r < kRows; ++r) acc[r] = hn::MulAdd(hn::Set(d, ap[r * a_row]), bp, acc[r]);
  }
  for (int r = 0; r < kRows; ++r) StoreScaledMasked(d, mask, acc[r], alpha, beta, c + r * ldc);
}

// One depth chunk over every row and column.
void GemmChunk(int64_t m, int64_t n, int64_t k, float alpha, const float* a, int64_t a_row,
               int64_t a_col, const float* b, int64_t ldb, float beta, float* c, int64_t ldc) {
  const hn::ScalableTag<float> d;
  const int64_t lanes = static_cast<int64_t>(hn::Lanes(d));
  constexpr int kRows = HWY_TARGET <= HWY_AVX3 || HWY_ARCH_ARM ? 8 : 4;
  int64_t j = 0;
  for (; j + 2 * lanes <= n; j += 2 * lanes) {
    int64_t i = 0;
    for (; i + kRows <= m; i += kRows)
      Panel<kRows>(d, k, alpha, a + i * a_row, a_row, a_col, b + j, ldb, beta, c + i * ldc + j,
                   ldc);
    for (; i < m; ++i)
      Panel<1>(d, k, alpha, a + i * a_row, a_row, a_col, b + j, ldb, beta, c + i * ldc + j, ldc);
  }
  // Fewer than two vectors of columns left: masked loads and stores never touch past n.
  for (; j < n; j += lanes) {
    const int64_t cols = std::min(lanes, n - j);
    int64_t i = 0;
    for (; i + kRows <= m; i += kRows)
      PanelTail<kRows>(d, cols, k, alpha, a + i * a_row, a_row, a_col, b + j, ldb, beta,
                       c + i * ldc + j, ldc);
    for (; i < m; ++i)
      PanelTail<1>(d, cols, k, alpha, a + i * a_row, a_row, a_col, b + j, ldb, beta,
                   c + i * ldc + j, ldc);
  }
}

void Gemm(int64_t m, int64_t n, int64_t k, float alpha, const float* a, int64_t a_row,
          int64_t a_col, const float* b, int64_t ldb, float beta, float* c, int64_t ldc) {
  for (int64_t p0 = 0; p0 < k; p0 += kDepth) {
    const int64_t depth = std::min(kDepth, k - p0);
    GemmChunk(m, n, depth, alpha, a + p0 * a_col, a_row, a_col, b + p0 * ldb, ldb,
              p0 == 0 ? beta : 1.0f, c, ldc);
  }
}

}  // namespace HWY_NAMESPACE
}  // namespace attnkit::cpu
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
namespace attnkit::cpu {

HWY_EXPORT(Gemm);

void gemm(int64_t m, int64_t n, int64_t k, float alpha, MatrixRef a, const float* b, int64_t ldb,
          float beta, float* c, int64_t ldc) {
  if (m <= 0 || n <= 0) return;
  if (k <= 0) {  // beta * C, and 0 when beta is (C may hold garbage then)
    for (int64_t i = 0; i < m; ++i)
      for (int64_t j = 0; j < n; ++j) c[i * ldc + j] = beta == 0.0f ? 0.0f : beta * c[i * ldc + j];
    return;
  }
  HWY_DYNAMIC_DISPATCH(Gemm)(m, n, k, alpha, a.data, a.row, a.col, b, ldb, beta, c, ldc);
}

void transpose(const float* in, int64_t rows, int64_t cols, int64_t ldi, float* out, int64_t ldo) {
  // Blocked so both sides stay in cache lines for long runs.
  constexpr int64_t kTile = 16;
  for (int64_t r0 = 0; r0 < rows; r0 += kTile)
    for (int64_t c = 0; c < cols; ++c)
      for (int64_t r = r0; r < std::min(rows, r0 + kTile); ++r) out[c * ldo + r] = in[r * ldi + c];
}

}  // namespace attnkit::cpu
#endif  // HWY_ONCE
