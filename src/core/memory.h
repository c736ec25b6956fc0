// Refusing work that cannot fit: requests whose buffers would exceed the machine's physical
// memory get one clear Error before anything is allocated, instead of a bad_alloc late in the
// run or the kernel's OOM killer.
#pragma once

#include <cstdint>
#include <string>

namespace attnkit {

// Physical memory of this machine in bytes (sysconf), or the cap in $ATTNKIT_MEMORY_LIMIT
// (bytes) when that is set and smaller, as tests and shared machines may ask.
uint64_t memory_limit();

// Throws Error(argument, what + " needs 37.3 GiB, more than this machine's 23.4 GiB of memory")
// when `bytes` exceeds memory_limit(). `bytes` is a double so that overflowing products compare.
void check_memory(double bytes, const std::string& argument, const std::string& what);

}  // namespace attnkit
