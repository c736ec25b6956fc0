// Exact k nearest neighbours of 3-D points (attnkit::knn, include/attnkit/index_attention.h), the
// lists that make point-cloud attention two calls: knn, then index_attention.
//
// A k-d tree over the points: each inner node splits its points at the median of the axis with
// the largest extent (ties by index, so the tree and the answer are deterministic); leaves hold
// up to kLeaf points. A query keeps the k best (distance^2, index) pairs in a max-heap, visits the
// near child first and the far one only while the splitting plane is no farther than the current
// k-th best (<=, so that a tie at the boundary can still win by its lower index). Distances in
// double: the result equals a brute-force sort by (distance, index) exactly.
#include <algorithm>
#include <cmath>
#include <numeric>
#include <queue>
#include <string>
#include <utility>
#include <vector>

#include "attnkit/error.h"
#include "attnkit/index_attention.h"
#include "core/attention_args.h"

namespace attnkit {
namespace {

constexpr int64_t kLeaf = 16;

struct Node {
  int64_t begin, end;        // points order[begin, end)
  int axis = -1;             // -1: leaf
  double split = 0.0;        // the median point's coordinate on `axis`
  int64_t left = -1, right = -1;
};

class KdTree {
 public:
  KdTree(const float* points, int64_t n) : points_(points), order_(n) {
    std::iota(order_.begin(), order_.end(), 0);
    if (n > 0) build(0, n);
  }

  // The k best (distance^2, index) pairs for point `p`, nearest first.
  void query(const float* p, int64_t k, std::vector<std::pair<double, int32_t>>& best) const {
    best.clear();
    Heap heap;
    if (!nodes_.empty()) visit(0, p, k, heap);
    while (!heap.empty()) {
      best.push_back(heap.top());
      heap.pop();
    }
    std::reverse(best.begin(), best.end());
  }

 private:
  using Heap = std::priority_queue<std::pair<double, int32_t>>;  // largest (dist, index) on top

  double coord(int64_t point, int axis) const { return points_[point * 3 + axis]; }

  int64_t build(int64_t begin, int64_t end) {
    const int64_t id = static_cast<int64_t>(nodes_.size());
    nodes_.push_back({begin, end});
    if (end - begin <= kLeaf) return id;
    int axis = 0;
    double widest = -1.0;
    for (int a = 0; a < 3; ++a) {
      double lo = coord(order_[begin], a), hi = lo;
      for (int64_t x = begin; x < end; ++x) {
        lo = std::min(lo, coord(order_[x], a));
        hi = std::max(hi, coord(order_[x], a));
      }
      if (hi - lo > widest) widest = hi - lo, axis = a;
    }
    const int64_t mid = begin + (end - begin) / 2;
    std::nth_element(order_.begin() + begin, order_.begin() + mid, order_.begin() + end,
                     [&](int32_t x, int32_t y) {
                       return std::pair(coord(x, axis), x) < std::pair(coord(y, axis), y);
                     });
    nodes_[id].axis = axis;
    nodes_[id].split = coord(order_[mid], axis);
    const int64_t left = build(begin, mid);
    const int64_t right = build(mid, end);
    nodes_[id].left = left, nodes_[id].right = right;
    return id;
  }

  void visit(int64_t id, const float* p, int64_t k, Heap& heap) const {
    const Node& node = nodes_[id];
    if (node.axis < 0) {
      for (int64_t x = node.begin; x < node.end; ++x) {
        const int32_t j = order_[x];
        double d2 = 0.0;
        for (int a = 0; a < 3; ++a) {
          const double diff = double(p[a]) - coord(j, a);
          d2 += diff * diff;
        }
        const std::pair<double, int32_t> candidate(d2, j);
        if (static_cast<int64_t>(heap.size()) < k) {
          heap.push(candidate);
        } else if (candidate < heap.top()) {
          heap.pop();
          heap.push(candidate);
        }
      }
      return;
    }
    const double offset = double(p[node.axis]) - node.split;
    const int64_t near = offset < 0 ? node.left : node.right;
    const int64_t far = offset < 0 ? node.right : node.left;
    visit(near, p, k, heap);
    if (static_cast<int64_t>(heap.size()) < k || offset * offset <= heap.top().first)
      visit(far, p, k, heap);
  }

  const float* points_;
  std::vector<int32_t> order_;
  std::vector<Node> nodes_;
};

}  // namespace

void knn(const float* points, int64_t n, int64_t k, int32_t* out, int threads) {
  check(n >= 0 && n < (int64_t{1} << 31), "points",
        "must hold fewer than 2^31 points, got " + std::to_string(n));
  check(k >= 1 && k <= 4096, "k", "must be in [1, 4096], got " + std::to_string(k));
  check(n == 0 || points != nullptr, "points", "is missing (null data)");
  for (int64_t i = 0; i < 3 * n; ++i)
    check(std::isfinite(points[i]), "points",
          "must be finite, got " + std::to_string(points[i]) + " at [" + std::to_string(i / 3) +
              "," + std::to_string(i % 3) + "]");
  const KdTree tree(points, n);
#pragma omp parallel num_threads(effective_threads(threads))
  {
    std::vector<std::pair<double, int32_t>> best;
#pragma omp for schedule(dynamic, 256)
    for (int64_t i = 0; i < n; ++i) {
      tree.query(points + 3 * i, k, best);
      int32_t* row = out + i * k;
      for (int64_t e = 0; e < k; ++e)
        row[e] = e < static_cast<int64_t>(best.size()) ? best[e].second : -1;
    }
  }
}

}  // namespace attnkit
