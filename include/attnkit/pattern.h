// Patterns: every attention mechanism of the sparse-attention papers as a planner of which keys
// each query sees.
//
//   plan(inputs)  shapes (plus Q and K for content-based planners) -> Plan: the BlockMask the
//                 kernel walks and, where the mechanism reorders tokens, the token order.
//   run(args)     times plan(), calls execute() (default: the block-sparse kernel over the plan)
//                 and reports RunStats, the attended pairs taken from the kernel's own counter.
//   backward(args, plan)  gradients through the same plan (default: the block-sparse backward).
// Mechanisms that are not one block-sparse pass (HyperAttention's sampled part, Routing's
// averaged clusters, SSA's ensemble) override execute(); their plan() still shows the pairs
// they attend.
//
// Spec strings: "name:key=value,key=value"; keys left out take the paper's defaults. Errors in
// specs and parameters name the argument "pattern".
#pragma once

#include <any>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "attnkit/attention.h"
#include "attnkit/block_mask.h"

namespace attnkit {
namespace cpu {
struct GridWindows;  // kernels/cpu/tile_plan.h
}  // namespace cpu

// What a content-based planner may keep between plans of one growing sequence (decode over a KV
// cache), so that each step costs work on the new keys only: InfLLM-V2 keeps its pooled keys and
// pools only the windows the new keys complete. The caller keeps one per sequence and layer and
// promises that, between calls with it, K only gains rows at the end (the earlier rows unchanged);
// a planner that finds a state it cannot use (other shapes, fewer keys) starts a new one.
// Patterns that keep nothing ignore it.
class PlanState {
 public:
  virtual ~PlanState() = default;
};

// What plan() reads. Static and grid patterns need only the shapes of q and k (their data may
// be null); content-based planners read q and k.
struct PlanInputs {
  TensorView q;                                 // [B, Hq, Nq, D]
  TensorView k;                                 // [B, Hkv, Nk, D]
  float scale = 0.0f;                           // 0 means 1/sqrt(D)
  bool causal = false;                          // bottom-right aligned, as AttentionArgs::causal
  int threads = 0;                              // 0 means every core
  std::unique_ptr<PlanState>* state = nullptr;  // optional, see PlanState

  // Shapes only (null data), for the patterns that are not content-based.
  static PlanInputs shapes(int64_t batch, int64_t heads_q, int64_t heads_kv, int64_t nq, int64_t nk,
                           int64_t dim = 64, bool causal = false);
  // q, k, scale, causal and threads of an attention call.
  static PlanInputs of(const AttentionArgs& args);
  // Throws Error("q" / "k" / "threads", ...) for shapes that do not fit together, and for null
  // data when `needs_data` (content-based planners).
  void validate(bool needs_data) const;
};

// What one run executes.
struct Plan {
  // The lists the kernel walks, in kernel order.
  BlockMask mask;
  // Empty: kernel order is token order, and the kernel ANDs `causal` with the mask. Otherwise
  // kernel row p holds token token_order[p] (-1 = padding), for queries and keys alike
  // (self-attention); such a mask already holds the causality plan() was asked for.
  std::vector<int32_t> token_order;
  bool causal = false;  // PlanInputs::causal of the plan() call
  // What execute() of a mechanism that is not one block-sparse pass kept from planning (grid
  // patterns without causality: their rows' windows); empty for the others.
  std::any state;

  int64_t nq() const;  // query and key tokens (padding not counted)
  int64_t nk() const;
};

// Read-outs of a plan in token order, causality included (what the kernel attends):
// the element mask [Nq][Nk] of list (b, h) (small sizes only), and attended pairs / (Nq * Nk)
// averaged over the mask's lists.
std::vector<uint8_t> to_dense(const Plan& plan, int64_t b, int64_t h);
double density(const Plan& plan);

// What one run of a pattern did (filled by Pattern::run, in one place).
struct RunStats {
  double seconds = 0.0;       // plan() + execute()
  double plan_seconds = 0.0;  // plan(): building masks, scoring, hashing...
  double pairs = 0.0;         // attended pairs per (batch, head) slice, from the kernel's counter
  double density = 0.0;       // pairs / (Nq * Nk)
  // Tiles (query block x key block) the kernel visits / all tiles of the plan's mask
  // (block_density): what the kernel pays for, against `density`, what it keeps. Grid patterns
  // whose kernel walks each query box's union window: the pairs it scores / (Nq * Nk).
  double tile_density = 0.0;
  int64_t q_block = 0, kv_block = 0;  // the plan's tile: query rows x keys
};

// How a pattern relates to causality; `compare` and `bench` run each pattern in the direction
// its paper uses unless asked otherwise.
enum class Direction : uint8_t {
  kCausal,         // its own rule looks back only (windows, sinks, ...): not ANDed by default
  kBidirectional,  // its own rule looks both ways (NATTEN, HaloNet, Radial, prefix LM, causal=0)
  kCaller,         // no direction of its own: planned and run as AttentionArgs::causal says
                   // (content planners; their papers run them causally)
};
const char* direction_name(Direction direction);  // "causal", "bidirectional", "caller"

// The families, one folder each under src/patterns/.
enum class PatternFamily : uint8_t {
  kStatic,   // 1-D interval rules over positions (static/)
  kGrid,     // tokens on a grid, both ways: NATTEN and HaloNet (box order), Radial (grid/)
  kDynamic,  // content-based planners that read Q and K (dynamic/)
};
const char* family_name(PatternFamily family);  // "static", "grid", "dynamic"

// A declared parameter: its type fixes how values are checked, once, in PatternParams.
struct PatternParam {
  enum class Type : uint8_t {
    kInt,     // integer in [lo, hi]
    kBlock,   // a BlockMask block size: a positive multiple of 16, at most 2^20
    kReal,    // finite number in [lo, hi]
    kChoice,  // one of `choices`
    kText,    // free text, parsed by the pattern
  };
  std::string name;
  std::string default_value;
  std::string help;
  Type type = Type::kInt;
  double lo = 0.0, hi = 0.0;
  std::vector<std::string> choices;
};
PatternParam int_param(std::string name, int64_t default_value, int64_t lo, int64_t hi,
                       std::string help);
PatternParam block_param(std::string name, int64_t default_value, std::string help);
PatternParam real_param(std::string name, std::string default_value, double lo, double hi,
                        std::string help);
PatternParam choice_param(std::string name, std::string default_value,
                          std::vector<std::string> choices, std::string help);
PatternParam text_param(std::string name, std::string default_value, std::string help);

struct PatternInfo {
  std::string name;
  std::string summary;
  std::string paper;
  PatternFamily family = PatternFamily::kStatic;
  std::vector<PatternParam> params;
};

// The values of one spec, checked against the pattern's declared parameters when constructed:
// unknown keys, non-numbers and values out of range throw Error("pattern", ...).
class PatternParams {
 public:
  PatternParams(const PatternInfo& info, const std::map<std::string, std::string>& given);
  const std::string& pattern() const { return name_; }
  PatternFamily family() const { return family_; }
  int64_t get_int(const std::string& key) const;  // kInt and kBlock
  double get_real(const std::string& key) const;
  std::string get_string(const std::string& key) const;  // kChoice and kText
  // "name:key=value,..." in declaration order, with defaults filled in ("name" alone when the
  // pattern takes no parameters).
  std::string canonical() const;

