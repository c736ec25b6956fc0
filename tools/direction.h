// The direction `bench` and `compare` run a pattern in. By default each pattern runs as its
// paper runs it: a pattern with a rule of its own (windows, sinks, NATTEN, Radial, prefix LM...)
// as the rule says, never ANDed with causality behind the user's back; a content-based planner
// (Direction::kCaller) causally, as its paper's language models do. --causal ANDs causality
// into every run; --non-causal runs nothing causal (a rule that looks back still does).
#pragma once

#include <string>

#include "args.h"
#include "attnkit/pattern.h"

namespace attnkit::cli {

enum class DirectionChoice { kPaper, kCausal, kNonCausal };

// From --causal / --non-causal (both: an error naming --non-causal).
DirectionChoice direction_choice(const Args& args);

// AttentionArgs::causal for a run of `pattern` (null: dense attention, causal only when asked).
bool runs_causal(DirectionChoice choice, const Pattern* pattern);

// Whether the exact attention a run is judged against is causal: the run is, or the pattern's
// own rule looks back only.
bool judged_causal(DirectionChoice choice, const Pattern* pattern);

// "causal" / "bidirectional" for dense runs and content planners (as run); "rule:causal" /
// "rule:bidirectional" for a pattern whose own rule decides, with "+causal" when causality is
// ANDed into it.
std::string direction_label(DirectionChoice choice, const Pattern* pattern);

}  // namespace attnkit::cli
