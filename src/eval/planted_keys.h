// Structured synthetic attention inputs with planted important keys, for judging content-based
// planners (random Gaussian inputs are too diffuse: every planner looks alike on them).
//
// Per (batch, kv head), with u_t random unit "topic" directions and sqrt(d) scaling so that a
// planted match adds about `needle_logit` to scale * q . k:
//   keys:    k_j = noise * z_j + local * r_j + [j in a needle span of topic t] needle * u_t
//            + [j < sink_tokens] sink * s
//   queries: q_i = noise * z_i + local * r_i + needle * u_{topic(i)} + s
// where topic(i) changes every `segment` tokens (random topic), each topic owns `spans` needle
// spans of `span` tokens at random positions, r_i is a smooth unit-norm random walk
// (correlation length ~ `local_length`, so nearby tokens attend each other), and s is a fixed
// direction (an attention sink). Query heads of a group share topics and needles but have their
// own noise. Sink and topic directions are orthonormal (when topics + 1 < dim) and the local walk
// is projected onto their complement, so planted matches do not leak into one another. A
// segment's topic is drawn among topics with a span before the segment, so causal queries can
// see their needles. Values are N(0, 1). Everything is a pure function of `seed`.
#pragma once

#include <cstdint>

#include "attnkit/tensor.h"

namespace attnkit {

struct PlantedKeysOptions {
  int64_t batch = 1, heads_q = 4, heads_kv = 2, n = 4096, dim = 64;
  int64_t topics = 16;        // distinct needle topics per kv head
  int64_t spans = 2;          // needle spans per topic
  int64_t span = 32;          // tokens per span
  int64_t segment = 512;      // queries keep one topic for this many tokens
  int64_t local_length = 32;  // correlation length of the local component (tokens)
  int64_t sink_tokens = 4;
  float needle_logit = 12.0f;  // added to scale * q . k by a planted match
  float local_logit = 6.0f;    // added between a token and itself by the local component
  float sink_logit = 6.0f;     // added between any query and a sink key
  float noise = 0.3f;          // std of the iid part of q and k (per element)
  uint64_t seed = 1;
  DType dtype = DType::kF32;
};

struct PlantedKeys {
  Tensor q, k, v;  // [B, Hq, N, D], [B, Hkv, N, D], [B, Hkv, N, D]
};

PlantedKeys make_planted_keys(const PlantedKeysOptions& options);

}  // namespace attnkit
