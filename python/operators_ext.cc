// The operators of other shapes in attnkit._ext: Lightning attention, SOFT, index-list
// attention and kNN lists. Outputs are allocated by the Python layer and written in place; the
// GIL is released while the operators run.
#include <nanobind/nanobind.h>
#include <nanobind/ndarray.h>
#include <nanobind/stl/optional.h>
#include <nanobind/stl/vector.h>

#include <optional>
#include <string>
#include <vector>

#include "attnkit/error.h"
#include "attnkit/index_attention.h"
#include "attnkit/lightning.h"
#include "attnkit/soft.h"
#include "ext_views.h"

namespace attnkit::python {
namespace {

using namespace nb::literals;

// ---- Lightning ----

LightningArgs lightning_args(const InArray& q, const InArray& k, const InArray& v,
                             const std::vector<float>& slopes, const std::optional<InArray>& state,
                             int64_t block, int threads) {
  LightningArgs a;
  a.q = view_in(q, "q");
  a.k = view_in(k, "k");
  a.v = view_in(v, "v");
  a.slopes = slopes;
  a.state_in = view_in(state, "state");
  a.block = block;
  a.threads = threads;
  check_finite(a.q, "q");
  check_finite(a.k, "k");
  check_finite(a.v, "v");
  check_finite(a.state_in, "state");
  return a;
}

void run_lightning(const InArray& q, const InArray& k, const InArray& v,
                   const std::vector<float>& slopes, const std::optional<InArray>& state,
                   const OutArray& out, const std::optional<OutArray>& state_out, int64_t block,
                   int threads) {
  LightningArgs a = lightning_args(q, k, v, slopes, state, block, threads);
  a.out = view_out(out, "out");
  a.state_out = view_out(state_out, "state_out");
  nb::gil_scoped_release release;
  lightning_attention(a);
}

void run_lightning_backward(const InArray& q, const InArray& k, const InArray& v,
                            const std::vector<float>& slopes, const std::optional<InArray>& state,
                            const InArray& dout, const std::optional<InArray>& dstate_out,
                            const OutArray& dq, const OutArray& dk, const OutArray& dv,
                            const std::optional<OutArray>& dstate_in, int64_t block, int threads) {
  LightningBackwardArgs g;
  g.forward = lightning_args(q, k, v, slopes, state, block, threads);
  g.dout = view_in(dout, "dout");
  g.dstate_out = view_in(dstate_out, "dstate_out");
  check_finite(g.dout, "dout");
  check_finite(g.dstate_out, "dstate_out");
  g.dq = view_out(dq, "dq");
  g.dk = view_out(dk, "dk");
  g.dv = view_out(dv, "dv");
  g.dstate_in = view_out(dstate_in, "dstate_in");
  nb::gil_scoped_release release;
  lightning_attention_backward(g);
}

// ---- SOFT ----

SoftArgs soft_args(const InArray& q, const InArray& v, const std::optional<InArray>& landmarks,
                   int64_t grid_height, int64_t grid_width, int64_t stride, float scale,
                   int iterations, bool exact, int threads) {
  SoftArgs a;
  a.q = view_in(q, "q");
  a.v = view_in(v, "v");
  a.landmarks = view_in(landmarks, "landmarks");
  a.grid_height = grid_height, a.grid_width = grid_width, a.stride = stride;
  a.scale = scale;
  a.newton_iterations = iterations;
  a.inverse = exact ? SoftInverse::kExact : SoftInverse::kNewton;
  a.threads = threads;
  check_finite(a.q, "q");
  check_finite(a.v, "v");
  check_finite(a.landmarks, "landmarks");
  return a;
}

void run_soft(const InArray& q, const InArray& v, const std::optional<InArray>& landmarks,
              int64_t grid_height, int64_t grid_width, int64_t stride, float scale,
              int iterations, bool exact, const OutArray& out, int threads) {
  SoftArgs a = soft_args(q, v, landmarks, grid_height, grid_width, stride, scale, iterations,
                         exact, threads);
  a.out = view_out(out, "out");
  nb::gil_scoped_release release;
  soft_attention(a);
}

void run_soft_backward(const InArray& q, const InArray& v, const std::optional<InArray>& landmarks,
                       int64_t grid_height, int64_t grid_width, int64_t stride, float scale,
                       int iterations, bool exact, const InArray& dout, const OutArray& dq,
                       const OutArray& dv, const std::optional<OutArray>& dlandmarks,
                       int threads) {
  SoftBackwardArgs g;
  g.forward = soft_args(q, v, landmarks, grid_height, grid_width, stride, scale, iterations,
                        exact, threads);
  g.dout = view_in(dout, "dout");
  check_finite(g.dout, "dout");
  g.dq = view_out(dq, "dq");
  g.dv = view_out(dv, "dv");
  g.dlandmarks = view_out(dlandmarks, "dlandmarks");
  nb::gil_scoped_release release;
  soft_attention_backward(g);
}

// The number of landmarks a call would use (checked as the call checks it).
int64_t soft_landmarks(const InArray& q, const InArray& v, const std::optional<InArray>& landmarks,
                       int64_t grid_height, int64_t grid_width, int64_t stride) {
  SoftArgs a = soft_args(q, v, landmarks, grid_height, grid_width, stride, 0.0f, 20, false, 0);
  return soft_landmark_count(a);
}

// ---- Index lists ----

// Padded int32 lists [B or 1, H or 1, Nq, K] (strides in elements), or CSR offsets (int64, Nq +
// 1) and columns (int32).
IndexLists lists_of(const std::optional<InArray>& padded, const std::optional<InArray>& offsets,
               const std::optional<InArray>& columns) {
  IndexLists l;
  auto is_int = [](const InArray& a, int bits) {
    return a.dtype().code == static_cast<uint8_t>(nb::dlpack::dtype_code::Int) &&
           a.dtype().bits == bits && a.dtype().lanes == 1;
  };
  if (padded) {
    const InArray& a = *padded;
    if (!is_int(a, 32) || a.ndim() != 4) throw nb::type_error("indices: must be an int32 array of rank 4");
    l.padded = static_cast<const int32_t*>(a.data());
    for (int i = 0; i < 4; ++i) {
      l.shape[i] = static_cast<int64_t>(a.shape(i));
      l.stride[i] = static_cast<int64_t>(a.stride(i));
    }
    return l;
  }
  check(offsets && columns, "indices", "give padded lists or CSR offsets and columns");
  if (!is_int(*offsets, 64) || offsets->ndim() != 1 || offsets->stride(0) != 1)
    throw nb::type_error("indices: CSR offsets must be a contiguous int64 vector");
  if (!is_int(*columns, 32) || columns->ndim() != 1 || columns->stride(0) != 1)
    throw nb::type_error("indices: CSR columns must be a contiguous int32 vector");
  l.offsets = static_cast<const int64_t*>(offsets->data());
  l.columns = static_cast<const int32_t*>(columns->data());
  return l;
}

AttentionArgs index_args(const InArray& q, const InArray& k, const InArray& v, float scale,
                         int threads) {
  AttentionArgs a;
  a.q = view_in(q, "q");
  a.k = view_in(k, "k");
  a.v = view_in(v, "v");
  a.scale = scale;
  a.threads = threads;
  check_finite(a.q, "q");
  check_finite(a.k, "k");
  check_finite(a.v, "v");
  return a;
}

void check_offsets_length(const std::optional<InArray>& offsets, const TensorView& q) {
  if (offsets)
    check(static_cast<int64_t>(offsets->shape(0)) == q.shape[2] + 1, "indices",
          "CSR offsets must have Nq + 1 = " + std::to_string(q.shape[2] + 1) + " entries, got " +
              std::to_string(offsets->shape(0)));
}

void run_index(const InArray& q, const InArray& k, const InArray& v,
               const std::optional<InArray>& padded, const std::optional<InArray>& offsets,
               const std::optional<InArray>& columns, const OutArray& out, const OutArray& lse,
               float scale, int threads) {
  AttentionArgs a = index_args(q, k, v, scale, threads);
  a.out = view_out(out, "out");
  a.lse = view_out(lse, "lse", true);
  check_offsets_length(offsets, a.q);
  const IndexLists lists = lists_of(padded, offsets, columns);
  nb::gil_scoped_release release;
  index_attention(a, lists);
}

void run_index_backward(const InArray& q, const InArray& k, const InArray& v,
                        const std::optional<InArray>& padded,
                        const std::optional<InArray>& offsets,
                        const std::optional<InArray>& columns, const InArray& out,
                        const InArray& lse, const InArray& dout,
                        const std::optional<InArray>& dlse, const OutArray& dq,
                        const OutArray& dk, const OutArray& dv, float scale, int threads) {
  BackwardArgs g;
  g.forward = index_args(q, k, v, scale, threads);
  // The backward reads O and LSE only: the const views are passed as the forward's outputs.
  const TensorView o = view_in(out, "out"), l = view_in(lse, "lse", true);
  static_cast<TensorLayout&>(g.forward.out) = o;
  g.forward.out.data = const_cast<void*>(o.data);
  static_cast<TensorLayout&>(g.forward.lse) = l;
  g.forward.lse.data = const_cast<void*>(l.data);
  g.dout = view_in(dout, "dout");
  g.dlse = view_in(dlse, "dlse", true);
  check_finite(g.dout, "dout");
  check_finite(g.dlse, "dlse", true);
  g.dq = view_out(dq, "dq");
  g.dk = view_out(dk, "dk");
  g.dv = view_out(dv, "dv");
  check_offsets_length(offsets, g.forward.q);
  const IndexLists lists = lists_of(padded, offsets, columns);
  nb::gil_scoped_release release;
  index_attention_backward(g, lists);
}

void run_knn(const InArray& points, int64_t k, const OutArray& out, int threads) {
  const bool f32 = points.dtype().code == static_cast<uint8_t>(nb::dlpack::dtype_code::Float) &&
                   points.dtype().bits == 32;
  if (!f32 || points.ndim() != 2 || points.shape(1) != 3 || points.stride(0) != 3 ||
      points.stride(1) != 1)
    throw nb::type_error("points: must be a contiguous float32 array [n, 3]");
  const int64_t n = static_cast<int64_t>(points.shape(0));
  check(out.ndim() == 2 && static_cast<int64_t>(out.shape(0)) == n &&
            static_cast<int64_t>(out.shape(1)) == k,
        "out", "must be int32 [n, k]");
  nb::gil_scoped_release release;
  knn(static_cast<const float*>(points.data()), n, k, static_cast<int32_t*>(out.data()), threads);
}

}  // namespace

void bind_operators(nb::module_& m) {
  m.def("lightning_slopes", &lightning_slopes, "heads"_a);
  m.def("lightning", &run_lightning, "q"_a, "k"_a, "v"_a, "slopes"_a, "state"_a.none(), "out"_a,
        "state_out"_a.none(), "block"_a, "threads"_a);
  m.def("lightning_backward", &run_lightning_backward, "q"_a, "k"_a, "v"_a, "slopes"_a,
        "state"_a.none(), "dout"_a, "dstate_out"_a.none(), "dq"_a, "dk"_a, "dv"_a,
        "dstate_in"_a.none(), "block"_a, "threads"_a);
  m.def("soft", &run_soft, "q"_a, "v"_a, "landmarks"_a.none(), "grid_height"_a, "grid_width"_a,
        "stride"_a, "scale"_a, "iterations"_a, "exact"_a, "out"_a, "threads"_a);
  m.def("soft_backward", &run_soft_backward, "q"_a, "v"_a, "landmarks"_a.none(),
        "grid_height"_a, "grid_width"_a, "stride"_a, "scale"_a, "iterations"_a, "exact"_a,
        "dout"_a, "dq"_a, "dv"_a, "dlandmarks"_a.none(), "threads"_a);
  m.def("soft_landmarks", &soft_landmarks, "q"_a, "v"_a, "landmarks"_a.none(), "grid_height"_a,
        "grid_width"_a, "stride"_a);
  m.def("index_attention", &run_index, "q"_a, "k"_a, "v"_a, "padded"_a.none(), "offsets"_a.none(),
        "columns"_a.none(), "out"_a, "lse"_a, "scale"_a, "threads"_a);
  m.def("index_attention_backward", &run_index_backward, "q"_a, "k"_a, "v"_a, "padded"_a.none(),
        "offsets"_a.none(), "columns"_a.none(), "out"_a, "lse"_a, "dout"_a, "dlse"_a.none(),
        "dq"_a, "dk"_a, "dv"_a, "scale"_a, "threads"_a);
  m.def("knn", &run_knn, "points"_a, "k"_a, "out"_a, "threads"_a);
}

}  // namespace attnkit::python
