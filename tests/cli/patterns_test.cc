// The `patterns`, `mask` and `compare` sub-commands, run as the real binary.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstring>

#include "attnkit/npy.h"
#include "attnkit/pattern.h"
#include "eval/inputs.h"
#include "support/cli_runner.h"
#include "support/json_parse.h"

namespace attnkit::testing {
namespace {

TEST(CliPatterns, ListsEveryPatternWithDefaults) {
  const CliResult text = run_cli({"patterns"});
  ASSERT_EQ(text.exit_code, 0) << text.err;
  for (const char* line :
       {"causal\n", "power:block=256,window=5\n", "window:size=512\n",
        "ssa:ratio=4,seed=0,block=64,ensemble=1\n", "sf_attn:groups=4,sinks=4,causal=1\n"})
    EXPECT_NE(text.out.find(line), std::string::npos) << line;
  const CliResult json = run_cli({"patterns", "--json"});
  ASSERT_EQ(json.exit_code, 0) << json.err;
  const JsonValue v = parse_json(json.out);
  const auto& list = v["patterns"].items;
  ASSERT_GE(list.size(), 10u);
  bool found = false;
  for (const auto& p : list) {
    EXPECT_FALSE(p["paper"].text.empty());
    if (p["name"].text != "power") continue;
    found = true;
    EXPECT_EQ(p["spec"].text, "power:block=256,window=5");
    ASSERT_EQ(p["params"].items.size(), 2u);
    EXPECT_EQ(p["params"].items[0]["name"].text, "block");
    EXPECT_EQ(p["params"].items[0]["default"].text, "256");
    EXPECT_EQ(p["params"].items[0]["accepts"].text, "[1, 2^30]");
    EXPECT_EQ(p["family"].text, "static");
    EXPECT_EQ(p["direction"].text, "causal");
  }
  EXPECT_TRUE(found);
}

TEST(CliMask, AsciiDumpAndPng) {
  TempDir dir;
  const CliResult r =
      run_cli({"mask", "--pattern", "window:size=70", "--nq", "150", "--nk", "200", "--heads", "2",
               "--dump", dir.path("m.npy"), "--png", dir.path("m.png")});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  // 3 query blocks x 4 kv blocks; query 0 is at position 50.
  EXPECT_NE(r.out.find("\n++..\n+++.\n.+++\n"), std::string::npos) << r.out;
  // The dump: header, then uint8 [2, 150, 200] equal to the rule, both heads.
  const std::string npy = read_file(dir.path("m.npy"));
  EXPECT_NE(npy.find("'descr': '|u1'"), std::string::npos);
  EXPECT_NE(npy.find("(2, 150, 200)"), std::string::npos);
  ASSERT_GE(npy.size(), 2u * 150 * 200);
  const std::string data = npy.substr(npy.size() - 2 * 150 * 200);
  int64_t bad = 0;
  for (int64_t h = 0; h < 2; ++h)
    for (int64_t i = 0; i < 150; ++i)
      for (int64_t j = 0; j < 200; ++j) {
        const int64_t p = i + 50;
        bad += data[(h * 150 + i) * 200 + j] != char(j <= p && j > p - 70);
      }
  EXPECT_EQ(bad, 0);
  const std::string png = read_file(dir.path("m.png"));
  EXPECT_EQ(png.substr(1, 3), "PNG");
  EXPECT_EQ(dir.list(), (std::vector<std::string>{"m.npy", "m.png"}));
}

// A grid pattern shows the plan it runs: its box-order block mask, and the dump in token order.
TEST(CliMask, GridPlanInBoxOrderDumpInTokenOrder) {
  TempDir dir;
  // Dilation 2 splits the grid into four groups: never the identity order.
  const CliResult r = run_cli({"mask", "--pattern", "natten2d:kernel=3,dilation=2", "--nq", "256",
                               "--nk", "256", "--dump", dir.path("m.npy")});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("(box order)"), std::string::npos) << r.out;
  const std::string npy = read_file(dir.path("m.npy"));
  const std::string data = npy.substr(npy.size() - 256 * 256);
  int64_t bad = 0;
  for (int64_t i = 0; i < 256; ++i)
    for (int64_t j = 0; j < 256; ++j) {
      const int64_t yi = i / 16, xi = i % 16, yj = j / 16, xj = j % 16;
      const auto seen = [](int64_t a, int64_t b) {  // kernel 3 on a group of 8, clamped
        const int64_t start = std::clamp<int64_t>(a / 2 - 1, 0, 5);
        return a % 2 == b % 2 && b / 2 >= start && b / 2 < start + 3;
      };
      bad += data[i * 256 + j] != char(seen(yi, yj) && seen(xi, xj));
    }
  EXPECT_EQ(bad, 0);
}

TEST(CliMask, CleanErrors) {
  TempDir dir;
  // Parameters beyond the input are refused at once (this one planned for minutes before).
  EXPECT_TRUE(IsCleanError(
      run_cli({"mask", "--pattern", "routing:clusters=100000", "--nq", "256", "--nk", "256"}),
      "--pattern"));
  EXPECT_TRUE(
      IsCleanError(run_cli({"mask", "--pattern", "nope", "--nq", "4", "--nk", "4"}), "--pattern"));
  EXPECT_TRUE(IsCleanError(run_cli({"mask", "--pattern", "power:x=1", "--nq", "4", "--nk", "4"}),
                           "--pattern"));
  EXPECT_TRUE(
      IsCleanError(run_cli({"mask", "--pattern", "causal", "--nq", "0", "--nk", "4"}), "--nq"));
  EXPECT_TRUE(IsCleanError(run_cli({"mask", "--pattern", "causal", "--nq", "1000000", "--nk",
                                    "1000000", "--dump", dir.path("big.npy")}),
                           "--dump"));
  EXPECT_TRUE(dir.list().empty());
}

TEST(CliCompare, JsonOnSyntheticInput) {
  const CliResult r = run_cli({"compare", "--n", "300", "--heads", "2", "--d", "32", "--reps", "1",
                               "--pattern", "causal", "--pattern", "window:size=64", "--json"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const JsonValue v = parse_json(r.out);
  const auto& results = v["results"].items;
  ASSERT_EQ(results.size(), 2u);
  for (const char* key :
       {"pattern", "params", "direction", "causal", "density", "seconds", "plan_seconds",
        "dense_seconds", "speedup", "rel_l2_error", "recall_mean", "recall_min"})
    EXPECT_TRUE(results[0].has(key)) << key;
  EXPECT_GT(results[0]["dense_seconds"].number, 0.0);
  // Both rules look back by themselves: run as they are, judged against causal attention.
  EXPECT_EQ(results[0]["direction"].text, "rule:causal");
  EXPECT_FALSE(results[0]["causal"].boolean);
  EXPECT_EQ(results[1]["params"].text, "custom");
  // causal against the causal dense result: exact.
  EXPECT_EQ(results[0]["pattern"].text, "causal");
  EXPECT_NEAR(results[0]["density"].number, 300.0 * 301 / 2 / (300.0 * 300), 1e-12);
  EXPECT_LT(results[0]["rel_l2_error"].number, 1e-5);
  EXPECT_NEAR(results[0]["recall_min"].number, 1.0, 1e-5);
  // window: fewer pairs, some mass lost, never more than all of it.
  EXPECT_EQ(results[1]["pattern"].text, "window:size=64");
  EXPECT_LT(results[1]["density"].number, results[0]["density"].number);
  EXPECT_GT(results[1]["rel_l2_error"].number, 1e-4);
  EXPECT_LT(results[1]["recall_mean"].number, 1.0);
  EXPECT_GT(results[1]["recall_min"].number, 0.0);
  EXPECT_LE(results[1]["recall_min"].number, results[1]["recall_mean"].number);
}

// Each pattern in its paper's direction: a bidirectional rule runs non-causal (judged against
// bidirectional dense attention), a content planner causal; --causal ANDs causality into both.
TEST(CliCompare, DirectionsFollowThePapers) {
  const std::vector<std::string> common = {
      "compare",   "--n",     "256", "--heads", "2",         "--d",
      "16",        "--reps",  "1",   "--json",  "--pattern", "natten1d:kernel=33",
      "--pattern", "hip:k=64"};
  const CliResult paper = run_cli(common);
  ASSERT_EQ(paper.exit_code, 0) << paper.err;
  const JsonValue paper_json = parse_json(paper.out);
  const auto& rows = paper_json["results"].items;
  ASSERT_EQ(rows.size(), 2u);
  EXPECT_EQ(rows[0]["direction"].text, "rule:bidirectional");
  EXPECT_FALSE(rows[0]["causal"].boolean);
  EXPECT_NEAR(rows[0]["density"].number, 33.0 / 256, 1e-12);  // 33 keys per query, both ways
  EXPECT_EQ(rows[1]["direction"].text, "causal");
  EXPECT_TRUE(rows[1]["causal"].boolean);
  std::vector<std::string> forced = common;
  forced.push_back("--causal");
  const CliResult anded = run_cli(forced);
  ASSERT_EQ(anded.exit_code, 0) << anded.err;
  const JsonValue anded_json = parse_json(anded.out);
  const auto& rows2 = anded_json["results"].items;
  EXPECT_EQ(rows2[0]["direction"].text, "rule:bidirectional+causal");
  EXPECT_LT(rows2[0]["density"].number, rows[0]["density"].number);
  forced.push_back("--non-causal");
  EXPECT_EQ(run_cli(forced).exit_code, 2);
}

// --paper-defaults: every registered pattern at its defaults; those that cannot serve the input
// (natten2d needs a square N) are listed as skipped, with the reason.
TEST(CliCompare, PaperDefaultsCoverTheRegistry) {
  const CliResult r = run_cli({"compare", "--n", "512", "--heads", "2", "--d", "16", "--reps", "1",
                               "--paper-defaults", "--json"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const JsonValue v = parse_json(r.out);
  const size_t listed = v["results"].items.size() + v["skipped"].items.size();
  EXPECT_EQ(listed, list_patterns().size());
  for (const auto& row : v["results"].items) EXPECT_EQ(row["params"].text, "paper");
  bool natten2d_skipped = false;
  for (const auto& s : v["skipped"].items)
    natten2d_skipped |= s["pattern"].text.rfind("natten2d", 0) == 0 &&
                        s["reason"].text.find("square") != std::string::npos;
  EXPECT_TRUE(natten2d_skipped) << r.out;
}

TEST(CliCompare, TableFromFilesAndErrors) {
  TempDir dir;
  write_npy(dir.path("q.npy"), random_normal({1, 2, 70, 16}, DType::kF32, 1), "q");
  write_npy(dir.path("k.npy"), random_normal({1, 1, 90, 16}, DType::kF32, 2), "k");
  write_npy(dir.path("v.npy"), random_normal({1, 1, 90, 16}, DType::kF32, 3), "v");
  const CliResult r =
      run_cli({"compare", "--q", dir.path("q.npy"), "--k", dir.path("k.npy"), "--v",
               dir.path("v.npy"), "--reps", "1", "--pattern", "streaming:sinks=2,window=20"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("streaming:sinks=2,window=20"), std::string::npos);
  EXPECT_NE(r.out.find("recall_mean"), std::string::npos);
  EXPECT_TRUE(IsCleanError(run_cli({"compare", "--n", "64", "--pattern", "bogus"}), "--pattern"));
  EXPECT_TRUE(IsCleanError(run_cli({"compare", "--q", dir.path("q.npy"), "--k", dir.path("k.npy")}),
                           "--v"));
  EXPECT_TRUE(IsCleanError(run_cli({"compare", "--q", dir.path("q.npy"), "--k", dir.path("k.npy"),
                                    "--v", dir.path("v.npy"), "--n", "5"}),
                           "--n"));
}

}  // namespace
}  // namespace attnkit::testing
