// KV-cache policies of the model runtime: which past tokens each (layer, kv head) keeps, and the
// positions their keys are rotated to. Chosen by a spec string (CacheSpec::parse):
//
//   full
//     Every token; keys rotated by their absolute positions before caching.
//   streaming:sinks=S,recent=R            (defaults 4 and 1020)
//     StreamingLLM (Xiao et al., ICLR 2024): the first S tokens (attention sinks) plus the most
//     recent. Before a step appends T tokens the cache drops the oldest non-sink tokens so that
//     S + R remain after the append (the official StartRecentKVCache.evict_for_space), so every
//     query sees at most S + R keys; a step appends at most R tokens (longer inputs run in pieces).
//     Positions within the cache, the paper's pos_shift: slot i has position i, the query the last
//     slot's. How: recent keys stay rotated by their absolute positions (they are contiguous and
//     end at the query, so their distance to it is their slot distance already); sink keys are
//     kept before RoPE too and re-rotated every step to position p - (n - 1 - j), p the last new
//     token's position and n the cache length after the append, so that sink j is n - 1 - j
//     positions from the query at p: pos_shift's distance. RoPE scores depend on distances only,
//     so this equals rotating every key by its slot (tested), at the cost of S rotations a step.
//   h2o:heavy=H,recent=R[,pos=original|cache]   (defaults 512, 512, original)
//     H2O's real drop (Zhang et al., NeurIPS 2023): each (layer, kv head) keeps a score per
//     slot, the sum of the attention probabilities the slot received over the step's query rows
//     and the group's query heads (GQA: the official code assumes Hq = Hkv; we sum the group, in
//     head order), accumulated over the steps; a new token starts with its own column sum. After
//     a step's attention, if more than H + R tokens remain, each head keeps its R most recent and
//     the H highest scores among the rest (ties to the older token) and drops the others with their
//     scores: heads keep different tokens. A step appends at most R tokens (longer prompts run in
//     pieces, so the cache stays O(H + R); the official code prefills a prompt whole, then evicts).
//     pos=original (the real-drop code): keys keep their absolute positions. pos=cache (its
//     _streaming variant): positions within the cache as for streaming; keys are kept before RoPE
//     and re-rotated when their slot moves.
//
// One mechanism serves every rule: each slot records the position its key is rotated to, and
// before a layer's attention every slot whose target differs is re-rotated from its pre-RoPE key.
// Target: the absolute position (full, h2o original), or slot + (p - (n - 1)) for positions within
// the cache (the shift makes new keys' target their absolute position, so they need no rotation).
//
// Layout per layer: keys and values [kv_head][capacity][head_dim] in the cache's dtype (f32, f16 or
// bf16: rotated in f32, then rounded once), so the attention kernel sees [1, Hkv, size, head_dim]
// through strides and the decode kernel reads a 16-bit cache in place; pre-RoPE keys (f32) likewise
// when positions are within the cache; per (layer, kv head, slot) the absolute position, the
// rotation applied and the score.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "attnkit/tensor.h"

namespace attnkit::model {

struct CacheSpec {
  enum class Kind { kFull, kStreaming, kH2O };
  Kind kind = Kind::kFull;
  int64_t sinks = 4, recent = 1020;  // streaming
  int64_t heavy = 512;               // h2o (its recent defaults to 512)
  bool cache_positions = false;      // streaming always; h2o with pos=cache

  // "full", "streaming[:sinks=S,recent=R]", "h2o[:heavy=H,recent=R,pos=original|cache]"; throws
  // Error(argument, ...) naming the bad key or value.
  static CacheSpec parse(const std::string& text, const std::string& argument = "cache");
  std::string str() const;
  // Tokens kept between steps (0: unbounded, the full cache).
  int64_t budget() const;
};

class KvCache {
 public:
  // `max_tokens` bounds the full cache (its capacity); the other policies hold budget + one step.
  KvCache(const CacheSpec& spec, int64_t layers, int64_t heads_kv, int64_t head_dim,
          int64_t max_tokens, double rope_theta, DType dtype = DType::kF32);

  const CacheSpec& spec() const { return spec_; }
  DType dtype() const { return dtype_; }
  int64_t size() const { return size_; }  // slots in use, the same in every layer and head
  int64_t capacity() const { return capacity_; }
  int64_t step_limit() const;  // the most tokens one step may append
  bool needs_raw_keys() const { return spec_.cache_positions; }
  bool needs_scores() const { return spec_.kind == CacheSpec::Kind::kH2O; }
  void clear() { size_ = 0; }

  // Before a step of `count` tokens: the streaming eviction, in every layer.
  void make_room(int64_t count);
  // Writes `count` new tokens of `layer` at slots [size, size + count): rows t of k (rotated by
  // the absolute position first_pos + t), raw_k (pre-RoPE, or null when not needed) and v, each
  // [count, heads_kv * head_dim]. Then re-rotates every slot whose target moved (see above).
  void append(int64_t layer, int64_t count, int64_t first_pos, const float* k, const float* raw_k,
              const float* v);
  // Keys / values of `layer` over the slots [0, size + pending) as [1, Hkv, slots, head_dim].
  TensorView keys(int64_t layer, int64_t slots) const;
  TensorView values(int64_t layer, int64_t slots) const;
  // H2O: adds col_sums [heads_kv][slots] (this step's column sums of P) to the layer's scores.
  void add_scores(int64_t layer, int64_t slots, const float* col_sums);
  // After every layer ran the step: size += count, then the H2O eviction.
  void commit(int64_t count);

  // Per (layer, kv head) slot metadata, for tests: absolute positions and scores.
  const int64_t* positions(int64_t layer, int64_t head) const;
  const double* scores(int64_t layer, int64_t head) const;

 private:
  int64_t row(int64_t layer, int64_t head, int64_t slot) const {
    return (layer * heads_kv_ + head) * capacity_ + slot;
  }
  void move_slots(int64_t layer, int64_t head, int64_t from, int64_t to, int64_t count);
  // rope_angles of position slot + shift, computed once per step (shift) and slot, shared by
  // every layer and head.
  const float* target_angles(int64_t slot, int64_t shift);
  // Rounds one f32 row into slot row r of `buffer` (k_ or v_).
  void store(std::vector<char>& buffer, int64_t r, const float* row);
  void evict_h2o(int64_t layer, int64_t head);

  CacheSpec spec_;
  DType dtype_;
  int64_t layers_, heads_kv_, head_dim_, capacity_, row_bytes_;
  double rope_theta_;
  int64_t size_ = 0;
  std::vector<char> k_, v_;                  // [layer][head][capacity][head_dim], dtype_
  std::vector<float> raw_k_;                 // [layer][head][capacity][head_dim]
  std::vector<int64_t> pos_, rotated_;       // [layer][head][capacity]
  std::vector<double> score_;                // [layer][head][capacity] (h2o)
  std::vector<float> angles_, rotated_row_;  // [capacity][head_dim] target angles; one key
  std::vector<char> angles_ready_;           // [capacity]: angles_ holds slot + angles_shift_
  int64_t angles_shift_ = 0;
};

}  // namespace attnkit::model
