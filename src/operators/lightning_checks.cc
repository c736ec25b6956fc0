#include "operators/lightning_checks.h"

#include <cmath>
#include <string>

#include "attnkit/error.h"
#include "core/view_checks.h"

namespace attnkit {
namespace {

// The inputs, slopes, optional initial state, block and threads: what forward and backward share.
LightningShape validate_inputs(const LightningArgs& a) {
  check_nonempty(a.q, "q");
  check_nonempty(a.k, "k");
  check_nonempty(a.v, "v");
  const LightningShape s{a.q.shape[0], a.q.shape[1], a.q.shape[2], a.q.shape[3], a.v.shape[3]};
  check(a.k.dtype == a.q.dtype && a.v.dtype == a.q.dtype, "k",
        std::string("q, k and v must share one dtype, got ") + dtype_name(a.q.dtype) + ", " +
            dtype_name(a.k.dtype) + " and " + dtype_name(a.v.dtype));
  check_shaped(a.k, {s.batch, s.heads, s.n, s.dim}, "k");
  check_shaped(a.v, {s.batch, s.heads, s.n, s.dim_v}, "v");
  check(s.dim <= 1024 && s.dim_v <= 1024, "q",
        "head dims above 1024 are not supported: q " + a.q.describe() + ", v " + a.v.describe());
  for (const auto& [view, name] : {std::pair{&a.q, "q"}, {&a.k, "k"}, {&a.v, "v"}})
    check(unit_last_stride(*view), name, "the head dim must be contiguous (stride 1)");
  if (!a.slopes.empty()) {
    check(static_cast<int64_t>(a.slopes.size()) == s.heads, "slopes",
          "must have one entry per head (" + std::to_string(s.heads) + "), got " +
              std::to_string(a.slopes.size()));
    for (size_t h = 0; h < a.slopes.size(); ++h)
      check(std::isfinite(a.slopes[h]) && a.slopes[h] >= 0.0f, "slopes",
            "must be finite and >= 0 (lambda = exp(-slope) <= 1), got " +
                std::to_string(a.slopes[h]) + " for head " + std::to_string(h));
  }
  if (!a.state_in.empty()) {
    check(a.state_in.dtype == DType::kF32, "state_in", "must be f32, got " + a.state_in.describe());
    check_shaped(a.state_in, {s.batch, s.heads, s.dim, s.dim_v}, "state_in");
    check(unit_last_stride(a.state_in), "state_in", "the last dim must be contiguous (stride 1)");
  }
  check(a.block >= 1 && a.block <= 1024, "block",
        "must be in [1, 1024], got " + std::to_string(a.block));
  check(a.threads >= 0 && a.threads <= 1024, "threads",
        "must be in [0, 1024], got " + std::to_string(a.threads));
  return s;
}

}  // namespace

LightningShape validate_lightning(const LightningArgs& a) {
  const LightningShape s = validate_inputs(a);
  check_f32_output(a.out, {s.batch, s.heads, s.n, s.dim_v}, "out");
  if (!a.state_out.empty())
    check_f32_output(a.state_out, {s.batch, s.heads, s.dim, s.dim_v}, "state_out");
  return s;
}

LightningShape validate_lightning(const LightningBackwardArgs& g) {
  const LightningShape s = validate_inputs(g.forward);
  check(g.dout.data != nullptr, "dout", "is missing (null data)");
  check_shaped(g.dout, {s.batch, s.heads, s.n, s.dim_v}, "dout");
  check(unit_last_stride(g.dout), "dout", "the head dim must be contiguous (stride 1)");
  if (!g.dstate_out.empty()) {
    check(g.dstate_out.dtype == DType::kF32, "dstate_out",
          "must be f32, got " + g.dstate_out.describe());
    check_shaped(g.dstate_out, {s.batch, s.heads, s.dim, s.dim_v}, "dstate_out");
    check(unit_last_stride(g.dstate_out), "dstate_out",
          "the last dim must be contiguous (stride 1)");
  }
  check_f32_output(g.dq, {s.batch, s.heads, s.n, s.dim}, "dq");
  check_f32_output(g.dk, {s.batch, s.heads, s.n, s.dim}, "dk");
  check_f32_output(g.dv, {s.batch, s.heads, s.n, s.dim_v}, "dv");
  if (!g.dstate_in.empty())
    check_f32_output(g.dstate_in, {s.batch, s.heads, s.dim, s.dim_v}, "dstate_in");
  return s;
}

}  // namespace attnkit
