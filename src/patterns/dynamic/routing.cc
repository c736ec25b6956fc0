// routing: Routing Transformer, content-based sparse attention with online k-means
// (Roy, Saffar, Vaswani, Grangier, arXiv 2003.05997, TACL 2021).
//
// The paper splits the heads of every routing layer: local_heads heads do local attention and
// the others do content-based routing (PG-19: 8 heads, half local, local query block 256 with a
// memory flange of 256; routing alone leaves queries that no cluster selects without output).
//
// Local heads (query heads h < local_heads, counted over all Hq heads, so a GQA group may hold
// both kinds), L = local_block, positions bottom-right aligned (pos = i + Nk - Nq):
//   block_start = floor(pos / L) * L;  query i sees keys j with block_start - L <= j < block_start + L
//   AND (causal) j <= pos, i.e. causally its own query block plus the previous L keys.
//   Exact softmax over that set (O and LSE per row), on the block-sparse kernel.
// Routing heads (h >= local_heads), per (batch, query head), C = clusters (default
// max(1, Nk / window)), w = window (512):
//   x = L2-normalised q (queries) and k (keys); centroids mu = spherical k-means of the input
//   Q_c = top-w queries by x_q . mu_c, K_c = top-w keys by x_k . mu_c   (balanced routing)
//   O_c = softmax(Q_c K_c^T * scale + causal(pos_k <= pos_q)) V_c   inside each cluster, with
//         causality by ORIGINAL positions (bottom-right aligned)
//   scatter back: a query routed to several clusters gets the mean of its outputs (lucidrains'
//   scatter_mean); a query routed nowhere gets O = 0 and LSE = -inf.
// Defaults: local_heads -1 = floor(Hq / 2) (the paper's half split), local_block 256 (PG-19);
// window 512 and C = Nk / window (PG-19 setting: 16 clusters of 512 at 8192;
// lucidrains: num_clusters = max_seq_len // window_size); iters 4 (see routing_kmeans.cc for the
// k-means and routing choices).
// Choices, documented:
// - local_heads larger than Hq is clamped to Hq (all heads local); 0 is pure routing.
// - The first local_heads query heads overall are local (not the first ones of each GQA group):
//   the simplest rule to state; with local_heads a multiple of the group size whole KV heads
//   serve one kind.
// - Without causality a local query sees its whole block and the previous one.
// - LSE of a query in several clusters is the largest of its per-cluster LSEs: the mass of the
//   best single key set, a lower bound of the union's mass (the clusters' key sets may overlap,
//   so their masses cannot be added). O is the mean, as in the paper's code, so O and LSE are
//   not one softmax when a query lands twice.
// - The self-position mask of shared-QK decoders is not applied (Q and K are not tied here).
// - plan() reports the element mask (heads = Hq): local heads their local pairs, routing heads
//   the pairs some cluster attends (in original order); run() is its own (averaging cannot be
//   expressed as one block-sparse pass). Routing (k-means + top-w) is the planning stage; the
//   per-cluster attention is the fused kernel on gathered copies, with a staircase BlockMask
//   for causality by original positions; the local heads run the kernel on head-subset views.
// - RunStats.pairs / density average over all (batch, head) slices, both kinds.
#include "patterns/dynamic/routing.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <memory>
#include <vector>

#include "attnkit/error.h"
#include "attnkit/pattern.h"
#include "core/timing.h"
#include "kernels/cpu/planner_ops.h"
#include "patterns/dynamic/planner.h"

