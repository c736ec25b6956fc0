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
//
// Two variants make the structure closer to text (phrase_inputs() below uses both):
//   local_chunk > 0: r_i is constant inside chunks of about local_chunk tokens (lengths uniform
//     in [local_chunk / 2, 3 local_chunk / 2]) instead of a smooth walk: sentences or clauses
//     whose tokens attend each other, with sharp borders.
//   phrase = true: a span is a phrase, not a run of copies: token o of a span of length L
//     carries the topic with weight sin(pi (o + 1/2) / L) (strongest mid-phrase) times a
//     per-token factor in [0.7, 1.3], so the planted mass spreads unevenly over several tokens.
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
  int64_t local_chunk = 0;     // > 0: chunked local component (see above); 0: smooth walk
  bool phrase = false;         // spans as phrases with uneven per-token weights (see above)
  uint64_t seed = 1;
  DType dtype = DType::kF32;
};

struct PlantedKeys {
  Tensor q, k, v;  // [B, Hq, N, D], [B, Hkv, N, D], [B, Hkv, N, D]
};

PlantedKeys make_planted_keys(const PlantedKeysOptions& options);

// The phrase-like input of HiP's recall study: causal, 4 query heads over 1 kv head, d = 64,
// local chunks of ~32 tokens, 16 topics with 2 phrases of 8 tokens each, segments of 512
// queries, 4 sink tokens; logits set so that no single structure holds most of the mass.
PlantedKeysOptions phrase_inputs(int64_t n, uint64_t seed = 1);

}  // namespace attnkit
