// hyper: HyperAttention (Han et al., arXiv 2310.05869, ICLR 2024; insuhan/hyper-attn).
//
// Rule, per (batch, query head):
//   P ~ N(0, 1)^{d x r}, r = projs (7), fixed by `seed`
//   hash(x) = rank in reflected Gray-code order of sum_i 2^i [x . P_i > 0]   (adjacent buckets
//             differ in one bit, so neighbours in sorted order are close in angle)
//   non_causal(Q, K, V), nq queries, nk keys:
//     if nq < min_seq: exact attention
//     sort queries and keys by hash (stable); nb = ceil(nk / block) blocks;
//     sorted keys [c * block, (c + 1) * block) meet sorted queries [c * nq / nb, (c + 1) * nq / nb)
//     (O1, lse1) = that block-diagonal attention, exact
//     S = `samples` uniform key indices (with replacement) into the sorted keys
//     (O2, lse2) = attention of each query to the keys of S outside its own block;
//                  lse2 += log(nk / samples)        (importance weight of a uniform sample)
//     (O, lse) = exact LSE merge of (O1, lse1) and (O2, lse2), unsorted back
//   causal(Q, K, V) on n x n: if n <= min_seq exact causal; else halves 1, 2:
//     O_1 = causal(Q1, K1);  O_2 = merge(causal(Q2, K2), non_causal(Q2, K1))
// Defaults (README / benchmark argparse): projs 7, block 256, samples 256, min_seq 4096.
// Bounded work: block >= 16, min_seq >= 16 and samples <= min_seq (a hashed call has at least
// min_seq / 2 keys, so its sampled pairs stay within twice its dense pairs and the per-block
// sample gathers within a dense pass).
// Choices, documented:
// - Nq != Nk with causality (bottom-right): the keys before the last Nq are visible to every
//   query, so they form one non_causal call merged with causal() on the trailing Nq x Nq square;
//   queries that see no key (Nq > Nk) get O = 0, LSE = -inf.
// - The sample shift log(nk / samples) is applied even where some samples fell into the
//   query's own block and were excluded (as in the reference code).
// - plan() hashes, sorts and samples (the planning stage, RunStats.plan_seconds) and reports the
//   element mask of the attended pairs in original order (block-diagonal pairs, sampled pairs,
//   exact regions). The 1/samples weights and repeated samples cannot be shown in a mask, so
//   execute() is not the block-sparse kernel over it: it runs the calls from the plan's state,
//   on gathered contiguous copies with the fused kernel (one thread per call; (batch, head)
//   pairs and blocks run in parallel). Attended pairs are the kernel's count: a key sampled
//   twice counts twice (it is attended twice, each with weight nk / samples).
// - Backward: every piece merged by LSE (exact calls, diagonal blocks, sample sets with their
//   shift c) is one softmax over the union of its keys, a piece's key j carrying score s_ij + c.
//   So each piece's gradient is the plain attention backward of that piece run with the merged
//   O and LSE - c (P = exp(s + c - LSE), D = dO . O - dLSE, as for the whole softmax); the pieces'
//   dQ, dK, dV add up (a key sampled twice collects twice). The hash order and the samples are
//   the plan's, held constant.
#include <algorithm>
#include <cmath>
#include <limits>
#include <memory>
#include <random>
#include <vector>

#include "attnkit/error.h"
#include "core/attention_args.h"
#include "kernels/cpu/planner_ops.h"
#include "patterns/dynamic/dynamic_patterns.h"
#include "patterns/dynamic/planner.h"

