// Shared helpers of the content-based planners; see planner.h.
#include "patterns/dynamic/planner.h"

#include <algorithm>

#include "core/attention_args.h"

namespace attnkit::dynamic_patterns {

Dims dims_of(const PlanInputs& in) {
  Dims d;
  d.batch = in.q.shape[0];
  d.heads_q = in.q.shape[1];
  d.heads_kv = in.k.shape[1];
  d.group = d.heads_kv > 0 ? d.heads_q / d.heads_kv : 1;
  d.nq = in.q.shape[2];
  d.nk = in.k.shape[2];
  d.dim = in.q.shape[3];
  return d;
}

std::vector<int64_t> key_limits(const PlanInputs& in, int64_t start, int64_t count) {
  std::vector<int64_t> limit(count);
  for (int64_t r = 0; r < count; ++r)
    limit[r] = std::clamp<int64_t>(last_visible(in, start + r) + 1, 0, in.k.shape[2]);
  return limit;
}

BlockMaskShape mask_shape(const PlanInputs& in, int64_t q_block, int64_t kv_block, int64_t heads) {
  BlockMaskShape shape;
  shape.nq = in.q.shape[2];
  shape.nk = in.k.shape[2];
  shape.batch = in.q.shape[0];
  shape.heads = heads;
  shape.q_block = q_block;
  shape.kv_block = kv_block;
  return shape;
}

BlockMask dense_mask(const PlanInputs& in, int64_t q_block, int64_t kv_block) {
  const Dims d = dims_of(in);
  const int64_t q_blocks = (d.nq + q_block - 1) / q_block;
  std::vector<std::vector<int32_t>> lists(d.batch * q_blocks);
  for (int64_t b = 0; b < d.batch; ++b)
    for (int64_t qb = 0; qb < q_blocks; ++qb) {
      const int64_t last = last_visible(in, std::min(d.nq, (qb + 1) * q_block) - 1);
      auto& list = lists[b * q_blocks + qb];
      for (int64_t kb = 0; kb * kv_block <= last; ++kb) list.push_back(static_cast<int32_t>(kb));
    }
  return block_mask_from_indices(mask_shape(in, q_block, kv_block, 1), lists);
}

void sum_head_gradients(const BackwardArgs& args, const std::vector<float>& head_dk,
                        const std::vector<float>& head_dv, int64_t first_head, const float* base_dk,
                        const float* base_dv) {
  const Dims d = dims_of(PlanInputs::of(args.forward));
  const int64_t dim_v = args.forward.v.shape[3];
#pragma omp parallel for schedule(static) num_threads(effective_threads(args.forward.threads))
  for (int64_t bg = 0; bg < d.batch * d.heads_kv; ++bg) {
    const int64_t b = bg / d.heads_kv, g = bg % d.heads_kv;
    for (int64_t j = 0; j < d.nk; ++j) {
      float* dk = args.dk.row<float>(b, g, j);
      float* dv = args.dv.row<float>(b, g, j);
      for (int64_t x = 0; x < d.dim; ++x)
        dk[x] = base_dk ? base_dk[(bg * d.nk + j) * d.dim + x] : 0.0f;
      for (int64_t x = 0; x < dim_v; ++x)
        dv[x] = base_dv ? base_dv[(bg * d.nk + j) * dim_v + x] : 0.0f;
      for (int64_t h = std::max(first_head, g * d.group); h < (g + 1) * d.group; ++h) {
        const int64_t bh = b * d.heads_q + h;
        for (int64_t x = 0; x < d.dim; ++x) dk[x] += head_dk[(bh * d.nk + j) * d.dim + x];
        for (int64_t x = 0; x < dim_v; ++x) dv[x] += head_dv[(bh * d.nk + j) * dim_v + x];
      }
    }
  }
}

}  // namespace attnkit::dynamic_patterns
