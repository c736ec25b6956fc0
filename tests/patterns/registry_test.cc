// Spec strings, parameters, defaults and errors of the pattern registry.
#include <gtest/gtest.h>

#include "attnkit/error.h"
#include "attnkit/pattern.h"

namespace attnkit {
namespace {

std::string error_of(const std::string& spec) {
  try {
    make_pattern(spec);
  } catch (const Error& e) {
    EXPECT_EQ(e.argument(), "pattern");
    return e.what();
  }
  return "no error";
}

TEST(PatternsRegistry, SpecsAndDefaults) {
  EXPECT_EQ(make_pattern("power")->spec(), "power:block=256,window=5");
  EXPECT_EQ(make_pattern("power:window=3")->spec(), "power:block=256,window=3");
  EXPECT_EQ(make_pattern("power:")->spec(), "power:block=256,window=5");
  EXPECT_EQ(make_pattern("causal")->spec(), "causal");
  EXPECT_EQ(make_pattern("document:lengths=10+20")->spec(), "document:lengths=10+20");
  EXPECT_EQ(make_pattern("streaming:window=9,sinks=1")->spec(), "streaming:sinks=1,window=9");
}

TEST(PatternsRegistry, ClearErrors) {
  const std::string unknown = error_of("foo:x=1");
  EXPECT_NE(unknown.find("pattern: unknown pattern 'foo' (known: "), std::string::npos) << unknown;
  EXPECT_NE(unknown.find("causal"), std::string::npos);
  EXPECT_EQ(error_of("power:x=1"),
            "pattern: 'power' has no parameter 'x' (parameters: block, window)");
  EXPECT_NE(error_of("causal:x=1").find("takes no parameters"), std::string::npos);
  EXPECT_NE(error_of("power:block=abc").find("must be an integer in [1, 1073741824], got 'abc'"),
            std::string::npos);
  EXPECT_NE(error_of("power:block=1.5").find("must be an integer"), std::string::npos);
  EXPECT_NE(error_of("window:size=0").find("must be an integer in [1, "), std::string::npos);
  EXPECT_NE(error_of("hip:block_q=40").find("a positive multiple of 16"), std::string::npos);
  EXPECT_NE(error_of("radial:model=sora").find("must be one of hunyuan, wan, got 'sora'"),
            std::string::npos);
  EXPECT_NE(error_of("radial:decay=nan").find("must be a number in"), std::string::npos);
  EXPECT_NE(error_of("power:block=4,block=5").find("given twice"), std::string::npos);
  EXPECT_NE(error_of("power:block").find("expected key=value"), std::string::npos);
  EXPECT_NE(error_of("power:block=4,").find("expected key=value"), std::string::npos);
  EXPECT_NE(error_of("power:block=").find("has no value"), std::string::npos);
  EXPECT_NE(error_of("document:lengths=3+x").find("lengths"), std::string::npos);
  EXPECT_NE(error_of("document:lengths=0").find("lengths"), std::string::npos);
  EXPECT_NE(error_of("").find("empty"), std::string::npos);
}

TEST(PatternsRegistry, EveryPatternListedAndRoundTrips) {
  const auto infos = list_patterns();
  std::vector<std::string> names;
  for (const auto& info : infos) {
    names.push_back(info.name);
    EXPECT_FALSE(info.paper.empty()) << info.name;
    EXPECT_FALSE(info.summary.empty()) << info.name;
    const auto pattern = make_pattern(info.name);
    EXPECT_EQ(pattern->name(), info.name);
    EXPECT_EQ(make_pattern(pattern->spec())->spec(), pattern->spec());
  }
  EXPECT_TRUE(std::is_sorted(names.begin(), names.end()));
  // Exactly the patterns with tests of their own (tests/patterns/): a new registration must be
  // added here, next to its tests; PatternWalk runs every registered one against the reference.
  EXPECT_EQ(names, (std::vector<std::string>{
                       "causal", "dhsa",      "dilated",     "document", "h2o",      "halo2d",
                       "hip",    "hyper",     "infllm_v2",   "natten1d", "natten2d", "natten3d",
                       "power",  "prefix_lm", "radial",      "routing",  "s2attn",   "sf_attn",
                       "ssa",    "streaming", "topk_oracle", "window"}));
}

}  // namespace
}  // namespace attnkit