namespace attnkit::dynamic_patterns {
namespace {

struct HyperParams {
  int64_t projs = 7, block = 256, samples = 256, min_seq = 4096;
  uint64_t seed = 1;
};

// One attention call of the recursion: queries [q0, q0 + nq) against keys [k0, k0 + nk).
struct Call {
  enum Kind { kExactCausal, kExactFull, kHashed } kind;
  int64_t q0, nq, k0, nk;
};

// Decomposes the whole problem into calls (shapes only); they partition the allowed pairs.
void causal_calls(const HyperParams& p, int64_t q0, int64_t k0, int64_t n, std::vector<Call>* out);

void non_causal_call(const HyperParams& p, int64_t q0, int64_t nq, int64_t k0, int64_t nk,
                     std::vector<Call>* out) {
  if (nq <= 0 || nk <= 0) return;
  out->push_back({nq < p.min_seq ? Call::kExactFull : Call::kHashed, q0, nq, k0, nk});
}

void causal_calls(const HyperParams& p, int64_t q0, int64_t k0, int64_t n, std::vector<Call>* out) {
  if (n <= 0) return;
  if (n <= p.min_seq) {
    out->push_back({Call::kExactCausal, q0, n, k0, n});
    return;
  }
  const int64_t half = n / 2;
  causal_calls(p, q0, k0, half, out);
  causal_calls(p, q0 + half, k0 + half, n - half, out);
  non_causal_call(p, q0 + half, n - half, k0, half, out);
}

std::vector<Call> calls_of(const HyperParams& p, int64_t nq, int64_t nk, bool causal) {
  std::vector<Call> calls;
  if (!causal) {
    non_causal_call(p, 0, nq, 0, nk, &calls);
    return calls;
  }
  const int64_t offset = nk - nq;
  if (offset >= 0) {
    non_causal_call(p, 0, nq, 0, offset, &calls);
    causal_calls(p, 0, offset, nq, &calls);
  } else {
    causal_calls(p, -offset, 0, nk, &calls);  // rows before -offset see no key
  }
  return calls;
}

// Hash plan of one hashed call for one (b, h): sorted order and samples.
struct HashedPlan {
  std::vector<int32_t> q_order, k_order;  // sorted position -> index relative to q0 / k0
  std::vector<int32_t> samples;           // sorted-key positions, with repetition
};

int64_t block_count(const HyperParams& p, int64_t nk) { return (nk + p.block - 1) / p.block; }
// Sorted query positions [c * nq / nb, (c + 1) * nq / nb) form query block c.
int64_t query_block_start(int64_t c, int64_t nq, int64_t nb) { return c * nq / nb; }
int64_t query_block_of(int64_t r, int64_t nq, int64_t nb) {
  int64_t c = r * nb / nq;
  while (c + 1 < nb && query_block_start(c + 1, nq, nb) <= r) ++c;
  while (c > 0 && query_block_start(c, nq, nb) > r) --c;
  return c;
}

// The diagonal blocks of a hashed call of nq queries and nk keys: f(r0, r1, j0, j1) for sorted
// query rows [r0, r1) and sorted keys [j0, j1), skipping blocks without queries.
template <class F>
void for_each_block(const HyperParams& p, int64_t nq, int64_t nk, F&& f) {
  const int64_t nb = block_count(p, nk);
  for (int64_t blk = 0; blk < nb; ++blk) {
    const int64_t r0 = query_block_start(blk, nq, nb), r1 = query_block_start(blk + 1, nq, nb);
    const int64_t j0 = blk * p.block, j1 = std::min(nk, j0 + p.block);
    if (r1 > r0) f(r0, r1, j0, j1);
  }
}
// log(nk / samples): the LSE shift of a uniform sample of the nk keys.
float sample_shift(const HyperParams& p, int64_t nk) {
  return p.samples > 0 ? static_cast<float>(std::log(double(nk) / double(p.samples))) : 0.0f;
}

// Rows of the samples outside block `blk` (repeats kept: each carries weight nk / samples) from
// the sorted keys k [nk, D] and values v [nk, Dv] into ks, vs; their sorted positions into
// picked. Returns their count.
int64_t gather_samples(const HyperParams& p, const std::vector<int32_t>& samples, int64_t blk,
                       const std::vector<float>& k, const std::vector<float>& v, int64_t dim,
                       int64_t dim_v, std::vector<float>* ks, std::vector<float>* vs,
                       std::vector<int32_t>* picked) {
  ks->clear(), vs->clear(), picked->clear();
  for (int32_t s : samples) {
    if (s / p.block == blk) continue;
    ks->insert(ks->end(), k.begin() + s * dim, k.begin() + (s + 1) * dim);
    vs->insert(vs->end(), v.begin() + s * dim_v, v.begin() + (s + 1) * dim_v);
    picked->push_back(s);
  }
  return static_cast<int64_t>(picked->size());
}

// Gray-code rank of the sign pattern of x . P_i.
uint32_t lsh_rank(const float* x, const std::vector<float>& projection, int64_t dim,
                  int64_t projs) {
  uint32_t code = 0;
  for (int64_t i = 0; i < projs; ++i) {
    float dot = 0.0f;
    for (int64_t c = 0; c < dim; ++c) dot += x[c] * projection[c * projs + i];
    code |= static_cast<uint32_t>(dot > 0.0f) << i;
  }
  uint32_t rank = code;  // inverse of gray(r) = r ^ (r >> 1)
  for (uint32_t shift = code >> 1; shift; shift >>= 1) rank ^= shift;
  return rank;
}

// What plan() hashed for execute(): the calls and, per (b, h, call), the sorted orders and
// samples of the hashed ones.
struct HyperState {
  std::vector<Call> calls;
  std::vector<HashedPlan> plans;  // [(b * Hq + h) * calls + c]
};

class HyperPattern final : public Pattern {
 public:
  explicit HyperPattern(const PatternParams& params) : Pattern(params, Direction::kCaller) {
    p_.projs = params.get_int("projs");
    p_.block = params.get_int("block");
    p_.samples = params.get_int("samples");
    p_.min_seq = params.get_int("min_seq");
    p_.seed = static_cast<uint64_t>(params.get_int("seed"));
    check(p_.samples <= p_.min_seq, "pattern",
          "'hyper' parameter 'samples' = " + std::to_string(p_.samples) +
              " must not exceed min_seq = " + std::to_string(p_.min_seq) +
              " (a hashed call has at least min_seq / 2 keys)");
  }
  Plan plan(const PlanInputs& in) const override;

