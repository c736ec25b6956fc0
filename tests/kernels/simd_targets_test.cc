// Every SIMD target compiled into the library (and supported by this CPU) against the reference:
// the kernels dispatch at run time, so the best target alone would hide a broken AVX2 or SSE path.
#include <gtest/gtest.h>

#include <cstdio>
#include <string>

#include "attnkit/attention.h"
#include "hwy/targets.h"
#include "support/attention_check.h"

namespace attnkit {
namespace {

using testing::Problem;

TEST(SimdTargets, DenseCausalAndDecodeOnEveryTarget) {
  const std::vector<int64_t> targets = hwy::SupportedAndGeneratedTargets();
  ASSERT_FALSE(targets.empty());
  std::string names;
  for (int64_t target : targets) names += std::string(" ") + hwy::TargetName(target);
  std::printf("SIMD targets tested:%s\n", names.c_str());
  for (int64_t target : targets) {
    hwy::SetSupportedTargetsForTest(target);
    SCOPED_TRACE(hwy::TargetName(target));
    for (DType dtype : {DType::kF32, DType::kF16}) {
      Problem tile;
      tile.heads_q = 4, tile.heads_kv = 2, tile.nq = 130, tile.nk = 201, tile.dim = 80;
      tile.dim_v = 72, tile.dtype = dtype, tile.causal = true;
      testing::check_problem(tile, [](const AttentionArgs& a) { attention(a); });
      Problem decode;
      decode.heads_q = 8, decode.heads_kv = 2, decode.nq = 3, decode.nk = 2100, decode.dim = 128;
      decode.dim_v = 128, decode.dtype = dtype, decode.causal = true;
      testing::check_problem(decode, [](const AttentionArgs& a) { attention_decode(a); });
    }
  }
  hwy::SetSupportedTargetsForTest(0);  // back to what the CPU supports
}

}  // namespace
}  // namespace attnkit
