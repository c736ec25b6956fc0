// Routing Transformer's per-cluster attention, forward and backward (see routing_clusters.h).
#include "patterns/dynamic/routing_clusters.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <memory>
#include <vector>

#include "attnkit/block_mask.h"
#include "core/attention_args.h"
#include "kernels/cpu/planner_ops.h"
#include "patterns/dynamic/planner.h"

namespace attnkit::dynamic_patterns {
namespace {

constexpr int64_t kTile = 64;  // q_block = kv_block of the per-cluster staircase mask

// Causality by original positions inside one cluster: query row r sees the first limit[r] keys
// of the cluster (keys are sorted by position, so the allowed set is a prefix).
class StaircaseRule final : public TilePredicate {
 public:
  explicit StaircaseRule(std::vector<int64_t> limit) : limit_(std::move(limit)) {}
  void fill(int64_t, int64_t, int64_t q0, int64_t nq, int64_t k0, int64_t nk, uint8_t* allow,
            int64_t ld) const override {
    for (int64_t r = 0; r < nq; ++r)
      for (int64_t j = 0; j < nk; ++j) allow[r * ld + j] = k0 + j < limit_[q0 + r];
  }

 private:
  std::vector<int64_t> limit_;
};

}  // namespace

BlockMask staircase_mask(const std::vector<int64_t>& limit, int64_t nk) {
  BlockMaskShape shape;
  shape.nq = static_cast<int64_t>(limit.size());
  shape.nk = nk;
  shape.q_block = shape.kv_block = kTile;
  const int64_t q_blocks = (shape.nq + kTile - 1) / kTile;
  std::vector<std::vector<BlockEntry>> lists(q_blocks);
  for (int64_t qb = 0; qb < q_blocks; ++qb) {
    const int64_t r0 = qb * kTile, r1 = std::min(shape.nq, r0 + kTile);
    const int64_t low = limit[r0], high = limit[r1 - 1];  // non-decreasing in r
    for (int64_t kb = 0; kb * kTile < high; ++kb) {
      const bool full = std::min(nk, (kb + 1) * kTile) <= low;
      lists[qb].push_back(
          {static_cast<int32_t>(kb), full ? BlockKind::kFull : BlockKind::kPartial});
    }
  }
  return block_mask_from_entries(shape, std::make_shared<StaircaseRule>(limit), std::move(lists));
}

namespace {

// Layer norm of each row without gain or bias: (x - mean) / sqrt(var + 1e-6); with inv_std, each
// row's 1 / sqrt(var + 1e-6) too (for the backward).
void layer_norm_rows(std::vector<float>* x, int64_t n, int64_t dim, std::vector<float>* inv_std) {
  if (inv_std) inv_std->resize(n);
  for (int64_t i = 0; i < n; ++i) {
    float* row = x->data() + i * dim;
    double mean = 0.0, var = 0.0;
    for (int64_t c = 0; c < dim; ++c) mean += row[c];
    mean /= static_cast<double>(dim);
    for (int64_t c = 0; c < dim; ++c) var += (row[c] - mean) * (row[c] - mean);
    var /= static_cast<double>(dim);
    const double inv = 1.0 / std::sqrt(var + 1e-6);
    for (int64_t c = 0; c < dim; ++c) row[c] = static_cast<float>((row[c] - mean) * inv);
    if (inv_std) (*inv_std)[i] = static_cast<float>(inv);
  }
}

// The gradient through layer_norm_rows, in place: g (gradient of the normalised rows y) becomes
// inv_std * (g - mean(g) - y * mean(g * y)) per row.
void layer_norm_backward(const std::vector<float>& y, const std::vector<float>& inv_std, int64_t n,
                         int64_t dim, std::vector<float>* g) {
  for (int64_t i = 0; i < n; ++i) {
    float* gi = g->data() + i * dim;
    const float* yi = y.data() + i * dim;
    double mean_g = 0.0, mean_gy = 0.0;
    for (int64_t c = 0; c < dim; ++c) mean_g += gi[c], mean_gy += double(gi[c]) * yi[c];
    mean_g /= double(dim), mean_gy /= double(dim);
    for (int64_t c = 0; c < dim; ++c)
      gi[c] = static_cast<float>(inv_std[i] * (gi[c] - mean_g - yi[c] * mean_gy));
  }
}

// One cluster of one (b, h): its gathered (and normalised) rows, causal limits, O and LSE.
struct ClusterTask {
  int64_t nq = 0, nk = 0, dim = 0, dim_v = 0;
  float scale = 1.0f;
  std::vector<float> q, k, v, o, lse, q_inv, k_inv;
  std::vector<int64_t> limit;

