// NumPy .npy reader and writer.
//
// Format (numpy.lib.format): "\x93NUMPY", major, minor, header length (uint16 LE in 1.0, uint32 LE
// in 2.0 and 3.0; 3.0 only allows a UTF-8 header), then a Python dict literal such as
//   {'descr': '<f4', 'fortran_order': False, 'shape': (2, 8, 64), }
// padded with spaces and a final '\n', then the raw C-order data, nothing after it.
// We read '<f4' and '<f2' only, rank 1..4, C order. The header is parsed strictly (exactly these
// three keys) and the data size is checked against the file size before anything is allocated,
// so a malformed, truncated or absurd file is an Error, never a crash or a huge allocation.
#include "attnkit/npy.h"

#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <bit>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <limits>
#include <memory>
#include <string_view>

#include "attnkit/error.h"

namespace attnkit {

static_assert(std::endian::native == std::endian::little, ".npy I/O assumes a little-endian host");

namespace {

constexpr char kMagic[] = "\x93NUMPY";
constexpr size_t kMagicSize = 6;
// numpy itself refuses headers above 10000 bytes unless told otherwise; allow more, but bounded.
constexpr uint32_t kMaxHeader = 1 << 20;

struct FileCloser {
  void operator()(FILE* file) const { std::fclose(file); }
};
using File = std::unique_ptr<FILE, FileCloser>;

std::string quoted(const std::string& text) { return "'" + text + "'"; }

// Recursive-descent reader of the header's dict literal.
class HeaderParser {
 public:
  HeaderParser(const std::string& text, const std::string& argument, const std::string& path)
      : text_(text), argument_(argument), path_(path) {}

  void parse(std::string* descr, bool* fortran_order, std::vector<int64_t>* shape) {
    bool seen_descr = false, seen_order = false, seen_shape = false;
    skip_space();
    expect('{');
    while (true) {
      skip_space();
      if (peek() == '}') break;
      const std::string key = string_literal();
      skip_space();
      expect(':');
      skip_space();
      if (key == "descr") {
        fail_if(seen_descr, "key 'descr' given twice");
        *descr = string_literal();
        seen_descr = true;
      } else if (key == "fortran_order") {
        fail_if(seen_order, "key 'fortran_order' given twice");
        *fortran_order = boolean();
        seen_order = true;
      } else if (key == "shape") {
        fail_if(seen_shape, "key 'shape' given twice");
        *shape = tuple();
        seen_shape = true;
      } else {
        fail("unexpected key " + quoted(key));
      }
      skip_space();
      if (peek() == ',') {
        ++pos_;
        continue;
      }
      skip_space();
      fail_if(peek() != '}', "expected ',' or '}' at header offset " + std::to_string(pos_));
    }
    ++pos_;  // '}'
    skip_space();
    fail_if(pos_ != text_.size(), "unexpected text after the header dict");
    fail_if(!seen_descr || !seen_order || !seen_shape,
            "header lacks one of 'descr', 'fortran_order', 'shape'");
  }

 private:
  [[noreturn]] void fail(const std::string& message) const {
    throw Error(argument_, "malformed .npy header in '" + path_ + "': " + message);
  }
  void fail_if(bool condition, const std::string& message) const {
    if (condition) fail(message);
  }
  char peek() const { return pos_ < text_.size() ? text_[pos_] : '\0'; }
  void skip_space() {
    while (pos_ < text_.size() && (text_[pos_] == ' ' || text_[pos_] == '\t' ||
                                   text_[pos_] == '\n' || text_[pos_] == '\r'))
      ++pos_;
  }
  void expect(char c) {
    fail_if(peek() != c,
            std::string("expected '") + c + "' at header offset " + std::to_string(pos_));
    ++pos_;
  }
  std::string string_literal() {
    const char quote = peek();
    fail_if(quote != '\'' && quote != '"',
            "expected a quoted string at header offset " + std::to_string(pos_));
    ++pos_;
    const size_t end = text_.find(quote, pos_);
    fail_if(end == std::string::npos, "unterminated string");
    std::string value = text_.substr(pos_, end - pos_);
    pos_ = end + 1;
    return value;
  }
  bool boolean() {
    if (text_.compare(pos_, 4, "True") == 0) {
      pos_ += 4;
      return true;
    }
    if (text_.compare(pos_, 5, "False") == 0) {
      pos_ += 5;
      return false;
    }
    fail("'fortran_order' must be True or False");
  }
  int64_t integer() {
    const size_t start = pos_;
    int64_t value = 0;
    while (pos_ < text_.size() && text_[pos_] >= '0' && text_[pos_] <= '9') {
      const int digit = text_[pos_] - '0';
      fail_if(value > (std::numeric_limits<int64_t>::max() - digit) / 10,
              "dimension " + text_.substr(start, pos_ - start + 1) + "... is too large");
      value = value * 10 + digit;
      ++pos_;
    }
    fail_if(pos_ == start,
            "expected a non-negative integer in 'shape' at header offset " + std::to_string(start));
    if (peek() == 'L') ++pos_;  // Python 2 long suffix
    return value;
  }
  std::vector<int64_t> tuple() {
    std::vector<int64_t> dims;
    expect('(');
    skip_space();
    while (peek() != ')') {
      dims.push_back(integer());
      skip_space();
      if (peek() == ',') {
        ++pos_;
        skip_space();
      } else {
        fail_if(peek() != ')', "expected ',' or ')' in 'shape'");
      }
    }
    ++pos_;
    return dims;
  }

