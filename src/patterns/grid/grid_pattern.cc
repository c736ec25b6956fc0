#include "patterns/grid/grid_pattern.h"

#include <algorithm>
#include <array>
#include <cmath>
#include <cstring>
#include <memory>
#include <vector>

#include "attnkit/error.h"

namespace attnkit::grid_patterns {
namespace {

// Per-coordinate tables of one axis, so the element predicate is a few loads and compares.
struct AxisTable {
  std::vector<int32_t> residue, coord, start, end;  // group residue / coordinate, window
};

AxisTable make_table(const AxisRule& rule) {
  AxisTable t;
  t.residue.resize(rule.length);
  t.coord.resize(rule.length);
  t.start.resize(rule.length);
  t.end.resize(rule.length);
  for (int64_t c = 0; c < rule.length; ++c) {
    int64_t start = 0, end = 0;
    rule.window(c / rule.dilation, rule.group_length(c % rule.dilation), &start, &end);
    t.residue[c] = static_cast<int32_t>(c % rule.dilation);
    t.coord[c] = static_cast<int32_t>(c / rule.dilation);
    t.start[c] = static_cast<int32_t>(start);
    t.end[c] = static_cast<int32_t>(end);
  }
  return t;
}

// The grid rule as a tile predicate, in original order (tiling null) or tiled order (slot p holds
// token tiling->source[p], -1 = padding). `causal` adds j <= i in original order.
class GridPredicate : public TilePredicate {
 public:
  GridPredicate(const Grid& grid, std::shared_ptr<const Tiling> tiling, bool causal)
      : grid_(grid), tiling_(std::move(tiling)), causal_(causal) {
    for (int a = 0; a < grid.ndim; ++a) tables_[a] = make_table(grid.axis[a]);
    if (tiling_ != nullptr && tiling_->key_block <= 64) slots_below(tiling_->sub, whole_below_);
  }

  void fill(int64_t b, int64_t h, int64_t q0, int64_t nq, int64_t k0, int64_t nk, uint8_t* allow,
            int64_t ld) const override {
    if (tiling_ != nullptr && nq > 0 && nk > 0) {
      const int64_t block = tiling_->block, key_block = tiling_->key_block;
      if (key_block <= 64 && q0 / block == (q0 + nq - 1) / block &&
          k0 / key_block == (k0 + nk - 1) / key_block) {
        fill_box_pair(q0, nq, k0, nk, allow, ld);
        return;
      }
    }
    fill_elements(q0, nq, k0, nk, allow, ld);
  }
  bool same_for_all_heads() const override { return true; }

 private:
  int64_t token(int64_t slot) const { return tiling_ == nullptr ? slot : tiling_->source[slot]; }

  // Any tile: element by element through the per-axis tables.
  void fill_elements(int64_t q0, int64_t nq, int64_t k0, int64_t nk, uint8_t* allow,
                     int64_t ld) const {
    const int ndim = grid_.ndim;
    thread_local std::vector<int64_t> key_token;
    thread_local std::vector<int64_t> key_coord;
    key_token.resize(nk);
    key_coord.resize(3 * nk);
    for (int64_t c = 0; c < nk; ++c) {
      key_token[c] = token(k0 + c);
      if (key_token[c] >= 0) grid_.coords(key_token[c], &key_coord[3 * c]);
    }
    for (int64_t r = 0; r < nq; ++r) {
      uint8_t* row = allow + r * ld;
      const int64_t i = token(q0 + r);
      if (i < 0) {
        std::fill(row, row + nk, uint8_t{0});
        continue;
      }
      int64_t qc[3];
      grid_.coords(i, qc);
      for (int64_t c = 0; c < nk; ++c) {
        const int64_t j = key_token[c];
        bool ok = j >= 0 && (!causal_ || j <= i);
        for (int a = 0; a < ndim && ok; ++a) {
          const AxisTable& t = tables_[a];
          const int64_t kc = key_coord[3 * c + a];
          ok = t.residue[qc[a]] == t.residue[kc] && t.start[qc[a]] <= t.coord[kc] &&
               t.coord[kc] < t.end[qc[a]];
        }
        row[c] = ok ? 1 : 0;
      }
    }
  }

