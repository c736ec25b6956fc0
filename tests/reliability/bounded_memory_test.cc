// Requests whose memory would exceed the machine's are refused with one clear Error before
// anything large is allocated: tensors, block masks (which grow list by list and stop as soon as
// they pass half the memory), KV caches; in the CLI, exit 2 and one line, quickly. The memory cap
// is lowered with ATTNKIT_MEMORY_LIMIT so that the refusals come early and cheaply.
#include <gtest/gtest.h>

#include <chrono>
#include <cstdlib>
#include <string>

#include "attnkit/error.h"
#include "attnkit/pattern.h"
#include "attnkit/tensor.h"
#include "core/memory.h"
#include "model/llama.h"
#include "support/cli_runner.h"
#include "support/tiny_model.h"

namespace attnkit::testing {
namespace {

// Sets ATTNKIT_MEMORY_LIMIT for the scope (each test runs in its own process under ctest).
class MemoryCap {
 public:
  explicit MemoryCap(const char* bytes) { setenv("ATTNKIT_MEMORY_LIMIT", bytes, 1); }
  ~MemoryCap() { unsetenv("ATTNKIT_MEMORY_LIMIT"); }
};

// The Error `f` throws (fails the test when it throws nothing or something else).
template <class F>
Error error_of(F f) {
  try {
    f();
  } catch (const Error& e) {
    return e;
  }
  ADD_FAILURE() << "no Error thrown";
  return Error("", "");
}

TEST(BoundedMemory, TheCapIsReadAndNeverRaisesTheMachineLimit) {
  const uint64_t machine = memory_limit();
  EXPECT_GT(machine, uint64_t{1} << 28);
  {
    const MemoryCap cap("1000000");
    EXPECT_EQ(memory_limit(), 1000000u);
  }
  {
    const MemoryCap cap("99999999999999999999");  // unparsable (overflow): ignored
    EXPECT_EQ(memory_limit(), machine);
  }
}

TEST(BoundedMemory, TensorsLargerThanMemoryAreRefused) {
  const Error e = error_of([] { Tensor({1 << 20, 1 << 20, 1 << 10}, DType::kF32); });
  EXPECT_EQ(e.argument(), "shape");
  EXPECT_NE(e.message().find("more than this machine's"), std::string::npos) << e.message();
  const MemoryCap cap("1000000");
  EXPECT_THROW(Tensor({1000, 1000}, DType::kF32), Error);  // 4 MB over a 1 MB cap
  EXPECT_NO_THROW(Tensor({100, 100}, DType::kF32));
}

TEST(BoundedMemory, BlockMasksStopGrowingWhenTooLarge) {
  const MemoryCap cap("100000000");  // 100 MB: a causal mask of 4M tokens needs ~22 GB
  const auto pattern = make_pattern("causal");
  const auto start = std::chrono::steady_clock::now();
  const Error e = error_of(
      [&] { pattern->plan(PlanInputs::shapes(1, 1, 1, int64_t{1} << 22, int64_t{1} << 22)); });
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  EXPECT_EQ(e.argument(), "block_mask");
  EXPECT_NE(e.message().find("more than this machine's"), std::string::npos) << e.message();
  // Refused while small: the whole mask takes minutes to build (measured: 3.5 s to refuse at
  // the real 24 GB limit, 16M tokens), the refusal here well under a second.
  EXPECT_LT(seconds, 20.0);
}

TEST(BoundedMemory, KvCachesLargerThanMemoryAreRefused) {
  const MemoryCap cap("100000000");  // the tiny model's cache is 1 KiB per token
  const Error e = error_of([] { model::LlamaSession(model::tiny().model, 1 << 20, 1); });
  EXPECT_EQ(e.argument(), "max_context");
  EXPECT_NE(e.message().find("KV cache"), std::string::npos) << e.message();
  EXPECT_NO_THROW(model::LlamaSession(model::tiny().model, 1024, 1));
}

TEST(BoundedMemory, CliRefusesWithOneLineAndExitTwo) {
  const MemoryCap cap("100000000");
  const CliResult mask =
      run_cli({"mask", "--pattern", "causal", "--nq", "4194304", "--nk", "4194304"});
  EXPECT_TRUE(IsCleanError(mask, "block_mask"));
  const CliResult bench =
      run_cli({"bench", "--n", "4096", "--d", "64", "--heads", "8", "--batch", "4096"});
  EXPECT_TRUE(IsCleanError(bench, "shape"));
  const CliResult compare = run_cli({"compare", "--n", "1000000", "--reps", "1"});
  EXPECT_TRUE(IsCleanError(compare, "shape"));
}

}  // namespace
}  // namespace attnkit::testing
