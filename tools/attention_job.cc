// Input checks and the attention call shared by `run` and `bench` (see attention_job.h).
#include "attention_job.h"

#include <algorithm>
#include <cmath>

#include "attnkit/block_mask.h"
#include "attnkit/error.h"
#include "core/timing.h"

namespace attnkit::cli {
namespace {

std::string dim(const char* name, int64_t value) {
  return std::string(name) + "=" + std::to_string(value);
}

}  // namespace

void check_attention_shapes(const Tensor& q, const Tensor& k, const Tensor& v) {
  const std::pair<const Tensor*, const char*> inputs[] = {{&q, "--q"}, {&k, "--k"}, {&v, "--v"}};
  const char* layout[] = {"[B,Hq,Nq,D]", "[B,Hkv,Nk,D]", "[B,Hkv,Nk,Dv]"};
  for (int i = 0; i < 3; ++i) {
    const auto& [tensor, name] = inputs[i];
    check(tensor->shape().size() == 4, name,
          "shape " + shape_string(tensor->shape()) + " must have rank 4 " + layout[i]);
    for (int64_t d : tensor->shape())
      check(d > 0, name, "shape " + shape_string(tensor->shape()) + " has a zero-size dimension");
  }
  const auto& qs = q.shape();
  const auto& ks = k.shape();
  const auto& vs = v.shape();
  check(ks[0] == qs[0], "--k",
        "batch " + std::to_string(ks[0]) + " differs from --q's batch " + std::to_string(qs[0]));
  check(vs[0] == qs[0], "--v",
        "batch " + std::to_string(vs[0]) + " differs from --q's batch " + std::to_string(qs[0]));
  check(ks[3] == qs[3], "--k",
        "head dim " + dim("D", ks[3]) + " differs from --q's " + dim("D", qs[3]));
  check(vs[1] == ks[1], "--v",
        "kv heads " + std::to_string(vs[1]) + " differ from --k's " + std::to_string(ks[1]));
  check(vs[2] == ks[2], "--v",
        "length " + dim("Nk", vs[2]) + " differs from --k's " + dim("Nk", ks[2]));
  check(qs[1] % ks[1] == 0, "--k",
        "query heads Hq=" + std::to_string(qs[1]) +
            " must be a multiple of kv heads Hkv=" + std::to_string(ks[1]));
}

void check_finite(const Tensor& tensor, const std::string& argument, const std::string& why) {
  const int64_t count = tensor.numel();
  const TensorView view = tensor.view();
  auto report = [&](int64_t index, float value) {
    throw Error(argument, std::string("contains ") + (std::isnan(value) ? "NaN" : "Inf") +
                              " at flat index " + std::to_string(index) + why);
  };
  if (tensor.dtype() == DType::kF32) {
    const float* data = tensor.f32();
    for (int64_t i = 0; i < count; ++i)
      if (!std::isfinite(data[i])) report(i, data[i]);
    return;
  }
  // f16 / bf16: an all-ones exponent field is Inf or NaN.
  const uint16_t* data = static_cast<const uint16_t*>(view.data);
  const uint16_t exponent = tensor.dtype() == DType::kF16 ? 0x7c00 : 0x7f80;
  for (int64_t i = 0; i < count; ++i) {
    if ((data[i] & exponent) == exponent)
      report(i, tensor.dtype() == DType::kF16 ? f16_to_f32(data[i]) : bf16_to_f32(data[i]));
  }
}

RunStats run_attention(const AttentionArgs& args, const Pattern* pattern) {
  if (pattern) return pattern->run(args);
  const double start = now_seconds();
  attention(args);
  RunStats stats;
  stats.seconds = now_seconds() - start;
  stats.pairs = dense_pairs(args.q.shape[2], args.k.shape[2], args.causal);
  stats.density = stats.pairs / (static_cast<double>(args.q.shape[2]) * args.k.shape[2]);
  return stats;
}

}  // namespace attnkit::cli
