// Neighborhood Attention geometry, one axis at a time (NATTEN; Hassani, Hwu, Shi, "Faster
// Neighborhood Attention", NeurIPS 2024, arXiv 2403.04690; rule checked against NATTEN's
// csrc/include/natten/cuda/reference/mask.hpp and the v0.17 CPU reference).
//
// On one axis of length L with kernel k and dilation d:
//   - dilation groups: token i belongs to group g = i % d and has group coordinate i' = i / d; the
//     group is a sub-axis of length Lg = ceil((L - g) / d). Keys of another group are never seen.
//   - non-causal: the window is clamped (shifted inward) at the borders, never zero-padded, so
//     every query sees exactly k keys:   start' = clamp(i' - k/2, 0, Lg - k),  end' = start' + k.
//     (even k = 2r: r keys on the left, r - 1 on the right, as NATTEN.)
//   - causal: the k most recent positions including itself:  start' = max(i' - k + 1, 0),
//     end' = i' + 1 (fewer than k keys near the start).
//   key j is a neighbour of query i  <=>  j % d == i % d  and  start' <= j / d < end'.
// The n-D neighbourhood is the AND of the per-axis rules (tokens in row-major grid order).
// Requirement per axis: 1 <= k and k * d <= L (NATTEN's own check).
//
// Both start' and end' are non-decreasing in i' and consecutive windows overlap or touch, which is
// what makes the interval classification in tiling.h exact.
#pragma once

#include <algorithm>
#include <cstdint>

namespace attnkit::grid_patterns {

// Length of dilation group g (0 <= g < dilation) on an axis of `length` tokens.
inline int64_t natten_group_length(int64_t length, int64_t dilation, int64_t g) {
  return (length - g + dilation - 1) / dilation;
}

// First key (group coordinate) of the window of the query at group coordinate i.
inline int64_t natten_window_start(int64_t i, int64_t kernel, bool causal, int64_t group_len) {
  if (causal) return std::max<int64_t>(i - kernel + 1, 0);
  return std::clamp<int64_t>(i - kernel / 2, 0, group_len - kernel);
}

// One past the last key (group coordinate) of that window.
inline int64_t natten_window_end(int64_t i, int64_t kernel, bool causal, int64_t group_len) {
  if (causal) return i + 1;
  return natten_window_start(i, kernel, false, group_len) + kernel;
}

// Per-axis neighbour test in original coordinates.
inline bool natten_neighbor(int64_t i, int64_t j, int64_t length, int64_t kernel, int64_t dilation,
                            bool causal) {
  if (i % dilation != j % dilation) return false;
  const int64_t group_len = natten_group_length(length, dilation, i % dilation);
  const int64_t jg = j / dilation;
  const int64_t ig = i / dilation;
  return natten_window_start(ig, kernel, causal, group_len) <= jg &&
         jg < natten_window_end(ig, kernel, causal, group_len);
}

}  // namespace attnkit::grid_patterns
