// .npy reader/writer tests: round trips of every supported dtype and rank, and one test per kind
// of malformed file, each of which must be an attnkit::Error naming the argument.
#include "attnkit/npy.h"

#include <gtest/gtest.h>

#include <cstring>
#include <string>
#include <vector>

#include "attnkit/error.h"
#include "attnkit/tensor.h"
#include "support/cli_runner.h"

namespace attnkit {
namespace {

using testing::TempDir;
using namespace std::string_literals;

// A .npy file image: magic, version, little-endian header length, `dict` padded to 64 bytes with
// a final '\n' (unless `pad` is false), then `data`.
std::string npy_image(const std::string& dict, const std::string& data, int major = 1,
                      bool pad = true) {
  const size_t length_bytes = major == 1 ? 2 : 4;
  std::string header = dict;
  if (pad) {
    const size_t prefix = 8 + length_bytes;
    while ((prefix + header.size() + 1) % 64 != 0) header += ' ';
    header += '\n';
  }
  std::string image = "\x93NUMPY";
  image += static_cast<char>(major);
  image += '\0';
  for (size_t i = 0; i < length_bytes; ++i)
    image += static_cast<char>((header.size() >> (8 * i)) & 0xff);
  return image + header + data;
}

std::string f32_bytes(const std::vector<float>& values) {
  return std::string(reinterpret_cast<const char*>(values.data()), values.size() * 4);
}

// The message of the Error that reading `image` throws ("" if it does not throw).
std::string read_error(const TempDir& dir, const std::string& image) {
  const std::string path = dir.path("case.npy");
  testing::write_file(path, image);
  try {
    read_npy(path, "--q");
  } catch (const Error& error) {
    EXPECT_EQ(error.argument(), "--q");
    return error.what();
  }
  ADD_FAILURE() << "no error for image of " << image.size() << " bytes";
  return "";
}

TEST(Npy, RoundTripsF32AndF16OfEveryRank) {
  TempDir dir;
  const std::vector<std::vector<int64_t>> shapes = {{1},       {7},           {3, 65},
                                                    {2, 7, 1}, {1, 3, 63, 5}, {2, 1, 7, 3}};
  for (DType dtype : {DType::kF32, DType::kF16}) {
    for (const auto& shape : shapes) {
      Tensor tensor(shape, DType::kF32);
      for (int64_t i = 0; i < tensor.numel(); ++i) tensor.f32()[i] = 0.25f * i - 3.0f;
      tensor = tensor.to(dtype);
      const std::string path = dir.path("t.npy");
      write_npy(path, tensor, "--out");
      const Tensor back = read_npy(path, "--q");
      EXPECT_EQ(back.shape(), shape);
      EXPECT_EQ(back.dtype(), dtype);
      ASSERT_EQ(back.bytes(), tensor.bytes());
      EXPECT_EQ(std::memcmp(back.data(), tensor.data(), tensor.bytes()), 0)
          << shape_string(shape) << " " << dtype_name(dtype);
      // numpy's layout: version 1.0 and the data starting on a 64-byte boundary.
      const std::string image = testing::read_file(path);
      EXPECT_EQ(image.substr(0, 8), std::string("\x93NUMPY\x01\x00", 8));
      EXPECT_EQ((image.size() - tensor.bytes()) % 64, 0u);
      EXPECT_EQ(image[image.size() - tensor.bytes() - 1], '\n');
    }
  }
  EXPECT_EQ(dir.list(), std::vector<std::string>{"t.npy"});  // no temporary left behind
}

TEST(Npy, WritesNumpysHeaderText) {
  TempDir dir;
  write_npy(dir.path("a.npy"), Tensor({5}, DType::kF16), "--out");
  write_npy(dir.path("b.npy"), Tensor({2, 3}, DType::kF32), "--out");
  EXPECT_NE(testing::read_file(dir.path("a.npy"))
                .find("{'descr': '<f2', 'fortran_order': False, 'shape': (5,), }"),
            std::string::npos);
  EXPECT_NE(testing::read_file(dir.path("b.npy"))
                .find("{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }"),
            std::string::npos);
}

TEST(Npy, ReadsVersions2And3AndLooseHeaderSpelling) {
  TempDir dir;
  const std::string data = f32_bytes({1, 2, 3, 4, 5, 6});
  for (int major : {1, 2, 3}) {
    for (const std::string dict :
         {"{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }",
          "{\"shape\":(2,3),\"descr\":\"<f4\",\"fortran_order\":False}",
          "{ 'fortran_order' : False , 'descr' : '<f4' , 'shape' : ( 2 , 3 , ) }"}) {
      const std::string path = dir.path("v.npy");
      testing::write_file(path, npy_image(dict, data, major));
      const Tensor tensor = read_npy(path, "--k");
      EXPECT_EQ(tensor.shape(), (std::vector<int64_t>{2, 3})) << dict;
      EXPECT_EQ(tensor.f32()[5], 6.0f);
    }
  }
}

TEST(Npy, ReadsZeroSizeArrays) {
  TempDir dir;
  testing::write_file(dir.path("z.npy"),
                      npy_image("{'descr': '<f4', 'fortran_order': False, 'shape': (0, 3), }", ""));
  const Tensor tensor = read_npy(dir.path("z.npy"), "--q");
  EXPECT_EQ(tensor.shape(), (std::vector<int64_t>{0, 3}));
  EXPECT_EQ(tensor.numel(), 0);
}

TEST(Npy, MissingFileOrDirectoryNamesArgumentAndPath) {
  TempDir dir;
  try {
    read_npy(dir.path("absent.npy"), "--v");
    FAIL();
  } catch (const Error& error) {
    EXPECT_EQ(error.argument(), "--v");
    EXPECT_NE(std::string(error.what()).find("absent.npy"), std::string::npos);
  }
  EXPECT_THROW(read_npy(dir.dir(), "--v"), Error);
}

TEST(Npy, RejectsUnsupportedDtypesNamingThem) {
  TempDir dir;
  for (const std::string descr : {"<f8", "<i4", ">f4", "|u1", "<c8", "<f4x"}) {
    const std::string message = read_error(
        dir, npy_image("{'descr': '" + descr + "', 'fortran_order': False, 'shape': (2,), }",
                       std::string(16, '\0')));
    EXPECT_NE(message.find("'" + descr + "'"), std::string::npos) << message;
  }
}

TEST(Npy, RejectsFortranOrderAndBadRanks) {
  TempDir dir;
  const std::string data = f32_bytes({1, 2, 3, 4, 5, 6});
  EXPECT_NE(
      read_error(dir, npy_image("{'descr': '<f4', 'fortran_order': True, 'shape': (2, 3), }", data))
          .find("Fortran"),
      std::string::npos);
  EXPECT_NE(read_error(dir, npy_image("{'descr': '<f4', 'fortran_order': False, 'shape': (), }",
                                      f32_bytes({1})))
                .find("rank"),
            std::string::npos);
  EXPECT_NE(read_error(dir, npy_image("{'descr': '<f4', 'fortran_order': False, "
                                      "'shape': (1, 1, 2, 1, 3), }",
                                      data))
                .find("rank"),
            std::string::npos);
}

TEST(Npy, RejectsMalformedHeaders) {
  TempDir dir;
  const std::string data = f32_bytes({1, 2});
  const std::string good = "{'descr': '<f4', 'fortran_order': False, 'shape': (2,), }";
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"empty file", ""},
      {"short file", "\x93NUM"},
      {"bad magic", "\x93NUMPZ\x01\x00"s + npy_image(good, data).substr(8)},
      {"version 4.0", "\x93NUMPY\x04\x00"s + npy_image(good, data).substr(8)},
      {"version 1.1", "\x93NUMPY\x01\x01"s + npy_image(good, data).substr(8)},
      {"not a dict", npy_image("['descr', '<f4']", data)},
      {"missing key", npy_image("{'descr': '<f4', 'shape': (2,), }", data)},
      {"unknown key",
       npy_image("{'descr': '<f4', 'fortran_order': False, 'shape': (2,), 'x': 1}", data)},
      {"duplicate key",
       npy_image("{'descr': '<f4', 'descr': '<f4', 'fortran_order': False, 'shape': (2,)}", data)},
      {"quote mismatch", npy_image("{'descr: '<f4', 'fortran_order': False}", data)},
      {"unterminated string", npy_image("{'descr': '<f4", data)},
      {"unterminated dict",
       npy_image("{'descr': '<f4', 'fortran_order': False, 'shape': (2,)", data)},
      {"negative dimension",
       npy_image("{'descr': '<f4', 'fortran_order': False, 'shape': (-2,), }", data)},
      {"non-integer dimension",
       npy_image("{'descr': '<f4', 'fortran_order': False, 'shape': (2.0,), }", data)},
      {"shape not a tuple",
       npy_image("{'descr': '<f4', 'fortran_order': False, 'shape': 2, }", data)},
      {"fortran_order not a bool",
       npy_image("{'descr': '<f4', 'fortran_order': 0, 'shape': (2,), }", data)},
      {"text after the dict", npy_image(good + " junk", data)},
      {"dimension overflowing int64",
       npy_image("{'descr': '<f4', 'fortran_order': False, 'shape': (99999999999999999999,), }",
                 data)},
      {"NUL in header",
       npy_image("{'descr': '<f4',\0 'fortran_order': False, 'shape': (2,), }"s, data)},
  };
  for (const auto& [name, image] : cases) {
    SCOPED_TRACE(name);
    EXPECT_FALSE(read_error(dir, image).empty());
  }
}

