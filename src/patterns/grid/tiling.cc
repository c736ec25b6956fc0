#include "patterns/grid/tiling.h"

#include <algorithm>

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

int64_t Tiling::box_index(int64_t g, const int64_t* bc) const {
  int64_t index = 0;
  for (int a = 0; a < 3; ++a) index = index * group_boxes[a][g] + bc[a];
  return group_first_box[g] + index;
}

namespace {

int64_t pow2_ceil(int64_t x) {
  int64_t p = 1;
  while (p < x) p *= 2;
  return p;
}

}  // namespace

Tiling make_tiling(const Grid& grid) {
  Tiling t;
  const int ndim = grid.ndim;
  static const int64_t kDefault[3][3] = {{64, 1, 1}, {8, 8, 1}, {4, 4, 4}};
  // Group 0 is the longest group of every axis.
  int64_t longest[3] = {1, 1, 1};
  for (int a = 0; a < ndim; ++a) {
    longest[a] = pow2_ceil(grid.axis[a].group_length(0));
    t.tile[a] = std::min(kDefault[ndim - 1][a], longest[a]);
  }
  auto volume = [&] { return t.tile[0] * t.tile[1] * t.tile[2]; };
  // Regrow axes that are longer than their tile, fastest axis first, back to 64 tokens a box.
  while (volume() < 64) {
    bool grown = false;
    for (int a = ndim - 1; a >= 0 && !grown; --a) {
      if (t.tile[a] < longest[a]) {
        t.tile[a] *= 2;
        grown = true;
      }
    }
    if (!grown) break;
  }
  t.block = std::max<int64_t>(16, (volume() + 15) / 16 * 16);

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
    int64_t bc[3];
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
        }
      }
    }
  }

  t.source.assign(n_boxes * t.block, -1);
  for (int64_t b = 0; b < n_boxes; ++b) {
    const Box& box = t.boxes[b];
    int64_t slot = b * t.block;
    int64_t c[3], orig[3] = {0, 0, 0};
    for (c[0] = box.lo[0]; c[0] < box.hi[0]; ++c[0]) {
      for (c[1] = box.lo[1]; c[1] < box.hi[1]; ++c[1]) {
        for (c[2] = box.lo[2]; c[2] < box.hi[2]; ++c[2]) {
          for (int a = 0; a < ndim; ++a) orig[a] = box.group[a] + grid.axis[a].dilation * c[a];
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
