#include "core/view_checks.h"

#include "attnkit/error.h"

namespace attnkit {

std::string shape_text(const int64_t (&shape)[4]) {
  std::string text = "[";
  for (int i = 0; i < 4; ++i) text.append(std::to_string(shape[i])).append(i < 3 ? "," : "]");
  return text;
}

bool unit_last_stride(const TensorLayout& t) { return t.shape[3] <= 1 || t.stride[3] == 1; }

void check_nonempty(const TensorView& t, const char* name) {
  check(t.data != nullptr, name, "is missing (null data)");
  for (int i = 0; i < 4; ++i)
    check(t.shape[i] > 0, name, "has a zero-size dimension: " + t.describe());
}

void check_shaped(const TensorLayout& t, const int64_t (&want)[4], const char* name) {
  bool same = true;
  for (int i = 0; i < 4; ++i) same = same && t.shape[i] == want[i];
  check(same, name, "must be " + shape_text(want) + ", got " + t.describe());
}

void check_f32_output(const MutableTensorView& t, const int64_t (&want)[4], const char* name) {
  check(t.data != nullptr, name, "is missing (null data)");
  check(t.dtype == DType::kF32, name, "must be f32, got " + t.describe());
  check_shaped(t, want, name);
  check(unit_last_stride(t), name, "the head dim must be contiguous (stride 1)");
}

}  // namespace attnkit