 protected:
  void execute(const AttentionArgs& args, const Plan& plan) const override;
  void execute_backward(const BackwardArgs& args, const Plan& plan) const override;

 private:
  // Hash plans of every hashed call, per (b, h): [(b * Hq + h) * calls + c].
  std::vector<HashedPlan> hash_all(const PlanInputs& in, const std::vector<Call>& calls) const;
  std::vector<float> projection(int64_t dim) const {
    std::mt19937_64 rng(p_.seed);
    std::normal_distribution<float> normal(0.0f, 1.0f);
    std::vector<float> P(dim * p_.projs);
    for (float& x : P) x = normal(rng);
    return P;
  }

  HyperParams p_;
};

std::vector<HashedPlan> HyperPattern::hash_all(const PlanInputs& in,
                                               const std::vector<Call>& calls) const {
  const Dims d = dims_of(in);
  const auto P = projection(d.dim);
  const int64_t n_calls = static_cast<int64_t>(calls.size());
  std::vector<HashedPlan> plans(d.batch * d.heads_q * n_calls);
#pragma omp parallel for schedule(dynamic, 1) num_threads(effective_threads(in.threads))
  for (int64_t item = 0; item < d.batch * d.heads_q * n_calls; ++item) {
    const Call& call = calls[item % n_calls];
    if (call.kind != Call::kHashed) continue;
    const int64_t bh = item / n_calls, b = bh / d.heads_q, h = bh % d.heads_q;
    std::vector<float> row(d.dim);
    std::vector<uint32_t> q_rank(call.nq), k_rank(call.nk);
    for (int64_t r = 0; r < call.nq; ++r) {
      cpu::load_rows(in.q, b, h, call.q0 + r, 1, row.data());
      q_rank[r] = lsh_rank(row.data(), P, d.dim, p_.projs);
    }
    for (int64_t r = 0; r < call.nk; ++r) {
      cpu::load_rows(in.k, b, h / d.group, call.k0 + r, 1, row.data());
      k_rank[r] = lsh_rank(row.data(), P, d.dim, p_.projs);
    }
    HashedPlan& plan = plans[item];
    plan.q_order = cpu::stable_argsort(q_rank, static_cast<int>(p_.projs));
    plan.k_order = cpu::stable_argsort(k_rank, static_cast<int>(p_.projs));
    std::mt19937_64 rng(p_.seed * 0x9E3779B97F4A7C15ull + item);
    std::uniform_int_distribution<int64_t> pick(0, call.nk - 1);
    plan.samples.resize(p_.samples);
    for (auto& s : plan.samples) s = static_cast<int32_t>(pick(rng));
  }
  return plans;
}

// Exact attention on contiguous f32 copies, on the calling thread; attended pairs are added
// to *pairs.
void exact_attention(const float* q, int64_t nq, const float* k, const float* v, int64_t nk,
                     int64_t dim, int64_t dim_v, float scale, bool causal, float* o, float* lse,
                     int64_t* pairs) {
  if (nk == 0) {
    std::fill(o, o + nq * dim_v, 0.0f);
    std::fill(lse, lse + nq, -std::numeric_limits<float>::infinity());
    return;
  }
  AttentionArgs a;
  a.q = TensorView::contiguous(q, DType::kF32, {1, 1, nq, dim});
  a.k = TensorView::contiguous(k, DType::kF32, {1, 1, nk, dim});
  a.v = TensorView::contiguous(v, DType::kF32, {1, 1, nk, dim_v});
  a.out = MutableTensorView::contiguous(o, DType::kF32, {1, 1, nq, dim_v});
  a.lse = MutableTensorView::contiguous(lse, DType::kF32, {1, 1, nq, 1});
  a.scale = scale;
  a.causal = causal;
  a.threads = 1;
  a.attended_pairs = pairs;
  attention(a);
}

void merge_rows(float* o, float* lse, const float* o2, const float* lse2, int64_t n,
                int64_t dim_v) {
  const auto out = MutableTensorView::contiguous(o, DType::kF32, {1, 1, n, dim_v});
  const auto out_lse = MutableTensorView::contiguous(lse, DType::kF32, {1, 1, n, 1});
  merge(out, out_lse, TensorView::contiguous(o2, DType::kF32, {1, 1, n, dim_v}),
        TensorView::contiguous(lse2, DType::kF32, {1, 1, n, 1}), out, out_lse);
}

void HyperPattern::execute(const AttentionArgs& args, const Plan& plan) const {
  check_no_dropout(name(), args.dropout);
  const auto& state = *std::any_cast<std::shared_ptr<const HyperState>>(plan.state);
  const Dims d = dims_of(PlanInputs::of(args));
  const int64_t dim_v = args.v.shape[3];
  const auto& calls = state.calls;
  const auto& plans = state.plans;
  const float scale = effective_scale(args);
  const int64_t n_calls = static_cast<int64_t>(calls.size());
  const float neg_inf = -std::numeric_limits<float>::infinity();
  int64_t* pairs = args.attended_pairs;
#pragma omp parallel for schedule(dynamic, 1) num_threads(effective_threads(args.threads))
  for (int64_t bh = 0; bh < d.batch * d.heads_q; ++bh) {
    const int64_t b = bh / d.heads_q, h = bh % d.heads_q, g = h / d.group;
    std::vector<float> acc_o(d.nq * dim_v, 0.0f), acc_lse(d.nq, neg_inf);
    std::vector<float> q, k, v, o, lse, o2, lse2, ks, vs, unsorted_o, unsorted_lse;
    std::vector<int32_t> picked;
    for (int64_t c = 0; c < n_calls; ++c) {
      const Call& call = calls[c];
      o.assign(call.nq * dim_v, 0.0f);
      lse.assign(call.nq, neg_inf);
      q.resize(call.nq * d.dim), k.resize(call.nk * d.dim), v.resize(call.nk * dim_v);
      if (call.kind != Call::kHashed) {
        cpu::load_rows(args.q, b, h, call.q0, call.nq, q.data());
        cpu::load_rows(args.k, b, g, call.k0, call.nk, k.data());
        cpu::load_rows(args.v, b, g, call.k0, call.nk, v.data());
        exact_attention(q.data(), call.nq, k.data(), v.data(), call.nk, d.dim, dim_v, scale,
                        call.kind == Call::kExactCausal, o.data(), lse.data(), pairs);
      } else {
        const HashedPlan& hp = plans[bh * n_calls + c];
        std::vector<int32_t> q_index(call.nq), k_index(call.nk);
        for (int64_t r = 0; r < call.nq; ++r)
          q_index[r] = static_cast<int32_t>(call.q0 + hp.q_order[r]);
        for (int64_t r = 0; r < call.nk; ++r)
          k_index[r] = static_cast<int32_t>(call.k0 + hp.k_order[r]);
        cpu::gather_rows(args.q, b, h, q_index.data(), call.nq, q.data());
        cpu::gather_rows(args.k, b, g, k_index.data(), call.nk, k.data());
        cpu::gather_rows(args.v, b, g, k_index.data(), call.nk, v.data());
        o2.assign(call.nq * dim_v, 0.0f);
        lse2.assign(call.nq, neg_inf);
        const float shift = sample_shift(p_, call.nk);
        for_each_block(p_, call.nq, call.nk, [&](int64_t r0, int64_t r1, int64_t j0, int64_t j1) {
          exact_attention(q.data() + r0 * d.dim, r1 - r0, k.data() + j0 * d.dim,
                          v.data() + j0 * dim_v, j1 - j0, d.dim, dim_v, scale, false,
                          o.data() + r0 * dim_v, lse.data() + r0, pairs);
          const int64_t count =
              gather_samples(p_, hp.samples, j0 / p_.block, k, v, d.dim, dim_v, &ks, &vs, &picked);
          if (count == 0) return;
          exact_attention(q.data() + r0 * d.dim, r1 - r0, ks.data(), vs.data(), count, d.dim, dim_v,
                          scale, false, o2.data() + r0 * dim_v, lse2.data() + r0, pairs);
          for (int64_t r = r0; r < r1; ++r) lse2[r] += shift;
        });
        merge_rows(o.data(), lse.data(), o2.data(), lse2.data(), call.nq, dim_v);
        // Back to original order (relative to q0).
        unsorted_o.resize(call.nq * dim_v), unsorted_lse.resize(call.nq);
        for (int64_t r = 0; r < call.nq; ++r) {
          std::copy_n(o.data() + r * dim_v, dim_v, unsorted_o.data() + hp.q_order[r] * dim_v);
          unsorted_lse[hp.q_order[r]] = lse[r];
        }
        o.swap(unsorted_o);
        lse.swap(unsorted_lse);
      }
      merge_rows(acc_o.data() + call.q0 * dim_v, acc_lse.data() + call.q0, o.data(), lse.data(),
                 call.nq, dim_v);
    }
    for (int64_t i = 0; i < d.nq; ++i) {
      float* dst = args.out.row<float>(b, h, i);
      for (int64_t c = 0; c < dim_v; ++c) dst[c * args.out.stride[3]] = acc_o[i * dim_v + c];
      if (!args.lse.empty()) *args.lse.row<float>(b, h, i) = acc_lse[i];
    }
  }
}

// The gradient contribution of one merged piece on contiguous f32 copies (see the header): q
// [nq, D], k [nk, D], v [nk, Dv], the merged o [nq, Dv] and lse - shift [nq], dout, dlse (or
// null); writes dq [nq, D], dk [nk, D], dv [nk, Dv]. One thread.
void piece_backward(const float* q, int64_t nq, const float* k, const float* v, int64_t nk,
                    int64_t dim, int64_t dim_v, float scale, bool causal, float* o, float* lse,
                    const float* dout, const float* dlse, float* dq, float* dk, float* dv) {
  BackwardArgs b;
  AttentionArgs& f = b.forward;
  f.q = TensorView::contiguous(q, DType::kF32, {1, 1, nq, dim});
  f.k = TensorView::contiguous(k, DType::kF32, {1, 1, nk, dim});
  f.v = TensorView::contiguous(v, DType::kF32, {1, 1, nk, dim_v});
  f.out = MutableTensorView::contiguous(o, DType::kF32, {1, 1, nq, dim_v});  // read only
  f.lse = MutableTensorView::contiguous(lse, DType::kF32, {1, 1, nq, 1});
  f.scale = scale;
  f.causal = causal;
  f.threads = 1;
  b.dout = TensorView::contiguous(dout, DType::kF32, {1, 1, nq, dim_v});
  if (dlse) b.dlse = TensorView::contiguous(dlse, DType::kF32, {1, 1, nq, 1});
  b.dq = MutableTensorView::contiguous(dq, DType::kF32, {1, 1, nq, dim});
  b.dk = MutableTensorView::contiguous(dk, DType::kF32, {1, 1, nk, dim});
  b.dv = MutableTensorView::contiguous(dv, DType::kF32, {1, 1, nk, dim_v});
  attention_backward(b);
}

// rows[index[r]] += add[r] for r < count, rows of `width` floats.
void scatter_add(const float* add, const int32_t* index, int64_t count, int64_t width,
                 float* rows) {
  for (int64_t r = 0; r < count; ++r)
    for (int64_t c = 0; c < width; ++c) rows[index[r] * width + c] += add[r * width + c];
}

void HyperPattern::execute_backward(const BackwardArgs& args, const Plan& plan) const {
  check_no_dropout(name(), args.forward.dropout);
  const auto& state = *std::any_cast<std::shared_ptr<const HyperState>>(plan.state);
  const AttentionArgs& f = args.forward;
  const Dims d = dims_of(PlanInputs::of(f));
  const int64_t dim_v = f.v.shape[3], n_calls = static_cast<int64_t>(state.calls.size());
  const float scale = effective_scale(f);
  // Per (b, h): dK, dV of the kv head, summed over the group afterwards in head order.
  std::vector<float> head_dk(d.batch * d.heads_q * d.nk * d.dim, 0.0f);
  std::vector<float> head_dv(d.batch * d.heads_q * d.nk * dim_v, 0.0f);
#pragma omp parallel for schedule(dynamic, 1) num_threads(effective_threads(f.threads))
  for (int64_t bh = 0; bh < d.batch * d.heads_q; ++bh) {
    const int64_t b = bh / d.heads_q, h = bh % d.heads_q, g = h / d.group;
    std::vector<float> acc_dq(d.nq * d.dim, 0.0f);
    float* acc_dk = head_dk.data() + bh * d.nk * d.dim;
    float* acc_dv = head_dv.data() + bh * d.nk * dim_v;
    std::vector<float> q, k, v, o, lse, dout, dlse, dq, dk, dv, ks, vs, shifted;
    std::vector<int32_t> q_index, k_index, sample_index;
    // Gathers the call's rows (indices absolute) of every per-query and per-key input.
    auto gather = [&](int64_t nq, int64_t nk) {
      q.resize(nq * d.dim), o.resize(nq * dim_v), lse.resize(nq), dout.resize(nq * dim_v);
      k.resize(nk * d.dim), v.resize(nk * dim_v);
      cpu::gather_rows(f.q, b, h, q_index.data(), nq, q.data());
      cpu::gather_rows(f.out, b, h, q_index.data(), nq, o.data());
      cpu::gather_rows(f.lse, b, h, q_index.data(), nq, lse.data());
      cpu::gather_rows(args.dout, b, h, q_index.data(), nq, dout.data());
      if (!args.dlse.empty()) {
        dlse.resize(nq);
        cpu::gather_rows(args.dlse, b, h, q_index.data(), nq, dlse.data());
      }
      cpu::gather_rows(f.k, b, g, k_index.data(), nk, k.data());
      cpu::gather_rows(f.v, b, g, k_index.data(), nk, v.data());
    };
    // One piece: query rows [r0, r1) of the gathered call against keys (kp, vp) at key_index.
    auto piece = [&](int64_t r0, int64_t r1, const float* kp, const float* vp,
                     const int32_t* key_index, int64_t nk, bool causal, float shift) {
      const int64_t nq = r1 - r0;
      shifted.resize(nq);
      for (int64_t r = 0; r < nq; ++r) shifted[r] = lse[r0 + r] - shift;
      dq.resize(nq * d.dim), dk.resize(nk * d.dim), dv.resize(nk * dim_v);
      piece_backward(q.data() + r0 * d.dim, nq, kp, vp, nk, d.dim, dim_v, scale, causal,
                     o.data() + r0 * dim_v, shifted.data(), dout.data() + r0 * dim_v,
                     args.dlse.empty() ? nullptr : dlse.data() + r0, dq.data(), dk.data(),
                     dv.data());
      scatter_add(dq.data(), q_index.data() + r0, nq, d.dim, acc_dq.data());
      scatter_add(dk.data(), key_index, nk, d.dim, acc_dk);
      scatter_add(dv.data(), key_index, nk, dim_v, acc_dv);
    };
    for (int64_t c = 0; c < n_calls; ++c) {
      const Call& call = state.calls[c];
      q_index.resize(call.nq), k_index.resize(call.nk);
      if (call.kind != Call::kHashed) {
        for (int64_t r = 0; r < call.nq; ++r) q_index[r] = static_cast<int32_t>(call.q0 + r);
        for (int64_t r = 0; r < call.nk; ++r) k_index[r] = static_cast<int32_t>(call.k0 + r);
        gather(call.nq, call.nk);
        piece(0, call.nq, k.data(), v.data(), k_index.data(), call.nk,
              call.kind == Call::kExactCausal, 0.0f);
        continue;
      }
      const HashedPlan& hp = state.plans[bh * n_calls + c];
      for (int64_t r = 0; r < call.nq; ++r)
        q_index[r] = static_cast<int32_t>(call.q0 + hp.q_order[r]);
      for (int64_t r = 0; r < call.nk; ++r)
        k_index[r] = static_cast<int32_t>(call.k0 + hp.k_order[r]);
      gather(call.nq, call.nk);
      const float shift = sample_shift(p_, call.nk);
      for_each_block(p_, call.nq, call.nk, [&](int64_t r0, int64_t r1, int64_t j0, int64_t j1) {
        piece(r0, r1, k.data() + j0 * d.dim, v.data() + j0 * dim_v, k_index.data() + j0, j1 - j0,
              false, 0.0f);
        const int64_t count = gather_samples(p_, hp.samples, j0 / p_.block, k, v, d.dim, dim_v, &ks,
                                             &vs, &sample_index);
        if (count == 0) return;
        for (int32_t& s : sample_index) s = k_index[s];  // sorted position -> key index
        piece(r0, r1, ks.data(), vs.data(), sample_index.data(), count, false, shift);
      });
    }
    for (int64_t i = 0; i < d.nq; ++i)
      std::copy_n(acc_dq.data() + i * d.dim, d.dim, args.dq.row<float>(b, h, i));
  }
  sum_head_gradients(args, head_dk, head_dv, 0);
}

// Element rule of a plan: which pairs some call attends (in original order).
class HyperRule final : public TilePredicate {
 public:
  HyperRule(HyperParams p, std::vector<Call> calls, const std::vector<HashedPlan>& plans,
            int64_t heads)
      : p_(p), calls_(std::move(calls)), heads_(heads) {
    // Per hashed plan: block of every (relative) query and key, and sampled keys.
    info_.resize(plans.size());
    for (size_t e = 0; e < plans.size(); ++e) {
      const Call& call = calls_[e % calls_.size()];
      if (call.kind != Call::kHashed) continue;
      const int64_t nb = block_count(p_, call.nk);
      Info& in = info_[e];
      in.q_block.resize(call.nq);
      in.k_block.resize(call.nk);
      in.sampled.assign(call.nk, 0);
      for (int64_t r = 0; r < call.nq; ++r)
        in.q_block[plans[e].q_order[r]] = static_cast<int32_t>(query_block_of(r, call.nq, nb));
      for (int64_t r = 0; r < call.nk; ++r)
        in.k_block[plans[e].k_order[r]] = static_cast<int32_t>(r / p_.block);
      for (int32_t s : plans[e].samples) in.sampled[plans[e].k_order[s]] = 1;
    }
  }

