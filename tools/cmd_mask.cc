// `attnkit mask`: a pattern's block mask for given sizes, as ASCII, an element-mask .npy, or a PNG.
#include <cstdio>
#include <string>
#include <vector>

#include "args.h"
#include "attnkit/block_mask.h"
#include "attnkit/error.h"
#include "attnkit/npy.h"
#include "attnkit/pattern.h"
#include "command.h"
#include "eval/inputs.h"
#include "core/timing.h"

namespace attnkit::cli {
namespace {

constexpr char kUsage[] =
    "attnkit mask --pattern SPEC --nq NQ --nk NK [--heads H] [--dump M.npy] [--png FILE]\n"
    "             [--reps R]\n"
    "    Prints the block mask (64 x 64 blocks: '#' FULL, '+' PARTIAL, '.' empty; wide masks\n"
    "    are shown with each character standing for a square group of blocks), its density and\n"
    "    block density. --dump writes the element mask, uint8 [H, NQ, NK], 1 where query i may\n"
    "    attend key j (the pattern's own rule, causality included, bottom-right aligned; at most\n"
    "    2^30 elements). --png draws the block mask of head 0. Dynamic patterns see random Q, K\n"
    "    (d = 64, seed 1). --reps R: plan R times and report the median planning time (a quick\n"
    "    check of mask-building cost; default 1).";

constexpr int64_t kMaxDumpElements = int64_t{1} << 30;

int mask_main(const std::vector<std::string>& argv) {
  const Args args(argv, {"--pattern", "--nq", "--nk", "--heads", "--dump", "--png", "--reps"});
  const std::unique_ptr<Pattern> pattern = make_pattern(args.str("--pattern"));
  const int64_t nq = args.integer("--nq", 1, int64_t{1} << 24);
  const int64_t nk = args.integer("--nk", 1, int64_t{1} << 24);
  const int64_t heads = args.integer("--heads", 1, 1, 4096);
  const int64_t reps = args.integer("--reps", 1, 1, 10000);
  if (args.has("--dump")) {
    const double elements = double(heads) * double(nq) * double(nk);
    check(elements <= double(kMaxDumpElements), "--dump",
          "the element mask would hold " + std::to_string(heads) + " x " + std::to_string(nq) +
              " x " + std::to_string(nk) + " bytes (at most 2^30); use smaller --nq/--nk");
  }

  // Static patterns read only the shapes; dynamic ones get random inputs to plan from.
  const int64_t dim = 64;
  const Tensor q = random_normal({1, heads, nq, dim}, DType::kF32, 1);
  const Tensor k = random_normal({1, 1, nk, dim}, DType::kF32, 2);
  Tensor out({1, heads, nq, dim}, DType::kF32);
  AttentionArgs attention_args;
  attention_args.q = q.view();
  attention_args.k = k.view();
  attention_args.v = k.view();
  attention_args.out = out.view();
  Plan plan;
  std::vector<double> plan_seconds;
  for (int64_t r = 0; r < reps; ++r) {
    plan = pattern->plan(attention_args);
    plan_seconds.push_back(plan.plan_seconds);
  }
  const BlockMask& mask = plan.mask;
  mask.validate();

  std::printf(
      "%s  nq=%lld nk=%lld heads=%lld  blocks %lldx%lld of %lldx%lld  density %.6f  "
      "block density %.6f  plan %.3f ms\n",
      pattern->spec().c_str(), static_cast<long long>(nq), static_cast<long long>(nk),
      static_cast<long long>(heads), static_cast<long long>(mask.q_blocks()),
      static_cast<long long>(mask.kv_blocks()), static_cast<long long>(mask.q_block),
      static_cast<long long>(mask.kv_block), density(mask), block_density(mask),
      median(plan_seconds) * 1e3);
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
      const std::vector<uint8_t> slice = to_dense(mask, 0, mask.heads == 1 ? 0 : h);
      dense.insert(dense.end(), slice.begin(), slice.end());
    }
    write_npy_raw(args.str("--dump"), "|u1", {heads, nq, nk}, dense.data(), dense.size(), "--dump");
  }
  return 0;
}

[[maybe_unused]] const bool registered = register_command({"mask", kUsage, mask_main});

}  // namespace
}  // namespace attnkit::cli
