// The schedule the fused CPU kernel runs: work items over (batch, head range, query range), each
// walking a list of key blocks. Shared by the dense, causal and block-sparse entry points.
#pragma once

#include <cstdint>
#include <vector>

#include "attnkit/attention.h"
#include "attnkit/block_mask.h"

namespace attnkit::cpu {

// Rows of one tile: query heads [h0, h0 + nh) (all in one GQA group) x tokens [q0, q0 + nt).
// Row r of the tile is head h0 + r / nt, token q0 + r % nt.
struct WorkItem {
  int64_t b = 0, h0 = 0, nh = 1, q0 = 0, nt = 0;
  int64_t list = -1;  // BlockMask list index; -1: implicit dense list (trimmed when causal)
  int64_t cost = 0;   // key blocks x rows, for longest-first scheduling
};

// Neighbourhoods on a row-major grid of up to 3 axes (grid patterns without causality): token i
// sees token j iff on every axis a, j's coordinate lies in [first[a][x], last[a][x]] (x: i's
// coordinate on that axis) and is congruent to both modulo step[a] (the dilation). With these, the
// kernel reads K and V in token order and walks each tile's union window, one run of keys along the
// last axis at a time, with each row's window applied by compares (no block list, no predicate
// bytes).
struct GridWindows {
  int ndim = 1;
  int64_t extent[3] = {1, 1, 1};  // axis lengths, axis 0 slowest
  int64_t step[3] = {1, 1, 1};
  // Per axis, by coordinate: the window on that axis, inclusive (a window is a product of
  // intervals, one per axis: tables of extent[a] entries, not of tokens).
  std::vector<int32_t> first[3], last[3];
};

struct TilePlan {
  const AttentionArgs* args = nullptr;
  const BlockMask* mask = nullptr;  // null: every key block (dense / causal)
  int64_t kv_block = 64;            // keys per tile
  float qscale = 0.0f;              // scale * log2(e), folded into Q so the kernel uses exp2
  int threads = 1;
  std::vector<WorkItem> items;  // sorted by cost, longest first
  // Groups of items that walk their key lists together, chunk by chunk (the L2-blocked order
  // of long dense and causal runs): group i is items [group_start[i], group_start[i + 1]).
  std::vector<int64_t> group_start;
  int64_t group_tiles = 1;         // items per group, at most
  int64_t group_chunk_blocks = 1;  // key blocks per chunk
  // A plan's token order (patterns that permute tokens; K and V come already in kernel order):
  // query slot p of the mask is row q_order[p] of Q, the output and the LSE, read and written in
  // place instead of through copies (-1: a padding slot, zero Q, output dropped). Null: slot p is
  // row p.
  const int32_t* q_order = nullptr;
  int64_t nq = 0;  // query slots: the mask's rows with a q_order, else the inputs'

  // With a q_order: the rows' windows, K and V in token order (not the mask's key blocks).
  const GridWindows* windows = nullptr;
  // Row of Q and O behind query slot p; -1 for padding.
  int64_t q_row(int64_t p) const { return q_order ? q_order[p] : p; }
};

// At most this many rows (heads x tokens) per tile: Q^T, S^T and the O accumulator stay in L2.
inline constexpr int64_t kMaxTileRows = 128;
// At most this many tiles share one pass over K/V.
inline constexpr int64_t kMaxGroupTiles = 8;

// Address of row (b, h, s) of a tensor of any dtype.
inline const void* RowPointer(const TensorView& t, int64_t b, int64_t h, int64_t s) {
  return static_cast<const char*>(t.data) + t.offset(b, h, s, 0) * dtype_size(t.dtype);
}

TilePlan make_tile_plan(const AttentionArgs& args, const BlockMask* mask,
                        const std::vector<int32_t>* q_order = nullptr);
// Runs every item on the best SIMD target of this CPU (Highway dynamic dispatch).
void run_tile_plan(const TilePlan& plan);
// Name of the SIMD target the kernels dispatch to ("AVX2", "AVX3", "NEON", ...).
const char* kernel_target_name();

}  // namespace attnkit::cpu
