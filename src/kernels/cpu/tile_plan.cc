// Builds the work list of the fused kernel: items sized for the cache, longest first.
#include "kernels/cpu/tile_plan.h"

#include <algorithm>
#include <cmath>

#include "attnkit/error.h"
#include "core/attention_args.h"

namespace attnkit::cpu {
namespace {

constexpr int64_t kGroupStateBytes = 512 << 10;
constexpr int64_t kGroupChunkKeys = 256;

// Key blocks a dense item visits: all of them, or up to the causal limit of its last row.
int64_t dense_blocks(const AttentionArgs& args, int64_t kv_block, int64_t last_token) {
  const int64_t nk = args.k.shape[2], nq = args.q.shape[2];
  if (!args.causal) return (nk + kv_block - 1) / kv_block;
  const int64_t limit = last_token + (nk - nq);
  return limit < 0 ? 0 : std::min(limit / kv_block + 1, (nk + kv_block - 1) / kv_block);
}

// Groups consecutive items of one (batch, head group) when a head's K/V outgrow L2: then each
// chunk of K/V is read once from L3 or DRAM for several tiles instead of once per tile.
void group_items(const AttentionArgs& args, TilePlan* plan) {
  const int64_t dim = args.q.shape[3], dim_v = args.v.shape[3], nk = args.k.shape[2];
  const int64_t kv_row_bytes = dim * dtype_size(args.k.dtype) + dim_v * dtype_size(args.v.dtype);
  // A tile's Q^T and O (f32, rows padded to 128), the tiles' share of L2's 1 MiB (Zen 5; 2 MiB
  // and more elsewhere); the rest holds the chunk of K/V and the score tile.
  const int64_t tile_bytes = (dim + dim_v) * kMaxTileRows * 4;
  int64_t tiles = std::clamp<int64_t>(kGroupStateBytes / tile_bytes, 1, kMaxGroupTiles);
  if (plan->mask || nk * kv_row_bytes <= kGroupStateBytes) tiles = 1;  // K/V stay in L2 anyway
  // At least 4 groups per thread, so that the dynamic schedule can balance them.
  const int64_t items = static_cast<int64_t>(plan->items.size());
  tiles = std::min(tiles, std::max<int64_t>(1, items / (4 * plan->threads)));
  plan->group_tiles = std::clamp<int64_t>(tiles, 1, kMaxGroupTiles);
  plan->group_chunk_blocks = std::max<int64_t>(1, kGroupChunkKeys / plan->kv_block);
  const std::vector<WorkItem>& list = plan->items;
  for (int64_t i = 0; i < items;) {
    plan->group_start.push_back(i);
    int64_t j = i + 1;
    while (j < items && j - i < plan->group_tiles && list[j].b == list[i].b &&
           list[j].h0 == list[i].h0)
      ++j;
    i = j;
  }
  plan->group_start.push_back(items);
}

// True when every query head of a GQA group has the same key list as the group's first head
// (planners that choose per kv head write one copy per query head): the heads can then share a
// tile. The predicate is still asked per head.
bool group_lists_equal(const BlockMask& m, int64_t heads_q, int64_t group) {
  if (m.heads == 1) return true;
  for (int64_t b = 0; b < m.batch; ++b)
    for (int64_t h = 0; h < heads_q; ++h) {
      if (h % group == 0) continue;
      for (int64_t qb = 0; qb < m.q_blocks(); ++qb) {
        const int64_t x = m.list(b, h, qb), y = m.list(b, h - h % group, qb);
        const int64_t n = m.row_start[x + 1] - m.row_start[x];
        if (n != m.row_start[y + 1] - m.row_start[y] ||
            !std::equal(m.kv_index.begin() + m.row_start[x],
                        m.kv_index.begin() + m.row_start[x] + n,
                        m.kv_index.begin() + m.row_start[y]) ||
            !std::equal(m.kind.begin() + m.row_start[x], m.kind.begin() + m.row_start[x] + n,
                        m.kind.begin() + m.row_start[y]))
          return false;
      }
    }
  return true;
}

}  // namespace

TilePlan make_tile_plan(const AttentionArgs& args, const BlockMask* mask,
                        const std::vector<int32_t>* q_order) {
  TilePlan plan;
  plan.args = &args;
  plan.mask = mask;
  plan.threads = effective_threads(args.threads);
  plan.qscale = effective_scale(args) * static_cast<float>(M_LOG2E);
  plan.q_order = q_order ? q_order->data() : nullptr;
  plan.nq = q_order ? mask->nq : args.q.shape[2];
  const int64_t batch = args.q.shape[0], heads_q = args.q.shape[1], nq = plan.nq;
  const int64_t group = heads_q / args.k.shape[1];
  // Queries per item along the sequence: the mask's query block, else 64.
  const int64_t q_block = mask ? mask->q_block : 128;
  plan.kv_block = mask ? mask->kv_block : 64;
  const int64_t tokens = std::min(q_block, kMaxTileRows);
  // Heads of a GQA group share a tile (and its pass over K/V) when they share the key lists.
  const bool heads_share = !mask || group_lists_equal(*mask, heads_q, group);
  const int64_t nh = heads_share ? std::clamp(kMaxTileRows / tokens, int64_t{1}, group) : 1;
  const int64_t q_blocks = (nq + q_block - 1) / q_block;

  for (int64_t b = 0; b < batch; ++b)
    for (int64_t h0 = 0, heads = 0; h0 < heads_q; h0 += heads) {
      heads = std::min(nh, (h0 / group + 1) * group - h0);  // stay inside one GQA group
      for (int64_t qb = 0; qb < q_blocks; ++qb) {
        const int64_t block_end = std::min(nq, (qb + 1) * q_block);
        int64_t blocks = 0, list = -1;
        if (mask) {
          list = mask->list(b, h0, qb);
          blocks = mask->row_start[list + 1] - mask->row_start[list];
        } else {
          blocks = dense_blocks(args, plan.kv_block, block_end - 1);
        }
        for (int64_t q0 = qb * q_block; q0 < block_end; q0 += tokens) {
          const int64_t nt = std::min(tokens, block_end - q0);
          plan.items.push_back({b, h0, heads, q0, nt, list, (blocks + 1) * heads * nt});
        }
      }
    }
  // Longest first inside each (batch, head group), so that consecutive items share K and V in
  // cache; the heads run one after another, and the cheap items at the end of the last group
  // fill the threads' gaps.
  std::stable_sort(plan.items.begin(), plan.items.end(), [](const WorkItem& x, const WorkItem& y) {
    if (x.b != y.b || x.h0 != y.h0) return x.b != y.b ? x.b < y.b : x.h0 < y.h0;
    return x.cost > y.cost;
  });
  group_items(args, &plan);
  return plan;
}

}  // namespace attnkit::cpu