  // Slots of one query box x one key box (at most 64 key slots): the rule is separable, so a
  // row's allowed key slots are the AND over axes of the slots whose coordinate the row's axis
  // window holds, one 64-bit mask per axis and query coordinate, expanded to bytes at the end.
  void fill_box_pair(int64_t q0, int64_t nq, int64_t k0, int64_t nk, uint8_t* allow,
                     int64_t ld) const {
    const Tiling& t = *tiling_;
    const int ndim = grid_.ndim;
    const Box& q = t.boxes[q0 / t.block];
    const Box& k = t.key_boxes[k0 / t.key_block];
    const int64_t k_off = k0 % t.key_block;
    const int64_t k_volume = k.volume(ndim);
    bool same_group = k_volume > 0;
    for (int a = 0; a < ndim; ++a) same_group = same_group && q.group[a] == k.group[a];
    if (!same_group) {
      for (int64_t r = 0; r < nq; ++r) std::fill(allow + r * ld, allow + r * ld + nk, uint8_t{0});
      return;
    }
    // below[a][v]: key slots (row-major in the key box) whose axis-a coordinate is below
    // k.lo + v, so the slots of coordinates [x, y) are below[a][y] ^ below[a][x]; full key boxes
    // share one table. seen[a][u]: the key slots that query coordinate q.lo + u sees on axis a.
    int64_t k_ext[3] = {1, 1, 1};
    bool whole = true;
    for (int a = 0; a < ndim; ++a) {
      k_ext[a] = k.hi[a] - k.lo[a];
      whole = whole && k_ext[a] == t.sub[a];
    }
    uint64_t clipped[3][65];
    const uint64_t(*below)[65] = whole ? whole_below_ : clipped;
    if (!whole) slots_below(k_ext, clipped);
    uint64_t seen[3][64];
    for (int a = 0; a < ndim; ++a) {
      const AxisTable& table = tables_[a];
      const int64_t dilation = grid_.axis[a].dilation;
      for (int64_t u = 0; u < q.hi[a] - q.lo[a]; ++u) {
        const int64_t c = q.group[a] + dilation * (q.lo[a] + u);
        const int64_t x = std::clamp<int64_t>(table.start[c] - k.lo[a], 0, k_ext[a]);
        const int64_t y = std::clamp<int64_t>(table.end[c] - k.lo[a], 0, k_ext[a]);
        seen[a][u] = below[a][y] ^ below[a][x];
      }
    }
    for (int64_t r = 0; r < nq; ++r) {
      uint8_t* out = allow + r * ld;
      const int64_t i = t.source[q0 + r];
      if (i < 0) {
        std::fill(out, out + nk, uint8_t{0});
        continue;
      }
      const int32_t* c = &t.coord[3 * (q0 + r)];
      uint64_t bits = seen[0][c[0] - q.lo[0]];
      for (int a = 1; a < ndim; ++a) bits &= seen[a][c[a] - q.lo[a]];
      bits >>= k_off;
      // 8 bits to 8 bytes at a time (a fixed-size copy: one store, not a memmove call), then
      // the tail bit by bit.
      int64_t col = 0;
      for (; col + 8 <= nk; col += 8) {
        const uint64_t bytes = spread_bits(static_cast<uint8_t>(bits >> col));
        std::memcpy(out + col, &bytes, 8);
      }
      for (; col < nk; ++col) out[col] = static_cast<uint8_t>((bits >> col) & 1u);
      if (causal_) {
        for (int64_t col = 0; col < nk; ++col) {
          if (out[col] && t.source[k0 + col] > i) out[col] = 0;
        }
      }
    }
  }

