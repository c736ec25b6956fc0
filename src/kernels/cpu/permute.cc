// Token permutations: gather rows of a strided [B, H, N, D] view (any dtype) into a contiguous
// f32 matrix, scatter rows back, and the stable counting-sort argsort used for LSH buckets
// (HyperAttention) and cluster membership (Routing).
#include <algorithm>
#include <cstring>

#include "kernels/cpu/planner_ops.h"

namespace attnkit::kernels {
namespace {

void convert_row(const TensorView& x, int64_t b, int64_t h, int64_t s, float* out) {
  const int64_t dim = x.shape[3];
  const int64_t step = x.stride[3];
  switch (x.dtype) {
    case DType::kF32: {
      const float* src = x.row<float>(b, h, s);
      if (step == 1) {
        std::memcpy(out, src, dim * sizeof(float));
      } else {
        for (int64_t c = 0; c < dim; ++c) out[c] = src[c * step];
      }
      break;
    }
    case DType::kF16: {
      const uint16_t* src = x.row<uint16_t>(b, h, s);
      for (int64_t c = 0; c < dim; ++c) out[c] = f16_to_f32(src[c * step]);
      break;
    }
    case DType::kBF16: {
      const uint16_t* src = x.row<uint16_t>(b, h, s);
      for (int64_t c = 0; c < dim; ++c) out[c] = bf16_to_f32(src[c * step]);
      break;
    }
  }
}

}  // namespace

void load_rows(const TensorView& x, int64_t b, int64_t h, int64_t start, int64_t count,
               float* out) {
  const int64_t dim = x.shape[3];
  for (int64_t r = 0; r < count; ++r) convert_row(x, b, h, start + r, out + r * dim);
}

void gather_rows(const TensorView& x, int64_t b, int64_t h, const int32_t* index, int64_t count,
                 float* out) {
  const int64_t dim = x.shape[3];
  for (int64_t r = 0; r < count; ++r) convert_row(x, b, h, index[r], out + r * dim);
}

void scatter_rows(const float* src, const int32_t* index, int64_t count, const TensorView& out,
                  int64_t b, int64_t h) {
  const int64_t dim = out.shape[3];
  const int64_t step = out.stride[3];
  for (int64_t r = 0; r < count; ++r) {
    float* dst = out.row<float>(b, h, index[r]);
    const float* row = src + r * dim;
    if (step == 1) {
      std::memcpy(dst, row, dim * sizeof(float));
    } else {
      for (int64_t c = 0; c < dim; ++c) dst[c * step] = row[c];
    }
  }
}

std::vector<int32_t> stable_argsort(const std::vector<uint32_t>& keys, int bits) {
  const size_t buckets = size_t{1} << bits;
  std::vector<int64_t> start(buckets + 1, 0);
  for (uint32_t key : keys) ++start[key + 1];
  for (size_t c = 0; c < buckets; ++c) start[c + 1] += start[c];
  std::vector<int32_t> perm(keys.size());
  for (size_t i = 0; i < keys.size(); ++i) perm[start[keys[i]]++] = static_cast<int32_t>(i);
  return perm;
}

std::vector<int32_t> invert_permutation(const std::vector<int32_t>& perm) {
  std::vector<int32_t> inverse(perm.size());
  for (size_t r = 0; r < perm.size(); ++r) inverse[perm[r]] = static_cast<int32_t>(r);
  return inverse;
}

}  // namespace attnkit::kernels
