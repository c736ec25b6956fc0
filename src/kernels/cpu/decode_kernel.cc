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
#include "core/score_modifiers.h"
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
  // A PARTIAL span's allowed pairs: allow[r * ld + (j - lo)] for row r and key j, an offset
  // into its slice's bitmask pool; -1 for a FULL span.
  int64_t allow = -1, ld = 0;
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
                        int64_t k_stride, int64_t keys, float* HWY_RESTRICT s, int64_t s_stride,
                        const RowsAhead& ahead) {
  const DF df;
  const int64_t n = hn::Lanes(df);
  int64_t j = 0;
  for (; j + 2 <= keys; j += 2) {  // two keys at a time: each q load feeds two FMAs
    ahead.Rows(j, j + 2);  // the rows kAhead blocks on, as fast as these are consumed
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

// The first group of rows also asks for the rows `ahead`.
template <typename T>
void ScoreKeys(const float* q, int64_t dim_pad, int64_t rows, const T* k, int64_t k_stride,
               int64_t keys, float* s, int64_t s_stride, const RowsAhead& ahead) {
  const RowsAhead none;
  int64_t r = 0;
  for (; r + 4 <= rows; r += 4)
    DotRows<4>(q + r * dim_pad, dim_pad, k, k_stride, keys, s + r * s_stride, s_stride,
               r == 0 ? ahead : none);
  for (; r < rows; ++r)
    DotRows<1>(q + r * dim_pad, dim_pad, k, k_stride, keys, s + r * s_stride, s_stride,
               r == 0 ? ahead : none);
}

void ScoreKeysAny(DType dtype, const float* q, int64_t dim_pad, int64_t rows, const void* k,
                  int64_t k_stride, int64_t keys, float* s, int64_t s_stride, const RowsAhead& ahead) {
  switch (dtype) {
    case DType::kF32:
      return ScoreKeys(q, dim_pad, rows, static_cast<const float*>(k), k_stride, keys, s, s_stride,
                       ahead);
    case DType::kF16:
      return ScoreKeys(q, dim_pad, rows, static_cast<const hwy::float16_t*>(k), k_stride, keys, s,
                       s_stride, ahead);
    case DType::kBF16:
      return ScoreKeys(q, dim_pad, rows, static_cast<const hwy::bfloat16_t*>(k), k_stride, keys, s,
                       s_stride, ahead);
  }
}

// Online softmax of one row over a block of keys held in the lanes. s has kDecodeBlock entries;
// those past `keys`, past the row's causal limit or (when `allow` is given) not allowed are set to
// -inf (exp2 turns them into 0). Returns the number of keys the row attended.
int64_t RowSoftmax(float* HWY_RESTRICT s, int64_t keys, int64_t first_hidden, const uint8_t* allow,
                   float& m, float& l, float& alpha) {
  const DF df;
  const int64_t n = hn::Lanes(df);
  const float neg_inf = -std::numeric_limits<float>::infinity();
  const int64_t seen = std::clamp<int64_t>(first_hidden, 0, keys);
  for (int64_t j = seen; j < kDecodeBlock; ++j) s[j] = neg_inf;
  int64_t attended = seen;
  if (allow) {
    for (int64_t j = 0; j < seen; ++j)
      if (!allow[j]) s[j] = neg_inf, --attended;
  }
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
  return attended;
}

// Scores, softmax and P.V of one block of `keys` keys (at most kDecodeBlock) for all rows, read
// from k and v (row strides k_stride, v_stride, dtype `in_place` ? the inputs' : f32).
// allow(r) gives row r's bitmask over the block or nullptr; first_hidden(r) its causal limit.
template <class Allow, class Hidden>
int64_t DecodeBlock(const AttentionArgs& a, const DecodeShape& sh, const float* q, int64_t dim_pad,
                    const void* k, int64_t k_stride, bool k_in_place, const void* v,
                    int64_t v_stride, bool v_in_place, int64_t keys, float* s, float* m, float* l,
                    float* alpha, float* o, const Allow& allow, const Hidden& first_hidden,
                    const RowsAhead& ahead) {
  const int64_t rows = sh.rows;
  if (k_in_place)
    ScoreKeysAny(a.k.dtype, q, dim_pad, rows, k, k_stride, keys, s, kDecodeBlock, ahead);
  else
    ScoreKeys(q, dim_pad, rows, static_cast<const float*>(k), k_stride, keys, s, kDecodeBlock,
              ahead);
  int64_t pairs = 0;
  for (int64_t r = 0; r < rows; ++r)
    pairs +=
        RowSoftmax(s + r * kDecodeBlock, keys, first_hidden(r), allow(r), m[r], l[r], alpha[r]);
  const PLayout p_at = {1, kDecodeBlock};
  if (v_in_place)
    AccumulatePvAny(a.v.dtype, s, p_at, rows, v, v_stride, keys, alpha, o, sh.dv_pad);
  else
    AccumulatePv(s, p_at, rows, static_cast<const float*>(v), v_stride, keys, alpha, o, sh.dv_pad);
  return pairs;
}

// One work item, the keys of `spans` (ascending, disjoint) for all rows of kv head g, PARTIAL
// spans' bitmasks in `allow_pool`: un-normalized O and (m, l) in log2 units. Returns the number
// of (row, key) pairs attended. Runs of kDecodeBlock keys or more are read in place (widened in
// registers when rows fill whole vectors) with prefetch ahead; shorter runs followed by more
// spans (selected units, trimmed edge blocks) are gathered into one block of up to kDecodeBlock
// keys, their bitmasks and the causal limit folded into one per-row mask.
int64_t DecodeChunk(const AttentionArgs& a, const DecodeShape& sh, float qscale, int64_t b,
                    int64_t g, const KeySpan* spans, int64_t span_count, const uint8_t* allow_pool,
                    float* o, float* m, float* l) {
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
  std::vector<uint8_t> gathered_allow(rows * kDecodeBlock);
  const bool modified = has_score_modifiers(a);
  // Row r = head (g * G + r / nq), token r % nq; Q converted, scaled, zero padded to dim_pad.
  for (int64_t r = 0; r < m_pad; ++r) {
    const int64_t h = g * sh.group + std::min(r, rows - 1) / sh.nq,
                  i = std::min(r, rows - 1) % sh.nq;
    limit[r] = static_cast<float>(i + (sh.nk - sh.nq));
    m[r] = -std::numeric_limits<float>::infinity();
    l[r] = 0.0f;
    if (r >= rows) continue;
    ConvertRows(a.q, RowPointer(a.q, b, h, i), 0, 1, dim, dim_pad, q.get() + r * dim_pad);
    const float row_qscale = modified ? qscale * row_factors(a, b, h, i).tau : qscale;
    for (int64_t d = 0; d < dim; ++d) q[r * dim_pad + d] *= row_qscale;
  }
  std::fill(o, o + rows * sh.dv_pad, 0.0f);
  if (gated_off(a, b, g * sh.group, sh.group, 0, sh.nq)) return 0;  // O = 0, nothing attended
  const bool k_in_place = dim % n == 0, v_in_place = sh.dim_v % n == 0;
  const int64_t last_limit =
      static_cast<int64_t>(*std::max_element(limit.get(), limit.get() + rows));
  const int64_t k_stride = a.k.stride[2], v_stride = a.v.stride[2];
  int64_t si = 0, pos = span_count > 0 ? spans[0].lo : 0;
  auto advance = [&](int64_t taken) {
    pos += taken;
    if (pos == spans[si].hi && ++si < span_count) pos = spans[si].lo;
  };
  while (si < span_count && !(a.causal && pos > last_limit)) {
    const KeySpan& at = spans[si];
    const int64_t run = std::min(kDecodeBlock, at.hi - pos);
    if (run == kDecodeBlock || si + 1 == span_count) {
      // In place: keys [pos, pos + run) of one span.
      const int64_t k0 = pos;
      RowsAhead ahead;  // the cache streams from DRAM: ask for the block kAhead blocks on
      if (const int64_t next = k0 + kAhead * kDecodeBlock; next < at.hi)
        ahead = RowsAhead(a.k, RowPointer(a.k, b, g, next), a.v, RowPointer(a.v, b, g, next),
                          std::min(kDecodeBlock, at.hi - next));
      const void *k = RowPointer(a.k, b, g, k0), *v = RowPointer(a.v, b, g, k0);
      int64_t ks = k_stride, vs = v_stride;
      if (!k_in_place) {
        ConvertRows(a.k, k, k_stride, run, dim, dim_pad, kc.get());
        k = kc.get(), ks = dim_pad;
      }
      if (!v_in_place) {
        ConvertRows(a.v, v, v_stride, run, sh.dim_v, sh.dv_pad, vc.get());
        v = vc.get(), vs = sh.dv_pad;
      }
      pairs += DecodeBlock(
          a, sh, q.get(), dim_pad, k, ks, k_in_place, v, vs, v_in_place, run, s.get(), m, l,
          alpha.get(), o,
          [&](int64_t r) -> const uint8_t* {
            return at.allow < 0 ? nullptr : allow_pool + at.allow + r * at.ld + (k0 - at.lo);
          },
          [&](int64_t r) {
            return a.causal ? static_cast<int64_t>(limit[r]) + 1 - k0 : kDecodeBlock;
          },
          ahead);
      advance(run);
      continue;
    }
    // Gathered: runs of the following spans into kc / vc, up to kDecodeBlock keys.
    int64_t keys = 0;
    while (keys < kDecodeBlock && si < span_count && !(a.causal && pos > last_limit)) {
      const KeySpan& piece = spans[si];
      const int64_t take = std::min(kDecodeBlock - keys, piece.hi - pos);
      ConvertRows(a.k, RowPointer(a.k, b, g, pos), k_stride, take, dim, dim_pad,
                  kc.get() + keys * dim_pad);
      ConvertRows(a.v, RowPointer(a.v, b, g, pos), v_stride, take, sh.dim_v, sh.dv_pad,
                  vc.get() + keys * sh.dv_pad);
      for (int64_t r = 0; r < rows; ++r) {
        uint8_t* dst = gathered_allow.data() + r * kDecodeBlock + keys;
        if (piece.allow < 0)
          std::fill(dst, dst + take, uint8_t{1});
        else
          std::copy_n(allow_pool + piece.allow + r * piece.ld + (pos - piece.lo), take, dst);
        if (a.causal)  // key pos + t is hidden from row r past its limit
          for (int64_t t = std::max<int64_t>(0, static_cast<int64_t>(limit[r]) + 1 - pos); t < take;
               ++t)
            dst[t] = 0;
      }
      keys += take;
      advance(take);
    }
    pairs += DecodeBlock(
        a, sh, q.get(), dim_pad, kc.get(), dim_pad, false, vc.get(), sh.dv_pad, false, keys,
        s.get(), m, l, alpha.get(), o,
        [&](int64_t r) -> const uint8_t* { return gathered_allow.data() + r * kDecodeBlock; },
        [](int64_t) { return kDecodeBlock; }, RowsAhead());
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
  // Each slice's keys: all of them, or the union of its group's kv-block lists as ascending
  // spans. A block FULL for every head of the group joins the FULL span before it; any other
  // block gets the group's allowed pairs [rows][block keys] in the slice's pool (rows of a head
  // whose entry is FULL allow all keys, of a head that does not list it none) and becomes the
  // runs of keys that some row allows, so that keys no row sees are never read. The pool holds
  // at most rows x nk bytes.
  const int64_t slices = sh.batch * sh.heads_kv;
  std::vector<std::vector<KeySpan>> keys_of(slices);
  std::vector<std::vector<uint8_t>> allow_pool(slices);
  int64_t most = 0;  // keys of the largest slice
#pragma omp parallel for schedule(dynamic, 1) num_threads(threads) reduction(max : most)
  for (int64_t slice = 0; slice < slices; ++slice) {
    std::vector<KeySpan>& spans = keys_of[slice];
    std::vector<int64_t> next(sh.group), end(sh.group);
    std::vector<BlockKind> kinds(sh.group);
    if (!mask) {
      spans.push_back({0, sh.nk});
    } else {
      const int64_t b = slice / sh.heads_kv, h0 = slice % sh.heads_kv * sh.group;
      for (int64_t hh = 0; hh < sh.group; ++hh) {
        const int64_t list = mask->list(b, h0 + hh, 0);
        next[hh] = mask->row_start[list], end[hh] = mask->row_start[list + 1];
      }
      std::vector<uint8_t>& pool = allow_pool[slice];
      while (true) {
        int64_t block = std::numeric_limits<int64_t>::max();
        for (int64_t hh = 0; hh < sh.group; ++hh)
          if (next[hh] < end[hh]) block = std::min<int64_t>(block, mask->kv_index[next[hh]]);
        if (block == std::numeric_limits<int64_t>::max()) break;
        bool all_full = true;
        for (int64_t hh = 0; hh < sh.group; ++hh) {
          const bool listed = next[hh] < end[hh] && mask->kv_index[next[hh]] == block;
          kinds[hh] = listed ? mask->kind[next[hh]++] : BlockKind{};  // {}: not listed
          all_full &= kinds[hh] == BlockKind::kFull;
        }
        const int64_t lo = block * mask->kv_block;
        const int64_t hi = std::min(sh.nk, lo + mask->kv_block), len = hi - lo;
        if (all_full) {
          if (!spans.empty() && spans.back().allow < 0 && spans.back().hi == lo)
            spans.back().hi = hi;
          else
            spans.push_back({lo, hi});
          continue;
        }
        const int64_t at = static_cast<int64_t>(pool.size());
        pool.resize(at + sh.rows * len, 0);
        uint8_t* allow = pool.data() + at;
        for (int64_t hh = 0; hh < sh.group; ++hh) {
          uint8_t* head_rows = allow + hh * sh.nq * len;
          if (kinds[hh] == BlockKind::kFull)
            std::fill(head_rows, head_rows + sh.nq * len, uint8_t{1});
          else if (kinds[hh] == BlockKind::kPartial)
            mask->predicate->fill(b, h0 + hh, 0, sh.nq, lo, len, head_rows, len);
        }
        for (int64_t j = 0; j < len;) {  // the runs of keys some row allows
          auto seen = [&](int64_t key) {
            for (int64_t r = 0; r < sh.rows; ++r)
              if (allow[r * len + key]) return true;
            return false;
          };
          if (!seen(j)) {
            ++j;
            continue;
          }
          const int64_t first = j;
          while (j < len && seen(j)) ++j;
          spans.push_back({lo + first, lo + j, at + first, len});
        }
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
        const int64_t allow = span.allow < 0 ? -1 : span.allow + (lo - span.lo);
        item_spans[slice * sh.splits + split].push_back({lo, hi, allow, span.ld});
        seen += hi - lo;
        lo = hi;
      }
  }

  const float qscale = effective_scale(a) * static_cast<float>(M_LOG2E);
  const bool modified = has_score_modifiers(a);
  const int64_t items = slices * sh.splits;
  std::vector<float> part_o(items * sh.rows * sh.dv_pad), part_m(items * sh.m_pad),
      part_l(items * sh.m_pad);
  int64_t pairs = 0;
#pragma omp parallel for schedule(dynamic, 1) num_threads(threads) reduction(+ : pairs)
  for (int64_t it = 0; it < items; ++it) {
    const int64_t slice = it / sh.splits;
    pairs += DecodeChunk(a, sh, qscale, slice / sh.heads_kv, slice % sh.heads_kv,
                         item_spans[it].data(), static_cast<int64_t>(item_spans[it].size()),
                         allow_pool[slice].data(), part_o.data() + it * sh.rows * sh.dv_pad,
                         part_m.data() + it * sh.m_pad, part_l.data() + it * sh.m_pad);
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
      float inv = total > 0.0f ? 1.0f / total : 0.0f;
      if (modified) inv *= row_factors(a, b, h, i).gate;
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
  return args.q.shape[2] <= 16 && args.dropout == 0.0f && mask.q_blocks() == 1;
}

void attention_decode(const AttentionArgs& args, const BlockMask& block_mask) {
  validate_f32_query(args);
  check(decode_can_walk(args, block_mask), "block_mask",
        "the decode path walks masks of one query block (nq <= 16), without dropout");
  HWY_DYNAMIC_DISPATCH(cpu::RunDecode)(args, &block_mask);
}

}  // namespace attnkit
#endif  // HWY_ONCE
