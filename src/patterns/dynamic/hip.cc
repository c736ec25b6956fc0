// hip: HiP attention, hierarchically pruned attention (Lee et al., arXiv 2406.09827, ICLR 2025),
// following the official code (DeepAuto-AI/hip-attention, src/hip_attn/v1_1/
// attention2_draft_prefetch.py: masking_iteration_draft_cuda_initialize / _dup_and_score), read
// for understanding only; nothing is copied from it.
//
// Rule, per query head and query block of `block_q` rows, over the key units ("key blocks" of
// `block_k` tokens) that lie before the block's sliding window and after the sink:
//   candidates = R units after the sink, wholly before the block's last row's window
//   nodes: k / block_k = K chunks of the candidate range; init=aligned (default, the official
//     initialisation) aligns their starts to a power-of-two step:
//     step = ceil(2^floor(log2 R) / K);  start_c = floor(floor(c R / K) / step) * step
//     (c = 0..K; a chunk is [start_c, start_{c+1}); empty ones are dropped, and the last
//     R mod step units are left out, as in the code); init=even: K equal chunks
//     [floor(c R / K), floor((c + 1) R / K)) (the paper's description, attnkit's earlier rule)
//   repeat until every node is a single unit (about log2(R / K) rounds):
//     split every node (first, size) in two: [first, first + size/2), [first + size/2, end)
//     score(branch) = max over the block's sampled queries (rows stride_q - 1, 2 stride_q - 1,
//                     ...) and the keys of the branch's CENTRE unit first + size/2 (offsets
//                     stride_k - 1, 2 stride_k - 1, ... inside the unit) of q . k (unscaled),
//                     where a query's own sliding window (keys j >= p - window) and the zero
//                     padding past Nk (the code's exact-zero scores) count as -32000
//     nodes = the K best branches (ties: lower position)
//   allowed(i, j) = j < sink  or  p_i - window < j <= p_i  or  unit(j) among the final nodes,
//   with p_i = i + Nk - Nq the query's position; then block-sparse attention (causal ANDed).
// Defaults (HiPAttentionArgs): k 512, block_q 64, stride_q 2, block_k 2, stride_k 1, sink 16,
// window 256. The selection is token-exact, so density equals the paper's budget. The
// BlockMask groups keys in kv blocks of `kv_block` (default 16, the smallest tile our kernel
// takes: a 2-token unit costs a 16-key tile of compute but only its 2 keys are attended). A kv
// block whose keys are all allowed for all rows of the query block is FULL, else PARTIAL and the
// tile predicate below decides per element. With block_k a multiple of 16 and kv_block = block_k,
// every searched unit is a FULL block (the fast layout; recall then drops on fine-grained data).
// Each round scores all branches at once: their centre units' keys are gathered and multiplied
// by the block's (transposed) sampled queries in a single score tile.
// Decode (a call with a PlanState and one query block): the official mask cache, the units of
// the last search reused for `refresh` steps (default 8, the serving demo's
// HIP_REFRESH_INTERVAL) while the sink and each row's window follow the current positions; the
// new keys fall in the window. refresh=1 searches every step. (The demo's dense first layers,
// HIP_DENSE_LAYERS, are the model's choice, not the pattern's.)
// Choices where the code and we differ: the candidate range ends at the last row's window
// (the code counts positions from its position ids); a query block with fewer than stride_q
// rows samples its last row.
// Measured (BENCHMARKS.md, `attnkit recall --input planted|phrases --n 16384`): at 16K keys the
// aligned initialisation alone keeps 1.3 to 1.6 points less softmax mass than equal chunks on
// both of our structured inputs (k = 512, four seeds), up to 5.7 points at k = 256; the centre,
// sampled-row and masking rules are neutral; at 4K keys nothing is lost.
// The aligned grid is the same for every query block of a stretch, and a unit at the start of
// an aligned node is never a node's representative until the last round, so such units are
// systematically under-searched. The default follows the official code for comparability.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <memory>
#include <vector>

#include "attnkit/error.h"
#include "core/attention_args.h"
#include "kernels/cpu/planner_ops.h"
#include "patterns/dynamic/dynamic_patterns.h"
#include "patterns/dynamic/planner.h"

