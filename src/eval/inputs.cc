// Random normal tensors (see inputs.h).
#include "eval/inputs.h"

#include <cmath>
#include <numbers>

namespace attnkit {
namespace {

// SplitMix64 finalizer: a bijective 64-bit mix, good enough to turn a counter into uniform bits.
uint64_t mix(uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

// Uniform in (0, 1]: never 0, so log() below is finite.
double uniform(uint64_t bits) { return (static_cast<double>(bits >> 11) + 1.0) * 0x1.0p-53; }

float normal(uint64_t seed, int64_t index) {
  // Box-Muller on the pair index / 2: even elements take the cosine, odd the sine.
  const uint64_t pair = mix(seed ^ mix(static_cast<uint64_t>(index / 2)));
  const double radius = std::sqrt(-2.0 * std::log(uniform(pair)));
  const double angle = 2.0 * std::numbers::pi * uniform(mix(pair));
  return static_cast<float>(radius * (index % 2 ? std::sin(angle) : std::cos(angle)));
}

}  // namespace

Tensor random_normal(const std::vector<int64_t>& shape, DType dtype, uint64_t seed, float stddev) {
  Tensor tensor(shape, dtype);
  const int64_t count = tensor.numel();
  const uint64_t key = mix(seed);
  void* data = tensor.data();
#pragma omp parallel for schedule(static) if (count > (int64_t{1} << 16))
  for (int64_t i = 0; i < count; ++i) {
    const float value = stddev * normal(key, i);
    switch (dtype) {
      case DType::kF32:
        static_cast<float*>(data)[i] = value;
        break;
      case DType::kF16:
        static_cast<uint16_t*>(data)[i] = f32_to_f16(value);
        break;
      case DType::kBF16:
        static_cast<uint16_t*>(data)[i] = f32_to_bf16(value);
        break;
    }
  }
  return tensor;
}

}  // namespace attnkit
