// Shared helpers of the content-based planners; see planner_util.h.
#include "patterns/dynamic/planner.h"

#include <algorithm>

#include "attnkit/error.h"

namespace attnkit::planner {

Dims dims_of(const AttentionArgs& args) {
  Dims d;
  d.batch = args.q.shape[0];
  d.heads_q = args.q.shape[1];
  d.heads_kv = args.k.shape[1];
  d.group = d.heads_kv > 0 ? d.heads_q / d.heads_kv : 1;
  d.nq = args.q.shape[2];
  d.nk = args.k.shape[2];
  d.dim = args.q.shape[3];
  d.dim_v = args.v.shape[3];
  return d;
}

std::vector<int64_t> key_limits(const AttentionArgs& args, int64_t start, int64_t count) {
  std::vector<int64_t> limit(count);
  for (int64_t r = 0; r < count; ++r)
    limit[r] = std::clamp<int64_t>(last_visible(args, start + r) + 1, 0, args.k.shape[2]);
  return limit;
}

BlockMask mask_from_lists(const AttentionArgs& args, int64_t q_block, int64_t kv_block,
                          int64_t heads, std::vector<std::vector<int32_t>> lists) {
  for (auto& list : lists) {
    std::sort(list.begin(), list.end());
    list.erase(std::unique(list.begin(), list.end()), list.end());
  }
  BlockMaskShape shape;
  shape.nq = args.q.shape[2];
  shape.nk = args.k.shape[2];
  shape.batch = args.q.shape[0];
  shape.heads = heads;
  shape.q_block = q_block;
  shape.kv_block = kv_block;
  return block_mask_from_indices(shape, lists);
}

BlockMask mask_from_entries(const AttentionArgs& args, int64_t q_block, int64_t kv_block,
                            int64_t heads, std::vector<std::vector<Entry>> lists,
                            std::shared_ptr<const TilePredicate> predicate) {
  BlockMask m;
  m.q_block = q_block;
  m.kv_block = kv_block;
  m.nq = args.q.shape[2];
  m.nk = args.k.shape[2];
  m.batch = args.q.shape[0];
  m.heads = heads;
  m.predicate = std::move(predicate);
  m.row_start.assign(lists.size() + 1, 0);
  for (size_t r = 0; r < lists.size(); ++r)
    m.row_start[r + 1] = m.row_start[r] + static_cast<int64_t>(lists[r].size());
  m.kv_index.reserve(m.row_start.back());
  m.kind.reserve(m.row_start.back());
  for (const auto& list : lists)
    for (const Entry& e : list) {
      m.kv_index.push_back(e.kv_index);
      m.kind.push_back(e.kind);
    }
  m.validate();
  return m;
}

BlockMask dense_mask(const AttentionArgs& args, int64_t q_block, int64_t kv_block) {
  const Dims d = dims_of(args);
  const int64_t q_blocks = (d.nq + q_block - 1) / q_block;
  std::vector<std::vector<int32_t>> lists(d.batch * q_blocks);
  for (int64_t b = 0; b < d.batch; ++b)
    for (int64_t qb = 0; qb < q_blocks; ++qb) {
      const int64_t last = last_visible(args, std::min(d.nq, (qb + 1) * q_block) - 1);
      auto& list = lists[b * q_blocks + qb];
      for (int64_t kb = 0; kb * kv_block <= last; ++kb) list.push_back(static_cast<int32_t>(kb));
    }
  return mask_from_lists(args, q_block, kv_block, 1, std::move(lists));
}

int64_t int_param(const PatternParams& params, const std::string& pattern, const std::string& key,
                  int64_t lo, int64_t hi) {
  const int64_t value = params.get_int(key);
  check(value >= lo && value <= hi, "--pattern",
        pattern + ": " + key + " must be in [" + std::to_string(lo) + ", " + std::to_string(hi) +
            "], got " + std::to_string(value));
  return value;
}

int64_t block_param(const PatternParams& params, const std::string& pattern,
                    const std::string& key) {
  const int64_t value = params.get_int(key);
  check(value > 0 && value % 16 == 0 && value <= (1 << 20), "--pattern",
        pattern + ": " + key + " must be a positive multiple of 16, got " + std::to_string(value));
  return value;
}

double mask_pairs(const BlockMask& mask, const AttentionArgs& args) {
  const Dims d = dims_of(args);
  double total = 0.0;
  std::vector<uint8_t> tile(mask.q_block * mask.kv_block);
  for (int64_t b = 0; b < d.batch; ++b)
    for (int64_t h = 0; h < d.heads_q; ++h)
      for (int64_t qb = 0; qb < mask.q_blocks(); ++qb) {
        const int64_t r = mask.list(b, h, qb);
        const int64_t q0 = qb * mask.q_block, q1 = std::min(d.nq, q0 + mask.q_block);
        for (int64_t e = mask.row_start[r]; e < mask.row_start[r + 1]; ++e) {
          const int64_t k0 = int64_t{mask.kv_index[e]} * mask.kv_block;
          const int64_t k1 = std::min(d.nk, k0 + mask.kv_block);
          const bool partial = mask.kind[e] == BlockKind::kPartial;
          if (partial) mask.predicate->fill(b, h, q0, q1 - q0, k0, k1 - k0, tile.data(), mask.kv_block);
          for (int64_t i = q0; i < q1; ++i) {
            const int64_t hi = std::min(k1, last_visible(args, i) + 1);
            if (!partial) {
              total += static_cast<double>(std::max<int64_t>(0, hi - k0));
              continue;
            }
            for (int64_t j = k0; j < hi; ++j) total += tile[(i - q0) * mask.kv_block + (j - k0)];
          }
        }
      }
  return total / static_cast<double>(std::max<int64_t>(1, d.batch * d.heads_q));
}

TensorView contiguous(const float* data, int64_t n, int64_t dim) {
  TensorView view;
  view.data = const_cast<float*>(data);
  view.dtype = DType::kF32;
  view.shape[0] = view.shape[1] = 1;
  view.shape[2] = n;
  view.shape[3] = dim;
  view.stride[0] = view.stride[1] = n * dim;
  view.stride[2] = dim;
  view.stride[3] = 1;
  return view;
}

}  // namespace attnkit::planner
