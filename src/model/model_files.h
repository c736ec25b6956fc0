// Where the real model lives: scripts/setup-model.sh puts it in <repo>/models/.
#pragma once

#include <string>

namespace attnkit::model {

inline constexpr char kDefaultModelFile[] = "models/SmolLM2-135M-Instruct.Q4_1.gguf";

// The default model: $ATTNKIT_MODEL if set, else kDefaultModelFile under the working directory,
// under `source_dir` (when given), or up to three directories above the running executable.
// Returns "" when none exists.
std::string locate_model(const std::string& source_dir = "");

}  // namespace attnkit::model
