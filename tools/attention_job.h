// What `attnkit run` and `attnkit bench` share: input checks and one attention call, dense or
// through a pattern (--pattern SPEC).
#pragma once

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "attnkit/attention.h"
#include "attnkit/pattern.h"
#include "attnkit/tensor.h"

namespace attnkit::cli {

// Checks that Q [B,Hq,Nq,D], K [B,Hkv,Nk,D], V [B,Hkv,Nk,Dv] fit together: rank 4, no zero-size
// dimension, equal batch, Hq % Hkv == 0, equal D, equal Nk. Errors name "--q", "--k" or "--v".
void check_attention_shapes(const Tensor& q, const Tensor& k, const Tensor& v);

// Throws Error(argument, "contains NaN at flat index 17") at the first NaN or infinity.
// `why` is appended, e.g. " after conversion to f16" when the conversion overflowed.
void check_finite(const Tensor& tensor, const std::string& argument, const std::string& why = "");

class Args;

// What `run` and `grad` read alike: --dtype (default f32), --threads, --scale (non-zero when
// given; 0 = 1/sqrt(D)), --causal and --pattern.
struct JobOptions {
  DType dtype = DType::kF32;
  int threads = 0;
  float scale = 0.0f;
  bool causal = false;
  std::unique_ptr<Pattern> pattern;
};
JobOptions job_options(const Args& args);

// Fails early (before the work) when `path` cannot become a file: its directory is missing or
// it names a directory.
void check_output_path(const std::string& path, const std::string& argument);

// A .npy input, checked finite, converted to `dtype` (and checked finite again: f32 values past
// 65504 overflow f16).
Tensor load_input(const std::string& path, const std::string& argument, DType dtype);

// The dense kernel, or the pattern's run() when `pattern` is set. Without a pattern the stats
// hold the exact dense / bottom-right causal pair count and no planning time.
RunStats run_attention(const AttentionArgs& args, const Pattern* pattern);
// Its backward: dense / causal without a pattern; else through `plan`, the plan of the forward
// (required with a pattern).
void run_attention_backward(const BackwardArgs& args, const Pattern* pattern, const Plan* plan);

// Writes every (path, tensor) as .npy, or none: a failure removes the files already written.
// arguments[x] names files[x] in errors.
void write_outputs(const std::vector<std::pair<std::string, const Tensor*>>& files,
                   const std::vector<std::string>& arguments);

}  // namespace attnkit::cli
