// routing: Routing Transformer, content-based sparse attention with online k-means
// (Roy, Saffar, Vaswani, Grangier, arXiv 2003.05997, TACL 2021).
//
// The paper splits the heads of a routing layer: local_heads heads do local attention and the
// others do content-based routing (routing alone leaves queries that no cluster selects without
// output). The released configs: wikitext-103 and enwik8 split the heads in half (e.g. 4 local +
// 4 routing); PG-19 (pg19_local_cluster8k) uses 8 heads, 6 local + 2 routing, with routing only
// in the top layer, local query blocks of 256 with a memory flange of 256.
//
// Local heads (query heads h < local_heads, counted over all Hq heads, so a GQA group may hold
// both kinds), L = local_block, positions bottom-right aligned (pos = i + Nk - Nq):
//   block_start = floor(pos / L) * L;  query i sees keys j with block_start - L <= j < block_start
//   + L AND (causal) j <= pos, i.e. causally its own query block plus the previous L keys. Exact
//   softmax over that set (O and LSE per row), on the block-sparse kernel.
// Routing heads (h >= local_heads), per (batch, query head), C = clusters (default
// max(1, Nk / window)), w = window (512):
//   x = L2-normalised q (queries) and k (keys); centroids mu = spherical k-means of the input
//   Q_c = top-w queries by x_q . mu_c, K_c = top-w keys by x_k . mu_c   (balanced routing)
//   O_c = softmax(logits(Q_c, K_c) + causal(pos_k <= pos_q)) V_c   inside each cluster, with
//         causality by ORIGINAL positions (bottom-right aligned), where
//     logits=ln (default, the official code's clustered_local_attention_helper):
//           LN(q) . LN(k), LN = layer norm over the head dim without gain or bias (eps 1e-6),
//           and no 1/sqrt(d) (the normalisation replaces it: logits are of order +-d);
//     logits=raw: scale * q . k, the dense attention's own logits (an approximation of it).
//   share_qk=1 (the official decoder): K = Q, one routing for queries and keys; the values
//   are still V. Needs Nq = Nk.
//   scatter back: a query routed to several clusters gets the mean of its outputs (lucidrains'
//   scatter_mean; Google divides by count + 1e-2, a 1% shrink we leave out); a query routed
//   nowhere gets O = 0 and LSE = -inf.
// Defaults: local_heads -1 = floor(Hq / 2) (the wikitext-103 / enwik8 split; PG-19 would be
// local_heads=6 of 8), local_block 256; window 512 and C = Nk / window (PG-19 setting: 16
// clusters of 512 at 8192; lucidrains: num_clusters = max_seq_len // window_size); iters 4 (see
// routing_kmeans.cc for the k-means and routing choices), logits ln, share_qk 0.
// Choices, documented:
// - Centroids come from k-means on each input: the trained EMA centroids are not available.
// - local_heads larger than Hq is clamped to Hq (all heads local); 0 is pure routing.
// - The first local_heads query heads overall are local (not the first ones of each GQA group):
//   the simplest rule to state; with local_heads a multiple of the group size whole KV heads
//   serve one kind. (Google puts the routing heads first; the order does not matter.)
// - Without causality a local query sees its whole block and the previous one.
// - LSE of a query in several clusters is the largest of its per-cluster LSEs: the mass of the
//   best single key set, a lower bound of the union's mass (the clusters' key sets may overlap,
//   so their masses cannot be added). O is the mean, as in the paper's code, so O and LSE are
//   not one softmax when a query lands twice. With logits=ln the routing heads compute another
//   function than dense attention, so their LSE is not comparable with the dense LSE.
// - The self-position mask of shared-QK decoders is not applied.
// - Relative position logits (on in every official config) are model-side and not modelled.
// - plan() routes (k-means + top-w: the planning stage) and reports the element mask
//   (heads = Hq): local heads their local pairs, routing heads the pairs some cluster attends
//   (in original order). execute() runs from the plan's clusters (averaging cannot be expressed
//   as one block-sparse pass): the per-cluster attention is the fused kernel on gathered copies,
//   with a staircase BlockMask for causality by original positions; the local heads run the
//   kernel on head-subset views.
// - RunStats.pairs / density average over all (batch, head) slices, both kinds.
// - Bounded work: at least 16 keys per cluster on average (C <= Nk / 16), routed pairs C * w^2
//   at most 4 x the dense pairs, k-means C * (Nq + Nk) * (iters + 1) dot products at most 2 x
//   (each plus 2^20 for tiny inputs); plan() refuses each with an error naming the pattern.
#include "patterns/dynamic/routing.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <memory>
#include <type_traits>
#include <vector>