  // below[a][v] for a key box of extents k_ext (at most 64 slots, row-major).
  void slots_below(const int64_t* k_ext, uint64_t (*below)[65]) const {
    const int ndim = grid_.ndim;
    uint64_t at[3][64] = {};
    int64_t volume = 1;
    for (int a = 0; a < ndim; ++a) volume *= k_ext[a];
    for (int64_t s = 0, v[3] = {0, 0, 0}; s < volume; ++s) {
      for (int a = 0; a < ndim; ++a) at[a][v[a]] |= uint64_t{1} << s;
      for (int a = ndim - 1; a >= 0 && ++v[a] == k_ext[a]; --a) v[a] = 0;  // next slot
    }
    for (int a = 0; a < ndim; ++a) {
      below[a][0] = 0;
      for (int64_t v = 0; v < k_ext[a]; ++v) below[a][v + 1] = below[a][v] | at[a][v];
    }
  }

  // Byte b of the result is bit b of `bits` (0 or 1).
  static uint64_t spread_bits(uint8_t bits) {
    static const std::array<uint64_t, 256> table = [] {
      std::array<uint64_t, 256> t{};
      for (int x = 0; x < 256; ++x) {
        for (int b = 0; b < 8; ++b) t[x] |= static_cast<uint64_t>((x >> b) & 1) << (8 * b);
      }
      return t;
    }();
    return table[bits];
  }

