// The GGUF reader and the dequantizers on a file written by the PyPI `gguf` package (not by our
// writer): metadata of every type, the tensor table, and tensor values equal to gguf's own
// dequantization (tests/data/make_fixtures.py wrote both files).
#include <gtest/gtest.h>

#include <cmath>
#include <string>
#include <vector>

#include "attnkit/npy.h"
#include "model/ggml_types.h"
#include "model/gguf.h"

namespace attnkit::model {
namespace {

const std::string kDir = std::string(ATTNKIT_SOURCE_DIR) + "/tests/data/";

TEST(GgufPypiFixture, MetadataOfEveryType) {
  const GgufFile f = GgufFile::open(kDir + "pypi_gguf_fixture.gguf");
  EXPECT_EQ(f.version(), 3u);
  EXPECT_EQ(f.get_string("general.architecture"), "llama");
  EXPECT_EQ(f.get_int("test.u8"), 200);
  EXPECT_EQ(f.get_int("test.i8"), -100);
  EXPECT_EQ(f.get_int("test.u16"), 60000);
  EXPECT_EQ(f.get_int("test.i16"), -30000);
  EXPECT_EQ(f.get_int("test.u32"), 4000000000LL);
  EXPECT_EQ(f.get_int("test.i32"), -2000000000LL);
  EXPECT_EQ(f.get_real("test.f32"), 3.25);
  EXPECT_EQ(f.find("test.u64")->uinteger, (uint64_t{1} << 63) + 5);
  EXPECT_EQ(f.get_int("test.i64"), -(int64_t{1} << 62));
  EXPECT_EQ(f.get_real("test.f64"), -1.0e300);
  EXPECT_TRUE(f.get_bool("test.bool", false));
  EXPECT_EQ(f.get_string("test.string"), "h\xc3\xa9llo, GGUF");
  EXPECT_EQ(f.get_array("test.array_i32").integers, (std::vector<int64_t>{1, -2, 3, -4}));
  EXPECT_EQ(f.get_array("test.array_str").strings, (std::vector<std::string>{"a", "",
                                                                             "\xc3\xbc"
                                                                             "ber"}));
}

TEST(GgufPypiFixture, TensorsDequantizeAsGgufDoes) {
  const GgufFile f = GgufFile::open(kDir + "pypi_gguf_fixture.gguf");
  const Tensor expected = read_npy(kDir + "pypi_gguf_fixture_dequant.npy", "fixture");
  const std::vector<std::pair<std::string, std::vector<int64_t>>> table = {
      {"t.f32", {4, 3}},   {"t.f16", {64, 2}},  {"t.bf16", {64, 2}},  {"t.q8_0", {64, 3}},
      {"t.q4_0", {96, 2}}, {"t.q4_1", {64, 2}}, {"t.q6_k", {256, 2}}, {"t.q4_k", {256, 1}}};
  ASSERT_EQ(f.tensors().size(), table.size());
  int64_t at = 0;
  for (size_t n = 0; n < table.size(); ++n) {
    const GgufTensor& t = f.tensors()[n];
    EXPECT_EQ(t.name, table[n].first);
    EXPECT_EQ(t.dims, table[n].second) << t.name;
    std::vector<float> row(t.row_length());
    for (int64_t r = 0; r < t.rows(); ++r) {
      const GgmlTypeInfo& info = *ggml_type_info(t.type);
      dequantize_row(static_cast<GgmlType>(t.type),
                     t.data + r * ggml_row_bytes(info, t.row_length()), row.data(), t.row_length());
      for (int64_t c = 0; c < t.row_length(); ++c, ++at) {
        const float want = expected.f32()[at];
        // Same formulas; numpy may round a product or a sum in another order: 2 ulps.
        ASSERT_NEAR(row[c], want, 2.4e-7f * std::fabs(want) + 1e-30f)
            << t.name << " row " << r << " column " << c;
      }
    }
  }
  EXPECT_EQ(at, expected.numel());
}

}  // namespace
}  // namespace attnkit::model
