// memory_limit() and check_memory() (memory.h).
#include "core/memory.h"

#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>

#include "attnkit/error.h"

namespace attnkit {
namespace {

std::string gib(double bytes) {
  char text[32];
  std::snprintf(text, sizeof(text), "%.1f GiB", bytes / (1024.0 * 1024.0 * 1024.0));
  return text;
}

}  // namespace

uint64_t memory_limit() {
  const long pages = sysconf(_SC_PHYS_PAGES), page = sysconf(_SC_PAGESIZE);
  uint64_t limit = pages > 0 && page > 0
                       ? static_cast<uint64_t>(pages) * static_cast<uint64_t>(page)
                       : UINT64_MAX;
  if (const char* cap = std::getenv("ATTNKIT_MEMORY_LIMIT")) {
    char* end = nullptr;
    const unsigned long long value = std::strtoull(cap, &end, 10);
    if (end != cap && *end == '\0' && value > 0) limit = std::min<uint64_t>(limit, value);
  }
  return limit;
}

void check_memory(double bytes, const std::string& argument, const std::string& what) {
  const double limit = static_cast<double>(memory_limit());
  check(bytes <= limit, argument,
        what + " needs " + gib(bytes) + ", more than this machine's " + gib(limit) + " of memory");
}

}  // namespace attnkit
