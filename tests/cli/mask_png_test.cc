// `attnkit mask --png`: the picture writer on its own (its CLI use is in patterns_test.cc).
#include "mask_png.h"

#include <gtest/gtest.h>

#include "attnkit/error.h"
#include "support/cli_runner.h"
#include "support/pattern_check.h"

namespace attnkit::testing {
namespace {

TEST(MaskPng, WritesPaletteImageAtomically) {
  const BlockMask m = make_pattern("causal")->plan(shape_inputs(192, 192, 1)).mask;
  TempDir dir;
  const std::string path = dir.path("m.png");
  cli::write_block_mask_png(path, m, 0, 0, 2, "--png");
  const std::string bytes = read_file(path);
  ASSERT_GT(bytes.size(), 8u + 25 + 12);
  EXPECT_EQ(bytes.substr(1, 3), "PNG");
  EXPECT_EQ(bytes.substr(12, 4), "IHDR");
  EXPECT_EQ(uint8_t(bytes[19]), 6);  // width 3 blocks x 2 pixels
  EXPECT_EQ(uint8_t(bytes[23]), 6);
  EXPECT_EQ(bytes.substr(bytes.size() - 8, 4), "IEND");
  EXPECT_EQ(dir.list(), std::vector<std::string>{"m.png"});
  EXPECT_THROW(cli::write_block_mask_png(dir.path("no/such/dir.png"), m, 0, 0, 1, "--png"), Error);
}

}  // namespace
}  // namespace attnkit::testing
