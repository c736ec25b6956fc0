// What attnkit.torch's context-parallel ring needs from the C++ core: the shard layouts, the
// alignment a pattern asks of them, and, per pair of shards, what attention runs (the pattern's
// part of its global mask, in the pair's coordinates). The ring itself is Python over
// torch.distributed (python/attnkit/distributed.py).
#include <nanobind/nanobind.h>
#include <nanobind/stl/pair.h>
#include <nanobind/stl/shared_ptr.h>
#include <nanobind/stl/string.h>
#include <nanobind/stl/tuple.h>
#include <nanobind/stl/vector.h>

#include <memory>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "attnkit/distributed.h"
#include "distributed/shard_pairs.h"
#include "ext_views.h"

namespace attnkit::python {
namespace {

using namespace nb::literals;

std::unique_ptr<Pattern> pattern_or_null(const std::string& spec) {
  return spec.empty() ? nullptr : make_pattern(spec);
}

std::vector<std::pair<int64_t, int64_t>> shard_ranges(const std::string& scheme, int64_t n,
                                                      int rank, int size, int64_t align) {
  std::vector<std::pair<int64_t, int64_t>> out;
  for (const TokenRange& r : context_shard(parse_context_scheme(scheme, "scheme"), n, rank, size,
                                           align))
    out.emplace_back(r.start, r.end);
  return out;
}

int64_t alignment(const std::string& spec, int64_t n) {
  const std::unique_ptr<Pattern> pattern = pattern_or_null(spec);
  return context_alignment(pattern.get(), n);
}

// One planner per (pattern, shapes, causal) of a ring: plan(q, k) -> (kind, mask or None), kind
// 0 skip, 1 full, 2 diagonal (causal within equal ranges).
class PyPairPlanner {
 public:
  PyPairPlanner(const std::string& spec, int64_t batch, int64_t heads_q, int64_t heads_kv,
                int64_t n, int64_t dim, bool causal)
      : pattern_(pattern_or_null(spec)),
        planner_(pattern_.get(), batch, heads_q, heads_kv, n, dim, causal) {}
  std::tuple<int, std::shared_ptr<Mask>> plan(int64_t q0, int64_t q1, int64_t k0, int64_t k1) {
    PairPlan p = planner_.plan({q0, q1}, {k0, k1});
    std::shared_ptr<Mask> mask;
    if (p.mask) {
      mask = std::make_shared<Mask>();
      mask->plan.mask = std::move(*p.mask);
    }
    return {static_cast<int>(p.kind), mask};
  }

 private:
  std::unique_ptr<Pattern> pattern_;
  PairPlanner planner_;
};

}  // namespace

void bind_distributed(nb::module_& m) {
  m.def("context_shard", &shard_ranges, "scheme"_a, "n"_a, "rank"_a, "size"_a, "align"_a);
  m.def("context_alignment", &alignment, "pattern"_a, "n"_a);
  nb::class_<PyPairPlanner>(m, "PairPlanner")
      .def(nb::init<const std::string&, int64_t, int64_t, int64_t, int64_t, int64_t, bool>(),
           "pattern"_a, "batch"_a, "heads_q"_a, "heads_kv"_a, "n"_a, "dim"_a, "causal"_a)
      .def("plan", &PyPairPlanner::plan, "q0"_a, "q1"_a, "k0"_a, "k1"_a);
}

}  // namespace attnkit::python
