// The fused online-softmax attention kernel, written once with Highway for every SIMD target.
//
// One work item is a tile of up to kMaxTileRows query rows (heads x tokens of one GQA group) that
// walks its list of key blocks. Layout, "lanes = query rows" (as in gemma.cpp):
//   Qt [D][M]   query tile transposed, pre-multiplied by scale*log2(e)   (M = rows padded)
//   St [Bc][M]  scores of one key block: St[j][r] = Qt[:, r] . K[j]; then P = exp2(St - m)
//   O  [M][Dv]  un-normalized output accumulator, rescaled by alpha = exp2(m_old - m_new)
// With rows in the lanes, the row max, the row sum and the rescale are vertical SIMD operations
// (no horizontal reductions), and K and V are read in their own row-major layout: f32 K is used in
// place and f16/bf16 K blocks are converted once per tile; V of any dtype is read in place and
// widened in registers. The next key block's rows are prefetched while one block is computed.
// When a head's K/V outgrow L2 (long dense and causal runs), several tiles of one head group
// walk their lists in lockstep, one chunk of key blocks at a time (TilePlan::group_start): each
// chunk comes from L3 or DRAM once for the group instead of once per tile.
// Plans with a token order (grid patterns) pass it as TilePlan::q_order: tiles read their query
// rows and write O and the LSE at the tokens' own rows, while K and V come in kernel order.
// Dropout (args.dropout > 0) multiplies P by the keep factors Zt [Bc][M] after the row sums are
// taken, so l and the LSE are those of the undropped softmax.
// Sparse PARTIAL blocks (at most 3/4 of their keys seen by any row of the tile, as when a
// planner picks 2-token units inside 16-key blocks, or a grid neighbourhood's edge crosses a key
// box) are not computed in place: their seen keys are gathered, K and V as f32 with the rows'
// allow bytes, into one packed block that is computed when full (or when the list ends), so a
// tile visit carries kv_block useful keys. (At most half: natten2d kernel 13 14% and halo2d 7%
// slower, window / streaming / dilated / hip unchanged.) A packed block whose keys every row
// sees (halo2d's clipped key boxes: one key set per query box) skips the bytes' transpose and
// masking.
#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "kernels/cpu/tile_kernel.cc"
#include "hwy/foreach_target.h"  // IWYU pragma: keep
// Must come after foreach_target.h.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>

#include "core/dropout.h"
#include "core/score_modifiers.h"
#include "hwy/aligned_allocator.h"
#include "hwy/highway.h"
#include "kernels/cpu/dropout-inl.h"
#include "kernels/cpu/tile_ops-inl.h"
#include "kernels/cpu/tile_plan.h"

HWY_BEFORE_NAMESPACE();
namespace attnkit::cpu {
namespace HWY_NAMESPACE {
namespace hn = hwy::HWY_NAMESPACE;

constexpr int64_t kMinPackedKeys = 128;

// One tile's state while it walks its key blocks: Q^T, the O accumulator and the online-softmax
// row statistics (rows padded to m_pad).
struct TileState {
  hwy::AlignedFreeUniquePtr<float[]> qt, o, m, l, alpha, limit;
  hwy::AlignedFreeUniquePtr<uint32_t[]> row_keys;  // dropout's per-row keys
  float min_limit = 0.0f, max_limit = 0.0f;        // causal limits of the tile's rows
};

// Entry e of an item's key-block list: block index and whether it is PARTIAL.
struct ListView {
  const int32_t* index = nullptr;
  const BlockKind* kind = nullptr;
  int64_t count = 0;
  int32_t block(int64_t e) const { return index ? index[e] : static_cast<int32_t>(e); }
  bool partial(int64_t e) const { return kind && kind[e] == BlockKind::kPartial; }
};

// Per-thread buffers, sized once for the largest tile: one TileState per tile of a group, and
// the buffers of one key block, which the tiles of a group take in turn.
struct Scratch {
  int64_t dv_pad = 0;
  std::vector<TileState> tiles;
  hwy::AlignedFreeUniquePtr<float[]> st, k, v, zt;
  int64_t pairs = 0;             // attended pairs, when the caller asks for them
  std::vector<uint8_t> allow;    // [heads][tokens][keys] from the predicate
  std::vector<uint8_t> allow_t;  // one head's bytes transposed: [keys][tokens]
  // The packed block of gathered keys: K [kv_block][dim], V [kv_block][dv_pad] as f32 and the
  // tile rows' allow bytes [kv_block][m_pad]; `gathered` keys so far.
  hwy::AlignedFreeUniquePtr<float[]> gk, gv;
  std::vector<uint8_t> gather_allow;
  std::vector<int32_t> used;  // keys of one block that some row sees
  int64_t gathered = 0, packed_capacity = 0;
  bool gathered_masked = false;  // some packed key is hidden from some row: apply the bytes

