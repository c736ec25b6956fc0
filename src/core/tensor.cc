// Tensors and dtypes: f16 / bf16 <-> f32 scalar conversion, strided views, owning C-order tensors.
//
// Conversions round to nearest, ties to even, in integer arithmetic (independent of the FPU's
// rounding mode or flush-to-zero). Infinities map to infinities, NaNs stay NaN (quieted, top
// payload bits kept), f16 subnormals are exact both ways, and f32 values at or beyond the halfway
// point above the largest f16 (65520) become infinity.
#include "attnkit/tensor.h"

#include <bit>
#include <cmath>
#include <cstring>
#include <limits>

#include "attnkit/error.h"
#include "core/memory.h"

namespace attnkit {

size_t dtype_size(DType dtype) {
  switch (dtype) {
    case DType::kF32:
      return 4;
    case DType::kF16:
    case DType::kBF16:
      return 2;
  }
  return 0;
}

const char* dtype_name(DType dtype) {
  switch (dtype) {
    case DType::kF32:
      return "f32";
    case DType::kF16:
      return "f16";
    case DType::kBF16:
      return "bf16";
  }
  return "?";
}

DType parse_dtype(const std::string& text, const std::string& argument) {
  if (text == "f32") return DType::kF32;
  if (text == "f16") return DType::kF16;
  if (text == "bf16") return DType::kBF16;
  throw Error(argument, "unknown dtype '" + text + "' (expected f32, f16 or bf16)");
}

float f16_to_f32(uint16_t bits) {
  const uint32_t sign = static_cast<uint32_t>(bits & 0x8000u) << 16;
  const uint32_t exponent = (bits >> 10) & 0x1fu;
  const uint32_t mantissa = bits & 0x3ffu;
  if (exponent == 0) {
    // Zero or subnormal: mantissa * 2^-24, exact in f32.
    const float magnitude = std::ldexp(static_cast<float>(mantissa), -24);
    return sign ? -magnitude : magnitude;
  }
  if (exponent == 31) return std::bit_cast<float>(sign | 0x7f800000u | (mantissa << 13));
  return std::bit_cast<float>(sign | ((exponent + 112) << 23) | (mantissa << 13));
}

uint16_t f32_to_f16(float value) {
  const uint32_t x = std::bit_cast<uint32_t>(value);
  const uint16_t sign = static_cast<uint16_t>((x >> 16) & 0x8000u);
  const uint32_t magnitude = x & 0x7fffffffu;
  if (magnitude >= 0x7f800000u) {
    if (magnitude == 0x7f800000u) return sign | 0x7c00u;   // infinity
    return sign | 0x7e00u | ((magnitude >> 13) & 0x3ffu);  // NaN: quiet, keep top payload bits
  }
  // 65520 is halfway between 65504 (largest f16, odd mantissa) and 2^16: ties go to even = inf.
  if (magnitude >= 0x477ff000u) return sign | 0x7c00u;
  const uint32_t exponent = magnitude >> 23;  // biased f32 exponent
  if (exponent < 113) {
    // Below 2^-14: an f16 subnormal m * 2^-24 with m = full_mantissa >> (126 - exponent).
    if (exponent < 102) return sign;  // below 2^-25 (half the smallest subnormal): zero
    const uint32_t full = (magnitude & 0x7fffffu) | 0x800000u;
    const uint32_t shift = 126 - exponent;  // 14..24
    uint32_t m = full >> shift;
    const uint32_t rest = full & ((1u << shift) - 1);
    const uint32_t half = 1u << (shift - 1);
    if (rest > half || (rest == half && (m & 1u))) ++m;  // may carry into the smallest normal
    return sign | static_cast<uint16_t>(m);
  }
  uint32_t h = ((exponent - 112) << 10) | ((magnitude >> 13) & 0x3ffu);
  const uint32_t rest = magnitude & 0x1fffu;
  if (rest > 0x1000u || (rest == 0x1000u && (h & 1u))) ++h;  // carry may bump the exponent
  return sign | static_cast<uint16_t>(h);
}

float bf16_to_f32(uint16_t bits) { return std::bit_cast<float>(static_cast<uint32_t>(bits) << 16); }

uint16_t f32_to_bf16(float value) {
  const uint32_t x = std::bit_cast<uint32_t>(value);
  if ((x & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((x >> 16) | 0x40u);  // NaN
  const uint32_t rounding = 0x7fffu + ((x >> 16) & 1u);  // ties to even
  return static_cast<uint16_t>((x + rounding) >> 16);
}

namespace {

float read_element(const void* data, DType dtype, int64_t at) {
  switch (dtype) {
    case DType::kF32:
      return static_cast<const float*>(data)[at];
    case DType::kF16:
      return f16_to_f32(static_cast<const uint16_t*>(data)[at]);
    case DType::kBF16:
      return bf16_to_f32(static_cast<const uint16_t*>(data)[at]);
  }
  return 0.0f;
}

// A view of `data` with `layout` (TensorView for const data, MutableTensorView otherwise).
template <class View, class Data>
View with_layout(const TensorLayout& layout, Data* data) {
  View view;
  static_cast<TensorLayout&>(view) = layout;
  view.data = data;
  return view;
}

}  // namespace

std::string TensorLayout::describe() const {
  return shape_string({shape[0], shape[1], shape[2], shape[3]}) + " " + dtype_name(dtype);
}

TensorLayout TensorLayout::contiguous(DType dtype, const std::array<int64_t, 4>& shape) {
  TensorLayout layout;
  layout.dtype = dtype;
  int64_t stride = 1;
  for (int axis = 3; axis >= 0; --axis) {
    layout.shape[axis] = shape[axis];
    layout.stride[axis] = stride;
    stride *= shape[axis];
  }
  return layout;
}

float TensorView::get(int64_t b, int64_t h, int64_t s, int64_t d) const {
  return read_element(data, dtype, offset(b, h, s, d));
}

TensorView TensorView::contiguous(const void* data, DType dtype,
                                  const std::array<int64_t, 4>& shape) {
  return with_layout<TensorView>(TensorLayout::contiguous(dtype, shape), data);
}

float MutableTensorView::get(int64_t b, int64_t h, int64_t s, int64_t d) const {
  return read_element(data, dtype, offset(b, h, s, d));
}

void MutableTensorView::set(int64_t b, int64_t h, int64_t s, int64_t d, float value) const {
  const int64_t at = offset(b, h, s, d);
  switch (dtype) {
    case DType::kF32:
      static_cast<float*>(data)[at] = value;
      return;
    case DType::kF16:
      static_cast<uint16_t*>(data)[at] = f32_to_f16(value);
      return;
    case DType::kBF16:
      static_cast<uint16_t*>(data)[at] = f32_to_bf16(value);
      return;
  }
}

MutableTensorView::operator TensorView() const { return with_layout<TensorView>(*this, data); }

MutableTensorView MutableTensorView::contiguous(void* data, DType dtype,
                                                const std::array<int64_t, 4>& shape) {
  return with_layout<MutableTensorView>(TensorLayout::contiguous(dtype, shape), data);
}

Tensor::Tensor(std::vector<int64_t> shape, DType dtype) {
  reshape_uninitialized(std::move(shape), dtype);
  if (!storage_.empty()) std::memset(storage_.data(), 0, storage_.size());
}

void Tensor::reshape_uninitialized(std::vector<int64_t> shape, DType dtype) {
  check(!shape.empty() && shape.size() <= 4, "shape", shape_string(shape) + " must have rank 1..4");
  // Overflow-safe byte count: each factor is checked before it is multiplied in.
  const uint64_t limit = static_cast<uint64_t>(std::numeric_limits<int64_t>::max());
  uint64_t bytes = dtype_size(dtype);
  for (int64_t dim : shape) {
    check(dim >= 0, "shape", shape_string(shape) + " has a negative dimension");
    if (dim == 0) {
      bytes = 0;
      continue;
    }
    check(bytes <= limit / static_cast<uint64_t>(dim), "shape",
          shape_string(shape) + " is too large");
    bytes *= static_cast<uint64_t>(dim);
  }
  check_memory(static_cast<double>(bytes), "shape",
               "a " + std::string(dtype_name(dtype)) + " tensor of shape " + shape_string(shape));
  shape_ = std::move(shape);
  dtype_ = dtype;
  storage_.clear();  // keeps the capacity; growing then copies nothing
  storage_.resize(static_cast<size_t>(bytes));
}

int64_t Tensor::numel() const {
  if (shape_.empty()) return 0;
  int64_t count = 1;
  for (int64_t dim : shape_) count *= dim;
  return count;
}

TensorLayout Tensor::layout(bool rows) const {
  const size_t rank = shape_.size();
  std::array<int64_t, 4> shape = {1, 1, 1, 1};
  if (rows) {
    check(rank == 3, "shape", shape_string(shape_) + " must have rank 3 for a per-row view");
    shape = {shape_[0], shape_[1], shape_[2], 1};
  } else {
    for (int axis = 0; axis < 4; ++axis) {
      const int from = axis - (4 - static_cast<int>(rank));
      if (from >= 0) shape[axis] = shape_[from];
    }
  }
  return TensorLayout::contiguous(dtype_, shape);
}

TensorView Tensor::view() const { return with_layout<TensorView>(layout(false), data()); }

MutableTensorView Tensor::view() { return with_layout<MutableTensorView>(layout(false), data()); }

TensorView Tensor::rows_view() const { return with_layout<TensorView>(layout(true), data()); }

MutableTensorView Tensor::rows_view() {
  return with_layout<MutableTensorView>(layout(true), data());
}

namespace {
template <typename In, typename Out, typename Convert>
void convert_all(const void* from, void* to, int64_t count, Convert convert) {
  const In* in = static_cast<const In*>(from);
  Out* out = static_cast<Out*>(to);
  // Large tensors (a 65536 x 8 x 128 input is 67M elements) are converted on all cores.
#pragma omp parallel for schedule(static) if (count > (int64_t{1} << 20))
  for (int64_t i = 0; i < count; ++i) out[i] = convert(in[i]);
}
}  // namespace

Tensor Tensor::to(DType dtype) const {
  Tensor result(shape_, dtype);
  const int64_t count = numel();
  if (count == 0) return result;
  if (dtype == dtype_) {
    std::memcpy(result.data(), data(), bytes());
    return result;
  }
  // Via f32: exact for every f16 / bf16 value, so f16 <-> bf16 rounds once.
  auto to_f32 = [this](uint16_t bits) {
    return dtype_ == DType::kF16 ? f16_to_f32(bits) : bf16_to_f32(bits);
  };
  if (dtype_ == DType::kF32) {
    auto narrow = dtype == DType::kF16 ? f32_to_f16 : f32_to_bf16;
    convert_all<float, uint16_t>(data(), result.data(), count, narrow);
  } else if (dtype == DType::kF32) {
    convert_all<uint16_t, float>(data(), result.data(), count, to_f32);
  } else {
    auto narrow = dtype == DType::kF16 ? f32_to_f16 : f32_to_bf16;
    convert_all<uint16_t, uint16_t>(data(), result.data(), count,
                                    [&](uint16_t bits) { return narrow(to_f32(bits)); });
  }
  return result;
}

std::string shape_string(const std::vector<int64_t>& shape) {
  std::string text = "[";
  for (size_t i = 0; i < shape.size(); ++i) {
    if (i) text += ",";
    text += std::to_string(shape[i]);
  }
  return text + "]";
}

}  // namespace attnkit
