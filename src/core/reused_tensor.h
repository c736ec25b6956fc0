// Large temporaries that one thread reuses from call to call.
//
// A fresh allocation of tens of MB is page-faulted in, and zeroed by the OS, on every call: for a
// grid pattern at N = 16384 (4 heads, d = 64) the token-order copies (then Q, K, V and O; now K
// and V in the forward, six inputs in the backward) cost a fifth of the attention that way. A
// ReusedTensor takes the calling thread's buffer `slot` and hands it back when it goes out of
// scope; buffers over kKeptBytes are freed instead, so a thread never holds more than
// kSlots * kKeptBytes between calls.
#pragma once

#include "attnkit/tensor.h"

namespace attnkit {

class ReusedTensor {
 public:
  static constexpr int kSlots = 8;
  static constexpr size_t kKeptBytes = size_t{256} << 20;

  // The thread's buffer `slot` (< kSlots; one owner at a time), for the caller to reshape.
  explicit ReusedTensor(int slot);
  // The same, reshaped: contents undefined.
  ReusedTensor(int slot, std::vector<int64_t> shape, DType dtype);
  ~ReusedTensor();
  ReusedTensor(const ReusedTensor&) = delete;
  ReusedTensor& operator=(const ReusedTensor&) = delete;

  Tensor& operator*() { return tensor_; }
  Tensor* operator->() { return &tensor_; }

 private:
  int slot_;
  Tensor tensor_;
};

}  // namespace attnkit
