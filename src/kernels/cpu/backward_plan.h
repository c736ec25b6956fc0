// The schedule of the CPU backward: work units that own key blocks, and the mask's transpose.
//
// A unit is (batch b, kv head g, a contiguous range of key blocks). It owns dK and dV of its key
// blocks (summed over the query heads of group g) and writes its dQ contributions into its own
// partial plane `chunk`; the planes are summed in chunk order afterwards. Every sum therefore has
// a fixed order whatever thread runs the unit: the gradients are bitwise reproducible. One chunk
// per (b, g) when there are enough (b, g) pairs for the threads; more (each a dQ plane of
// B x Hq x Nq x D floats) only when there are fewer.
#pragma once

#include <cstdint>
#include <vector>

#include "attnkit/attention.h"
#include "attnkit/block_mask.h"

namespace attnkit::cpu {

struct BackwardUnit {
  int64_t b = 0, g = 0;
  int64_t kb_begin = 0, kb_end = 0;  // key blocks [kb_begin, kb_end)
  int64_t chunk = 0;                 // dQ partial plane
  double cost = 0.0;                 // (query tile, key block) pairs, for longest-first order
};

// Per key block, the query blocks whose lists hold it: list (mask batch mb, mask head mh, key
// block kb) is entries [start[t], start[t + 1]) with t = (mb * mask.heads + mh) * kv_blocks + kb,
// query blocks ascending.
struct TransposedMask {
  std::vector<int64_t> start;
  std::vector<int32_t> q_index;
  std::vector<BlockKind> kind;
};
TransposedMask transpose(const BlockMask& mask);

struct BackwardPlan {
  const BackwardArgs* args = nullptr;
  const BlockMask* mask = nullptr;  // null: dense (causal trims the query tiles per key block)
  TransposedMask transposed;
  int64_t kv_block = 64;  // keys per block
  int64_t q_block = 64;   // query rows per mask block (dense: = q_tile)
  int64_t q_tile = 64;    // rows per tile (<= kMaxBackwardTileRows); a block has sub_tiles
  int64_t sub_tiles = 1;
  int64_t tiles = 0;    // tiles per (b, h): q_blocks * sub_tiles
  float qscale = 0.0f;  // scale * log2(e), folded into the packed Q
  float scale = 0.0f;
  int threads = 1;
  int64_t chunks = 1;               // dQ partial planes
  std::vector<BackwardUnit> units;  // longest first

  int64_t q_blocks() const;
  // Rows [q0, q0 + nt) of tile t (nt = 0 past the end of the sequence).
  void tile_rows(int64_t t, int64_t* q0, int64_t* nt) const;
};

inline constexpr int64_t kMaxBackwardTileRows = 128;

BackwardPlan make_backward_plan(const BackwardArgs& args, const BlockMask* mask);
// Runs the plan on the best SIMD target of this CPU.
void run_backward_plan(const BackwardPlan& plan);

}  // namespace attnkit::cpu