  const std::string& text_;
  const std::string& argument_;
  const std::string& path_;
  size_t pos_ = 0;
};

uint64_t read_le(const unsigned char* bytes, int count) {
  uint64_t value = 0;
  for (int i = count - 1; i >= 0; --i) value = (value << 8) | bytes[i];
  return value;
}

// Writes `header` + `data` to a temporary file next to `path`, then renames it into place.
void write_atomically(const std::string& path, const std::string& header, const void* data,
                      size_t bytes, const std::string& argument) {
  static std::atomic<int> counter{0};
  const std::string temp =
      path + ".tmp." + std::to_string(::getpid()) + "." + std::to_string(counter.fetch_add(1));
  FILE* raw = std::fopen(temp.c_str(), "wb");
  if (!raw) throw Error(argument, "cannot write '" + path + "': " + std::strerror(errno));
  bool ok = std::fwrite(header.data(), 1, header.size(), raw) == header.size();
  if (ok && bytes > 0) ok = std::fwrite(data, 1, bytes, raw) == bytes;
  const int saved = errno;
  ok = (std::fclose(raw) == 0) && ok;
  if (!ok) {
    std::remove(temp.c_str());
    throw Error(argument, "cannot write '" + path + "': " + std::strerror(saved ? saved : EIO));
  }
  if (std::rename(temp.c_str(), path.c_str()) != 0) {
    const int error = errno;
    std::remove(temp.c_str());
    throw Error(argument, "cannot write '" + path + "': " + std::strerror(error));
  }
}

std::string make_header(const std::string& descr, const std::vector<int64_t>& shape) {
  std::string dict = "{'descr': '" + descr + "', 'fortran_order': False, 'shape': (";
  for (size_t i = 0; i < shape.size(); ++i) {
    dict += std::to_string(shape[i]);
    if (shape.size() == 1 || i + 1 < shape.size()) dict += shape.size() == 1 ? "," : ", ";
  }
  dict += "), }";
  // Pad so that the data starts on a 64-byte boundary, as numpy does.
  auto padded = [&](size_t prefix) { return (prefix + dict.size() + 1 + 63) / 64 * 64 - prefix; };
  const bool v1 = padded(kMagicSize + 4) <= 65535;  // version 1.0 stores the length in 16 bits
  const size_t prefix = kMagicSize + 2 + (v1 ? 2 : 4);
  const size_t total = prefix + padded(prefix);
  dict.append(total - prefix - dict.size() - 1, ' ');
  dict += '\n';
  std::string header(kMagic, kMagicSize);
  header += static_cast<char>(v1 ? 1 : 2);
  header += '\0';
  const uint32_t length = static_cast<uint32_t>(dict.size());
  for (int i = 0; i < (v1 ? 2 : 4); ++i) header += static_cast<char>((length >> (8 * i)) & 0xff);
  return header + dict;
}

}  // namespace

namespace {

// What the header says: the dtype, the shape and where the data starts. `prefix` holds the first
// bytes of a file of `file_size` bytes (all of it, or at least kHeaderReadLimit of it); `name` is
// the path shown in messages. Every size is checked against `file_size` before anything is
// allocated.
struct NpyLayout {
  DType dtype;
  std::vector<int64_t> shape;
  uint64_t data_offset, data_bytes;
};
constexpr uint64_t kHeaderReadLimit = 12 + kMaxHeader;

NpyLayout parse_layout(std::string_view prefix, uint64_t file_size, const std::string& argument,
                       const std::string& name) {
  const std::string what = "'" + name + "' is not a .npy file: ";
  check(file_size >= 10, argument, what + "only " + std::to_string(file_size) + " bytes");
  const auto* bytes = reinterpret_cast<const unsigned char*>(prefix.data());
  check(std::memcmp(bytes, kMagic, kMagicSize) == 0, argument, what + "bad magic string");
  const int major = bytes[6], minor = bytes[7];
  check(major >= 1 && major <= 3 && minor == 0, argument,
        "'" + name + "': unsupported .npy version " + std::to_string(major) + "." +
            std::to_string(minor) + " (expected 1.0, 2.0 or 3.0)");
  uint64_t header_length = read_le(bytes + 8, 2);
  uint64_t header_start = 10;
  if (major >= 2) {
    check(file_size >= 12, argument, "truncated .npy header in '" + name + "'");
    header_length = read_le(bytes + 8, 4);
    header_start = 12;
  }
  check(header_length <= kMaxHeader, argument,
        "'" + name + "': .npy header of " + std::to_string(header_length) + " bytes is too long");
  check(header_start + header_length <= file_size, argument,
        "truncated .npy header in '" + name + "': header needs " + std::to_string(header_length) +
            " bytes, the file has " + std::to_string(file_size - header_start));
  const std::string header(prefix.substr(header_start, header_length));
  check(header.find('\0') == std::string::npos, argument,
        "malformed .npy header in '" + name + "': contains a NUL byte");

  NpyLayout layout;
  std::string descr;
  bool fortran_order = false;
  HeaderParser(header, argument, name).parse(&descr, &fortran_order, &layout.shape);
  const std::vector<int64_t>& shape = layout.shape;
  if (descr == "<f4") {
    layout.dtype = DType::kF32;
  } else if (descr == "<f2") {
    layout.dtype = DType::kF16;
  } else {
    throw Error(argument, "'" + name + "' has unsupported dtype '" + descr +
                              "' (expected float32 '<f4' or float16 '<f2')");
  }
  check(!fortran_order, argument,
        "'" + name + "' is in Fortran order; save a C-order array (numpy.ascontiguousarray)");
  check(!shape.empty() && shape.size() <= 4, argument,
        "'" + name + "' has shape " + shape_string(shape) + " of rank " +
            std::to_string(shape.size()) + "; expected rank 1..4");

  // Expected data size, overflow-checked, compared with what the file holds before allocating.
  // Every dimension must also fit the tensor's int64 strides, even when another one is 0.
  const uint64_t available = file_size - header_start - header_length;
  uint64_t expected = dtype_size(layout.dtype);
  bool too_large = false;
  for (int64_t dim : shape) {
    if (expected >
        std::numeric_limits<uint64_t>::max() / static_cast<uint64_t>(std::max<int64_t>(dim, 1)))
      too_large = true;
    else
      expected *= static_cast<uint64_t>(dim);
  }
  if (expected == 0) {
    uint64_t nonzero = 1;  // the product of the other dimensions must stay representable
    for (int64_t dim : shape) {
      if (dim == 0) continue;
      if (nonzero >
          static_cast<uint64_t>(std::numeric_limits<int64_t>::max()) / static_cast<uint64_t>(dim))
        too_large = true;
      else
        nonzero *= static_cast<uint64_t>(dim);
    }
    check(!too_large, argument,
          "'" + name + "' has shape " + shape_string(shape) + ", whose strides overflow");
  }
  check(!too_large && expected <= available, argument,
        "truncated .npy data in '" + name + "': shape " + shape_string(shape) + " " +
            dtype_name(layout.dtype) + " needs " +
            (too_large ? std::string("more than 2^64") : std::to_string(expected)) +
            " bytes, the file has " + std::to_string(available));
  check(expected == available, argument,
        "'" + name + "' has " + std::to_string(available - expected) +
            " unexpected bytes after the data of shape " + shape_string(shape));
  layout.data_offset = header_start + header_length;
  layout.data_bytes = expected;
  return layout;
}

}  // namespace

namespace {

// An open .npy file and what its header says.
struct OpenNpy {
  File file;
  NpyLayout layout;
};

OpenNpy open_npy(const std::string& path, const std::string& argument) {
  std::error_code error;
  const auto status = std::filesystem::status(path, error);
  check(std::filesystem::exists(status), argument, "no such file '" + path + "'");
  check(std::filesystem::is_regular_file(status), argument, "'" + path + "' is not a regular file");
  File file(std::fopen(path.c_str(), "rb"));
  check(file != nullptr, argument, "cannot open '" + path + "': " + std::strerror(errno));
  check(std::fseek(file.get(), 0, SEEK_END) == 0, argument, "cannot seek in '" + path + "'");
  const long end = std::ftell(file.get());
  check(end >= 0, argument, "cannot size '" + path + "'");
  const uint64_t file_size = static_cast<uint64_t>(end);
  std::rewind(file.get());

  std::string prefix(std::min(file_size, kHeaderReadLimit), '\0');
  check(std::fread(prefix.data(), 1, prefix.size(), file.get()) == prefix.size(), argument,
        "cannot read '" + path + "'");
  NpyLayout layout = parse_layout(prefix, file_size, argument, path);
  return {std::move(file), std::move(layout)};
}

// Reads `bytes` at `offset` of the file into `to`.
void read_at(OpenNpy& npy, uint64_t offset, uint64_t bytes, void* to, const std::string& path,
             const std::string& argument) {
  check(std::fseek(npy.file.get(), static_cast<long>(offset), SEEK_SET) == 0, argument,
        "cannot seek in '" + path + "'");
  check(std::fread(to, 1, bytes, npy.file.get()) == bytes, argument,
        "cannot read the data of '" + path + "'");
}

}  // namespace

Tensor read_npy(const std::string& path, const std::string& argument) {
  OpenNpy npy = open_npy(path, argument);
  Tensor tensor(npy.layout.shape, npy.layout.dtype);
  if (npy.layout.data_bytes > 0)
    read_at(npy, npy.layout.data_offset, npy.layout.data_bytes, tensor.data(), path, argument);
  return tensor;
}

NpyHeader read_npy_header(const std::string& path, const std::string& argument) {
  const OpenNpy npy = open_npy(path, argument);
  return {npy.layout.dtype, npy.layout.shape};
}

Tensor read_npy_rows(const std::string& path, const std::string& argument,
                     const std::vector<std::pair<int64_t, int64_t>>& ranges) {
  OpenNpy npy = open_npy(path, argument);
  const std::vector<int64_t>& shape = npy.layout.shape;
  check(shape.size() == 4, argument,
        "'" + path + "' has shape " + shape_string(shape) + "; rows need rank 4 [B,H,N,D]");
  int64_t rows = 0;
  for (const auto& [start, end] : ranges) {
    check(start >= 0 && start <= end && end <= shape[2], argument,
          "rows [" + std::to_string(start) + ", " + std::to_string(end) + ") are outside the " +
              std::to_string(shape[2]) + " of '" + path + "'");
    rows += end - start;
  }
  Tensor tensor({shape[0], shape[1], rows, shape[3]}, npy.layout.dtype);
  const uint64_t row_bytes = dtype_size(npy.layout.dtype) * static_cast<uint64_t>(shape[3]);
  auto* to = static_cast<std::byte*>(tensor.data());
  for (int64_t b = 0; b < shape[0]; ++b)
    for (int64_t h = 0; h < shape[1]; ++h)
      for (const auto& [start, end] : ranges) {
        const uint64_t first = static_cast<uint64_t>((b * shape[1] + h) * shape[2] + start);
        const uint64_t bytes = static_cast<uint64_t>(end - start) * row_bytes;
        if (bytes > 0)
          read_at(npy, npy.layout.data_offset + first * row_bytes, bytes, to, path, argument);
        to += bytes;
      }
  return tensor;
}

Tensor read_npy_bytes(std::string_view bytes, const std::string& argument,
                      const std::string& name) {
  std::string prefix(bytes.substr(0, kHeaderReadLimit));
  prefix.resize(std::max<size_t>(prefix.size(), 12), '\0');  // the fixed fields, zero if absent
  const NpyLayout layout = parse_layout(prefix, bytes.size(), argument, name);
  Tensor tensor(layout.shape, layout.dtype);
  if (layout.data_bytes > 0)
    std::memcpy(tensor.data(), bytes.data() + layout.data_offset, layout.data_bytes);
  return tensor;
}

void write_npy(const std::string& path, const Tensor& tensor, const std::string& argument) {
  std::string descr;
  switch (tensor.dtype()) {
    case DType::kF32:
      descr = "<f4";
      break;
    case DType::kF16:
      descr = "<f2";
      break;
    case DType::kBF16:
      throw Error(argument, "bf16 has no .npy dtype; convert to f32 before writing '" + path + "'");
  }
  write_npy_raw(path, descr, tensor.shape(), tensor.data(), tensor.bytes(), argument);
}

void write_npy_raw(const std::string& path, const std::string& descr,
                   const std::vector<int64_t>& shape, const void* data, size_t bytes,
                   const std::string& argument) {
  check(!descr.empty() && descr.find('\'') == std::string::npos, argument,
        "invalid .npy descr '" + descr + "'");
  for (int64_t dim : shape)
    check(dim >= 0, argument, "negative dimension in shape " + shape_string(shape));
  write_atomically(path, make_header(descr, shape), data, bytes, argument);
}

}  // namespace attnkit
