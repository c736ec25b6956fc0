// `attnkit bench`: times attention on random normal inputs and relates it to the machine's peak.
//
// gflops counts the work actually done: 2 * pairs * (D + Dv) per (batch, query head) slice
// (QK^T and PV, one multiply-add = 2 flops), with pairs the attended query-key pairs. The
// backward (--backward) counts its five products: 2 * pairs * (3 D + 2 Dv) per slice (QK^T and
// dO V^T recomputed, dV = P^T dO, dQ = dS K, dK = dS^T Q).
#include <algorithm>
#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include "args.h"
#include "attention_job.h"
#include "bench_context_parallel.h"
#include "bench_operators.h"
#include "attnkit/error.h"
#include "command.h"
#include "core/attention_args.h"
#include "core/timing.h"
#include "direction.h"
#include "eval/inputs.h"
#include "eval/json.h"
#include "eval/peak.h"

namespace attnkit::cli {
namespace {

constexpr char kUsage[] =
    "attnkit bench --n NK [--nq NQ] --d D [--dv DV] --heads HQ [--kv-heads HKV] [--batch B]\n"
    "              [--causal | --non-causal] [--dtype f32|f16|bf16] [--threads N] [--reps R]\n"
    "              [--json] [--pattern SPEC] [--seed S] [--backward]\n"
    "    Random normal Q, K, V; one warm-up, then the median of R runs (default 5). --json prints\n"
    "    one object: seconds, pairs (per (batch, head) slice), density, gflops\n"
    "    (2*pairs*(D+Dv)*B*HQ/seconds/1e9), bytes_read (Q,K,V bytes), read_gbps, peak_gflops,\n"
    "    fraction_of_peak (and with --pattern: plan_seconds, direction, tile_density = query x\n"
    "    key block tiles the kernel visits / all tiles (grid patterns without causality: the\n"
    "    pairs their window walk scores / N^2), against density, the pairs it keeps;\n"
    "    q_block x kv_block, the tile).\n"
    "    --backward: also the median of R backward runs (dO random normal; through the same\n"
    "    plan with --pattern): backward_seconds, backward_gflops (2*pairs*(3*D+2*Dv)*B*HQ/\n"
    "    seconds/1e9), backward_fraction_of_peak.\n"
    "    Direction: dense attention is causal with --causal only. A pattern runs as its paper\n"
    "    does unless told: a rule of its own (window, natten2d, radial...) as the rule says, "
    "never\n"
    "    ANDed with causality; a content-based planner (hip, infllm_v2...) causal. --causal ANDs\n"
    "    causality into every run, --non-causal makes no run causal.";

int bench_main(const std::vector<std::string>& argv) {
  if (std::find(argv.begin(), argv.end(), "--op") != argv.end()) return bench_operator_main(argv);
  if (std::find(argv.begin(), argv.end(), "--context-parallel") != argv.end())
    return bench_context_parallel_main(argv);
  const Args args(argv,
                  {"--n", "--nq", "--d", "--dv", "--heads", "--kv-heads", "--batch", "--dtype",
                   "--threads", "--reps", "--pattern", "--seed"},
                  {"--causal", "--non-causal", "--json", "--backward"});
  const int64_t nk = args.integer("--n", 1, int64_t{1} << 24);
  const int64_t nq = args.integer("--nq", nk, 1, int64_t{1} << 24);
  const int64_t d = args.integer("--d", 1, 1024);
  const int64_t dv = args.integer("--dv", d, 1, 1024);
  const int64_t heads = args.integer("--heads", 1, 4096);
  const int64_t kv_heads = args.integer("--kv-heads", heads, 1, 4096);
  const int64_t batch = args.integer("--batch", 1, 1, 4096);
  check(heads % kv_heads == 0, "--kv-heads",
        "query heads " + std::to_string(heads) + " must be a multiple of kv heads " +
            std::to_string(kv_heads));
  const DType dtype = parse_dtype(args.str("--dtype", "f32"), "--dtype");
  const int threads = effective_threads(static_cast<int>(args.integer("--threads", 0, 1, 1024)));
  const int reps = static_cast<int>(args.integer("--reps", 5, 1, 100000));
  const uint64_t seed = static_cast<uint64_t>(args.integer("--seed", 1, 0, INT64_MAX));
  std::unique_ptr<Pattern> pattern;
  if (args.has("--pattern")) pattern = make_pattern(args.str("--pattern"));
  const DirectionChoice direction = direction_choice(args);
  const bool causal = runs_causal(direction, pattern.get());

  // The probe runs first: its 512 MiB buffer is freed before the inputs exist, so it never adds
  // to the run's peak memory.
  const Peak peak = measure_peak(threads);
  const Tensor q = random_normal({batch, heads, nq, d}, dtype, seed);
  const Tensor k = random_normal({batch, kv_heads, nk, d}, dtype, seed + 1);
  const Tensor v = random_normal({batch, kv_heads, nk, dv}, dtype, seed + 2);
  Tensor out({batch, heads, nq, dv}, DType::kF32);
  Tensor lse({batch, heads, nq}, DType::kF32);
  AttentionArgs attention_args;
  attention_args.q = q.view();
  attention_args.k = k.view();
  attention_args.v = v.view();
  attention_args.out = out.view();
  attention_args.lse = lse.rows_view();
  attention_args.causal = causal;
  attention_args.threads = threads;

  RunStats stats;
  std::vector<double> plan_seconds;
  const double seconds = median_seconds(reps, [&] {
    stats = run_attention(attention_args, pattern.get());
    plan_seconds.push_back(stats.plan_seconds);
  });
  plan_seconds.erase(plan_seconds.begin());  // the warm-up run

  // The backward, through one plan made outside the timing (training plans in the forward).
  const bool backward = args.flag("--backward");
  double backward_seconds = 0.0;
  if (backward) {
    const Tensor dout = random_normal({batch, heads, nq, dv}, dtype, seed + 3);
    Tensor dq({batch, heads, nq, d}, DType::kF32), dk({batch, kv_heads, nk, d}, DType::kF32);
    Tensor dvg({batch, kv_heads, nk, dv}, DType::kF32);
    BackwardArgs b;
    b.forward = attention_args;
    b.dout = dout.view();
    b.dq = dq.view(), b.dk = dk.view(), b.dv = dvg.view();
    std::unique_ptr<Plan> plan;
    if (pattern) {
      plan = std::make_unique<Plan>(pattern->plan(PlanInputs::of(attention_args)));
      pattern->forward(attention_args, *plan);
    } else {
      attention(attention_args);
    }
    backward_seconds =
        median_seconds(reps, [&] { run_attention_backward(b, pattern.get(), plan.get()); });
  }

  const double pairs = stats.pairs;
  const double flops = 2.0 * pairs * static_cast<double>(d + dv) * batch * heads;
  const double gflops = flops / seconds / 1e9;
  const double bytes_read = static_cast<double>(q.bytes() + k.bytes() + v.bytes());
  const double read_gbps = bytes_read / seconds / 1e9;
  const double fraction = peak.fma_gflops > 0 ? gflops / peak.fma_gflops : 0.0;
  const double density = pairs / (static_cast<double>(nq) * static_cast<double>(nk));
  const double backward_gflops = backward ? 2.0 * pairs * static_cast<double>(3 * d + 2 * dv) *
                                                batch * heads / backward_seconds / 1e9
                                          : 0.0;
  const double backward_fraction = peak.fma_gflops > 0 ? backward_gflops / peak.fma_gflops : 0.0;

  if (args.flag("--json")) {
    JsonObject json;
    json.add("seconds", seconds)
        .add("pairs", pairs)
        .add("density", density)
        .add("gflops", gflops)
        .add("bytes_read", bytes_read)
        .add("read_gbps", read_gbps)
        .add("peak_gflops", peak.fma_gflops)
        .add("fraction_of_peak", fraction)
        .add("peak_read_gbps", peak.read_gbps)
        .add("fraction_of_read_peak", peak.read_gbps > 0 ? read_gbps / peak.read_gbps : 0.0);
    if (backward)
      json.add("backward_seconds", backward_seconds)
          .add("backward_gflops", backward_gflops)
          .add("backward_fraction_of_peak", backward_fraction);
    if (pattern)
      json.add("pattern", pattern->spec())
          .add("plan_seconds", median(plan_seconds))
          .add("tile_density", stats.tile_density)
          .add("q_block", stats.q_block)
          .add("kv_block", stats.kv_block)
          .add("direction", direction_label(direction, pattern.get()));
    json.add("batch", batch)
        .add("heads", heads)
        .add("kv_heads", kv_heads)
        .add("nq", nq)
        .add("nk", nk)
        .add("d", d)
        .add("dv", dv)
        .add("causal", causal)
        .add("dtype", dtype_name(dtype))
        .add("threads", threads)
        .add("reps", reps)
        .add("target", peak.target);
    std::printf("%s\n", json.str().c_str());
  } else {
    std::printf(
        "%s %s B=%lld Hq=%lld Hkv=%lld Nq=%lld Nk=%lld D=%lld Dv=%lld%s, %d threads: "
        "%.4f s (median of %d), %.1f GFLOP/s = %.1f%% of %.1f peak, %.1f GB/s read = %.1f%% of "
        "%.1f, density %.4f",
        pattern ? pattern->spec().c_str() : "dense", dtype_name(dtype),
        static_cast<long long>(batch), static_cast<long long>(heads),
        static_cast<long long>(kv_heads), static_cast<long long>(nq), static_cast<long long>(nk),
        static_cast<long long>(d), static_cast<long long>(dv), causal ? " causal" : "", threads,
        seconds, reps, gflops, 100.0 * fraction, peak.fma_gflops, read_gbps,
        peak.read_gbps > 0 ? 100.0 * read_gbps / peak.read_gbps : 0.0, peak.read_gbps, density);
    if (pattern)
      std::printf(", tile density %.4f, plan %.4f s", stats.tile_density, median(plan_seconds));
    if (backward)
      std::printf("; backward %.4f s, %.1f GFLOP/s = %.1f%% of peak", backward_seconds,
                  backward_gflops, 100.0 * backward_fraction);
    std::printf("\n");
  }
  return 0;
}

const bool registered =
    register_command({"bench",
                      std::string(kUsage) + "\n" + kOperatorBenchUsage + "\n" + kContextBenchUsage,
                      bench_main});

}  // namespace
}  // namespace attnkit::cli