#include "attnkit/error.h"
#include "core/attention_args.h"
#include "kernels/cpu/planner_ops.h"
#include "patterns/dynamic/dynamic_patterns.h"
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

int64_t floor_div(int64_t a, int64_t b) { return a >= 0 ? a / b : -((-a + b - 1) / b); }

// Local heads: query i (position pos = i + off, off = Nk - Nq) sees keys in
// [block_start - block, block_start + block); the kernel ANDs causality.
class LocalRule final : public TilePredicate {
 public:
  LocalRule(int64_t block, int64_t off) : block_(block), off_(off) {}
  // Allowed key range [lo, hi) of row i, before causality and clamping.
  std::pair<int64_t, int64_t> range(int64_t i) const {
    const int64_t start = floor_div(i + off_, block_) * block_;
    return {start - block_, start + block_};
  }
  void fill(int64_t, int64_t, int64_t q0, int64_t nq, int64_t k0, int64_t nk, uint8_t* allow,
            int64_t ld) const override {
    for (int64_t r = 0; r < nq; ++r) {
      const auto [lo, hi] = range(q0 + r);
      for (int64_t j = 0; j < nk; ++j) allow[r * ld + j] = k0 + j >= lo && k0 + j < hi;
    }
  }
  bool same_for_all_heads() const override { return true; }

 private:
  int64_t block_, off_;
};

// Entries of the local rule per query tile (kTile x kTile blocks), causality-trimmed.
std::vector<std::vector<BlockEntry>> local_entries(const LocalRule& rule, int64_t nq, int64_t nk,
                                                   bool causal) {
  const int64_t q_blocks = (nq + kTile - 1) / kTile;
  std::vector<std::vector<BlockEntry>> lists(q_blocks);
  for (int64_t qb = 0; qb < q_blocks; ++qb) {
    const int64_t r0 = qb * kTile, r1 = std::min(nq, r0 + kTile);
    // Ranges are non-decreasing in i: the union is [lo(r0), hi(r1-1)), the intersection
    // [lo(r1-1), hi(r0)).
    int64_t lo = std::max<int64_t>(0, rule.range(r0).first);
    int64_t hi = std::min(nk, rule.range(r1 - 1).second);
    if (causal) hi = std::min(hi, r1 - 1 + nk - nq + 1);
    const int64_t full_lo = rule.range(r1 - 1).first, full_hi = rule.range(r0).second;
    if (hi <= lo) continue;
    for (int64_t kb = lo / kTile; kb * kTile < hi; ++kb) {
      const int64_t k0 = kb * kTile, k1 = std::min(nk, k0 + kTile);
      const bool full = k0 >= full_lo && k1 <= full_hi;
      lists[qb].push_back(
          {static_cast<int32_t>(kb), full ? BlockKind::kFull : BlockKind::kPartial});
    }
  }
  return lists;
}

BlockMask local_mask(const LocalRule& rule, int64_t nq, int64_t nk, bool causal) {
  BlockMaskShape shape;
  shape.nq = nq;
  shape.nk = nk;
  shape.q_block = shape.kv_block = kTile;
  return block_mask_from_entries(shape, std::make_shared<LocalRule>(rule),
                                 local_entries(rule, nq, nk, causal));
}

