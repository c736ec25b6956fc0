// Who holds which tokens: the schemes' names and shard layouts, and the alignment a pattern's
// blocks ask of them.
#include <numeric>
#include <string>
#include <vector>

#include "attnkit/distributed.h"
#include "attnkit/error.h"
#include "attnkit/pattern.h"

namespace attnkit {

ContextScheme parse_context_scheme(const std::string& text, const std::string& argument) {
  if (text == "ring") return ContextScheme::kRing;
  if (text == "zigzag") return ContextScheme::kZigzag;
  if (text == "allgather") return ContextScheme::kAllGather;
  throw Error(argument, "must be ring, zigzag or allgather, got '" + text + "'");
}

const char* context_scheme_name(ContextScheme scheme) {
  switch (scheme) {
    case ContextScheme::kRing: return "ring";
    case ContextScheme::kZigzag: return "zigzag";
    case ContextScheme::kAllGather: return "allgather";
  }
  return "?";
}

std::vector<TokenRange> context_shard(ContextScheme scheme, int64_t n, int rank, int size,
                                      int64_t align) {
  check(size >= 1 && size <= 4096, "comm", "size must be in [1, 4096], got " + std::to_string(size));
  check(rank >= 0 && rank < size, "comm",
        "rank " + std::to_string(rank) + " is outside [0, " + std::to_string(size) + ")");
  check(align >= 1, "align", "must be >= 1, got " + std::to_string(align));
  const int64_t chunks = scheme == ContextScheme::kZigzag ? 2 * int64_t{size} : size;
  const int64_t units = (n + align - 1) / align;  // aligned pieces of the sequence
  check(n >= 1 && units >= chunks, "global_n",
        std::to_string(n) + " tokens are too few for " + std::to_string(size) + " ranks of " +
            context_scheme_name(scheme) + " (at least " + std::to_string(chunks * align) +
            (align > 1 ? ": chunks are whole blocks of " + std::to_string(align) : "") + ")");
  auto chunk = [&](int64_t i) {
    auto boundary = [&](int64_t j) { return std::min(n, align * (j * units / chunks)); };
    return TokenRange{boundary(i), boundary(i + 1)};
  };
  if (scheme == ContextScheme::kZigzag) return {chunk(rank), chunk(2 * int64_t{size} - 1 - rank)};
  return {chunk(rank)};
}

int64_t context_alignment(const Pattern* pattern, int64_t n) {
  if (!pattern) return 1;
  check(pattern->family() == PatternFamily::kStatic, "pattern",
        "'" + pattern->name() + "' cannot run context-parallel: only static-family patterns (" +
            "window, document, power, ...); grid patterns reorder tokens and dynamic ones plan " +
            "from Q and K");
  const Plan plan = pattern->plan(PlanInputs::shapes(1, 1, 1, n, n));
  check(plan.token_order.empty() && !plan.state.has_value(), "pattern",
        "'" + pattern->name() + "' is not one block-sparse pass in token order");
  return std::lcm(plan.mask.q_block, plan.mask.kv_block);
}

}  // namespace attnkit
