// `attnkit mask --png`: a block mask as a picture.
#pragma once

#include <cstdint>
#include <string>

#include "attnkit/block_mask.h"

namespace attnkit::cli {

// The block mask of list (b, h) as an 8-bit palette PNG (white empty, light blue PARTIAL, dark
// blue FULL), `scale` pixels per block (0 = choose so the picture is about 512 pixels wide).
// Written atomically; throws Error(argument, ...) on failure.
void write_block_mask_png(const std::string& path, const BlockMask& mask, int64_t b, int64_t h,
                          int64_t scale, const std::string& argument);

}  // namespace attnkit::cli
