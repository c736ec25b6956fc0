// The default input of `attnkit compare`: a structured synthetic attention problem, so that a
// table of sparse patterns against exact attention means something (on iid Gaussian inputs
// attention is nearly uniform and every pattern looks equally bad).
//
// Structure (built by make_planted_keys, eval/planted_keys.h): a local component (a smooth random
// walk shared by q and k, so nearby tokens attend each other), a few globally important keys
// (needle spans per topic at random positions, matched by every query of a segment on that
// topic), and attention-sink tokens at the start. Pure function of the options and seed.
#pragma once

#include <cstdint>
#include <string>

#include "attnkit/tensor.h"

namespace attnkit {

struct SyntheticOptions {
  int64_t batch = 1, heads_q = 8, heads_kv = 8, n = 4096, dim = 64;
  uint64_t seed = 1;
};

struct SyntheticInputs {
  Tensor q, k, v;           // [B, Hq, N, D], [B, Hkv, N, D], [B, Hkv, N, D], f32
  std::string description;  // one line for table headers
};

SyntheticInputs make_synthetic(const SyntheticOptions& options);

}  // namespace attnkit