  void fill(int64_t b, int64_t h, int64_t q0, int64_t nq, int64_t k0, int64_t nk, uint8_t* allow,
            int64_t ld) const override {
    for (int64_t r = 0; r < nq; ++r) std::fill(allow + r * ld, allow + r * ld + nk, 0);
    const int64_t n_calls = static_cast<int64_t>(calls_.size());
    for (int64_t c = 0; c < n_calls; ++c) {
      const Call& call = calls_[c];
      const int64_t i0 = std::max(q0, call.q0), i1 = std::min(q0 + nq, call.q0 + call.nq);
      const int64_t j0 = std::max(k0, call.k0), j1 = std::min(k0 + nk, call.k0 + call.nk);
      if (i0 >= i1 || j0 >= j1) continue;
      const Info& in = info_[(b * heads_ + h) * n_calls + c];
      for (int64_t i = i0; i < i1; ++i)
        for (int64_t j = j0; j < j1; ++j) {
          bool ok = true;
          if (call.kind == Call::kExactCausal) ok = j - call.k0 <= i - call.q0;
          if (call.kind == Call::kHashed)
            ok = in.q_block[i - call.q0] == in.k_block[j - call.k0] || in.sampled[j - call.k0];
          allow[(i - q0) * ld + (j - k0)] = ok;
        }
    }
  }

