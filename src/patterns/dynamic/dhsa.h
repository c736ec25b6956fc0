// DHSA's training-free chunk boundaries (see dhsa_boundaries.cc for the rule), exposed for tests.
#pragma once

#include <cstdint>
#include <vector>

#include "attnkit/pattern.h"

namespace attnkit::dynamic_patterns {

struct DhsaBoundaryParams {
  int64_t window = 4;  // tokens on each side of a candidate boundary
  int64_t nms = 8;     // non-maximum suppression radius
  int64_t beta = 8;    // at most (Nk / 64) * beta chunks
  double sigma = 1.0;  // keep candidates scoring above mean + sigma * std
  int64_t local = 64;  // forced boundary at Nk - local (the "instruction" boundary)
  // true: the official code's candidate rules (greedy suppression in score order, no boundary
  // within `window` of the ends or after the instruction boundary); false: local maxima.
  bool official_rules = true;
};

// Chunk boundaries of batch entry b: 0 = B_0 < B_1 < ... < B_m = Nk; chunk c = [B_c, B_c+1).
std::vector<int64_t> dhsa_boundaries(const PlanInputs& inputs, int64_t b,
                                     const DhsaBoundaryParams& p);

}  // namespace attnkit::dynamic_patterns
