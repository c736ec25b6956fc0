// Builds the backward's schedule: the mask's transpose, the tiles, and units of balanced cost.
#include "kernels/cpu/backward_plan.h"

#include <algorithm>
#include <cmath>
#include <string>

#include "core/attention_args.h"
#include "core/memory.h"

namespace attnkit::cpu {

TransposedMask transpose(const BlockMask& mask) {
  const int64_t q_blocks = mask.q_blocks(), kv_blocks = mask.kv_blocks();
  const int64_t sets = mask.batch * mask.heads;
  TransposedMask t;
  t.start.assign(sets * kv_blocks + 1, 0);
  for (int64_t set = 0; set < sets; ++set)
    for (int64_t qb = 0; qb < q_blocks; ++qb) {
      const int64_t list = set * q_blocks + qb;
      for (int64_t e = mask.row_start[list]; e < mask.row_start[list + 1]; ++e)
        ++t.start[set * kv_blocks + mask.kv_index[e] + 1];
    }
  for (size_t x = 1; x < t.start.size(); ++x) t.start[x] += t.start[x - 1];
  t.q_index.resize(t.start.back());
  t.kind.resize(t.start.back());
  std::vector<int64_t> next(t.start.begin(), t.start.end() - 1);
  // Query blocks visited in ascending order, so each transposed list comes out sorted.
  for (int64_t set = 0; set < sets; ++set)
    for (int64_t qb = 0; qb < q_blocks; ++qb) {
      const int64_t list = set * q_blocks + qb;
      for (int64_t e = mask.row_start[list]; e < mask.row_start[list + 1]; ++e) {
        const int64_t slot = next[set * kv_blocks + mask.kv_index[e]]++;
        t.q_index[slot] = static_cast<int32_t>(qb);
        t.kind[slot] = mask.kind[e];
      }
    }
  return t;
}

int64_t BackwardPlan::q_blocks() const {
  const int64_t nq = args->forward.q.shape[2];
  return (nq + q_block - 1) / q_block;
}

void BackwardPlan::tile_rows(int64_t t, int64_t* q0, int64_t* nt) const {
  const int64_t nq = args->forward.q.shape[2];
  const int64_t qb = t / sub_tiles, block_end = std::min(nq, (qb + 1) * q_block);
  *q0 = qb * q_block + (t % sub_tiles) * q_tile;
  *nt = std::max<int64_t>(0, std::min(q_tile, block_end - *q0));
}

namespace {

// (query tile, key block) pairs that key block kb of (b, g) takes part in, over the group's heads.
double key_block_cost(const BackwardPlan& plan, int64_t b, int64_t g, int64_t kb) {
  const AttentionArgs& f = plan.args->forward;
  const int64_t nq = f.q.shape[2], nk = f.k.shape[2], group = f.q.shape[1] / f.k.shape[1];
  if (!plan.mask) {
    if (!f.causal) return double(plan.tiles * group);
    // Row i sees key k0 iff i >= k0 - (nk - nq).
    const int64_t first_row = std::max<int64_t>(0, kb * plan.kv_block - (nk - nq));
    const int64_t first_tile = std::min(first_row / plan.q_tile, plan.tiles);
    return double((plan.tiles - first_tile) * group);
  }
  const BlockMask& m = *plan.mask;
  double cost = 0.0;
  for (int64_t h = g * group; h < (g + 1) * group; ++h) {
    const int64_t set = (m.batch == 1 ? 0 : b) * m.heads + (m.heads == 1 ? 0 : h);
    const int64_t t = set * m.kv_blocks() + kb;
    cost += double(plan.transposed.start[t + 1] - plan.transposed.start[t]) * plan.sub_tiles;
  }
  return cost;
}

}  // namespace

BackwardPlan make_backward_plan(const BackwardArgs& args, const BlockMask* mask) {
  const AttentionArgs& f = args.forward;
  BackwardPlan plan;
  plan.args = &args;
  plan.mask = mask;
  plan.threads = effective_threads(f.threads);
  plan.scale = effective_scale(f);
  plan.qscale = plan.scale * static_cast<float>(M_LOG2E);
  const int64_t batch = f.q.shape[0], heads_q = f.q.shape[1], heads_kv = f.k.shape[1];
  const int64_t nq = f.q.shape[2], nk = f.k.shape[2], dim = f.q.shape[3];
  if (mask) {
    plan.transposed = transpose(*mask);
    plan.kv_block = mask->kv_block;
    plan.q_block = mask->q_block;
    plan.sub_tiles = (mask->q_block + kMaxBackwardTileRows - 1) / kMaxBackwardTileRows;
    plan.q_tile = (mask->q_block + plan.sub_tiles - 1) / plan.sub_tiles;
  } else {
    // 256 keys x 64 rows: the best of kv 64..512 x q 32..128 measured at N = 4096, d = 64 and
    // 128, causal or not (about 10% over 128 x 128; BENCHMARKS.md).
    plan.kv_block = 256;
    plan.q_block = plan.q_tile = 64;
  }
  plan.tiles = plan.q_blocks() * plan.sub_tiles;
  const int64_t kv_blocks = (nk + plan.kv_block - 1) / plan.kv_block;

  // Enough units for two per thread; each extra chunk costs one dQ plane.
  const int64_t pairs = batch * heads_kv;
  plan.chunks = std::clamp<int64_t>((2 * plan.threads + pairs - 1) / pairs, 1, kv_blocks);
  check_memory(double(plan.chunks) * double(batch * heads_q) * double(nq) * double(dim + 16) * 4.0,
               "q", "the backward's dQ partials");

  for (int64_t b = 0; b < batch; ++b)
    for (int64_t g = 0; g < heads_kv; ++g) {
      std::vector<double> cost(kv_blocks);
      double total = 0.0;
      for (int64_t kb = 0; kb < kv_blocks; ++kb) total += cost[kb] = key_block_cost(plan, b, g, kb);
      // Contiguous ranges of about equal cost; chunk c ends where the running cost passes
      // (c + 1) / chunks of the total.
      int64_t kb = 0;
      double running = 0.0;
      for (int64_t c = 0; c < plan.chunks; ++c) {
        BackwardUnit unit{b, g, kb, kb, c, 0.0};
        const double goal = total * double(c + 1) / double(plan.chunks);
        while (kb < kv_blocks && (c + 1 == plan.chunks || running + 0.5 * cost[kb] <= goal)) {
          running += cost[kb];
          unit.cost += cost[kb];
          ++kb;
        }
        unit.kb_end = kb;
        if (unit.kb_end > unit.kb_begin) plan.units.push_back(unit);
      }
    }
  std::stable_sort(plan.units.begin(), plan.units.end(),
                   [](const BackwardUnit& x, const BackwardUnit& y) { return x.cost > y.cost; });
  return plan;
}

}  // namespace attnkit::cpu
