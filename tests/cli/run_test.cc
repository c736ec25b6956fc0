// End-to-end tests of `attnkit run`, `bench` and `peak`: the binary (ATTNKIT_CLI) runs in a
// temporary directory on inputs written with attnkit::write_npy. Results are compared with
// attention_reference(); every bad input must give exit code 2, one stderr line naming the
// argument, and no output file.
#include <gtest/gtest.h>

#include <cfloat>
#include <cmath>
#include <limits>
#include <memory>
#include <string>
#include <vector>

#include "attnkit/attention.h"
#include "attnkit/npy.h"
#include "attnkit/pattern.h"
#include "attnkit/tensor.h"
#include "eval/inputs.h"
#include "patterns/grid/grid_pattern.h"
#include "support/cli_runner.h"
#include "support/json_parse.h"

namespace attnkit {
namespace {

using testing::CliResult;
using testing::IsCleanError;
using testing::JsonValue;
using testing::run_cli;
using testing::TempDir;

class CliTest : public ::testing::Test {
 protected:
  // Writes a random normal tensor (f32 or f16 file) and returns its path.
  std::string input(const std::string& name, const std::vector<int64_t>& shape, uint64_t seed,
                    DType dtype = DType::kF32) {
    const std::string path = dir_.path(name);
    write_npy(path, random_normal(shape, dtype, seed), "test");
    return path;
  }
  std::string path(const std::string& name) const { return dir_.path(name); }

  // Runs the CLI on Q, K, V files and checks O and LSE against the reference computed on the
  // same inputs converted to `storage`. Both sides see identically rounded inputs and the kernel
  // accumulates in f32 whatever the storage, so the bound comes from the f32 epsilon, growing
  // with sqrt(Nk) for the sums over keys.
  void expect_run_matches_reference(const std::vector<int64_t>& q_shape,
                                    const std::vector<int64_t>& k_shape,
                                    const std::vector<int64_t>& v_shape, DType file_dtype,
                                    DType storage, std::vector<std::string> extra, bool causal,
                                    float scale) {
    const std::string q = input("q.npy", q_shape, 11, file_dtype);
    const std::string k = input("k.npy", k_shape, 12, file_dtype);
    const std::string v = input("v.npy", v_shape, 13, file_dtype);
    std::vector<std::string> args = {"run",
                                     "--q",
                                     q,
                                     "--k",
                                     k,
                                     "--v",
                                     v,
                                     "--out",
                                     path("o.npy"),
                                     "--lse",
                                     path("lse.npy"),
                                     "--dtype",
                                     dtype_name(storage)};
    args.insert(args.end(), extra.begin(), extra.end());
    const CliResult result = run_cli(args, dir_.dir());
    ASSERT_EQ(result.exit_code, 0) << result.err;
    EXPECT_TRUE(result.err.empty()) << result.err;

    const Tensor out = read_npy(path("o.npy"), "o");
    const Tensor lse = read_npy(path("lse.npy"), "lse");
    ASSERT_EQ(out.dtype(), DType::kF32);
    ASSERT_EQ(out.shape(), (std::vector<int64_t>{q_shape[0], q_shape[1], q_shape[2], v_shape[3]}));
    ASSERT_EQ(lse.shape(), (std::vector<int64_t>{q_shape[0], q_shape[1], q_shape[2]}));

    const Tensor qs = read_npy(q, "q").to(storage), ks = read_npy(k, "k").to(storage),
                 vs = read_npy(v, "v").to(storage);
    Tensor ref_out(out.shape(), DType::kF32), ref_lse(lse.shape(), DType::kF32);
    AttentionArgs reference;
    reference.q = qs.view();
    reference.k = ks.view();
    reference.v = vs.view();
    reference.out = ref_out.view();
    reference.lse = ref_lse.rows_view();
    reference.causal = causal;
    reference.scale = scale;
    attention_reference(reference);

    const double tolerance = 8 * FLT_EPSILON * std::sqrt(static_cast<double>(k_shape[2])) + 1e-6;
    int failures = 0;
    for (int64_t i = 0; i < out.numel(); ++i) {
      const double diff = std::abs(out.f32()[i] - ref_out.f32()[i]);
      if (!(diff <= tolerance * (1 + std::abs(ref_out.f32()[i]))) && ++failures <= 5)
        ADD_FAILURE() << "O[" << i << "] = " << out.f32()[i] << ", reference " << ref_out.f32()[i]
                      << ", tolerance " << tolerance;
    }
    for (int64_t i = 0; i < lse.numel(); ++i) {
      const float got = lse.f32()[i], want = ref_lse.f32()[i];
      const bool ok = std::isinf(want) ? (got == want)
                                       : std::abs(got - want) <= tolerance * (1 + std::abs(want));
      if (!ok && ++failures <= 10)
        ADD_FAILURE() << "LSE[" << i << "] = " << got << ", reference " << want;
    }
    EXPECT_EQ(failures, 0);
  }