// Heads [h0, h0 + count) of a [B, H, N, D] view.
template <class View>
View head_slice(View view, int64_t h0, int64_t count) {
  using Byte = std::conditional_t<std::is_same_v<View, TensorView>, const char, char>;
  view.data = static_cast<Byte*>(view.data) + h0 * view.stride[1] * dtype_size(view.dtype);
  view.shape[1] = count;
  return view;
}

// Layer norm of each row without gain or bias: (x - mean) / sqrt(var + 1e-6).
void layer_norm_rows(std::vector<float>* x, int64_t n, int64_t dim) {
  for (int64_t i = 0; i < n; ++i) {
    float* row = x->data() + i * dim;
    double mean = 0.0, var = 0.0;
    for (int64_t c = 0; c < dim; ++c) mean += row[c];
    mean /= static_cast<double>(dim);
    for (int64_t c = 0; c < dim; ++c) var += (row[c] - mean) * (row[c] - mean);
    var /= static_cast<double>(dim);
    const double inv = 1.0 / std::sqrt(var + 1e-6);
    for (int64_t c = 0; c < dim; ++c) row[c] = static_cast<float>((row[c] - mean) * inv);
  }
}

// Local heads of args: one kernel call per KV head on the view of its local query heads (the
// kernel adds its pairs to args.attended_pairs).
void run_local(const AttentionArgs& args, const Dims& d, int64_t local_heads, int64_t block) {
  const LocalRule rule(block, d.nk - d.nq);
  const BlockMask mask = local_mask(rule, d.nq, d.nk, args.causal);
  for (int64_t g = 0; g * d.group < local_heads; ++g) {
    const int64_t h0 = g * d.group, count = std::min(local_heads, h0 + d.group) - h0;
    AttentionArgs a = args;
    a.q = head_slice(args.q, h0, count);
    a.k = head_slice(args.k, g, 1);
    a.v = head_slice(args.v, g, 1);
    a.out = head_slice(args.out, h0, count);
    if (!args.lse.empty()) a.lse = head_slice(args.lse, h0, count);
    attention(a, mask);
  }
}

// Pairs any cluster attends: (i, j) allowed iff i and j share a cluster.
class RoutingRule final : public TilePredicate {
 public:
  RoutingRule(const std::vector<RoutingClusters>& clusters, int64_t heads, int64_t nq, int64_t nk)
      : heads_(heads) {
    for (const auto& c : clusters) {
      member_q_.push_back(memberships(c.queries, nq));
      member_k_.push_back(memberships(c.keys, nk));
    }
  }
  void fill(int64_t b, int64_t h, int64_t q0, int64_t nq, int64_t k0, int64_t nk, uint8_t* allow,
            int64_t ld) const override {
    const auto& mq = member_q_[b * heads_ + h];
    const auto& mk = member_k_[b * heads_ + h];
    for (int64_t r = 0; r < nq; ++r)
      for (int64_t j = 0; j < nk; ++j) {
        const auto& a = mq[q0 + r];
        const auto& c = mk[k0 + j];
        bool shared = false;
        for (int32_t x : a) shared |= std::find(c.begin(), c.end(), x) != c.end();
        allow[r * ld + j] = shared;
      }
  }

 private:
  static std::vector<std::vector<int32_t>> memberships(
      const std::vector<std::vector<int32_t>>& members, int64_t n) {
    std::vector<std::vector<int32_t>> of(n);
    for (size_t c = 0; c < members.size(); ++c)
      for (int32_t t : members[c]) of[t].push_back(static_cast<int32_t>(c));
    return of;
  }
  int64_t heads_;
  std::vector<std::vector<std::vector<int32_t>>> member_q_, member_k_;
};

// plan()'s predicate: local heads the local rule, the others the routing rule.
class SplitRule final : public TilePredicate {
 public:
  SplitRule(int64_t local_heads, LocalRule local, RoutingRule routing)
      : local_heads_(local_heads), local_(local), routing_(std::move(routing)) {}
  void fill(int64_t b, int64_t h, int64_t q0, int64_t nq, int64_t k0, int64_t nk, uint8_t* allow,
            int64_t ld) const override {
    if (h < local_heads_)
      local_.fill(b, h, q0, nq, k0, nk, allow, ld);
    else
      routing_.fill(b, h, q0, nq, k0, nk, allow, ld);
  }