namespace attnkit {
namespace {

constexpr char kName[] = "routing";
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
  BlockMask m;
  m.q_block = m.kv_block = kTile;
  m.nq = static_cast<int64_t>(limit.size());
  m.nk = nk;
  m.row_start.push_back(0);
  for (int64_t qb = 0; qb < m.q_blocks(); ++qb) {
    const int64_t r0 = qb * kTile, r1 = std::min(m.nq, r0 + kTile);
    const int64_t low = limit[r0], high = limit[r1 - 1];  // non-decreasing in r
    for (int64_t kb = 0; kb * kTile < high; ++kb) {
      m.kv_index.push_back(static_cast<int32_t>(kb));
      m.kind.push_back(std::min(nk, (kb + 1) * kTile) <= low ? BlockKind::kFull : BlockKind::kPartial);
    }
    m.row_start.push_back(static_cast<int64_t>(m.kv_index.size()));
  }
  m.predicate = std::make_shared<StaircaseRule>(limit);
  m.validate();
  return m;
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
std::vector<std::vector<planner::Entry>> local_entries(const LocalRule& rule, int64_t nq,
                                                       int64_t nk, bool causal) {
  const int64_t q_blocks = (nq + kTile - 1) / kTile;
  std::vector<std::vector<planner::Entry>> lists(q_blocks);
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
      lists[qb].push_back({static_cast<int32_t>(kb), full ? BlockKind::kFull : BlockKind::kPartial});
    }
  }
  return lists;
}

BlockMask local_mask(const LocalRule& rule, int64_t nq, int64_t nk, bool causal) {
  BlockMask m;
  m.q_block = m.kv_block = kTile;
  m.nq = nq;
  m.nk = nk;
  m.row_start.push_back(0);
  for (const auto& list : local_entries(rule, nq, nk, causal)) {
    for (const auto& e : list) {
      m.kv_index.push_back(e.kv_index);
      m.kind.push_back(e.kind);
    }
    m.row_start.push_back(static_cast<int64_t>(m.kv_index.size()));
  }
  m.predicate = std::make_shared<LocalRule>(rule);
  m.validate();
  return m;
}

// Heads [h0, h0 + count) of a [B, H, N, D] view.
TensorView head_slice(TensorView view, int64_t h0, int64_t count) {
  view.data = static_cast<char*>(view.data) + h0 * view.stride[1] * dtype_size(view.dtype);
  view.shape[1] = count;
  return view;
}

// Local heads of args: one kernel call per KV head on the view of its local query heads, LSE
// through a contiguous scratch. Returns the attended pairs summed over batch and heads.
double run_local(const AttentionArgs& args, const planner::Dims& d, int64_t local_heads,
                 int64_t block) {
  const LocalRule rule(block, d.nk - d.nq);
  const BlockMask mask = local_mask(rule, d.nq, d.nk, args.causal);
  int64_t pairs = 0;
  for (int64_t g = 0; g * d.group < local_heads; ++g) {
    const int64_t h0 = g * d.group, count = std::min(local_heads, h0 + d.group) - h0;
    AttentionArgs a = args;
    a.q = head_slice(args.q, h0, count);
    a.k = head_slice(args.k, g, 1);
    a.v = head_slice(args.v, g, 1);
    a.out = head_slice(args.out, h0, count);
    std::vector<float> lse(args.lse ? d.batch * count * d.nq : 0);
    a.lse = args.lse ? lse.data() : nullptr;
    a.attended_pairs = &pairs;
    attention(a, mask);
    if (args.lse)
      for (int64_t b = 0; b < d.batch; ++b)
        std::copy_n(lse.data() + b * count * d.nq, count * d.nq,
                    args.lse + (b * d.heads_q + h0) * d.nq);
  }
  return static_cast<double>(pairs);
}

// Pairs any cluster attends: (i, j) allowed iff i and j share a cluster.
class RoutingRule final : public TilePredicate {
 public:
  RoutingRule(std::vector<routing::Clusters> clusters, int64_t heads, int64_t nq, int64_t nk)
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
  static std::vector<std::vector<int32_t>> memberships(const std::vector<std::vector<int32_t>>& members,
                                                       int64_t n) {
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
    if (h < local_heads_) local_.fill(b, h, q0, nq, k0, nk, allow, ld);
    else routing_.fill(b, h, q0, nq, k0, nk, allow, ld);
  }

 private:
  int64_t local_heads_;
  LocalRule local_;
  RoutingRule routing_;
};

