// Building blocks of the fused attention kernels (included once per Highway target): the two
// register-blocked products, the vertical online softmax, the causal mask and dtype conversion.
// Layout conventions are those of tile_kernel.cc: St[j][r] with query rows r in the lanes.
#if defined(ATTNKIT_TILE_OPS_INL_H_) == defined(HWY_TARGET_TOGGLE)
#ifdef ATTNKIT_TILE_OPS_INL_H_
#undef ATTNKIT_TILE_OPS_INL_H_
#else
#define ATTNKIT_TILE_OPS_INL_H_
#endif

#include <algorithm>
#include <cstring>
#include <limits>
#include <type_traits>

#include "attnkit/tensor.h"
#include "hwy/cache_control.h"
#include "hwy/highway.h"
#include "kernels/cpu/simd_math-inl.h"

HWY_BEFORE_NAMESPACE();
namespace attnkit::cpu {
namespace HWY_NAMESPACE {
namespace hn = hwy::HWY_NAMESPACE;

using DF = hn::ScalableTag<float>;
using VF = hn::Vec<DF>;

// Register blocking: accumulators = kRows x kCols vectors. 32-register ISAs (AVX-512, NEON) hold
// 24 accumulators, 16-register AVX2 holds 12; at least FMA latency x throughput (8) chains.
#if HWY_TARGET <= HWY_AVX3 || HWY_ARCH_ARM
constexpr int kRows = 12;
#else
constexpr int kRows = 6;
#endif
constexpr int kCols = 2;

// Touches every cache line of [p, p + bytes).
HWY_INLINE void PrefetchBytes(const void* p, int64_t bytes) {
  for (int64_t byte = 0; byte < bytes; byte += 64) hwy::Prefetch(static_cast<const char*>(p) + byte);
}

// The K and V rows of a block further on, asked for a few at a time while the current block is
// computed, so that the requests reach memory at the rate the keys are consumed (a whole block
// asked for at once overflows the miss queues: hundreds of cache lines).
struct RowsAhead {
  const char *k = nullptr, *v = nullptr;
  int64_t k_stride = 0, v_stride = 0, k_bytes = 0, v_bytes = 0;  // in bytes
  int64_t k_rows = 0, v_rows = 0;  // how many of each to ask for (0: none)
  const void* const* k_list = nullptr;
  const void* const* v_list = nullptr;
  RowsAhead() = default;
  RowsAhead(const TensorView& kt, const void* k_row, const TensorView& vt, const void* v_row,
            int64_t count)
      : k(static_cast<const char*>(k_row)),
        v(static_cast<const char*>(v_row)),
        k_stride(kt.stride[2] * dtype_size(kt.dtype)),
        v_stride(vt.stride[2] * dtype_size(vt.dtype)),
        k_bytes(kt.shape[3] * dtype_size(kt.dtype)),
        v_bytes(vt.shape[3] * dtype_size(vt.dtype)),
        k_rows(count),
        v_rows(count) {}
  // Rows listed one by one (a grid window's runs): K row j at k_list[j], V row j at v_list[j].
  RowsAhead(const void* const* k_at, int64_t k_count, int64_t k_row_bytes, const void* const* v_at,
            int64_t v_count, int64_t v_row_bytes)
      : k_bytes(k_row_bytes),
        v_bytes(v_row_bytes),
        k_rows(k_count),
        v_rows(v_count),
        k_list(k_at),
        v_list(v_at) {}
  // Rows [first, last) of both.
  HWY_INLINE void Rows(int64_t first, int64_t last) const {
    for (int64_t j = first; j < std::min(last, std::max(k_rows, v_rows)); ++j) {
      if (j < k_rows) PrefetchBytes(k_list ? k_list[j] : k + j * k_stride, k_bytes);
      if (j < v_rows) PrefetchBytes(v_list ? v_list[j] : v + j * v_stride, v_bytes);
    }
  }
  // Share `part` of `parts` equal shares.
  HWY_INLINE void Share(int64_t part, int64_t parts) const {
    const int64_t rows = std::max(k_rows, v_rows);
    Rows(part * rows / parts, (part + 1) * rows / parts);
  }
};

// Touches every cache line of `rows` rows of `cols` elements.
HWY_INLINE void PrefetchRows(const TensorView& t, const void* base, int64_t stride, int64_t rows, int64_t cols) {
  const int64_t row_bytes = cols * dtype_size(t.dtype), stride_bytes = stride * dtype_size(t.dtype);
  for (int64_t r = 0; r < rows; ++r) PrefetchBytes(static_cast<const char*>(base) + r * stride_bytes, row_bytes);
}

// Where the kernels read K or V rows: row j at base + j * stride (one block), or at rows[j]
// (runs of keys along a grid window, which are not one stride apart).
template <typename T>
struct StridedRows {
  const T* base;
  int64_t stride;
  HWY_INLINE const T* operator()(int64_t j) const { return base + j * stride; }
  HWY_INLINE StridedRows From(int64_t j) const { return {base + j * stride, stride}; }
};
template <typename T>
struct ListedRows {
  const void* const* rows;
  HWY_INLINE const T* operator()(int64_t j) const { return static_cast<const T*>(rows[j]); }
  HWY_INLINE ListedRows From(int64_t j) const { return {rows + j}; }
};

// St[j][r0 .. r0 + C*N) for keys j in [0, R): R keys broadcast against C query vectors.
template <int R, int C = kCols, class KRows>
HWY_INLINE void ScoreTile(const float* HWY_RESTRICT qt, int64_t m_pad, const KRows& k, int64_t dim,
                          float* HWY_RESTRICT st) {
  const DF df;
  const size_t n = hn::Lanes(df);
  VF acc[R][C];
  for (int r = 0; r < R; ++r)
    for (int c = 0; c < C; ++c) acc[r][c] = hn::Zero(df);
  for (int64_t d = 0; d < dim; ++d) {
    VF q[C];
    for (int c = 0; c < C; ++c) q[c] = hn::LoadU(df, qt + d * m_pad + c * n);
    for (int r = 0; r < R; ++r) {
      const VF key = hn::Set(df, k(r)[d]);
      for (int c = 0; c < C; ++c) acc[r][c] = hn::MulAdd(key, q[c], acc[r][c]);
    }
  }
  for (int r = 0; r < R; ++r)
    for (int c = 0; c < C; ++c) hn::StoreU(acc[r][c], df, st + r * m_pad + c * n);
}

// Keys [0, keys) of St against the C query vectors at r0.
template <int C, class KRows>
HWY_INLINE void ScoreKeys(const float* qt, int64_t m_pad, const KRows& k, int64_t keys, int64_t dim,
                          float* st, int64_t r0, const RowsAhead& ahead, int64_t* part,
                          int64_t parts) {
  int64_t j = 0;
  for (; j + kRows <= keys; j += kRows) {
    ahead.Share((*part)++, parts);
    ScoreTile<kRows, C>(qt + r0, m_pad, k.From(j), dim, st + j * m_pad + r0);
  }
  for (; j + 4 <= keys; j += 4)
    ScoreTile<4, C>(qt + r0, m_pad, k.From(j), dim, st + j * m_pad + r0);
  for (; j < keys; ++j) ScoreTile<1, C>(qt + r0, m_pad, k.From(j), dim, st + j * m_pad + r0);
}

// St = Qt . K^T for one key block of `keys` rows, query rows [r_begin, r_end) (whole vectors;
// default all m_pad); `ahead`'s rows are asked for along the way.
template <class KRows>
HWY_INLINE void Scores(const float* qt, int64_t m_pad, const KRows& k, int64_t keys, int64_t dim,
                       float* st, const RowsAhead& ahead = RowsAhead(), int64_t r_begin = 0,
                       int64_t r_end = -1) {
  const int64_t n = static_cast<int64_t>(hn::Lanes(DF())), chunk = kCols * n;
  if (r_end < 0) r_end = m_pad;
  // Calls of the main micro-kernel: per kCols vectors of rows, and for a last single vector.
  const int64_t parts = ((r_end - r_begin + chunk - 1) / chunk) * (keys / kRows);
  int64_t part = 0;
  if (parts == 0) ahead.Share(0, 1);
  int64_t r0 = r_begin;
  for (; r0 + chunk <= r_end; r0 += chunk)
    ScoreKeys<kCols>(qt, m_pad, k, keys, dim, st, r0, ahead, &part, parts);
  for (; r0 < r_end; r0 += n) ScoreKeys<1>(qt, m_pad, k, keys, dim, st, r0, ahead, &part, parts);
}
HWY_INLINE void Scores(const float* qt, int64_t m_pad, const float* k, int64_t k_stride,
                       int64_t keys, int64_t dim, float* st, const RowsAhead& ahead = RowsAhead()) {
  Scores(qt, m_pad, StridedRows<float>{k, k_stride}, keys, dim, st, ahead);
}

// N elements of T (float, float16_t or bfloat16_t) as float lanes.
template <typename T>
HWY_INLINE VF LoadAsFloat(const T* HWY_RESTRICT p) {
  const DF df;
  if constexpr (std::is_same_v<T, float>) {
    return hn::LoadU(df, p);
  } else {
    return hn::PromoteTo(df, hn::LoadU(hn::Rebind<T, DF>(), p));
  }
}

// Where P[row r][key j] lives: pt[j * key_stride + r * row_stride]. The tile kernel keeps
// P^T (rows in lanes: key_stride = M, row_stride = 1); decode keeps P (key_stride = 1).
struct PLayout {
  int64_t key_stride, row_stride;
};

// O[r][c0 ..] = alpha[r] * O[r][c0 ..] + sum_j P[r][j] V[j][c0 ..] for R rows and C vectors.
// V is read in its storage type T and widened in registers.
template <int R, int C, typename T, class VRows>
HWY_INLINE void PvTile(const float* HWY_RESTRICT pt, PLayout p_at, const VRows& v, int64_t c0,
                       int64_t keys, const float* HWY_RESTRICT alpha, float* HWY_RESTRICT o,
                       int64_t o_stride) {
  const DF df;
  const size_t n = hn::Lanes(df);
  VF acc[R][C];
  for (int r = 0; r < R; ++r) {
    const VF a = hn::Set(df, alpha[r]);
    for (int c = 0; c < C; ++c) acc[r][c] = hn::Mul(hn::LoadU(df, o + r * o_stride + c * n), a);
  }
  for (int64_t j = 0; j < keys; ++j) {
    const T* HWY_RESTRICT row = v(j) + c0;
    VF val[C];
    for (int c = 0; c < C; ++c) val[c] = LoadAsFloat(row + c * n);
    for (int r = 0; r < R; ++r) {
      const VF p = hn::Set(df, pt[j * p_at.key_stride + r * p_at.row_stride]);
      for (int c = 0; c < C; ++c) acc[r][c] = hn::MulAdd(p, val[c], acc[r][c]);
    }
  }
  for (int r = 0; r < R; ++r)
    for (int c = 0; c < C; ++c) hn::StoreU(acc[r][c], df, o + r * o_stride + c * n);
}

template <int R, int C, typename T, class VRows>
HWY_INLINE void PvRows(const float* pt, PLayout p_at, const VRows& v, int64_t keys,
                       const float* alpha, float* o, int64_t dv_pad) {
  const int64_t n = hn::Lanes(DF());
  int64_t c0 = 0;
  for (; c0 + C * n <= dv_pad; c0 += C * n)
    PvTile<R, C, T>(pt, p_at, v, c0, keys, alpha, o + c0, dv_pad);
  for (; c0 < dv_pad; c0 += n) PvTile<R, 1, T>(pt, p_at, v, c0, keys, alpha, o + c0, dv_pad);
}

// O [rows][dv_pad] += P . V for one key block; V rows (of element type T, read through `v`)
// have dv_pad (a multiple of N) elements. Groups of 4 rows (decode, remainders) use wider column
// blocks: fewer P broadcasts per FMA.
template <typename T, class VRows>
HWY_INLINE void AccumulatePvRows(const float* pt, PLayout p_at, int64_t rows, const VRows& v,
                                 int64_t keys, const float* alpha, float* o, int64_t dv_pad) {
  constexpr int kColsFor4 = kRows == 12 ? 4 : 2;
  int64_t r = 0;
  for (; r + kRows <= rows; r += kRows)
    PvRows<kRows, kCols, T>(pt + r * p_at.row_stride, p_at, v, keys, alpha + r, o + r * dv_pad,
                            dv_pad);
  for (; r + 4 <= rows; r += 4)
    PvRows<4, kColsFor4, T>(pt + r * p_at.row_stride, p_at, v, keys, alpha + r, o + r * dv_pad,
                            dv_pad);
  for (; r < rows; ++r)
    PvRows<1, kColsFor4, T>(pt + r * p_at.row_stride, p_at, v, keys, alpha + r, o + r * dv_pad,
                            dv_pad);
}

// The same with V rows v_stride elements apart.
template <typename T>
HWY_INLINE void AccumulatePv(const float* pt, PLayout p_at, int64_t rows, const T* v,
                             int64_t v_stride, int64_t keys, const float* alpha, float* o,
                             int64_t dv_pad) {
  AccumulatePvRows<T>(pt, p_at, rows, StridedRows<T>{v, v_stride}, keys, alpha, o, dv_pad);
}

// AccumulatePv on V stored as `dtype` at `v`.
HWY_INLINE void AccumulatePvAny(DType dtype, const float* pt, PLayout p_at, int64_t rows,
                                const void* v, int64_t v_stride, int64_t keys, const float* alpha,
                                float* o, int64_t dv_pad) {
  switch (dtype) {
    case DType::kF32:
      return AccumulatePv(pt, p_at, rows, static_cast<const float*>(v), v_stride, keys, alpha, o,
                          dv_pad);
    case DType::kF16:
      return AccumulatePv(pt, p_at, rows, static_cast<const hwy::float16_t*>(v), v_stride, keys,
                          alpha, o, dv_pad);
    case DType::kBF16:
      return AccumulatePv(pt, p_at, rows, static_cast<const hwy::bfloat16_t*>(v), v_stride, keys,
                          alpha, o, dv_pad);
  }
}

// AccumulatePv on V rows stored as `dtype` at v_rows[j].
HWY_INLINE void AccumulatePvListed(DType dtype, const float* pt, PLayout p_at, int64_t rows,
                                   const void* const* v_rows, int64_t keys, const float* alpha,
                                   float* o, int64_t dv_pad) {
  switch (dtype) {
    case DType::kF32:
      return AccumulatePvRows<float>(pt, p_at, rows, ListedRows<float>{v_rows}, keys, alpha, o,
                                     dv_pad);
    case DType::kF16:
      return AccumulatePvRows<hwy::float16_t>(pt, p_at, rows, ListedRows<hwy::float16_t>{v_rows},
                                              keys, alpha, o, dv_pad);
    case DType::kBF16:
      return AccumulatePvRows<hwy::bfloat16_t>(pt, p_at, rows, ListedRows<hwy::bfloat16_t>{v_rows},
                                               keys, alpha, o, dv_pad);
  }
}

// The online-softmax step of the row vector at r0 over `count` ranges of St's keys, [ranges[2i],
// ranges[2i + 1]) (its other keys are not read: they stay out of the sum and out of P.V).
HWY_INLINE void OnlineSoftmaxVector(float* st, int64_t m_pad, int64_t r0, const int64_t* ranges,
                                    int64_t count, float* m, float* l, float* alpha) {
  const DF df;
  const VF neg_inf = hn::Set(df, -std::numeric_limits<float>::infinity());
  VF block_max = neg_inf;
  for (int64_t i = 0; i < count; ++i)
    for (int64_t j = ranges[2 * i]; j < ranges[2 * i + 1]; ++j)
      block_max = hn::Max(block_max, hn::LoadU(df, st + j * m_pad + r0));
  const VF m_old = hn::LoadU(df, m + r0);
  const VF m_new = hn::Max(m_old, block_max);
  const VF m_ref = hn::IfThenZeroElse(hn::Eq(m_new, neg_inf), m_new);
  VF sum = hn::Zero(df);
  for (int64_t i = 0; i < count; ++i)
    for (int64_t j = ranges[2 * i]; j < ranges[2 * i + 1]; ++j) {
      const VF p = Exp2(df, hn::Sub(hn::LoadU(df, st + j * m_pad + r0), m_ref));
      hn::StoreU(p, df, st + j * m_pad + r0);
      sum = hn::Add(sum, p);
    }
  const VF a = Exp2(df, hn::Sub(m_old, m_ref));
  hn::StoreU(a, df, alpha + r0);
  hn::StoreU(hn::MulAdd(hn::LoadU(df, l + r0), a, sum), df, l + r0);
  hn::StoreU(m_new, df, m + r0);
}

// Online softmax over one block, all vertical: m <- max(m, max_j S), alpha = exp2(m_old - m),
// P = exp2(S - m) in place, l <- alpha * l + sum_j P. A row with m = -inf so far uses 0 as its
// reference, so fully masked rows keep l = 0 and never produce NaN.
HWY_INLINE void OnlineSoftmax(float* st, int64_t m_pad, int64_t keys, float* m, float* l,
                              float* alpha) {
  const int64_t all[2] = {0, keys};
  for (int64_t r0 = 0; r0 < m_pad; r0 += static_cast<int64_t>(hn::Lanes(DF())))
    OnlineSoftmaxVector(st, m_pad, r0, all, 1, m, l, alpha);
}

// Causal mask inside a block: key k0 + j is hidden from row r iff k0 + j > limit[r].
HWY_INLINE void MaskCausal(float* st, int64_t m_pad, int64_t keys, int64_t k0, const float* limit) {
  const DF df;
  const size_t n = hn::Lanes(df);
  const VF neg_inf = hn::Set(df, -std::numeric_limits<float>::infinity());
  for (int64_t j = 0; j < keys; ++j) {
    const VF key = hn::Set(df, static_cast<float>(k0 + j));
    for (int64_t r0 = 0; r0 < m_pad; r0 += n) {
      const VF s = hn::LoadU(df, st + j * m_pad + r0);
      hn::StoreU(hn::IfThenElse(hn::Gt(key, hn::LoadU(df, limit + r0)), neg_inf, s), df,
                 st + j * m_pad + r0);
    }
  }
}

// Transposes a [rows][cols] byte tile (row stride ld) into out [cols][rows] (row stride ld_out).
// Whole 8 x 8 blocks are transposed inside a uint64 (three rounds of swapping sub-blocks).
HWY_INLINE void TransposeBytes(const uint8_t* HWY_RESTRICT in, int64_t rows, int64_t cols,
                               int64_t ld, uint8_t* HWY_RESTRICT out, int64_t ld_out) {
  const int64_t rows8 = rows / 8 * 8, cols8 = cols / 8 * 8;
  for (int64_t r0 = 0; r0 < rows8; r0 += 8)
    for (int64_t c0 = 0; c0 < cols8; c0 += 8) {
      uint64_t x[8];  // x[i] byte c = in[r0 + i][c0 + c] (little endian)
      for (int i = 0; i < 8; ++i) std::memcpy(&x[i], in + (r0 + i) * ld + c0, 8);
      for (int i = 0; i < 4; ++i) {
        const uint64_t t = ((x[i] >> 32) ^ x[i + 4]) & 0x00000000FFFFFFFFull;
        x[i] ^= t << 32, x[i + 4] ^= t;
      }
      for (int i : {0, 1, 4, 5}) {
        const uint64_t t = ((x[i] >> 16) ^ x[i + 2]) & 0x0000FFFF0000FFFFull;
        x[i] ^= t << 16, x[i + 2] ^= t;
      }
      for (int i : {0, 2, 4, 6}) {
        const uint64_t t = ((x[i] >> 8) ^ x[i + 1]) & 0x00FF00FF00FF00FFull;
        x[i] ^= t << 8, x[i + 1] ^= t;
      }
      for (int i = 0; i < 8; ++i) std::memcpy(out + (c0 + i) * ld_out + r0, &x[i], 8);
    }
  for (int64_t r = 0; r < rows; ++r)  // ragged edges
    for (int64_t c = (r < rows8 ? cols8 : 0); c < cols; ++c) out[c * ld_out + r] = in[r * ld + c];
}

// St[j][r0 + t] = -inf where allow_t[j][t] == 0, for t < count (allow_t row stride ld).
HWY_INLINE void MaskFromBytes(float* st, int64_t m_pad, int64_t keys, int64_t r0, int64_t count,
                              const uint8_t* allow_t, int64_t ld) {
  const DF df;
  const hn::RebindToSigned<DF> di;
  const hn::Rebind<uint8_t, DF> du8;
  const int64_t n = hn::Lanes(df);
  const VF neg_inf = hn::Set(df, -std::numeric_limits<float>::infinity());
  for (int64_t j = 0; j < keys; ++j) {
    float* row = st + j * m_pad + r0;
    const uint8_t* bits = allow_t + j * ld;
    int64_t t = 0;
    for (; t + n <= count; t += n) {
      const auto hidden = hn::RebindMask(df, hn::Eq(hn::PromoteTo(di, hn::LoadU(du8, bits + t)),
                                                    hn::Zero(di)));
      hn::StoreU(hn::IfThenElse(hidden, neg_inf, hn::LoadU(df, row + t)), df, row + t);
    }
    for (; t < count; ++t)
      if (!bits[t]) row[t] = -std::numeric_limits<float>::infinity();
  }
}

// Number of finite (not masked) scores among rows [0, rows) of St.
HWY_INLINE int64_t CountFinite(const float* st, int64_t m_pad, int64_t keys, int64_t rows) {
  const DF df;
  const int64_t n = hn::Lanes(df);
  const VF neg_inf = hn::Set(df, -std::numeric_limits<float>::infinity());
  int64_t count = 0;
  for (int64_t j = 0; j < keys; ++j) {
    int64_t r = 0;
    for (; r + n <= rows; r += n)
      count += static_cast<int64_t>(hn::CountTrue(df, hn::Ne(hn::LoadU(df, st + j * m_pad + r), neg_inf)));
    for (; r < rows; ++r) count += st[j * m_pad + r] != -std::numeric_limits<float>::infinity();
  }
  return count;
}

#undef ATTNKIT_HAVE_TRANSPOSE16  // decided again for each target
#if HWY_ARCH_X86 && HWY_TARGET <= HWY_AVX3 && HWY_TARGET != HWY_SCALAR && HWY_TARGET != HWY_EMU128
#define ATTNKIT_HAVE_TRANSPOSE16 1
// out[d * ld + i] = rows[i][d] * scale[i] for 16 rows, d < dim (a multiple of 16): 16 x 16
// blocks transposed in registers (32-bit, then 64-bit interleaves, then two rounds of 128-bit
// lane shuffles), 7 operations per 16 elements instead of 16 scalar stores.
HWY_INLINE void TransposeScaled16(const float* const* rows, const float* scale, int64_t dim,
                                  float* out, int64_t ld) {
  for (int64_t d0 = 0; d0 < dim; d0 += 16) {
    __m512 a[16], t[16];
    for (int i = 0; i < 16; ++i)
      a[i] = _mm512_mul_ps(_mm512_loadu_ps(rows[i] + d0), _mm512_set1_ps(scale[i]));
    for (int i = 0; i < 16; i += 2) {  // 128-bit lane k: a_i[4k], a_i+1[4k], a_i[4k+1], ...
      t[i] = _mm512_unpacklo_ps(a[i], a[i + 1]);
      t[i + 1] = _mm512_unpackhi_ps(a[i], a[i + 1]);
    }
    for (int g = 0; g < 4; ++g) {  // u[g][c], lane k: rows 4g .. 4g + 3 of column 4k + c
      const __m512d lo0 = _mm512_castps_pd(t[4 * g]), hi0 = _mm512_castps_pd(t[4 * g + 1]);
      const __m512d lo1 = _mm512_castps_pd(t[4 * g + 2]), hi1 = _mm512_castps_pd(t[4 * g + 3]);
      a[4 * g] = _mm512_castpd_ps(_mm512_unpacklo_pd(lo0, lo1));
      a[4 * g + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(lo0, lo1));
      a[4 * g + 2] = _mm512_castpd_ps(_mm512_unpacklo_pd(hi0, hi1));
      a[4 * g + 3] = _mm512_castpd_ps(_mm512_unpackhi_pd(hi0, hi1));
    }
    for (int c = 0; c < 4; ++c) {  // the 4 x 4 matrix of 128-bit lanes u[g][c].lane(k), transposed
      const __m512 v0 = _mm512_shuffle_f32x4(a[c], a[4 + c], 0x44);
      const __m512 v1 = _mm512_shuffle_f32x4(a[c], a[4 + c], 0xEE);
      const __m512 v2 = _mm512_shuffle_f32x4(a[8 + c], a[12 + c], 0x44);
      const __m512 v3 = _mm512_shuffle_f32x4(a[8 + c], a[12 + c], 0xEE);
      _mm512_storeu_ps(out + (d0 + c) * ld, _mm512_shuffle_f32x4(v0, v2, 0x88));
      _mm512_storeu_ps(out + (d0 + 4 + c) * ld, _mm512_shuffle_f32x4(v0, v2, 0xDD));
      _mm512_storeu_ps(out + (d0 + 8 + c) * ld, _mm512_shuffle_f32x4(v1, v3, 0x88));
      _mm512_storeu_ps(out + (d0 + 12 + c) * ld, _mm512_shuffle_f32x4(v1, v3, 0xDD));
    }
  }
}
#endif

// Rows [0, count) of a [rows][cols] block (stored as dtype, row stride `stride`) into f32
// [rows][cols_pad], zero padded.
HWY_INLINE void ConvertRows(const TensorView& t, const void* base, int64_t stride, int64_t rows, int64_t cols,
                 int64_t cols_pad, float* out) {
  const DF df;
  const hn::Rebind<hwy::float16_t, DF> dh;
  const hn::Rebind<hwy::bfloat16_t, DF> db;
  const int64_t n = hn::Lanes(df);
  for (int64_t r = 0; r < rows; ++r) {
    float* dst = out + r * cols_pad;
    int64_t c = 0;
    if (t.dtype == DType::kF32) {  // in vectors: rows are short, a memmove call each is not
      const float* src = static_cast<const float*>(base) + r * stride;
      for (; c + n <= cols; c += n) hn::StoreU(hn::LoadU(df, src + c), df, dst + c);
      for (; c < cols; ++c) dst[c] = src[c];
    } else if (t.dtype == DType::kF16) {
      const auto* src = static_cast<const hwy::float16_t*>(base) + r * stride;
      for (; c + n <= cols; c += n) hn::StoreU(hn::PromoteTo(df, hn::LoadU(dh, src + c)), df, dst + c);
      const auto* bits = static_cast<const uint16_t*>(base) + r * stride;
      for (; c < cols; ++c) dst[c] = f16_to_f32(bits[c]);
    } else {
      const auto* src = static_cast<const hwy::bfloat16_t*>(base) + r * stride;
      for (; c + n <= cols; c += n) hn::StoreU(hn::PromoteTo(df, hn::LoadU(db, src + c)), df, dst + c);
      const auto* bits = static_cast<const uint16_t*>(base) + r * stride;
      for (; c < cols; ++c) dst[c] = bf16_to_f32(bits[c]);
    }
    std::fill(dst + cols, dst + cols_pad, 0.0f);
  }
}

// The same rows as f32 for a kernel to read: in place when `in_place` (f32 storage the caller
// may read as it is; *row_stride = stride), else converted into `buffer` (*row_stride = ld).
HWY_INLINE const float* RowsAsF32(const TensorView& t, const void* base, int64_t stride,
                                  int64_t rows, int64_t cols, bool in_place, int64_t ld,
                                  float* buffer, int64_t* row_stride) {
  if (in_place) {
    *row_stride = stride;
    return static_cast<const float*>(base);
  }
  ConvertRows(t, base, stride, rows, cols, ld, buffer);
  *row_stride = ld;
  return buffer;
}

}  // namespace HWY_NAMESPACE
}  // namespace attnkit::cpu
HWY_AFTER_NAMESPACE();

#endif  // include guard
