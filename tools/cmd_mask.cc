// `attnkit mask`: a pattern's plan for given sizes: its block mask (the lists the kernel walks)
// as ASCII or a PNG, and its element mask in token order as a .npy.
#include <cstdio>
#include <string>
#include <vector>

#include "args.h"
#include "attnkit/block_mask.h"
#include "attnkit/error.h"
#include "attnkit/npy.h"
#include "attnkit/pattern.h"
#include "command.h"
#include "core/timing.h"
#include "eval/inputs.h"
#include "mask_png.h"

namespace attnkit::cli {
namespace {

constexpr char kUsage[] =
    "attnkit mask --pattern SPEC --nq NQ --nk NK [--heads H] [--kv-heads HKV] [--causal]\n"
    "             [--dump M.npy] [--png FILE] [--reps R]\n"
    "    Plans the pattern for these sizes and prints what the kernel walks: the block mask\n"
    "    ('#' FULL, '+' PARTIAL, '.' empty; wide masks are shown with each character standing for\n"
    "    a square group of blocks; grid patterns in their box order), its density (attended pairs\n"
    "    / (NQ * NK), causality included) and block density. --causal plans with bottom-right\n"
    "    causality. --dump writes the element mask in token order, uint8 [H, NQ, NK], 1 where\n"
    "    query i attends key j (at most 2^30 elements). --png draws the block mask of head 0.\n"
    "    Content-based patterns plan from random Q, K (d = 64, seed 1). --reps R: plan R times\n"
    "    and report the median planning time (default 1).";

constexpr int64_t kMaxDumpElements = int64_t{1} << 30;

int mask_main(const std::vector<std::string>& argv) {
  const Args args(
      argv, {"--pattern", "--nq", "--nk", "--heads", "--kv-heads", "--dump", "--png", "--reps"},
      {"--causal"});
  const std::unique_ptr<Pattern> pattern = make_pattern(args.str("--pattern"));
  const int64_t nq = args.integer("--nq", 1, int64_t{1} << 24);
  const int64_t nk = args.integer("--nk", 1, int64_t{1} << 24);
  const int64_t heads = args.integer("--heads", 1, 1, 4096);
  const int64_t heads_kv = args.integer("--kv-heads", 1, 1, 4096);
  check(heads % heads_kv == 0, "--kv-heads",
        "query heads " + std::to_string(heads) + " must be a multiple of kv heads " +
            std::to_string(heads_kv));
  const int64_t reps = args.integer("--reps", 1, 1, 10000);
  if (args.has("--dump")) {
    const double elements = double(heads) * double(nq) * double(nk);
    check(elements <= double(kMaxDumpElements), "--dump",
          "the element mask would hold " + std::to_string(heads) + " x " + std::to_string(nq) +
              " x " + std::to_string(nk) + " bytes (at most 2^30); use smaller --nq/--nk");
  }

  // Static and grid patterns read only the shapes; content-based ones get random inputs.
  const int64_t dim = 64;
  PlanInputs inputs = PlanInputs::shapes(1, heads, heads_kv, nq, nk, dim, args.flag("--causal"));
  Tensor q, k;
  if (pattern->family() == PatternFamily::kDynamic) {
    q = random_normal({1, heads, nq, dim}, DType::kF32, 1);
    k = random_normal({1, heads_kv, nk, dim}, DType::kF32, 2);
    inputs.q = q.view();
    inputs.k = k.view();
  }
  Plan plan;
  const double plan_seconds = median_seconds(
      static_cast<int>(reps), [&] { plan = pattern->plan(inputs); }, 0);
  const BlockMask& mask = plan.mask;
  mask.validate();

  std::printf(
      "%s  nq=%lld nk=%lld heads=%lld%s  blocks %lldx%lld of %lldx%lld%s  density %.6f  "
      "block density %.6f  plan %.3f ms\n",
      pattern->spec().c_str(), static_cast<long long>(nq), static_cast<long long>(nk),
      static_cast<long long>(heads), plan.causal ? " causal" : "",
      static_cast<long long>(mask.q_blocks()), static_cast<long long>(mask.kv_blocks()),
      static_cast<long long>(mask.q_block), static_cast<long long>(mask.kv_block),
      plan.token_order.empty() ? "" : " (box order)", density(plan), block_density(mask),
      plan_seconds * 1e3);
  const int64_t shown_heads = mask.heads == 1 ? 1 : heads;
  for (int64_t h = 0; h < shown_heads; ++h) {
    if (mask.heads > 1) std::printf("head %lld\n", static_cast<long long>(h));
    std::fputs(to_ascii(mask, 0, h, 128).c_str(), stdout);
  }
  if (args.has("--png")) write_block_mask_png(args.str("--png"), mask, 0, 0, 0, "--png");
  if (args.has("--dump")) {
    std::vector<uint8_t> dense;
    dense.reserve(static_cast<size_t>(heads * nq * nk));
    for (int64_t h = 0; h < heads; ++h) {
      const std::vector<uint8_t> slice = to_dense(plan, 0, mask.heads == 1 ? 0 : h);
      dense.insert(dense.end(), slice.begin(), slice.end());
    }
    write_npy_raw(args.str("--dump"), "|u1", {heads, nq, nk}, dense.data(), dense.size(), "--dump");
  }
  return 0;
}

[[maybe_unused]] const bool registered = register_command({"mask", kUsage, mask_main});

}  // namespace
}  // namespace attnkit::cli