class Routing final : public Pattern {
 public:
  explicit Routing(const PatternParams& params) : canonical_(params.canonical()) {
    p_.clusters = planner::int_param(params, kName, "clusters", 0, 1 << 20);
    p_.window = planner::int_param(params, kName, "window", 1, int64_t{1} << 30);
    p_.iters = planner::int_param(params, kName, "iters", 0, 1000);
    local_heads_ = planner::int_param(params, kName, "local_heads", -1, 1 << 20);
    local_block_ = planner::int_param(params, kName, "local_block", 1, int64_t{1} << 30);
  }
  std::string name() const override { return kName; }
  std::string spec() const override { return std::string(kName) + ":" + canonical_; }
  Plan plan(const AttentionArgs& args) const override;
  RunStats run(const AttentionArgs& args) const override;

 private:
  // Query heads that attend locally for this shape (-1: floor(Hq / 2); clamped to Hq).
  int64_t local_heads(int64_t heads_q) const {
    return local_heads_ < 0 ? heads_q / 2 : std::min(local_heads_, heads_q);
  }
  // Routing parameters with the local heads skipped.
  routing::RoutingParams routed(int64_t heads_q) const {
    routing::RoutingParams p = p_;
    p.first_head = local_heads(heads_q);
    return p;
  }

  routing::RoutingParams p_;
  int64_t local_heads_ = -1, local_block_ = 256;
  std::string canonical_;
};

RunStats Routing::run(const AttentionArgs& args) const {
  validate(args);
  const double start = now_seconds();
  const planner::Dims d = planner::dims_of(args);
  const int64_t local = local_heads(d.heads_q);
  const auto clusters = routing::route(args, routed(d.heads_q));
  RunStats stats;
  stats.plan_seconds = now_seconds() - start;
  const int64_t n_clusters = routing::cluster_count(p_, d.nk);
  const int64_t tasks = d.batch * d.heads_q * n_clusters;
  const float scale = effective_scale(args);
  std::vector<std::vector<float>> task_o(tasks), task_lse(tasks);
  double pairs = 0.0;
#pragma omp parallel for schedule(dynamic, 1) reduction(+ : pairs) \
    num_threads(effective_threads(args.threads))
  for (int64_t t = 0; t < tasks; ++t) {
    const int64_t bh = t / n_clusters, c = t % n_clusters;
    const int64_t b = bh / d.heads_q, h = bh % d.heads_q;
    if (h < local) continue;  // local heads: run_local below
    const auto& qs = clusters[bh].queries[c];
    const auto& ks = clusters[bh].keys[c];
    const int64_t nq = static_cast<int64_t>(qs.size()), nk = static_cast<int64_t>(ks.size());
    std::vector<float> q(nq * d.dim), k(nk * d.dim), v(nk * d.dim_v);
    kernels::gather_rows(args.q, b, h, qs.data(), nq, q.data());
    kernels::gather_rows(args.k, b, h / d.group, ks.data(), nk, k.data());
    kernels::gather_rows(args.v, b, h / d.group, ks.data(), nk, v.data());
    std::vector<int64_t> limit(nq, nk);
    if (args.causal)
      for (int64_t r = 0; r < nq; ++r)
        limit[r] = std::upper_bound(ks.begin(), ks.end(), qs[r] + d.nk - d.nq) - ks.begin();
    for (int64_t r = 0; r < nq; ++r) pairs += double(limit[r]);
    task_o[t].assign(nq * d.dim_v, 0.0f);
    task_lse[t].assign(nq, -std::numeric_limits<float>::infinity());
    if (nq == 0 || nk == 0) continue;
    AttentionArgs a;
    a.q = planner::contiguous(q.data(), nq, d.dim);
    a.k = planner::contiguous(k.data(), nk, d.dim);
    a.v = planner::contiguous(v.data(), nk, d.dim_v);
    a.out = planner::contiguous(task_o[t].data(), nq, d.dim_v);
    a.lse = task_lse[t].data();
    a.scale = scale;
    a.threads = 1;
    attention(a, staircase_mask(limit, nk));
  }
  // Scatter back: mean of O over a query's clusters, largest LSE.
#pragma omp parallel for schedule(dynamic, 1) num_threads(effective_threads(args.threads))
  for (int64_t bh = 0; bh < d.batch * d.heads_q; ++bh) {
    const int64_t b = bh / d.heads_q, h = bh % d.heads_q;
    if (h < local) continue;
    std::vector<float> sum(d.nq * d.dim_v, 0.0f), lse(d.nq, -std::numeric_limits<float>::infinity());
    std::vector<int32_t> count(d.nq, 0);
    for (int64_t c = 0; c < n_clusters; ++c) {
      const auto& qs = clusters[bh].queries[c];
      const int64_t t = bh * n_clusters + c;
      for (size_t r = 0; r < qs.size(); ++r) {
        ++count[qs[r]];
        for (int64_t x = 0; x < d.dim_v; ++x) sum[qs[r] * d.dim_v + x] += task_o[t][r * d.dim_v + x];
        lse[qs[r]] = std::max(lse[qs[r]], task_lse[t][r]);
      }
    }
    for (int64_t i = 0; i < d.nq; ++i) {
      float* dst = args.out.row<float>(b, h, i);
      const float inv = count[i] > 0 ? 1.0f / static_cast<float>(count[i]) : 0.0f;
      for (int64_t x = 0; x < d.dim_v; ++x) dst[x * args.out.stride[3]] = sum[i * d.dim_v + x] * inv;
      if (args.lse) args.lse[bh * d.nq + i] = lse[i];
    }
  }
  if (local > 0) pairs += run_local(args, d, local, local_block_);
  stats.pairs = pairs / double(std::max<int64_t>(1, d.batch * d.heads_q));
  stats.density = d.nq * d.nk > 0 ? stats.pairs / (double(d.nq) * d.nk) : 0.0;
  return stats;
}

