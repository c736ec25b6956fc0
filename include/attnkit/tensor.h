// Tensors: non-owning 4-D strided views over f32 / f16 / bf16 data, and an owning Tensor.
//
// Attention tensors are [batch, heads, seq, dim]. Strides are in elements, so a
// [batch, seq, heads, dim] buffer is viewed without a copy by permuting strides. Inputs are read
// through a TensorView (const data), outputs written through a MutableTensorView; a mutable view
// converts to a read-only one. Per-row outputs (the LSE) are 4-D views of shape [B, H, N, 1].
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <new>
#include <string>
#include <vector>

namespace attnkit {

enum class DType : uint8_t { kF32, kF16, kBF16 };

size_t dtype_size(DType dtype);
const char* dtype_name(DType dtype);  // "f32", "f16", "bf16"
// Parses "f32" | "f16" | "bf16"; throws Error(argument, ...) otherwise.
DType parse_dtype(const std::string& text, const std::string& argument);

// IEEE half and bfloat16 <-> float, scalar (round to nearest even).
float f16_to_f32(uint16_t bits);
uint16_t f32_to_f16(float value);
float bf16_to_f32(uint16_t bits);
uint16_t f32_to_bf16(float value);

// Element type, shape and strides (in elements) of a 4-D view.
struct TensorLayout {
  DType dtype = DType::kF32;
  int64_t shape[4] = {0, 0, 0, 0};
  int64_t stride[4] = {0, 0, 0, 0};

  int64_t numel() const { return shape[0] * shape[1] * shape[2] * shape[3]; }
  int64_t offset(int64_t b, int64_t h, int64_t s, int64_t d) const {
    return b * stride[0] + h * stride[1] + s * stride[2] + d * stride[3];
  }
  // "[2,8,4096,128] f32"
  std::string describe() const;
  // C-order strides for `shape`.
  static TensorLayout contiguous(DType dtype, const std::array<int64_t, 4>& shape);
};

// Read-only view: what kernels read (Q, K, V).
struct TensorView : TensorLayout {
  const void* data = nullptr;

  bool empty() const { return data == nullptr; }
  // Element as float, whatever the dtype (slow; for references and tests).
  float get(int64_t b, int64_t h, int64_t s, int64_t d) const;
  // Pointer to the first element of row (b, h, s).
  template <typename T>
  const T* row(int64_t b, int64_t h, int64_t s) const {
    return static_cast<const T*>(data) + b * stride[0] + h * stride[1] + s * stride[2];
  }
  // A view of memory the caller owns, in C order: TensorView::contiguous(p, kF32, {1, 1, n, d}).
  static TensorView contiguous(const void* data, DType dtype, const std::array<int64_t, 4>& shape);
};

// Writable view: what kernels write (O, LSE).
struct MutableTensorView : TensorLayout {
  void* data = nullptr;

  bool empty() const { return data == nullptr; }
  float get(int64_t b, int64_t h, int64_t s, int64_t d) const;
  void set(int64_t b, int64_t h, int64_t s, int64_t d, float value) const;
  template <typename T>
  T* row(int64_t b, int64_t h, int64_t s) const {
    return static_cast<T*>(data) + b * stride[0] + h * stride[1] + s * stride[2];
  }
  operator TensorView() const;  // NOLINT: a writable view is also a readable one
  static MutableTensorView contiguous(void* data, DType dtype, const std::array<int64_t, 4>& shape);
};

// Allocates on 64-byte boundaries (a cache line, one AVX-512 vector): a row whose byte length is
// a multiple of 64 then starts a line, and the kernels' vector loads of it never split across
// two (malloc's large blocks start 16 bytes past a page, which split every one).
template <typename T>
struct CacheLineAllocator {
  using value_type = T;
  CacheLineAllocator() = default;
  template <typename U>
  CacheLineAllocator(const CacheLineAllocator<U>&) {}  // NOLINT: rebinding, as allocators do
  T* allocate(size_t n) {
    return static_cast<T*>(::operator new(n * sizeof(T), std::align_val_t{64}));
  }
  void deallocate(T* p, size_t) { ::operator delete(p, std::align_val_t{64}); }
  // Default-initialises, so resize() leaves bytes as they are; whoever needs zeros writes them.
  template <typename U>
  void construct(U* p) noexcept {
    ::new (static_cast<void*>(p)) U;
  }
  template <typename U>
  bool operator==(const CacheLineAllocator<U>&) const {
    return true;
  }
};

// Owning, contiguous (C order) tensor of rank 1..4, its data on a 64-byte boundary.
class Tensor {
 public:
  Tensor() = default;
  Tensor(std::vector<int64_t> shape, DType dtype);  // zero-filled
  // Gives the tensor a new shape and dtype, contents undefined (for buffers whose every element
  // the caller writes), reusing its memory when it is large enough.
  void reshape_uninitialized(std::vector<int64_t> shape, DType dtype);
  size_t capacity() const { return storage_.capacity(); }

  const std::vector<int64_t>& shape() const { return shape_; }
  DType dtype() const { return dtype_; }
  int64_t numel() const;
  size_t bytes() const { return storage_.size(); }
  void* data() { return storage_.data(); }
  const void* data() const { return storage_.data(); }
  float* f32() { return reinterpret_cast<float*>(storage_.data()); }
  const float* f32() const { return reinterpret_cast<const float*>(storage_.data()); }

  // 4-D view; a tensor of rank r < 4 gets 4 - r leading dimensions of size 1.
  TensorView view() const;
  MutableTensorView view();
  // A rank-3 tensor [A, B, N] as the 4-D view [A, B, N, 1]: the layout of per-row outputs
  // such as the LSE. Throws Error("shape", ...) for another rank.
  TensorView rows_view() const;
  MutableTensorView rows_view();
  // A copy in another dtype (round to nearest even).
  Tensor to(DType dtype) const;

 private:
  TensorLayout layout(bool rows) const;

  std::vector<int64_t> shape_;
  DType dtype_ = DType::kF32;
  std::vector<std::byte, CacheLineAllocator<std::byte>> storage_;
};

std::string shape_string(const std::vector<int64_t>& shape);  // "[1,8,4096,128]"

}  // namespace attnkit