namespace attnkit::dynamic_patterns {
namespace {

struct HipShape {
  int64_t nq = 0, nk = 0, heads = 0, q_blocks = 0;
  int64_t block_q = 64, block_k = 2, sink = 16, window = 256;
};

// row[key - k0] = 1 for keys in [lo, hi) within the tile's keys [k0, k0 + nk).
inline void set_range(uint8_t* row, int64_t k0, int64_t nk, int64_t lo, int64_t hi) {
  lo = std::max(lo, k0), hi = std::min(hi, k0 + nk);
  if (lo < hi) std::memset(row + (lo - k0), 1, static_cast<size_t>(hi - lo));
}

// Element rule of a HiP plan: sink, per-row sliding window, and the searched units of the
// query block (sorted, per list (b, h, qb)).
class HipRule final : public TilePredicate {
 public:
  HipRule(HipShape shape, std::vector<std::vector<int32_t>> units)
      : s_(shape), units_(std::move(units)) {}

  // The units' bytes are written once per query block and copied to its rows; each row then
  // adds its sink and window as two byte ranges (the kernel asks for every PARTIAL tile).
  void fill(int64_t b, int64_t h, int64_t q0, int64_t nq, int64_t k0, int64_t nk, uint8_t* allow,
            int64_t ld) const override {
    for (int64_t r0 = 0; r0 < nq;) {
      const int64_t qb = (q0 + r0) / s_.block_q;
      const int64_t r1 = std::min(nq, (qb + 1) * s_.block_q - q0);
      uint8_t* first = allow + r0 * ld;
      std::memset(first, 0, static_cast<size_t>(nk));
      const auto& units = units_[(b * s_.heads + h) * s_.q_blocks + qb];
      auto at = std::lower_bound(units.begin(), units.end(), static_cast<int32_t>(k0 / s_.block_k));
      for (; at != units.end() && int64_t{*at} * s_.block_k < k0 + nk; ++at)
        set_range(first, k0, nk, int64_t{*at} * s_.block_k, (int64_t{*at} + 1) * s_.block_k);
      for (int64_t r = r0 + 1; r < r1; ++r) std::memcpy(allow + r * ld, first, static_cast<size_t>(nk));
      for (int64_t r = r0; r < r1; ++r) {
        uint8_t* row = allow + r * ld;
        const int64_t p = q0 + r + s_.nk - s_.nq;
        set_range(row, k0, nk, 0, s_.sink);                  // keys < sink
        set_range(row, k0, nk, p - s_.window + 1, p + 1);  // p - window < key <= p
      }
      r0 = r1;
    }
  }

 private:
  HipShape s_;
  std::vector<std::vector<int32_t>> units_;
};

struct Node {
  int64_t first, last;  // inclusive unit range
  float score;
};

// Decode: the units of the last refresh per (b, h), kept for `refresh` steps (HiP's mask cache).
struct SearchedUnits final : PlanState {
  int64_t batch = 0, heads = 0, nk = 0, age = 0;  // age: steps since the refresh
  std::vector<std::vector<int32_t>> units;
};

class HipPattern final : public Pattern {
 public:
  explicit HipPattern(const PatternParams& params)
      : Pattern(params, Direction::kCaller),
        k_(params.get_int("k")),
        block_q_(params.get_int("block_q")),
        stride_q_(params.get_int("stride_q")),
        block_k_(params.get_int("block_k")),
        stride_k_(params.get_int("stride_k")),
        sink_(params.get_int("sink")),
        window_(params.get_int("window")),
        kv_block_(params.get_int("kv_block")),
        refresh_(params.get_int("refresh")),
        aligned_(params.get_string("init") == "aligned") {
    check(stride_k_ <= block_k_, "pattern",
          "'hip' parameter 'stride_k' = " + std::to_string(stride_k_) +
              " must not exceed block_k = " + std::to_string(block_k_) +
              " (no key of a unit would be scored)");
  }
  Plan plan(const PlanInputs& in) const override;

 private:
  // Tree search of one query block over units [lo, hi); returns the chosen units, sorted.
  // q_t: the block's sampled queries transposed, [dim][ld_q_t], at positions row_pos[rows];
  // the keys are those of (b, kv head g) of k, read per scored unit (zero past nk).
  std::vector<int32_t> search(const float* q_t, int64_t ld_q_t, int64_t rows,
                              const int64_t* row_pos, const TensorView& k, int64_t b, int64_t g,
                              int64_t lo, int64_t hi) const;
  // The search of every list (b, h, qb).
  std::vector<std::vector<int32_t>> search_all(const PlanInputs& in, const Dims& d,
                                               const HipShape& shape, int64_t units) const;
  std::vector<BlockEntry> entries(const Dims& d, int64_t row0, int64_t row1,
                                  const std::vector<int32_t>& chosen) const;

