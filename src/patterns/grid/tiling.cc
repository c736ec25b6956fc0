#include "patterns/grid/tiling.h"

#include <algorithm>
#include <array>

#include "patterns/grid/natten.h"

namespace attnkit::grid_patterns {

int64_t AxisRule::group_length(int64_t g) const { return natten_group_length(length, dilation, g); }

void AxisRule::window(int64_t i, int64_t group_len, int64_t* start, int64_t* end) const {
  if (kind == Kind::kNatten) {
    *start = natten_window_start(i, kernel, causal, group_len);
    *end = natten_window_end(i, kernel, causal, group_len);
    return;
  }
  // HaloNet: the query's block plus `halo` keys on each side, cut at the grid border.
  const int64_t first = (i / block) * block;
  *start = std::max<int64_t>(first - halo, 0);
  *end = std::min<int64_t>(first + block + halo, group_len);
}

bool AxisRule::allows(int64_t i, int64_t j) const {
  if (i % dilation != j % dilation) return false;
  int64_t start = 0, end = 0;
  window(i / dilation, group_length(i % dilation), &start, &end);
  const int64_t jg = j / dilation;
  return start <= jg && jg < end;
}

int64_t AxisRule::pairs() const {
  int64_t total = 0;
  for (int64_t i = 0; i < length; ++i) {
    int64_t start = 0, end = 0;
    window(i / dilation, group_length(i % dilation), &start, &end);
    total += end - start;
  }
  return total;
}

Coverage classify_group(const AxisRule& rule, int64_t group_len, int64_t q0, int64_t q1, int64_t k0,
                        int64_t k1) {
  int64_t first_start = 0, first_end = 0, last_start = 0, last_end = 0;
  rule.window(q0, group_len, &first_start, &first_end);
  rule.window(q1 - 1, group_len, &last_start, &last_end);
  // Windows are non-decreasing and touching: the union over the queries is [first_start, last_end).
  if (k1 <= first_start || k0 >= last_end) return Coverage::kNone;
  // The intersection of all windows is [last_start, first_end).
  if (last_start <= k0 && k1 <= first_end) return Coverage::kAll;
  return Coverage::kSome;
}

Coverage classify_axis(const AxisRule& rule, int64_t q0, int64_t q1, int64_t k0, int64_t k1) {
  const int64_t d = rule.dilation;
  if (d == 1) return classify_group(rule, rule.length, q0, q1, k0, k1);
  // With dilation, pairs of different residues are never allowed, so "all" needs one query and one
  // key of the same residue; otherwise look for any allowed pair residue by residue.
  if (q1 - q0 == 1 && k1 - k0 == 1) {
    if (q0 % d != k0 % d) return Coverage::kNone;
    return classify_group(rule, rule.group_length(q0 % d), q0 / d, q0 / d + 1, k0 / d, k0 / d + 1);
  }
  for (int64_t g = 0; g < d; ++g) {
    // Group coordinates of the residue-g members of each interval: [ceil((x0 - g) / d), ...).
    const int64_t qa = (q0 - g + d - 1) / d, qb = (q1 - 1 - g + d) / d;
    const int64_t ka = (k0 - g + d - 1) / d, kb = (k1 - 1 - g + d) / d;
    if (q1 - 1 < g || k1 - 1 < g || qa >= qb || ka >= kb) continue;
    if (classify_group(rule, rule.group_length(g), qa, qb, ka, kb) != Coverage::kNone) {
      return Coverage::kSome;
    }
  }
  return Coverage::kNone;
}

int64_t Grid::size() const {
  int64_t n = 1;
  for (int a = 0; a < ndim; ++a) n *= axis[a].length;
  return n;
}

void Grid::coords(int64_t t, int64_t* c) const {
  for (int a = ndim - 1; a >= 0; --a) {
    c[a] = t % axis[a].length;
    t /= axis[a].length;
  }
}

int64_t Grid::linear(const int64_t* c) const {
  int64_t t = 0;
  for (int a = 0; a < ndim; ++a) t = t * axis[a].length + c[a];
  return t;
}

bool Grid::allows(int64_t i, int64_t j) const {
  int64_t ci[3], cj[3];
  coords(i, ci);
  coords(j, cj);
  for (int a = 0; a < ndim; ++a) {
    if (!axis[a].allows(ci[a], cj[a])) return false;
  }
  return true;
}

double Grid::pairs() const {
  double total = 1.0;
  for (int a = 0; a < ndim; ++a) total *= static_cast<double>(axis[a].pairs());
  return total;
}

int64_t Box::volume(int ndim) const {
  int64_t v = 1;
  for (int a = 0; a < ndim; ++a) v *= hi[a] - lo[a];
  return v;
}

int64_t Tiling::keys_per_box() const {
  return (tile[0] / sub[0]) * (tile[1] / sub[1]) * (tile[2] / sub[2]);
}

int64_t Tiling::key_box_index(int64_t g, const int64_t* kc) const {
  int64_t box = 0, inner = 0;
  for (int a = 0; a < 3; ++a) {
    const int64_t per = tile[a] / sub[a];
    box = box * group_boxes[a][g] + kc[a] / per;
    inner = inner * per + kc[a] % per;
  }
  return (group_first_box[g] + box) * keys_per_box() + inner;
}

namespace {

int64_t pow2_ceil(int64_t x) {
  int64_t p = 1;
  while (p < x) p *= 2;
  return p;
}

int64_t slots(int64_t volume) { return std::max<int64_t>(16, (volume + 15) / 16 * 16); }

// Calls f(start, end) with the union window [start, end) of every query interval of `tile`
// coordinates of one axis, over its dilation groups (group coordinates).
template <class F>
void for_each_union(const AxisRule& rule, int64_t tile, const F& f) {
  for (int64_t g = 0; g < rule.dilation; ++g) {
    const int64_t len = rule.group_length(g);
    for (int64_t lo = 0; lo < len; lo += tile) {
      int64_t s0, e0, s1, e1;
      rule.window(lo, len, &s0, &e0);
      rule.window(std::min(lo + tile, len) - 1, len, &s1, &e1);
      f(s0, e1);
    }
  }
}

// Block visits of one axis: per query interval, the key intervals of `sub` coordinates that its
// union window touches.
int64_t axis_visits(const AxisRule& rule, int64_t tile, int64_t sub) {
  int64_t visits = 0;
  for_each_union(rule, tile,
                 [&](int64_t start, int64_t end) { visits += (end - 1) / sub - start / sub + 1; });
  return visits;
}

// Modelled kernel cost of one shape: every block visit computes q_block x kv_block scores and
// pays a fixed cost per row (the predicate's row, the O rescale, the row statistics) worth about
// this many keys. Measured on natten2d / halo2d / natten3d at d = 64 (BENCHMARKS.md).
constexpr double kVisitKeys = 16.0;

double shape_cost(const Grid& grid, const int64_t* tile, const int64_t* sub) {
  double visits = 1.0;
  int64_t tile_volume = 1, sub_volume = 1;
  for (int a = 0; a < grid.ndim; ++a) {
    visits *= static_cast<double>(axis_visits(grid.axis[a], tile[a], sub[a]));
    tile_volume *= tile[a];
    sub_volume *= sub[a];
  }
  const double key_block = static_cast<double>(slots(sub_volume));
  const double block = key_block * static_cast<double>(tile_volume / sub_volume);
  return visits * block * (key_block + kVisitKeys);
}

// Union window lengths of one axis, summed over its query intervals of `part` coordinates (and
// its dilation groups).
int64_t axis_union(const AxisRule& rule, int64_t part) {
  int64_t keys = 0;
  for_each_union(rule, part, [&](int64_t start, int64_t end) { keys += end - start; });
  return keys;
}

// Every key of a box's union pays the walk a fixed cost (fetching its K and V rows, its mask)
// worth about this many rows. Measured at d = 64 (BENCHMARKS.md).
constexpr double kWindowKeyRows = 8.0;

double window_cost(const Grid& grid, const int64_t* tile) {
  double keys = 1.0;
  for (int a = 0; a < grid.ndim; ++a)
    keys *= static_cast<double>(axis_union(grid.axis[a], tile[a]));
  return walked_pairs(grid, tile) + keys * kWindowKeyRows;
}

// Per-axis powers of two from 1 to `limit` whose product is `volume` (all of them, row-major).
void shapes_of_volume(int ndim, const int64_t* limit, int64_t volume,
                      std::vector<std::array<int64_t, 3>>* out) {
  std::array<int64_t, 3> e = {1, 1, 1};
  for (e[0] = 1; e[0] <= limit[0]; e[0] *= 2) {
    for (e[1] = 1; e[1] <= (ndim > 1 ? limit[1] : 1); e[1] *= 2) {
      for (e[2] = 1; e[2] <= (ndim > 2 ? limit[2] : 1); e[2] *= 2) {
        if (e[0] * e[1] * e[2] == volume) out->push_back(e);
      }
    }
  }
}

}  // namespace

double walked_pairs(const Grid& grid, const int64_t* tile) {
  // A vector's sub-box: the box's last axes first.
  const int last = grid.ndim - 1;
  int64_t vector[3] = {1, 1, 1}, room = kWalkLanes;
  for (int a = last; a >= 0; --a) {
    vector[a] = std::max<int64_t>(1, std::min(tile[a], room));
    room /= vector[a];
  }
  // Per axis (boxes are products of intervals): the outer axes' unions of each vector's
  // interval, the last axis's union of each box's interval once per vector along it.
  double pairs = static_cast<double>(kWalkLanes);
  for (int a = 0; a < grid.ndim; ++a) {
    const AxisRule& rule = grid.axis[a];
    pairs *= a == last ? static_cast<double>(axis_union(rule, tile[a]) *
                                             ((tile[a] + vector[a] - 1) / vector[a]))
                       : static_cast<double>(axis_union(rule, vector[a]));
  }
  return pairs;
}

Tiling make_tiling(const Grid& grid, TilingFor kernel) {
  // Group 0 is the longest group of every axis; boxes grow no longer than it.
  int64_t longest[3] = {1, 1, 1}, cells = 1;
  for (int a = 0; a < grid.ndim; ++a) {
    longest[a] = pow2_ceil(grid.axis[a].group_length(0));
    cells *= longest[a];
  }
  // Query boxes of 64 tokens (or 32: fewer keys per box, same SIMD width), or the whole group on
  // small grids; key boxes of at least 16 tokens inside them.
  std::vector<std::array<int64_t, 3>> tiles, subs;
  for (int64_t volume : {int64_t{64}, int64_t{32}}) {
    shapes_of_volume(grid.ndim, longest, std::min(volume, cells), &tiles);
  }
  // Per query box shape the key box of the least block cost; the shapes compared by the cost
  // of the kernel that will run them.
  int64_t best_tile[3] = {1, 1, 1}, best_sub[3] = {1, 1, 1};
  double best = -1.0;
  for (const auto& tile : tiles) {
    const int64_t tile_volume = tile[0] * tile[1] * tile[2];
    subs.clear();
    for (int64_t volume = std::min<int64_t>(16, tile_volume); volume <= tile_volume; volume *= 2) {
      shapes_of_volume(grid.ndim, tile.data(), volume, &subs);
    }
    double tile_best = -1.0;
    int64_t sub_best[3] = {1, 1, 1};
    for (const auto& sub : subs) {
      bool divides = true;
      for (int a = 0; a < 3; ++a) divides = divides && tile[a] % sub[a] == 0;
      if (!divides) continue;
      const double cost = shape_cost(grid, tile.data(), sub.data());
      if (tile_best < 0.0 || cost < tile_best) {
        tile_best = cost;
        std::copy(sub.begin(), sub.end(), sub_best);
      }
    }
    if (tile_best < 0.0) continue;
    const double cost = kernel == TilingFor::kWindows ? window_cost(grid, tile.data()) : tile_best;
    if (best < 0.0 || cost < best) {
      best = cost;
      std::copy(tile.begin(), tile.end(), best_tile);
      std::copy(sub_best, sub_best + 3, best_sub);
    }
  }
  Tiling tiling = make_tiling(grid, best_tile, best_sub);
  // Tokens already in box order run on the block lists (GridPattern::execute).
  if (tiling.identity && kernel == TilingFor::kWindows)
    return make_tiling(grid, TilingFor::kBlocks);
  return tiling;
}

Tiling make_tiling(const Grid& grid, const int64_t* tile, const int64_t* sub) {
  Tiling t;
  const int ndim = grid.ndim;
  int64_t sub_volume = 1;
  for (int a = 0; a < 3; ++a) {
    t.tile[a] = a < ndim ? tile[a] : 1;
    t.sub[a] = a < ndim ? sub[a] : 1;
    sub_volume *= t.sub[a];
  }
  t.key_block = slots(sub_volume);
  t.block = t.key_block * t.keys_per_box();

  int64_t groups_per_axis[3] = {1, 1, 1};
  for (int a = 0; a < ndim; ++a) groups_per_axis[a] = grid.axis[a].dilation;
  const int64_t groups = groups_per_axis[0] * groups_per_axis[1] * groups_per_axis[2];
  for (int a = 0; a < 3; ++a) t.group_boxes[a].assign(groups, 1);
  t.group_first_box.assign(groups, 0);

  int64_t n_boxes = 0;
  for (int64_t g = 0; g < groups; ++g) {
    const int64_t residue[3] = {g / (groups_per_axis[1] * groups_per_axis[2]),
                                g / groups_per_axis[2] % groups_per_axis[1],
                                g % groups_per_axis[2]};
    int64_t len[3] = {1, 1, 1};
    for (int a = 0; a < ndim; ++a) {
      len[a] = grid.axis[a].group_length(residue[a]);
      t.group_boxes[a][g] = (len[a] + t.tile[a] - 1) / t.tile[a];
    }
    t.group_first_box[g] = n_boxes;
    int64_t bc[3], kc[3];
    for (bc[0] = 0; bc[0] < t.group_boxes[0][g]; ++bc[0]) {
      for (bc[1] = 0; bc[1] < t.group_boxes[1][g]; ++bc[1]) {
        for (bc[2] = 0; bc[2] < t.group_boxes[2][g]; ++bc[2]) {
          Box box;
          for (int a = 0; a < 3; ++a) {
            box.group[a] = residue[a];
            box.lo[a] = bc[a] * t.tile[a];
            box.hi[a] = std::min(box.lo[a] + t.tile[a], len[a]);
          }
          t.boxes.push_back(box);
          ++n_boxes;
          for (kc[0] = 0; kc[0] < t.tile[0] / t.sub[0]; ++kc[0]) {
            for (kc[1] = 0; kc[1] < t.tile[1] / t.sub[1]; ++kc[1]) {
              for (kc[2] = 0; kc[2] < t.tile[2] / t.sub[2]; ++kc[2]) {
                Box key = box;
                for (int a = 0; a < 3; ++a) {
                  key.lo[a] = std::min(box.lo[a] + kc[a] * t.sub[a], box.hi[a]);
                  key.hi[a] = std::min(key.lo[a] + t.sub[a], box.hi[a]);
                }
                t.key_boxes.push_back(key);
              }
            }
          }
        }
      }
    }
  }

  t.source.assign(t.key_boxes.size() * t.key_block, -1);
  t.coord.assign(3 * t.source.size(), 0);
  for (size_t k = 0; k < t.key_boxes.size(); ++k) {
    const Box& box = t.key_boxes[k];
    int64_t slot = static_cast<int64_t>(k) * t.key_block;
    int64_t c[3], orig[3] = {0, 0, 0};
    for (c[0] = box.lo[0]; c[0] < box.hi[0]; ++c[0]) {
      for (c[1] = box.lo[1]; c[1] < box.hi[1]; ++c[1]) {
        for (c[2] = box.lo[2]; c[2] < box.hi[2]; ++c[2]) {
          for (int a = 0; a < ndim; ++a) orig[a] = box.group[a] + grid.axis[a].dilation * c[a];
          for (int a = 0; a < 3; ++a) t.coord[3 * slot + a] = static_cast<int32_t>(c[a]);
          t.source[slot++] = grid.linear(orig);
        }
      }
    }
  }
  t.identity = t.padded() == grid.size();
  for (int64_t p = 0; t.identity && p < t.padded(); ++p) t.identity = t.source[p] == p;
  return t;
}

}  // namespace attnkit::grid_patterns