TEST(Npy, RejectsTruncatedAbsurdAndTrailingData) {
  TempDir dir;
  const std::string dict = "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }";
  const std::string data = f32_bytes({1, 2, 3, 4, 5, 6});
  const std::string image = npy_image(dict, data);
  // Truncated anywhere: in the prefix, in the header, in the data.
  for (size_t keep : {size_t{9}, size_t{11}, size_t{40}, image.size() - data.size() - 1,
                      image.size() - 1, image.size() - 4}) {
    SCOPED_TRACE("kept " + std::to_string(keep) + " of " + std::to_string(image.size()));
    EXPECT_FALSE(read_error(dir, image.substr(0, keep)).empty());
  }
  EXPECT_NE(read_error(dir, image + "xyz").find("unexpected bytes"), std::string::npos);
  // Shapes whose byte count overflows, or merely exceeds the file: no allocation is attempted.
  for (const std::string shape : {"(1099511627776, 1099511627776, 1099511627776)",
                                  "(4611686018427387904,)", "(1000000, 1000000)"}) {
    SCOPED_TRACE(shape);
    const std::string message = read_error(
        dir, npy_image("{'descr': '<f4', 'fortran_order': False, 'shape': " + shape + ", }", data));
    EXPECT_NE(message.find("truncated"), std::string::npos) << message;
  }
  // A header length field far beyond the file (version 2: 32-bit length).
  std::string huge = npy_image(dict, data, 2);
  huge[8] = huge[9] = huge[10] = huge[11] = '\xff';
  EXPECT_FALSE(read_error(dir, huge).empty());
}

