// ReusedTensor: a thread's buffer comes back to the next owner of its slot, reshaped; a buffer
// over the kept size is freed instead; Tensor::reshape_uninitialized keeps the memory it has.
#include "core/reused_tensor.h"

#include <gtest/gtest.h>

#include <cstring>
#include <thread>

#include "attnkit/error.h"

namespace attnkit {
namespace {

TEST(ReusedTensor, TheNextOwnerOfASlotGetsTheSameMemory) {
  const void* first = nullptr;
  {
    ReusedTensor t(7, {2, 3, 100, 8}, DType::kF32);
    EXPECT_EQ(t->shape(), (std::vector<int64_t>{2, 3, 100, 8}));
    EXPECT_EQ(t->bytes(), size_t{2 * 3 * 100 * 8 * 4});
    std::memset(t->data(), 0x5a, t->bytes());
    first = t->data();
  }
  {
    ReusedTensor t(7, {10, 10}, DType::kBF16);  // smaller: same memory, new shape and dtype
    EXPECT_EQ(t->data(), first);
    EXPECT_EQ(t->dtype(), DType::kBF16);
    EXPECT_EQ(t->bytes(), size_t{200});
  }
  {
    ReusedTensor other(6, {4}, DType::kF32);  // another slot: another buffer
    EXPECT_NE(other->data(), first);
  }
  // Another thread has its own buffers.
  const void* theirs = nullptr;
  std::thread([&] {
    ReusedTensor t(7, {10, 10}, DType::kBF16);
    theirs = t->data();
  }).join();
  EXPECT_NE(theirs, first);
}

TEST(ReusedTensor, BuffersOverTheKeptSizeAreFreed) {
  const int64_t floats = static_cast<int64_t>(ReusedTensor::kKeptBytes / 4) + 16;
  { ReusedTensor big(5, {floats}, DType::kF32); }
  ReusedTensor again(5);
  EXPECT_EQ(again->capacity(), size_t{0});
}

TEST(Tensor, ReshapeUninitializedKeepsMemoryAndChecksShapes) {
  Tensor t({4, 4}, DType::kF32);
  const void* data = t.data();
  t.reshape_uninitialized({2, 2, 2}, DType::kF32);
  EXPECT_EQ(t.data(), data);
  EXPECT_EQ(t.numel(), 8);
  EXPECT_THROW(t.reshape_uninitialized({}, DType::kF32), Error);
  EXPECT_THROW(t.reshape_uninitialized({2, -1}, DType::kF32), Error);
  // The zero-filling constructor still fills.
  const Tensor z({3, 5}, DType::kF32);
  for (int64_t i = 0; i < 15; ++i) EXPECT_EQ(z.f32()[i], 0.0f);
}

}  // namespace
}  // namespace attnkit
