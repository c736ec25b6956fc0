// Bounded planning: parameters beyond what the input allows are refused with an error naming the
// pattern (before any heavy work), and the extreme values that are accepted plan and run to the
// end on a small input. Plan-to-attention time ratios of the same worst cases are measured by
// bench/bounded_planning.sh (BENCHMARKS.md), not here: tests never assert on time.
#include <gtest/gtest.h>

#include <cmath>
#include <string>

#include "attnkit/error.h"
#include "attnkit/pattern.h"
#include "support/attention_check.h"

namespace attnkit::testing {
namespace {

// Refused when parsed or when planned for 256 tokens; the argument is always "pattern".
TEST(BoundedPlanning, AbsurdParametersAreRefused) {
  Problem p;
  p.heads_q = 2, p.heads_kv = 1, p.nq = 256, p.nk = 256, p.dim = 16, p.dim_v = 16;
  Inputs in = make_inputs(p);
  for (const char* spec :
       {"routing:clusters=100000", "routing:clusters=200,window=256", "routing:clusters=17",

        "routing:iters=1000", "ssa:block=1", "hyper:block=1", "hyper:samples=1000000",
        "hyper:min_seq=1", "hyper:samples=512,min_seq=256", "hip:block_k=2048",
        "hip:block_k=4,stride_k=5", "window:size=2199023255553", "infllm_v2:block=8",
        "natten1d:kernel=257", "radial:frames=7"}) {
    try {
      make_pattern(spec)->run(in.args());
      ADD_FAILURE() << spec << " was accepted";
    } catch (const Error& e) {
      EXPECT_EQ(e.argument(), "pattern") << spec << ": " << e.what();
      const std::string name = std::string(spec).substr(0, std::string(spec).find(':'));
      EXPECT_NE(e.message().find(name), std::string::npos) << "names the pattern: " << e.what();
    }
  }
}

// The largest accepted values, on 2048 tokens: every plan is valid and every run ends with
// finite outputs.
TEST(BoundedPlanning, ExtremeAcceptedParametersFinish) {
  Problem p;
  p.heads_q = 2, p.heads_kv = 1, p.nq = 2048, p.nk = 2048, p.dim = 16, p.dim_v = 16;
  p.causal = true;
  Inputs in = make_inputs(p);
  for (const char* spec : {
           "window:size=1099511627776",
           "streaming:sinks=1099511627776,window=1",
           "dilated:size=1073741824,dilation=1048576",
           "document:lengths=1",
           "power:block=1,window=0",
           "s2attn:groups=1073741824",
           "sf_attn:groups=1073741824,sinks=1099511627776",
           "ssa:ratio=1,block=16,ensemble=64",
           "radial:frames=512,frame_tokens=4,min_width=1",
           "natten1d:kernel=2048",
           "natten1d:kernel=2,dilation=1024",
           "natten2d:height=32,width=64,kernel=1,dilation=32",
           "halo2d:height=32,width=64,block=1,halo=1073741824",
           "topk_oracle:budget=16777216,block=16",
           "infllm_v2:dense_len=0,kernel=1,stride=1,lse_kernel=1,lse_stride=1,block=16,"
           "init=16777216,local=16777216,topk=16777216,granularity=token",
           "hip:k=1,block_q=16,stride_q=1,block_k=1,kv_block=16",
           "hip:k=1073741824,block_q=16,stride_q=65536,block_k=1024,stride_k=1024",
           "dhsa:block=16,budget=1,local=0,window=1048576,nms=0,beta=1048576",
           "dhsa:block=16,budget=1099511627776,nms=1048576",
           "hyper:projs=16,block=16,samples=16,min_seq=16",
           "routing:clusters=128,window=1,iters=15",
           "routing:clusters=1,window=4096,iters=100",
       }) {
    SCOPED_TRACE(spec);
    const auto pattern = make_pattern(spec);
    AttentionArgs a = in.args();
    a.causal = true;
    const Plan plan = pattern->plan(PlanInputs::of(a));
    ASSERT_NO_THROW(plan.mask.validate());
    const RunStats stats = pattern->run(a);
    EXPECT_TRUE(std::isfinite(stats.density));
    int64_t bad = 0;
    for (int64_t e = 0; e < in.out.numel(); ++e) bad += !std::isfinite(in.out.f32()[e]);
    EXPECT_EQ(bad, 0);
  }
}

}  // namespace
}  // namespace attnkit::testing
