// GGUF (version 2 and 3) reader over a memory-mapped file, and a writer for tests and tools.
//
// Layout (little-endian, packed): u32 magic "GGUF", u32 version, u64 tensor_count,
// u64 metadata_kv_count, then kv pairs (string key, u32 type, value), then tensor infos
// (string name, u32 n_dims, u64 dims[n_dims] with ne0 innermost, u32 ggml_type, u64 offset),
// zero padding to `general.alignment` (default 32), then the tensor data; each tensor lies at
// data_start + offset. Strings are u64 length + bytes (no NUL).
//
// The reader trusts nothing: every length, count, offset and size is checked against the bytes
// that remain before it is used, so a hostile file gives attnkit::Error, never an out-of-bounds
// read or an absurd allocation.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

namespace attnkit::model {

enum class GgufType : uint32_t {
  kUint8 = 0,
  kInt8 = 1,
  kUint16 = 2,
  kInt16 = 3,
  kUint32 = 4,
  kInt32 = 5,
  kFloat32 = 6,
  kBool = 7,
  kString = 8,
  kArray = 9,
  kUint64 = 10,
  kInt64 = 11,
  kFloat64 = 12,
};
const char* gguf_type_name(GgufType type);

// One metadata value. Scalars: integers of every width (and bool) in `integer` (u64 above INT64_MAX
// also in `uinteger`), floats in `real`, strings in `text`. Arrays keep their elements compactly by
// kind, so a hostile file cannot make the reader allocate much more than the file's own size:
// integer and bool elements in `integers` (u64 bit-cast), float elements in `reals`, strings in
// `strings`, nested arrays in `arrays`.
struct GgufValue {
  GgufType type = GgufType::kUint32;
  int64_t integer = 0;
  uint64_t uinteger = 0;
  double real = 0.0;
  std::string text;
  GgufType element_type = GgufType::kUint8;  // arrays only
  uint64_t count = 0;                        // arrays only: number of elements
  std::vector<int64_t> integers;
  std::vector<double> reals;
  std::vector<std::string> strings;
  std::vector<GgufValue> arrays;

  bool is_integer() const;
  bool is_real() const { return type == GgufType::kFloat32 || type == GgufType::kFloat64; }
};

struct GgufTensor {
  std::string name;
  uint32_t type = 0;          // ggml type code
  std::vector<int64_t> dims;  // ne0 first (innermost, contiguous)
  uint64_t offset = 0;        // relative to the data section
  const uint8_t* data = nullptr;
  int64_t bytes = 0;
  int64_t elements = 0;

  int64_t row_length() const { return dims.empty() ? 0 : dims[0]; }
  int64_t rows() const { return dims.empty() ? 0 : elements / dims[0]; }
  std::string shape_string() const;  // "[576, 49152]"
};

class GgufFile {
 public:
  // Memory-maps and parses `path`; errors are Error(argument, "<path>: ...").
  static GgufFile open(const std::string& path, const std::string& argument = "model");
  // Parses an in-memory copy (tests).
  static GgufFile from_bytes(std::vector<uint8_t> bytes, const std::string& argument = "gguf");

  uint32_t version() const { return version_; }
  uint64_t alignment() const { return alignment_; }
  uint64_t data_offset() const { return data_offset_; }
  uint64_t file_size() const { return size_; }
  const std::string& path() const { return path_; }

  const std::vector<std::pair<std::string, GgufValue>>& metadata() const { return metadata_; }
  const GgufValue* find(const std::string& key) const;
  // Typed accessors; throw Error naming the key when missing or of the wrong type.
  int64_t get_int(const std::string& key) const;
  int64_t get_int(const std::string& key, int64_t fallback) const;
  double get_real(const std::string& key) const;
  double get_real(const std::string& key, double fallback) const;
  std::string get_string(const std::string& key) const;
  std::string get_string(const std::string& key, const std::string& fallback) const;
  bool get_bool(const std::string& key, bool fallback) const;
  const GgufValue& get_array(const std::string& key) const;

  const std::vector<GgufTensor>& tensors() const { return tensors_; }
  const GgufTensor* find_tensor(const std::string& name) const;
  const GgufTensor& tensor(const std::string& name) const;  // throws when absent
  const std::string& argument() const { return argument_; }

 private:
  void parse();

  std::shared_ptr<const uint8_t> base_;  // mmap or heap copy, released with the last GgufFile
  uint64_t size_ = 0;
  std::string path_, argument_;
  uint32_t version_ = 0;
  uint64_t alignment_ = 32;
  uint64_t data_offset_ = 0;
  std::vector<std::pair<std::string, GgufValue>> metadata_;
  std::map<std::string, size_t> metadata_index_;
  std::vector<GgufTensor> tensors_;
  std::map<std::string, size_t> tensor_index_;
};

// Builds a GGUF v3 file in memory. Tensors are given as raw bytes in their ggml type.
class GgufWriter {
 public:
  void add(const std::string& key, GgufValue value);
  void add_u32(const std::string& key, uint32_t value);
  void add_i32(const std::string& key, int32_t value);
  void add_f32(const std::string& key, float value);
  void add_bool(const std::string& key, bool value);
  void add_string(const std::string& key, const std::string& value);
  void add_string_array(const std::string& key, const std::vector<std::string>& values);
  void add_i32_array(const std::string& key, const std::vector<int32_t>& values);
  void add_f32_array(const std::string& key, const std::vector<float>& values);
  void add_tensor(const std::string& name, uint32_t ggml_type, std::vector<int64_t> dims,
                  std::vector<uint8_t> data);
  void set_alignment(uint32_t alignment) { alignment_ = alignment; }

  std::vector<uint8_t> bytes() const;
  // Writes atomically (temporary file renamed into place).
  void write(const std::string& path) const;

 private:
  struct PendingTensor {
    std::string name;
    uint32_t type;
    std::vector<int64_t> dims;
    std::vector<uint8_t> data;
  };
  std::vector<std::pair<std::string, GgufValue>> metadata_;
  std::vector<PendingTensor> tensors_;
  uint32_t alignment_ = 32;
};

}  // namespace attnkit::model
