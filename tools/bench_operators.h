// `attnkit bench --op ...`: the operators of other shapes (Lightning, SOFT, index lists), timed
// like the attention kernels. bench_main hands over when the arguments name --op.
#pragma once

#include <string>
#include <vector>

namespace attnkit::cli {

extern const char kOperatorBenchUsage[];
int bench_operator_main(const std::vector<std::string>& argv);

}  // namespace attnkit::cli
