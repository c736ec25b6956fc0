#include "direction.h"

#include "attnkit/error.h"

namespace attnkit::cli {

DirectionChoice direction_choice(const Args& args) {
  const bool causal = args.flag("--causal"), non_causal = args.flag("--non-causal");
  check(!(causal && non_causal), "--non-causal", "contradicts --causal");
  return causal       ? DirectionChoice::kCausal
         : non_causal ? DirectionChoice::kNonCausal
                      : DirectionChoice::kPaper;
}

bool runs_causal(DirectionChoice choice, const Pattern* pattern) {
  if (choice != DirectionChoice::kPaper) return choice == DirectionChoice::kCausal;
  return pattern != nullptr && pattern->direction() == Direction::kCaller;
}

bool judged_causal(DirectionChoice choice, const Pattern* pattern) {
  return runs_causal(choice, pattern) ||
         (pattern != nullptr && pattern->direction() == Direction::kCausal);
}

std::string direction_label(DirectionChoice choice, const Pattern* pattern) {
  const bool causal = runs_causal(choice, pattern);
  if (pattern == nullptr || pattern->direction() == Direction::kCaller)
    return causal ? "causal" : "bidirectional";
  std::string label = std::string("rule:") + direction_name(pattern->direction());
  return causal ? label + "+causal" : label;
}

}  // namespace attnkit::cli