 private:
  struct Info {
    std::vector<int32_t> q_block, k_block;
    std::vector<uint8_t> sampled;
  };
  HyperParams p_;
  std::vector<Call> calls_;
  int64_t heads_;
  std::vector<Info> info_;
};

Plan HyperPattern::plan(const PlanInputs& in) const {
  in.validate(true);
  const Dims d = dims_of(in);
  auto state = std::make_shared<HyperState>();
  state->calls = calls_of(p_, d.nq, d.nk, in.causal);
  state->plans = hash_all(in, state->calls);
  // Every kv block a call's rectangle touches, as PARTIAL entries of the element rule.
  constexpr int64_t kBlock = 64;
  const int64_t q_blocks = (d.nq + kBlock - 1) / kBlock;
  std::vector<std::vector<int32_t>> touched(q_blocks);
  for (const Call& call : state->calls)
    for (int64_t qb = call.q0 / kBlock; qb * kBlock < call.q0 + call.nq; ++qb)
      for (int64_t kb = call.k0 / kBlock; kb * kBlock < call.k0 + call.nk; ++kb)
        touched[qb].push_back(static_cast<int32_t>(kb));
  std::vector<std::vector<BlockEntry>> lists(d.batch * d.heads_q * q_blocks);
  for (int64_t bh = 0; bh < d.batch * d.heads_q; ++bh)
    for (int64_t qb = 0; qb < q_blocks; ++qb) {
      auto blocks = touched[qb];
      std::sort(blocks.begin(), blocks.end());
      blocks.erase(std::unique(blocks.begin(), blocks.end()), blocks.end());
      for (int32_t kb : blocks) lists[bh * q_blocks + qb].push_back({kb, BlockKind::kPartial});
    }
  Plan plan;
  plan.mask = block_mask_from_entries(
      mask_shape(in, kBlock, kBlock, d.heads_q),
      std::make_shared<HyperRule>(p_, state->calls, state->plans, d.heads_q), std::move(lists));
  plan.causal = in.causal;
  plan.state = std::shared_ptr<const HyperState>(std::move(state));
  return plan;
}

}  // namespace

PatternRegistration hyper_pattern() {
  return {
      {"hyper",
       "HyperAttention: LSH (Gray-code) sort, block-diagonal attention in sorted order + "
       "uniform key samples (log(n/m) shift), exact LSE merge, causal recursion; exact below "
       "min_seq",
       "Han et al. 2024, HyperAttention: Long-context Attention in Near-Linear Time "
       "(arXiv 2310.05869)",
       PatternFamily::kDynamic,
       {int_param("projs", 7, 1, 16, "random projections of the angular LSH"),
        int_param("block", 256, 16, int64_t{1} << 24,
                  "keys per block of the block-diagonal (sorted order)"),
        int_param("samples", 256, 0, 1 << 16, "uniformly sampled keys per call"),
        int_param("min_seq", 4096, 16, int64_t{1} << 40, "exact attention at or below this length"),
        int_param("seed", 1, 0, INT64_MAX, "seed of the projections and samples")}},
      &construct_pattern<HyperPattern>};
}

}  // namespace attnkit::dynamic_patterns
