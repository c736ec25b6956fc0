// Routing Transformer's content-based routing (see routing.cc for the rule and choices),
// exposed so tests can rebuild the expected output cluster by cluster.
#pragma once

#include <cstdint>
#include <vector>

#include "attnkit/pattern.h"

namespace attnkit::dynamic_patterns {

// Members of every cluster, ascending token positions.
struct RoutingClusters {
  std::vector<std::vector<int32_t>> queries, keys;
};

struct RoutingParams {
  int64_t clusters = 0;    // 0: max(1, Nk / window)
  int64_t window = 512;    // tokens routed to each cluster (top-w by similarity)
  int64_t iters = 4;       // spherical k-means iterations on the input
  int64_t first_head = 0;  // query heads h < first_head are not routed (empty clusters): the
                           // local heads of the head split
  bool share_qk = false;   // keys are the queries (K = Q, one routing), as the official decoder
};

// Number of clusters actually used for Nk keys.
int64_t routing_cluster_count(const RoutingParams& p, int64_t nk);
// Clusters per (b, query head), index b * Hq + h; parallel over (b, h). Heads below
// p.first_head get empty clusters. With share_qk the keys are the queries of head h.
std::vector<RoutingClusters> route(const PlanInputs& inputs, const RoutingParams& p);

}  // namespace attnkit::dynamic_patterns
