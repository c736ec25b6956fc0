// BlockMask: which key blocks each query block attends, tagged FULL or PARTIAL.
//
// Query blocks are q_block rows, key blocks kv_block keys (multiples of 16, default 64).
// For each (batch or broadcast, head or broadcast, query block) there is a sorted list of kv-block
// indices. FULL blocks are attended without any per-element test; PARTIAL blocks ask the mask's
// TilePredicate, one tile at a time. Blocks absent from a list are skipped.
//
// Callbacks: a TilePredicate fills whole tiles (the kernel's hot path); builders take a
// std::function per list. Errors about a mask name "block_mask".
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

namespace attnkit {

enum class BlockKind : uint8_t { kFull = 1, kPartial = 2 };

// Fills the allowed-pairs bitmask of one tile, never one element through a virtual call:
//   allow[i * ld + j] = 1 iff query q0 + i may attend key k0 + j   (batch b, query head h),
// for i < nq, j < nk. Must be thread-safe.
class TilePredicate {
 public:
  virtual ~TilePredicate() = default;
  virtual void fill(int64_t b, int64_t h, int64_t q0, int64_t nq, int64_t k0, int64_t nk,
                    uint8_t* allow, int64_t ld) const = 0;
  // True if fill() ignores h: the kernel then fills one tile for all heads of a GQA group.
  virtual bool same_for_all_heads() const { return false; }
};

// One entry of a list: a kv block and its kind.
struct BlockEntry {
  int32_t kv_index;
  BlockKind kind;
};

struct BlockMask {
  int64_t q_block = 64;
  int64_t kv_block = 64;
  int64_t nq = 0;
  int64_t nk = 0;
  int64_t batch = 1;  // 1: the same lists for every batch entry
  int64_t heads = 1;  // 1: the same lists for every query head; else Hq
  // Entries of list r = (b * heads + h) * q_blocks() + qb are [row_start[r], row_start[r + 1]).
  std::vector<int64_t> row_start;
  std::vector<int32_t> kv_index;                   // sorted ascending within each list
  std::vector<BlockKind> kind;                     // parallel to kv_index
  std::shared_ptr<const TilePredicate> predicate;  // required when any entry is PARTIAL

  int64_t q_blocks() const { return (nq + q_block - 1) / q_block; }
  int64_t kv_blocks() const { return (nk + kv_block - 1) / kv_block; }
  int64_t lists() const { return batch * heads * q_blocks(); }
  // List index for (b, h, qb), honouring broadcast dimensions.
  int64_t list(int64_t b, int64_t h, int64_t qb) const {
    return ((batch == 1 ? 0 : b) * heads + (heads == 1 ? 0 : h)) * q_blocks() + qb;
  }
  // Throws Error("block_mask", ...) for inconsistent sizes, unsorted lists, indices out of range,
  // or PARTIAL entries without a predicate.
  void validate() const;
};

// --- Builders (src/core/block_mask.cc); each ends with validate() ---

struct BlockMaskShape {
  int64_t nq = 0, nk = 0;
  int64_t batch = 1, heads = 1;  // 1 = broadcast
  int64_t q_block = 64, kv_block = 64;
};

// Writes the entries of list (b, h, qb) in ascending kv-block order (may be called from several
// threads at once for different lists).
using BlockRowBuilder =
    std::function<void(int64_t b, int64_t h, int64_t qb, std::vector<BlockEntry>* entries)>;
// Lists written directly by a builder from the rule's analytic per-row ranges (the fast path).
BlockMask block_mask_from_rows(const BlockMaskShape& shape,
                               std::shared_ptr<const TilePredicate> predicate,
                               const BlockRowBuilder& rows);
// Lists given explicitly, one per list index (b, h, qb) as in BlockMask::list(), each ascending.
BlockMask block_mask_from_entries(const BlockMaskShape& shape,
                                  std::shared_ptr<const TilePredicate> predicate,
                                  std::vector<std::vector<BlockEntry>> lists);
// Kv-block indices per list, in any order, duplicates allowed; every block FULL.
BlockMask block_mask_from_indices(const BlockMaskShape& shape,
                                  const std::vector<std::vector<int32_t>>& lists);
// From an element predicate alone: every block is classified by filling its tile (slow; tests,
// user predicates).
BlockMask block_mask_from_predicate(const BlockMaskShape& shape,
                                    std::shared_ptr<const TilePredicate> predicate);

BlockMask mask_and(const BlockMask& a, const BlockMask& b);
BlockMask mask_or(const BlockMask& a, const BlockMask& b);

// --- Pair counts and read-outs ---

// Query-key pairs one (batch, head) slice attends without a mask: Nq * Nk, or with `causal` the
// bottom-right causal count (query i sees keys 0 .. i + Nk - Nq).
double dense_pairs(int64_t nq, int64_t nk, bool causal);
// Allowed pairs of list (b, h) (FULL blocks counted by size, PARTIAL blocks filled); with
// `causal`, only pairs with j <= i + (nk - nq) count (what the kernel does with args.causal).
double allowed_pairs(const BlockMask& mask, int64_t b, int64_t h, bool causal = false);
// Allowed pairs / (nq * nk), averaged over the mask's (batch, heads) lists.
double density(const BlockMask& mask, bool causal = false);
// Share of blocks visited (listed) among all q_blocks x kv_blocks, averaged over lists.
double block_density(const BlockMask& mask);
// May query i attend key j in list (b, h)? (Slow: for references and tests.)
bool allowed(const BlockMask& mask, int64_t b, int64_t h, int64_t i, int64_t j);
// Element mask [nq][nk] (1 = allowed) of list (b, h); for tests and dumps, small sizes only.
std::vector<uint8_t> to_dense(const BlockMask& mask, int64_t b, int64_t h);
// One character per block: '#' FULL, '+' PARTIAL, '.' empty. With max_columns > 0, at most that
// many characters wide: each character then stands for a square group of blocks ('#' all FULL,
// '.' all empty, '+' otherwise).
std::string to_ascii(const BlockMask& mask, int64_t b, int64_t h, int64_t max_columns = 0);

}  // namespace attnkit