Plan Routing::plan(const AttentionArgs& args) const {
  validate(args);
  const double start = now_seconds();
  const planner::Dims d = planner::dims_of(args);
  const int64_t local = local_heads(d.heads_q);
  auto clusters = routing::route(args, routed(d.heads_q));
  const LocalRule local_rule(local_block_, d.nk - d.nq);
  const auto local_lists = local_entries(local_rule, d.nq, d.nk, args.causal);
  const int64_t q_blocks = (d.nq + kTile - 1) / kTile, kv_blocks = (d.nk + kTile - 1) / kTile;
  std::vector<std::vector<planner::Entry>> lists(d.batch * d.heads_q * q_blocks);
  for (int64_t bh = 0; bh < d.batch * d.heads_q; ++bh) {
    if (bh % d.heads_q < local) {
      std::copy(local_lists.begin(), local_lists.end(), lists.begin() + bh * q_blocks);
      continue;
    }
    std::vector<uint8_t> touched(q_blocks * kv_blocks, 0);
    for (size_t c = 0; c < clusters[bh].queries.size(); ++c) {
      std::vector<int64_t> kbs;
      for (int32_t j : clusters[bh].keys[c]) kbs.push_back(j / kTile);
      kbs.erase(std::unique(kbs.begin(), kbs.end()), kbs.end());
      int64_t last_qb = -1;
      for (int32_t i : clusters[bh].queries[c]) {
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
  plan.mask = planner::mask_from_entries(
      args, kTile, kTile, d.heads_q, std::move(lists),
      std::make_shared<SplitRule>(local, local_rule,
                                  RoutingRule(std::move(clusters), d.heads_q, d.nq, d.nk)));
  plan.plan_seconds = now_seconds() - start;
  return plan;
}

const bool registered = register_pattern(
    {kName,
     "Routing Transformer: half the heads local block attention (block + flange), the others "
     "k-means on normalised Q/K (computed on the input), balanced top-w tokens per cluster, "
     "causal attention inside clusters, outputs averaged back",
     "Roy et al. 2021, Efficient Content-Based Sparse Attention with Routing Transformers "
     "(arXiv 2003.05997)",
     {{"clusters", "0", "clusters (0: max(1, Nk / window))"},
      {"window", "512", "tokens routed to each cluster"},
      {"iters", "4", "spherical k-means iterations on the input"},
      {"local_heads", "-1",
       "first query heads doing causal local block attention (-1: floor(Hq / 2); 0: all routing)"},
      {"local_block", "256", "local heads: query block and memory flange (previous keys) size"}}},
    [](const PatternParams& params) -> std::unique_ptr<Pattern> {
      return std::make_unique<Routing>(params);
    });

}  // namespace
}  // namespace attnkit