 private:
  int64_t local_heads_;
  LocalRule local_;
  RoutingRule routing_;
};

class RoutingPattern final : public Pattern {
 public:
  explicit RoutingPattern(const PatternParams& params) : Pattern(params, Direction::kCaller) {
    p_.clusters = params.get_int("clusters");
    p_.window = params.get_int("window");
    p_.iters = params.get_int("iters");
    p_.share_qk = params.get_int("share_qk") == 1;
    local_heads_ = params.get_int("local_heads");
    local_block_ = params.get_int("local_block");
    layer_norm_logits_ = params.get_string("logits") == "ln";
  }
  Plan plan(const PlanInputs& in) const override;

 protected:
  void execute(const AttentionArgs& args, const Plan& plan) const override;
  void execute_backward(const BackwardArgs& args, const Plan& plan) const override {
    no_backward(name());
  }

 private:
  // Query heads that attend locally for this shape (-1: floor(Hq / 2); clamped to Hq).
  int64_t local_heads(int64_t heads_q) const {
    return local_heads_ < 0 ? heads_q / 2 : std::min(local_heads_, heads_q);
  }
  // Routing parameters with the local heads skipped.
  RoutingParams routed(int64_t heads_q) const {
    RoutingParams p = p_;
    p.first_head = local_heads(heads_q);
    return p;
  }
  // The routed attention of cluster tasks [b, h, c], causal by original positions.
  void run_clusters(const AttentionArgs& args, const std::vector<RoutingClusters>& clusters) const;

  RoutingParams p_;
  int64_t local_heads_ = -1, local_block_ = 256;
  bool layer_norm_logits_ = true;
};

