// `attnkit model ...` end to end through the CLI binary: argument errors exit 2 with one line on
// stderr, and with the real model (when set-up fetched it): info, a short ppl --json, capture.
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <string>

#include "attnkit/npy.h"
#include "model/model_files.h"

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
}

class ModelCliReal : public testing::Test {
 protected:
  void SetUp() override {
    model_ = attnkit::model::locate_model(ATTNKIT_SOURCE_DIR);
    if (model_.empty()) GTEST_SKIP() << "model file absent: run scripts/setup-model.sh";
  }
  std::string model_;
};

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
  EXPECT_EQ(r.code, 0);
  EXPECT_EQ(r.out.rfind("{\"tokens\":126,\"ppl\":", 0), 0u) << r.out;
  EXPECT_NE(r.out.find("\"windows\":2}"), std::string::npos) << r.out;
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
