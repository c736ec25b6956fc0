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
// Grid patterns without causality give their rows' windows instead (TilePlan::windows): K and V
// stay in token order and a tile walks the union of its rows' windows, one run of keys along
// the grid's last axis at a time. Runs are batched in St up to its capacity, their K and V rows
// listed key by key so that the micro-kernels span runs, and scored only for the row vectors
// that see them; each row's window is applied with compares; attended pairs are the windows'
// volumes. No K / V copies, block lists or predicate bytes: natten2d kernel 13 on 128 x 128
// went from 4.0x to 2.7x its element density's share of dense time, halo2d from 2.2x to 1.8x
// (BENCHMARKS.md).
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
#include "hwy/cache_control.h"
#include "hwy/highway.h"
#include "kernels/cpu/dropout-inl.h"
#include "kernels/cpu/tile_ops-inl.h"
#include "kernels/cpu/tile_plan.h"

HWY_BEFORE_NAMESPACE();
namespace attnkit::cpu {
namespace HWY_NAMESPACE {
namespace hn = hwy::HWY_NAMESPACE;

constexpr int64_t kMinPackedKeys = 128;
// Grid windows: keys scored per call while the next ones' rows are asked for (a multiple of
// kRows on every target).
constexpr int64_t kSegmentKeys = 48;
// Grid windows: the next tile's Q rows asked for per segment (64 rows over four segments).
constexpr int64_t kQRowsPerSegment = 16;
// Grid windows: a bound beyond every coordinate (windows of padding rows, empty run bounds).
constexpr float kWideOpen = 1e30f;

// Grid windows: which of K and V the walk reads in place (K in f32, V rows of whole vectors, in
// their own dtype); the other is read from the f32 copies AddRun makes (Scratch gk, gv).
struct WalkInPlace {
  bool k, v;
};
WalkInPlace WalkReadsInPlace(const AttentionArgs& a) {
  return {a.k.dtype == DType::kF32, a.v.shape[3] % static_cast<int64_t>(hn::Lanes(DF())) == 0};
}

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
  int64_t gathered = 0, packed_capacity = 0, st_floats = 0;
  bool gathered_masked = false;  // some packed key is hidden from some row: apply the bytes
  // Grid windows (TilePlan::windows): the rows' bounds per axis [3][m_pad], the last axis's
  // bounds of one run of keys [2][m_pad] (empty where an outer axis hides the run), the runs
  // whose scores are in St, and their K and V rows.
  hwy::AlignedFreeUniquePtr<float[]> win_lo, win_hi, run_bounds, ones;
  hwy::AlignedFreeUniquePtr<float[]> kept_bounds;  // run i's run_bounds at i * 2 * m_pad
  struct KeyRun {
    int64_t keys, at, x0;  // keys (step apart), first row in St, first key's last coordinate
    int64_t rows_begin, rows_end;  // the row vectors that see it
    bool uniform;                  // each of those rows sees every key of the run
  };
  std::vector<KeyRun> runs;
  std::vector<const void*> k_rows, v_rows;  // the batch's K and V rows, key by key
  // The next tile's Q rows [q_asked, its rows) are still to be asked for (PrefetchTileRows).
  const WorkItem* next_tile = nullptr;
  int64_t q_asked = 0;
  std::vector<int64_t> key_ranges;  // one row vector's runs in St [begin, end), adjacent merged

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
    st_floats = packed_capacity * m_pad;
    st = hwy::AllocateAligned<float>(st_floats);
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
    if (plan.windows) {  // a batch of runs fills St: up to st_floats / chunk keys
      const int64_t keys = st_floats / chunk;
      win_lo = hwy::AllocateAligned<float>(3 * m_pad);
      win_hi = hwy::AllocateAligned<float>(3 * m_pad);
      run_bounds = hwy::AllocateAligned<float>(2 * m_pad);
      kept_bounds = hwy::AllocateAligned<float>(2 * st_floats);  // a run has a key at least
      ones = hwy::AllocateAligned<float>(m_pad);
      std::fill(ones.get(), ones.get() + m_pad, 1.0f);
      k_rows.resize(keys);
      v_rows.resize(keys);
      key_ranges.resize(2 * keys);
      const WalkInPlace in_place = WalkReadsInPlace(a);
      if (!in_place.k) gk = hwy::AllocateAligned<float>(keys * dim);
      if (!in_place.v) gv = hwy::AllocateAligned<float>(keys * dv_pad);
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

// Q^T [dim][m_pad] of a tile, each row scaled (its temperature factor folded in), padding
// rows zero: f32 rows of whole 16-float vectors transposed 16 x 16 in registers (AVX-512), else
// element by element.
void FillQt(const TilePlan& plan, const WorkItem& item, int64_t m_pad, float* qt) {
  const AttentionArgs& a = *plan.args;
  const int64_t rows = item.nh * item.nt, dim = a.q.shape[3];
  const bool modified = has_score_modifiers(a);
  const auto row_of = [&](int64_t r) { return r < rows ? plan.q_row(item.q0 + r % item.nt) : -1; };
  const auto scale_of = [&](int64_t r) {
    if (!modified || r >= rows) return plan.qscale;
    return plan.qscale * row_factors(a, item.b, item.h0 + r / item.nt, item.q0 + r % item.nt).tau;
  };
#ifdef ATTNKIT_HAVE_TRANSPOSE16
  if (a.q.dtype == DType::kF32 && dim % 16 == 0) {
    alignas(64) static const float kZeroRow[1024] = {};  // validate() caps the head dim at 1024
    const float* sources[kMaxTileRows + 32];
    float scales[kMaxTileRows + 32];
    for (int64_t r = 0; r < m_pad; ++r) {
      const int64_t row = row_of(r);
      sources[r] = row >= 0 ? a.q.row<float>(item.b, item.h0 + r / item.nt, row) : kZeroRow;
      scales[r] = scale_of(r);
    }
    for (int64_t r0 = 0; r0 < m_pad; r0 += 16)
      TransposeScaled16(sources + r0, scales + r0, dim, qt + r0, m_pad);
    return;
  }
#endif
  for (int64_t r = 0; r < m_pad; ++r) {
    const int64_t row = row_of(r);
    float q[1024];  // validate() caps the head dim at 1024
    if (row >= 0) {
      ConvertRows(a.q, RowPointer(a.q, item.b, item.h0 + r / item.nt, row), 0, 1, dim, dim, q);
    } else {
      std::fill(q, q + dim, 0.0f);  // a padding slot or row
    }
    const float qscale = scale_of(r);
    for (int64_t d = 0; d < dim; ++d) qt[d * m_pad + r] = q[d] * qscale;
  }
}

// Sets the tile up: Q^T, scaled, padding rows zero; causal limits per row (bottom-right
// aligned); m = -inf, l = 0, O = 0. Score modifiers: each row's temperature factor folds into
// its Q scale, its gate into the normalisation. Returns false, with the output written, when
// every row is gated off and no LSE is asked for: the tile has nothing to visit.
bool BeginTile(const TilePlan& plan, const WorkItem& item, int64_t dv_pad, TileState& t) {
  const AttentionArgs& a = *plan.args;
  const DF df;
  const int64_t chunk = kCols * hn::Lanes(df);
  const int64_t nq = plan.nq, nk = a.k.shape[2], dim_v = a.v.shape[3];
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
  FillQt(plan, item, m_pad, t.qt.get());
  t.min_limit = std::numeric_limits<float>::infinity(), t.max_limit = -t.min_limit;
  for (int64_t r = 0; r < m_pad; ++r) {
    if (r < rows) {
      const int64_t h = item.h0 + r / item.nt, i = item.q0 + r % item.nt;
      t.limit[r] = static_cast<float>(i + (nk - nq));
      if (a.dropout > 0.0f) t.row_keys[r] = dropout_row_key(a.dropout_seed, item.b, h, i);
      t.min_limit = std::min(t.min_limit, t.limit[r]);
      t.max_limit = std::max(t.max_limit, t.limit[r]);
    } else {
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

// Grid windows, the run c[0 .. last) x (last axis): each row's window on the last axis where
// its outer axes hold c, else empty, into s.run_bounds [2][m_pad]. The rows that see c (padding
// rows never do) span the whole vectors [rows_begin, rows_end) (empty: nobody sees c);
// `uniform` when each of those vectors' real rows all see the last-axis interval [x0, x1].
struct RunCover {
  int64_t rows_begin, rows_end;
  bool uniform;
};
RunCover RunBounds(const GridWindows& w, const int64_t* c, float x0, float x1, int64_t m_pad,
                   Scratch& s) {
  const DF df;
  const int64_t n = hn::Lanes(df);
  const int last = w.ndim - 1;
  const VF big = hn::Set(df, kWideOpen);
  RunCover cover{m_pad, 0, true};
  bool whole[kMaxTileRows];  // per vector: each real row sees all of [x0, x1]
  for (int64_t r0 = 0; r0 < m_pad; r0 += n) {
    const auto real = hn::Lt(hn::Load(df, s.win_lo.get() + r0), big);  // padding rows: empty
    auto inside = real;
    for (int ax = 0; ax < last; ++ax) {
      const VF x = hn::Set(df, static_cast<float>(c[ax]));
      inside = hn::And(inside, hn::And(hn::Ge(x, hn::Load(df, s.win_lo.get() + ax * m_pad + r0)),
                                       hn::Le(x, hn::Load(df, s.win_hi.get() + ax * m_pad + r0))));
    }
    const VF lo = hn::IfThenElse(inside, hn::Load(df, s.win_lo.get() + last * m_pad + r0), big);
    const VF hi =
        hn::IfThenElse(inside, hn::Load(df, s.win_hi.get() + last * m_pad + r0), hn::Neg(big));
    hn::Store(lo, df, s.run_bounds.get() + r0);
    hn::Store(hi, df, s.run_bounds.get() + m_pad + r0);
    const auto sees_all = hn::And(hn::Le(lo, hn::Set(df, x0)), hn::Ge(hi, hn::Set(df, x1)));
    whole[r0 / n] = hn::AllTrue(df, hn::Or(sees_all, hn::Not(real)));
    if (hn::AllFalse(df, inside)) continue;
    cover.rows_begin = std::min(cover.rows_begin, r0), cover.rows_end = r0 + n;
  }
  // (Between the first and the last vector that see c, stacked heads may have some that don't.)
  for (int64_t r0 = cover.rows_begin; r0 < cover.rows_end; r0 += n)
    cover.uniform = cover.uniform && whole[r0 / n];
  return cover;
}

// Asks for up to `rows` more of the next tile's Q rows (s.next_tile): a window walk's tile is
// short (a few hundred keys), so the misses on its 64 scattered rows, read at its start, would
// otherwise stall it (4% of natten2d kernel 13). Asked for a few at a time, as the current tile
// scores its keys: all at once, they filled the miss queues (2% of halo2d). (O rows: EndTile.)
void PrefetchTileRows(const TilePlan& plan, Scratch& s, int64_t rows) {
  if (s.next_tile == nullptr) return;
  const AttentionArgs& a = *plan.args;
  const WorkItem& item = *s.next_tile;
  const int64_t q_bytes = a.q.shape[3] * dtype_size(a.q.dtype);
  for (const int64_t end = std::min(item.nh * item.nt, s.q_asked + rows); s.q_asked < end;
       ++s.q_asked) {
    const int64_t r = s.q_asked;
    const int64_t h = item.h0 + r / item.nt, row = plan.q_row(item.q0 + r % item.nt);
    if (row >= 0) PrefetchBytes(RowPointer(a.q, item.b, h, row), q_bytes);  // else padding
  }
}

// O *= alpha, row by row: the batch's rescale, before its runs' PV add to O unscaled.
void ScaleRows(float* o, int64_t rows, int64_t dv_pad, const float* alpha) {
  const DF df;
  const int64_t n = hn::Lanes(df);
  for (int64_t r = 0; r < rows; ++r) {
    const VF a = hn::Set(df, alpha[r]);
    for (int64_t c = 0; c < dv_pad; c += n)
      hn::Store(hn::Mul(hn::Load(df, o + r * dv_pad + c), a), df, o + r * dv_pad + c);
  }
}

// Grid windows: the batch of key runs gathered so far, scored over their listed K rows for the
// row vectors that see them (consecutive runs that share those rows together, kSegmentKeys at a
// time), masked with the rows' windows (-inf for the other rows), softmaxed and folded into O.
void FlushRuns(const TilePlan& plan, const WorkItem& item, TileState& t, Scratch& s) {
  if (s.runs.empty()) return;
  const AttentionArgs& a = *plan.args;
  const DF df;
  const int64_t n = hn::Lanes(df), chunk = kCols * n;
  const int64_t rows = item.nh * item.nt, m_pad = (rows + chunk - 1) / chunk * chunk;
  const int64_t step = plan.windows->step[plan.windows->ndim - 1];
  float* st = s.st.get();
  const WalkInPlace in_place = WalkReadsInPlace(a);  // the copies need not be asked for
  const int64_t k_bytes = in_place.k ? a.q.shape[3] * 4 : 0;
  const int64_t v_bytes = in_place.v ? a.v.shape[3] * dtype_size(a.v.dtype) : 0;
  const auto same_rows = [](const Scratch::KeyRun& x, const Scratch::KeyRun& y) {
    return x.rows_begin == y.rows_begin && x.rows_end == y.rows_end;
  };
  // Scored segment by segment: while one is, its own V rows (read after the softmax) and the K
  // rows of as many keys after it are asked for. The batch's first segment: AddRun.
  const int64_t used = s.runs.back().at + s.runs.back().keys;
  for (size_t i = 0, e = 0; i < s.runs.size(); i = e) {
    for (e = i + 1; e < s.runs.size() && same_rows(s.runs[e], s.runs[i]);) ++e;
    const Scratch::KeyRun& run = s.runs[i];
    const int64_t end = s.runs[e - 1].at + s.runs[e - 1].keys;
    for (int64_t j0 = run.at; j0 < end; j0 += kSegmentKeys) {
      const int64_t j1 = std::min(j0 + kSegmentKeys, end);
      const RowsAhead ahead(s.k_rows.data() + j1, std::min(j1 - j0, used - j1), k_bytes,
                            s.v_rows.data() + j0, j1 - j0, v_bytes);
      Scores(t.qt.get(), m_pad, ListedRows<float>{s.k_rows.data() + j0}, j1 - j0, a.q.shape[3],
             st + j0 * m_pad, ahead, run.rows_begin, run.rows_end);
      PrefetchTileRows(plan, s, kQRowsPerSegment);
    }
  }
  const VF neg_inf = hn::Set(df, -std::numeric_limits<float>::infinity());
  for (size_t i = 0; i < s.runs.size(); ++i) {
    const Scratch::KeyRun& run = s.runs[i];
    if (run.uniform) continue;  // every row that sees the run sees all of it (halo2d's boxes)
    const float* bounds = s.kept_bounds.get() + i * 2 * m_pad;  // AddRun's copy
    for (int64_t j = run.at; j < run.at + run.keys; ++j) {
      const VF x = hn::Set(df, static_cast<float>(run.x0 + (j - run.at) * step));
      for (int64_t r0 = run.rows_begin; r0 < run.rows_end; r0 += n) {
        const auto seen = hn::And(hn::Ge(x, hn::Load(df, bounds + r0)),
                                  hn::Le(x, hn::Load(df, bounds + m_pad + r0)));
        float* row = st + j * m_pad + r0;
        hn::Store(hn::IfThenElse(seen, hn::Load(df, row), neg_inf), df, row);
      }
    }
  }
  // Each row vector's softmax over the runs it sees only (St holds nothing for the others).
  for (int64_t r0 = 0; r0 < m_pad; r0 += n) {
    int64_t count = 0;
    for (const Scratch::KeyRun& run : s.runs) {
      if (r0 < run.rows_begin || r0 >= run.rows_end) continue;
      if (count > 0 && s.key_ranges[2 * count - 1] == run.at) {
        s.key_ranges[2 * count - 1] = run.at + run.keys;  // continues the last range
      } else {
        s.key_ranges[2 * count] = run.at, s.key_ranges[2 * count + 1] = run.at + run.keys, ++count;
      }
    }
    OnlineSoftmaxVector(st, m_pad, r0, s.key_ranges.data(), count, t.m.get(), t.l.get(),
                        t.alpha.get());
  }
  ScaleRows(t.o.get(), m_pad, s.dv_pad, t.alpha.get());
  const DType v_type = in_place.v ? a.v.dtype : DType::kF32;  // else padded copies
  for (size_t i = 0, e = 0; i < s.runs.size(); i = e) {
    for (e = i + 1; e < s.runs.size() && same_rows(s.runs[e], s.runs[i]);) ++e;
    const Scratch::KeyRun& run = s.runs[i];
    const int64_t r0 = run.rows_begin;
    AccumulatePvListed(v_type, st + run.at * m_pad + r0, {m_pad, 1}, run.rows_end - r0,
                       s.v_rows.data() + run.at, s.runs[e - 1].at + s.runs[e - 1].keys - run.at,
                       s.ones.get() + r0, t.o.get() + r0 * s.dv_pad, s.dv_pad);
  }
  s.runs.clear();
}

// Grid windows: adds `keys` keys of one run (tokens token, token + step, ...; last-axis
// coordinates x0, x0 + step, ...) to the batch: their K and V rows in place, or converted to
// f32 (K not f32, V rows not a whole number of vectors) into the packed block's buffers.
void AddRun(const TilePlan& plan, const WorkItem& item, const RunCover& cover, int64_t token,
            int64_t x0, int64_t keys, Scratch& s) {
  const AttentionArgs& a = *plan.args;
  const int64_t n = hn::Lanes(DF());
  const int64_t dim = a.q.shape[3], dim_v = a.v.shape[3];
  const int64_t g = item.h0 / (a.q.shape[1] / a.k.shape[1]);
  const int64_t step = plan.windows->step[plan.windows->ndim - 1];
  const int64_t at = s.runs.empty() ? 0 : s.runs.back().at + s.runs.back().keys;
  const void* k = RowPointer(a.k, item.b, g, token);
  const void* v = RowPointer(a.v, item.b, g, token);
  const int64_t k_step = step * a.k.stride[2] * dtype_size(a.k.dtype);
  const int64_t v_step = step * a.v.stride[2] * dtype_size(a.v.dtype);
  const auto [k_in_place, v_in_place] = WalkReadsInPlace(a);
  if (!k_in_place) ConvertRows(a.k, k, step * a.k.stride[2], keys, dim, dim, s.gk.get() + at * dim);
  if (!v_in_place)
    ConvertRows(a.v, v, step * a.v.stride[2], keys, dim_v, s.dv_pad, s.gv.get() + at * s.dv_pad);
  if (k_in_place)  // the batch's first segment: FlushRuns asks for the others
    for (int64_t j = 0; j < std::min(keys, kSegmentKeys - at); ++j)
      PrefetchBytes(static_cast<const char*>(k) + j * k_step, dim * 4);
  for (int64_t j = 0; j < keys; ++j) {
    s.k_rows[at + j] = k_in_place
                           ? static_cast<const void*>(static_cast<const char*>(k) + j * k_step)
                           : s.gk.get() + (at + j) * dim;
    s.v_rows[at + j] = v_in_place
                           ? static_cast<const void*>(static_cast<const char*>(v) + j * v_step)
                           : s.gv.get() + (at + j) * s.dv_pad;
  }
  if (!cover.uniform) {  // FlushRuns masks with the rows' bounds on the last axis
    const int64_t chunk = kCols * n, m_pad = (item.nh * item.nt + chunk - 1) / chunk * chunk;
    float* kept = s.kept_bounds.get() + s.runs.size() * 2 * m_pad;
    const int64_t rows = cover.rows_end - cover.rows_begin;
    std::copy_n(s.run_bounds.get() + cover.rows_begin, rows, kept + cover.rows_begin);
    std::copy_n(s.run_bounds.get() + m_pad + cover.rows_begin, rows,
                kept + m_pad + cover.rows_begin);
  }
  s.runs.push_back({keys, at, x0, cover.rows_begin, cover.rows_end, cover.uniform});
}

// Grid windows: walks the union of the tile's row windows run by run along the last axis (K
// and V in token order), batching runs in St up to its capacity.
void VisitWindows(const TilePlan& plan, const WorkItem& item, TileState& t, Scratch& s) {
  const GridWindows& w = *plan.windows;
  const int64_t chunk = kCols * hn::Lanes(DF());
  const int64_t rows = item.nh * item.nt, m_pad = (rows + chunk - 1) / chunk * chunk;
  const int nd = w.ndim, last = nd - 1;
  // The rows' windows per axis (empty for padding slots and rows) and their union. (A tile's
  // rows are one query box, in one dilation group: keys step apart from lo cover every row's
  // window.)
  int64_t lo[3] = {0, 0, 0}, hi[3] = {0, 0, 0};
  bool any = false;
  for (int64_t r = 0; r < m_pad; ++r) {
    const int64_t token = r < rows ? plan.q_row(item.q0 + r % item.nt) : -1;
    int64_t pairs = token >= 0 ? 1 : 0;  // the row's window volume
    int64_t coord[3] = {0, 0, 0};
    for (int64_t ax = last, rest = token; ax >= 0 && token >= 0; --ax)
      coord[ax] = rest % w.extent[ax], rest /= w.extent[ax];
    for (int ax = 0; ax < nd; ++ax) {
      float first = kWideOpen, end = -kWideOpen;
      if (token >= 0) {
        const int64_t f = w.first[ax][coord[ax]], l = w.last[ax][coord[ax]];
        if (!any) lo[ax] = f, hi[ax] = l;
        lo[ax] = std::min(lo[ax], f), hi[ax] = std::max(hi[ax], l);
        first = static_cast<float>(f), end = static_cast<float>(l);
        pairs *= (l - f) / w.step[ax] + 1;
      }
      s.win_lo[ax * m_pad + r] = first, s.win_hi[ax * m_pad + r] = end;
    }
    if (plan.args->attended_pairs) s.pairs += pairs;
    any = any || token >= 0;
  }
  if (!any) return;
  const int64_t capacity = s.st_floats / m_pad;  // St's key rows at this m_pad
  int64_t c[3] = {lo[0], lo[1], lo[2]};
  while (true) {
    const RunCover cover =
        RunBounds(w, c, static_cast<float>(lo[last]), static_cast<float>(hi[last]), m_pad, s);
    if (cover.rows_begin < cover.rows_end) {
      int64_t coord[3] = {c[0], c[1], c[2]};
      for (int64_t x = lo[last]; x <= hi[last];) {
        int64_t used = s.runs.empty() ? 0 : s.runs.back().at + s.runs.back().keys;
        if (used == capacity) FlushRuns(plan, item, t, s), used = 0;
        const int64_t keys = std::min((hi[last] - x) / w.step[last] + 1, capacity - used);
        coord[last] = x;
        int64_t token = 0;
        for (int ax = 0; ax < nd; ++ax) token = token * w.extent[ax] + coord[ax];
        AddRun(plan, item, cover, token, x, keys, s);
        x += keys * w.step[last];
      }
    }
    int ax = last - 1;  // the next outer coordinate, row-major
    for (; ax >= 0; --ax) {
      c[ax] += w.step[ax];
      if (c[ax] <= hi[ax]) break;
      c[ax] = lo[ax];
    }
    if (ax < 0) break;
  }
  FlushRuns(plan, item, t, s);
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

// Normalizes once; rows that saw no key get O = 0, LSE = -inf. A window walk's O rows are
// streamed past the caches (whole vectors, aligned rows; hwy::FlushStream before the threads
// join): its tiles are short and their 64 rows scattered, so ordinary stores stalled on the
// lines' ownership (6% of natten2d kernel 13, even with the lines asked for a tile ahead).
void EndTile(const TilePlan& plan, const WorkItem& item, int64_t dv_pad, const TileState& t) {
  const AttentionArgs& a = *plan.args;
  const bool modified = has_score_modifiers(a);
  const DF df;
  const int64_t n = hn::Lanes(df);
  const bool stream = plan.windows && a.v.shape[3] % n == 0;
  for (int64_t r = 0; r < item.nh * item.nt; ++r) {
    const int64_t h = item.h0 + r / item.nt, i = item.q0 + r % item.nt, row = plan.q_row(i);
    if (row < 0) continue;  // a padding slot
    float* out = a.out.row<float>(item.b, h, row);
    const float l = t.l[r];
    float inv = l > 0.0f ? 1.0f / l : 0.0f;
    if (modified) inv *= row_factors(a, item.b, h, i).gate;
    if (stream && reinterpret_cast<uintptr_t>(out) % (n * sizeof(float)) == 0) {
      for (int64_t d = 0; d < a.v.shape[3]; d += n)
        hn::Stream(hn::Mul(hn::Load(df, t.o.get() + r * dv_pad + d), hn::Set(df, inv)), df,
                   out + d);
    } else {
      for (int64_t d = 0; d < a.v.shape[3]; ++d) out[d] = t.o[r * dv_pad + d] * inv;
    }
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
  if (plan.windows) {  // each tile walks its own union window, one after the other
    for (int64_t t = 0; t < count; ++t) {
      // The next tile's rows: the group's next, or the first of the group this thread most
      // likely takes next (the threads take groups in turn).
      const int64_t next = t + 1 < count ? first + t + 1 : first + count * plan.threads;
      s.next_tile = next < static_cast<int64_t>(plan.items.size()) ? &plan.items[next] : nullptr;
      s.q_asked = 0;
      const WorkItem& item = plan.items[first + t];
      if (!BeginTile(plan, item, s.dv_pad, s.tiles[0])) continue;
      VisitWindows(plan, item, s.tiles[0], s);
      PrefetchTileRows(plan, s, kMaxTileRows);  // what the walk did not ask for
      EndTile(plan, item, s.dv_pad, s.tiles[0]);
    }
    hwy::FlushStream();  // EndTile's streamed O rows, visible before the threads join
    return;
  }
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
