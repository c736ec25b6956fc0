// `mpirun -np P attnkit run|grad --context-parallel SCHEME` on loopback (Open MPI, 1 to 4
// ranks, oversubscribed on two cores): rank 0's O, LSE and gradients against the single-process
// run of the same command (bit for bit with one rank), causal or not, GQA, a pattern; bad input
// found by one rank: exit 2, rank 0's one error line, no output file. Skipped in builds without
// MPI (set-up installs it: scripts/install-deps.sh).
#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <iostream>
#include <string>
#include <vector>

#include "attnkit/distributed.h"
#include "attnkit/npy.h"
#include "eval/inputs.h"
#include "support/cli_runner.h"
#include "support/json_parse.h"

namespace attnkit {
namespace {

using testing::CliResult;
using testing::TempDir;

// A failed launch with no word from attnkit (its errors start "attnkit CMD:") and no sanitizer
// report in any rank (a crash in a rank of a checked build prints one).
bool launcher_failure(const CliResult& r) {
  for (const char* sign : {"attnkit run", "attnkit grad", "attnkit bench", "attnkit:",
                           "Sanitizer", "runtime error"})
    if (r.err.find(sign) != std::string::npos || r.out.find(sign) != std::string::npos)
      return false;
  return true;
}

CliResult mpirun(int ranks, std::vector<std::string> args) {
  // Open MPI's own start-up allocations (in components it has unloaded by exit) are never
  // freed: LeakSanitizer would fail every rank of a sanitized build. Leaks of attnkit's own
  // context-parallel code are checked on thread ranks (tests/distributed/).
  const char* asan = std::getenv("ASAN_OPTIONS");
  const std::string ranks_asan =
      "ASAN_OPTIONS=" + std::string(asan ? asan : "") + (asan ? ":" : "") + "detect_leaks=0";
  std::vector<std::string> argv = {"--allow-run-as-root", "--oversubscribe", "--bind-to", "none",
                                   "-x", ranks_asan, "-np", std::to_string(ranks), ATTNKIT_CLI};
  argv.insert(argv.end(), args.begin(), args.end());
  // Open MPI's launcher can fail for reasons of its own on a loaded machine (one CI run of the
  // checked build failed here once in hundreds of launches; 400 more passed). Such a failure is
  // retried once with its output kept in the log; a failure that attnkit or a sanitizer
  // reported in a rank is never retried.
  const CliResult first = testing::run_program(ATTNKIT_MPIEXEC, argv);
  if (first.exit_code == 0 || !launcher_failure(first)) return first;
  std::cerr << "mpirun failed outside attnkit (exit " << first.exit_code
            << "), retried once. Its output:\n"
            << first.out << first.err << "\n";
  return testing::run_program(ATTNKIT_MPIEXEC, argv);
}

class ContextParallelCli : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!mpi_available()) GTEST_SKIP() << "built without MPI";
    write("q.npy", {2, 4, 331, 16}, 1), write("k.npy", {2, 2, 331, 16}, 2);
    write("v.npy", {2, 2, 331, 8}, 3), write("do.npy", {2, 4, 331, 8}, 4);
  }
  void write(const std::string& name, const std::vector<int64_t>& shape, uint64_t seed) {
    write_npy(dir_.path(name), random_normal(shape, DType::kF32, seed), "test");
  }
  std::vector<std::string> inputs() const {
    return {"--q", dir_.path("q.npy"), "--k", dir_.path("k.npy"), "--v", dir_.path("v.npy")};
  }
  std::string path(const std::string& name) const { return dir_.path(name); }
  static double max_difference(const Tensor& a, const Tensor& b) {
    EXPECT_EQ(a.shape(), b.shape());
    double worst = 0.0;
    for (int64_t i = 0; i < a.numel(); ++i) {
      const double x = a.f32()[i], y = b.f32()[i];
      if (std::isinf(x) || std::isinf(y)) {
        if (x != y) return INFINITY;
        continue;
      }
      worst = std::max(worst, std::fabs(x - y));
    }
    return worst;
  }

 private:
  TempDir dir_;
};

