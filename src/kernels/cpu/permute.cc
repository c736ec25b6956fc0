// Token permutations: gather rows of a strided [B, H, N, D] view (any dtype) into a contiguous
// f32 matrix, the stable counting-sort argsort used for LSH buckets (HyperAttention) and cluster
// membership (Routing), and whole tensors put into a plan's token order and back.
#include <algorithm>
#include <cstring>

#include "core/attention_args.h"
#include "kernels/cpu/planner_ops.h"

namespace attnkit::cpu {
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

void store_rows(const float* rows, int64_t count, const MutableTensorView& x, int64_t b, int64_t h,
                int64_t start) {
  const int64_t dim = x.shape[3];
  for (int64_t r = 0; r < count; ++r)
    std::memcpy(x.row<float>(b, h, start + r), rows + r * dim, dim * sizeof(float));
}

void gather_rows(const TensorView& x, int64_t b, int64_t h, const int32_t* index, int64_t count,
                 float* out) {
  const int64_t dim = x.shape[3];
  for (int64_t r = 0; r < count; ++r) convert_row(x, b, h, index[r], out + r * dim);
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

void permute_tokens(const TensorView& x, const std::vector<int32_t>& order, int threads,
                    Tensor* dst) {
  const int64_t batch = x.shape[0], heads = x.shape[1], dim = x.shape[3];
  const int64_t slots = static_cast<int64_t>(order.size());
  dst->reshape_uninitialized({batch, heads, slots, dim}, x.dtype);
  const size_t es = dtype_size(x.dtype);
  const auto* in = static_cast<const std::byte*>(x.data);
  auto* out = static_cast<std::byte*>(dst->data());
#pragma omp parallel for collapse(2) schedule(static) num_threads(effective_threads(threads))
  for (int64_t bh = 0; bh < batch * heads; ++bh) {
    for (int64_t p = 0; p < slots; ++p) {
      const int64_t s = order[p];
      std::byte* to = out + es * ((bh * slots + p) * dim);
      if (s < 0) {  // padding: a zero row
        std::memset(to, 0, es * dim);
        continue;
      }
      const std::byte* row = in + es * x.offset(bh / heads, bh % heads, s, 0);
      if (x.stride[3] == 1) {
        std::memcpy(to, row, es * dim);
      } else {
        for (int64_t d = 0; d < dim; ++d) std::memcpy(to + es * d, row + es * d * x.stride[3], es);
      }
    }
  }
}

void unpermute_tokens(const TensorView& permuted_out, const TensorView& permuted_lse,
                      const std::vector<int32_t>& order, const MutableTensorView& out,
                      const MutableTensorView& lse, int threads) {
  const int64_t batch = out.shape[0], heads = out.shape[1], dim = out.shape[3];
  const int64_t slots = static_cast<int64_t>(order.size());
  const bool with_lse = !lse.empty() && !permuted_lse.empty();
#pragma omp parallel for collapse(2) schedule(static) num_threads(effective_threads(threads))
  for (int64_t bh = 0; bh < batch * heads; ++bh) {
    for (int64_t p = 0; p < slots; ++p) {
      const int64_t s = order[p];
      if (s < 0) continue;
      const int64_t b = bh / heads, h = bh % heads;
      const float* row = permuted_out.row<float>(b, h, p);
      float* to = out.row<float>(b, h, s);
      for (int64_t d = 0; d < dim; ++d) to[d * out.stride[3]] = row[d * permuted_out.stride[3]];
      if (with_lse) *lse.row<float>(b, h, s) = *permuted_lse.row<float>(b, h, p);
    }
  }
}

}  // namespace attnkit::cpu