void RoutingPattern::run_clusters(const AttentionArgs& args,
                                  const std::vector<RoutingClusters>& clusters) const {
  const Dims d = dims_of(PlanInputs::of(args));
  const int64_t dim_v = args.v.shape[3];
  const int64_t local = local_heads(d.heads_q);
  const int64_t n_clusters = routing_cluster_count(p_, d.nk);
  const int64_t tasks = d.batch * d.heads_q * n_clusters;
  const float scale = layer_norm_logits_ ? 1.0f : effective_scale(args);
  std::vector<std::vector<float>> task_o(tasks), task_lse(tasks);
#pragma omp parallel for schedule(dynamic, 1) num_threads(effective_threads(args.threads))
  for (int64_t t = 0; t < tasks; ++t) {
    const int64_t bh = t / n_clusters, c = t % n_clusters;
    const int64_t b = bh / d.heads_q, h = bh % d.heads_q;
    if (h < local) continue;  // local heads: run_local
    const auto& qs = clusters[bh].queries[c];
    const auto& ks = clusters[bh].keys[c];
    const int64_t nq = static_cast<int64_t>(qs.size()), nk = static_cast<int64_t>(ks.size());
    std::vector<float> q(nq * d.dim), k(nk * d.dim), v(nk * dim_v);
    cpu::gather_rows(args.q, b, h, qs.data(), nq, q.data());
    if (p_.share_qk) {
      cpu::gather_rows(args.q, b, h, ks.data(), nk, k.data());
    } else {
      cpu::gather_rows(args.k, b, h / d.group, ks.data(), nk, k.data());
    }
    cpu::gather_rows(args.v, b, h / d.group, ks.data(), nk, v.data());
    if (layer_norm_logits_) {
      layer_norm_rows(&q, nq, d.dim);
      layer_norm_rows(&k, nk, d.dim);
    }
    std::vector<int64_t> limit(nq, nk);
    if (args.causal)
      for (int64_t r = 0; r < nq; ++r)
        limit[r] = std::upper_bound(ks.begin(), ks.end(), qs[r] + d.nk - d.nq) - ks.begin();
    task_o[t].assign(nq * dim_v, 0.0f);
    task_lse[t].assign(nq, -std::numeric_limits<float>::infinity());
    if (nq == 0 || nk == 0) continue;
    AttentionArgs a;
    a.q = TensorView::contiguous(q.data(), DType::kF32, {1, 1, nq, d.dim});
    a.k = TensorView::contiguous(k.data(), DType::kF32, {1, 1, nk, d.dim});
    a.v = TensorView::contiguous(v.data(), DType::kF32, {1, 1, nk, dim_v});
    a.out = MutableTensorView::contiguous(task_o[t].data(), DType::kF32, {1, 1, nq, dim_v});
    a.lse = MutableTensorView::contiguous(task_lse[t].data(), DType::kF32, {1, 1, nq, 1});
    a.scale = scale;
    a.threads = 1;
    a.attended_pairs = args.attended_pairs;
    attention(a, staircase_mask(limit, nk));
  }
  // Scatter back: mean of O over a query's clusters, largest LSE.
#pragma omp parallel for schedule(dynamic, 1) num_threads(effective_threads(args.threads))
  for (int64_t bh = 0; bh < d.batch * d.heads_q; ++bh) {
    const int64_t b = bh / d.heads_q, h = bh % d.heads_q;
    if (h < local) continue;
    std::vector<float> sum(d.nq * dim_v, 0.0f), lse(d.nq, -std::numeric_limits<float>::infinity());
    std::vector<int32_t> count(d.nq, 0);
    for (int64_t c = 0; c < n_clusters; ++c) {
      const auto& qs = clusters[bh].queries[c];
      const int64_t t = bh * n_clusters + c;
      for (size_t r = 0; r < qs.size(); ++r) {
        ++count[qs[r]];
        for (int64_t x = 0; x < dim_v; ++x) sum[qs[r] * dim_v + x] += task_o[t][r * dim_v + x];
        lse[qs[r]] = std::max(lse[qs[r]], task_lse[t][r]);
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

void RoutingPattern::execute(const AttentionArgs& args, const Plan& plan) const {
  const auto& clusters =
      *std::any_cast<std::shared_ptr<const std::vector<RoutingClusters>>>(plan.state);
  const Dims d = dims_of(PlanInputs::of(args));
  const int64_t local = local_heads(d.heads_q);
  if (local < d.heads_q) run_clusters(args, clusters);
  if (local > 0) run_local(args, d, local, local_block_);
}

Plan RoutingPattern::plan(const PlanInputs& in) const {
  in.validate(true);
  const Dims d = dims_of(in);
  check(!p_.share_qk || d.nq == d.nk, "pattern",
        "'routing' with share_qk=1 attends the queries as keys: Nq = " + std::to_string(d.nq) +
            " must equal Nk = " + std::to_string(d.nk));
  const int64_t local = local_heads(d.heads_q);
  // Bounded work: at least 16 keys per cluster on average (selecting members costs a pass per
  // cluster over all tokens), the routed attention within 4 x the dense pairs and the k-means
  // (one dot product per token, cluster and iteration) within 2 x, i.e. about the dense
  // attention's own FLOPs; 2^20 more of each for tiny inputs.
  const int64_t n_clusters = routing_cluster_count(p_, d.nk);
  const double dense = double(d.nq) * double(d.nk), allowance = double(1 << 20);
  const double routed_pairs =
      double(n_clusters) * double(std::min(p_.window, d.nq)) * double(std::min(p_.window, d.nk));
  check(n_clusters <= std::max<int64_t>(1, d.nk / 16), "pattern",
        "'routing' parameter 'clusters' = " + std::to_string(n_clusters) +
            " leaves fewer than 16 of the Nk = " + std::to_string(d.nk) + " keys per cluster");
  check(routed_pairs <= 4.0 * dense + allowance, "pattern",
        "'routing': " + std::to_string(n_clusters) + " clusters of " +
            std::to_string(std::min(p_.window, d.nk)) +
            " tokens attend more than 4 x the dense Nq x Nk pairs; use fewer clusters or a "
            "smaller window");
  check(double(n_clusters) * double(d.nq + d.nk) * double(p_.iters + 1) <= 2.0 * dense + allowance,
        "pattern",
        "'routing': k-means of " + std::to_string(n_clusters) + " clusters x " +
            std::to_string(p_.iters) + " iterations over " + std::to_string(d.nq + d.nk) +
            " tokens costs more than the dense attention; use fewer clusters or iters");
  auto clusters = std::make_shared<std::vector<RoutingClusters>>(route(in, routed(d.heads_q)));
  const LocalRule local_rule(local_block_, d.nk - d.nq);
  const auto local_lists = local_entries(local_rule, d.nq, d.nk, in.causal);
  const int64_t q_blocks = (d.nq + kTile - 1) / kTile, kv_blocks = (d.nk + kTile - 1) / kTile;
  std::vector<std::vector<BlockEntry>> lists(d.batch * d.heads_q * q_blocks);
  for (int64_t bh = 0; bh < d.batch * d.heads_q; ++bh) {
    if (bh % d.heads_q < local) {
      std::copy(local_lists.begin(), local_lists.end(), lists.begin() + bh * q_blocks);
      continue;
    }
    const RoutingClusters& c = (*clusters)[bh];
    std::vector<uint8_t> touched(q_blocks * kv_blocks, 0);
    for (size_t x = 0; x < c.queries.size(); ++x) {
      std::vector<int64_t> kbs;
      for (int32_t j : c.keys[x]) kbs.push_back(j / kTile);
      kbs.erase(std::unique(kbs.begin(), kbs.end()), kbs.end());
      int64_t last_qb = -1;
      for (int32_t i : c.queries[x]) {
        if (i / kTile == last_qb) continue;
        last_qb = i / kTile;
        for (int64_t kb : kbs) touched[last_qb * kv_blocks + kb] = 1;
      }
    }
    for (int64_t qb = 0; qb < q_blocks; ++qb)
      for (int64_t kb = 0; kb < kv_blocks; ++kb)
        if (touched[qb * kv_blocks + kb])
          lists[bh * q_blocks + qb].push_back({static_cast<int32_t>(kb), BlockKind::kPartial});
  }
  Plan plan;
  plan.mask = block_mask_from_entries(
      mask_shape(in, kTile, kTile, d.heads_q),
      std::make_shared<SplitRule>(local, local_rule, RoutingRule(*clusters, d.heads_q, d.nq, d.nk)),
      std::move(lists));
  plan.causal = in.causal;
  plan.state = std::shared_ptr<const std::vector<RoutingClusters>>(std::move(clusters));
  return plan;
}

}  // namespace

PatternRegistration routing_pattern() {
  return {{"routing",
           "Routing Transformer: half the heads local block attention (block + flange), the others "
           "k-means on normalised Q/K (computed on the input), balanced top-w tokens per cluster, "
           "causal attention inside clusters on layer-normalised q, k (or raw logits), outputs "
           "averaged back",
           "Roy et al. 2021, Efficient Content-Based Sparse Attention with Routing Transformers "
           "(arXiv 2003.05997)",
           PatternFamily::kDynamic,
           {int_param("clusters", 0, 0, 1 << 20, "clusters (0: max(1, Nk / window))"),
            int_param("window", 512, 1, int64_t{1} << 30, "tokens routed to each cluster"),
            int_param("iters", 4, 0, 100, "spherical k-means iterations on the input"),
            int_param("local_heads", -1, -1, 1 << 20,
                      "first query heads doing causal local block attention (-1: floor(Hq / 2); "
                      "0: all routing)"),
            int_param("local_block", 256, 1, int64_t{1} << 30,
                      "local heads: query block and memory flange (previous keys) size"),
            choice_param("logits", "ln", {"ln", "raw"},
                         "routing heads: ln = LN(q).LN(k) without 1/sqrt(d) (official); raw = "
                         "scale q.k"),
            int_param("share_qk", 0, 0, 1, "1: keys are the queries (K = Q, one routing)")}},
          &construct_pattern<RoutingPattern>};
}

}  // namespace attnkit::dynamic_patterns
