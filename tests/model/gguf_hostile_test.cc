// GGUF reader against hostile files: every malformation gives attnkit::Error, never a crash, an
// out-of-bounds read or an absurd allocation. Each case patches one field of a valid file.
#include <gtest/gtest.h>

#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "attnkit/error.h"
#include "model/ggml_types.h"
#include "model/gguf.h"

namespace attnkit::model {
namespace {

std::vector<uint8_t> valid_file(uint32_t alignment = 32) {
  GgufWriter w;
  w.set_alignment(alignment);
  if (alignment != 32) w.add_u32("general.alignment", alignment);
  w.add_string("general.architecture", "llama");
  w.add_string_array("tokenizer.ggml.tokens", {"a", "b", "c"});
  w.add_f32("x", 1.5f);
  w.add_tensor("first", static_cast<uint32_t>(GgmlType::kF32), {8}, std::vector<uint8_t>(32, 1));
  w.add_tensor("second", static_cast<uint32_t>(GgmlType::kQ8_0), {32, 2},
               std::vector<uint8_t>(68, 2));
  return w.bytes();
}

// Byte position of the first occurrence of `text` in `bytes`.
size_t find(const std::vector<uint8_t>& bytes, const std::string& text) {
  auto it = std::search(bytes.begin(), bytes.end(), text.begin(), text.end());
  EXPECT_NE(it, bytes.end()) << text;
  return static_cast<size_t>(it - bytes.begin());
}

template <typename T>
void patch(std::vector<uint8_t>& bytes, size_t at, T value) {
  ASSERT_LE(at + sizeof(T), bytes.size());
  std::memcpy(bytes.data() + at, &value, sizeof(T));
}

// Parses and reports: 0 = ok, 1 = attnkit::Error, 2 = anything else (a bug).
int outcome(const std::vector<uint8_t>& bytes) {
  try {
    GgufFile::from_bytes(bytes);
    return 0;
  } catch (const Error&) {
    return 1;
  } catch (...) {
    return 2;
  }
}

void expect_error(const std::vector<uint8_t>& bytes, const std::string& what) {
  EXPECT_EQ(outcome(bytes), 1) << what;
}

// Field offsets within the tensor info of `name`: n_dims, dims, type, offset.
struct TensorFields {
  size_t n_dims, dims, type, offset;
};
TensorFields fields_of(const std::vector<uint8_t>& bytes, const std::string& name, int n_dims) {
  const size_t name_at = find(bytes, name);
  TensorFields f;
  f.n_dims = name_at + name.size();
  f.dims = f.n_dims + 4;
  f.type = f.dims + 8 * n_dims;
  f.offset = f.type + 4;
  return f;
}

TEST(GgufHostile, ValidBaselineParses) { EXPECT_EQ(outcome(valid_file()), 0); }

TEST(GgufHostile, EveryTruncationIsAnError) {
  const std::vector<uint8_t> bytes = valid_file();
  const GgufFile f = GgufFile::from_bytes(bytes);
  const GgufTensor& last = f.tensor("second");
  const size_t needed = f.data_offset() + last.offset + last.bytes;
  for (size_t n = 0; n < bytes.size(); ++n) {
    const std::vector<uint8_t> cut(bytes.begin(), bytes.begin() + n);
    // Past the last tensor's data only alignment padding is missing: still a complete file.
    EXPECT_EQ(outcome(cut), n < needed ? 1 : 0) << "truncated to " << n << " bytes";
  }
}

TEST(GgufHostile, BadMagicAndVersion) {
  std::vector<uint8_t> bytes = valid_file();
  bytes[0] = 'X';
  expect_error(bytes, "magic");
  bytes = valid_file();
  patch<uint32_t>(bytes, 4, 1);
  expect_error(bytes, "version 1");
  patch<uint32_t>(bytes, 4, 0xFFFFFFFF);
  expect_error(bytes, "version 2^32-1");
}

TEST(GgufHostile, AbsurdCounts) {
  for (uint64_t count : {uint64_t{1} << 62, ~uint64_t{0}, uint64_t{1000000}}) {
    std::vector<uint8_t> bytes = valid_file();
    patch<uint64_t>(bytes, 8, count);
    expect_error(bytes, "tensor count " + std::to_string(count));
    bytes = valid_file();
    patch<uint64_t>(bytes, 16, count);
    expect_error(bytes, "metadata count " + std::to_string(count));
  }
  // Array count: the u64 after the element type of tokenizer.ggml.tokens.
  std::vector<uint8_t> bytes = valid_file();
  const size_t key = find(bytes, "tokenizer.ggml.tokens");
  const size_t count_at = key + std::strlen("tokenizer.ggml.tokens") + 4 + 4;
  for (uint64_t count : {uint64_t{1} << 61, ~uint64_t{0}, uint64_t{4}}) {
    patch<uint64_t>(bytes, count_at, count);
    expect_error(bytes, "array count " + std::to_string(count));
  }
}

TEST(GgufHostile, HugeStringLengths) {
  for (uint64_t length : {~uint64_t{0}, uint64_t{1} << 40, uint64_t{70000}, uint64_t{100000}}) {
    std::vector<uint8_t> bytes = valid_file();
    patch<uint64_t>(bytes, 24, length);  // the first key's length
    expect_error(bytes, "key length " + std::to_string(length));
    bytes = valid_file();
    const size_t value = find(bytes, "llama") - 8;  // general.architecture's value length
    patch<uint64_t>(bytes, value, length);
    expect_error(bytes, "string value length " + std::to_string(length));
    bytes = valid_file();
    const size_t name = find(bytes, "second") - 8;
    patch<uint64_t>(bytes, name, length);
    expect_error(bytes, "tensor name length " + std::to_string(length));
  }
}

TEST(GgufHostile, UnknownTypes) {
  std::vector<uint8_t> bytes = valid_file();
  const size_t x = find(bytes, "x\x06") + 1;  // key "x" then its value type (6 = f32)
  patch<uint32_t>(bytes, x, 13);
  expect_error(bytes, "value type 13");
  patch<uint32_t>(bytes, x, 0xFFFFFFFF);
  expect_error(bytes, "value type 2^32-1");
  bytes = valid_file();
  const size_t elem =
      find(bytes, "tokenizer.ggml.tokens") + std::strlen("tokenizer.ggml.tokens") + 4;
  patch<uint32_t>(bytes, elem, 99);
  expect_error(bytes, "array element type 99");
  bytes = valid_file();
  const TensorFields f = fields_of(bytes, "second", 2);
  for (uint32_t type : {4u, 17u, 39u, 1000u}) {
    patch<uint32_t>(bytes, f.type, type);
    expect_error(bytes, "ggml type " + std::to_string(type));
  }
}

TEST(GgufHostile, BadTensorShapes) {
  const std::vector<uint8_t> base = valid_file();
  const TensorFields f = fields_of(base, "second", 2);
  for (uint32_t n_dims : {0u, 5u, 0xFFFFFFFFu}) {
    std::vector<uint8_t> bytes = base;
    patch<uint32_t>(bytes, f.n_dims, n_dims);
    expect_error(bytes, "n_dims " + std::to_string(n_dims));
  }
  std::vector<uint8_t> bytes = base;
  patch<uint64_t>(bytes, f.dims, 0);
  expect_error(bytes, "zero dimension");
  bytes = base;
  patch<uint64_t>(bytes, f.dims, 33);
  expect_error(bytes, "row not a multiple of the Q8_0 block");
  bytes = base;
  patch<uint64_t>(bytes, f.dims, uint64_t{1} << 39);
  patch<uint64_t>(bytes, f.dims + 8, uint64_t{1} << 39);
  expect_error(bytes, "element count overflow");
  bytes = base;
  patch<uint64_t>(bytes, f.dims + 8, 3);  // 3 rows: 102 bytes, past the end of the file
  expect_error(bytes, "data past the end");
}

TEST(GgufHostile, OffsetsOutsideTheFile) {
  const std::vector<uint8_t> base = valid_file();
  const TensorFields f = fields_of(base, "second", 2);
  for (uint64_t offset : {uint64_t{1} << 40, ~uint64_t{0} - 31, uint64_t{4096}, uint64_t{64}}) {
    std::vector<uint8_t> bytes = base;
    patch<uint64_t>(bytes, f.offset, offset);
    expect_error(bytes, "offset " + std::to_string(offset));
  }
}

TEST(GgufHostile, BadAlignment) {
  const std::vector<uint8_t> base = valid_file(64);
  const size_t value = find(base, "general.alignment") + std::strlen("general.alignment") + 4;
  for (uint32_t alignment : {0u, 7u, 12u, 48u, 1u << 30}) {
    std::vector<uint8_t> bytes = base;
    patch<uint32_t>(bytes, value, alignment);
    expect_error(bytes, "alignment " + std::to_string(alignment));
  }
  // A tensor offset that is not a multiple of the alignment.
  std::vector<uint8_t> bytes = valid_file();
  patch<uint64_t>(bytes, fields_of(bytes, "second", 2).offset, 36);
  expect_error(bytes, "misaligned offset");
}

TEST(GgufHostile, DuplicateNames) {
  GgufWriter w;
  w.add_u32("k", 1);
  w.add_u32("k", 2);
  expect_error(w.bytes(), "duplicate key");
  GgufWriter t;
  t.add_tensor("t", 0, {8}, std::vector<uint8_t>(32));
  t.add_tensor("t", 0, {8}, std::vector<uint8_t>(32));
  expect_error(t.bytes(), "duplicate tensor");
}

TEST(GgufHostile, DeeplyNestedArrays) {
  GgufValue v;
  v.type = GgufType::kArray;
  v.element_type = GgufType::kUint8;
  v.integers = {1};
  for (int depth = 0; depth < 8; ++depth) {
    GgufValue outer;
    outer.type = GgufType::kArray;
    outer.element_type = GgufType::kArray;
    outer.arrays = {v};
    v = outer;
  }
  GgufWriter w;
  w.add("deep", v);
  expect_error(w.bytes(), "arrays nested 9 deep");
}

TEST(GgufHostile, RandomCorruptionNeverCrashes) {
  const std::vector<uint8_t> base = valid_file();
  const size_t header = GgufFile::from_bytes(base).data_offset();
  std::mt19937 rng(1234);
  int errors = 0;
  for (int trial = 0; trial < 3000; ++trial) {
    std::vector<uint8_t> bytes = base;
    const int flips = 1 + trial % 4;
    for (int i = 0; i < flips; ++i) bytes[rng() % header] = static_cast<uint8_t>(rng());
    const int result = outcome(bytes);
    ASSERT_NE(result, 2) << "trial " << trial << " threw something other than attnkit::Error";
    errors += result;
  }
  EXPECT_GT(errors, 0);  // the corruption did reach the checks
}

}  // namespace
}  // namespace attnkit::model
