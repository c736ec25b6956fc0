// Routing Transformer's per-cluster attention, forward and backward (routing.cc plans the clusters
// and runs the local heads; the rules and choices are in its header comment).
#pragma once

#include <cstdint>
#include <vector>

#include "attnkit/attention.h"
#include "patterns/dynamic/routing.h"

namespace attnkit::dynamic_patterns {

// How the routed heads attend inside their clusters.
struct ClusterAttention {
  int64_t first_head = 0;  // query heads before it are local (not routed)
  int64_t clusters = 1;    // per (batch, head)
  bool layer_norm = true;  // logits LN(q) . LN(k) without a scale; else scale * q . k
  bool share_qk = false;   // keys are the queries
};

// O of a routed query: the mean of its clusters' outputs; LSE: the largest of their LSEs.
void clusters_forward(const AttentionArgs& args, const std::vector<RoutingClusters>& clusters,
                      const ClusterAttention& how);
// Its backward with the clusters held constant: dQ of the routed heads into args.dq; dK and dV per
// (b, query head) into head_dk [B*Hq][Nk][D] and head_dv [B*Hq][Nk][Dv] (added to).
void clusters_backward(const BackwardArgs& args, const std::vector<RoutingClusters>& clusters,
                       const ClusterAttention& how, std::vector<float>* head_dk,
                       std::vector<float>* head_dv);

// Causality by original positions inside one cluster: row r sees the first limit[r] keys.
BlockMask staircase_mask(const std::vector<int64_t>& limit, int64_t nk);

}  // namespace attnkit::dynamic_patterns