  AttentionArgs args() {
    AttentionArgs a;
    a.q = TensorView::contiguous(q.data(), DType::kF32, {1, 1, nq, dim});
    a.k = TensorView::contiguous(k.data(), DType::kF32, {1, 1, nk, dim});
    a.v = TensorView::contiguous(v.data(), DType::kF32, {1, 1, nk, dim_v});
    a.out = MutableTensorView::contiguous(o.data(), DType::kF32, {1, 1, nq, dim_v});
    a.lse = MutableTensorView::contiguous(lse.data(), DType::kF32, {1, 1, nq, 1});
    a.scale = scale;
    a.threads = 1;
    return a;
  }
};

// Gathers cluster c of (b, h) and runs its attention (O, LSE); pairs added to *pairs.
ClusterTask run_cluster(const AttentionArgs& args, const RoutingClusters& cluster, int64_t c,
                        int64_t b, int64_t h, const ClusterAttention& how, int64_t* pairs) {
  const Dims d = dims_of(PlanInputs::of(args));
  const auto& qs = cluster.queries[c];
  const auto& ks = cluster.keys[c];
  ClusterTask t;
  t.nq = static_cast<int64_t>(qs.size()), t.nk = static_cast<int64_t>(ks.size());
  t.dim = d.dim, t.dim_v = args.v.shape[3];
  t.scale = how.layer_norm ? 1.0f : effective_scale(args);
  t.q.resize(t.nq * d.dim), t.k.resize(t.nk * d.dim), t.v.resize(t.nk * t.dim_v);
  cpu::gather_rows(args.q, b, h, qs.data(), t.nq, t.q.data());
  if (how.share_qk) {
    cpu::gather_rows(args.q, b, h, ks.data(), t.nk, t.k.data());
  } else {
    cpu::gather_rows(args.k, b, h / d.group, ks.data(), t.nk, t.k.data());
  }
  cpu::gather_rows(args.v, b, h / d.group, ks.data(), t.nk, t.v.data());
  if (how.layer_norm) {
    layer_norm_rows(&t.q, t.nq, d.dim, &t.q_inv);
    layer_norm_rows(&t.k, t.nk, d.dim, &t.k_inv);
  }
  t.limit.assign(t.nq, t.nk);
  if (args.causal)
    for (int64_t r = 0; r < t.nq; ++r)
      t.limit[r] = std::upper_bound(ks.begin(), ks.end(), qs[r] + d.nk - d.nq) - ks.begin();
  t.o.assign(t.nq * t.dim_v, 0.0f);
  t.lse.assign(t.nq, -std::numeric_limits<float>::infinity());
  if (t.nq == 0 || t.nk == 0) return t;
  AttentionArgs a = t.args();
  a.attended_pairs = pairs;
  attention(a, staircase_mask(t.limit, t.nk));
  return t;
}

}  // namespace

void clusters_forward(const AttentionArgs& args, const std::vector<RoutingClusters>& clusters,
                      const ClusterAttention& how) {
  const Dims d = dims_of(PlanInputs::of(args));
  const int64_t dim_v = args.v.shape[3], n_clusters = how.clusters;
  const int64_t tasks = d.batch * d.heads_q * n_clusters;
  std::vector<ClusterTask> done(tasks);
#pragma omp parallel for schedule(dynamic, 1) num_threads(effective_threads(args.threads))
  for (int64_t t = 0; t < tasks; ++t) {
    const int64_t bh = t / n_clusters, c = t % n_clusters;
    const int64_t b = bh / d.heads_q, h = bh % d.heads_q;
    if (h < how.first_head) continue;  // local heads
    done[t] = run_cluster(args, clusters[bh], c, b, h, how, args.attended_pairs);
  }
  // Scatter back: mean of O over a query's clusters, largest LSE.
#pragma omp parallel for schedule(dynamic, 1) num_threads(effective_threads(args.threads))
  for (int64_t bh = 0; bh < d.batch * d.heads_q; ++bh) {
    const int64_t b = bh / d.heads_q, h = bh % d.heads_q;
    if (h < how.first_head) continue;
    std::vector<float> sum(d.nq * dim_v, 0.0f), lse(d.nq, -std::numeric_limits<float>::infinity());
    std::vector<int32_t> count(d.nq, 0);
    for (int64_t c = 0; c < n_clusters; ++c) {
      const auto& qs = clusters[bh].queries[c];
      const ClusterTask& t = done[bh * n_clusters + c];
      for (size_t r = 0; r < qs.size(); ++r) {
        ++count[qs[r]];
        for (int64_t x = 0; x < dim_v; ++x) sum[qs[r] * dim_v + x] += t.o[r * dim_v + x];
        lse[qs[r]] = std::max(lse[qs[r]], t.lse[r]);
      }
    }
    for (int64_t i = 0; i < d.nq; ++i) {
      float* dst = args.out.row<float>(b, h, i);
      const float inv = count[i] > 0 ? 1.0f / static_cast<float>(count[i]) : 0.0f;
      for (int64_t x = 0; x < dim_v; ++x) dst[x * args.out.stride[3]] = sum[i * dim_v + x] * inv;
      if (!args.lse.empty()) *args.lse.row<float>(b, h, i) = lse[i];
    }
  }
}

void clusters_backward(const BackwardArgs& args, const std::vector<RoutingClusters>& clusters,
                       const ClusterAttention& how, std::vector<float>* head_dk,
                       std::vector<float>* head_dv) {
  const AttentionArgs& f = args.forward;
  const Dims d = dims_of(PlanInputs::of(f));
  const int64_t dim_v = f.v.shape[3], n_clusters = how.clusters;
#pragma omp parallel for schedule(dynamic, 1) num_threads(effective_threads(f.threads))
  for (int64_t bh = 0; bh < d.batch * d.heads_q; ++bh) {
    const int64_t b = bh / d.heads_q, h = bh % d.heads_q;
    if (h < how.first_head) continue;
    // 1. Each cluster's forward again (its own O and LSE), and which cluster gave each query its
    //    LSE (the largest; the first on ties).
    std::vector<ClusterTask> tasks(n_clusters);
    std::vector<int32_t> count(d.nq, 0), best(d.nq, -1);
    std::vector<float> best_lse(d.nq, -std::numeric_limits<float>::infinity());
    for (int64_t c = 0; c < n_clusters; ++c) {
      tasks[c] = run_cluster(f, clusters[bh], c, b, h, how, nullptr);
      const auto& qs = clusters[bh].queries[c];
      for (size_t r = 0; r < qs.size(); ++r) {
        ++count[qs[r]];
        if (best[qs[r]] < 0 || tasks[c].lse[r] > best_lse[qs[r]])
          best[qs[r]] = static_cast<int32_t>(c), best_lse[qs[r]] = tasks[c].lse[r];
      }
    }
    // 2. Each cluster's backward with dO / count and the LSE's gradient where it was the largest,
    //    through the layer norms, scattered back in cluster order.
    std::vector<float> acc_dq(d.nq * d.dim, 0.0f), dout, dlse, dq, dk, dv;
    float* acc_dk = head_dk->data() + bh * d.nk * d.dim;
    float* acc_dv = head_dv->data() + bh * d.nk * dim_v;
    for (int64_t c = 0; c < n_clusters; ++c) {
      ClusterTask& t = tasks[c];
      const auto& qs = clusters[bh].queries[c];
      const auto& ks = clusters[bh].keys[c];
      const int64_t nq = t.nq, nk = t.nk;
      if (nq == 0 || nk == 0) continue;
      dout.resize(nq * dim_v), dlse.assign(nq, 0.0f);
      cpu::gather_rows(args.dout, b, h, qs.data(), nq, dout.data());
      for (int64_t r = 0; r < nq; ++r) {
        const float share = 1.0f / static_cast<float>(count[qs[r]]);
        for (int64_t x = 0; x < dim_v; ++x) dout[r * dim_v + x] *= share;
        if (!args.dlse.empty() && best[qs[r]] == c) dlse[r] = args.dlse.get(b, h, qs[r], 0);
      }
      dq.resize(nq * d.dim), dk.resize(nk * d.dim), dv.resize(nk * dim_v);
      BackwardArgs step;
      step.forward = t.args();
      step.dout = TensorView::contiguous(dout.data(), DType::kF32, {1, 1, nq, dim_v});
      step.dlse = TensorView::contiguous(dlse.data(), DType::kF32, {1, 1, nq, 1});
      step.dq = MutableTensorView::contiguous(dq.data(), DType::kF32, {1, 1, nq, d.dim});
      step.dk = MutableTensorView::contiguous(dk.data(), DType::kF32, {1, 1, nk, d.dim});
      step.dv = MutableTensorView::contiguous(dv.data(), DType::kF32, {1, 1, nk, dim_v});
      attention_backward(step, staircase_mask(t.limit, nk));
      if (how.layer_norm) {
        layer_norm_backward(t.q, t.q_inv, nq, d.dim, &dq);
        layer_norm_backward(t.k, t.k_inv, nk, d.dim, &dk);
      }
      for (int64_t r = 0; r < nq; ++r)
        for (int64_t x = 0; x < d.dim; ++x) acc_dq[qs[r] * d.dim + x] += dq[r * d.dim + x];
      // Shared QK: the keys are queries of this head, so their gradient is Q's.
      float* key_grad = how.share_qk ? acc_dq.data() : acc_dk;
      for (int64_t j = 0; j < nk; ++j) {
        for (int64_t x = 0; x < d.dim; ++x) key_grad[ks[j] * d.dim + x] += dk[j * d.dim + x];
        for (int64_t x = 0; x < dim_v; ++x) acc_dv[ks[j] * dim_v + x] += dv[j * dim_v + x];
      }
    }
    for (int64_t i = 0; i < d.nq; ++i)
      std::copy_n(acc_dq.data() + i * d.dim, d.dim, args.dq.row<float>(b, h, i));
  }
}

}  // namespace attnkit::dynamic_patterns
