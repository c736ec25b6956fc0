// SOFT's oracle: the chain of include/attnkit/soft.h in double, with plain matrices and loops
// (the Gaussians from distances directly, Newton in double). Only tests and small runs call it.
#include <algorithm>
#include <cmath>
#include <vector>

#include "attnkit/error.h"
#include "attnkit/soft.h"
#include "operators/soft_common.h"

namespace attnkit {
namespace {

struct Matrix {
  int64_t rows = 0, cols = 0;
  std::vector<double> at;
  Matrix(int64_t r, int64_t c) : rows(r), cols(c), at(r * c, 0.0) {}
  double& operator()(int64_t i, int64_t j) { return at[i * cols + j]; }
  double operator()(int64_t i, int64_t j) const { return at[i * cols + j]; }
};

Matrix operator*(const Matrix& a, const Matrix& b) {
  Matrix c(a.rows, b.cols);
  for (int64_t i = 0; i < a.rows; ++i)
    for (int64_t p = 0; p < a.cols; ++p)
      for (int64_t j = 0; j < b.cols; ++j) c(i, j) += a(i, p) * b(p, j);
  return c;
}

Matrix transpose(const Matrix& a) {
  Matrix t(a.cols, a.rows);
  for (int64_t i = 0; i < a.rows; ++i)
    for (int64_t j = 0; j < a.cols; ++j) t(j, i) = a(i, j);
  return t;
}

Matrix rows_of(const TensorView& x, int64_t b, int64_t h, int64_t rows, double factor) {
  Matrix m(rows, x.shape[3]);
  for (int64_t i = 0; i < rows; ++i)
    for (int64_t c = 0; c < x.shape[3]; ++c) m(i, c) = factor * x.get(b, h, i, c);
  return m;
}

// G(x_i, y_j) = exp(-|x_i - y_j|^2 / 2).
Matrix gaussian(const Matrix& x, const Matrix& y) {
  Matrix g(x.rows, y.rows);
  for (int64_t i = 0; i < x.rows; ++i)
    for (int64_t j = 0; j < y.rows; ++j) {
      double d2 = 0.0;
      for (int64_t c = 0; c < x.cols; ++c) d2 += (x(i, c) - y(j, c)) * (x(i, c) - y(j, c));
      g(i, j) = std::exp(-0.5 * d2);
    }
  return g;
}

Matrix newton(const Matrix& k2, int iterations) {
  const int64_t m = k2.rows;
  double widest = 0.0;
  for (int64_t i = 0; i < m; ++i) {
    double sum = 0.0;
    for (int64_t j = 0; j < m; ++j) sum += k2(i, j);
    widest = std::max(widest, sum);
  }
  Matrix p = k2;
  for (int64_t i = 0; i < m; ++i) p(i, i) += 0.01;
  Matrix x = p;
  for (double& e : x.at) e *= 1.8 / (widest * widest);
  for (int it = 0; it < iterations; ++it) {
    const Matrix xpx = x * p * x;
    for (int64_t e = 0; e < m * m; ++e) x.at[e] = 2.0 * x.at[e] - xpx.at[e];
  }
  return x;
}

struct Parts {
  Matrix q, v, l, k1, k2, x, w, z;
};

Parts forward_parts(const SoftArgs& a, const SoftShape& s, int64_t b, int64_t h) {
  const double scale = soft_scale(a);
  Matrix q = rows_of(a.q, b, h, s.n, scale), v = rows_of(a.v, b, h, s.n, 1.0);
  Matrix l(s.landmarks, s.dim);
  if (!a.landmarks.empty()) {
    l = rows_of(a.landmarks, b, h, s.landmarks, 1.0);
  } else {
    const LandmarkWindows windows = landmark_windows(a, s.n);
    for (int64_t t = 0; t < s.n; ++t)
      if (windows.window[t] >= 0)
        for (int64_t c = 0; c < s.dim; ++c) l(windows.window[t], c) += q(t, c) / windows.size;
  }
  Matrix k1 = gaussian(q, l), k2 = gaussian(l, l);
  Matrix x(s.landmarks, s.landmarks);
  if (a.inverse == SoftInverse::kExact) {
    check(spd_inverse(k2.at, s.landmarks, x.at), "landmarks",
          "the landmark kernel K2 is singular (two landmarks coincide?)");
  } else {
    x = newton(k2, a.newton_iterations);
  }
  Matrix w = transpose(k1) * v;
  Matrix z = x * w;
  return {q, v, l, k1, k2, x, w, z};
}

void store(const Matrix& m, const MutableTensorView& out, int64_t b, int64_t h) {
  for (int64_t i = 0; i < m.rows; ++i)
    for (int64_t c = 0; c < m.cols; ++c) out.set(b, h, i, c, static_cast<float>(m(i, c)));
}

}  // namespace

void soft_attention_reference(const SoftArgs& a) {
  const SoftShape s = validate_soft(a);
  for (int64_t b = 0; b < s.batch; ++b)
    for (int64_t h = 0; h < s.heads; ++h) {
      const Parts p = forward_parts(a, s, b, h);
      store(p.k1 * p.z, a.out, b, h);
    }
}

void soft_attention_backward_reference(const SoftBackwardArgs& g) {
  const SoftArgs& a = g.forward;
  const SoftShape s = validate_soft(g);
  const int64_t n = s.n, m = s.landmarks, dim = s.dim;
  for (int64_t b = 0; b < s.batch; ++b)
    for (int64_t h = 0; h < s.heads; ++h) {
      const Parts p = forward_parts(a, s, b, h);
      const Matrix dout = rows_of(g.dout, b, h, n, 1.0);
      const Matrix dz = transpose(p.k1) * dout;            // O = K1 Z
      const Matrix dw = transpose(p.x) * dz;               // Z = X W
      const Matrix dx = dz * transpose(p.w);
      Matrix dk1 = dout * transpose(p.z);                  // O = K1 Z
      const Matrix dk1_w = p.v * transpose(dw);            // W = K1^T V
      for (int64_t e = 0; e < n * m; ++e) dk1.at[e] += dk1_w.at[e];
      store(p.k1 * dw, g.dv, b, h);
      Matrix dk2 = transpose(p.x) * dx * transpose(p.x);   // X = K2^-1: dK2 = -X^T dX X^T
      for (double& e : dk2.at) e = -e;
      // K1[i, a] = G(q_i, l_a): dG/dq_i = G (l_a - q_i), dG/dl_a = G (q_i - l_a).
      Matrix dq(n, dim), dl(m, dim);
      for (int64_t i = 0; i < n; ++i)
        for (int64_t la = 0; la < m; ++la) {
          const double e = dk1(i, la) * p.k1(i, la);
          for (int64_t c = 0; c < dim; ++c) {
            dq(i, c) += e * (p.l(la, c) - p.q(i, c));
            dl(la, c) += e * (p.q(i, c) - p.l(la, c));
          }
        }
      // K2[a, b] = G(l_a, l_b): both arguments move with L.
      for (int64_t la = 0; la < m; ++la)
        for (int64_t lb = 0; lb < m; ++lb) {
          const double e = dk2(la, lb) * p.k2(la, lb);
          for (int64_t c = 0; c < dim; ++c) {
            dl(la, c) += e * (p.l(lb, c) - p.l(la, c));
            dl(lb, c) += e * (p.l(la, c) - p.l(lb, c));
          }
        }
      if (!a.landmarks.empty()) {
        store(dl, g.dlandmarks, b, h);
      } else {
        const LandmarkWindows windows = landmark_windows(a, n);
        for (int64_t t = 0; t < n; ++t)
          if (windows.window[t] >= 0)
            for (int64_t c = 0; c < dim; ++c) dq(t, c) += dl(windows.window[t], c) / windows.size;
      }
      for (double& e : dq.at) e *= soft_scale(a);
      store(dq, g.dq, b, h);
    }
}

}  // namespace attnkit
