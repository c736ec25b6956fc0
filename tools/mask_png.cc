// A block mask as a PNG picture, written without any image library: 8-bit palette pixels in
// zlib "stored" (uncompressed) deflate blocks, so only CRC-32 and Adler-32 are needed. Pictures
// are at most a few MB, which is fine for a diagnostic.
#include "mask_png.h"

#include <algorithm>
#include <cstdio>
#include <string>
#include <vector>

#include "attnkit/error.h"

namespace attnkit::cli {
namespace {

uint32_t crc32(const uint8_t* data, size_t size, uint32_t crc = 0) {
  static const std::vector<uint32_t> table = [] {
    std::vector<uint32_t> t(256);
    for (uint32_t n = 0; n < 256; ++n) {
      uint32_t c = n;
      for (int k = 0; k < 8; ++k) c = (c & 1) ? 0xEDB88320u ^ (c >> 1) : c >> 1;
      t[n] = c;
    }
    return t;
  }();
  crc = ~crc;
  for (size_t i = 0; i < size; ++i) crc = table[(crc ^ data[i]) & 0xFF] ^ (crc >> 8);
  return ~crc;
}

void put32(std::vector<uint8_t>* out, uint32_t v) {
  for (int s = 24; s >= 0; s -= 8) out->push_back(static_cast<uint8_t>(v >> s));
}

void chunk(std::vector<uint8_t>* png, const char* type, const std::vector<uint8_t>& data) {
  put32(png, static_cast<uint32_t>(data.size()));
  const size_t start = png->size();
  png->insert(png->end(), type, type + 4);
  png->insert(png->end(), data.begin(), data.end());
  put32(png, crc32(png->data() + start, png->size() - start));
}

// zlib stream of stored deflate blocks (each at most 65535 bytes).
std::vector<uint8_t> zlib_stored(const std::vector<uint8_t>& raw) {
  std::vector<uint8_t> z = {0x78, 0x01};
  size_t at = 0;
  do {
    const size_t n = std::min<size_t>(65535, raw.size() - at);
    const bool last = at + n == raw.size();
    z.push_back(last ? 1 : 0);
    z.push_back(static_cast<uint8_t>(n & 0xFF));
    z.push_back(static_cast<uint8_t>(n >> 8));
    z.push_back(static_cast<uint8_t>(~n & 0xFF));
    z.push_back(static_cast<uint8_t>((~n >> 8) & 0xFF));
    z.insert(z.end(), raw.begin() + at, raw.begin() + at + n);
    at += n;
  } while (at < raw.size());
  uint32_t a = 1, b = 0;
  for (uint8_t byte : raw) {
    a = (a + byte) % 65521;
    b = (b + a) % 65521;
  }
  put32(&z, (b << 16) | a);
  return z;
}

}  // namespace

void write_block_mask_png(const std::string& path, const BlockMask& mask, int64_t b, int64_t h,
                          int64_t scale, const std::string& argument) {
  mask.validate();
  const int64_t columns = std::max<int64_t>(1, mask.kv_blocks());
  const int64_t rows = std::max<int64_t>(1, mask.q_blocks());
  if (scale <= 0) scale = std::max<int64_t>(1, 512 / columns);
  check(columns * scale <= 16384 && rows * scale <= 16384, argument,
        "picture would be " + std::to_string(columns * scale) + " x " +
            std::to_string(rows * scale) + " pixels (at most 16384 per side)");
  const int64_t width = columns * scale, height = rows * scale;

  // Block kinds of list (b, h): 0 empty, 1 FULL, 2 PARTIAL (the palette index).
  std::vector<uint8_t> kinds(static_cast<size_t>(rows * columns), 0);
  for (int64_t qb = 0; qb < mask.q_blocks(); ++qb) {
    const int64_t r = mask.list(b, h, qb);
    for (int64_t e = mask.row_start[r]; e < mask.row_start[r + 1]; ++e)
      kinds[qb * columns + mask.kv_index[e]] = static_cast<uint8_t>(mask.kind[e]);
  }
  std::vector<uint8_t> raw;
  raw.reserve(static_cast<size_t>(height * (width + 1)));
  for (int64_t y = 0; y < height; ++y) {
    raw.push_back(0);  // filter: none
    const uint8_t* row = kinds.data() + (y / scale) * columns;
    for (int64_t x = 0; x < width; ++x) raw.push_back(row[x / scale]);
  }

  std::vector<uint8_t> png = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1A, '\n'};
  std::vector<uint8_t> header;
  put32(&header, static_cast<uint32_t>(width));
  put32(&header, static_cast<uint32_t>(height));
  header.insert(header.end(), {8, 3, 0, 0, 0});  // 8-bit, palette, deflate, no filter, no interlace
  chunk(&png, "IHDR", header);
  chunk(&png, "PLTE", {255, 255, 255, /*FULL*/ 31, 64, 140, /*PARTIAL*/ 140, 180, 230});
  chunk(&png, "IDAT", zlib_stored(raw));
  chunk(&png, "IEND", {});

  const std::string temp = path + ".tmp";
  FILE* file = std::fopen(temp.c_str(), "wb");
  check(file != nullptr, argument, "cannot write '" + path + "'");
  const bool ok = std::fwrite(png.data(), 1, png.size(), file) == png.size();
  const bool closed = std::fclose(file) == 0;
  if (!ok || !closed || std::rename(temp.c_str(), path.c_str()) != 0) {
    std::remove(temp.c_str());
    throw Error(argument, "cannot write '" + path + "'");
  }
}

}  // namespace attnkit::cli
