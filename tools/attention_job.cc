// Input checks and the attention call shared by `run` and `bench` (see attention_job.h).
#include "attention_job.h"

#include <algorithm>
#include <cmath>
#include <filesystem>

#include "args.h"
#include "attnkit/block_mask.h"
#include "attnkit/error.h"
#include "attnkit/npy.h"
#include "core/timing.h"

namespace attnkit::cli {
namespace {

std::string dim(const char* name, int64_t value) {
  return std::string(name) + "=" + std::to_string(value);
}

}  // namespace

JobOptions job_options(const Args& args) {
  JobOptions options;
  options.dtype = parse_dtype(args.str("--dtype", "f32"), "--dtype");
  options.threads = static_cast<int>(args.integer("--threads", 0, 1, 1024));
  const double scale = args.real("--scale", 0.0, -1e30, 1e30);
  check(!args.has("--scale") || scale != 0.0, "--scale", "must be non-zero, got 0");
  options.scale = static_cast<float>(scale);
  options.causal = args.flag("--causal");
  if (args.has("--pattern")) options.pattern = make_pattern(args.str("--pattern"));
  return options;
}

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

void check_output_path(const std::string& path, const std::string& argument) {
  namespace fs = std::filesystem;
  check(!path.empty(), argument, "empty path");
  std::error_code error;
  check(!fs::is_directory(path, error), argument, "'" + path + "' is a directory");
  const fs::path parent = fs::path(path).parent_path();
  check(parent.empty() || fs::is_directory(parent, error), argument,
        "directory '" + parent.string() + "' does not exist");
}

Tensor load_input(const std::string& path, const std::string& argument, DType dtype) {
  Tensor tensor = read_npy(path, argument);
  check_finite(tensor, argument);
  if (tensor.dtype() == dtype) return tensor;
  Tensor converted = tensor.to(dtype);
  // f32 values beyond 65504 overflow f16 to infinity.
  check_finite(converted, argument, std::string(" after conversion to ") + dtype_name(dtype));
  return converted;
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

void run_attention_backward(const BackwardArgs& args, const Pattern* pattern, const Plan* plan) {
  if (pattern) return pattern->backward(args, *plan);
  attention_backward(args);
}

void write_outputs(const std::vector<std::pair<std::string, const Tensor*>>& files,
                   const std::vector<std::string>& arguments) {
  for (size_t x = 0; x < files.size(); ++x) {
    try {
      write_npy(files[x].first, *files[x].second, arguments[x]);
    } catch (...) {
      for (size_t y = 0; y < x; ++y) std::filesystem::remove(files[y].first);  // all or none
      throw;
    }
  }
}

}  // namespace attnkit::cli
