// Lightning Attention-2 on the CPU: the rule, slopes and gradients are stated in
// include/attnkit/lightning.h. One work item is one (batch, head): a sweep over blocks of
// `block` tokens carrying the [D, E] state, every product on cpu::gemm.
//
// Per block of L tokens (local rows a, columns c in [0, L)), with S the state before it:
//   O  = ((Q K^T) * M) V + diag(lambda^(a+1)) Q S        M[a, c] = lambda^(a-c) for a >= c
//   S <- lambda^L S + (K^T diag(lambda^(L-1-c))) V
// The backward recomputes S in a forward sweep for dQ, then carries G = dL/dS in a reverse sweep
// for dK and dV (see the header for the sums each sweep evaluates).
#include <algorithm>
#include <cmath>
#include <cstring>
#include <string>

#include "attnkit/error.h"
#include "attnkit/lightning.h"
#include "core/attention_args.h"
#include "core/memory.h"
#include "core/view_checks.h"
#include "kernels/cpu/gemm.h"
#include "kernels/cpu/planner_ops.h"
#include "operators/lightning_checks.h"

namespace attnkit {
namespace {

using cpu::gemm;
using cpu::row_major;
using cpu::transposed;

// lambda^t for t in [0, block] and the intra-block decay mask, for one head.
struct Decay {
  int64_t block;
  std::vector<float> power;     // lambda^t
  std::vector<float> reversed;  // lambda^(block-1-t)
  std::vector<float> mask;      // [block, block]: lambda^(a-c) for a >= c, else 0
  Decay(float slope, int64_t block_)
      : block(block_), power(block + 1), reversed(block), mask(block * block, 0.0f) {
    for (int64_t t = 0; t <= block; ++t)
      power[t] = static_cast<float>(std::exp(-double(slope) * double(t)));
    for (int64_t t = 0; t < block; ++t) reversed[t] = power[block - 1 - t];
    for (int64_t a = 0; a < block; ++a)
      for (int64_t c = 0; c <= a; ++c) mask[a * block + c] = power[a - c];
  }
  // lambda^(len-1-c) for c < len: a block of len tokens' key factors.
  const float* tail(int64_t len) const { return reversed.data() + (block - len); }
  // x[a, c] *= M[a, c] on an [len, len] tile (ld len): the upper triangle becomes 0.
  void apply(float* x, int64_t len) const {
    for (int64_t a = 0; a < len; ++a)
      for (int64_t c = 0; c < len; ++c) x[a * len + c] *= mask[a * block + c];
  }
};

// rows[r, :] *= factor[r + offset] for r < count (rows contiguous, `dim` wide), into `out`.
void scale_rows(const float* rows, int64_t count, int64_t dim, const float* factor, float* out) {
  for (int64_t r = 0; r < count; ++r)
    for (int64_t c = 0; c < dim; ++c) out[r * dim + c] = rows[r * dim + c] * factor[r];
}

// The per-thread buffers of one sweep: blocks of Q, K, V, dO and their products. Kept per
// thread between calls (a few hundred KB): a decode step is one short call, and fresh buffers
// cost it their page faults (N = 32, 8 heads on 2 threads: 0.28 ms instead of 0.03).
struct Workspace {
  std::vector<float> q, k, v, dout, t, scores, scores2, scaled, rows, rows2, state, state_t;
  // This thread's workspace, sized for one call's shapes (buffers only grow).
  static Workspace& of_thread(int64_t block, int64_t dim, int64_t dim_v) {
    thread_local Workspace w;
    const int64_t wide = std::max(dim, dim_v);
    for (auto [buffer, size] : {std::pair{&w.q, block * dim}, {&w.k, block * dim},
                                {&w.v, block * dim_v}, {&w.dout, block * dim_v},
                                {&w.t, wide * block}, {&w.scores, block * block},
                                {&w.scores2, block * block}, {&w.scaled, block * wide},
                                {&w.rows, block * wide}, {&w.rows2, block * wide},
                                {&w.state, dim * dim_v}, {&w.state_t, dim * dim_v}})
      buffer->resize(size);
    return w;
  }
};

// S <- lambda^len S + (diag(lambda^(len-1-c)) K)^T V for one block (K [len, D], V [len, E]).
void update_state(const Decay& decay, const float* k, const float* v, int64_t len, int64_t dim,
                  int64_t dim_v, float* scaled, float* state) {
  scale_rows(k, len, dim, decay.tail(len), scaled);
  gemm(dim, dim_v, len, 1.0f, transposed(scaled, dim), v, dim_v, decay.power[len], state, dim_v);
}

// Scores of one block, decay-masked: out[a, c] = M[a, c] (x_a . y_c), x [len, w], y [len, w].
void masked_scores(const Decay& decay, const float* x, const float* y, int64_t len, int64_t width,
                   float* y_t, float* out) {
  cpu::transpose(y, len, width, width, y_t, len);
  gemm(len, len, width, 1.0f, row_major(x, width), y_t, len, 0.0f, out, len);
  decay.apply(out, len);
}

// `state` = initial[b, h] when given (returns true), else zeros (returns false: no product with
// it is needed before the first block has been folded in).
bool start_state(const TensorView& initial, int64_t b, int64_t h, std::vector<float>& state) {
  if (initial.empty()) {
    std::fill(state.begin(), state.end(), 0.0f);
    return false;
  }
  cpu::load_rows(initial, b, h, 0, initial.shape[2], state.data());
  return true;
}

void forward_item(const LightningArgs& a, const LightningShape& s, int64_t b, int64_t h,
                  const Decay& decay, Workspace& w) {
  const int64_t dim = s.dim, dim_v = s.dim_v;
  float* state = w.state.data();
  bool has_state = start_state(a.state_in, b, h, w.state);
  for (int64_t t0 = 0; t0 < s.n; t0 += a.block) {
    const int64_t len = std::min(a.block, s.n - t0);
    cpu::load_rows(a.q, b, h, t0, len, w.q.data());
    cpu::load_rows(a.k, b, h, t0, len, w.k.data());
    cpu::load_rows(a.v, b, h, t0, len, w.v.data());
    masked_scores(decay, w.q.data(), w.k.data(), len, dim, w.t.data(), w.scores.data());
    gemm(len, dim_v, len, 1.0f, row_major(w.scores.data(), len), w.v.data(), dim_v, 0.0f,
         w.rows.data(), dim_v);
    if (has_state) {  // the earlier blocks, through the state: diag(lambda^(a+1)) Q S
      scale_rows(w.q.data(), len, dim, decay.power.data() + 1, w.scaled.data());
      gemm(len, dim_v, dim, 1.0f, row_major(w.scaled.data(), dim), state, dim_v, 1.0f,
           w.rows.data(), dim_v);
    }
    cpu::store_rows(w.rows.data(), len, a.out, b, h, t0);
    // The last block's state is only the caller's (it dominates when N is one block).
    if (t0 + len == s.n && a.state_out.empty()) break;
    update_state(decay, w.k.data(), w.v.data(), len, dim, dim_v, w.scaled.data(), state);
    has_state = true;
  }
  if (!a.state_out.empty()) cpu::store_rows(state, dim, a.state_out, b, h, 0);
}

// dQ: a forward sweep recomputing the state before each block.
void backward_dq_item(const LightningBackwardArgs& g, const LightningShape& s, int64_t b,
                      int64_t h, const Decay& decay, Workspace& w) {
  const LightningArgs& a = g.forward;
  const int64_t dim = s.dim, dim_v = s.dim_v;
  float* state = w.state.data();
  bool has_state = start_state(a.state_in, b, h, w.state);
  for (int64_t t0 = 0; t0 < s.n; t0 += a.block) {
    const int64_t len = std::min(a.block, s.n - t0);
    cpu::load_rows(a.k, b, h, t0, len, w.k.data());
    cpu::load_rows(a.v, b, h, t0, len, w.v.data());
    cpu::load_rows(g.dout, b, h, t0, len, w.dout.data());
    // dP = (dO V^T) * M, dQ = dP K
    masked_scores(decay, w.dout.data(), w.v.data(), len, dim_v, w.t.data(),
                  w.scores.data());
    gemm(len, dim, len, 1.0f, row_major(w.scores.data(), len), w.k.data(), dim, 0.0f,
         w.rows.data(), dim);
    if (has_state) {  // + diag(lambda^(a+1)) dO S^T
      scale_rows(w.dout.data(), len, dim_v, decay.power.data() + 1, w.scaled.data());
      cpu::transpose(state, dim, dim_v, dim_v, w.state_t.data(), dim);
      gemm(len, dim, dim_v, 1.0f, row_major(w.scaled.data(), dim_v), w.state_t.data(), dim, 1.0f,
           w.rows.data(), dim);
    }
    cpu::store_rows(w.rows.data(), len, g.dq, b, h, t0);
    if (t0 + len == s.n) break;  // no later block reads the state
    update_state(decay, w.k.data(), w.v.data(), len, dim, dim_v, w.scaled.data(), state);
    has_state = true;
  }
}

// dK, dV: a reverse sweep carrying G = dL/dS (the state after the block being processed).
void backward_dkv_item(const LightningBackwardArgs& g, const LightningShape& s, int64_t b,
                       int64_t h, const Decay& decay, Workspace& w) {
  const LightningArgs& a = g.forward;
  const int64_t dim = s.dim, dim_v = s.dim_v;
  float* grad = w.state.data();
  bool has_grad = start_state(g.dstate_out, b, h, w.state);
  const int64_t blocks = (s.n + a.block - 1) / a.block;
  for (int64_t blk = blocks - 1; blk >= 0; --blk) {
    const int64_t t0 = blk * a.block, len = std::min(a.block, s.n - t0);
    cpu::load_rows(a.q, b, h, t0, len, w.q.data());
    cpu::load_rows(a.k, b, h, t0, len, w.k.data());
    cpu::load_rows(a.v, b, h, t0, len, w.v.data());
    cpu::load_rows(g.dout, b, h, t0, len, w.dout.data());
    // dK = ((dO V^T) * M)^T Q, dV = ((Q K^T) * M)^T dO
    masked_scores(decay, w.dout.data(), w.v.data(), len, dim_v, w.t.data(),
                  w.scores.data());
    gemm(len, dim, len, 1.0f, transposed(w.scores.data(), len), w.q.data(), dim, 0.0f,
         w.rows.data(), dim);
    masked_scores(decay, w.q.data(), w.k.data(), len, dim, w.t.data(), w.scores2.data());
    gemm(len, dim_v, len, 1.0f, transposed(w.scores2.data(), len), w.dout.data(), dim_v, 0.0f,
         w.rows2.data(), dim_v);
    const float* tail = decay.tail(len);
    if (has_grad) {  // the later blocks, through G: + diag(lambda^(L-1-c)) (V G^T, K G)
      scale_rows(w.v.data(), len, dim_v, tail, w.scaled.data());
      cpu::transpose(grad, dim, dim_v, dim_v, w.state_t.data(), dim);
      gemm(len, dim, dim_v, 1.0f, row_major(w.scaled.data(), dim_v), w.state_t.data(), dim, 1.0f,
           w.rows.data(), dim);
      scale_rows(w.k.data(), len, dim, tail, w.scaled.data());
      gemm(len, dim_v, dim, 1.0f, row_major(w.scaled.data(), dim), grad, dim_v, 1.0f,
           w.rows2.data(), dim_v);
    }
    cpu::store_rows(w.rows.data(), len, g.dk, b, h, t0);
    cpu::store_rows(w.rows2.data(), len, g.dv, b, h, t0);
    if (blk == 0 && g.dstate_in.empty()) break;  // G before the first block: dS0 only
    // G <- lambda^L G + (diag(lambda^(a+1)) Q)^T dO
    scale_rows(w.q.data(), len, dim, decay.power.data() + 1, w.scaled.data());
    gemm(dim, dim_v, len, 1.0f, transposed(w.scaled.data(), dim), w.dout.data(), dim_v,
         decay.power[len], grad, dim_v);
    has_grad = true;
  }
  if (!g.dstate_in.empty()) cpu::store_rows(grad, dim, g.dstate_in, b, h, 0);
}

// Runs item(b, h, decay, workspace) over every (batch, head), dynamically scheduled.
template <typename Item>
void for_each_head(const LightningArgs& a, const LightningShape& s, Item&& item) {
  const std::vector<float> slopes = a.slopes.empty() ? lightning_slopes(s.heads) : a.slopes;
  const int64_t items = s.batch * s.heads;
  const int threads =
      static_cast<int>(std::min<int64_t>(effective_threads(a.threads), std::max<int64_t>(1, items)));
#pragma omp parallel num_threads(threads)
  {
    Workspace& w = Workspace::of_thread(a.block, s.dim, s.dim_v);
#pragma omp for schedule(dynamic)
    for (int64_t x = 0; x < items; ++x) {
      const int64_t b = x / s.heads, h = x % s.heads;
      const Decay decay(slopes[h], a.block);
      item(b, h, decay, w);
    }
  }
}

}  // namespace

std::vector<float> lightning_slopes(int64_t heads) {
  check(heads >= 1 && heads <= (int64_t{1} << 20), "heads",
        "must be in [1, 2^20], got " + std::to_string(heads));
  // Powers of two: start^(i+1), start = 2^(-8/n). Others: the closest lower power of two's
  // slopes, then every other slope of twice that many heads.
  auto power_of_two = [](int64_t n) {
    std::vector<float> s(n);
    const double start = std::exp2(-8.0 / double(n));
    for (int64_t i = 0; i < n; ++i) s[i] = static_cast<float>(std::pow(start, double(i + 1)));
    return s;
  };
  int64_t p = 1;
  while (p * 2 <= heads) p *= 2;
  std::vector<float> slopes = power_of_two(p);
  if (p == heads) return slopes;
  const std::vector<float> wider = lightning_slopes(2 * p);
  for (int64_t i = 0; static_cast<int64_t>(slopes.size()) < heads; i += 2) slopes.push_back(wider[i]);
  return slopes;
}

void lightning_attention(const LightningArgs& args) {
  const LightningShape s = validate_lightning(args);
  for_each_head(args, s, [&](int64_t b, int64_t h, const Decay& decay, Workspace& w) {
    forward_item(args, s, b, h, decay, w);
  });
}

void lightning_attention_backward(const LightningBackwardArgs& args) {
  const LightningShape s = validate_lightning(args);
  for_each_head(args.forward, s, [&](int64_t b, int64_t h, const Decay& decay, Workspace& w) {
    backward_dq_item(args, s, b, h, decay, w);
    backward_dkv_item(args, s, b, h, decay, w);
  });
}

}  // namespace attnkit
