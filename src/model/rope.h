// Rotary position embedding in GGUF's pairing (llama.h): each adjacent pair (x[2i], x[2i+1]) of a
// head rotates by pos * theta^(-2i/head_dim).
#pragma once

#include <cmath>
#include <cstdint>

namespace attnkit::model {

// table[2i], table[2i+1] = cos, sin of pos * theta^(-2i/head_dim), i < head_dim / 2 (in double,
// then rounded: exact to f32 at any position).
inline void rope_angles(int64_t pos, int64_t head_dim, double theta, float* table) {
  for (int64_t i = 0; i < head_dim / 2; ++i) {
    const double angle = static_cast<double>(pos) * std::pow(theta, -2.0 * i / head_dim);
    table[2 * i] = static_cast<float>(std::cos(angle));
    table[2 * i + 1] = static_cast<float>(std::sin(angle));
  }
}

// Rotates each head of `x` ([heads, head_dim]) by the angles in `table` (from rope_angles), in
// place or into `out` (which may alias x).
inline void rope(const float* x, int64_t heads, int64_t head_dim, const float* table, float* out) {
  for (int64_t h = 0; h < heads; ++h) {
    const float* v = x + h * head_dim;
    float* o = out + h * head_dim;
    for (int64_t i = 0; i < head_dim / 2; ++i) {
      const float c = table[2 * i], s = table[2 * i + 1];
      const float a = v[2 * i], b = v[2 * i + 1];
      o[2 * i] = a * c - b * s;
      o[2 * i + 1] = a * s + b * c;
    }
  }
}
inline void rope(float* x, int64_t heads, int64_t head_dim, const float* table) {
  rope(x, heads, head_dim, table, x);
}

}  // namespace attnkit::model