  int64_t k_, block_q_, stride_q_, block_k_, stride_k_, sink_, window_, kv_block_, refresh_;
  bool aligned_;
};

std::vector<int32_t> HipPattern::search(const float* q_t, int64_t ld_q_t, int64_t rows,
                                        const int64_t* row_pos, const TensorView& k, int64_t b,
                                        int64_t g, int64_t lo, int64_t hi) const {
  const int64_t nk = k.shape[2], dim = k.shape[3];
  const int64_t range = hi - lo;
  const int64_t keep = std::max<int64_t>(1, k_ / block_k_);
  std::vector<int32_t> chosen;
  if (range <= 0) return chosen;
  if (range <= keep) {
    for (int64_t u = lo; u < hi; ++u) chosen.push_back(static_cast<int32_t>(u));
    return chosen;
  }
  // Initial chunks, with starts aligned to a power-of-two step or evenly spread (see the header).
  int64_t power = 1;
  while (power * 2 <= range) power *= 2;
  const int64_t step = aligned_ ? (power + keep - 1) / keep : 1;
  const auto start = [&](int64_t c) {
    if (!aligned_) return c * range / keep;
    const int64_t raw = static_cast<int64_t>(static_cast<double>(range) / keep * c);
    return std::min(raw / step * step, range);
  };
  std::vector<Node> nodes, branches;
  for (int64_t c = 0; c < keep; ++c) {
    const int64_t first = start(c), end = start(c + 1);
    if (end > first) nodes.push_back({lo + first, lo + end - 1, 0.0f});
  }
  std::vector<float> panel, scores;
  std::vector<int64_t> fresh;  // branches scored this round
  constexpr float kMasked = -32000.0f;
  while (true) {
    branches.clear();
    fresh.clear();
    for (const Node& node : nodes) {
      if (node.first == node.last) {
        branches.push_back(node);  // a single unit keeps its score
        continue;
      }
      const int64_t mid = node.first + (node.last - node.first + 1) / 2;
      fresh.push_back(static_cast<int64_t>(branches.size()));
      branches.push_back({node.first, mid - 1, 0.0f});
      fresh.push_back(static_cast<int64_t>(branches.size()));
      branches.push_back({mid, node.last, 0.0f});
    }
    if (fresh.empty()) break;
    // Centre units of the new branches: their keys are contiguous rows, gathered into one
    // [cols, dim] matrix and scored against the transposed sampled queries, so one score tile
    // (keys as rows, queries as columns) does the whole round.
    const int64_t cols = static_cast<int64_t>(fresh.size()) * block_k_;
    panel.assign(cols * dim, 0.0f);
    scores.resize(cols * ld_q_t);
    for (size_t f = 0; f < fresh.size(); ++f) {
      const Node& node = branches[fresh[f]];
      const int64_t first_key = (node.first + (node.last - node.first + 1) / 2) * block_k_;
      cpu::load_rows(k, b, g, first_key, std::min(block_k_, nk - first_key),
                     panel.data() + f * block_k_ * dim);
    }
    cpu::score_tile(panel.data(), dim, cols, q_t, ld_q_t, rows, dim, 1.0f, scores.data(), ld_q_t);
    for (size_t f = 0; f < fresh.size(); ++f) {
      const Node& node = branches[fresh[f]];
      const int64_t centre = node.first + (node.last - node.first + 1) / 2;
      float best = -std::numeric_limits<float>::infinity();
      for (int64_t j = stride_k_ - 1; j < block_k_; j += stride_k_) {
        const int64_t key = centre * block_k_ + j;
        if (key >= nk) {  // the zero padding of the last unit: an exact-zero score, masked
          best = std::max(best, kMasked);
          continue;
        }
        // Sampled rows ascend, so those whose window covers this key (key >= p - window) come
        // first: they count as masked, the rest as their scores.
        const int64_t first = std::upper_bound(row_pos, row_pos + rows, key + window_) - row_pos;
        if (first > 0) best = std::max(best, kMasked);
        if (first < rows)
          best = std::max(best, cpu::row_max(scores.data() + (f * block_k_ + j) * ld_q_t + first,
                                             rows - first));
      }
      branches[fresh[f]].score = best;
    }
    if (static_cast<int64_t>(branches.size()) > keep) {
      std::nth_element(branches.begin(), branches.begin() + keep, branches.end(),
                       [](const Node& a, const Node& b) {
                         return a.score != b.score ? a.score > b.score : a.first < b.first;
                       });
      branches.resize(keep);
    }
    nodes.swap(branches);
  }
  for (const Node& node : nodes) chosen.push_back(static_cast<int32_t>(node.first));
  std::sort(chosen.begin(), chosen.end());
  return chosen;
}

// Entries of one query block (rows [row0, row1) at positions p_first..p_last): sink, every row's
// window and the searched units, FULL when wholly allowed for every row.
std::vector<BlockEntry> HipPattern::entries(const Dims& d, int64_t row0, int64_t row1,
                                            const std::vector<int32_t>& chosen) const {
  const int64_t p_first = row0 + d.nk - d.nq, p_last = row1 - 1 + d.nk - d.nq;
  std::vector<int32_t> blocks;
  for (int64_t kb = 0; kb * kv_block_ < std::min(sink_, d.nk); ++kb) blocks.push_back(kb);
  const int64_t w_lo = std::max<int64_t>(0, p_first - window_ + 1),
                w_hi = std::min(d.nk - 1, p_last);
  if (window_ > 0 && w_hi >= w_lo)
    for (int64_t kb = w_lo / kv_block_; kb <= w_hi / kv_block_; ++kb) blocks.push_back(kb);
  for (int32_t u : chosen) {
    const int64_t key_lo = int64_t{u} * block_k_, key_hi = std::min(d.nk, key_lo + block_k_) - 1;
    for (int64_t kb = key_lo / kv_block_; kb <= key_hi / kv_block_; ++kb) blocks.push_back(kb);
  }
  std::sort(blocks.begin(), blocks.end());
  blocks.erase(std::unique(blocks.begin(), blocks.end()), blocks.end());
  const int64_t first_key_window = p_last - window_ + 1;  // keys >= this are in every row's window
  std::vector<BlockEntry> out;
  for (int32_t kb : blocks) {
    const int64_t k0 = int64_t{kb} * kv_block_, k1 = std::min(d.nk, k0 + kv_block_);
    bool full = k1 <= sink_ || (window_ > 0 && k0 >= first_key_window && k1 - 1 <= p_first);
    if (!full && block_k_ <= kv_block_) {
      // All units of the block selected?
      int64_t covered = 0;
      for (int64_t u = k0 / block_k_; u * block_k_ < k1; ++u)
        covered += std::binary_search(chosen.begin(), chosen.end(), static_cast<int32_t>(u));
      full = covered * block_k_ >= k1 - k0 && k0 % block_k_ == 0;
    }
    out.push_back({kb, full ? BlockKind::kFull : BlockKind::kPartial});
  }
  return out;
}

Plan HipPattern::plan(const PlanInputs& in) const {
  in.validate(true);
  const Dims d = dims_of(in);
  HipShape shape;
  shape.nq = d.nq, shape.nk = d.nk, shape.heads = d.heads_q;
  shape.q_blocks = (d.nq + block_q_ - 1) / block_q_;
  shape.block_q = block_q_, shape.block_k = block_k_, shape.sink = sink_, shape.window = window_;
  const int64_t units = (d.nk + block_k_ - 1) / block_k_;
  const int64_t lists = d.batch * d.heads_q * shape.q_blocks;
  // Decode (one query block) with a state: the selection of the last refresh while it is younger
  // than `refresh` steps; the sink and the window follow the current positions.
  SearchedUnits* kept = in.state ? dynamic_cast<SearchedUnits*>(in.state->get()) : nullptr;
  const bool decode = in.state && shape.q_blocks == 1;
  const bool reuse = decode && kept && kept->batch == d.batch && kept->heads == d.heads_q &&
                     kept->nk < d.nk && kept->age + 1 < refresh_;
  if (in.state && !decode) in.state->reset();  // a prefill: the next decode step searches
  std::vector<std::vector<int32_t>> chosen(lists);
  if (reuse) {
    ++kept->age;
    kept->nk = d.nk;
    chosen = kept->units;
  } else {
    chosen = search_all(in, d, shape, units);
    if (decode) {
      auto fresh = std::make_unique<SearchedUnits>();
      fresh->batch = d.batch, fresh->heads = d.heads_q, fresh->nk = d.nk, fresh->units = chosen;
      *in.state = std::move(fresh);
    }
  }
  std::vector<std::vector<BlockEntry>> lists_of(lists);
  for (int64_t item = 0; item < lists; ++item) {
    const int64_t qb = item % shape.q_blocks;
    lists_of[item] = entries(d, qb * block_q_, std::min(d.nq, (qb + 1) * block_q_), chosen[item]);
  }
  Plan plan;
  plan.mask = block_mask_from_entries(mask_shape(in, block_q_, kv_block_, d.heads_q),
                                      std::make_shared<HipRule>(shape, std::move(chosen)),
                                      std::move(lists_of));
  plan.causal = in.causal;
  return plan;
}

std::vector<std::vector<int32_t>> HipPattern::search_all(const PlanInputs& in, const Dims& d,
                                                         const HipShape& shape,
                                                         int64_t units) const {
  const int64_t lists = d.batch * d.heads_q * shape.q_blocks;
  std::vector<std::vector<int32_t>> chosen(lists);
  const int threads = effective_threads(in.threads);
  const int64_t sink_units = (sink_ + block_k_ - 1) / block_k_;
#pragma omp parallel for schedule(dynamic, 1) num_threads(threads)
  for (int64_t item = 0; item < lists; ++item) {
    const int64_t b = item / (d.heads_q * shape.q_blocks), h = item / shape.q_blocks % d.heads_q;
    const int64_t qb = item % shape.q_blocks;
    const int64_t row0 = qb * block_q_, row1 = std::min(d.nq, row0 + block_q_);
    const int64_t p_last = row1 - 1 + d.nk - d.nq;
    // Candidates: units after the sink and wholly before the LAST row's window. Every row's
    // window starts at or before that point (so no key between the candidates and a row's window
    // is left out), and the block is shorter than the window in the defaults, so every sampled
    // query sees every candidate; otherwise causality still applies in the kernel.
    const int64_t window_start = std::min(d.nk, std::max<int64_t>(0, p_last - window_ + 1));
    const int64_t lo = std::min(sink_units, units), hi = std::max(lo, window_start / block_k_);
    // Sampled queries of the block: rows stride_q - 1, 2 stride_q - 1, ... (the last of each
    // stride, as the official code; the block's last row when it has fewer than stride_q),
    // transposed: q_t [dim][ld_q_t], zero padding.
    std::vector<int64_t> sampled, row_pos;
    for (int64_t i = row0 + std::min(stride_q_, d.nq) - 1; i < row1; i += stride_q_)
      sampled.push_back(i);
    if (sampled.empty()) sampled.push_back(row1 - 1);
    const int64_t rows = static_cast<int64_t>(sampled.size());
    const int64_t ld_q_t = (rows + 31) / 32 * 32;
    std::vector<float> q(rows * d.dim), q_t(d.dim * ld_q_t, 0.0f);
    for (int64_t r = 0; r < rows; ++r) {
      cpu::load_rows(in.q, b, h, sampled[r], 1, q.data() + r * d.dim);
      row_pos.push_back(in.causal ? sampled[r] + d.nk - d.nq : d.nk - 1);
    }
    cpu::transpose_keys(q.data(), rows, d.dim, d.dim, q_t.data(), ld_q_t);
    chosen[item] = search(q_t.data(), ld_q_t, rows, row_pos.data(), in.k, b, h / d.group, lo, hi);
  }
  return chosen;
}

}  // namespace

PatternRegistration hip_pattern() {
  return {{"hip",
           "HiP: hierarchical tree-search pruning (halve each chunk, score by its centre key "
           "block, keep the best k / block_k) + sink + sliding window, per query head",
           "Lee et al. 2024, A Training-free Sub-quadratic Cost Transformer Model Serving "
           "Framework With Hierarchically Pruned Attention (arXiv 2406.09827)",
           PatternFamily::kDynamic,
           {int_param("k", 512, 1, int64_t{1} << 30,
                      "searched tokens per query block (k / block_k units)"),
            block_param("block_q", 64, "query block size (multiple of 16)"),
            int_param("stride_q", 2, 1, 1 << 16, "query sampling stride when scoring"),
            int_param("block_k", 2, 1, 1024, "key unit (tokens) of the tree search"),
            int_param("stride_k", 1, 1, 1 << 16, "key sampling stride when scoring"),
            int_param("sink", 16, 0, int64_t{1} << 30, "sink tokens"),
            int_param("window", 256, 0, int64_t{1} << 30, "sliding window tokens"),
            block_param("kv_block", 16, "kv block of the BlockMask (multiple of 16)"),
            choice_param("init", "aligned", {"aligned", "even"},
                         "initial chunks: aligned (official, power-of-two starts) or even"),
            int_param("refresh", 8, 1, 1 << 20,
                      "decode: search again every this many steps, reusing the units between "
                      "(1 = every step)")}},
          &construct_pattern<HipPattern>};
}

}  // namespace attnkit::dynamic_patterns
