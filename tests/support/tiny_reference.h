// The tiny model's forward pass in double, written the way Hugging Face computes it (un-permuted
// Q/K weights, rotate-half RoPE), optionally under a KV-cache policy: a ReferenceCache says which
// earlier tokens each query sees in each (layer, kv head) and at which RoPE positions, and is shown
// the probabilities they received (H2O's statistic). Keys and values are each token's own, computed
// once (decode with a cache never recomputes them); only their rotation follows the view.
#pragma once

#include <cstdint>
#include <vector>

#include "support/tiny_model.h"

namespace attnkit::model {

struct KeyView {
  std::vector<int64_t> tokens;     // token indices the query sees (its own included)
  std::vector<int64_t> positions;  // the RoPE position of each
  int64_t query_position = 0;
};

class ReferenceCache {
 public:
  virtual ~ReferenceCache() = default;
  // Called for t = 0, 1, ... in order, per layer (layers in order) and kv head.
  virtual KeyView view(int64_t layer, int64_t head_kv, int64_t t) = 0;
  // The probabilities of view.tokens, summed over the kv head's query heads.
  virtual void observe(int64_t layer, int64_t head_kv, int64_t t, const KeyView& view,
                       const std::vector<double>& probabilities) = 0;
};

// n byte tokens drawn uniformly (seeded).
std::vector<int32_t> random_byte_tokens(int64_t n, uint32_t seed);

// Logits [T, vocab]; without a cache every query sees every earlier token at its absolute
// position.
std::vector<double> reference_logits(const TinyModel& m, const std::vector<int32_t>& tokens,
                                     ReferenceCache* cache = nullptr);

}  // namespace attnkit::model
