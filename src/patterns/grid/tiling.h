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
// Tiling: tokens are permuted so that one kernel block (64 tokens) is a small box of one dilation
// group: groups first (residue tuples in row-major order), then the boxes of the group's sub-grid
// in row-major order, then the tokens of the box in row-major order. Boxes clipped by the grid
// border are padded to the full block with padding slots (source -1: zero rows, never attended,
// outputs dropped). A 2-D neighbourhood of k x k keys then touches about ((k - 1) / tile + 2)^2 key
// boxes instead of k partial row-blocks.
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
  int64_t tile[3] = {1, 1, 1};  // box extent per axis in group coordinates
  int64_t block = 64;           // slots per box = q_block = kv_block of the tiled mask
  std::vector<Box> boxes;       // in tiled order; box b owns slots [b * block, (b + 1) * block)
  std::vector<int64_t> source;  // per slot: original token index, or -1 for padding
  // First box of each group (residue tuple in row-major order), plus the box count per axis.
  std::vector<int64_t> group_first_box;
  std::vector<int64_t> group_boxes[3];
  bool identity = false;  // source[t] == t for every slot and no padding
  int64_t padded() const { return static_cast<int64_t>(source.size()); }
  // Box index of the group `g` (linear residue index) at box coordinates bc.
  int64_t box_index(int64_t g, const int64_t* bc) const;
};

// Box extents: 64 tokens as (64), (8, 8) or (4, 4, 4), shrunk on axes shorter than that and regrown
// on the others, so small or flat grids still get full blocks where they can.
Tiling make_tiling(const Grid& grid);

}  // namespace attnkit::grid_patterns
