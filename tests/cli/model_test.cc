// `attnkit model ...` end to end through the CLI binary: argument errors exit 2 with one line on
// stderr, and with the real model (set-up fetches it): info, ppl against a golden, greedy
// generate, passkey, bench and capture.
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <string>

#include "attnkit/npy.h"
#include "model/model_files.h"
#include "support/json_parse.h"
#include "support/real_model.h"

namespace {

struct Result {
  int code;
  std::string out;
};

// Runs the CLI with `args` (shell-quoted by the caller); stdout only unless `merge_stderr`.
Result run(const std::string& args, bool merge_stderr = false) {
  const std::string command =
      std::string(ATTNKIT_CLI) + " " + args + (merge_stderr ? " 2>&1" : " 2>/dev/null");
  FILE* pipe = popen(command.c_str(), "r");
  Result r{-1, ""};
  if (!pipe) return r;
  char buffer[4096];
  size_t n;
  while ((n = fread(buffer, 1, sizeof(buffer), pipe)) > 0) r.out.append(buffer, n);
  const int status = pclose(pipe);
  r.code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return r;
}

TEST(ModelCli, ArgumentErrorsExitTwo) {
  EXPECT_EQ(run("model").code, 2);
  EXPECT_EQ(run("model frobnicate").code, 2);
  EXPECT_EQ(run("model info --model /nonexistent.gguf").code, 2);
  EXPECT_EQ(run("model info --model /usr/share/common-licenses/GPL-3").code, 2);  // not GGUF
  const Result r = run(
      "model ppl --model /nonexistent.gguf --text /usr/share/common-licenses/GPL-3 --ctx 1", true);
  EXPECT_EQ(r.code, 2);
  EXPECT_NE(r.out.find("--ctx"), std::string::npos) << r.out;
  EXPECT_EQ(run("model generate --prompt hi --bogus 1").code, 2);
  const Result cache = run("model passkey --len 300 --trials 1 --cache lru:size=3", true);
  EXPECT_EQ(cache.code, 2);
  EXPECT_NE(cache.out.find("--cache"), std::string::npos) << cache.out;
  EXPECT_EQ(run("model stream-ppl --text /usr/share/common-licenses/GPL-3 --tokens 1").code, 2);
}

class ModelCliReal : public ::testing::Test {
 protected:
  void SetUp() override {
    model_ = attnkit::model::locate_model(ATTNKIT_SOURCE_DIR);
    ATTNKIT_REQUIRE_MODEL(!model_.empty());
  }
  // `attnkit model SUB` on the real model and the GPL text with `flags`, one thread.
  std::string on_gpl(const std::string& sub, const std::string& flags) const {
    return "model " + sub + " --model '" + model_ +
           "' --text /usr/share/common-licenses/GPL-3 --threads 1 " + flags + " ";
  }
  std::string model_;
};

TEST_F(ModelCliReal, ScoreModifierFlags) {
  const std::string ppl = on_gpl("ppl", "--ctx 64 --max-windows 1 --json");
  const Result plain = run(ppl), off = run(ppl + "--selective 0 --temperature 1");
  ASSERT_EQ(plain.code, 0);
  EXPECT_EQ(off.out, plain.out);  // switched off: the same numbers
  for (const char* flags : {"--selective 0.05", "--temperature 0.9", "--mask-heads 3.1,5.2",
                            "--mask-heads 3.1 --mask-mode zero"}) {
    const Result r = run(ppl + flags);
    ASSERT_EQ(r.code, 0) << flags;
    EXPECT_NE(r.out, plain.out) << flags;
  }
  for (auto [flags, named] : {std::pair<const char*, const char*>{"--selective -1", "--selective"},
                              {"--selective 0.1,0.2", "--selective"},
                              {"--temperature 0", "--temperature"},
                              {"--mask-heads 30.0", "--mask-heads"},
                              {"--mask-heads 1.1,1.1", "--mask-heads"},
                              {"--mask-mode all", "--mask-mode"}}) {
    const Result r = run(ppl + flags, true);
    EXPECT_EQ(r.code, 2) << flags;
    EXPECT_NE(r.out.find(std::string(named) + ":"), std::string::npos) << r.out;
    EXPECT_EQ(r.out.find('{'), std::string::npos) << "no partial output: " << r.out;
  }
}

TEST_F(ModelCliReal, SinksJsonAndAct) {
  const Result r = run(on_gpl("sinks", "--ctx 128 --max-windows 1 --json"));
  ASSERT_EQ(r.code, 0);
  const attnkit::testing::JsonValue v = attnkit::testing::parse_json(r.out);
  ASSERT_EQ(v["layers"].items.size(), 30u);
  double total = 0.0;
  for (const auto& layer : v["layers"].items) {
    EXPECT_GE(layer["heads_with"].number, 0.0);
    EXPECT_LE(layer["heads_with"].number, 9.0);
    total += layer["per_head"].number;
  }
  EXPECT_GT(total, 0.0);
  const std::string ppl = on_gpl("ppl", "--ctx 64 --max-windows 1 --json");
  const Result plain = run(ppl), act = run(ppl + "--act on"), same = run(ppl + "--act beta=1");
  ASSERT_EQ(act.code, 0);
  EXPECT_NE(act.out, plain.out);
  EXPECT_EQ(same.out, plain.out);
  for (const char* bad : {"--act beta=2", "--act gamma=1", "--act from=30"}) {
    const Result e = run(ppl + bad, true);
    EXPECT_EQ(e.code, 2) << bad;
    EXPECT_NE(e.out.find("--act:"), std::string::npos) << e.out;
  }
}

TEST_F(ModelCliReal, HeadsAndInfluenceJson) {
  const Result r = run("model heads --model '" + model_ +
                       "' --detect retrieval --len 64 --trials 1 --threads 1 --json");
  ASSERT_EQ(r.code, 0);
  const attnkit::testing::JsonValue v = attnkit::testing::parse_json(r.out);
  const auto& heads = v["heads"].items;
  ASSERT_EQ(heads.size(), 270u);
  for (size_t x = 1; x < heads.size(); ++x)
    EXPECT_GE(heads[x - 1]["score"].number, heads[x]["score"].number);
  EXPECT_GT(heads[0]["score"].number, 0.2);
  const Result i = run(on_gpl("influence",
                              "--ctx 64 --top 3 --max-windows 3 --len 64 "
                              "--trials 1 --mask-mode zero --json"));
  ASSERT_EQ(i.code, 0);
  const attnkit::testing::JsonValue w = attnkit::testing::parse_json(i.out);
  EXPECT_EQ(w["mask_mode"].text, "zero");
  ASSERT_EQ(w["documents"].items.size(), 3u);
  for (size_t x = 1; x < 3; ++x)
    EXPECT_GE(w["documents"].items[x - 1]["score"].number, w["documents"].items[x]["score"].number);
  EXPECT_EQ(run("model heads --detect induction", true).code, 2);
  EXPECT_EQ(run(on_gpl("influence", "--ctx 64 --top 271"), true).code, 2);
}

TEST_F(ModelCliReal, Info) {
  const Result r = run("model info --model '" + model_ + "'");
  EXPECT_EQ(r.code, 0);
  EXPECT_NE(r.out.find("30 layers, dim 576, heads 9 (kv 3, head dim 64)"), std::string::npos)
      << r.out;
  EXPECT_NE(r.out.find("Q4_1 x210"), std::string::npos) << r.out;
}

TEST_F(ModelCliReal, PerplexityJson) {
  const Result r = run("model ppl --model '" + model_ +
                       "' --text /usr/share/common-licenses/GPL-3 --ctx 64 --max-windows 2 "
                       "--threads 1 --json");
  ASSERT_EQ(r.code, 0);
  const attnkit::testing::JsonValue v = attnkit::testing::parse_json(r.out);
  EXPECT_EQ(v["tokens"].number, 126);
  EXPECT_EQ(v["windows"].number, 2);
  // Golden, as RealModel.DensePerplexityOfGpl3MatchesTheGolden (measured 2026-12-02): mean NLL
  // 3.5858646, ppl 36.0845; 1e-3 nats covers the SIMD targets' rounding.
  EXPECT_NEAR(v["nll"].number, 3.5858646, 1e-3) << r.out;
  EXPECT_NEAR(v["ppl"].number, std::exp(v["nll"].number), 1e-9 * v["ppl"].number);
}

TEST_F(ModelCliReal, GenerateIsGreedyAndFluent) {
  const Result r = run("model generate --model '" + model_ +
                       "' --prompt 'The capital of France is' --n 8 --threads 1");
  ASSERT_EQ(r.code, 0);
  EXPECT_EQ(r.out.rfind(" Paris", 0), 0u) << r.out;
  // Greedy decoding is deterministic: a second run prints the same text, whatever the threads.
  EXPECT_EQ(run("model generate --model '" + model_ +
                "' --prompt 'The capital of France is' --n 8 --threads 2")
                .out,
            r.out);
}

TEST_F(ModelCliReal, PasskeyJson) {
  const Result r =
      run("model passkey --model '" + model_ + "' --len 300 --trials 2 --threads 1 --json");
  ASSERT_EQ(r.code, 0);
  const attnkit::testing::JsonValue v = attnkit::testing::parse_json(r.out);
  EXPECT_EQ(v["len"].number, 300);
  EXPECT_EQ(v["trials"].number, 2);
  EXPECT_EQ(v["accuracy"].number, 1.0) << r.out;  // both keys found at 300 tokens (measured)
}

TEST_F(ModelCliReal, StreamPerplexityJson) {
  const Result r = run("model stream-ppl --model '" + model_ +
                       "' --text /usr/share/common-licenses/GPL-3 --tokens 1100 "
                       "--cache streaming:sinks=4,recent=252 --threads 1 --json");
  ASSERT_EQ(r.code, 0);
  const attnkit::testing::JsonValue v = attnkit::testing::parse_json(r.out);
  EXPECT_EQ(v["tokens"].number, 1099);
  EXPECT_EQ(v["cache_tokens"].number, 256);
  EXPECT_EQ(v["cache"].text, "streaming:sinks=4,recent=252");
  const auto& segments = v["ppl_by_segment"].items;
  ASSERT_EQ(segments.size(), 2u);
  EXPECT_EQ(segments[0]["start"].number, 0);
  EXPECT_EQ(segments[0]["end"].number, 1024);
  EXPECT_EQ(segments[1]["end"].number, 1099);
  double nll = 0.0;  // the segments' perplexities recombine into the whole
  for (const auto& s : segments)
    nll += std::log(s["ppl"].number) * (s["end"].number - s["start"].number);
  EXPECT_NEAR(std::exp(nll / 1099), v["ppl"].number, 1e-6 * v["ppl"].number);
  EXPECT_GT(v["tokens_per_s"].number, 0.0);
}

TEST_F(ModelCliReal, BenchJson) {
  const Result r =
      run("model bench --model '" + model_ +
          "' --ctx 64 --decode 4 --threads 1 --kv-dtype f16 --cache streaming:sinks=4,recent=60 "
          "--json");
  ASSERT_EQ(r.code, 0);
  const attnkit::testing::JsonValue v = attnkit::testing::parse_json(r.out);
  EXPECT_EQ(v["kv_dtype"].text, "f16");
  EXPECT_EQ(v["cache"].text, "streaming:sinks=4,recent=60");
  EXPECT_EQ(v["ctx"].number, 64);
  EXPECT_EQ(v["decode"].number, 4);
  EXPECT_GT(v["prefill_tokens_per_s"].number, 0.0);
  EXPECT_GT(v["decode_tokens_per_s"].number, 0.0);
}

TEST_F(ModelCliReal, CaptureWritesPostRopeTensors) {
  const std::string dir = testing::TempDir() + "model_capture_" + std::to_string(getpid());
  const Result r = run("model capture --model '" + model_ +
                       "' --text /usr/share/common-licenses/GPL-3 --ctx 32 --layers 0,29 --out '" +
                       dir + "' --threads 1");
  ASSERT_EQ(r.code, 0);
  for (const char* layer : {"0", "29"}) {
    const attnkit::Tensor q = attnkit::read_npy(dir + "/layer" + layer + "_q.npy", "q");
    const attnkit::Tensor k = attnkit::read_npy(dir + "/layer" + layer + "_k.npy", "k");
    const attnkit::Tensor v = attnkit::read_npy(dir + "/layer" + layer + "_v.npy", "v");
    EXPECT_EQ(q.shape(), (std::vector<int64_t>{1, 9, 32, 64}));
    EXPECT_EQ(k.shape(), (std::vector<int64_t>{1, 3, 32, 64}));
    EXPECT_EQ(v.shape(), (std::vector<int64_t>{1, 3, 32, 64}));
    for (const char* kind : {"q", "k", "v"})
      std::remove((dir + "/layer" + layer + "_" + kind + ".npy").c_str());
  }
  rmdir(dir.c_str());
  EXPECT_EQ(run("model capture --model '" + model_ +
                "' --text /usr/share/common-licenses/GPL-3 --ctx 32 --layers 30 --out /tmp/x")
                .code,
            2);
}

}  // namespace
