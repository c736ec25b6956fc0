// End-to-end tests of `attnkit grad` and `attnkit bench --backward`: gradients written by the
// binary equal the backward reference on the same inputs; bad input gives exit 2, one line
// naming the argument, and no output file.
#include <gtest/gtest.h>

#include <limits>
#include <string>
#include <vector>

#include "attnkit/attention.h"
#include "attnkit/npy.h"
#include "attnkit/pattern.h"
#include "eval/inputs.h"
#include "support/backward_check.h"
#include "support/cli_runner.h"
#include "support/json_parse.h"

namespace attnkit {
namespace {

using testing::CliResult;
using testing::IsCleanError;
using testing::run_cli;
using testing::TempDir;

class CliGrad : public ::testing::Test {
 protected:
  void SetUp() override {
    write_npy(path("q.npy"), random_normal({1, 4, 70, 32}, DType::kF32, 1), "q");
    write_npy(path("k.npy"), random_normal({1, 2, 90, 32}, DType::kF32, 2), "k");
    write_npy(path("v.npy"), random_normal({1, 2, 90, 24}, DType::kF32, 3), "v");
    write_npy(path("do.npy"), random_normal({1, 4, 70, 24}, DType::kF32, 4), "do");
    write_npy(path("dlse.npy"), random_normal({1, 4, 70}, DType::kF32, 5), "dlse");
  }
  std::string path(const std::string& name) const { return dir_.path(name); }
  std::vector<std::string> command(std::vector<std::string> extra = {}) const {
    std::vector<std::string> args = {"grad",         "--q",  path("q.npy"),  "--k",
                                     path("k.npy"),  "--v",  path("v.npy"),  "--do",
                                     path("do.npy"), "--dq", path("dq.npy"), "--dk",
                                     path("dk.npy"), "--dv", path("dv.npy")};
    args.insert(args.end(), extra.begin(), extra.end());
    return args;
  }
  // The gradients the reference gives on the files' inputs, under `allow` (AND causal).
  testing::Gradients reference(bool causal, bool with_dlse, const ElementPredicate& allow = {}) {
    q_ = read_npy(path("q.npy"), "q"), k_ = read_npy(path("k.npy"), "k");
    v_ = read_npy(path("v.npy"), "v"), do_ = read_npy(path("do.npy"), "do");
    dlse_ = read_npy(path("dlse.npy"), "dlse");
    out_ = Tensor({1, 4, 70, 24}, DType::kF32), lse_ = Tensor({1, 4, 70}, DType::kF32);
    testing::Gradients g{Tensor({1, 4, 70, 32}, DType::kF32), Tensor({1, 2, 90, 32}, DType::kF32),
                         Tensor({1, 2, 90, 24}, DType::kF32)};
    BackwardArgs b;
    b.forward.q = q_.view(), b.forward.k = k_.view(), b.forward.v = v_.view();
    b.forward.out = out_.view(), b.forward.lse = lse_.rows_view(), b.forward.causal = causal;
    b.dout = do_.view();
    if (with_dlse) b.dlse = dlse_.rows_view();
    b.dq = g.dq.view(), b.dk = g.dk.view(), b.dv = g.dv.view();
    attention_reference(b.forward, allow);
    attention_backward_reference(b, allow);
    return g;
  }
  void expect_written_equal(const testing::Gradients& want) {
    const std::pair<const char*, const Tensor*> files[] = {
        {"dq.npy", &want.dq}, {"dk.npy", &want.dk}, {"dv.npy", &want.dv}};
    for (const auto& [name, tensor] : files) {
      const Tensor got = read_npy(path(name), name);
      ASSERT_EQ(got.shape(), tensor->shape()) << name;
      ASSERT_EQ(got.dtype(), DType::kF32) << name;
      for (int64_t x = 0; x < got.numel(); ++x)
        ASSERT_NEAR(got.f32()[x], tensor->f32()[x], 2e-5) << name << "[" << x << "]";
    }
  }

