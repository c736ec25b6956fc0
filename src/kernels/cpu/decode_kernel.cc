// Decode path: few queries (Nq <= 16) against a long key cache ("flash decoding").
//
// The keys of each (batch, kv head) are split into chunks so that every thread streams its own
// share of K and V; each chunk yields a partial (O, m, l) for all rows of the GQA group
// (G heads x Nq tokens), and the partials are merged exactly by their log-sum-exp. Scores are dot
// products with the head dim in the lanes (few rows: the rows-in-lanes layout would waste lanes);
// the softmax and the P.V product reuse the tile kernel's building blocks.
#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "kernels/cpu/decode_kernel.cc"
#include "hwy/foreach_target.h"  // IWYU pragma: keep
// Must come after foreach_target.h.
#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "attnkit/attention.h"
#include "attnkit/block_mask.h"
#include "attnkit/error.h"
#include "core/attention_args.h"
#include "hwy/aligned_allocator.h"
#include "hwy/highway.h"
#include "kernels/cpu/tile_ops-inl.h"
#include "kernels/cpu/tile_plan.h"

HWY_BEFORE_NAMESPACE();
namespace attnkit::cpu {
namespace HWY_NAMESPACE {
namespace hn = hwy::HWY_NAMESPACE;

constexpr int64_t kDecodeBlock = 64;  // keys converted and scored at a time (fits L1)
constexpr int64_t kAhead = 2;         // prefetch distance, in blocks

struct KeySpan {
  int64_t lo, hi;  // keys [lo, hi)
};

struct DecodeShape {
  int64_t batch, heads_q, nq, heads_kv, nk, dim, dim_v, group, rows, m_pad, dv_pad;
  int64_t splits, chunk;  // key chunks per (batch, kv head), keys per chunk
};

#if HWY_TARGET != HWY_SCALAR
// Stores the 4 lanes of the sum of v's 128-bit blocks (folding halves down to 4 lanes).
template <class D>
HWY_INLINE void StoreBlockSum(D d, hn::Vec<D> v, float* out4) {
  if constexpr (hn::MaxLanes(D()) > 4) {
    const hn::Half<D> dh;
    StoreBlockSum(dh, hn::Add(hn::LowerHalf(dh, v), hn::UpperHalf(dh, v)), out4);
  } else {
    hn::StoreU(v, d, out4);
  }
}
#endif

// out4[i] = sum of the lanes of v_i: four horizontal sums for the price of about one (two
// interleave rounds inside 128-bit blocks, then the blocks are added).
HWY_INLINE void SumOfLanes4(VF v0, VF v1, VF v2, VF v3, float* out4) {
#if HWY_TARGET == HWY_SCALAR
  out4[0] = hn::GetLane(v0), out4[1] = hn::GetLane(v1);
  out4[2] = hn::GetLane(v2), out4[3] = hn::GetLane(v3);
#else
  const DF df;
  const hn::Repartition<uint64_t, DF> d64;
  // Per block: [v0_0 + v0_2, v1_0 + v1_2, v0_1 + v0_3, v1_1 + v1_3], and the same for v2, v3.
  const VF a = hn::Add(hn::InterleaveLower(df, v0, v1), hn::InterleaveUpper(df, v0, v1));
  const VF b = hn::Add(hn::InterleaveLower(df, v2, v3), hn::InterleaveUpper(df, v2, v3));
  // Per block: [sum v0, sum v1, sum v2, sum v3] over that block's lanes.
  const auto a64 = hn::BitCast(d64, a), b64 = hn::BitCast(d64, b);
  const VF blocks = hn::Add(hn::BitCast(df, hn::InterleaveLower(d64, a64, b64)),
                            hn::BitCast(df, hn::InterleaveUpper(d64, a64, b64)));
  StoreBlockSum(df, blocks, out4);
#endif
}

// S[r][j] = q[r] . K[j] for R rows: dot products with the head dim in the lanes; the key row is
// loaded (and widened) once for all R rows.
template <int R, typename T>
HWY_INLINE void DotRows(const float* HWY_RESTRICT q, int64_t dim_pad, const T* HWY_RESTRICT k,
                        int64_t k_stride, int64_t keys, float* HWY_RESTRICT s, int64_t s_stride) {
  const DF df;
  const int64_t n = hn::Lanes(df);
  int64_t j = 0;
  for (; j + 2 <= keys; j += 2) {  // two keys at a time: each q load feeds two FMAs
    VF acc0[R], acc1[R];
    for (int r = 0; r < R; ++r) acc0[r] = acc1[r] = hn::Zero(df);
    for (int64_t d = 0; d < dim_pad; d += n) {
      const VF key0 = LoadAsFloat(k + j * k_stride + d);
      const VF key1 = LoadAsFloat(k + (j + 1) * k_stride + d);
      for (int r = 0; r < R; ++r) {
        const VF qr = hn::Load(df, q + r * dim_pad + d);
        acc0[r] = hn::MulAdd(qr, key0, acc0[r]);
        acc1[r] = hn::MulAdd(qr, key1, acc1[r]);
      }
    }
    if constexpr (R == 4) {
      float sums0[4], sums1[4];
      SumOfLanes4(acc0[0], acc0[1], acc0[2], acc0[3], sums0);
      SumOfLanes4(acc1[0], acc1[1], acc1[2], acc1[3], sums1);
      for (int r = 0; r < 4; ++r)
        s[r * s_stride + j] = sums0[r], s[r * s_stride + j + 1] = sums1[r];
    } else {
      for (int r = 0; r < R; ++r) {
        s[r * s_stride + j] = hn::GetLane(hn::SumOfLanes(df, acc0[r]));
        s[r * s_stride + j + 1] = hn::GetLane(hn::SumOfLanes(df, acc1[r]));
      }
    }
  }
  for (; j < keys; ++j) {
    VF acc[R];
    for (int r = 0; r < R; ++r) acc[r] = hn::Zero(df);
    for (int64_t d = 0; d < dim_pad; d += n) {
      const VF key = LoadAsFloat(k + j * k_stride + d);
      for (int r = 0; r < R; ++r)
        acc[r] = hn::MulAdd(hn::Load(df, q + r * dim_pad + d), key, acc[r]);
    }
    for (int r = 0; r < R; ++r) s[r * s_stride + j] = hn::GetLane(hn::SumOfLanes(df, acc[r]));
  }
}

template <typename T>
void ScoreKeys(const float* q, int64_t dim_pad, int64_t rows, const T* k, int64_t k_stride,
               int64_t keys, float* s, int64_t s_stride) {
  int64_t r = 0;
  for (; r + 4 <= rows; r += 4)
    DotRows<4>(q + r * dim_pad, dim_pad, k, k_stride, keys, s + r * s_stride, s_stride);
  for (; r < rows; ++r)
    DotRows<1>(q + r * dim_pad, dim_pad, k, k_stride, keys, s + r * s_stride, s_stride);
}

void ScoreKeysAny(DType dtype, const float* q, int64_t dim_pad, int64_t rows, const void* k,
                  int64_t k_stride, int64_t keys, float* s, int64_t s_stride) {
  switch (dtype) {
    case DType::kF32:
      return ScoreKeys(q, dim_pad, rows, static_cast<const float*>(k), k_stride, keys, s, s_stride);
    case DType::kF16:
      return ScoreKeys(q, dim_pad, rows, static_cast<const hwy::float16_t*>(k), k_stride, keys, s,
                       s_stride);
    case DType::kBF16:
      return ScoreKeys(q, dim_pad, rows, static_cast<const hwy::bfloat16_t*>(k), k_stride, keys, s,
                       s_stride);
  }
}

// Online softmax of one row over a block of keys held in the lanes. s has kDecodeBlock entries;
// those past `keys` or past the row's causal limit are set to -inf (exp2 turns them into 0).
void RowSoftmax(float* HWY_RESTRICT s, int64_t keys, int64_t first_hidden, float& m, float& l,
                float& alpha) {
  const DF df;
  const int64_t n = hn::Lanes(df);
  const float neg_inf = -std::numeric_limits<float>::infinity();
  for (int64_t j = std::max<int64_t>(0, std::min(keys, first_hidden)); j < kDecodeBlock; ++j)
    s[j] = neg_inf;
  VF top = hn::Set(df, neg_inf);
  for (int64_t j = 0; j < kDecodeBlock; j += n) top = hn::Max(top, hn::Load(df, s + j));
  const float m_new = std::max(m, hn::GetLane(hn::MaxOfLanes(df, top)));
  const float m_ref = m_new == neg_inf ? 0.0f : m_new;
  VF sum = hn::Zero(df);
  for (int64_t j = 0; j < kDecodeBlock; j += n) {
    const VF p = Exp2(df, hn::Sub(hn::Load(df, s + j), hn::Set(df, m_ref)));
    hn::Store(p, df, s + j);
    sum = hn::Add(sum, p);
  }
  alpha = hn::GetLane(Exp2(df, hn::Set(df, m - m_ref)));
  l = l * alpha + hn::GetLane(hn::SumOfLanes(df, sum));
  m = m_new;
}

// One work item, the keys of `spans` (ascending, disjoint) for all rows of kv head g:
// un-normalized O and (m, l) in log2 units. Returns the number of (row, key) pairs attended.
int64_t DecodeChunk(const AttentionArgs& a, const DecodeShape& sh, float qscale, int64_t b,
                    int64_t g, const KeySpan* spans, int64_t span_count, float* o, float* m,
                    float* l) {
  int64_t pairs = 0;
  const DF df;
  const int64_t n = hn::Lanes(df), rows = sh.rows, m_pad = sh.m_pad, dim = sh.dim;
  const int64_t dim_pad = (dim + n - 1) / n * n;
  auto q = hwy::AllocateAligned<float>(rows * dim_pad);
  auto kc = hwy::AllocateAligned<float>(kDecodeBlock * dim_pad);
  auto vc = hwy::AllocateAligned<float>(kDecodeBlock * sh.dv_pad);
  auto s = hwy::AllocateAligned<float>(rows * kDecodeBlock);  // scores, then P: [row][key]
  auto alpha = hwy::AllocateAligned<float>(m_pad);
  auto limit = hwy::AllocateAligned<float>(m_pad);
  // Row r = head (g * G + r / nq), token r % nq; Q converted, scaled, zero padded to dim_pad.
  for (int64_t r = 0; r < m_pad; ++r) {
    const int64_t h = g * sh.group + std::min(r, rows - 1) / sh.nq,
                  i = std::min(r, rows - 1) % sh.nq;
    limit[r] = static_cast<float>(i + (sh.nk - sh.nq));
    m[r] = -std::numeric_limits<float>::infinity();
    l[r] = 0.0f;
    if (r >= rows) continue;
    ConvertRows(a.q, RowPointer(a.q, b, h, i), 0, 1, dim, dim_pad, q.get() + r * dim_pad);
    for (int64_t d = 0; d < dim; ++d) q[r * dim_pad + d] *= qscale;
  }
  std::fill(o, o + rows * sh.dv_pad, 0.0f);
  // K and V are read in place, widened in registers, when their rows fill whole vectors.
  const bool k_in_place = dim % n == 0, v_in_place = sh.dim_v % n == 0;
  const float last_limit = *std::max_element(limit.get(), limit.get() + rows);
  for (int64_t span = 0; span < span_count; ++span) {
    const int64_t j0 = spans[span].lo, j1 = spans[span].hi;
    if (a.causal && static_cast<float>(j0) > last_limit) break;
    for (int64_t k0 = j0; k0 < j1; k0 += kDecodeBlock) {
      const int64_t keys = std::min(kDecodeBlock, j1 - k0);
      if (a.causal && static_cast<float>(k0) > last_limit) break;
      // The cache streams from DRAM: ask for the block kAhead blocks on while this one computes.
      if (k0 + kAhead * kDecodeBlock < j1) {
        const int64_t at = k0 + kAhead * kDecodeBlock, next = std::min(kDecodeBlock, j1 - at);
        PrefetchRows(a.k, RowPointer(a.k, b, g, at), a.k.stride[2], next, dim);
        PrefetchRows(a.v, RowPointer(a.v, b, g, at), a.v.stride[2], next, sh.dim_v);
      }
      if (k_in_place) {
        ScoreKeysAny(a.k.dtype, q.get(), dim_pad, rows, RowPointer(a.k, b, g, k0), a.k.stride[2],
                     keys, s.get(), kDecodeBlock);
      } else {
        ConvertRows(a.k, RowPointer(a.k, b, g, k0), a.k.stride[2], keys, dim, dim_pad, kc.get());
        ScoreKeys(q.get(), dim_pad, rows, kc.get(), dim_pad, keys, s.get(), kDecodeBlock);
      }
      for (int64_t r = 0; r < rows; ++r) {
        const int64_t first_hidden =
            a.causal ? static_cast<int64_t>(limit[r]) + 1 - k0 : kDecodeBlock;  // causal limit
        RowSoftmax(s.get() + r * kDecodeBlock, keys, first_hidden, m[r], l[r], alpha[r]);
        pairs += std::clamp<int64_t>(first_hidden, 0, keys);
      }
      const PLayout p_at = {1, kDecodeBlock};
      if (v_in_place) {
        AccumulatePvAny(a.v.dtype, s.get(), p_at, rows, RowPointer(a.v, b, g, k0), a.v.stride[2],
                        keys, alpha.get(), o, sh.dv_pad);
      } else {
        ConvertRows(a.v, RowPointer(a.v, b, g, k0), a.v.stride[2], keys, sh.dim_v, sh.dv_pad,
                    vc.get());
        AccumulatePv(s.get(), p_at, rows, vc.get(), sh.dv_pad, keys, alpha.get(), o, sh.dv_pad);
      }
    }
  }
  return pairs;
}

void RunDecode(const AttentionArgs& a, const BlockMask* mask) {
  const DF df;
  const int64_t n = hn::Lanes(df);
  DecodeShape sh;
  sh.batch = a.q.shape[0], sh.heads_q = a.q.shape[1], sh.nq = a.q.shape[2];
  sh.heads_kv = a.k.shape[1], sh.nk = a.k.shape[2], sh.dim = a.q.shape[3], sh.dim_v = a.v.shape[3];
  sh.group = sh.heads_q / sh.heads_kv;
  sh.rows = sh.group * sh.nq;
  sh.m_pad = (sh.rows + n - 1) / n * n;
  sh.dv_pad = (sh.dim_v + n - 1) / n * n;
  const int threads = effective_threads(a.threads);
  // Each slice's keys: all of them, or the mask's kv blocks (the list of its first head, shared
  // by the group), as ascending spans with adjacent blocks joined.
  const int64_t slices = sh.batch * sh.heads_kv;
  std::vector<std::vector<KeySpan>> keys_of(slices);
  int64_t most = 0;  // keys of the largest slice
  for (int64_t slice = 0; slice < slices; ++slice) {
    std::vector<KeySpan>& spans = keys_of[slice];
    if (!mask) {
      spans.push_back({0, sh.nk});
    } else {
      const int64_t list = mask->list(slice / sh.heads_kv, slice % sh.heads_kv * sh.group, 0);
      for (int64_t e = mask->row_start[list]; e < mask->row_start[list + 1]; ++e) {
        const int64_t lo = mask->kv_index[e] * mask->kv_block;
        const int64_t hi = std::min(sh.nk, lo + mask->kv_block);
        if (!spans.empty() && spans.back().hi == lo)
          spans.back().hi = hi;
        else
          spans.push_back({lo, hi});
      }
    }
    int64_t count = 0;
    for (const KeySpan& span : spans) count += span.hi - span.lo;
    most = std::max(most, count);
  }
  // Enough chunks for 4 per thread, but no chunk under 512 keys (the merge is not free); the
  // chunk a whole number of kDecodeBlock.
  const int64_t want = std::max<int64_t>(1, (4 * threads + slices - 1) / slices);
  sh.splits = std::clamp<int64_t>(most / 512, 1, want);
  sh.chunk = (most + sh.splits - 1) / sh.splits;
  sh.chunk =
      std::max<int64_t>(kDecodeBlock, (sh.chunk + kDecodeBlock - 1) / kDecodeBlock * kDecodeBlock);
  sh.splits = std::max<int64_t>(1, (most + sh.chunk - 1) / sh.chunk);
  // Item (slice, split) takes the slice's keys [split * chunk, (split + 1) * chunk) in span order.
  std::vector<std::vector<KeySpan>> item_spans(slices * sh.splits);
  for (int64_t slice = 0; slice < slices; ++slice) {
    int64_t seen = 0;
    for (const KeySpan& span : keys_of[slice])
      for (int64_t lo = span.lo; lo < span.hi;) {
        const int64_t split = seen / sh.chunk;
        const int64_t hi = std::min(span.hi, lo + (split + 1) * sh.chunk - seen);
        item_spans[slice * sh.splits + split].push_back({lo, hi});
        seen += hi - lo;
        lo = hi;
      }
  }

  const float qscale = effective_scale(a) * static_cast<float>(M_LOG2E);
  const int64_t items = slices * sh.splits;
  std::vector<float> part_o(items * sh.rows * sh.dv_pad), part_m(items * sh.m_pad),
      part_l(items * sh.m_pad);
  int64_t pairs = 0;
#pragma omp parallel for schedule(dynamic, 1) num_threads(threads) reduction(+ : pairs)
  for (int64_t it = 0; it < items; ++it) {
    const int64_t slice = it / sh.splits;
    pairs += DecodeChunk(a, sh, qscale, slice / sh.heads_kv, slice % sh.heads_kv,
                         item_spans[it].data(), static_cast<int64_t>(item_spans[it].size()),
                         part_o.data() + it * sh.rows * sh.dv_pad, part_m.data() + it * sh.m_pad,
                         part_l.data() + it * sh.m_pad);
  }
  if (a.attended_pairs) *a.attended_pairs += pairs;
    // Merge the chunks of each row: O = sum_s 2^(m_s - M) O_s / L, L = sum_s 2^(m_s - M) l_s.
#pragma omp parallel for num_threads(threads)
  for (int64_t slice = 0; slice < slices; ++slice) {
    const int64_t b = slice / sh.heads_kv, g = slice % sh.heads_kv;
    std::vector<float> acc(sh.dim_v);
    for (int64_t r = 0; r < sh.rows; ++r) {
      float top = -std::numeric_limits<float>::infinity();
      for (int64_t s = 0; s < sh.splits; ++s)
        top = std::max(top, part_m[(slice * sh.splits + s) * sh.m_pad + r]);
      const float ref = std::isinf(top) ? 0.0f : top;
      float total = 0.0f;
      std::fill(acc.begin(), acc.end(), 0.0f);
      for (int64_t s = 0; s < sh.splits; ++s) {
        const int64_t it = slice * sh.splits + s;
        const float w = std::exp2(part_m[it * sh.m_pad + r] - ref);
        if (w == 0.0f) continue;
        total += w * part_l[it * sh.m_pad + r];
        const float* po = part_o.data() + (it * sh.rows + r) * sh.dv_pad;
        for (int64_t d = 0; d < sh.dim_v; ++d) acc[d] += w * po[d];
      }
      const int64_t h = g * sh.group + r / sh.nq, i = r % sh.nq;
      float* out = a.out.row<float>(b, h, i);
      const float inv = total > 0.0f ? 1.0f / total : 0.0f;
      for (int64_t d = 0; d < sh.dim_v; ++d) out[d] = acc[d] * inv;
      if (!a.lse.empty())
        *a.lse.row<float>(b, h, i) = total > 0.0f
                                         ? (ref + std::log2(total)) * static_cast<float>(M_LN2)
                                         : -std::numeric_limits<float>::infinity();
    }
  }
}

}  // namespace HWY_NAMESPACE
}  // namespace attnkit::cpu
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
namespace attnkit {
namespace cpu {
HWY_EXPORT(RunDecode);
}  // namespace cpu

void attention_decode(const AttentionArgs& args) {
  validate_f32_query(args);
  check(args.dropout == 0.0f, "dropout",
        "is not supported on the decode path (attention() runs the tile kernel when it is set)");
  HWY_DYNAMIC_DISPATCH(cpu::RunDecode)(args, nullptr);
}

bool decode_can_walk(const AttentionArgs& args, const BlockMask& mask) {
  const int64_t nq = args.q.shape[2], heads_q = args.q.shape[1];
  const int64_t group = heads_q / std::max<int64_t>(1, args.k.shape[1]);
  if (nq > 16 || args.dropout != 0.0f || mask.q_blocks() != 1) return false;
  for (BlockKind kind : mask.kind)
    if (kind != BlockKind::kFull) return false;
  if (mask.heads == 1) return true;
  // Every head of a GQA group must walk its first head's list.
  for (int64_t b = 0; b < mask.batch; ++b)
    for (int64_t h = 0; h < heads_q; ++h) {
      const int64_t first = mask.list(b, h / group * group, 0), list = mask.list(b, h, 0);
      if (!std::equal(mask.kv_index.begin() + mask.row_start[list],
                      mask.kv_index.begin() + mask.row_start[list + 1],
                      mask.kv_index.begin() + mask.row_start[first],
                      mask.kv_index.begin() + mask.row_start[first + 1]))
        return false;
    }
  return true;
}

void attention_decode(const AttentionArgs& args, const BlockMask& block_mask) {
  validate_f32_query(args);
  check(decode_can_walk(args, block_mask), "block_mask",
        "the decode path walks masks of one query block (nq <= 16), FULL entries only, the same "
        "lists for the heads of a GQA group, and no dropout");
  HWY_DYNAMIC_DISPATCH(cpu::RunDecode)(args, &block_mask);
}

}  // namespace attnkit
#endif  // HWY_ONCE
