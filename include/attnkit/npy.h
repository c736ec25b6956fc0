// NumPy .npy files: float32 and float16 (also uint8 for writing masks), C order, version 1-3
// headers.
#pragma once

#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "attnkit/tensor.h"

namespace attnkit {

// Reads `path`; throws Error(argument, ...) for a missing, malformed or truncated file,
// an unsupported dtype, Fortran order, or rank outside 1..4.
Tensor read_npy(const std::string& path, const std::string& argument);
// The dtype and shape a file's header declares (the header checked as read_npy checks it).
struct NpyHeader {
  DType dtype;
  std::vector<int64_t> shape;
};
NpyHeader read_npy_header(const std::string& path, const std::string& argument);
// Rows [start, end) of each range along axis 2 of a rank-4 [B, H, N, D] file, concatenated in
// the order given: one rank's shard of a sequence (a context-parallel run). Reads only those
// bytes.
Tensor read_npy_rows(const std::string& path, const std::string& argument,
                     const std::vector<std::pair<int64_t, int64_t>>& ranges);
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
