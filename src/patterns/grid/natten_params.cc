#include "patterns/grid/natten_params.h"

#include <string>

#include "attnkit/error.h"
#include "patterns/grid/grid_pattern.h"
#include "patterns/static/interval_rule.h"

namespace attnkit::grid {
namespace {

const char* kAxisName[3][3] = {
    {"length", "", ""}, {"height", "width", ""}, {"depth", "height", "width"}};
const char* kAxisSuffix[3][3] = {{"", "", ""}, {"h", "w", ""}, {"d", "h", "w"}};

std::string pattern_name(int ndim) { return "natten" + std::to_string(ndim) + "d"; }

}  // namespace

std::vector<PatternParam> natten_param_list(int ndim) {
  std::vector<PatternParam> list;
  if (ndim > 1) {
    for (int a = 0; a < ndim; ++a) {
      list.push_back({kAxisName[ndim - 1][a], "0",
                      std::string("grid ") + kAxisName[ndim - 1][a] + "; 0 = derived from N"});
    }
  }
  list.push_back({"kernel", "7", "neighbourhood size per axis (keys seen along each axis)"});
  list.push_back({"dilation", "1", "gap between neighbours; tokens split into dilation groups"});
  list.push_back({"causal", "0", "1: the kernel most recent positions per axis, self included"});
  if (ndim > 1) {
    for (const char* key : {"kernel", "dilation", "causal"}) {
      for (int a = 0; a < ndim; ++a) {
        list.push_back(
            {std::string(key) + "_" + kAxisSuffix[ndim - 1][a], "-1",
             std::string(key) + " along " + kAxisName[ndim - 1][a] + "; -1 = the shared value"});
      }
    }
  }
  return list;
}

std::unique_ptr<Pattern> make_natten(const PatternParams& params, int ndim) {
  const std::string name = pattern_name(ndim);
  using patterns::int_param;
  const int64_t kMax = int64_t{1} << 30;
  const int64_t kernel = int_param(params, name, "kernel", 1, kMax);
  const int64_t dilation = int_param(params, name, "dilation", 1, kMax);
  const int64_t causal = int_param(params, name, "causal", 0, 1);
  GridTemplate gt;
  gt.pattern_name = name;
  gt.grid.ndim = ndim;
  for (int a = 0; a < ndim; ++a) {
    gt.axis_names[a] = kAxisName[ndim - 1][a];
    AxisRule& rule = gt.grid.axis[a];
    rule.kind = AxisRule::Kind::kNatten;
    rule.length = ndim > 1 ? int_param(params, name, gt.axis_names[a], 0, kMax) : 0;
    rule.kernel = kernel;
    rule.dilation = dilation;
    rule.causal = causal != 0;
    if (ndim > 1) {
      const std::string suffix = std::string("_") + kAxisSuffix[ndim - 1][a];
      const int64_t k = int_param(params, name, "kernel" + suffix, -1, kMax);
      const int64_t d = int_param(params, name, "dilation" + suffix, -1, kMax);
      const int64_t c = int_param(params, name, "causal" + suffix, -1, 1);
      check(k != 0 && d != 0, "--pattern",
            "'" + name + "' parameters kernel" + suffix + " and dilation" + suffix +
                " must be >= 1 (or -1 for the shared value)");
      if (k > 0) rule.kernel = k;
      if (d > 0) rule.dilation = d;
      if (c >= 0) rule.causal = c != 0;
    }
  }
  return std::make_unique<GridPattern>(gt, name + ":" + params.canonical());
}

}  // namespace attnkit::grid
