// Fuzz target: the .npy reader (read_npy_bytes, the same parser read_npy runs on a file's bytes).
// Property: a tensor whose byte size is what the header promised, or one clean Error.
#include <cstdint>
#include <string_view>

#include "attnkit/npy.h"
#include "fuzz_support.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace attnkit;
  try {
    const Tensor tensor = read_npy_bytes({reinterpret_cast<const char*>(data), size}, "q");
    fuzz::expect(tensor.bytes() <= size, "tensor larger than its file");
    // Touch every element, as a kernel would (converts f16 to f32).
    const Tensor f32 = tensor.to(DType::kF32);
    volatile float sink = 0;
    for (int64_t i = 0; i < f32.numel(); ++i) sink = sink + f32.f32()[i];
  } catch (const Error& error) {
    fuzz::expect_clean_message(error.what());
  }
  return 0;
}
