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
// - Backward (clusters held constant): each cluster's attention is recomputed and differentiated
//   with dO_c = dO / count (the mean) and dLSE_c = dLSE for the cluster whose LSE is the largest
//   (the first on ties; 0 for the others: the max's subgradient), then through the layer norms;
//   with share_qk the keys' gradient flows to Q. The local heads take the block-sparse backward.
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
#include "patterns/dynamic/routing_clusters.h"

namespace attnkit::dynamic_patterns {
namespace {

constexpr int64_t kTile = 64;  // q_block = kv_block of the per-cluster staircase mask

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
  void execute_backward(const BackwardArgs& args, const Plan& plan) const override;

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
  // How the routed heads attend inside their clusters, for this shape.
  ClusterAttention cluster_attention(int64_t heads_q, int64_t nk) const {
    return {local_heads(heads_q), routing_cluster_count(p_, nk), layer_norm_logits_, p_.share_qk};
  }

  RoutingParams p_;
  int64_t local_heads_ = -1, local_block_ = 256;
  bool layer_norm_logits_ = true;
};

void RoutingPattern::execute_backward(const BackwardArgs& args, const Plan& plan) const {
  check_no_dropout(name(), args.forward.dropout);
  const auto& clusters =
      *std::any_cast<std::shared_ptr<const std::vector<RoutingClusters>>>(plan.state);
  const AttentionArgs& f = args.forward;
  const Dims d = dims_of(PlanInputs::of(f));
  const int64_t dim_v = f.v.shape[3], local = local_heads(d.heads_q);
  std::vector<float> head_dk(d.batch * d.heads_q * d.nk * d.dim, 0.0f);
  std::vector<float> head_dv(d.batch * d.heads_q * d.nk * dim_v, 0.0f);
  if (local < d.heads_q)
    clusters_backward(args, clusters, cluster_attention(d.heads_q, d.nk), &head_dk, &head_dv);
  // Local heads: the block-sparse backward per KV head on the view of its local query heads.
  Tensor local_dk({d.batch, d.heads_kv, d.nk, d.dim}, DType::kF32);
  Tensor local_dv({d.batch, d.heads_kv, d.nk, dim_v}, DType::kF32);
  const BlockMask mask = local_mask(LocalRule(local_block_, d.nk - d.nq), d.nq, d.nk, f.causal);
  for (int64_t g = 0; g * d.group < local; ++g) {
    const int64_t h0 = g * d.group, count = std::min(local, h0 + d.group) - h0;
    BackwardArgs step = args;
    step.forward.q = head_slice(f.q, h0, count);
    step.forward.k = head_slice(f.k, g, 1);
    step.forward.v = head_slice(f.v, g, 1);
    step.forward.out = head_slice(f.out, h0, count);
    step.forward.lse = head_slice(f.lse, h0, count);
    step.dout = head_slice(args.dout, h0, count);
    if (!args.dlse.empty()) step.dlse = head_slice(args.dlse, h0, count);
    step.dq = head_slice(args.dq, h0, count);
    step.dk = head_slice(local_dk.view(), g, 1);
    step.dv = head_slice(local_dv.view(), g, 1);
    attention_backward(step, mask);
  }
  // dK, dV of each KV head: its local part, then its routing heads' parts in head order.
  sum_head_gradients(args, head_dk, head_dv, local, local_dk.f32(), local_dv.f32());
}

void RoutingPattern::execute(const AttentionArgs& args, const Plan& plan) const {
  check_no_dropout(name(), args.dropout);
  const auto& clusters =
      *std::any_cast<std::shared_ptr<const std::vector<RoutingClusters>>>(plan.state);
  const Dims d = dims_of(PlanInputs::of(args));
  const int64_t local = local_heads(d.heads_q);
  if (local < d.heads_q) clusters_forward(args, clusters, cluster_attention(d.heads_q, d.nk));
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
