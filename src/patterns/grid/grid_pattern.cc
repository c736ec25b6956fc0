#include "patterns/grid/grid_pattern.h"

#include <algorithm>
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
  }

  void fill(int64_t b, int64_t h, int64_t q0, int64_t nq, int64_t k0, int64_t nk, uint8_t* allow,
            int64_t ld) const override {
    if (tiling_ != nullptr && nq > 0 && nk > 0) {
      const int64_t block = tiling_->block;
      if (q0 / block == (q0 + nq - 1) / block && k0 / block == (k0 + nk - 1) / block) {
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

  // Slots of one query box x one key box: the rule is separable, so each row is the Kronecker
  // product of per-axis 0/1 vectors (key slots are row-major in the box): a few short copies per
  // row instead of a test per element.
  void fill_box_pair(int64_t q0, int64_t nq, int64_t k0, int64_t nk, uint8_t* allow,
                     int64_t ld) const {
    const Tiling& t = *tiling_;
    const int ndim = grid_.ndim;
    const Box& q = t.boxes[q0 / t.block];
    const Box& k = t.boxes[k0 / t.block];
    const int64_t q_off = q0 % t.block, k_off = k0 % t.block;
    bool same_group = true;
    for (int a = 0; a < ndim; ++a) same_group = same_group && q.group[a] == k.group[a];
    if (!same_group) {
      for (int64_t r = 0; r < nq; ++r) std::fill(allow + r * ld, allow + r * ld + nk, uint8_t{0});
      return;
    }
    // ok[a][u * k_ext[a] + v]: query coordinate lo + u sees key coordinate lo + v on axis a.
    thread_local std::vector<uint8_t> ok[3];
    thread_local std::vector<uint8_t> row, next;
    int64_t q_ext[3] = {1, 1, 1}, k_ext[3] = {1, 1, 1};
    for (int a = 0; a < ndim; ++a) {
      const AxisRule& rule = grid_.axis[a];
      q_ext[a] = q.hi[a] - q.lo[a];
      k_ext[a] = k.hi[a] - k.lo[a];
      const int64_t len = rule.group_length(q.group[a]);
      ok[a].resize(q_ext[a] * k_ext[a]);
      for (int64_t u = 0; u < q_ext[a]; ++u) {
        int64_t start = 0, end = 0;
        rule.window(q.lo[a] + u, len, &start, &end);
        for (int64_t v = 0; v < k_ext[a]; ++v) {
          ok[a][u * k_ext[a] + v] = start <= k.lo[a] + v && k.lo[a] + v < end;
        }
      }
    }
    const int64_t q_volume = q.volume(ndim), k_volume = k.volume(ndim);
    row.assign(t.block, 0);
    next.resize(t.block);
    for (int64_t r = 0; r < nq; ++r) {
      uint8_t* out = allow + r * ld;
      const int64_t slot = q_off + r;
      if (slot >= q_volume) {
        std::fill(out, out + nk, uint8_t{0});
        continue;
      }
      int64_t u[3] = {0, 0, 0};
      for (int64_t a = ndim - 1, rest = slot; a >= 0; --a) {
        u[a] = rest % q_ext[a];
        rest /= q_ext[a];
      }
      // Kronecker product, last axis innermost: length grows to k_volume. The pieces are a few
      // bytes long: byte loops, not library calls.
      const uint8_t* last = &ok[ndim - 1][u[ndim - 1] * k_ext[ndim - 1]];
      for (int64_t c = 0; c < k_ext[ndim - 1]; ++c) row[c] = last[c];
      int64_t length = k_ext[ndim - 1];
      for (int a = ndim - 2; a >= 0; --a) {
        const uint8_t* axis = &ok[a][u[a] * k_ext[a]];
        for (int64_t v = 0; v < k_ext[a]; ++v) {
          uint8_t* dst = next.data() + v * length;
          const uint8_t keep = axis[v];
          for (int64_t c = 0; c < length; ++c) dst[c] = row[c] & keep;
        }
        length *= k_ext[a];
        std::swap(row, next);
      }
      const int64_t inside = std::clamp<int64_t>(k_volume - k_off, 0, nk);
      std::memcpy(out, row.data() + k_off, static_cast<size_t>(inside));
      std::memset(out + inside, 0, static_cast<size_t>(nk - inside));
      if (causal_) {
        const int64_t i = t.source[q0 + r];
        for (int64_t c = 0; c < nk; ++c) {
          if (out[c] && t.source[k0 + c] > i) out[c] = 0;
        }
      }
    }
  }

  Grid grid_;
  std::shared_ptr<const Tiling> tiling_;
  bool causal_;
  AxisTable tables_[3];
};

// Appends kv-block lists one query block at a time.
struct ListBuilder {
  BlockMask mask;
  explicit ListBuilder(int64_t n, int64_t block) {
    mask.q_block = mask.kv_block = block;
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
  TiledPlan plan;
  plan.tiling = std::make_shared<const Tiling>(make_tiling(grid));
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

  ListBuilder builder(t.padded(), t.block);
  for (const Box& q : t.boxes) {
    const int64_t g = (q.group[0] * dil[1] + q.group[1]) * dil[2] + q.group[2];
    int64_t len[3] = {1, 1, 1}, first[3] = {0, 0, 0}, last[3] = {0, 0, 0};
    for (int a = 0; a < ndim; ++a) {
      const AxisRule& rule = grid.axis[a];
      len[a] = rule.group_length(q.group[a]);
      int64_t s0, e0, s1, e1;
      rule.window(q.lo[a], len[a], &s0, &e0);
      rule.window(q.hi[a] - 1, len[a], &s1, &e1);
      first[a] = s0 / t.tile[a];
      last[a] = (e1 - 1) / t.tile[a];
    }
    const int64_t q_min = corner(q, false), q_max = corner(q, true);
    const bool q_whole = q.volume(ndim) == t.block;
    int64_t bc[3];
    for (bc[0] = first[0]; bc[0] <= last[0]; ++bc[0]) {
      for (bc[1] = first[1]; bc[1] <= last[1]; ++bc[1]) {
        for (bc[2] = first[2]; bc[2] <= last[2]; ++bc[2]) {
          const int64_t kb = t.box_index(g, bc);
          const Box& k = t.boxes[kb];
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
          const bool full = all && q_whole && k.volume(ndim) == t.block;
          builder.add(kb, full ? BlockKind::kFull : BlockKind::kPartial);
        }
      }
    }
    builder.end_row();
  }
  builder.mask.predicate = std::make_shared<GridPredicate>(grid, plan.tiling, causal);
  plan.mask = std::move(builder.mask);
  return plan;
}

Plan GridPattern::plan(const PlanInputs& in) const {
  in.validate(false);
  const int64_t nq = in.q.shape[2], nk = in.k.shape[2];
  check(nq == nk, "pattern",
        name() + " is a self-attention over the grid: Nq = " + std::to_string(nq) +
            " must equal Nk = " + std::to_string(nk));
  TiledPlan tiled = plan_tiled(resolve_grid(template_, nq), in.causal);
  Plan plan;
  plan.mask = std::move(tiled.mask);
  plan.causal = in.causal;
  if (!tiled.tiling->identity) {
    plan.token_order.assign(tiled.tiling->source.begin(), tiled.tiling->source.end());
  }
  return plan;
}

}  // namespace attnkit::grid_patterns
