// Public entry points of the CPU kernels: dense, causal and block-sparse attention, forward and
// backward.
#include <string>

#include "attnkit/attention.h"
#include "attnkit/block_mask.h"
#include "attnkit/error.h"
#include "core/attention_args.h"
#include "kernels/cpu/backward_plan.h"
#include "kernels/cpu/tile_plan.h"

namespace attnkit {

// Decode (few queries against a long cache, or an f32 query over a 16-bit KV cache, which only the
// decode kernel reads in place) splits the keys across threads instead; it has no dropout
// (training runs the tile kernel).
static bool use_decode_path(const AttentionArgs& args) {
  return args.q.shape[2] <= 16 && args.dropout == 0.0f &&
         (args.k.shape[2] >= 1024 || args.q.dtype != args.k.dtype);
}

void attention(const AttentionArgs& args) {
  validate_f32_query(args);
  if (use_decode_path(args)) return attention_decode(args);
  validate(args);
  const cpu::TilePlan plan = cpu::make_tile_plan(args, nullptr);
  cpu::run_tile_plan(plan);
}

void attention(const AttentionArgs& args, const BlockMask& mask) {
  validate_f32_query(args);
  check_mask_fits(args, mask, args.q.shape[2], args.k.shape[2]);
  if (decode_can_walk(args, mask)) return attention_decode(args, mask);
  validate(args);
  const cpu::TilePlan plan = cpu::make_tile_plan(args, &mask);
  cpu::run_tile_plan(plan);
}

void attention_backward(const BackwardArgs& args) {
  validate(args);
  const cpu::BackwardPlan plan = cpu::make_backward_plan(args, nullptr);
  cpu::run_backward_plan(plan);
}

void attention_backward(const BackwardArgs& args, const BlockMask& mask) {
  validate(args);
  check_mask_fits(args.forward, mask, args.forward.q.shape[2], args.forward.k.shape[2]);
  const cpu::BackwardPlan plan = cpu::make_backward_plan(args, &mask);
  cpu::run_backward_plan(plan);
}

}  // namespace attnkit