 private:
  const std::string& value(const std::string& key) const;
  std::string name_;
  PatternFamily family_;
  std::vector<std::pair<std::string, std::string>> values_;
};

class Pattern {
 public:
  virtual ~Pattern() = default;
  const std::string& name() const { return name_; }
  // Canonical spec with every parameter, e.g. "power:block=256,window=5".
  const std::string& spec() const { return spec_; }
  Direction direction() const { return direction_; }
  // kDynamic patterns read Q and K when they plan.
  PatternFamily family() const { return family_; }

  // Plans for these inputs; throws Error("pattern", ...) when the pattern cannot serve them
  // (e.g. a grid that does not fit N) and Error("q"/"k", ...) for inconsistent inputs.
  virtual Plan plan(const PlanInputs& inputs) const = 0;
  // plan(PlanInputs::of(args)) (with `state`, see PlanState), then execute(); times both and
  // takes the pairs from the kernel's counter (also added to *args.attended_pairs when set).
  RunStats run(const AttentionArgs& args, std::unique_ptr<PlanState>* state = nullptr) const;
  // execute() through a plan the caller holds (training keeps it for the backward).
  void forward(const AttentionArgs& args, const Plan& plan) const;
  // Gradients of forward(args.forward, plan) with the plan's selection held constant, as
  // trainable sparse attention does. Needs args.forward.out and .lse of that forward. Throws
  // Error("pattern", ...) for a pattern without a backward.
  void backward(const BackwardArgs& args, const Plan& plan) const;
  // The same after planning again: plan() is a function of Q and K, so the selection is the
  // forward's.
  void backward(const BackwardArgs& args) const;

 protected:
  Pattern(const PatternParams& params, Direction direction);
  // Default: the block-sparse kernel over plan.mask, in token order or, with a token order, on
  // Q, K, V gathered into kernel order and O, LSE scattered back. `args.attended_pairs` points
  // at run()'s counter: overrides pass it on to every kernel call.
  virtual void execute(const AttentionArgs& args, const Plan& plan) const;
  // execute() of a plan with a token order. Given the rows' grid windows, the kernel reads K
  // and V in token order and walks the windows instead of copying K and V into kernel order.
  void execute_in_kernel_order(const AttentionArgs& args, const Plan& plan,
                               const cpu::GridWindows* windows) const;
  // RunStats::tile_density of execute(args, plan). Default: block_density(plan.mask).
  virtual double tile_density(const AttentionArgs& args, const Plan& plan) const;
  // Default: the block-sparse backward over plan.mask (in kernel order when there is a token
  // order). Overridden by the patterns whose execute() is overridden.
  virtual void execute_backward(const BackwardArgs& args, const Plan& plan) const;

 private:
  std::string name_, spec_;
  Direction direction_;
  PatternFamily family_;
};

// Throws Error("pattern", "'NAME' has no backward yet"): for the execute_backward() of patterns
// whose execute() the block-sparse backward does not describe.
[[noreturn]] void no_backward(const std::string& name);
// Throws Error("dropout", ...) when dropout is set: for the patterns whose execute() runs the
// kernel on gathered sub-problems, where the mask's (b, h, i, j) would not be the caller's.
void check_no_dropout(const std::string& name, float dropout);

using PatternFactory = std::unique_ptr<Pattern> (*)(const PatternParams& params);

// Constructs a pattern class from its parameters (the factory of most registrations).
template <class T>
std::unique_ptr<Pattern> construct_pattern(const PatternParams& params) {
  return std::make_unique<T>(params);
}

struct PatternRegistration {
  PatternInfo info;
  PatternFactory factory;
};

// Adds a pattern of your own to the registry (the built-in ones are listed in registry.cc);
// throws Error("pattern", ...) for a name already taken.
void register_pattern(PatternRegistration registration);
// Throws Error("pattern", ...) for an unknown name, unknown key or bad value.
std::unique_ptr<Pattern> make_pattern(const std::string& spec);
std::vector<PatternInfo> list_patterns();  // sorted by name

}  // namespace attnkit
