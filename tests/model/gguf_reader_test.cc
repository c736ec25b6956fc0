// GGUF reader: a file written by the test itself reads back exactly (metadata of every type,
// tensor table, alignment, data placement), through memory and through mmap.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "attnkit/error.h"
#include "model/ggml_types.h"
#include "model/gguf.h"

namespace attnkit::model {
namespace {

GgufValue scalar(GgufType type, int64_t integer, double real = 0.0) {
  GgufValue v;
  v.type = type;
  v.integer = integer;
  v.real = real;
  return v;
}

std::vector<uint8_t> bytes_of(size_t n, uint8_t seed) {
  std::vector<uint8_t> out(n);
  for (size_t i = 0; i < n; ++i) out[i] = static_cast<uint8_t>(seed + 31 * i);
  return out;
}

GgufWriter sample_writer(uint32_t alignment) {
  GgufWriter w;
  w.set_alignment(alignment);
  if (alignment != 32) w.add_u32("general.alignment", alignment);
  w.add_string("general.architecture", "llama");
  w.add("u8", scalar(GgufType::kUint8, 250));
  w.add("i8", scalar(GgufType::kInt8, -100));
  w.add("u16", scalar(GgufType::kUint16, 65000));
  w.add("i16", scalar(GgufType::kInt16, -30000));
  w.add_u32("u32", 4000000000u);
  w.add_i32("i32", -2000000000);
  w.add("u64", scalar(GgufType::kUint64, int64_t{1} << 60));
  w.add("i64", scalar(GgufType::kInt64, -(int64_t{1} << 60)));
  w.add_f32("f32", 0.15625f);
  w.add("f64", scalar(GgufType::kFloat64, 0, 1.0 / 3.0));
  w.add_bool("bool", true);
  w.add_string("string", std::string("h\xC3\xA9llo\n", 7));
  w.add_string_array("strings", {"a", "", "\xC4\xA0the"});
  w.add_i32_array("ints", {1, -2, 3});
  w.add_f32_array("floats", {0.5f, -1.25f});
  GgufValue nested;
  nested.type = GgufType::kArray;
  nested.element_type = GgufType::kArray;
  GgufValue inner;
  inner.type = GgufType::kArray;
  inner.element_type = GgufType::kUint16;
  inner.integers = {7, 8};
  nested.arrays = {inner, inner};
  w.add("nested", nested);
  w.add_tensor("a.weight", static_cast<uint32_t>(GgmlType::kF32), {3}, bytes_of(12, 1));
  w.add_tensor("b.weight", static_cast<uint32_t>(GgmlType::kQ4_1), {64, 3}, bytes_of(120, 2));
  w.add_tensor("c.weight", static_cast<uint32_t>(GgmlType::kQ8_0), {32, 2, 1, 1}, bytes_of(68, 3));
  return w;
}

void expect_sample(const GgufFile& f, uint32_t alignment) {
  EXPECT_EQ(f.version(), 3u);
  EXPECT_EQ(f.alignment(), alignment);
  EXPECT_EQ(f.data_offset() % alignment, 0u);
  EXPECT_EQ(f.get_string("general.architecture"), "llama");
  EXPECT_EQ(f.get_int("u8"), 250);
  EXPECT_EQ(f.get_int("i8"), -100);
  EXPECT_EQ(f.get_int("u16"), 65000);
  EXPECT_EQ(f.get_int("i16"), -30000);
  EXPECT_EQ(f.get_int("u32"), 4000000000ll);
  EXPECT_EQ(f.get_int("i32"), -2000000000ll);
  EXPECT_EQ(f.get_int("u64"), int64_t{1} << 60);
  EXPECT_EQ(f.get_int("i64"), -(int64_t{1} << 60));
  EXPECT_EQ(f.get_real("f32"), 0.15625);
  EXPECT_EQ(f.get_real("f64"), 1.0 / 3.0);
  EXPECT_TRUE(f.get_bool("bool", false));
  EXPECT_EQ(f.get_string("string"), std::string("h\xC3\xA9llo\n", 7));
  EXPECT_EQ(f.get_array("strings").strings, (std::vector<std::string>{"a", "", "\xC4\xA0the"}));
  EXPECT_EQ(f.get_array("ints").integers, (std::vector<int64_t>{1, -2, 3}));
  EXPECT_EQ(f.get_array("floats").reals, (std::vector<double>{0.5, -1.25}));
  const GgufValue& nested = f.get_array("nested");
  ASSERT_EQ(nested.arrays.size(), 2u);
  EXPECT_EQ(nested.arrays[1].integers, (std::vector<int64_t>{7, 8}));
  EXPECT_EQ(f.get_int("missing", 42), 42);
  EXPECT_THROW(f.get_int("string"), Error);
  EXPECT_THROW(f.get_string("missing"), Error);

  ASSERT_EQ(f.tensors().size(), 3u);
  const GgufTensor& b = f.tensor("b.weight");
  EXPECT_EQ(b.dims, (std::vector<int64_t>{64, 3}));
  EXPECT_EQ(b.rows(), 3);
  EXPECT_EQ(b.row_length(), 64);
  EXPECT_EQ(b.bytes, 120);
  const GgufTensor& c = f.tensor("c.weight");
  EXPECT_EQ(c.elements, 64);
  for (const auto& t : f.tensors()) {
    EXPECT_EQ(t.offset % alignment, 0u) << t.name;
    const std::vector<uint8_t> expected = bytes_of(t.bytes, t.name == "a.weight"   ? 1
                                                            : t.name == "b.weight" ? 2
                                                                                   : 3);
    EXPECT_EQ(std::memcmp(t.data, expected.data(), t.bytes), 0) << t.name;
  }
  EXPECT_EQ(f.find_tensor("d.weight"), nullptr);
  EXPECT_THROW(f.tensor("d.weight"), Error);
}

TEST(GgufReader, RoundTripInMemory) {
  for (uint32_t alignment : {32u, 8u, 64u, 256u}) {
    SCOPED_TRACE(alignment);
    expect_sample(GgufFile::from_bytes(sample_writer(alignment).bytes()), alignment);
  }
}

TEST(GgufReader, RoundTripThroughMmap) {
  const std::string path =
      testing::TempDir() + "gguf_reader_test_" + std::to_string(getpid()) + ".gguf";
  sample_writer(32).write(path);
  {
    const GgufFile f = GgufFile::open(path);
    expect_sample(f, 32);
  }
  std::remove(path.c_str());
  EXPECT_THROW(GgufFile::open(path), Error);  // missing file
}

TEST(GgufReader, AcceptsVersion2) {
  std::vector<uint8_t> bytes = sample_writer(32).bytes();
  bytes[4] = 2;
  EXPECT_EQ(GgufFile::from_bytes(bytes).version(), 2u);
}

}  // namespace
}  // namespace attnkit::model
