// SOFT on the CPU (the rule is in include/attnkit/soft.h). One work item is one (batch, head):
// every product is a cpu::gemm, every Gaussian a score product followed by one exp per entry:
//   G(x_i, l_a) = exp(x_i . l_a - |l_a|^2 / 2 - |x_i|^2 / 2).
// Forward: Q', L, K1 = G(Q', L), K2 = G(L, L), X = Ninv(K2), W = K1^T V, Z = X W, O = K1 Z, with
// K1 made one chunk of rows at a time (twice: for W, then for O), never whole.
// Backward (X taken as K2's exact inverse, as the official code does):
//   dZ = K1^T dO, dK1 = dO Z^T + V (X^T dZ)^T, dV = K1 (X^T dZ), dX = dZ W^T, dK2 = -X^T dX X^T,
// then through the Gaussians, with E = dK . K elementwise:
//   dQ'_i += sum_a E1[i, a] (l_a - q'_i),  dL_a += sum_i E1[i, a] (q'_i - l_a)
//   dL_a += sum_b (E2[a, b] + E2[b, a]) (l_b - l_a)
// and pooled landmarks hand dL back to their tokens (dQ'_t += dL_a / window size).
#include <algorithm>
#include <cmath>
#include <limits>
#include <string>
#include <vector>

#include "attnkit/error.h"
#include "attnkit/soft.h"
#include "core/attention_args.h"
#include "kernels/cpu/gemm.h"
#include "kernels/cpu/planner_ops.h"
#include "operators/soft_common.h"

