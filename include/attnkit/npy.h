// NumPy .npy files: float32 and float16 (also uint8 for writing masks), C order, version 1-3
// headers.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "attnkit/tensor.h"

namespace attnkit {

// Reads `path`; throws Error(argument, ...) for a missing, malformed or truncated file,
// an unsupported dtype, Fortran order, or rank outside 1..4.
Tensor read_npy(const std::string& path, const std::string& argument);
// The same for a whole file already in memory; `name` stands for its path in messages.
Tensor read_npy_bytes(std::string_view bytes, const std::string& argument,
                      const std::string& name = "<bytes>");

// Writes atomically (a temporary file renamed into place), so a failure leaves no partial file.
void write_npy(const std::string& path, const Tensor& tensor, const std::string& argument);
// Raw writer for other element types: `descr` is the numpy type string, e.g. "|u1".
void write_npy_raw(const std::string& path, const std::string& descr,
                   const std::vector<int64_t>& shape, const void* data, size_t bytes,
                   const std::string& argument);

}  // namespace attnkit
