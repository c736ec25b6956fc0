// Routing Transformer's content-based routing (see routing.cc for the rule and choices),
// exposed so tests can rebuild the expected output cluster by cluster.
#pragma once

#include <cstdint>
#include <vector>

#include "attnkit/attention.h"

namespace attnkit::routing {

// Members of every cluster, ascending token positions.
struct Clusters {
  std::vector<std::vector<int32_t>> queries, keys;
};

struct RoutingParams {
  int64_t clusters = 0;  // 0: max(1, Nk / window)
  int64_t window = 512;  // tokens routed to each cluster (top-w by similarity)
  int64_t iters = 4;     // spherical k-means iterations on the input
  int64_t first_head = 0;  // query heads h < first_head are not routed (empty Clusters): the
                           // local heads of the head split
};

// Number of clusters actually used for Nk keys.
int64_t cluster_count(const RoutingParams& p, int64_t nk);
// Clusters per (b, query head), index b * Hq + h; parallel over (b, h). Heads below
// p.first_head get empty Clusters.
std::vector<Clusters> route(const AttentionArgs& args, const RoutingParams& p);

}  // namespace attnkit::routing
