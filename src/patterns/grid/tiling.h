// Separable grid neighbourhoods and the box tiling that turns them into few dense blocks.
//
// A grid pattern (NATTEN 1/2/3-D, HaloNet) lives on a row-major grid of up to 3 axes; query i may
// see key j iff every axis allows the pair of coordinates (AxisRule). Each axis rule is "same
// dilation group, and the key's group coordinate lies in [start(i'), end(i'))" with start and end
// non-decreasing in i' and consecutive windows touching. Two consequences used everywhere here:
//   - the keys seen by a query interval [a, b) of one group form the interval [start(a), end(b-1));
//   - every query of [a, b) sees every key of [c, d)  <=>  start(b-1) <= c and d <= end(a).
// So a (query box) x (key box) block is classified exactly, axis by axis (classify_axis).
//
// Tiling: tokens are permuted so that one query block is a small box of one dilation group and
// one key block a sub-box of it: groups first (residue tuples in row-major order), then the query
// boxes of the group's sub-grid in row-major order, then the key boxes (sub-boxes) of the query
// box in row-major order, then the tokens of the key box in row-major order. Key boxes clipped by
// the grid border are padded to the full key block with padding slots (source -1: zero rows,
// never attended, outputs dropped). Query and key boxes differ because the best shapes differ: a
// query box wants many rows (SIMD lanes, few visits) and a key box few keys (a tight cover of the
// union window), e.g. natten2d kernel 13 on 128 x 128 visits 3.13x the element density with
// 8 x 8 boxes on both sides and 2.1x with 4 x 8 query boxes over 2 x 8 key boxes. The window walk
// of plans without causality (tile_plan.h GridWindows) has no key boxes: each query box scores
// its union window, 1.89x for 4 x 8 boxes there (TilingFor::kWindows picks the query box).
#pragma once

#include <cstdint>
#include <vector>

namespace attnkit::grid_patterns {

// One axis of a separable neighbourhood.
struct AxisRule {
  enum class Kind : uint8_t { kNatten, kHalo };
  Kind kind = Kind::kNatten;
  int64_t length = 1;
  int64_t dilation = 1;  // natten only; halo uses 1
  int64_t kernel = 1;    // natten
  bool causal = false;   // natten
  int64_t block = 1;     // halo: query block extent
  int64_t halo = 0;      // halo: extra keys on each side of the block

  int64_t group_length(int64_t g) const;
  // Window [*start, *end) in group coordinates of the query at group coordinate i.
  void window(int64_t i, int64_t group_len, int64_t* start, int64_t* end) const;
  // Per-element rule in original coordinates.
  bool allows(int64_t i, int64_t j) const;
  // Allowed (i, j) pairs on this axis: the sum of the window sizes.
  int64_t pairs() const;
};

enum class Coverage : uint8_t { kNone = 0, kSome = 1, kAll = 2 };

// Query interval [q0, q1) x key interval [k0, k1) in GROUP coordinates of one group of length
// group_len: none, some or all pairs allowed. Intervals must be non-empty.
Coverage classify_group(const AxisRule& rule, int64_t group_len, int64_t q0, int64_t q1, int64_t k0,
                        int64_t k1);
// The same in ORIGINAL coordinates (dilation groups handled here).
Coverage classify_axis(const AxisRule& rule, int64_t q0, int64_t q1, int64_t k0, int64_t k1);

struct Grid {
  int ndim = 1;  // 1..3; axis 0 is the slowest-varying one
  AxisRule axis[3];
  int64_t size() const;
  // Original coordinates of token t.
  void coords(int64_t t, int64_t* c) const;
  int64_t linear(const int64_t* c) const;
  // The full element rule (without global causality).
  bool allows(int64_t i, int64_t j) const;
  // Allowed pairs over the whole grid: the product of the per-axis counts.
  double pairs() const;
};

// An axis-aligned box of one dilation group: group residues and group-coordinate intervals.
struct Box {
  int64_t group[3] = {0, 0, 0};
  int64_t lo[3] = {0, 0, 0};
  int64_t hi[3] = {1, 1, 1};
  int64_t volume(int ndim) const;
};

struct Tiling {
  int64_t tile[3] = {1, 1, 1};  // query box extent per axis in group coordinates
  int64_t sub[3] = {1, 1, 1};   // key box extent per axis; divides tile
  int64_t key_block = 64;       // slots per key box = kv_block of the tiled mask
  int64_t block = 64;           // slots per query box = q_block (key boxes per box * key_block)
  std::vector<Box> boxes;  // query boxes in tiled order; box b owns [b * block, (b + 1) * block)
  std::vector<Box> key_boxes;   // key boxes in tiled order; box k owns [k * key_block, ...); boxes
                                // wholly outside the grid are empty (volume 0)
  std::vector<int64_t> source;  // per slot: original token index, or -1 for padding
  std::vector<int32_t> coord;   // per slot, 3 entries: group coordinates (0 for padding)
  // First query box of each group (residue tuple in row-major order), plus the query box count
  // per axis.
  std::vector<int64_t> group_first_box;
  std::vector<int64_t> group_boxes[3];
  bool identity = false;  // source[t] == t for every slot and no padding
  int64_t padded() const { return static_cast<int64_t>(source.size()); }
  int64_t keys_per_box() const;  // key boxes in one query box
  // Key box of group `g` (linear residue index) at key-box coordinates kc (in units of sub).
  int64_t key_box_index(int64_t g, const int64_t* kc) const;
};

// The kernel a tiling is for: block lists over tokens in box order (causal plans, dropout, the
// backward), or the walk of each box's union window over K and V in token order (the forward of
// the others, tile_plan.h GridWindows).
enum class TilingFor : uint8_t { kBlocks, kWindows };

// Box shapes for this grid: the query box (32 or 64 tokens where the grid allows) and its key
// sub-box (16 tokens or more) that minimise the modelled cost of `kernel` (tiling.cc): for
// blocks, visited slot pairs plus a fixed cost per block visit; for windows, union keys times
// rows plus a fixed cost per key. The key box is always the best for blocks.
Tiling make_tiling(const Grid& grid, TilingFor kernel = TilingFor::kBlocks);
// The window walk scores each run of keys along the last axis for the SIMD vectors of a box's
// rows that see its outer coordinates: (query slot, key) pairs it scores over the whole grid
// for query boxes of `tile`, with rows in vectors of kWalkLanes (AVX-512 f32) slots, each a
// sub-box of the box (its last axes first). Exact for one head per tile.
inline constexpr int64_t kWalkLanes = 16;
double walked_pairs(const Grid& grid, const int64_t* tile);
// A tiling with the given box extents (tests and measurements); sub must divide tile per axis.
Tiling make_tiling(const Grid& grid, const int64_t* tile, const int64_t* sub);

}  // namespace attnkit::grid_patterns