  explicit Scratch(const TilePlan& plan) : tiles(plan.group_tiles) {
    const DF df;
    const int64_t n = hn::Lanes(df), chunk = kCols * n;
    const AttentionArgs& a = *plan.args;
    const int64_t dim = a.q.shape[3], dim_v = a.v.shape[3], kvb = plan.kv_block;
    const int64_t m_pad = (kMaxTileRows + chunk - 1) / chunk * chunk;
    dv_pad = (dim_v + n - 1) / n * n;
    for (TileState& t : tiles) {
      t.qt = hwy::AllocateAligned<float>(dim * m_pad);
      t.o = hwy::AllocateAligned<float>(m_pad * dv_pad);
      t.m = hwy::AllocateAligned<float>(m_pad);
      t.l = hwy::AllocateAligned<float>(m_pad);
      t.alpha = hwy::AllocateAligned<float>(m_pad);
      t.limit = hwy::AllocateAligned<float>(m_pad);
      if (a.dropout > 0.0f) t.row_keys = hwy::AllocateAligned<uint32_t>(m_pad);
    }
    // A packed block holds at least kMinPackedKeys: with 16-key blocks (grid key boxes) the
    // per-block softmax and O rescale would be paid every 16 keys (halo2d: 3% faster at 128).
    packed_capacity = std::max<int64_t>(kvb, kMinPackedKeys);
    st = hwy::AllocateAligned<float>(packed_capacity * m_pad);
    k = hwy::AllocateAligned<float>(kvb * dim);
    v = hwy::AllocateAligned<float>(kvb * dv_pad);
    if (a.dropout > 0.0f) zt = hwy::AllocateAligned<float>(kvb * m_pad);
    allow.resize(kMaxTileRows * kvb);
    allow_t.resize(kMaxTileRows * kvb);
    if (plan.mask && a.dropout == 0.0f) {  // dropout's keep factors follow key positions
      gk = hwy::AllocateAligned<float>(packed_capacity * dim);
      gv = hwy::AllocateAligned<float>(packed_capacity * dv_pad);
      gather_allow.resize(packed_capacity * m_pad);
      used.resize(kvb);
    }
  }
};

ListView KeyList(const TilePlan& plan, const WorkItem& item) {
  if (item.list < 0) return {nullptr, nullptr, (plan.args->k.shape[2] + plan.kv_block - 1) /
                                                   plan.kv_block};
  const int64_t begin = plan.mask->row_start[item.list];
  return {plan.mask->kv_index.data() + begin, plan.mask->kind.data() + begin,
          plan.mask->row_start[item.list + 1] - begin};
}

// Sets the tile up: Q^T, scaled, padding rows zero; causal limits per row (bottom-right
// aligned); m = -inf, l = 0, O = 0. Score modifiers: each row's temperature factor folds into
// its Q scale, its gate into the normalisation. Returns false, with the output written, when
// every row is gated off and no LSE is asked for: the tile has nothing to visit.
bool BeginTile(const TilePlan& plan, const WorkItem& item, int64_t dv_pad, TileState& t) {
  const AttentionArgs& a = *plan.args;
  const DF df;
  const int64_t chunk = kCols * hn::Lanes(df);
  const int64_t nq = plan.nq, nk = a.k.shape[2], dim = a.q.shape[3], dim_v = a.v.shape[3];
  const int64_t rows = item.nh * item.nt, m_pad = (rows + chunk - 1) / chunk * chunk;
  if (gated_off(a, item.b, item.h0, item.nh, item.q0, item.nt)) {
    for (int64_t r = 0; r < rows; ++r) {
      const int64_t row = plan.q_row(item.q0 + r % item.nt);
      if (row < 0) continue;
      float* out = a.out.row<float>(item.b, item.h0 + r / item.nt, row);
      std::fill(out, out + dim_v, 0.0f);
    }
    return false;
  }
  const bool modified = has_score_modifiers(a);
  t.min_limit = std::numeric_limits<float>::infinity(), t.max_limit = -t.min_limit;
  for (int64_t r = 0; r < m_pad; ++r) {
    if (r < rows) {
      const int64_t h = item.h0 + r / item.nt, i = item.q0 + r % item.nt, row = plan.q_row(i);
      float q[1024];  // validate() caps the head dim at 1024
      if (row >= 0) {
        ConvertRows(a.q, RowPointer(a.q, item.b, h, row), 0, 1, dim, dim, q);
      } else {
        std::fill(q, q + dim, 0.0f);  // a padding slot
      }
      const float qscale = modified ? plan.qscale * row_factors(a, item.b, h, i).tau : plan.qscale;
      for (int64_t d = 0; d < dim; ++d) t.qt[d * m_pad + r] = q[d] * qscale;
      t.limit[r] = static_cast<float>(i + (nk - nq));
      if (a.dropout > 0.0f) t.row_keys[r] = dropout_row_key(a.dropout_seed, item.b, h, i);
      t.min_limit = std::min(t.min_limit, t.limit[r]);
      t.max_limit = std::max(t.max_limit, t.limit[r]);
    } else {
      for (int64_t d = 0; d < dim; ++d) t.qt[d * m_pad + r] = 0.0f;
      t.limit[r] = t.limit[0];
      if (a.dropout > 0.0f) t.row_keys[r] = 0;
    }
    t.m[r] = -std::numeric_limits<float>::infinity();
    t.l[r] = 0.0f;
  }
  std::fill(t.o.get(), t.o.get() + m_pad * dv_pad, 0.0f);
  return true;
}

// Computes the packed block of gathered keys into the tile's state and empties it.
void FlushGathered(const TilePlan& plan, const WorkItem& item, TileState& t, Scratch& s) {
  if (s.gathered == 0) return;
  const AttentionArgs& a = *plan.args;
  const int64_t chunk = kCols * hn::Lanes(DF());
  const int64_t dim = a.q.shape[3], rows = item.nh * item.nt;
  const int64_t m_pad = (rows + chunk - 1) / chunk * chunk, n = s.gathered;
  Scores(t.qt.get(), m_pad, s.gk.get(), dim, n, dim, s.st.get());
  if (s.gathered_masked)
    MaskFromBytes(s.st.get(), m_pad, n, 0, rows, s.gather_allow.data(), m_pad);
  if (a.attended_pairs) s.pairs += CountFinite(s.st.get(), m_pad, n, rows);
  OnlineSoftmax(s.st.get(), m_pad, n, t.m.get(), t.l.get(), t.alpha.get());
  AccumulatePv(s.st.get(), {m_pad, 1}, rows, s.gv.get(), s.dv_pad, n, t.alpha.get(), t.o.get(),
               s.dv_pad);
  s.gathered = 0;
  s.gathered_masked = false;
}

// any[j] = OR and all[j] = AND over r < rows of in[r * cols + j] (bytes 0 or 1), eight bytes at
// a time.
void OrAndRows(const uint8_t* HWY_RESTRICT in, int64_t rows, int64_t cols,
               uint8_t* HWY_RESTRICT any, uint8_t* HWY_RESTRICT all) {
  int64_t j = 0;
  for (; j + 8 <= cols; j += 8) {
    uint64_t acc_or = 0, acc_and = ~uint64_t{0};
    for (int64_t r = 0; r < rows; ++r) {
      uint64_t word;
      std::memcpy(&word, in + r * cols + j, 8);
      acc_or |= word, acc_and &= word;
    }
    std::memcpy(any + j, &acc_or, 8);
    std::memcpy(all + j, &acc_and, 8);
  }
  for (; j < cols; ++j) {
    uint8_t acc_or = 0, acc_and = 1;
    for (int64_t r = 0; r < rows; ++r) acc_or |= in[r * cols + j], acc_and &= in[r * cols + j];
    any[j] = acc_or, all[j] = acc_and;
  }
}

// A PARTIAL block whose predicate bytes are in s.allow ([head][token][key], one head's bytes
// for all when `shared_bytes`): when at most 3/4 of its keys are seen by some row (causality
// included where the block crosses a row's limit), moves those keys into the packed block and
// returns true; else returns false and leaves the block to the in-place path.
bool GatherSparse(const TilePlan& plan, const WorkItem& item, int64_t k0, int64_t keys,
                  bool shared_bytes, bool causal_mask, TileState& t, Scratch& s) {
  const AttentionArgs& a = *plan.args;
  const int64_t chunk = kCols * hn::Lanes(DF());
  const int64_t dim = a.q.shape[3], dim_v = a.v.shape[3], rows = item.nh * item.nt;
  const int64_t m_pad = (rows + chunk - 1) / chunk * chunk;
  const int64_t g = item.h0 / (a.q.shape[1] / a.k.shape[1]);
  const int64_t byte_rows = shared_bytes ? item.nt : rows;
  // Keys that some row's bytes allow (an OR down the rows) and that every row's do (an AND).
  uint8_t* any = s.allow_t.data();  // scratch until the transpose below
  uint8_t* all = any + keys;
  OrAndRows(s.allow.data(), byte_rows, keys, any, all);
  int64_t count = 0;
  bool uniform = true;  // every row sees every used key: no bytes to apply
  for (int64_t j = 0; j < keys; ++j) {
    bool seen = any[j] != 0;
    if (seen && causal_mask) {  // some row that allows it must also reach it
      seen = false;
      for (int64_t r = 0; r < rows && !seen; ++r)
        seen = s.allow[(r % byte_rows) * keys + j] && static_cast<float>(k0 + j) <= t.limit[r];
    }
    if (!seen) continue;
    s.used[count++] = static_cast<int32_t>(j);
    uniform = uniform && all[j] && !causal_mask;
  }
  if (4 * count > 3 * keys) return false;
  // The rows' bytes per key, allow_t [keys][rows], where some row is hidden from some key.
  if (!uniform)
    for (int64_t hh = 0; hh < item.nh; ++hh)
      TransposeBytes(s.allow.data() + (shared_bytes ? 0 : hh * item.nt * keys), item.nt, keys,
                     keys, s.allow_t.data() + hh * item.nt, rows);
  for (int64_t c = 0; c < count; ++c) {
    const int64_t j = s.used[c], n = s.gathered;
    ConvertRows(a.k, RowPointer(a.k, item.b, g, k0 + j), a.k.stride[2], 1, dim, dim,
                s.gk.get() + n * dim);
    ConvertRows(a.v, RowPointer(a.v, item.b, g, k0 + j), a.v.stride[2], 1, dim_v, s.dv_pad,
                s.gv.get() + n * s.dv_pad);
    uint8_t* bits = s.gather_allow.data() + n * m_pad;
    if (uniform)  // kept for a later key of the packed block that needs the bytes applied
      std::memset(bits, 1, static_cast<size_t>(rows));
    else
      std::copy(s.allow_t.data() + j * rows, s.allow_t.data() + (j + 1) * rows, bits);
    if (causal_mask)
      for (int64_t r = 0; r < rows; ++r) bits[r] &= static_cast<float>(k0 + j) <= t.limit[r];
    std::fill(bits + rows, bits + m_pad, uint8_t{0});
    // Per key: a flush in this loop starts a new packed block.
    s.gathered_masked = s.gathered_masked || !uniform;
    if (++s.gathered == s.packed_capacity) FlushGathered(plan, item, t, s);
  }
  return true;
}

// Folds entry e of the tile's key list into its state. Returns false when the list is done
// (past the last key, or causally hidden from every row: blocks are sorted).
bool VisitBlock(const TilePlan& plan, const WorkItem& item, const ListView& list, int64_t e,
                TileState& t, Scratch& s) {
  const AttentionArgs& a = *plan.args;
  const DF df;
  const int64_t chunk = kCols * hn::Lanes(df);
  const int64_t nk = a.k.shape[2], dim = a.q.shape[3], dim_v = a.v.shape[3];
  const int64_t g = item.h0 / (a.q.shape[1] / a.k.shape[1]), b = item.b;
  const int64_t rows = item.nh * item.nt, m_pad = (rows + chunk - 1) / chunk * chunk;
  const int64_t kvb = plan.kv_block, dv_pad = s.dv_pad;
  const int64_t k0 = static_cast<int64_t>(list.block(e)) * kvb;
  if (k0 >= nk) return false;
  const int64_t keys = std::min(kvb, nk - k0);
  bool causal_mask = false;
  if (a.causal) {
    if (static_cast<float>(k0) > t.max_limit) return false;
    causal_mask = static_cast<float>(k0 + keys - 1) > t.min_limit;
  }
  // K and V stream from L3 or DRAM at long lengths: the next block's rows are asked for while
  // this block's scores are computed.
  RowsAhead ahead;
  if (e + 1 < list.count) {
    const int64_t next = static_cast<int64_t>(list.block(e + 1)) * kvb;
    if (next < nk)
      ahead = RowsAhead(a.k, RowPointer(a.k, b, g, next), a.v, RowPointer(a.v, b, g, next),
                        std::min(kvb, nk - next));
  }
  // Shared lists need not share a rule: the predicate is asked per head unless it says that it
  // is the same for every head.
  const bool partial = list.partial(e);
  const bool once = partial && plan.mask->predicate->same_for_all_heads();
  if (partial) {
    for (int64_t hh = 0; hh < (once ? 1 : item.nh); ++hh)
      plan.mask->predicate->fill(b, item.h0 + hh, item.q0, item.nt, k0, keys,
                                 s.allow.data() + hh * item.nt * keys, keys);
    if (s.gk && GatherSparse(plan, item, k0, keys, once, causal_mask, t, s)) return true;
  }
  int64_t k_stride = 0;
  const float* k = RowsAsF32(a.k, RowPointer(a.k, b, g, k0), a.k.stride[2], keys, dim,
                             a.k.dtype == DType::kF32, dim, s.k.get(), &k_stride);
  Scores(t.qt.get(), m_pad, k, k_stride, keys, dim, s.st.get(), ahead);
  if (causal_mask) MaskCausal(s.st.get(), m_pad, keys, k0, t.limit.get());
  if (partial) {
    // The predicate's [query][key] bytes, transposed to the lanes-are-rows layout and applied
    // with vector selects.
    for (int64_t hh = 0; hh < item.nh; ++hh) {
      if (hh == 0 || !once)
        TransposeBytes(s.allow.data() + hh * item.nt * keys, item.nt, keys, keys,
                       s.allow_t.data(), item.nt);
      MaskFromBytes(s.st.get(), m_pad, keys, hh * item.nt, item.nt, s.allow_t.data(), item.nt);
    }
  }
  if (a.attended_pairs)
    s.pairs += causal_mask || partial ? CountFinite(s.st.get(), m_pad, keys, rows) : rows * keys;
  OnlineSoftmax(s.st.get(), m_pad, keys, t.m.get(), t.l.get(), t.alpha.get());
  if (a.dropout > 0.0f) {
    DropoutFactors(s.zt.get(), m_pad, keys, k0, t.row_keys.get(), dropout_threshold(a.dropout),
                   1.0f / (1.0f - a.dropout));
    MultiplyInPlace(s.st.get(), s.zt.get(), keys * m_pad);
  }
  if (dim_v % hn::Lanes(df) == 0) {  // V read in place, widened in registers
    AccumulatePvAny(a.v.dtype, s.st.get(), {m_pad, 1}, rows, RowPointer(a.v, b, g, k0),
                    a.v.stride[2], keys, t.alpha.get(), t.o.get(), dv_pad);
  } else {
    ConvertRows(a.v, RowPointer(a.v, b, g, k0), a.v.stride[2], keys, dim_v, dv_pad, s.v.get());
    AccumulatePv(s.st.get(), {m_pad, 1}, rows, s.v.get(), dv_pad, keys, t.alpha.get(), t.o.get(),
                 dv_pad);
  }
  return true;
}

// Normalizes once; rows that saw no key get O = 0, LSE = -inf.
void EndTile(const TilePlan& plan, const WorkItem& item, int64_t dv_pad, const TileState& t) {
  const AttentionArgs& a = *plan.args;
  const bool modified = has_score_modifiers(a);
  for (int64_t r = 0; r < item.nh * item.nt; ++r) {
    const int64_t h = item.h0 + r / item.nt, i = item.q0 + r % item.nt, row = plan.q_row(i);
    if (row < 0) continue;  // a padding slot
    float* out = a.out.row<float>(item.b, h, row);
    const float l = t.l[r];
    float inv = l > 0.0f ? 1.0f / l : 0.0f;
    if (modified) inv *= row_factors(a, item.b, h, i).gate;
    for (int64_t d = 0; d < a.v.shape[3]; ++d) out[d] = t.o[r * dv_pad + d] * inv;
    if (!a.lse.empty()) {
      *a.lse.row<float>(item.b, h, row) = l > 0.0f
                                              ? (t.m[r] + std::log2(l)) * static_cast<float>(M_LN2)
                                              : -std::numeric_limits<float>::infinity();
    }
  }
}

// Runs the tiles items[first, first + count) (one group: same batch and heads, consecutive
// queries). One tile walks its whole list; several walk theirs chunk by chunk in lockstep, so
// that each chunk of K/V, read once from L3 or DRAM, serves every tile of the group from L2.
void ProcessGroup(const TilePlan& plan, int64_t first, int64_t count, Scratch& s) {
  ListView lists[kMaxGroupTiles];
  bool live[kMaxGroupTiles], active[kMaxGroupTiles];
  int64_t longest = 0;
  for (int64_t t = 0; t < count; ++t) {
    lists[t] = KeyList(plan, plan.items[first + t]);
    live[t] = active[t] = BeginTile(plan, plan.items[first + t], s.dv_pad, s.tiles[t]);
    longest = std::max(longest, lists[t].count);
  }
  const int64_t step = count == 1 ? longest : plan.group_chunk_blocks;
  for (int64_t e0 = 0; e0 < longest; e0 += step) {
    for (int64_t t = 0; t < count; ++t) {
      const WorkItem& item = plan.items[first + t];
      for (int64_t e = e0; active[t] && e < std::min(e0 + step, lists[t].count); ++e)
        active[t] = VisitBlock(plan, item, lists[t], e, s.tiles[t], s);
    }
  }
  for (int64_t t = 0; t < count; ++t)
    if (live[t]) {
      FlushGathered(plan, plan.items[first + t], s.tiles[t], s);  // masks: one tile per group
      EndTile(plan, plan.items[first + t], s.dv_pad, s.tiles[t]);
    }
}

void RunTilePlan(const TilePlan& plan) {
  const int64_t groups = static_cast<int64_t>(plan.group_start.size()) - 1;
#pragma omp parallel num_threads(plan.threads)
  {
    Scratch scratch(plan);
#pragma omp for schedule(dynamic, 1)
    for (int64_t it = 0; it < groups; ++it)
      ProcessGroup(plan, plan.group_start[it], plan.group_start[it + 1] - plan.group_start[it],
                   scratch);
    if (plan.args->attended_pairs) {
#pragma omp atomic
      *plan.args->attended_pairs += scratch.pairs;
    }
  }
}

const char* TargetName() { return hwy::TargetName(HWY_TARGET); }

}  // namespace HWY_NAMESPACE
}  // namespace attnkit::cpu
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
namespace attnkit::cpu {

HWY_EXPORT(RunTilePlan);
HWY_EXPORT(TargetName);

void run_tile_plan(const TilePlan& plan) { HWY_DYNAMIC_DISPATCH(RunTilePlan)(plan); }
const char* kernel_target_name() { return HWY_DYNAMIC_DISPATCH(TargetName)(); }

}  // namespace attnkit::cpu
#endif  // HWY_ONCE
