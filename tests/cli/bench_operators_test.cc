// `attnkit bench --op lightning|soft|index`: the JSON contract (work counted as documented,
// fraction of the peak measured in the same run, --backward and --vs-dense fields) and clean
// errors for bad flags.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "support/cli_runner.h"
#include "support/json_parse.h"

namespace attnkit {
namespace {

using testing::CliResult;
using testing::IsCleanError;
using testing::JsonValue;
using testing::run_cli;

JsonValue op_json(const std::vector<std::string>& flags) {
  std::vector<std::string> args = {"bench", "--json", "--reps", "1", "--threads", "1"};
  args.insert(args.end(), flags.begin(), flags.end());
  const CliResult result = run_cli(args);
  EXPECT_EQ(result.exit_code, 0) << result.err;
  EXPECT_EQ(testing::count_lines(result.out), 1) << result.out;
  const JsonValue json = testing::parse_json(result.out);
  for (const char* field : {"seconds", "gflops", "peak_gflops", "fraction_of_peak"})
    EXPECT_TRUE(json.has(field) && json[field].is_number()) << field << " in " << result.out;
  return json;
}

TEST(CliBenchOperators, LightningCountsItsBlocks) {
  // N = 70 in blocks of 32: 32, 32, 6 tokens; per block 2 L^2 (D + E) + 4 L D E.
  const JsonValue json = op_json({"--op", "lightning", "--n", "70", "--d", "8", "--dv", "4",
                                  "--heads", "3", "--batch", "2", "--block", "32", "--backward",
                                  "--vs-dense"});
  double flops = 0;
  for (double len : {32.0, 32.0, 6.0}) flops += 2 * len * len * (8 + 4) + 4 * len * 8 * 4;
  flops *= 2 * 3;
  EXPECT_NEAR(json["gflops"].number, flops / json["seconds"].number / 1e9,
              1e-6 * json["gflops"].number);
  EXPECT_EQ(json["params"]["block"].number, 32);
  for (const char* field : {"backward_seconds", "backward_gflops", "dense_seconds", "speedup"})
    EXPECT_TRUE(json.has(field)) << field;
}

TEST(CliBenchOperators, SoftAndIndexReportTheirSettings) {
  const JsonValue soft = op_json({"--op", "soft", "--n", "64", "--d", "8", "--heads", "2",
                                  "--stride", "2", "--grid", "8x8", "--backward"});
  EXPECT_EQ(soft["params"]["landmarks"].number, 16);
  EXPECT_EQ(soft["params"]["inverse"].text, "newton");
  const JsonValue index = op_json({"--op", "index", "--n", "100", "--d", "16", "--heads", "2",
                                   "--k", "8", "--backward"});
  // 2 pairs (D + Dv) flops for every listed pair.
  EXPECT_NEAR(index["gflops"].number, 2.0 * 100 * 8 * 2 * 32 / index["seconds"].number / 1e9,
              1e-6 * index["gflops"].number);
  EXPECT_EQ(index["params"]["lists"].text, "knn");
}

TEST(CliBenchOperators, RejectsBadFlags) {
  EXPECT_TRUE(IsCleanError(run_cli({"bench", "--op", "linear", "--n", "8", "--d", "4", "--heads",
                                    "1"}),
                           "--op"));
  EXPECT_TRUE(IsCleanError(run_cli({"bench", "--op", "soft", "--n", "8", "--d", "4", "--heads",
                                    "1"}),
                           "--stride"));
  EXPECT_TRUE(IsCleanError(run_cli({"bench", "--op", "soft", "--n", "8", "--d", "4", "--heads",
                                    "1", "--stride", "2", "--grid", "3x"}),
                           "--grid"));
  EXPECT_TRUE(IsCleanError(run_cli({"bench", "--op", "index", "--n", "8", "--d", "4", "--heads",
                                    "1", "--k", "9"}),
                           "--k"));
  EXPECT_TRUE(IsCleanError(run_cli({"bench", "--op", "lightning", "--n", "8", "--d", "4",
                                    "--heads", "1", "--block", "0"}),
                           "--block"));
}

}  // namespace
}  // namespace attnkit
