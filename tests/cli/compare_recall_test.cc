// `attnkit compare` with no --pattern (the job `make run` runs) and `attnkit recall`, end to end:
// densities against pair counts computed here from each rule, exact patterns against exact
// fidelity, and the default sets' contents.
#include <gtest/gtest.h>

#include <algorithm>
#include <set>
#include <string>
#include <vector>

#include "support/cli_runner.h"
#include "support/json_parse.h"

namespace attnkit::testing {
namespace {

// Pairs of an N x N causal rule whose row p sees `visible(p)` keys, as a density.
template <class Visible>
double density(int64_t n, Visible visible) {
  double pairs = 0;
  for (int64_t p = 0; p < n; ++p) pairs += visible(p);
  return pairs / (double(n) * n);
}

TEST(CliCompare, DefaultSetIsTheMakeRunJob) {
  const CliResult r = run_cli({"compare", "--reps", "1", "--json"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const JsonValue v = parse_json(r.out);
  const auto& results = v["results"].items;
  std::set<std::string> kinds;
  for (const JsonValue& row : results) {
    const std::string spec = row["pattern"].text;
    kinds.insert(spec.substr(0, spec.find(':')));
    EXPECT_GT(row["density"].number, 0.0) << spec;
    EXPECT_LE(row["density"].number, 1.0) << spec;
    EXPECT_GE(row["rel_l2_error"].number, 0.0) << spec;
    EXPECT_GT(row["speedup"].number, 0.0) << spec;
    // Routing's official ln logits are LN(q).LN(k), not the dense scores: recall, the dense
    // softmax mass a pattern keeps, does not measure it.
    if (spec.find("logits=ln") != std::string::npos) continue;
    EXPECT_GT(row["recall_mean"].number, 0.0) << spec;
    EXPECT_LE(row["recall_mean"].number, 1.0 + 1e-6) << spec;
    EXPECT_LE(row["recall_min"].number, row["recall_mean"].number + 1e-12) << spec;
  }
  // The static rules of the seed papers and the content planners, as the usage text says.
  for (const char* kind : {"causal", "window", "dilated", "streaming", "power", "s2attn", "sf_attn",
                           "ssa", "topk_oracle", "infllm_v2", "hip", "dhsa", "hyper", "routing"})
    EXPECT_EQ(kinds.count(kind), 1u) << kind;
  const int64_t n = 4096;  // the default synthetic input
  auto row_of = [&](const std::string& spec) {
    const auto it = std::find_if(results.begin(), results.end(),
                                 [&](const JsonValue& row) { return row["pattern"].text == spec; });
    EXPECT_NE(it, results.end()) << spec;
    return it == results.end() ? JsonValue{} : *it;
  };
  const JsonValue causal = row_of("causal");
  EXPECT_DOUBLE_EQ(causal["density"].number, density(n, [](int64_t p) { return p + 1; }));
  EXPECT_LT(causal["rel_l2_error"].number, 1e-5);
  EXPECT_NEAR(causal["recall_min"].number, 1.0, 1e-5);
  EXPECT_DOUBLE_EQ(row_of("window:size=512")["density"].number,
                   density(n, [](int64_t p) { return std::min<int64_t>(p + 1, 512); }));
  EXPECT_DOUBLE_EQ(row_of("streaming:sinks=4,window=512")["density"].number,
                   density(n, [](int64_t p) {
                     return std::min<int64_t>(p + 1, 512) +
                            std::clamp<int64_t>(p - 511, 0, 4);  // sinks outside the window
                   }));
}

TEST(CliRecall, DefaultPlannersAndExactRules) {
  const CliResult r = run_cli({"recall", "--n", "1024", "--threads", "1", "--json"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  std::vector<JsonValue> rows;
  for (size_t at = 0, end; at < r.out.size(); at = end + 1) {
    end = r.out.find('\n', at);
    if (end == std::string::npos) end = r.out.size();
    if (end > at) rows.push_back(parse_json(r.out.substr(at, end - at)));
  }
  ASSERT_EQ(rows.size(), 3u) << r.out;
  EXPECT_EQ(rows[0]["pattern"].text.rfind("topk_oracle:", 0), 0u);
  EXPECT_EQ(rows[1]["pattern"].text.rfind("infllm_v2:", 0), 0u);
  EXPECT_EQ(rows[2]["pattern"].text.rfind("hip:", 0), 0u);
  for (const JsonValue& row : rows) {
    EXPECT_GT(row["recall"].number, 0.0);
    EXPECT_LE(row["recall"].number, 1.0 + 1e-6);
    EXPECT_LE(row["min_recall"].number, row["recall"].number);
  }
  // The oracle's budget is the block count giving --density 0.1 of the causal pairs' area.
  EXPECT_NEAR(rows[0]["density"].number, 0.1, 0.01);
  // The block oracle keeps the heaviest blocks: no planner at its budget recalls more.
  EXPECT_GE(rows[0]["recall"].number, rows[1]["recall"].number);

  const CliResult exact = run_cli({"recall", "--n", "1024", "--threads", "1", "--json", "--pattern",
                                   "causal", "--pattern", "window:size=128"});
  ASSERT_EQ(exact.exit_code, 0) << exact.err;
  const size_t split = exact.out.find('\n');
  const JsonValue causal = parse_json(exact.out.substr(0, split));
  const JsonValue window = parse_json(exact.out.substr(split + 1));
  EXPECT_NEAR(causal["recall"].number, 1.0, 1e-6);
  EXPECT_NEAR(causal["min_recall"].number, 1.0, 1e-6);
  EXPECT_LT(causal["rel_l2"].number, 1e-5);
  EXPECT_DOUBLE_EQ(causal["density"].number, density(1024, [](int64_t p) { return p + 1; }));
  EXPECT_DOUBLE_EQ(window["density"].number,
                   density(1024, [](int64_t p) { return std::min<int64_t>(p + 1, 128); }));
  EXPECT_LT(window["recall"].number, 1.0);
}

}  // namespace
}  // namespace attnkit::testing
