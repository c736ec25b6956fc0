// Patterns: every attention mechanism as a planner that produces a BlockMask (and optionally a
// token permutation), or, for mechanisms of another shape, its own run().
//
// Spec strings: "name:key=value,key=value"; keys left out take the paper's defaults.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "attnkit/attention.h"
#include "attnkit/block_mask.h"

namespace attnkit {

struct Plan {
  BlockMask mask;
  double plan_seconds = 0.0;
};

// What one run of a pattern did (filled by Pattern::run).
struct RunStats {
  double plan_seconds = 0.0;  // building masks, scoring, hashing...; included in the total time
  double density = 0.0;       // attended pairs / (Nq * Nk), averaged over (batch, head)
  double pairs = 0.0;         // attended pairs per (batch, head) slice, averaged
};

class Pattern {
 public:
  virtual ~Pattern() = default;
  virtual std::string name() const = 0;
  // Canonical spec with every parameter, e.g. "power:block=256,window=5".
  virtual std::string spec() const = 0;
  // Static patterns look only at shapes; dynamic ones read Q and K.
  virtual Plan plan(const AttentionArgs& args) const = 0;
  // Default: plan() then the block-sparse kernel (ANDed with args.causal).
  virtual RunStats run(const AttentionArgs& args) const;
};

struct PatternParam {
  std::string name;
  std::string default_value;
  std::string help;
};

struct PatternInfo {
  std::string name;
  std::string summary;
  std::string paper;
  std::vector<PatternParam> params;
};

// Parsed "key=value" pairs of a spec, checked against the pattern's declared parameters.
class PatternParams {
 public:
  PatternParams(const PatternInfo& info, const std::map<std::string, std::string>& given,
                const std::string& spec);
  int64_t get_int(const std::string& key) const;
  double get_double(const std::string& key) const;
  std::string get_string(const std::string& key) const;
  // "key=value,..." in declaration order, with defaults filled in.
  std::string canonical() const;

 private:
  std::string spec_;
  std::vector<std::pair<std::string, std::string>> values_;
};

using PatternFactory = std::unique_ptr<Pattern> (*)(const PatternParams& params);

// Registers a pattern (call from a static initializer in the pattern's own file).
bool register_pattern(PatternInfo info, PatternFactory factory);
// Throws Error("--pattern", ...) for an unknown name, unknown key or bad value.
std::unique_ptr<Pattern> make_pattern(const std::string& spec);
std::vector<PatternInfo> list_patterns();  // sorted by name

}  // namespace attnkit