  Grid grid_;
  std::shared_ptr<const Tiling> tiling_;
  bool causal_;
  AxisTable tables_[3];
  uint64_t whole_below_[3][65] = {};  // slots_below() of an unclipped key box
};

// Appends kv-block lists one query block at a time.
struct ListBuilder {
  BlockMask mask;
  ListBuilder(int64_t n, int64_t q_block, int64_t kv_block) {
    mask.q_block = q_block;
    mask.kv_block = kv_block;
    mask.nq = mask.nk = n;
    mask.row_start.push_back(0);
  }
  void add(int64_t kb, BlockKind kind) {
    mask.kv_index.push_back(static_cast<int32_t>(kb));
    mask.kind.push_back(kind);
  }
  void end_row() { mask.row_start.push_back(static_cast<int64_t>(mask.kv_index.size())); }
};

int64_t root(int64_t n, int k) {
  auto power = [k](int64_t r) {
    int64_t p = 1;
    for (int i = 0; i < k; ++i) p *= r;
    return p;
  };
  const int64_t guess = std::llround(std::pow(static_cast<double>(n), 1.0 / k));
  for (int64_t r = std::max<int64_t>(guess - 1, 1); r <= guess + 1; ++r) {
    if (power(r) == n) return r;
  }
  return 0;
}

}  // namespace

Grid resolve_grid(const GridTemplate& gt, int64_t n) {
  Grid grid = gt.grid;
  const std::string& name = gt.pattern_name;
  int unknown = 0;
  int64_t known = 1;
  for (int a = 0; a < grid.ndim; ++a) {
    if (grid.axis[a].length <= 0) {
      ++unknown;
    } else {
      known *= grid.axis[a].length;
    }
  }
  std::string dims;
  for (int a = 0; a < grid.ndim; ++a) dims += (a ? "*" : "") + gt.axis_names[a];
  if (unknown > 0) {
    // The unknown lengths share what the known ones leave: N / known = r^unknown.
    const int64_t rest = known > 0 && n % known == 0 ? n / known : 0;
    const int64_t r = rest > 0 ? root(rest, unknown) : 0;
    check(rest > 0, "pattern",
          name + ": N = " + std::to_string(n) + " is not a multiple of the given lengths (" +
              std::to_string(known) + " tokens); give " + dims + " to match N");
    check(r > 0, "pattern",
          name + ": N = " + std::to_string(n) + " leaves " + std::to_string(rest) +
              " tokens for the unknown lengths, not a perfect " +
              (unknown == 2 ? "square" : "cube") + "; give " + dims + " explicitly");
    for (int a = 0; a < grid.ndim; ++a) {
      if (grid.axis[a].length <= 0) grid.axis[a].length = r;
    }
  }
  check(grid.size() == n, "pattern",
        name + ": the grid " + dims + " = " + std::to_string(grid.size()) +
            " tokens must equal the sequence length N = " + std::to_string(n));
  for (int a = 0; a < grid.ndim; ++a) {
    const AxisRule& r = grid.axis[a];
    const std::string axis = name + ": " + gt.axis_names[a] + " = " + std::to_string(r.length);
    if (r.kind == AxisRule::Kind::kNatten) {
      check(r.kernel >= 1 && r.dilation >= 1, "pattern",
            axis + ": kernel and dilation must be >= 1, got kernel " + std::to_string(r.kernel) +
                ", dilation " + std::to_string(r.dilation));
      check(r.kernel * r.dilation <= r.length, "pattern",
            axis + " must be >= kernel * dilation = " + std::to_string(r.kernel) + " * " +
                std::to_string(r.dilation));
    } else {
      check(r.block >= 1 && r.halo >= 0, "pattern",
            axis + ": block must be >= 1 and halo >= 0, got block " + std::to_string(r.block) +
                ", halo " + std::to_string(r.halo));
    }
  }
  return grid;
}

TiledPlan plan_tiled(const Grid& grid, bool causal) {
  // Without causality the forward walks windows (GridPattern::execute).
  return plan_tiled(grid, causal,
                    make_tiling(grid, causal ? TilingFor::kBlocks : TilingFor::kWindows));
}

TiledPlan plan_tiled(const Grid& grid, bool causal, Tiling tiling) {
  TiledPlan plan;
  plan.tiling = std::make_shared<const Tiling>(std::move(tiling));
  const Tiling& t = *plan.tiling;
  const int ndim = grid.ndim;
  int64_t dil[3] = {1, 1, 1};
  for (int a = 0; a < ndim; ++a) dil[a] = grid.axis[a].dilation;
  // Original token index of a box corner (row-major order is monotone in every coordinate).
  auto corner = [&](const Box& box, bool last) {
    int64_t c[3] = {0, 0, 0};
    for (int a = 0; a < ndim; ++a)
      c[a] = box.group[a] + dil[a] * (last ? box.hi[a] - 1 : box.lo[a]);
    return grid.linear(c);
  };

  ListBuilder builder(t.padded(), t.block, t.key_block);
  std::vector<std::pair<int64_t, BlockKind>> row;
  for (const Box& q : t.boxes) {
    const int64_t g = (q.group[0] * dil[1] + q.group[1]) * dil[2] + q.group[2];
    int64_t len[3] = {1, 1, 1}, first[3] = {0, 0, 0}, last[3] = {0, 0, 0};
    for (int a = 0; a < ndim; ++a) {
      const AxisRule& rule = grid.axis[a];
      len[a] = rule.group_length(q.group[a]);
      int64_t s0, e0, s1, e1;
      rule.window(q.lo[a], len[a], &s0, &e0);
      rule.window(q.hi[a] - 1, len[a], &s1, &e1);
      first[a] = s0 / t.sub[a];
      last[a] = (e1 - 1) / t.sub[a];
    }
    const int64_t q_min = corner(q, false), q_max = corner(q, true);
    const bool q_whole = q.volume(ndim) == t.block;
    // Key boxes are numbered query box by query box: collect the row, then sort it.
    row.clear();
    int64_t kc[3];
    for (kc[0] = first[0]; kc[0] <= last[0]; ++kc[0]) {
      for (kc[1] = first[1]; kc[1] <= last[1]; ++kc[1]) {
        for (kc[2] = first[2]; kc[2] <= last[2]; ++kc[2]) {
          const int64_t kb = t.key_box_index(g, kc);
          const Box& k = t.key_boxes[kb];
          bool all = true, none = false;
          for (int a = 0; a < ndim && !none; ++a) {
            const Coverage c =
                classify_group(grid.axis[a], len[a], q.lo[a], q.hi[a], k.lo[a], k.hi[a]);
            none = c == Coverage::kNone;
            all = all && c == Coverage::kAll;
          }
          if (none) continue;
          if (causal) {
            if (corner(k, false) > q_max) continue;
            all = all && corner(k, true) <= q_min;
          }
          const bool full = all && q_whole && k.volume(ndim) == t.key_block;
          row.push_back({kb, full ? BlockKind::kFull : BlockKind::kPartial});
        }
      }
    }
    std::sort(row.begin(), row.end());
    for (const auto& [kb, kind] : row) builder.add(kb, kind);
    builder.end_row();
  }
  builder.mask.predicate = std::make_shared<GridPredicate>(grid, plan.tiling, causal);
  plan.mask = std::move(builder.mask);
  return plan;
}

cpu::GridWindows grid_windows(const Grid& grid) {
  cpu::GridWindows w;
  w.ndim = grid.ndim;
  for (int a = 0; a < grid.ndim; ++a) {
    const AxisRule& rule = grid.axis[a];
    w.extent[a] = rule.length;
    w.step[a] = rule.dilation;
    for (int64_t x = 0; x < rule.length; ++x) {
      const int64_t d = rule.dilation, residue = x % d;
      int64_t start = 0, end = 0;
      rule.window(x / d, rule.group_length(residue), &start, &end);
      w.first[a].push_back(static_cast<int32_t>(residue + d * start));
      w.last[a].push_back(static_cast<int32_t>(residue + d * (end - 1)));
    }
  }
  return w;
}

double walk_density(const Grid& grid, const Tiling& tiling) {
  const double tokens = static_cast<double>(grid.size());
  return walked_pairs(grid, tiling.tile) / (tokens * tokens);
}

namespace {

// The walk the plan kept, when this forward can take it (no dropout: its keep factors follow
// the slots of the block lists); else null.
const GridWalk* walk_of(const AttentionArgs& args, const Plan& plan) {
  if (args.dropout > 0.0f || !plan.state.has_value()) return nullptr;
  return std::any_cast<std::shared_ptr<const GridWalk>>(plan.state).get();
}

}  // namespace

void GridPattern::execute(const AttentionArgs& args, const Plan& plan) const {
  const GridWalk* walk = walk_of(args, plan);
  if (walk == nullptr) {
    Pattern::execute(args, plan);
    return;
  }
  // The tiling keeps each query box in one dilation group, so a tile's rows share residues.
  execute_in_kernel_order(args, plan, &walk->windows);
}

double GridPattern::tile_density(const AttentionArgs& args, const Plan& plan) const {
  const GridWalk* walk = walk_of(args, plan);
  return walk ? walk->density : Pattern::tile_density(args, plan);
}

Plan GridPattern::plan(const PlanInputs& in) const {
  in.validate(false);
  const int64_t nq = in.q.shape[2], nk = in.k.shape[2];
  check(nq == nk, "pattern",
        name() + " is a self-attention over the grid: Nq = " + std::to_string(nq) +
            " must equal Nk = " + std::to_string(nk));
  const Grid grid = resolve_grid(template_, nq);
  TiledPlan tiled = plan_tiled(grid, in.causal);
  Plan plan;
  plan.mask = std::move(tiled.mask);
  plan.causal = in.causal;
  if (!tiled.tiling->identity) {
    plan.token_order.assign(tiled.tiling->source.begin(), tiled.tiling->source.end());
    if (!in.causal)
      plan.state = std::make_shared<const GridWalk>(
          GridWalk{grid_windows(grid), walk_density(grid, *tiled.tiling)});
  }
  return plan;
}

}  // namespace attnkit::grid_patterns