namespace attnkit {
namespace {

using cpu::gemm;
using cpu::row_major;
using cpu::transposed;

// half_norm[r] = |x_r|^2 / 2 for rows of x [rows, dim].
std::vector<float> half_norms(const float* x, int64_t rows, int64_t dim) {
  std::vector<float> out(rows);
  for (int64_t r = 0; r < rows; ++r) {
    double sum = 0.0;
    for (int64_t c = 0; c < dim; ++c) sum += double(x[r * dim + c]) * x[r * dim + c];
    out[r] = static_cast<float>(0.5 * sum);
  }
  return out;
}

// out[i, a] = G(x_i, l_a) for x [rows, dim], l [m, dim]; l_t is [dim, m] scratch.
void gaussian(const float* x, int64_t rows, const float* l, int64_t m, int64_t dim, float* l_t,
              float* out) {
  cpu::transpose(l, m, dim, dim, l_t, m);
  gemm(rows, m, dim, 1.0f, row_major(x, dim), l_t, m, 0.0f, out, m);
  const std::vector<float> hx = half_norms(x, rows, dim), hl = half_norms(l, m, dim);
  for (int64_t i = 0; i < rows; ++i) {
    float* row = out + i * m;
    for (int64_t a = 0; a < m; ++a) row[a] -= hl[a];
    cpu::exp_shift_sum(row, m, hx[i], true);
  }
}

// K2^-1 through the double Cholesky; Error("landmarks") when K2 is not positive definite.
void exact_inverse(const float* k2, int64_t m, float* x) {
  std::vector<double> a(k2, k2 + m * m), inverse;
  check(spd_inverse(a, m, inverse), "landmarks",
        "the landmark kernel K2 is singular (two landmarks coincide?): the exact inverse needs "
        "distinct landmarks; the Newton inverse does not");
  for (int64_t e = 0; e < m * m; ++e) x[e] = static_cast<float>(inverse[e]);
}

// Rows of the sequence are walked in chunks of kChunk: K1 = G(Q', L) exists one chunk at a time
// (recomputed where a second pass needs it), so nothing N x m is stored and each chunk's
// products run on data in cache.
constexpr int64_t kChunk = 256;

// Per-thread buffers: one head's Q' (and dQ'), its m x m matrices, and one chunk's panels.
struct Work {
  std::vector<float> q, dq, l, l_t, k2, x, w, z, t, dz, dw, dx, dk2, trans;
  std::vector<float> k1, dk1, v, dout, rows, dl, weight;
  explicit Work(const SoftShape& s)
      : q(s.n * s.dim), l(s.landmarks * s.dim), l_t(s.dim * s.landmarks),
        k2(s.landmarks * s.landmarks), x(k2.size()), w(s.landmarks * s.dim_v), z(w.size()),
        t(k2.size()), k1(kChunk * s.landmarks), v(kChunk * s.dim_v),
        rows(kChunk * std::max(s.dim, s.dim_v)) {}
  // The backward's extra buffers.
  void for_backward(const SoftShape& s) {
    const int64_t m = s.landmarks;
    dq.resize(s.n * s.dim), dz.resize(m * s.dim_v), dw.resize(m * s.dim_v), dx.resize(m * m);
    dk2.resize(m * m), trans.resize(m * std::max(s.dim_v, m)), dk1.resize(kChunk * m);
    dout.resize(kChunk * s.dim_v), dl.resize(m * s.dim), weight.resize(m);
  }
};

// Q', L, K2, X = Ninv(K2), W = K1^T V (chunk by chunk), Z = X W for head (b, h).
void forward_parts(const SoftArgs& a, const SoftShape& s, const LandmarkWindows& windows,
                   int64_t b, int64_t h, Work& w) {
  const int64_t n = s.n, m = s.landmarks, dim = s.dim, dim_v = s.dim_v;
  const float scale = static_cast<float>(soft_scale(a));
  cpu::load_rows(a.q, b, h, 0, n, w.q.data());
  for (float& x : w.q) x *= scale;
  if (!a.landmarks.empty()) {
    cpu::load_rows(a.landmarks, b, h, 0, m, w.l.data());
  } else {  // the mean of Q' over each window
    std::fill(w.l.begin(), w.l.end(), 0.0f);
    for (int64_t t = 0; t < n; ++t)
      if (const int32_t lm = windows.window[t]; lm >= 0)
        for (int64_t c = 0; c < dim; ++c) w.l[lm * dim + c] += w.q[t * dim + c];
    const float inv = 1.0f / static_cast<float>(windows.size);
    for (float& x : w.l) x *= inv;
  }
  gaussian(w.l.data(), m, w.l.data(), m, dim, w.l_t.data(), w.k2.data());
  if (a.inverse == SoftInverse::kExact) {
    exact_inverse(w.k2.data(), m, w.x.data());
  } else {
    newton_inverse(w.k2.data(), m, a.newton_iterations, w.x.data());
  }
  for (int64_t t0 = 0; t0 < n; t0 += kChunk) {
    const int64_t len = std::min(kChunk, n - t0);
    gaussian(w.q.data() + t0 * dim, len, w.l.data(), m, dim, w.l_t.data(), w.k1.data());
    cpu::load_rows(a.v, b, h, t0, len, w.v.data());
    gemm(m, dim_v, len, 1.0f, transposed(w.k1.data(), m), w.v.data(), dim_v, t0 == 0 ? 0.0f : 1.0f,
         w.w.data(), dim_v);
  }
  gemm(m, dim_v, m, 1.0f, row_major(w.x.data(), m), w.w.data(), dim_v, 0.0f, w.z.data(), dim_v);
}

// Every (batch, head) in parallel with its own Work; errors thrown inside are rethrown here.
template <typename Item>
void for_each_head(const SoftArgs& a, const SoftShape& s, Item&& item) {
  const int64_t items = s.batch * s.heads;
  const int threads = static_cast<int>(std::min<int64_t>(effective_threads(a.threads), items));
  std::string error_argument, error_message;
#pragma omp parallel num_threads(threads)
  {
    Work w(s);
#pragma omp for schedule(dynamic)
    for (int64_t x = 0; x < items; ++x) {
      try {
        item(x / s.heads, x % s.heads, w);
      } catch (const Error& e) {
#pragma omp critical(attnkit_soft_error)
        if (error_argument.empty()) error_argument = e.argument(), error_message = e.message();
      }
    }
  }
  if (!error_argument.empty()) throw Error(error_argument, error_message);
}

}  // namespace

void newton_inverse(const float* k2, int64_t m, int iterations, float* x) {
  double widest = 0.0;  // max_i sum_j K2[i, j]
  for (int64_t i = 0; i < m; ++i) {
    double sum = 0.0;
    for (int64_t j = 0; j < m; ++j) sum += k2[i * m + j];
    widest = std::max(widest, sum);
  }
  const float alpha = static_cast<float>(1.8 / (widest * widest));
  std::vector<float> p(m * m), t(m * m), y(m * m);
  for (int64_t e = 0; e < m * m; ++e) p[e] = k2[e] + (e % (m + 1) == 0 ? 0.01f : 0.0f);
  for (int64_t e = 0; e < m * m; ++e) x[e] = alpha * p[e];
  for (int it = 0; it < iterations; ++it) {  // X <- 2 X - (X P) X
    gemm(m, m, m, 1.0f, row_major(x, m), p.data(), m, 0.0f, t.data(), m);
    std::copy(x, x + m * m, y.begin());
    gemm(m, m, m, -1.0f, row_major(t.data(), m), x, m, 2.0f, y.data(), m);
    std::copy(y.begin(), y.end(), x);
  }
}

void soft_attention(const SoftArgs& args) {
  const SoftShape s = validate_soft(args);
  const LandmarkWindows windows = landmark_windows(args, s.n);
  const int64_t m = s.landmarks, dim = s.dim, dim_v = s.dim_v;
  for_each_head(args, s, [&](int64_t b, int64_t h, Work& w) {
    forward_parts(args, s, windows, b, h, w);
    for (int64_t t0 = 0; t0 < s.n; t0 += kChunk) {  // O = K1 Z, K1 again chunk by chunk
      const int64_t len = std::min(kChunk, s.n - t0);
      gaussian(w.q.data() + t0 * dim, len, w.l.data(), m, dim, w.l_t.data(), w.k1.data());
      gemm(len, dim_v, m, 1.0f, row_major(w.k1.data(), m), w.z.data(), dim_v, 0.0f,
           w.rows.data(), dim_v);
      cpu::store_rows(w.rows.data(), len, args.out, b, h, t0);
    }
  });
}

void soft_attention_backward(const SoftBackwardArgs& g) {
  const SoftArgs& a = g.forward;
  const SoftShape s = validate_soft(g);
  const LandmarkWindows windows = landmark_windows(a, s.n);
  const int64_t n = s.n, m = s.landmarks, dim = s.dim, dim_v = s.dim_v;
  const float scale = static_cast<float>(soft_scale(a));
  for_each_head(a, s, [&](int64_t b, int64_t h, Work& w) {
    w.for_backward(s);
    forward_parts(a, s, windows, b, h, w);
    // dZ = K1^T dO, chunk by chunk; then dW = X^T dZ, dX = dZ W^T, dK2 = -X^T dX X^T.
    for (int64_t t0 = 0; t0 < n; t0 += kChunk) {
      const int64_t len = std::min(kChunk, n - t0);
      gaussian(w.q.data() + t0 * dim, len, w.l.data(), m, dim, w.l_t.data(), w.k1.data());
      cpu::load_rows(g.dout, b, h, t0, len, w.dout.data());
      gemm(m, dim_v, len, 1.0f, transposed(w.k1.data(), m), w.dout.data(), dim_v,
           t0 == 0 ? 0.0f : 1.0f, w.dz.data(), dim_v);
    }
    gemm(m, dim_v, m, 1.0f, transposed(w.x.data(), m), w.dz.data(), dim_v, 0.0f, w.dw.data(),
         dim_v);
    cpu::transpose(w.w.data(), m, dim_v, dim_v, w.trans.data(), m);
    gemm(m, m, dim_v, 1.0f, row_major(w.dz.data(), dim_v), w.trans.data(), m, 0.0f, w.dx.data(), m);
    gemm(m, m, m, 1.0f, transposed(w.x.data(), m), w.dx.data(), m, 0.0f, w.t.data(), m);
    cpu::transpose(w.x.data(), m, m, m, w.trans.data(), m);
    gemm(m, m, m, -1.0f, row_major(w.t.data(), m), w.trans.data(), m, 0.0f, w.dk2.data(), m);
    // Per chunk: dK1 = dO Z^T + V dW^T, dV = K1 dW, E1 = dK1 * K1 (elementwise), then
    // dQ'_i = (E1 L)_i - rowsum(E1)_i q'_i and dL_a += (E1^T Q')_a - colsum(E1)_a l_a.
    std::fill(w.dl.begin(), w.dl.end(), 0.0f);
    std::fill(w.weight.begin(), w.weight.end(), 0.0f);  // colsum(E1), then + rowsum(E2s)
    std::vector<float> z_t(dim_v * m), dw_t(dim_v * m);
    cpu::transpose(w.z.data(), m, dim_v, dim_v, z_t.data(), m);
    cpu::transpose(w.dw.data(), m, dim_v, dim_v, dw_t.data(), m);
    for (int64_t t0 = 0; t0 < n; t0 += kChunk) {
      const int64_t len = std::min(kChunk, n - t0);
      const float* q = w.q.data() + t0 * dim;
      float* dq = w.dq.data() + t0 * dim;
      gaussian(q, len, w.l.data(), m, dim, w.l_t.data(), w.k1.data());
      cpu::load_rows(g.dout, b, h, t0, len, w.dout.data());
      cpu::load_rows(a.v, b, h, t0, len, w.v.data());
      gemm(len, m, dim_v, 1.0f, row_major(w.dout.data(), dim_v), z_t.data(), m, 0.0f,
           w.dk1.data(), m);
      gemm(len, m, dim_v, 1.0f, row_major(w.v.data(), dim_v), dw_t.data(), m, 1.0f, w.dk1.data(),
           m);
      gemm(len, dim_v, m, 1.0f, row_major(w.k1.data(), m), w.dw.data(), dim_v, 0.0f,
           w.rows.data(), dim_v);
      cpu::store_rows(w.rows.data(), len, g.dv, b, h, t0);
      for (int64_t e = 0; e < len * m; ++e) w.dk1[e] *= w.k1[e];
      gemm(len, dim, m, 1.0f, row_major(w.dk1.data(), m), w.l.data(), dim, 0.0f, dq, dim);
      for (int64_t i = 0; i < len; ++i) {
        float sum = 0.0f;
        for (int64_t a2 = 0; a2 < m; ++a2) {
          sum += w.dk1[i * m + a2];
          w.weight[a2] += w.dk1[i * m + a2];
        }
        for (int64_t c = 0; c < dim; ++c) dq[i * dim + c] -= sum * q[i * dim + c];
      }
      gemm(m, dim, len, 1.0f, transposed(w.dk1.data(), m), q, dim, 1.0f, w.dl.data(), dim);
    }
    // Through K2 = G(L, L): E2 = dK2 * K2, both uses of L (E2 + E2^T), no diagonal (|l_a - l_a|
    // does not move): dL_a += (E2s L)_a - rowsum(E2s)_a l_a.
    for (int64_t e = 0; e < m * m; ++e) w.dk2[e] *= w.k2[e];
    for (int64_t a2 = 0; a2 < m; ++a2) {
      for (int64_t b2 = 0; b2 < a2; ++b2) {
        const float sum = w.dk2[a2 * m + b2] + w.dk2[b2 * m + a2];
        w.dk2[a2 * m + b2] = w.dk2[b2 * m + a2] = sum;
      }
      w.dk2[a2 * m + a2] = 0.0f;
    }
    gemm(m, dim, m, 1.0f, row_major(w.dk2.data(), m), w.l.data(), dim, 1.0f, w.dl.data(), dim);
    for (int64_t a2 = 0; a2 < m; ++a2) {
      float weight = w.weight[a2];
      for (int64_t b2 = 0; b2 < m; ++b2) weight += w.dk2[a2 * m + b2];
      for (int64_t c = 0; c < dim; ++c) w.dl[a2 * dim + c] -= weight * w.l[a2 * dim + c];
    }
    if (!a.landmarks.empty()) {
      cpu::store_rows(w.dl.data(), m, g.dlandmarks, b, h, 0);
    } else {  // each pooled token gets its landmark's gradient / window size
      const float inv = 1.0f / static_cast<float>(windows.size);
      for (int64_t t = 0; t < n; ++t)
        if (const int32_t lm = windows.window[t]; lm >= 0)
          for (int64_t c = 0; c < dim; ++c) w.dq[t * dim + c] += inv * w.dl[lm * dim + c];
    }
    for (float& x : w.dq) x *= scale;  // Q' = scale Q
    cpu::store_rows(w.dq.data(), n, g.dq, b, h, 0);
  });
}

}  // namespace attnkit