TEST_F(ContextParallelCli, RunEqualsOneProcess) {
  for (const std::vector<std::string>& extra :
       {std::vector<std::string>{}, {"--causal"}, {"--causal", "--pattern", "window:size=100"}}) {
    std::vector<std::string> one = {"run"};
    for (const std::string& a : inputs()) one.push_back(a);
    for (const std::string& a : extra) one.push_back(a);
    std::vector<std::string> base = one;
    base.insert(base.end(), {"--out", path("o.npy"), "--lse", path("l.npy")});
    const CliResult single = testing::run_cli(base);
    ASSERT_EQ(single.exit_code, 0) << single.err;
    const Tensor o = read_npy(path("o.npy"), "o"), l = read_npy(path("l.npy"), "l");
    for (const char* scheme : {"ring", "zigzag", "allgather"})
      for (int ranks : {1, 2, 3, 4}) {
        if (ranks == 4 && extra.size() > 1) continue;  // 331 tokens: too few for 8 blocks of 64
        std::vector<std::string> args = one;
        args.insert(args.end(), {"--out", path("po.npy"), "--lse", path("pl.npy"), "--threads",
                                 "1", "--context-parallel", scheme});
        const CliResult r = mpirun(ranks, args);
        const std::string label = std::string(scheme) + " P=" + std::to_string(ranks) + " " +
                                  (extra.empty() ? "full" : extra.back());
        ASSERT_EQ(r.exit_code, 0) << label << "\n" << r.err;
        const Tensor po = read_npy(path("po.npy"), "po"), pl = read_npy(path("pl.npy"), "pl");
        const double tolerance = ranks == 1 ? 0.0 : 2e-6;  // one rank: the local call itself
        EXPECT_LE(max_difference(po, o), tolerance) << label;
        EXPECT_LE(max_difference(pl, l), 4 * tolerance) << label;
      }
  }
}

TEST_F(ContextParallelCli, GradEqualsOneProcess) {
  std::vector<std::string> one = {"grad", "--do", path("do.npy"), "--causal"};
  for (const std::string& a : inputs()) one.push_back(a);
  std::vector<std::string> base = one;
  base.insert(base.end(), {"--dq", path("dq.npy"), "--dk", path("dk.npy"), "--dv", path("dv.npy")});
  const CliResult single = testing::run_cli(base);
  ASSERT_EQ(single.exit_code, 0) << single.err;
  for (const char* scheme : {"ring", "zigzag", "allgather"})
    for (int ranks : {2, 3}) {
      std::vector<std::string> args = one;
      args.insert(args.end(), {"--dq", path("pdq.npy"), "--dk", path("pdk.npy"), "--dv",
                               path("pdv.npy"), "--threads", "1", "--context-parallel", scheme});
      const CliResult r = mpirun(ranks, args);
      ASSERT_EQ(r.exit_code, 0) << scheme << " P=" << ranks << "\n" << r.err;
      for (const char* g : {"dq", "dk", "dv"}) {
        const Tensor want = read_npy(path(std::string(g) + ".npy"), g);
        const Tensor got = read_npy(path(std::string("p") + g + ".npy"), g);
        EXPECT_LE(max_difference(got, want), 2e-5) << scheme << " P=" << ranks << " " << g;
      }
    }
}

TEST_F(ContextParallelCli, BadInputOnOneRankStopsEveryRank) {
  Tensor q = random_normal({2, 4, 331, 16}, DType::kF32, 1);
  q.f32()[((1 * 4 + 2) * 331 + 300) * 16 + 5] = NAN;  // token 300: the last rank's shard
  write_npy(path("qnan.npy"), q, "test");
  const CliResult r = mpirun(3, {"run", "--q", path("qnan.npy"), "--k", path("k.npy"), "--v",
                                 path("v.npy"), "--out", path("bad.npy"), "--context-parallel",
                                 "ring"});
  EXPECT_EQ(r.exit_code, 2) << r.err;
  EXPECT_NE(r.err.find("attnkit run: error: --q: contains NaN at [1,2,300,5]"), std::string::npos)
      << r.err;
  EXPECT_FALSE(testing::file_exists(path("bad.npy")));
  const CliResult scheme = mpirun(2, {"run", "--q", path("q.npy"), "--k", path("k.npy"), "--v",
                                      path("v.npy"), "--out", path("bad.npy"),
                                      "--context-parallel", "spiral"});
  EXPECT_EQ(scheme.exit_code, 2);
  EXPECT_NE(scheme.err.find("--context-parallel: must be ring, zigzag or allgather"),
            std::string::npos)
      << scheme.err;
  EXPECT_FALSE(testing::file_exists(path("bad.npy")));
}

TEST_F(ContextParallelCli, BenchReportsEveryRank) {
  const CliResult r = mpirun(3, {"bench", "--context-parallel", "zigzag", "--n", "600", "--d", "16",
                                 "--heads", "2", "--causal", "--threads", "1", "--reps", "1",
                                 "--backward", "--json"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  ASSERT_EQ(testing::count_lines(r.out), 1) << r.out;  // rank 0 alone prints
  const testing::JsonValue json = testing::parse_json(r.out);
  EXPECT_EQ(json["ranks"].number, 3);
  for (const char* field : {"seconds_per_rank", "compute_seconds_per_rank", "wait_seconds_per_rank",
                            "overlap_per_rank", "backward_seconds_per_rank"})
    EXPECT_EQ(json[field].items.size(), 3u) << field;
  EXPECT_GE(json["overlap"].number, 1.0);  // a call lasts at least as long as its kernels
  EXPECT_GE(json["imbalance"].number, 0.0);
}

}  // namespace
}  // namespace attnkit