  // Runs `args` (after "run") and expects a clean failure naming `argument` with no output.
  void expect_clean_run_failure(std::vector<std::string> args, const std::string& argument) {
    args.insert(args.begin(), "run");
    const CliResult result = run_cli(args, dir_.dir());
    EXPECT_TRUE(IsCleanError(result, argument));
    EXPECT_FALSE(testing::file_exists(path("o.npy")));
    EXPECT_FALSE(testing::file_exists(path("lse.npy")));
    for (const std::string& name : dir_.list())
      EXPECT_EQ(name.find(".tmp"), std::string::npos) << "left behind: " << name;
  }

  // Standard valid inputs: Q [1,4,7,16], K [1,2,33,16], V [1,2,33,8].
  std::vector<std::string> valid_inputs() {
    return {"--q", input("q.npy", {1, 4, 7, 16}, 1), "--k", input("k.npy", {1, 2, 33, 16}, 2),
            "--v", input("v.npy", {1, 2, 33, 8}, 3)};
  }
  std::vector<std::string> with(std::vector<std::string> base,
                                const std::vector<std::string>& more) {
    base.insert(base.end(), more.begin(), more.end());
    return base;
  }

  TempDir dir_;
};

TEST_F(CliTest, RunMatchesReferenceGqaNqNotNk) {
  expect_run_matches_reference({2, 6, 7, 16}, {2, 2, 65, 16}, {2, 2, 65, 24}, DType::kF32,
                               DType::kF32, {}, false, 0.0f);
}

TEST_F(CliTest, RunMatchesReferenceCausalWithRowsThatSeeNoKey) {
  // Nq > Nk: the first Nq - Nk query rows see no key (O = 0, LSE = -inf).
  expect_run_matches_reference({1, 3, 63, 80}, {1, 1, 7, 80}, {1, 1, 7, 80}, DType::kF32,
                               DType::kF32, {"--causal"}, true, 0.0f);
  const Tensor lse = read_npy(path("lse.npy"), "lse");
  EXPECT_EQ(lse.f32()[0], -std::numeric_limits<float>::infinity());
}

TEST_F(CliTest, RunMatchesReferenceWithScaleAndThreads) {
  expect_run_matches_reference({1, 8, 65, 64}, {1, 8, 63, 64}, {1, 8, 63, 64}, DType::kF32,
                               DType::kF32, {"--scale", "0.3", "--threads", "2", "--causal"}, true,
                               0.3f);
}

TEST_F(CliTest, RunReadsF16FilesAndConvertsToEachStorageDtype) {
  for (DType storage : {DType::kF16, DType::kBF16, DType::kF32}) {
    SCOPED_TRACE(dtype_name(storage));
    expect_run_matches_reference({1, 2, 7, 16}, {1, 1, 64, 16}, {1, 1, 64, 16}, DType::kF16,
                                 storage, {}, false, 0.0f);
  }
  expect_run_matches_reference({1, 2, 7, 16}, {1, 1, 64, 16}, {1, 1, 64, 16}, DType::kF32,
                               DType::kBF16, {}, false, 0.0f);
}

TEST_F(CliTest, RunWithoutLseWritesOnlyO) {
  const CliResult ok =
      run_cli(with({"run"}, with(valid_inputs(), {"--out", path("o.npy")})), dir_.dir());
  ASSERT_EQ(ok.exit_code, 0) << ok.err;
  EXPECT_TRUE(testing::file_exists(path("o.npy")));
  EXPECT_EQ(dir_.list(), (std::vector<std::string>{"k.npy", "o.npy", "q.npy", "v.npy"}));
}

TEST_F(CliTest, RunPatternCausalMatchesCausalFlag) {
  const auto inputs = valid_inputs();
  ASSERT_EQ(run_cli(with({"run"}, with(inputs, {"--out", path("a.npy"), "--causal"}))).exit_code,
            0);
  const CliResult result =
      run_cli(with({"run"}, with(inputs, {"--out", path("b.npy"), "--pattern", "causal"})));
  ASSERT_EQ(result.exit_code, 0) << result.err;
  const Tensor a = read_npy(path("a.npy"), "a"), b = read_npy(path("b.npy"), "b");
  ASSERT_EQ(a.shape(), b.shape());
  for (int64_t i = 0; i < a.numel(); ++i)
    EXPECT_NEAR(a.f32()[i], b.f32()[i], 1e-5f * (1 + std::abs(a.f32()[i]))) << i;
}

TEST_F(CliTest, RunRejectsMissingAndMalformedFiles) {
  auto inputs = valid_inputs();
  expect_clean_run_failure(with({"--q", path("absent.npy")}, {inputs[2], inputs[3], inputs[4],
                                                              inputs[5], "--out", path("o.npy")}),
                           "--q");
  testing::write_file(path("bad.npy"), "this is not a numpy file at all");
  expect_clean_run_failure(
      {inputs[0], inputs[1], "--k", path("bad.npy"), inputs[4], inputs[5], "--out", path("o.npy")},
      "--k");
  const std::string whole = testing::read_file(inputs[5]);
  testing::write_file(path("short.npy"), whole.substr(0, whole.size() - 10));
  expect_clean_run_failure({inputs[0], inputs[1], inputs[2], inputs[3], "--v", path("short.npy"),
                            "--out", path("o.npy")},
                           "--v");
}

TEST_F(CliTest, RunRejectsUnsupportedDtypes) {
  auto inputs = valid_inputs();
  const std::vector<double> doubles(1 * 4 * 7 * 16, 0.5);
  write_npy_raw(path("f8.npy"), "<f8", {1, 4, 7, 16}, doubles.data(), doubles.size() * 8, "t");
  expect_clean_run_failure(
      {"--q", path("f8.npy"), inputs[2], inputs[3], inputs[4], inputs[5], "--out", path("o.npy")},
      "--q");
  const std::vector<int32_t> ints(1 * 2 * 33 * 16, 1);
  write_npy_raw(path("i4.npy"), "<i4", {1, 2, 33, 16}, ints.data(), ints.size() * 4, "t");
  expect_clean_run_failure(
      {inputs[0], inputs[1], "--k", path("i4.npy"), inputs[4], inputs[5], "--out", path("o.npy")},
      "--k");
}

TEST_F(CliTest, RunRejectsMismatchedShapes) {
  const std::string q = input("q.npy", {1, 4, 7, 16}, 1);
  const std::string k = input("k.npy", {1, 2, 33, 16}, 2);
  const std::string v = input("v.npy", {1, 2, 33, 8}, 3);
  const std::string out = path("o.npy");
  // D mismatch between Q and K.
  expect_clean_run_failure(
      {"--q", q, "--k", input("k_d.npy", {1, 2, 33, 12}, 4), "--v", v, "--out", out}, "--k");
  // Hq % Hkv != 0.
  expect_clean_run_failure({"--q", q, "--k", input("k_h.npy", {1, 3, 33, 16}, 5), "--v",
                            input("v_h.npy", {1, 3, 33, 8}, 6), "--out", out},
                           "--k");
  // Nk differs between K and V.
  expect_clean_run_failure(
      {"--q", q, "--k", k, "--v", input("v_n.npy", {1, 2, 32, 8}, 7), "--out", out}, "--v");
  // Batch mismatch.
  expect_clean_run_failure(
      {"--q", input("q_b.npy", {2, 4, 7, 16}, 8), "--k", k, "--v", v, "--out", out}, "--k");
  // Rank 3.
  expect_clean_run_failure(
      {"--q", input("q_r.npy", {4, 7, 16}, 9), "--k", k, "--v", v, "--out", out}, "--q");
}

TEST_F(CliTest, RunRejectsZeroSizeDimensions) {
  const std::string k = input("k.npy", {1, 2, 33, 16}, 2);
  const std::string v = input("v.npy", {1, 2, 33, 8}, 3);
  expect_clean_run_failure(
      {"--q", input("q0.npy", {1, 4, 0, 16}, 1), "--k", k, "--v", v, "--out", path("o.npy")},
      "--q");
  expect_clean_run_failure(
      {"--q", input("q.npy", {1, 4, 7, 16}, 1), "--k", input("k0.npy", {1, 2, 0, 16}, 2), "--v",
       input("v0.npy", {1, 2, 0, 8}, 3), "--out", path("o.npy")},
      "--k");
}

TEST_F(CliTest, RunRejectsNanAndInfNamingTheIndex) {
  auto inputs = valid_inputs();
  Tensor q = read_npy(inputs[1], "q");
  q.f32()[17] = std::numeric_limits<float>::quiet_NaN();
  write_npy(path("q_nan.npy"), q, "t");
  expect_clean_run_failure(
      with({"--q", path("q_nan.npy")}, {inputs[2], inputs[3], inputs[4], inputs[5], "--out",
                                        path("o.npy"), "--lse", path("lse.npy")}),
      "--q");
  const CliResult result = run_cli({"run", "--q", path("q_nan.npy"), inputs[2], inputs[3],
                                    inputs[4], inputs[5], "--out", path("o.npy")});
  EXPECT_NE(result.err.find("NaN at flat index 17"), std::string::npos) << result.err;

  Tensor v = read_npy(inputs[5], "v").to(DType::kF16);
  static_cast<uint16_t*>(v.data())[5] = 0xfc00;  // -inf in an f16 file
  write_npy(path("v_inf.npy"), v, "t");
  expect_clean_run_failure(with({inputs[0], inputs[1], inputs[2], inputs[3]},
                                {"--v", path("v_inf.npy"), "--out", path("o.npy")}),
                           "--v");
  // Finite in f32 but beyond f16's range: infinite after --dtype f16.
  Tensor k = read_npy(inputs[3], "k");
  k.f32()[3] = 1e6f;
  write_npy(path("k_big.npy"), k, "t");
  expect_clean_run_failure(with({inputs[0], inputs[1], "--k", path("k_big.npy")},
                                {inputs[4], inputs[5], "--out", path("o.npy"), "--dtype", "f16"}),
                           "--k");
}

TEST_F(CliTest, RunRejectsBadFlags) {
  const auto inputs = valid_inputs();
  const auto out = std::vector<std::string>{"--out", path("o.npy")};
  expect_clean_run_failure(with(with(inputs, out), {"--dtype", "f64"}), "--dtype");
  expect_clean_run_failure(with(with(inputs, out), {"--bogus"}), "--bogus");
  for (const std::string threads : {"0", "-1", "two", "100000"})
    expect_clean_run_failure(with(with(inputs, out), {"--threads", threads}), "--threads");
  expect_clean_run_failure(with(with(inputs, out), {"--scale", "nan"}), "--scale");
  expect_clean_run_failure(inputs, "--out");  // --out is required
  expect_clean_run_failure(with(inputs, {"--out", path("no_such_dir/o.npy")}), "--out");
  expect_clean_run_failure(with(with(inputs, out), {"--pattern", "no_such_pattern"}), "--pattern");
  expect_clean_run_failure(with(with(inputs, out), {"--lse", path("o.npy")}), "--lse");
}

// Every command answers --help (and -h) with its usage and exit code 0, touching nothing.
TEST(CliHelp, EveryCommandPrintsItsUsage) {
  for (const char* command :
       {"run", "bench", "peak", "patterns", "mask", "compare", "recall", "model"}) {
    for (const char* flag : {"--help", "-h"}) {
      const CliResult r = run_cli({command, flag});
      EXPECT_EQ(r.exit_code, 0) << command << " " << flag << ": " << r.err;
      EXPECT_NE(r.out.find(std::string("attnkit ") + command), std::string::npos)
          << command << " " << flag << ": " << r.out;
    }
  }
}

TEST(CliPeak, JsonHasTheContractFields) {
  const CliResult result = run_cli({"peak", "--json", "--threads", "1"});
  ASSERT_EQ(result.exit_code, 0) << result.err;
  EXPECT_EQ(testing::count_lines(result.out), 1);
  const JsonValue json = testing::parse_json(result.out);
  ASSERT_TRUE(json.is_object());
  for (const char* field : {"fma_gflops", "read_gbps", "threads"}) {
    ASSERT_TRUE(json.has(field)) << field << " missing in " << result.out;
    EXPECT_TRUE(json[field].is_number()) << field;
    EXPECT_GT(json[field].number, 0) << field;
  }
  EXPECT_EQ(json["threads"].number, 1);
  EXPECT_TRUE(IsCleanError(run_cli({"peak", "--threads", "0"}), "--threads"));
}

// Bottom-right causal pairs by brute force over (i, j).
double causal_pairs(int64_t nq, int64_t nk) {
  double pairs = 0;
  for (int64_t i = 0; i < nq; ++i)
    for (int64_t j = 0; j < nk; ++j) pairs += (j <= i + nk - nq);
  return pairs;
}

JsonValue bench_json(const std::vector<std::string>& flags) {
  std::vector<std::string> args = {"bench", "--json", "--reps", "2", "--threads", "1"};
  args.insert(args.end(), flags.begin(), flags.end());
  const CliResult result = run_cli(args);
  EXPECT_EQ(result.exit_code, 0) << result.err;
  EXPECT_EQ(testing::count_lines(result.out), 1) << result.out;
  const JsonValue json = testing::parse_json(result.out);
  for (const char* field : {"seconds", "pairs", "density", "gflops", "bytes_read", "read_gbps",
                            "peak_gflops", "fraction_of_peak"}) {
    EXPECT_TRUE(json.has(field) && json[field].is_number()) << field << " in " << result.out;
  }
  return json;
}

TEST(CliBench, JsonFieldsFollowTheContract) {
  // Dense: pairs = Nq * Nk; causal with Nq < Nk: bottom-right count. GQA 6 over 2, D != Dv, f16.
  for (bool causal : {false, true}) {
    SCOPED_TRACE(causal ? "causal" : "dense");
    std::vector<std::string> flags = {"--n",     "65", "--nq",    "7",  "--d",        "16",
                                      "--dv",    "24", "--heads", "6",  "--kv-heads", "2",
                                      "--batch", "2",  "--dtype", "f16"};
    if (causal) flags.push_back("--causal");
    const JsonValue json = bench_json(flags);
    const double pairs = causal ? causal_pairs(7, 65) : 7.0 * 65;
    EXPECT_EQ(json["pairs"].number, pairs);
    EXPECT_DOUBLE_EQ(json["density"].number, pairs / (7.0 * 65));
    EXPECT_NEAR(json["gflops"].number, 2 * pairs * (16 + 24) * 2 * 6 / json["seconds"].number / 1e9,
                1e-6 * json["gflops"].number);
    // Q, K, V in f16: 2 bytes per element.
    EXPECT_EQ(json["bytes_read"].number,
              2.0 * (2 * 6 * 7 * 16 + 2 * 2 * 65 * 16 + 2 * 2 * 65 * 24));
    EXPECT_NEAR(json["fraction_of_peak"].number, json["gflops"].number / json["peak_gflops"].number,
                1e-6 * json["fraction_of_peak"].number);
  }
}

TEST(CliBench, PatternReportsItsPairsAndPlanTime) {
  const JsonValue json =
      bench_json({"--n", "200", "--nq", "130", "--d", "16", "--heads", "2", "--pattern", "causal"});
  EXPECT_EQ(json["pairs"].number, causal_pairs(130, 200));
  EXPECT_TRUE(json.has("plan_seconds") && json["plan_seconds"].is_number());
}

// Visited tiles over all tiles of the plan's mask, the same figure as the library's
// block_density of that plan; never below the element density.
TEST(CliBench, PatternReportsItsTileDensity) {
  const JsonValue json = bench_json({"--n", "300", "--d", "16", "--heads", "2", "--pattern",
                                     "natten1d:kernel=33"});
  const std::unique_ptr<Pattern> pattern = make_pattern("natten1d:kernel=33");
  const Tensor q = random_normal({1, 2, 300, 16}, DType::kF32, 1);
  Tensor out({1, 2, 300, 16}, DType::kF32);
  AttentionArgs a;
  a.q = a.k = a.v = q.view(), a.out = out.view();
  const Plan plan = pattern->plan(PlanInputs::of(a));
  // 300 tokens in boxes of 64: padded, so the forward walks each box's union window.
  ASSERT_TRUE(plan.state.has_value());
  EXPECT_DOUBLE_EQ(
      json["tile_density"].number,
      std::any_cast<std::shared_ptr<const grid_patterns::GridWalk>>(plan.state)->density);
  EXPECT_GT(json["tile_density"].number, json["density"].number);
  EXPECT_LT(json["tile_density"].number, 1.0);
}

TEST(CliBench, RejectsBadShapes) {
  EXPECT_TRUE(IsCleanError(run_cli({"bench", "--n", "0", "--d", "16", "--heads", "2"}), "--n"));
  EXPECT_TRUE(
      IsCleanError(run_cli({"bench", "--n", "8", "--d", "16", "--heads", "6", "--kv-heads", "4"}),
                   "--kv-heads"));
  EXPECT_TRUE(IsCleanError(run_cli({"bench", "--n", "8", "--heads", "2"}), "--d"));
  EXPECT_TRUE(IsCleanError(
      run_cli({"bench", "--n", "8", "--d", "16", "--heads", "2", "--dtype", "int8"}), "--dtype"));
}

TEST(CliHelp, DocumentsTheNanPolicy) {
  const CliResult result = run_cli({"help"});
  EXPECT_EQ(result.exit_code, 0);
  EXPECT_NE(result.out.find("NaN or Inf"), std::string::npos);
}

}  // namespace
}  // namespace attnkit
