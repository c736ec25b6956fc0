// BlockMask builders, boolean operations and read-outs (density, dense element mask, ASCII).
//
// Lists are built one (b, h, query block) at a time, in parallel, into per-list vectors and then
// concatenated; every builder ends with validate(), so a pattern that writes an unsorted or
// out-of-range list fails loudly instead of driving the kernel out of bounds.
#include "attnkit/block_mask.h"

#include <algorithm>
#include <atomic>
#include <exception>
#include <string>

#include "attnkit/error.h"
#include "core/memory.h"

namespace attnkit {
namespace {

// Below this many (list x kv block) cells a mask is built on one thread: list building costs
// a few ns per cell at most (about 1 ms for 512 x 512), less than waking a thread team, which on
// a loaded machine can cost a whole scheduler time slice.
constexpr int64_t kParallelWork = int64_t{1} << 22;

std::string sizes_of(const BlockMask& m) {
  return "nq=" + std::to_string(m.nq) + " nk=" + std::to_string(m.nk) +
         " q_block=" + std::to_string(m.q_block) + " kv_block=" + std::to_string(m.kv_block) +
         " batch=" + std::to_string(m.batch) + " heads=" + std::to_string(m.heads);
}

void check_shape(const BlockMaskShape& s) {
  check(s.q_block > 0 && s.q_block % 16 == 0, "block_mask",
        "q_block must be a positive multiple of 16, got " + std::to_string(s.q_block));
  check(s.kv_block > 0 && s.kv_block % 16 == 0, "block_mask",
        "kv_block must be a positive multiple of 16, got " + std::to_string(s.kv_block));
  check(s.nq >= 0 && s.nk >= 0, "block_mask",
        "sizes must be >= 0, got nq=" + std::to_string(s.nq) + " nk=" + std::to_string(s.nk));
  check(s.batch >= 1 && s.heads >= 1, "block_mask",
        "batch and heads must be >= 1, got " + std::to_string(s.batch) + " and " +
            std::to_string(s.heads));
  check((s.nk + s.kv_block - 1) / s.kv_block <= INT32_MAX, "block_mask",
        "too many kv blocks for nk=" + std::to_string(s.nk));
}

BlockMask empty_mask(const BlockMaskShape& s) {
  check_shape(s);
  BlockMask m;
  m.q_block = s.q_block;
  m.kv_block = s.kv_block;
  m.nq = s.nq;
  m.nk = s.nk;
  m.batch = s.batch;
  m.heads = s.heads;
  return m;
}

int64_t list_count(const BlockMask& m) { return m.lists(); }

// Concatenates per-list entries into the CSR-like arrays, then validates.
void assemble(BlockMask* m, std::vector<std::vector<BlockEntry>>& lists) {
  m->row_start.assign(lists.size() + 1, 0);
  for (size_t r = 0; r < lists.size(); ++r)
    m->row_start[r + 1] = m->row_start[r] + static_cast<int64_t>(lists[r].size());
  m->kv_index.resize(m->row_start.back());
  m->kind.resize(m->row_start.back());
#pragma omp parallel for schedule(static) if (m->row_start.back() >= kParallelWork)
  for (int64_t r = 0; r < static_cast<int64_t>(lists.size()); ++r) {
    int64_t at = m->row_start[r];
    for (const BlockEntry& e : lists[r]) {
      m->kv_index[at] = e.kv_index;
      m->kind[at++] = e.kind;
    }
  }
  m->validate();
}

// Decomposes a list index back into (b, h, qb).
void split_list(const BlockMask& m, int64_t r, int64_t* b, int64_t* h, int64_t* qb) {
  *qb = r % m.q_blocks();
  const int64_t bh = r / m.q_blocks();
  *h = bh % m.heads;
  *b = bh / m.heads;
}

template <typename PerList>
BlockMask build_lists(const BlockMaskShape& shape, std::shared_ptr<const TilePredicate> predicate,
                      PerList&& per_list) {
  BlockMask m = empty_mask(shape);
  m.predicate = std::move(predicate);
  std::vector<std::vector<BlockEntry>> lists(list_count(m));
  // The lists grow one at a time; their total (entries as built, with vector slack, then in the
  // CSR arrays) is checked as they grow against half the machine's memory (the mask is not all a
  // run holds), so that a mask too large to hold fails with an Error, not in the OOM killer.
  const double entry_bytes = 2.0 * sizeof(BlockEntry) + sizeof(int32_t) + sizeof(BlockKind);
  const double limit = static_cast<double>(memory_limit()) / (2.0 * entry_bytes);
  std::atomic<int64_t> entries{0};
  // Exceptions may not leave an OpenMP region: keep the first, skip the remaining lists (a
  // refused mask must not go on growing) and rethrow it afterwards.
  std::exception_ptr failure;
  std::atomic<bool> failed{false};
#pragma omp parallel for schedule(dynamic, 4) if (list_count(m) * m.kv_blocks() >= kParallelWork)
  for (int64_t r = 0; r < static_cast<int64_t>(lists.size()); ++r) {
    if (failed.load(std::memory_order_relaxed)) continue;
    try {
      int64_t b, h, qb;
      split_list(m, r, &b, &h, &qb);
      per_list(b, h, qb, &lists[r]);
      const int64_t total = entries += static_cast<int64_t>(lists[r].size());
      if (double(total) > limit)
        check_memory(2.0 * double(list_count(m)) * double(m.kv_blocks()) * entry_bytes,
                     "block_mask",
                     "a block mask of up to " + std::to_string(list_count(m)) + " x " +
                         std::to_string(m.kv_blocks()) + " blocks (" + sizes_of(m) + ")");
    } catch (...) {
#pragma omp critical(attnkit_block_mask_failure)
      if (!failure) failure = std::current_exception();
      failed = true;
    }
  }
  if (failure) std::rethrow_exception(failure);
  assemble(&m, lists);
  return m;
}

// Kind of block (qb, kb) in list (b, h): 0 when absent.
int kind_of(const BlockMask& m, int64_t b, int64_t h, int64_t qb, int64_t kb) {
  const int64_t r = m.list(b, h, qb);
  const auto first = m.kv_index.begin() + m.row_start[r];
  const auto last = m.kv_index.begin() + m.row_start[r + 1];
  const auto it = std::lower_bound(first, last, static_cast<int32_t>(kb));
  if (it == last || *it != kb) return 0;
  return static_cast<int>(m.kind[it - m.kv_index.begin()]);
}

// Fills an arbitrary rectangle [q0, q0+nq) x [k0, k0+nk) of list (b, h) from the mask itself:
// absent blocks 0, FULL blocks 1, PARTIAL blocks through the mask's predicate.
void fill_from_mask(const BlockMask& m, int64_t b, int64_t h, int64_t q0, int64_t nq, int64_t k0,
                    int64_t nk, uint8_t* allow, int64_t ld) {
  for (int64_t qs = q0; qs < q0 + nq;) {
    const int64_t qb = qs / m.q_block;
    const int64_t qe = std::min(q0 + nq, (qb + 1) * m.q_block);
    for (int64_t ks = k0; ks < k0 + nk;) {
      const int64_t kb = ks / m.kv_block;
      const int64_t ke = std::min(k0 + nk, (kb + 1) * m.kv_block);
      uint8_t* tile = allow + (qs - q0) * ld + (ks - k0);
      const int kind = kind_of(m, b, h, qb, kb);
      if (kind == static_cast<int>(BlockKind::kPartial)) {
        m.predicate->fill(b, h, qs, qe - qs, ks, ke - ks, tile, ld);
      } else {
        const uint8_t value = kind == static_cast<int>(BlockKind::kFull) ? 1 : 0;
        for (int64_t i = 0; i < qe - qs; ++i) std::fill_n(tile + i * ld, ke - ks, value);
      }
      ks = ke;
    }
    qs = qe;
  }
}

// The element rule of AND / OR of two masks, each operand answered from its own lists.
class CombinedPredicate final : public TilePredicate {
 public:
  CombinedPredicate(BlockMask a, BlockMask b, bool is_and)
      : a_(std::move(a)), b_(std::move(b)), is_and_(is_and) {}
  void fill(int64_t b, int64_t h, int64_t q0, int64_t nq, int64_t k0, int64_t nk, uint8_t* allow,
            int64_t ld) const override {
    thread_local std::vector<uint8_t> other;
    other.resize(static_cast<size_t>(nq * nk));
    fill_from_mask(a_, b, h, q0, nq, k0, nk, allow, ld);
    fill_from_mask(b_, b, h, q0, nq, k0, nk, other.data(), nk);
    for (int64_t i = 0; i < nq; ++i) {
      uint8_t* row = allow + i * ld;
      const uint8_t* o = other.data() + i * nk;
      if (is_and_) {
        for (int64_t j = 0; j < nk; ++j) row[j] &= o[j];
      } else {
        for (int64_t j = 0; j < nk; ++j) row[j] |= o[j];
      }
    }
  }

