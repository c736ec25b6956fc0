// What the binding's files share (internal to python/): arrays seen as attnkit views, and the
// finiteness check of inputs. Arrays arrive as nanobind ndarrays (numpy through the buffer
// protocol, torch and others through DLPack) and are viewed, never copied.
#pragma once

#include <nanobind/nanobind.h>
#include <nanobind/ndarray.h>
#include <nanobind/stl/optional.h>

#include <cmath>
#include <memory>
#include <optional>
#include <string>

#include "attnkit/error.h"
#include "attnkit/pattern.h"
#include "attnkit/tensor.h"

namespace attnkit::python {

namespace nb = nanobind;

using InArray = nb::ndarray<nb::ro, nb::device::cpu>;
using OutArray = nb::ndarray<nb::device::cpu>;

inline DType dtype_of(const nb::dlpack::dtype& t, const char* name) {
  if (t.lanes == 1 && t.bits == 32 && t.code == static_cast<uint8_t>(nb::dlpack::dtype_code::Float))
    return DType::kF32;
  if (t.lanes == 1 && t.bits == 16 && t.code == static_cast<uint8_t>(nb::dlpack::dtype_code::Float))
    return DType::kF16;
  if (t.lanes == 1 && t.bits == 16 &&
      t.code == static_cast<uint8_t>(nb::dlpack::dtype_code::Bfloat))
    return DType::kBF16;
  throw nb::type_error(
      (std::string(name) + ": dtype is not supported (float32, float16 or bfloat16 expected)")
          .c_str());
}

// A 4-D array [B, H, N, D], or with `rows` a 3-D per-row array [B, H, N] seen as [B, H, N, 1].
template <class Array>
inline TensorLayout layout_of(const Array& a, const char* name, bool rows) {
  const size_t want = rows ? 3 : 4;
  check(a.ndim() == want, name,
        "must have rank " + std::to_string(want) + ", got rank " + std::to_string(a.ndim()));
  TensorLayout layout;
  layout.dtype = dtype_of(a.dtype(), name);
  for (size_t i = 0; i < want; ++i) {
    layout.shape[i] = static_cast<int64_t>(a.shape(i));
    layout.stride[i] = static_cast<int64_t>(a.stride(i));
    check(layout.stride[i] >= 0 || layout.shape[i] <= 1, name,
          "negative strides are not supported");
  }
  if (rows) {
    layout.shape[3] = 1;
    layout.stride[3] = 1;
  }
  return layout;
}

inline TensorView view_in(const InArray& a, const char* name, bool rows = false) {
  TensorView v;
  static_cast<TensorLayout&>(v) = layout_of(a, name, rows);
  v.data = a.data();
  return v;
}

inline MutableTensorView view_out(const OutArray& a, const char* name, bool rows = false) {
  MutableTensorView v;
  static_cast<TensorLayout&>(v) = layout_of(a, name, rows);
  v.data = a.data();
  return v;
}

inline TensorView view_in(const std::optional<InArray>& a, const char* name, bool rows = false) {
  return a ? view_in(*a, name, rows) : TensorView{};
}

inline MutableTensorView view_out(const std::optional<OutArray>& a, const char* name, bool rows = false) {
  return a ? view_out(*a, name, rows) : MutableTensorView{};
}

// True when no element of the n-element row x (unit stride) has an all-ones exponent (inf or
// NaN): branch-free on the raw bits, so that it vectorises.
template <typename Bits>
inline bool exponents_finite(const void* x, int64_t n, Bits exponent) {
  const Bits* bits = static_cast<const Bits*>(x);
  bool bad = false;
  for (int64_t i = 0; i < n; ++i) bad |= (bits[i] & exponent) == exponent;
  return !bad;
}

inline bool row_finite(const TensorView& t, int64_t b, int64_t h, int64_t s) {
  const void* x = static_cast<const char*>(t.data) + t.offset(b, h, s, 0) * dtype_size(t.dtype);
  switch (t.dtype) {
    case DType::kF32:
      return exponents_finite<uint32_t>(x, t.shape[3], 0x7f800000u);
    case DType::kF16:
      return exponents_finite<uint16_t>(x, t.shape[3], 0x7c00u);
    case DType::kBF16:
      return exponents_finite<uint16_t>(x, t.shape[3], 0x7f80u);
  }
  return false;
}

// Throws Error(name, "contains NaN at index [b,h,s,d]") at the first value that is not finite.
// -inf is allowed in per-row inputs (`rows`): the LSE of a row that sees no key. Rows are
// scanned on their raw bits first; only a row with a bad value is walked element by element.
inline void check_finite(const TensorView& t, const char* name, bool rows = false) {
  if (t.empty()) return;
  for (int64_t b = 0; b < t.shape[0]; ++b)
    for (int64_t h = 0; h < t.shape[1]; ++h)
      for (int64_t s = 0; s < t.shape[2]; ++s) {
        if (t.stride[3] == 1 && row_finite(t, b, h, s)) continue;
        for (int64_t d = 0; d < t.shape[3]; ++d) {
          const float x = t.dtype == DType::kF32 ? t.row<float>(b, h, s)[d] : t.get(b, h, s, d);
          if (std::isfinite(x) || (rows && x == -INFINITY)) continue;
          const std::string index = "[" + std::to_string(b) + "," + std::to_string(h) + "," +
                                    std::to_string(s) + (rows ? "" : "," + std::to_string(d)) + "]";
          throw Error(name, std::string("contains ") + (std::isnan(x) ? "NaN" : "infinity") +
                                " at index " + index);
        }
      }
}

// A plan and what executes it: the pattern when the plan needs one (a token order, or a
// mechanism that is not one block-sparse pass); none for masks built from arrays or lists.
// Python's BlockMask.
struct Mask {
  Plan plan;
  std::shared_ptr<const Pattern> pattern;

  bool needs_pattern() const {
    return pattern && (!plan.token_order.empty() || plan.state.has_value());
  }
  const BlockMask& mask() const { return plan.mask; }
};

// Adds the context-parallel helpers of attnkit.torch's ring (python/distributed_ext.cc).
void bind_distributed(nb::module_& m);

// Adds the operators of other shapes (Lightning, SOFT, index lists, kNN) to the module
// (python/operators_ext.cc).
void bind_operators(nb::module_& m);

}  // namespace attnkit::python
