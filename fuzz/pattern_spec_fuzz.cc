// Fuzz target: pattern spec strings, then a plan, a run and the backward through the plan on
// small shapes.
// Input: 4 bytes pick the shapes (batch 1-2, kv heads 1-2, query heads per kv head 1-2,
// tokens 1-256, self-attention or a shorter query block, causal or not), the rest is the spec.
// Property: make_pattern and plan either refuse with one clean Error or run, and every output
// row and every gradient is finite (a row that sees no key is 0).
#include <cmath>
#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "attnkit/attention.h"
#include "attnkit/pattern.h"
#include "attnkit/tensor.h"
#include "fuzz_support.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace attnkit;
  if (size < 4) return 0;
  const int64_t batch = 1 + (data[0] & 1), heads_kv = 1 + ((data[0] >> 1) & 1);
  const int64_t heads_q = heads_kv * (1 + ((data[0] >> 2) & 1));
  const bool causal = (data[0] >> 3) & 1, self = !((data[0] >> 4) & 1);
  const int64_t nk = 1 + (data[1] | ((data[2] & 1) << 8)) % 256;
  const int64_t nq = self ? nk : 1 + data[3] % nk;
  const std::string spec(reinterpret_cast<const char*>(data) + 4, size - 4);
  try {
    const auto pattern = make_pattern(spec);
    std::mt19937 rng(size);
    std::normal_distribution<float> normal(0.0f, 1.0f);
    auto random = [&](std::vector<int64_t> shape) {
      Tensor t(shape, DType::kF32);
      for (int64_t i = 0; i < t.numel(); ++i) t.f32()[i] = normal(rng);
      return t;
    };
    const int64_t dim = 16;
    const Tensor q = random({batch, heads_q, nq, dim}), k = random({batch, heads_kv, nk, dim}),
                 v = random({batch, heads_kv, nk, dim});
    Tensor out({batch, heads_q, nq, dim}, DType::kF32), lse({batch, heads_q, nq}, DType::kF32);
    AttentionArgs args;
    args.q = q.view(), args.k = k.view(), args.v = v.view();
    args.out = out.view(), args.lse = lse.rows_view();
    args.causal = causal;
    args.threads = 1;
    const Plan plan = pattern->plan(PlanInputs::of(args));
    (void)plan.nq();
    pattern->run(args);
    for (int64_t i = 0; i < out.numel(); ++i)
      fuzz::expect(std::isfinite(out.f32()[i]), "finite output");
    const Tensor dout = random({batch, heads_q, nq, dim}), dlse = random({batch, heads_q, nq});
    Tensor dq(q.shape(), DType::kF32), dk(k.shape(), DType::kF32), dv(v.shape(), DType::kF32);
    BackwardArgs grads;
    grads.forward = args;
    grads.dout = dout.view(), grads.dlse = dlse.rows_view();
    grads.dq = dq.view(), grads.dk = dk.view(), grads.dv = dv.view();
    pattern->backward(grads, plan);
    for (const Tensor* g : {&dq, &dk, &dv})
      for (int64_t i = 0; i < g->numel(); ++i)
        fuzz::expect(std::isfinite(g->f32()[i]), "finite gradient");
  } catch (const Error& error) {
    fuzz::expect_clean_message(error.what());
  }
  return 0;
}
