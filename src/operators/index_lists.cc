#include "operators/index_lists.h"

#include <omp.h>

#include <algorithm>
#include <string>

#include "attnkit/error.h"
#include "core/attention_args.h"
#include "core/score_modifiers.h"

namespace attnkit {
namespace {

std::string row_name(int64_t b, int64_t h, int64_t i) {
  return "row [" + std::to_string(b) + "," + std::to_string(h) + "," + std::to_string(i) + "]";
}

}  // namespace

void check_index_attention_flags(const AttentionArgs& a) {
  check(!a.causal, "causal", "index-list attention takes no causal flag: list only the keys");
  check(a.dropout == 0.0f, "dropout", "is not supported by index-list attention");
  check(!has_score_modifiers(a), "row_scale",
        "score modifiers are not supported by index-list attention");
}

IndexLists IndexLists::padded_lists(const int32_t* data, const int64_t (&shape)[4]) {
  IndexLists l;
  l.padded = data;
  for (int i = 0; i < 4; ++i) l.shape[i] = shape[i];
  l.stride[3] = 1;
  for (int i = 2; i >= 0; --i) l.stride[i] = l.stride[i + 1] * shape[i + 1];
  return l;
}

IndexLists IndexLists::csr(const int64_t* offsets, const int32_t* columns) {
  IndexLists l;
  l.offsets = offsets;
  l.columns = columns;
  return l;
}

ListSet::ListSet(const IndexLists& lists, int64_t batch, int64_t heads, int64_t nq, int64_t nk,
                 int threads)
    : lists_(lists), nq_(nq) {
  const bool padded = lists.padded != nullptr, csr = lists.offsets != nullptr;
  check(padded != csr, "indices", "give either padded lists or CSR offsets and columns");
  if (padded) {
    const int64_t* s = lists.shape;
    check((s[0] == 1 || s[0] == batch) && (s[1] == 1 || s[1] == heads) && s[2] == nq &&
              s[3] >= 0 && s[3] <= (int64_t{1} << 24),
          "indices",
          "must be [B or 1, Hq or 1, Nq, K] = [" + std::to_string(batch) + " or 1, " +
              std::to_string(heads) + " or 1, " + std::to_string(nq) + ", K <= 2^24], got [" +
              std::to_string(s[0]) + "," + std::to_string(s[1]) + "," + std::to_string(s[2]) +
              "," + std::to_string(s[3]) + "]");
    batches_ = s[0], heads_ = s[1], entries_ = nq * s[3], longest_ = s[3];
  } else {
    check(lists.columns != nullptr || lists.offsets[nq] == 0, "indices",
          "CSR columns are missing (null data)");
    check(lists.offsets[0] == 0, "indices",
          "CSR offsets must start at 0, got " + std::to_string(lists.offsets[0]));
    for (int64_t i = 0; i < nq; ++i) {
      const int64_t length = lists.offsets[i + 1] - lists.offsets[i];
      check(length >= 0, "indices",
            "CSR offsets must not decrease, got " + std::to_string(lists.offsets[i]) + " then " +
                std::to_string(lists.offsets[i + 1]) + " at row " + std::to_string(i));
      longest_ = std::max(longest_, length);
    }
    entries_ = lists.offsets[nq];
  }
  // Every index in range, no key twice in a row: per thread, the last row that saw each key.
  const int64_t sets = batches_ * heads_;
  const int64_t rows = sets * nq;
  std::string error;
#pragma omp parallel num_threads(effective_threads(threads))
  {
    std::vector<int64_t> seen(nk, -1);
#pragma omp for schedule(static)
    for (int64_t r = 0; r < rows; ++r) {
      const int64_t b = r / (heads_ * nq), h = (r / nq) % heads_, i = r % nq;
      const ListRow lr = row(b, h, i);
      for (int64_t e = 0; e < lr.count; ++e) {
        const int64_t j = lr.data[e * lr.stride];
        std::string problem;
        if (j < -1 || j >= nk) {
          problem = row_name(b, h, i) + " entry " + std::to_string(e) + " is " +
                    std::to_string(j) + ", outside [-1, " + std::to_string(nk) + ")";
        } else if (j >= 0 && seen[j] == r) {
          problem = row_name(b, h, i) + " lists key " + std::to_string(j) +
                    " twice (each key at most once per row)";
        }
        if (!problem.empty()) {
#pragma omp critical(attnkit_index_lists)
          if (error.empty()) error = problem;
          break;
        }
        if (j >= 0) seen[j] = r;
      }
    }
  }
  check(error.empty(), "indices", error);
}

ListRow ListSet::row(int64_t b, int64_t h, int64_t i) const {
  if (lists_.padded) {
    const int64_t bb = batches_ == 1 ? 0 : b, hh = heads_ == 1 ? 0 : h;
    return {lists_.padded + bb * lists_.stride[0] + hh * lists_.stride[1] + i * lists_.stride[2],
            lists_.shape[3], lists_.stride[3], i * lists_.shape[3]};
  }
  const int64_t first = lists_.offsets[i];
  return {lists_.columns + first, lists_.offsets[i + 1] - first, 1, first};
}

TransposedLists transpose_lists(const ListSet& lists, int64_t b, int64_t h, int64_t nq,
                                int64_t nk) {
  TransposedLists t;
  t.start.assign(nk + 1, 0);
  for (int64_t i = 0; i < nq; ++i) {
    const ListRow r = lists.row(b, h, i);
    for (int64_t e = 0; e < r.count; ++e)
      if (const int32_t j = r.data[e * r.stride]; j >= 0) ++t.start[j + 1];
  }
  for (int64_t j = 0; j < nk; ++j) t.start[j + 1] += t.start[j];
  t.rows.resize(t.start[nk]);
  t.position.resize(t.start[nk]);
  std::vector<int64_t> next(t.start.begin(), t.start.end() - 1);
  for (int64_t i = 0; i < nq; ++i) {  // rows in order: each key's entries come out sorted by row
    const ListRow r = lists.row(b, h, i);
    for (int64_t e = 0; e < r.count; ++e)
      if (const int32_t j = r.data[e * r.stride]; j >= 0) {
        t.rows[next[j]] = static_cast<int32_t>(i);
        t.position[next[j]++] = r.first + e;
      }
  }
  return t;
}

}  // namespace attnkit