TEST(Npy, WriteFailuresLeaveNothingBehind) {
  TempDir dir;
  try {
    write_npy(dir.path("missing/o.npy"), Tensor({2}, DType::kF32), "--out");
    FAIL();
  } catch (const Error& error) {
    EXPECT_EQ(error.argument(), "--out");
  }
  EXPECT_THROW(write_npy(dir.path("b.npy"), Tensor({2}, DType::kBF16), "--out"), Error);
  EXPECT_TRUE(dir.list().empty());
}

TEST(Npy, OverwritesAtomically) {
  TempDir dir;
  const std::string path = dir.path("o.npy");
  Tensor first({3}, DType::kF32);
  first.f32()[0] = 1;
  write_npy(path, first, "--out");
  Tensor second({4, 2}, DType::kF32);
  second.f32()[7] = 9;
  write_npy(path, second, "--out");
  const Tensor back = read_npy(path, "--out");
  EXPECT_EQ(back.shape(), (std::vector<int64_t>{4, 2}));
  EXPECT_EQ(back.f32()[7], 9.0f);
  EXPECT_EQ(dir.list(), std::vector<std::string>{"o.npy"});
}

TEST(Npy, RawWriterStoresMasks) {
  TempDir dir;
  const std::vector<uint8_t> mask = {1, 0, 1, 1, 0, 0};
  write_npy_raw(dir.path("m.npy"), "|u1", {2, 3}, mask.data(), mask.size(), "--dump");
  const std::string image = testing::read_file(dir.path("m.npy"));
  EXPECT_NE(image.find("'descr': '|u1'"), std::string::npos);
  EXPECT_EQ(image.substr(image.size() - 6), std::string("\x01\x00\x01\x01\x00\x00", 6));
  EXPECT_EQ((image.size() - 6) % 64, 0u);
  // Our reader does not accept uint8 as attention input, and says so.
  try {
    read_npy(dir.path("m.npy"), "--q");
    FAIL();
  } catch (const Error& error) {
    EXPECT_NE(std::string(error.what()).find("|u1"), std::string::npos);
  }
}

}  // namespace
}  // namespace attnkit
