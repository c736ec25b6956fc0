// The Pattern contract (include/attnkit/pattern.h): inputs of plan(), read-outs of a Plan, the
// declared parameters and their checks, and the one run() every pattern goes through.
#include "attnkit/pattern.h"

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>

#include "attnkit/error.h"
#include "core/attention_args.h"
#include "core/reused_tensor.h"
#include "core/score_modifiers.h"
#include "core/timing.h"
#include "kernels/cpu/planner_ops.h"
#include "kernels/cpu/tile_plan.h"

namespace attnkit {
namespace {

TensorView shape_view(int64_t batch, int64_t heads, int64_t n, int64_t dim) {
  return TensorView::contiguous(nullptr, DType::kF32, {batch, heads, n, dim});
}

std::string number(double value, PatternParam::Type type) {
  if (type != PatternParam::Type::kReal) {
    if (value >= 9.2e18) return std::to_string(INT64_MAX);  // the declared int64 limits
    if (value <= -9.2e18) return std::to_string(INT64_MIN);
    return std::to_string(static_cast<int64_t>(value));
  }
  char text[32];
  std::snprintf(text, sizeof(text), "%g", value);
  return text;
}

bool parse_int(const std::string& text, int64_t* value) {
  errno = 0;
  char* end = nullptr;
  const long long parsed = std::strtoll(text.c_str(), &end, 10);
  *value = parsed;
  return !text.empty() && end && *end == '\0' && errno == 0;
}

bool parse_real(const std::string& text, double* value) {
  char* end = nullptr;
  *value = std::strtod(text.c_str(), &end);
  return !text.empty() && end && *end == '\0' && std::isfinite(*value);
}

std::string join(const std::vector<std::string>& words, const char* separator) {
  std::string text;
  for (const auto& w : words) text += (text.empty() ? "" : separator) + w;
  return text;
}

// Throws unless `text` is a valid value of `param` (of pattern `name`).
void check_value(const std::string& name, const PatternParam& param, const std::string& text) {
  const std::string what = "'" + name + "' parameter '" + param.name + "' must be ";
  const std::string got = ", got '" + text + "'";
  int64_t i = 0;
  double x = 0.0;
  switch (param.type) {
    case PatternParam::Type::kInt:
      check(parse_int(text, &i) && double(i) >= param.lo && double(i) <= param.hi, "pattern",
            what + "an integer in [" + number(param.lo, param.type) + ", " +
                number(param.hi, param.type) + "]" + got);
      return;
    case PatternParam::Type::kBlock:
      check(parse_int(text, &i) && i > 0 && i % 16 == 0 && i <= (int64_t{1} << 20), "pattern",
            what + "a positive multiple of 16 (at most 1048576)" + got);
      return;
    case PatternParam::Type::kReal:
      check(parse_real(text, &x) && x >= param.lo && x <= param.hi, "pattern",
            what + "a number in [" + number(param.lo, param.type) + ", " +
                number(param.hi, param.type) + "]" + got);
      return;
    case PatternParam::Type::kChoice:
      check(std::find(param.choices.begin(), param.choices.end(), text) != param.choices.end(),
            "pattern", what + "one of " + join(param.choices, ", ") + got);
      return;
    case PatternParam::Type::kText:
      return;
  }
}

}  // namespace

// --- PlanInputs ---

PlanInputs PlanInputs::shapes(int64_t batch, int64_t heads_q, int64_t heads_kv, int64_t nq,
                              int64_t nk, int64_t dim, bool causal) {
  PlanInputs in;
  in.q = shape_view(batch, heads_q, nq, dim);
  in.k = shape_view(batch, heads_kv, nk, dim);
  in.causal = causal;
  return in;
}

PlanInputs PlanInputs::of(const AttentionArgs& args) {
  PlanInputs in;
  in.q = args.q;
  in.k = args.k;
  in.scale = args.scale;
  in.causal = args.causal;
  in.threads = args.threads;
  return in;
}

void PlanInputs::validate(bool needs_data) const {
  for (int i = 0; i < 4; ++i) {
    check(q.shape[i] > 0, "q", "has a zero-size dimension: " + q.describe());
    check(k.shape[i] > 0, "k", "has a zero-size dimension: " + k.describe());
  }
  check(k.shape[0] == q.shape[0], "k",
        "batch must match q: q " + q.describe() + ", k " + k.describe());
  check(k.shape[3] == q.shape[3], "k",
        "head dim must match q, got " + std::to_string(q.shape[3]) + " and " +
            std::to_string(k.shape[3]));
  check(q.shape[1] % k.shape[1] == 0, "k",
        "query heads must be a multiple of kv heads, got " + std::to_string(q.shape[1]) + " and " +
            std::to_string(k.shape[1]));
  check(threads >= 0 && threads <= 1024, "threads",
        "must be in [0, 1024], got " + std::to_string(threads));
  if (needs_data) {
    check(!q.empty(), "q", "is missing: a content-based pattern plans from the query data");
    check(!k.empty(), "k", "is missing: a content-based pattern plans from the key data");
  }
}

// --- Plan ---

int64_t Plan::nq() const {
  if (token_order.empty()) return mask.nq;
  return std::count_if(token_order.begin(), token_order.end(), [](int32_t t) { return t >= 0; });
}

int64_t Plan::nk() const { return token_order.empty() ? mask.nk : nq(); }

std::vector<uint8_t> to_dense(const Plan& plan, int64_t b, int64_t h) {
  const std::vector<uint8_t> kernel_order = to_dense(plan.mask, b, h);
  const int64_t nq = plan.nq(), nk = plan.nk();
  if (plan.token_order.empty()) {
    if (!plan.causal) return kernel_order;
    std::vector<uint8_t> dense = kernel_order;
    for (int64_t i = 0; i < nq; ++i)
      for (int64_t j = std::max<int64_t>(0, i + nk - nq + 1); j < nk; ++j) dense[i * nk + j] = 0;
    return dense;
  }
  const auto& order = plan.token_order;
  const int64_t slots = static_cast<int64_t>(order.size());
  std::vector<uint8_t> dense(static_cast<size_t>(nq * nk), 0);
  for (int64_t p = 0; p < slots; ++p) {
    if (order[p] < 0) continue;
    for (int64_t s = 0; s < slots; ++s)
      if (order[s] >= 0) dense[order[p] * nk + order[s]] = kernel_order[p * slots + s];
  }
  return dense;
}

double density(const Plan& plan) {
  const int64_t nq = plan.nq(), nk = plan.nk();
  if (nq == 0 || nk == 0) return 0.0;
  // A permuted plan holds its causality; padding rows and keys attend nothing.
  const bool causal = plan.causal && plan.token_order.empty();
  const double cells = static_cast<double>(plan.mask.nq) * static_cast<double>(plan.mask.nk);
  return density(plan.mask, causal) * cells / (static_cast<double>(nq) * static_cast<double>(nk));
}

const char* direction_name(Direction direction) {
  switch (direction) {
    case Direction::kCausal:
      return "causal";
    case Direction::kBidirectional:
      return "bidirectional";
    case Direction::kCaller:
      return "caller";
  }
  return "?";
}

const char* family_name(PatternFamily family) {
  switch (family) {
    case PatternFamily::kStatic:
      return "static";
    case PatternFamily::kGrid:
      return "grid";
    case PatternFamily::kDynamic:
      return "dynamic";
  }
  return "?";
}

// --- Declared parameters ---

namespace {

PatternParam declare(std::string name, std::string default_value, std::string help,
                     PatternParam::Type type, double lo = 0.0, double hi = 0.0,
                     std::vector<std::string> choices = {}) {
  PatternParam p;
  p.name = std::move(name);
  p.default_value = std::move(default_value);
  p.help = std::move(help);
  p.type = type;
  p.lo = lo;
  p.hi = hi;
  p.choices = std::move(choices);
  return p;
}

}  // namespace

PatternParam int_param(std::string name, int64_t default_value, int64_t lo, int64_t hi,
                       std::string help) {
  return declare(std::move(name), std::to_string(default_value), std::move(help),
                 PatternParam::Type::kInt, double(lo), double(hi));
}

PatternParam block_param(std::string name, int64_t default_value, std::string help) {
  return declare(std::move(name), std::to_string(default_value), std::move(help),
                 PatternParam::Type::kBlock);
}

PatternParam real_param(std::string name, std::string default_value, double lo, double hi,
                        std::string help) {
  return declare(std::move(name), std::move(default_value), std::move(help),
                 PatternParam::Type::kReal, lo, hi);
}

PatternParam choice_param(std::string name, std::string default_value,
                          std::vector<std::string> choices, std::string help) {
  return declare(std::move(name), std::move(default_value), std::move(help),
                 PatternParam::Type::kChoice, 0.0, 0.0, std::move(choices));
}

PatternParam text_param(std::string name, std::string default_value, std::string help) {
  return declare(std::move(name), std::move(default_value), std::move(help),
                 PatternParam::Type::kText);
}

PatternParams::PatternParams(const PatternInfo& info,
                             const std::map<std::string, std::string>& given)
    : name_(info.name), family_(info.family) {
  std::vector<std::string> names;
  for (const auto& p : info.params) names.push_back(p.name);
  for (const auto& [key, text] : given) {
    check(std::find(names.begin(), names.end(), key) != names.end(), "pattern",
          "'" + info.name + "' has no parameter '" + key + "' (" +
              (names.empty() ? std::string("it takes no parameters")
                             : "parameters: " + join(names, ", ")) +
              ")");
  }
  for (const auto& p : info.params) {
    const auto it = given.find(p.name);
    const std::string& text = it == given.end() ? p.default_value : it->second;
    check_value(info.name, p, text);
    values_.emplace_back(p.name, text);
  }
}

const std::string& PatternParams::value(const std::string& key) const {
  for (const auto& [k, v] : values_)
    if (k == key) return v;
  throw Error("pattern", "'" + name_ + "' has no parameter '" + key + "'");
}

int64_t PatternParams::get_int(const std::string& key) const {
  int64_t i = 0;
  parse_int(value(key), &i);  // checked when constructed
  return i;
}

double PatternParams::get_real(const std::string& key) const {
  double x = 0.0;
  parse_real(value(key), &x);
  return x;
}

std::string PatternParams::get_string(const std::string& key) const { return value(key); }

std::string PatternParams::canonical() const {
  std::string text = name_;
  for (size_t i = 0; i < values_.size(); ++i)
    text += (i == 0 ? ":" : ",") + values_[i].first + "=" + values_[i].second;
  return text;
}

// --- Pattern ---

Pattern::Pattern(const PatternParams& params, Direction direction)
    : name_(params.pattern()),
      spec_(params.canonical()),
      direction_(direction),
      family_(params.family()) {}

RunStats Pattern::run(const AttentionArgs& args, std::unique_ptr<PlanState>* state) const {
  validate(args);
  const double start = now_seconds();
  PlanInputs inputs = PlanInputs::of(args);
  inputs.state = state;
  const Plan plan = this->plan(inputs);
  const double planned = now_seconds();
  int64_t attended = 0;
  AttentionArgs counted = args;
  counted.attended_pairs = &attended;
  execute(counted, plan);
  RunStats stats;
  stats.seconds = now_seconds() - start;
  stats.plan_seconds = planned - start;
  if (args.attended_pairs) *args.attended_pairs += attended;
  const double slices = static_cast<double>(args.q.shape[0] * args.q.shape[1]);
  const double cells = static_cast<double>(args.q.shape[2]) * static_cast<double>(args.k.shape[2]);
  stats.pairs = static_cast<double>(attended) / slices;
  stats.density = stats.pairs / cells;
  stats.tile_density = tile_density(args, plan);
  stats.q_block = plan.mask.q_block;
  stats.kv_block = plan.mask.kv_block;
  return stats;
}

namespace {

// The score modifiers of `args` in kernel order: every row's factors as explicit vectors at its
// slot (position rules and head modes resolved at the row's original index; padding slots 1, 1).
struct PermutedModifiers {
  Tensor tau, gate;
  void apply(const AttentionArgs& args, const std::vector<int32_t>& order,
             AttentionArgs* permuted) {
    if (!has_score_modifiers(args)) return;
    const int64_t batch = args.q.shape[0], heads = args.q.shape[1];
    const int64_t slots = static_cast<int64_t>(order.size());
    tau = Tensor({batch, heads, slots, 1}, DType::kF32);
    gate = Tensor({batch, heads, slots, 1}, DType::kF32);
    for (int64_t b = 0; b < batch; ++b)
      for (int64_t h = 0; h < heads; ++h)
        for (int64_t p = 0; p < slots; ++p) {
          const RowFactors f = order[p] >= 0 ? row_factors(args, b, h, order[p]) : RowFactors{};
          tau.view().set(b, h, p, 0, f.tau);
          gate.view().set(b, h, p, 0, f.gate);
        }
    permuted->row_scale = tau.view();
    permuted->output_gate = gate.view();
    permuted->position_scale = 0.0f;
    permuted->head_modes = nullptr;
  }
};

// A plan with a token order fits these inputs: its mask is over the order's slots, its tokens
// are the inputs' (the order indexes their rows), and its batch / heads fit.
void check_token_order_fits(const std::string& name, const Plan& plan, const AttentionArgs& args) {
  const int64_t slots = static_cast<int64_t>(plan.token_order.size());
  check(plan.mask.nq == slots && plan.mask.nk == slots, "pattern",
        "'" + name + "' planned a mask of " + std::to_string(plan.mask.nq) +
            " rows for a token order of " + std::to_string(slots));
  check(plan.nq() == args.q.shape[2] && plan.nk() == args.k.shape[2], "pattern",
        "'" + name + "' was planned for " + std::to_string(plan.nq()) +
            " tokens, the inputs have nq=" + std::to_string(args.q.shape[2]) +
            ", nk=" + std::to_string(args.k.shape[2]));
  check_mask_fits(args, plan.mask, slots, slots);
}

}  // namespace

void Pattern::execute(const AttentionArgs& args, const Plan& plan) const {
  if (plan.token_order.empty()) {
    attention(args, plan.mask);
    return;
  }
  execute_in_kernel_order(args, plan, nullptr);
}

void Pattern::execute_in_kernel_order(const AttentionArgs& args, const Plan& plan,
                                      const cpu::GridWindows* windows) const {
  // Kernel order: K and V are copied into it once (into this thread's buffers from the last
  // call, reused_tensor.h); the kernel reads Q and writes O and the LSE at the tokens' own rows
  // through the order (TilePlan::q_order). Causality is in the mask. Gathering K and V per
  // visit instead was 2-6% slower on natten and even on halo2d (about 4 visits per key block).
  // Grid patterns without causality pass their windows instead: the kernel reads K and V in
  // token order, one run of keys along the grid's last axis at a time.
  // Dropout, if set, is drawn at kernel-order positions: the backward (also in kernel order)
  // redraws the same mask.
  const auto& order = plan.token_order;
  check_token_order_fits(name(), plan, args);
  AttentionArgs kernel = args;
  kernel.causal = false;
  PermutedModifiers modifiers;
  modifiers.apply(args, order, &kernel);
  ReusedTensor k(0), v(1);
  if (windows == nullptr) {
    cpu::permute_tokens(args.k, order, args.threads, &*k);
    cpu::permute_tokens(args.v, order, args.threads, &*v);
    kernel.k = k->view();
    kernel.v = v->view();
  }
  cpu::TilePlan tiles = cpu::make_tile_plan(kernel, &plan.mask, &order);
  tiles.windows = windows;
  cpu::run_tile_plan(tiles);
}

double Pattern::tile_density(const AttentionArgs&, const Plan& plan) const {
  return block_density(plan.mask);
}

void no_backward(const std::string& name) {
  throw Error("pattern", "'" + name + "' has no backward yet");
}

void check_no_dropout(const std::string& name, float dropout) {
  check(dropout == 0.0f, "dropout",
        "is not supported by pattern '" + name + "' (got " + std::to_string(dropout) + ")");
}

void Pattern::forward(const AttentionArgs& args, const Plan& plan) const {
  validate(args);
  execute(args, plan);
}

void Pattern::backward(const BackwardArgs& args, const Plan& plan) const {
  validate(args);
  execute_backward(args, plan);
}

void Pattern::backward(const BackwardArgs& args) const {
  validate(args);
  execute_backward(args, plan(PlanInputs::of(args.forward)));
}

void Pattern::execute_backward(const BackwardArgs& args, const Plan& plan) const {
  if (plan.token_order.empty()) {
    attention_backward(args, plan.mask);
    return;
  }
  // Kernel order, as execute(): every input gathered, the gradients scattered back.
  const auto& order = plan.token_order;
  const AttentionArgs& f = args.forward;
  const int64_t slots = static_cast<int64_t>(order.size());
  check_token_order_fits(name(), plan, f);
  // The copies reuse this thread's buffers from the last call (reused_tensor.h).
  ReusedTensor q(0), k(1), v(2), dout(3), out(4), lse(5), dlse(6);
  cpu::permute_tokens(f.q, order, f.threads, &*q);
  cpu::permute_tokens(f.k, order, f.threads, &*k);
  cpu::permute_tokens(f.v, order, f.threads, &*v);
  cpu::permute_tokens(args.dout, order, f.threads, &*dout);
  cpu::permute_tokens(f.out, order, f.threads, &*out);  // padding rows: zero, and their dO
  cpu::permute_tokens(f.lse, order, f.threads, &*lse);
  if (!args.dlse.empty()) cpu::permute_tokens(args.dlse, order, f.threads, &*dlse);
  Tensor dq({f.q.shape[0], f.q.shape[1], slots, f.q.shape[3]}, DType::kF32);
  Tensor dk({f.k.shape[0], f.k.shape[1], slots, f.k.shape[3]}, DType::kF32);
  Tensor dv({f.v.shape[0], f.v.shape[1], slots, f.v.shape[3]}, DType::kF32);
  BackwardArgs permuted = args;
  permuted.forward.q = q->view(), permuted.forward.k = k->view(), permuted.forward.v = v->view();
  permuted.forward.out = out->view(), permuted.forward.lse = lse->view();
  permuted.forward.causal = false;
  permuted.dout = dout->view();
  permuted.dlse = args.dlse.empty() ? TensorView{} : dlse->view();
  permuted.dq = dq.view(), permuted.dk = dk.view(), permuted.dv = dv.view();
  PermutedModifiers modifiers;
  modifiers.apply(f, order, &permuted.forward);
  attention_backward(permuted, plan.mask);
  cpu::unpermute_tokens(dq.view(), {}, order, args.dq, {}, f.threads);
  // Keys in kernel order scatter back the same way (padding slots are dropped).
  cpu::unpermute_tokens(dk.view(), {}, order, args.dk, {}, f.threads);
  cpu::unpermute_tokens(dv.view(), {}, order, args.dv, {}, f.threads);
}

}  // namespace attnkit