  bool same_for_all_heads() const override {
    const auto same = [](const BlockMask& m) {
      return m.heads == 1 && (m.predicate == nullptr || m.predicate->same_for_all_heads());
    };
    return same(a_) && same(b_);
  }

 private:
  BlockMask a_, b_;
  bool is_and_;
};

BlockMask combine(const BlockMask& a, const BlockMask& b, bool is_and) {
  const char* op = is_and ? "AND" : "OR";
  a.validate();
  b.validate();
  check(a.nq == b.nq && a.nk == b.nk && a.q_block == b.q_block && a.kv_block == b.kv_block,
        "block_mask",
        std::string(op) + " of masks of different shapes: " + sizes_of(a) + " vs " + sizes_of(b));
  check(a.batch == b.batch || a.batch == 1 || b.batch == 1, "block_mask",
        std::string(op) + " of masks with batch " + std::to_string(a.batch) + " and " +
            std::to_string(b.batch));
  check(a.heads == b.heads || a.heads == 1 || b.heads == 1, "block_mask",
        std::string(op) + " of masks with heads " + std::to_string(a.heads) + " and " +
            std::to_string(b.heads));
  BlockMaskShape shape{a.nq,      a.nk,      std::max(a.batch, b.batch), std::max(a.heads, b.heads),
                       a.q_block, a.kv_block};
  auto predicate = std::make_shared<CombinedPredicate>(a, b, is_and);
  return build_lists(
      shape, predicate, [&](int64_t bi, int64_t h, int64_t qb, std::vector<BlockEntry>* out) {
        const int64_t ra = a.list(bi, h, qb), rb = b.list(bi, h, qb);
        int64_t i = a.row_start[ra], ie = a.row_start[ra + 1];
        int64_t j = b.row_start[rb], je = b.row_start[rb + 1];
        while (i < ie || j < je) {
          const int32_t ka = i < ie ? a.kv_index[i] : INT32_MAX;
          const int32_t kb = j < je ? b.kv_index[j] : INT32_MAX;
          const int32_t k = std::min(ka, kb);
          const bool in_a = ka == k, in_b = kb == k;
          const bool full_a = in_a && a.kind[i] == BlockKind::kFull;
          const bool full_b = in_b && b.kind[j] == BlockKind::kFull;
          if (is_and) {
            if (in_a && in_b)
              out->push_back({k, full_a && full_b ? BlockKind::kFull : BlockKind::kPartial});
          } else {
            out->push_back({k, full_a || full_b ? BlockKind::kFull : BlockKind::kPartial});
          }
          i += in_a;
          j += in_b;
        }
      });
}

}  // namespace

void BlockMask::validate() const {
  check_shape({nq, nk, batch, heads, q_block, kv_block});
  const int64_t lists = batch * heads * q_blocks();
  check(static_cast<int64_t>(row_start.size()) == lists + 1, "block_mask",
        "row_start has " + std::to_string(row_start.size()) + " entries, expected " +
            std::to_string(lists + 1) + " (" + sizes_of(*this) + ")");
  check(row_start.front() == 0, "block_mask", "row_start[0] must be 0");
  check(row_start.back() == static_cast<int64_t>(kv_index.size()) && kind.size() == kv_index.size(),
        "block_mask",
        "row_start ends at " + std::to_string(row_start.back()) + " but there are " +
            std::to_string(kv_index.size()) + " indices and " + std::to_string(kind.size()) +
            " kinds");
  // Hot loop over every entry: conditions first, messages only on failure.
  bool any_partial = false;
  for (int64_t r = 0; r < lists; ++r) {
    if (row_start[r] > row_start[r + 1])
      throw Error("block_mask", "row_start decreases at list " + std::to_string(r));
    for (int64_t e = row_start[r]; e < row_start[r + 1]; ++e) {
      if (kv_index[e] < 0 || kv_index[e] >= kv_blocks())
        throw Error("block_mask", "list " + std::to_string(r) + " has kv block " +
                                      std::to_string(kv_index[e]) + " outside [0, " +
                                      std::to_string(kv_blocks()) + ")");
      if (e > row_start[r] && kv_index[e - 1] >= kv_index[e])
        throw Error("block_mask", "list " + std::to_string(r) +
                                      " is not strictly ascending at kv block " +
                                      std::to_string(kv_index[e]));
      if (kind[e] != BlockKind::kFull && kind[e] != BlockKind::kPartial)
        throw Error("block_mask", "list " + std::to_string(r) + " has an invalid block kind " +
                                      std::to_string(static_cast<int>(kind[e])));
      any_partial |= kind[e] == BlockKind::kPartial;
    }
  }
  check(!any_partial || predicate != nullptr, "block_mask",
        "has PARTIAL blocks but no tile predicate");
}

BlockMask block_mask_from_rows(const BlockMaskShape& shape,
                               std::shared_ptr<const TilePredicate> predicate,
                               const BlockRowBuilder& rows) {
  check(static_cast<bool>(rows), "block_mask", "no row builder given");
  return build_lists(shape, std::move(predicate), rows);
}

BlockMask block_mask_from_entries(const BlockMaskShape& shape,
                                  std::shared_ptr<const TilePredicate> predicate,
                                  std::vector<std::vector<BlockEntry>> lists) {
  BlockMask m = empty_mask(shape);
  check(static_cast<int64_t>(lists.size()) == list_count(m), "block_mask",
        "got " + std::to_string(lists.size()) + " block lists, expected batch x heads x " +
            "q_blocks = " + std::to_string(list_count(m)));
  m.predicate = std::move(predicate);
  assemble(&m, lists);
  return m;
}

BlockMask block_mask_from_predicate(const BlockMaskShape& shape,
                                    std::shared_ptr<const TilePredicate> predicate) {
  check(predicate != nullptr, "block_mask", "no tile predicate given");
  const TilePredicate& pred = *predicate;
  const int64_t kv_blocks = (shape.nk + shape.kv_block - 1) / shape.kv_block;
  return build_lists(
      shape, std::move(predicate),
      [&](int64_t b, int64_t h, int64_t qb, std::vector<BlockEntry>* out) {
        thread_local std::vector<uint8_t> tile;
        const int64_t q0 = qb * shape.q_block;
        const int64_t rows = std::min(shape.q_block, shape.nq - q0);
        for (int64_t kb = 0; kb < kv_blocks; ++kb) {
          const int64_t k0 = kb * shape.kv_block;
          const int64_t cols = std::min(shape.kv_block, shape.nk - k0);
          tile.assign(static_cast<size_t>(rows * cols), 0);
          pred.fill(b, h, q0, rows, k0, cols, tile.data(), cols);
          int64_t allowed = 0;
          for (uint8_t v : tile) allowed += v != 0;
          if (allowed == 0) continue;
          out->push_back({static_cast<int32_t>(kb),
                          allowed == rows * cols ? BlockKind::kFull : BlockKind::kPartial});
        }
      });
}

BlockMask block_mask_from_indices(const BlockMaskShape& shape,
                                  const std::vector<std::vector<int32_t>>& lists) {
  BlockMask probe = empty_mask(shape);
  check(static_cast<int64_t>(lists.size()) == list_count(probe), "block_mask",
        "got " + std::to_string(lists.size()) + " block lists, expected batch x heads x " +
            "q_blocks = " + std::to_string(list_count(probe)));
  const int64_t kv_blocks = probe.kv_blocks();
  return build_lists(
      shape, nullptr, [&](int64_t b, int64_t h, int64_t qb, std::vector<BlockEntry>* out) {
        std::vector<int32_t> sorted = lists[probe.list(b, h, qb)];
        std::sort(sorted.begin(), sorted.end());
        sorted.erase(std::unique(sorted.begin(), sorted.end()), sorted.end());
        for (int32_t kb : sorted) {
          if (kb < 0 || kb >= kv_blocks)
            throw Error("block_mask", "kv block index " + std::to_string(kb) + " outside [0, " +
                                          std::to_string(kv_blocks) + ")");
          out->push_back({kb, BlockKind::kFull});
        }
      });
}

BlockMask mask_and(const BlockMask& a, const BlockMask& b) { return combine(a, b, true); }
BlockMask mask_or(const BlockMask& a, const BlockMask& b) { return combine(a, b, false); }

double allowed_pairs(const BlockMask& m, int64_t b, int64_t h, bool causal) {
  const int64_t offset = m.nk - m.nq;
  double total = 0.0;
#pragma omp parallel for schedule(dynamic, 4) reduction(+ : total) \
    if (m.q_blocks() * m.kv_blocks() >= kParallelWork)
  for (int64_t qb = 0; qb < m.q_blocks(); ++qb) {
    thread_local std::vector<uint8_t> tile;
    const int64_t r = m.list(b, h, qb);
    const int64_t q0 = qb * m.q_block;
    const int64_t rows = std::min(m.q_block, m.nq - q0);
    for (int64_t e = m.row_start[r]; e < m.row_start[r + 1]; ++e) {
      const int64_t k0 = int64_t{m.kv_index[e]} * m.kv_block;
      const int64_t cols = std::min(m.kv_block, m.nk - k0);
      // Keys of row i that causality leaves: [k0, min(k0 + cols, i + offset + 1)).
      const auto visible = [&](int64_t i) {
        return causal ? std::clamp<int64_t>(q0 + i + offset + 1 - k0, 0, cols) : cols;
      };
      if (m.kind[e] == BlockKind::kFull) {
        for (int64_t i = 0; i < rows; ++i) total += static_cast<double>(visible(i));
        continue;
      }
      tile.assign(static_cast<size_t>(rows * cols), 0);
      m.predicate->fill(b, h, q0, rows, k0, cols, tile.data(), cols);
      int64_t count = 0;
      for (int64_t i = 0; i < rows; ++i)
        for (int64_t j = 0; j < visible(i); ++j) count += tile[i * cols + j] != 0;
      total += static_cast<double>(count);
    }
  }
  return total;
}

double dense_pairs(int64_t nq, int64_t nk, bool causal) {
  if (!causal) return static_cast<double>(nq) * static_cast<double>(nk);
  // Query i sees keys 0 .. i + (nk - nq), clamped to [0, nk]: a run of 0s, a ramp, then nk.
  double pairs = 0.0;
  for (int64_t i = 0; i < nq; ++i)
    pairs += static_cast<double>(std::clamp<int64_t>(i + nk - nq + 1, 0, nk));
  return pairs;
}

double density(const BlockMask& m, bool causal) {
  if (m.nq == 0 || m.nk == 0) return 0.0;
  double sum = 0.0;
  for (int64_t b = 0; b < m.batch; ++b)
    for (int64_t h = 0; h < m.heads; ++h) sum += allowed_pairs(m, b, h, causal);
  return sum / (static_cast<double>(m.batch * m.heads) * static_cast<double>(m.nq) *
                static_cast<double>(m.nk));
}

double block_density(const BlockMask& m) {
  const double all = static_cast<double>(list_count(m)) * static_cast<double>(m.kv_blocks());
  return all == 0.0 ? 0.0 : static_cast<double>(m.kv_index.size()) / all;
}

bool allowed(const BlockMask& m, int64_t b, int64_t h, int64_t i, int64_t j) {
  uint8_t value[16] = {};  // room for predicates that store a vector at a time
  fill_from_mask(m, b, h, i, 1, j, 1, value, 1);
  return value[0] != 0;
}

std::vector<uint8_t> to_dense(const BlockMask& m, int64_t b, int64_t h) {
  check_memory(double(m.nq) * double(m.nk), "block_mask",
               "an element mask of " + std::to_string(m.nq) + " x " + std::to_string(m.nk));
  std::vector<uint8_t> dense(static_cast<size_t>(m.nq * m.nk), 0);
  for (int64_t qb = 0; qb < m.q_blocks(); ++qb) {
    const int64_t r = m.list(b, h, qb);
    const int64_t q0 = qb * m.q_block;
    const int64_t rows = std::min(m.q_block, m.nq - q0);
    for (int64_t e = m.row_start[r]; e < m.row_start[r + 1]; ++e) {
      const int64_t k0 = int64_t{m.kv_index[e]} * m.kv_block;
      const int64_t cols = std::min(m.kv_block, m.nk - k0);
      uint8_t* tile = dense.data() + q0 * m.nk + k0;
      if (m.kind[e] == BlockKind::kFull) {
        for (int64_t i = 0; i < rows; ++i) std::fill_n(tile + i * m.nk, cols, uint8_t{1});
      } else {
        m.predicate->fill(b, h, q0, rows, k0, cols, tile, m.nk);
      }
    }
  }
  return dense;
}

std::string to_ascii(const BlockMask& m, int64_t b, int64_t h, int64_t max_columns) {
  const int64_t group =
      max_columns > 0 ? std::max<int64_t>(1, (m.kv_blocks() + max_columns - 1) / max_columns) : 1;
  std::string text;
  std::vector<int> fulls, listed;
  for (int64_t qg = 0; qg < m.q_blocks(); qg += group) {
    const int64_t columns = (m.kv_blocks() + group - 1) / group;
    fulls.assign(columns, 0);
    listed.assign(columns, 0);
    const int64_t qe = std::min(m.q_blocks(), qg + group);
    for (int64_t qb = qg; qb < qe; ++qb) {
      const int64_t r = m.list(b, h, qb);
      for (int64_t e = m.row_start[r]; e < m.row_start[r + 1]; ++e) {
        listed[m.kv_index[e] / group] += 1;
        fulls[m.kv_index[e] / group] += m.kind[e] == BlockKind::kFull;
      }
    }
    for (int64_t c = 0; c < columns; ++c) {
      const int64_t cells = (qe - qg) * (std::min(m.kv_blocks(), (c + 1) * group) - c * group);
      text += listed[c] == 0 ? '.' : fulls[c] == cells ? '#' : '+';
    }
    text += '\n';
  }
  return text;
}

}  // namespace attnkit
