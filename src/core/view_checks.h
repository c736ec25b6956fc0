// Argument checks shared by every entry point that takes tensor views (attention, its backward,
// the operators of other shapes): each throws Error naming the argument, with the shape it got.
#pragma once

#include <cstdint>
#include <string>

#include "attnkit/tensor.h"

namespace attnkit {

// "[1,8,4096,64]"
std::string shape_text(const int64_t (&shape)[4]);
// The innermost dimension is contiguous (or has one element).
bool unit_last_stride(const TensorLayout& t);
// Present (non-null) with no zero-size dimension.
void check_nonempty(const TensorView& t, const char* name);
// Exactly the shape `want`.
void check_shaped(const TensorLayout& t, const int64_t (&want)[4], const char* name);
// An f32 output of shape `want`: present, f32, the innermost dimension contiguous.
void check_f32_output(const MutableTensorView& t, const int64_t (&want)[4], const char* name);

}  // namespace attnkit