  TempDir dir_;
  Tensor q_, k_, v_, do_, dlse_, out_, lse_;
};

TEST_F(CliGrad, DenseAndCausalMatchTheReference) {
  for (bool causal : {false, true}) {
    std::vector<std::string> extra = {"--dlse", path("dlse.npy")};
    if (causal) extra.push_back("--causal");
    const CliResult r = run_cli(command(extra));
    ASSERT_EQ(r.exit_code, 0) << r.err;
    expect_written_equal(reference(causal, true));
  }
}

TEST_F(CliGrad, PatternDifferentiatesThroughItsPlan) {
  const CliResult r = run_cli(command({"--pattern", "window:size=20"}));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const auto pattern = make_pattern("window:size=20");
  const Plan plan = pattern->plan(PlanInputs::shapes(1, 4, 2, 70, 90, 32));
  expect_written_equal(reference(false, false, [&](int64_t b, int64_t h, int64_t i, int64_t j) {
    return to_dense(plan, b, h)[i * 90 + j] != 0;
  }));
}

TEST_F(CliGrad, BadInputNamesTheArgumentAndWritesNothing) {
  write_npy(path("short_do.npy"), random_normal({1, 4, 69, 24}, DType::kF32, 4), "do");
  write_npy(path("bad_dlse.npy"), random_normal({1, 4, 71}, DType::kF32, 4), "dlse");
  Tensor nan_do = random_normal({1, 4, 70, 24}, DType::kF32, 4);
  nan_do.f32()[17] = std::numeric_limits<float>::quiet_NaN();
  write_npy(path("nan_do.npy"), nan_do, "do");
  const std::vector<std::pair<std::vector<std::string>, const char*>> cases = {
      {{"--do", path("short_do.npy")}, "--do"},
      {{"--do", path("nan_do.npy")}, "--do"},
      {{"--dlse", path("bad_dlse.npy")}, "--dlse"},
      {{"--dlse", path("missing.npy")}, "--dlse"},
      {{"--pattern", "nonesuch"}, "--pattern"},
      {{"--pattern", "natten2d:kernel=3"}, "--pattern"},  // 70 tokens are no square grid
      {{"--scale", "0"}, "--scale"},
      {{"--dv", path("dq.npy")}, "--dv"},  // two gradients, one path
      {{"--dq", path("nodir/dq.npy")}, "--dq"},
  };
  for (const auto& [extra, argument] : cases) {
    std::vector<std::string> args = command();
    // Flags may not repeat: drop the default of the same name first.
    for (size_t x = 0; x + 1 < args.size(); ++x)
      if (args[x] == extra[0]) args.erase(args.begin() + x, args.begin() + x + 2);
    args.insert(args.end(), extra.begin(), extra.end());
    const CliResult r = run_cli(args);
    EXPECT_TRUE(IsCleanError(r, argument)) << extra[0] << " " << extra[1];
    for (const char* name : {"dq.npy", "dk.npy", "dv.npy"})
      EXPECT_FALSE(testing::file_exists(path(name))) << extra[0] << " left " << name;
  }
}

TEST(CliBench, BackwardJsonReportsItsFigures) {
  const CliResult r = run_cli({"bench", "--n", "300", "--d", "32", "--heads", "2", "--reps", "1",
                               "--backward", "--json", "--causal"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const testing::JsonValue json = testing::parse_json(r.out);
  EXPECT_GT(json["backward_seconds"].number, 0.0);
  EXPECT_GT(json["backward_gflops"].number, 0.0);
  // backward_gflops counts 2 * pairs * (3 D + 2 Dv) * B * Hq over the measured seconds.
  const double flops = 2.0 * json["pairs"].number * (3 * 32 + 2 * 32) * 2;
  EXPECT_NEAR(json["backward_gflops"].number, flops / json["backward_seconds"].number / 1e9,
              1e-6 * json["backward_gflops"].number);
  EXPECT_GE(json["backward_fraction_of_peak"].number, 0.0);
}

}  // namespace
}  // namespace attnkit
