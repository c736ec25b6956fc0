// The library is safe to call from several threads at once: attention (tile, decode,
// block-sparse), patterns (one Pattern object shared by every thread, static and content-based)
// and the model (one LlamaModel shared, a LlamaSession per thread). Six threads run every job in
// rotated orders, twice, while each job uses its own OpenMP team; every result must be bitwise
// the serial one. Under ThreadSanitizer (make tsan) this test also proves the absence of data
// races on these paths.
#include <gtest/gtest.h>

#include <cstring>
#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "attnkit/attention.h"
#include "attnkit/pattern.h"
#include "model/llama.h"
#include "support/attention_check.h"
#include "support/tiny_model.h"

namespace attnkit::testing {
namespace {

using Job = std::function<std::vector<float>()>;

// O and LSE of one attention call on seeded inputs.
std::vector<float> attention_result(const Problem& p, int threads,
                                    const std::function<void(const AttentionArgs&)>& kernel) {
  Inputs in = make_inputs(p);
  AttentionArgs a = in.args();
  a.causal = p.causal;
  a.threads = threads;
  kernel(a);
  std::vector<float> result(in.out.f32(), in.out.f32() + in.out.numel());
  result.insert(result.end(), in.lse.f32(), in.lse.f32() + in.lse.numel());
  return result;
}

Problem problem(int64_t nq, int64_t nk, DType dtype, bool causal) {
  Problem p;
  p.batch = 1, p.heads_q = 4, p.heads_kv = 2, p.nq = nq, p.nk = nk, p.dim = 64, p.dim_v = 64;
  p.dtype = dtype, p.causal = causal;
  return p;
}

std::vector<Job> jobs() {
  std::vector<Job> list;
  list.push_back([] {
    return attention_result(problem(200, 300, DType::kF32, false), 1,
                            [](const AttentionArgs& a) { attention(a); });
  });
  list.push_back([] {
    return attention_result(problem(257, 257, DType::kBF16, true), 2,
                            [](const AttentionArgs& a) { attention(a); });
  });
  list.push_back([] {
    return attention_result(problem(3, 4000, DType::kF16, true), 2,
                            [](const AttentionArgs& a) { attention_decode(a); });
  });
  // Pattern objects shared by every thread (plan() and run() are const).
  for (const std::string spec :
       {"window:size=64", "natten1d:kernel=33", "natten2d:height=16,width=24,kernel=5",
        "hip:k=64,block_q=16,sink=4,window=16",
        "infllm_v2:dense_len=0,block=16,init=1,local=1,topk=4,kernel=16,stride=8,lse_kernel=32,"
        "lse_stride=16",
        "routing:clusters=3,window=128", "hyper:min_seq=64,block=16,samples=32",
        "dhsa:block=16,budget=64,local=16"}) {
    std::shared_ptr<const Pattern> pattern = make_pattern(spec);
    list.push_back([pattern] {
      return attention_result(problem(384, 384, DType::kF32, true), 1,
                              [&](const AttentionArgs& a) { pattern->run(a); });
    });
  }
  // The model: a session per call on the one shared model, prefill then three decode steps.
  list.push_back([] {
    model::LlamaSession session(model::tiny().model, 64, 2);
    std::vector<int32_t> tokens(30);
    for (size_t t = 0; t < tokens.size(); ++t) tokens[t] = static_cast<int32_t>((t * 37) % 256);
    session.forward(tokens.data(), static_cast<int64_t>(tokens.size()));
    std::vector<float> result = session.last_logits();
    for (int32_t step = 0; step < 3; ++step) {
      session.forward(&step, 1);
      const std::vector<float> logits = session.last_logits();
      result.insert(result.end(), logits.begin(), logits.end());
    }
    return result;
  });
  return list;
}

TEST(ConcurrentCalls, SixThreadsGiveTheSerialResults) {
  const std::vector<Job> all = jobs();
  std::vector<std::vector<float>> serial;
  for (const Job& job : all) serial.push_back(job());
  constexpr int kThreads = 6, kRounds = 2;
  std::vector<std::vector<std::vector<float>>> results(kThreads);
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t)
    threads.emplace_back([&, t] {
      for (int round = 0; round < kRounds; ++round)
        for (size_t n = 0; n < all.size(); ++n) {
          const size_t job = (n + t * 3 + round) % all.size();  // rotated: jobs overlap
          results[t].push_back(all[job]());
          results[t].back().push_back(static_cast<float>(job));  // which job, for the check
        }
    });
  for (auto& thread : threads) thread.join();
  for (int t = 0; t < kThreads; ++t)
    for (std::vector<float>& result : results[t]) {
      const size_t job = static_cast<size_t>(result.back());
      result.pop_back();
      ASSERT_EQ(result.size(), serial[job].size()) << "job " << job;
      EXPECT_EQ(std::memcmp(result.data(), serial[job].data(), result.size() * sizeof(float)), 0)
          << "thread " << t << " job " << job << " differs from the serial result";
    }
}

}  // namespace
}  // namespace attnkit::testing
