// `attnkit bench --context-parallel ...` under mpirun: context-parallel attention timed per rank.
// bench_main hands over when the arguments name --context-parallel.
#pragma once

#include <string>
#include <vector>

namespace attnkit::cli {

extern const char kContextBenchUsage[];
int bench_context_parallel_main(const std::vector<std::string>& argv);

}  // namespace attnkit::cli
