// Quantized mat-mul kernels (see qmatmul.h). Register tile: kRows weight rows x kTokens tokens of
// accumulators; each weight block is dequantized once into registers and used for every token of
// the tile, so the dequantization cost is amortized over kTokens products.
// Cache tile: tokens are walked in chunks of kTokenChunk so the chunk's activations stay in L2
// while one thread's rows stream past them.

#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "model/qmatmul.cc"
#include "model/qmatmul.h"

#include <omp.h>

#include <algorithm>
#include <type_traits>
#include <vector>

#include "attnkit/error.h"
#include "hwy/cache_control.h"
#include "hwy/foreach_target.h"  // IWYU pragma: keep
#include "hwy/highway.h"

HWY_BEFORE_NAMESPACE();
namespace attnkit::model {
namespace HWY_NAMESPACE {
namespace hn = hwy::HWY_NAMESPACE;

using DF = hn::ScalableTag<float>;
using VF = hn::Vec<DF>;

// With 32 vector registers (AVX-512) a 4 x 4 tile (16 accumulators, 8 activation vectors) fits;
// with 16 (AVX2, SSE) use 2 x 3.
constexpr int kRows = HWY_LANES(float) >= 16 ? 4 : 2;
constexpr int kTokens = HWY_LANES(float) >= 16 ? 4 : 3;
constexpr int64_t kTokenChunk = 64;

// The block's leading fp16 scale(s) through the vector converter (F16C on x86): the scalar
// bit-twiddling conversion costs more than the block's arithmetic. Reads 8 bytes; every block
// type here is at least 18 bytes long.
HWY_INLINE void LoadScales(const uint8_t* block, float* scales) {
  if constexpr (HWY_LANES(float) >= 4) {
    const hn::CappedTag<float, 4> d4;
    const hn::Rebind<hwy::float16_t, decltype(d4)> dh;
    hn::StoreU(hn::PromoteTo(d4, hn::LoadU(dh, reinterpret_cast<const hwy::float16_t*>(block))), d4,
               scales);
  } else {  // single-lane targets
    scales[0] = read_fp16(block);
    scales[1] = read_fp16(block + 2);
  }
}

// 32 weights packed as nibbles (low nibbles are elements 0..15, high nibbles 16..31), as
// q * scale + offset.
HWY_INLINE void LoadNibbles(const uint8_t* nibbles, VF scale, VF offset, VF* out) {
  const DF d;
  const hn::Rebind<uint8_t, DF> d8;
  const hn::Rebind<int32_t, DF> d32;
  constexpr size_t N = HWY_LANES(float) < 16 ? HWY_LANES(float) : 16;
  const auto mask = hn::Set(d8, uint8_t{0x0F});
#pragma GCC unroll 16
  for (size_t k = 0; k < 16; k += N) {
    const auto bytes = hn::LoadU(d8, nibbles + k);
    const VF lo = hn::ConvertTo(d, hn::PromoteTo(d32, hn::And(bytes, mask)));
    const VF hi = hn::ConvertTo(d, hn::PromoteTo(d32, hn::ShiftRight<4>(bytes)));
    out[k / N] = hn::MulAdd(lo, scale, offset);
    out[(16 + k) / N] = hn::MulAdd(hi, scale, offset);
  }
}

// The 32 weights of block `b` of a row, `N` lanes at a time: chunk c covers elements
// [c * N, c * N + N) of the block. Each Weights type yields dequantized vectors.
struct Q4_1Weights {
  static constexpr int64_t kBlockBytes = 20;
  HWY_INLINE static void Load(const uint8_t* block, VF* out) {
    const DF d;
    HWY_ALIGN float scales[4];
    LoadScales(block, scales);
    LoadNibbles(block + 4, hn::Set(d, scales[0]), hn::Set(d, scales[1]), out);
  }
};

struct Q4_0Weights {
  static constexpr int64_t kBlockBytes = 18;
  HWY_INLINE static void Load(const uint8_t* block, VF* out) {
    const DF d;
    HWY_ALIGN float scales[4];
    LoadScales(block, scales);
    LoadNibbles(block + 2, hn::Set(d, scales[0]), hn::Set(d, -8.0f * scales[0]), out);
  }
};

struct Q8_0Weights {
  static constexpr int64_t kBlockBytes = 34;
  HWY_INLINE static void Load(const uint8_t* block, VF* out) {
    const DF d;
    const hn::Rebind<int8_t, DF> d8;
    const hn::Rebind<int32_t, DF> d32;
    constexpr size_t N = HWY_LANES(float) < 32 ? HWY_LANES(float) : 32;
    HWY_ALIGN float scales[4];
    LoadScales(block, scales);
    const VF scale = hn::Set(d, scales[0]);
    const int8_t* q = reinterpret_cast<const int8_t*>(block + 2);
#pragma GCC unroll 16
    for (size_t k = 0; k < 32; k += N)
      out[k / N] = hn::Mul(hn::ConvertTo(d, hn::PromoteTo(d32, hn::LoadU(d8, q + k))), scale);
  }
};

struct F32Weights {
  static constexpr int64_t kBlockBytes = 128;
  HWY_INLINE static void Load(const uint8_t* block, VF* out) {
    const DF d;
    constexpr size_t N = HWY_LANES(float) < 32 ? HWY_LANES(float) : 32;
    const float* f = reinterpret_cast<const float*>(block);
#pragma GCC unroll 16
    for (size_t k = 0; k < 32; k += N) out[k / N] = hn::LoadU(d, f + k);
  }
};

// R rows x T tokens, all 32-element blocks of the row. out[r * ldy + t * ...] written by caller.
template <class W, int R, int T>
HWY_NOINLINE void Tile(const uint8_t* const* rows, int64_t blocks, const float* const* xs,
                       float* sums) {
  const DF d;
  constexpr size_t N = HWY_LANES(float) < 32 ? HWY_LANES(float) : 32;
  constexpr size_t kVecs = 32 / N;
  VF acc[R][T];
#pragma GCC unroll 16
  for (int r = 0; r < R; ++r)
#pragma GCC unroll 16
    for (int t = 0; t < T; ++t) acc[r][t] = hn::Zero(d);
  for (int64_t b = 0; b < blocks; ++b) {
    VF x[T][kVecs];
#pragma GCC unroll 16
    for (int t = 0; t < T; ++t)
#pragma GCC unroll 16
      for (size_t c = 0; c < kVecs; ++c) x[t][c] = hn::LoadU(d, xs[t] + b * 32 + c * N);
#pragma GCC unroll 16
    for (int r = 0; r < R; ++r) {
      // Few tokens: the loop streams weights from memory; fetch a few blocks ahead.
      if (T == 1) hwy::Prefetch(rows[r] + (b + 8) * W::kBlockBytes);
      VF w[kVecs];
      W::Load(rows[r] + b * W::kBlockBytes, w);
#pragma GCC unroll 16
      for (int t = 0; t < T; ++t)
#pragma GCC unroll 16
        for (size_t c = 0; c < kVecs; ++c) acc[r][t] = hn::MulAdd(w[c], x[t][c], acc[r][t]);
    }
  }
  for (int r = 0; r < R; ++r)
    for (int t = 0; t < T; ++t) sums[r * T + t] = hn::GetLane(hn::SumOfLanes(d, acc[r][t]));
}

template <class W, int R>
void TileTokens(const uint8_t* const* rows, int64_t blocks, const float* const* xs, int tokens,
                float* sums) {
  static_assert(kTokens <= 4, "extend the switch");
  switch (tokens) {
    case 1:
      return Tile<W, R, 1>(rows, blocks, xs, sums);
    case 2:
      return Tile<W, R, 2>(rows, blocks, xs, sums);
    case 3:
      return Tile<W, R, 3>(rows, blocks, xs, sums);
    default:
      return Tile<W, R, kTokens>(rows, blocks, xs, sums);
  }
}

// Dequantizes one row into floats through the same W::Load the register path uses, so the
// panel holds exactly the values the direct path computes.
template <class W>
void DequantRow(const uint8_t* row, int64_t blocks, float* out) {
  const DF d;
  constexpr size_t N = HWY_LANES(float) < 32 ? HWY_LANES(float) : 32;
  for (int64_t b = 0; b < blocks; ++b) {
    VF w[32 / N];
    W::Load(row + b * W::kBlockBytes, w);
    for (size_t c = 0; c < 32 / N; ++c) hn::StoreU(w[c], d, out + b * 32 + c * N);
  }
}

// Rows [row_begin, row_end) for every token; row pointers come from `row_of`.
// With many tokens, each row tile is dequantized once per token chunk into a small float panel
// (kRows x cols, L1-resident) and the tile kernel runs on floats: the inner loop is then loads and
// FMAs only. With few tokens (decode) blocks are dequantized in registers. Both give identical
// products, since the panel holds the values W::Load computes.
template <class W, class RowOf>
void RunRows(const RowOf& row_of, int64_t cols, const float* x, int64_t tokens, int64_t ldx,
             float* y, int64_t ldy, int64_t row_begin, int64_t row_end) {
  const int64_t blocks = cols / 32;
  float sums[kRows * kTokens];
  constexpr bool kQuantized = !std::is_same_v<W, F32Weights>;
  const bool use_panel = kQuantized && tokens > 2 * kTokens;
  std::vector<float> panel(use_panel ? kRows * cols : 0);
  for (int64_t t0 = 0; t0 < tokens; t0 += kTokenChunk) {
    const int64_t t_end = std::min(tokens, t0 + kTokenChunk);
    for (int64_t r = row_begin; r < row_end;) {
      const int nr = row_end - r >= kRows ? kRows : 1;
      const uint8_t* rows[kRows];
      for (int i = 0; i < nr; ++i) {
        rows[i] = row_of(r + i);
        if (use_panel) {
          DequantRow<W>(rows[i], blocks, &panel[i * cols]);
          rows[i] = reinterpret_cast<const uint8_t*>(&panel[i * cols]);
        }
      }
      for (int64_t t = t0; t < t_end; t += kTokens) {
        const int nt = static_cast<int>(std::min<int64_t>(kTokens, t_end - t));
        const float* xs[kTokens];
        for (int i = 0; i < nt; ++i) xs[i] = x + (t + i) * ldx;
        if (use_panel) {
          if (nr == kRows)
            TileTokens<F32Weights, kRows>(rows, blocks, xs, nt, sums);
          else
            TileTokens<F32Weights, 1>(rows, blocks, xs, nt, sums);
        } else if (nr == kRows) {
          TileTokens<W, kRows>(rows, blocks, xs, nt, sums);
        } else {
          TileTokens<W, 1>(rows, blocks, xs, nt, sums);
        }
        for (int i = 0; i < nr; ++i)
          for (int j = 0; j < nt; ++j) y[(t + j) * ldy + r + i] = sums[i * nt + j];
      }
      r += nr;
    }
  }
}

void MatmulRows(const QMatrix& w, const float* x, int64_t tokens, int64_t ldx, float* y,
                int64_t ldy, int64_t row_begin, int64_t row_end) {
  auto direct = [&w](int64_t r) { return w.row(r); };
  switch (w.type) {
    case GgmlType::kQ4_1:
      return RunRows<Q4_1Weights>(direct, w.cols, x, tokens, ldx, y, ldy, row_begin, row_end);
    case GgmlType::kQ4_0:
      return RunRows<Q4_0Weights>(direct, w.cols, x, tokens, ldx, y, ldy, row_begin, row_end);
    case GgmlType::kQ8_0:
      return RunRows<Q8_0Weights>(direct, w.cols, x, tokens, ldx, y, ldy, row_begin, row_end);
    case GgmlType::kF32:
      return RunRows<F32Weights>(direct, w.cols, x, tokens, ldx, y, ldy, row_begin, row_end);
    default: {
      // One row at a time through a per-call buffer: never more than a row dequantized.
      std::vector<float> buffer(w.cols);
      for (int64_t r = row_begin; r < row_end; ++r) {
        dequantize_row(w.type, w.row(r), buffer.data(), w.cols);
        const uint8_t* bytes = reinterpret_cast<const uint8_t*>(buffer.data());
        auto one = [bytes](int64_t) { return bytes; };
        RunRows<F32Weights>(one, w.cols, x, tokens, ldx, y + r, ldy, 0, 1);
      }
    }
  }
}

}  // namespace HWY_NAMESPACE
}  // namespace attnkit::model
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
namespace attnkit::model {

HWY_EXPORT(MatmulRows);

void matmul(const QMatrix& w, const float* x, int64_t tokens, int64_t ldx, float* y, int64_t ldy,
            int threads) {
  check(w.cols % 32 == 0, "weights",
        "row length " + std::to_string(w.cols) + " is not a multiple of 32");
  if (tokens <= 0 || w.rows <= 0) return;
  const int n_threads = threads > 0 ? threads : omp_get_max_threads();
  // Rows split evenly in multiples of 4 so every thread runs full register tiles.
  const int64_t per_thread = (w.rows + 4 * n_threads - 1) / (4 * n_threads) * 4;
  const int64_t parts = (w.rows + per_thread - 1) / per_thread;
  if (parts <= 1) {
    HWY_DYNAMIC_DISPATCH(MatmulRows)(w, x, tokens, ldx, y, ldy, 0, w.rows);
    return;
  }
#pragma omp parallel for num_threads(n_threads) schedule(static, 1)
  for (int64_t part = 0; part < parts; ++part) {
    const int64_t begin = part * per_thread;
    const int64_t end = std::min(w.rows, begin + per_thread);
    HWY_DYNAMIC_DISPATCH(MatmulRows)(w, x, tokens, ldx, y, ldy, begin, end);
  }
}

void matmul_reference(const QMatrix& w, const float* x, int64_t tokens, int64_t ldx, float* y,
                      int64_t ldy) {
  std::vector<float> row(w.cols);
  for (int64_t r = 0; r < w.rows; ++r) {
    dequantize_row(w.type, w.row(r), row.data(), w.cols);
    for (int64_t t = 0; t < tokens; ++t) {
      double sum = 0.0;
      for (int64_t k = 0; k < w.cols; ++k) sum += static_cast<double>(row[k]) * x[t * ldx + k];
      y[t * ldy + r] = static_cast<float>(sum);
    }
  }
}

}  // namespace attnkit::model
#endif  // HWY_ONCE
