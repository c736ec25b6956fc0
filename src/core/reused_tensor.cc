#include "core/reused_tensor.h"

#include <array>
#include <utility>

namespace attnkit {
namespace {

std::array<Tensor, ReusedTensor::kSlots>& thread_buffers() {
  thread_local std::array<Tensor, ReusedTensor::kSlots> buffers;
  return buffers;
}

}  // namespace

ReusedTensor::ReusedTensor(int slot) : slot_(slot), tensor_(std::move(thread_buffers()[slot])) {}

ReusedTensor::ReusedTensor(int slot, std::vector<int64_t> shape, DType dtype) : ReusedTensor(slot) {
  tensor_.reshape_uninitialized(std::move(shape), dtype);
}

ReusedTensor::~ReusedTensor() {
  if (tensor_.capacity() <= kKeptBytes) thread_buffers()[slot_] = std::move(tensor_);
}

}  // namespace attnkit
