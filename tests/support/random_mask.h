// Random block masks for kernel tests: lists drawn per (batch, head, query block), entries FULL or
// PARTIAL, PARTIAL entries decided by a hashed element rule; and the element rule a mask stands
// for, for the references.
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <random>
#include <vector>

#include "attnkit/attention.h"
#include "attnkit/block_mask.h"
#include "support/attention_check.h"

namespace attnkit::testing {

// A pseudo-random element rule: about half of the pairs allowed, different per head.
inline bool hashed_allow(int64_t h, int64_t i, int64_t j) {
  uint64_t x = (uint64_t(h) * 0x9E3779B97F4A7C15ull) ^ (uint64_t(i) * 0xBF58476D1CE4E5B9ull) ^
               (uint64_t(j) * 0x94D049BB133111EBull);
  x ^= x >> 31;
  x *= 0xD6E8FEB86654385Dull;
  return (x >> 40) & 1;
}

// Keys a sparse rule may use: about one in eight per head, scattered like a planner's picked
// units, so that PARTIAL blocks are mostly empty columns (the kernel's gathered path).
inline bool picked_key(int64_t h, int64_t j) {
  return hashed_allow(h, -1, j) && hashed_allow(h, -2, j) && hashed_allow(h, -3, j);
}

// The element rule of PARTIAL blocks: hashed_allow, and with `sparse` only on picked keys.
inline bool partial_allow(bool sparse, int64_t h, int64_t i, int64_t j) {
  return hashed_allow(h, i, j) && (!sparse || picked_key(h, j));
}

class HashedPredicate : public TilePredicate {
 public:
  explicit HashedPredicate(bool sparse = false) : sparse_(sparse) {}
  void fill(int64_t b, int64_t h, int64_t q0, int64_t nq, int64_t k0, int64_t nk, uint8_t* allow,
            int64_t ld) const override {
    for (int64_t i = 0; i < nq; ++i)
      for (int64_t j = 0; j < nk; ++j) allow[i * ld + j] = partial_allow(sparse_, h, q0 + i, k0 + j);
  }
  bool sparse() const { return sparse_; }

 private:
  bool sparse_;
};

struct MaskCase {
  Problem problem;
  int64_t q_block, kv_block;
  bool per_head;
  bool per_batch = false;  // lists differ per batch entry (as planners build them)
  double keep;             // probability that a block is listed
  bool sparse = false;     // PARTIAL blocks allow only scattered keys (HashedPredicate)
};

inline BlockMask random_mask(const MaskCase& c, std::mt19937& rng) {
  BlockMask m;
  m.q_block = c.q_block, m.kv_block = c.kv_block, m.nq = c.problem.nq, m.nk = c.problem.nk;
  m.heads = c.per_head ? c.problem.heads_q : 1;
  m.batch = c.per_batch ? c.problem.batch : 1;
  m.predicate = std::make_shared<HashedPredicate>(c.sparse);
  std::bernoulli_distribution keep(c.keep), partial(0.5);
  m.row_start.push_back(0);
  for (int64_t list = 0; list < m.lists(); ++list) {
    for (int32_t kb = 0; kb < m.kv_blocks(); ++kb) {
      if (!keep(rng)) continue;
      m.kv_index.push_back(kb);
      m.kind.push_back(partial(rng) ? BlockKind::kPartial : BlockKind::kFull);
    }
    m.row_start.push_back(static_cast<int64_t>(m.kv_index.size()));
  }
  return m;
}

// The element rule a mask stands for, for the reference.
inline ElementPredicate mask_rule(const BlockMask& m) {
  const auto* hashed = dynamic_cast<const HashedPredicate*>(m.predicate.get());
  const bool sparse = hashed && hashed->sparse();
  return [&m, sparse](int64_t b, int64_t h, int64_t i, int64_t j) {
    const int64_t list = m.list(b, h, i / m.q_block);
    for (int64_t e = m.row_start[list]; e < m.row_start[list + 1]; ++e)
      if (m.kv_index[e] == j / m.kv_block)
        return m.kind[e] == BlockKind::kFull || partial_allow(sparse, h, i, j);
    return false;
  };
}

// Every shape {batch, heads_q, heads_kv, nq, nk, q_block, kv_block} in every dtype, causal or
// not, with per-head or shared lists (per-batch lists when batch > 1), head dim `dim`, Dv = 48,
// a share `keep` of the blocks kept; once per SIMD target.
inline std::vector<MaskCase> mask_sweep(const std::vector<std::array<int64_t, 7>>& shapes,
                                        const std::vector<DType>& dtypes, int64_t dim = 80,
                                        double keep = 0.6, bool sparse = false) {
  std::vector<MaskCase> out;
  for (DType dtype : dtypes)
    for (bool causal : {false, true})
      for (bool per_head : {false, true})
        for (const auto& s : shapes) {
          MaskCase c;
          c.problem.batch = s[0], c.per_batch = s[0] > 1;
          c.problem.heads_q = s[1], c.problem.heads_kv = s[2], c.problem.nq = s[3];
          c.problem.nk = s[4], c.problem.dim = dim, c.problem.dim_v = 48;
          c.problem.dtype = dtype, c.problem.causal = causal;
          c.q_block = s[5], c.kv_block = s[6], c.per_head = per_head, c.keep = keep;
          c.sparse = sparse;
          for (int64_t target : simd_targets()) {
            c.problem.target = target;
            out.push_back(c);
          }
        }
  return out;
}

}  // namespace attnkit::testing
