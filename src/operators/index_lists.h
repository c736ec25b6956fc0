// The key lists of index-list attention (include/attnkit/index_attention.h), checked once and
// read per row, whichever form they came in (internal).
#pragma once

#include <cstdint>
#include <vector>

#include "attnkit/index_attention.h"

namespace attnkit {

// What this operator leaves to attention(): causality, dropout and score modifiers must be off.
// Throws Error naming the argument.
void check_index_attention_flags(const AttentionArgs& args);

// One row's list: count entries at data[0], data[stride], ... (-1 = padding); `first` is the
// position of its first entry among all the entries of its list set (the row's slots in the
// per-pair buffers of the backward).
struct ListRow {
  const int32_t* data;
  int64_t count, stride, first;
};

class ListSet {
 public:
  // Checks the lists against the attention's shapes: form, shape, every index in [-1, nk), no
  // key twice in a row. Throws Error("indices", ...) naming the row and the value.
  ListSet(const IndexLists& lists, int64_t batch, int64_t heads, int64_t nq, int64_t nk,
          int threads);

  ListRow row(int64_t b, int64_t h, int64_t i) const;
  // Entries of one list set (Nq * K padded, nnz for CSR) and the longest row.
  int64_t entries() const { return entries_; }
  int64_t longest() const { return longest_; }
  // Distinct list sets: batches and heads that have lists of their own (1 when shared).
  int64_t batches() const { return batches_; }
  int64_t heads() const { return heads_; }

 private:
  IndexLists lists_;
  int64_t nq_, entries_ = 0, longest_ = 0, batches_ = 1, heads_ = 1;
};

// Key j's incoming entries of one list set, in row order: rows[e] lists j at entry position[e]
// for e in [start[j], start[j + 1]).
struct TransposedLists {
  std::vector<int64_t> start;
  std::vector<int32_t> rows;
  std::vector<int64_t> position;
};
TransposedLists transpose_lists(const ListSet& lists, int64_t b, int64_t h, int64_t nq,
                                int64_t nk);

}  // namespace attnkit
