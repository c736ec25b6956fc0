// NumPy .npy files: float32 and float16 (also uint8 for writing masks), C order, version 1-3 headers.
#pragma once

#include <string>

#include "attnkit/tensor.h"

namespace attnkit {

// Reads `path`; throws Error(argument, ...) for a missing, malformed or truncated file,
// an unsupported dtype, Fortran order, or rank outside 1..4.
Tensor read_npy(const std::string& path, const std::string& argument);

// Writes atomically (a temporary file renamed into place), so a failure leaves no partial file.
void write_npy(const std::string& path, const Tensor& tensor, const std::string& argument);
// Raw writer for other element types: `descr` is the numpy type string, e.g. "|u1".
void write_npy_raw(const std::string& path, const std::string& descr,
                   const std::vector<int64_t>& shape, const void* data, size_t bytes,
                   const std::string& argument);

}  // namespace attnkit
