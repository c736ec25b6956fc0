// `attnkit bench --op lightning|soft|index`: times the operators of other shapes on random normal
// inputs, with the work they do counted exactly (two flops per multiply-add), the machine's peak
// measured in the same run, and, with --vs-dense, attnkit's fused softmax kernel on the same
// shapes (causal for Lightning, whose rule is causal; non-causal for SOFT and index lists).
#include "bench_operators.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <numeric>
#include <string>
#include <vector>

#include "args.h"
#include "attnkit/attention.h"
#include "attnkit/error.h"
#include "attnkit/index_attention.h"
#include "attnkit/lightning.h"
#include "attnkit/soft.h"
#include "core/attention_args.h"
#include "core/timing.h"
#include "eval/inputs.h"
#include "eval/json.h"
#include "eval/peak.h"

namespace attnkit::cli {
namespace {

struct Shape {
  int64_t batch, heads, n, d, dv;
};

struct Timing {
  double seconds = 0.0, flops = 0.0, backward_seconds = 0.0, backward_flops = 0.0;
  JsonObject params;  // the operator's own settings, echoed in the output
};

// --- Lightning ---

// Token t of x [B, H, N, D] as a [B, H, 1, D] view.
TensorView slice_token(const Tensor& x, int64_t t) {
  TensorView view = x.view();
  view.data = static_cast<const std::byte*>(view.data) + dtype_size(view.dtype) * t * view.stride[2];
  view.shape[2] = 1;
  return view;
}

Timing time_lightning(const Args& args, const Shape& s, DType dtype, int threads, int reps,
                      uint64_t seed, bool backward) {
  const int64_t block = args.integer("--block", 64, 1, 1024);
  const Tensor q = random_normal({s.batch, s.heads, s.n, s.d}, dtype, seed, 0.1f);
  const Tensor k = random_normal({s.batch, s.heads, s.n, s.d}, dtype, seed + 1, 0.1f);
  const Tensor v = random_normal({s.batch, s.heads, s.n, s.dv}, dtype, seed + 2, 0.1f);
  Tensor out({s.batch, s.heads, s.n, s.dv}, DType::kF32);
  LightningArgs a;
  a.q = q.view(), a.k = k.view(), a.v = v.view(), a.out = out.view();
  a.block = block, a.threads = threads;
  Timing t;
  t.seconds = median_seconds(reps, [&] { lightning_attention(a); });
  // Per (batch, head) and block of L tokens: Q K^T and the masked P V over the whole L x L tile,
  // Q S and the state update: 2 L^2 (D + E) + 4 L D E; the backward's sweeps 6 L^2 (D + E) +
  // 10 L D E.
  double forward = 0.0, back = 0.0;
  for (int64_t t0 = 0; t0 < s.n; t0 += block) {
    const double len = static_cast<double>(std::min(block, s.n - t0));
    forward += 2 * len * len * (s.d + s.dv) + 4 * len * s.d * s.dv;
    back += 6 * len * len * (s.d + s.dv) + 10 * len * s.d * s.dv;
  }
  t.flops = forward * s.batch * s.heads;
  if (backward) {
    const Tensor dout = random_normal({s.batch, s.heads, s.n, s.dv}, dtype, seed + 3);
    Tensor dq({s.batch, s.heads, s.n, s.d}, DType::kF32), dk = dq;
    Tensor dv({s.batch, s.heads, s.n, s.dv}, DType::kF32);
    LightningBackwardArgs g;
    g.forward = a, g.dout = dout.view(), g.dq = dq.view(), g.dk = dk.view(), g.dv = dv.view();
    t.backward_seconds = median_seconds(reps, [&] { lightning_attention_backward(g); });
    t.backward_flops = back * s.batch * s.heads;
  }
  t.params.add("block", block);
  if (args.has("--decode")) {  // one call per token, the state carried: the recurrent form
    const int64_t steps = args.integer("--decode", 1, 1 << 20);
    Tensor state({s.batch, s.heads, s.d, s.dv}, DType::kF32), next = state;
    Tensor token_out({s.batch, s.heads, 1, s.dv}, DType::kF32);
    LightningArgs step = a;
    step.out = token_out.view();
    const double seconds = median_seconds(1, [&] {
      for (int64_t i = 0; i < steps; ++i) {
        step.q = slice_token(q, i % s.n), step.k = slice_token(k, i % s.n);
        step.v = slice_token(v, i % s.n);
        step.state_in = state.view(), step.state_out = next.view();
        lightning_attention(step);
        std::swap(state, next);
      }
    });
    t.params.add("decode_steps", steps).add("decode_seconds_per_token", seconds / steps);
  }
  return t;
}

// --- SOFT ---

Timing time_soft(const Args& args, const Shape& s, DType dtype, int threads, int reps,
                 uint64_t seed, bool backward) {
  SoftArgs a;
  const Tensor q = random_normal({s.batch, s.heads, s.n, s.d}, dtype, seed);
  const Tensor v = random_normal({s.batch, s.heads, s.n, s.dv}, dtype, seed + 1);
  Tensor landmarks;
  if (args.has("--landmarks")) {
    const int64_t m = args.integer("--landmarks", 1, 4096);
    landmarks = random_normal({s.batch, s.heads, m, s.d}, DType::kF32, seed + 2, 0.5f);
    a.landmarks = landmarks.view();
  } else {
    a.stride = args.integer("--stride", 1, int64_t{1} << 24);
    if (args.has("--grid")) {
      const std::string grid = args.str("--grid");
      char* end = nullptr;
      a.grid_height = std::strtoll(grid.c_str(), &end, 10);
      const bool x = end && *end == 'x';
      if (x) a.grid_width = std::strtoll(end + 1, &end, 10);
      check(x && end && *end == '\0' && a.grid_height > 0 && a.grid_width > 0, "--grid",
            "must be HxW with positive H and W, got '" + grid + "'");
    }
  }
  const std::string inverse = args.str("--inverse", "newton");
  check(inverse == "newton" || inverse == "exact", "--inverse",
        "must be newton or exact, got '" + inverse + "'");
  a.inverse = inverse == "exact" ? SoftInverse::kExact : SoftInverse::kNewton;
  a.newton_iterations = static_cast<int>(args.integer("--newton-iterations", 20, 0, 100));
  Tensor out({s.batch, s.heads, s.n, s.dv}, DType::kF32);
  a.q = q.view(), a.v = v.view(), a.out = out.view(), a.threads = threads;
  const double m = static_cast<double>(soft_landmark_count(a));
  Timing t;
  t.seconds = median_seconds(reps, [&] { soft_attention(a); });
  // K1 made twice (2 N m D each: for W, then for O), K2 (2 m^2 D), Newton (iterations x 4 m^3),
  // K1^T V and K1 Z (2 N m E each), X W (2 m^2 E).
  const double n = static_cast<double>(s.n), d = static_cast<double>(s.d);
  const double dv = static_cast<double>(s.dv);
  const double newton = a.inverse == SoftInverse::kNewton ? 4.0 * a.newton_iterations * m * m * m : 0;
  const double forward = 4 * n * m * d + 2 * m * m * d + newton + 4 * n * m * dv + 2 * m * m * dv;
  t.flops = forward * s.batch * s.heads;
  if (backward) {
    const Tensor dout = random_normal({s.batch, s.heads, s.n, s.dv}, dtype, seed + 3);
    Tensor dq({s.batch, s.heads, s.n, s.d}, DType::kF32), dvg({s.batch, s.heads, s.n, s.dv}, DType::kF32);
    Tensor dl = landmarks.numel() ? Tensor(landmarks.shape(), DType::kF32) : Tensor();
    SoftBackwardArgs g;
    g.forward = a, g.dout = dout.view(), g.dq = dq.view(), g.dv = dvg.view();
    if (dl.numel()) g.dlandmarks = dl.view();
    t.backward_seconds = median_seconds(reps, [&] { soft_attention_backward(g); });
    // K1 three times, dQ' and dL (2 N m D each); W, dZ, dK1 (two products), dV (2 N m E each);
    // K2 and dL through it (2 m^2 D each); Z, dW, dX (2 m^2 E each); Newton and dK2 (4 m^3).
    const double back = 10 * n * m * d + 10 * n * m * dv + 4 * m * m * d + 6 * m * m * dv +
                        newton + 4 * m * m * m;
    t.backward_flops = back * s.batch * s.heads;
  }
  t.params.add("landmarks", static_cast<int64_t>(m)).add("inverse", inverse);
  return t;
}

// --- Index lists ---

// 3-D points uniform in the unit cube, in Morton (Z-curve) order, as a point-cloud pipeline keeps
// them after voxel sorting, so that neighbours are near in memory.
std::vector<float> morton_sorted_points(int64_t n, uint64_t seed) {
  const Tensor raw = random_normal({n, 3}, DType::kF32, seed);
  std::vector<std::pair<uint64_t, int64_t>> code(n);
  auto spread = [](uint64_t x) {  // 10 bits to every third bit
    x &= 0x3ff;
    x = (x | x << 16) & 0x30000ff;
    x = (x | x << 8) & 0x300f00f;
    x = (x | x << 4) & 0x30c30c3;
    return (x | x << 2) & 0x9249249;
  };
  std::vector<float> unit(3 * n);
  for (int64_t i = 0; i < 3 * n; ++i)  // normal -> uniform through its CDF
    unit[i] = 0.5f * (1.0f + std::erf(raw.f32()[i] / std::sqrt(2.0f)));
  for (int64_t i = 0; i < n; ++i) {
    uint64_t c = 0;
    for (int a = 0; a < 3; ++a) c |= spread(static_cast<uint64_t>(unit[3 * i + a] * 1023.0f)) << a;
    code[i] = {c, i};
  }
  std::sort(code.begin(), code.end());
  std::vector<float> points(3 * n);
  for (int64_t i = 0; i < n; ++i)
    for (int a = 0; a < 3; ++a) points[3 * i + a] = unit[3 * code[i].second + a];
  return points;
}

Timing time_index(const Args& args, const Shape& s, DType dtype, int threads, int reps,
                  uint64_t seed, bool backward) {
  const int64_t k = args.integer("--k", 32, 1, 4096);
  check(k <= s.n, "--k", "must be at most --n (" + std::to_string(s.n) + "), got " + std::to_string(k));
  const std::string lists = args.str("--lists", "knn");
  check(lists == "knn" || lists == "random", "--lists",
        "must be knn or random, got '" + lists + "'");
  std::vector<int32_t> indices(s.n * k);
  double list_seconds = 0.0;
  if (lists == "knn") {
    const std::vector<float> points = morton_sorted_points(s.n, seed + 7);
    list_seconds = median_seconds(1, [&] { knn(points.data(), s.n, k, indices.data(), threads); }, 0);
  } else {  // k distinct keys per row, uniform
    std::vector<int32_t> keys(s.n);
    std::iota(keys.begin(), keys.end(), 0);
    uint64_t state = seed;
    for (int64_t i = 0; i < s.n; ++i)
      for (int64_t e = 0; e < k; ++e) {  // a partial Fisher-Yates shuffle per row
        state = state * 6364136223846793005ull + 1442695040888963407ull;
        const int64_t pick = e + static_cast<int64_t>((state >> 33) % uint64_t(s.n - e));
        std::swap(keys[e], keys[pick]);
        indices[i * k + e] = keys[e];
      }
  }
  const int64_t shape[4] = {1, 1, s.n, k};
  const IndexLists view = IndexLists::padded_lists(indices.data(), shape);
  const Tensor q = random_normal({s.batch, s.heads, s.n, s.d}, dtype, seed);
  const Tensor kt = random_normal({s.batch, s.heads, s.n, s.d}, dtype, seed + 1);
  const Tensor v = random_normal({s.batch, s.heads, s.n, s.dv}, dtype, seed + 2);
  Tensor out({s.batch, s.heads, s.n, s.dv}, DType::kF32), lse({s.batch, s.heads, s.n}, DType::kF32);
  AttentionArgs a;
  a.q = q.view(), a.k = kt.view(), a.v = v.view(), a.out = out.view(), a.lse = lse.rows_view();
  a.threads = threads;
  Timing t;
  t.seconds = median_seconds(reps, [&] { index_attention(a, view); });
  const double pairs = static_cast<double>(s.n) * k * s.batch * s.heads;
  t.flops = 2 * pairs * (s.d + s.dv);
  if (backward) {
    const Tensor dout = random_normal({s.batch, s.heads, s.n, s.dv}, dtype, seed + 3);
    Tensor dq({s.batch, s.heads, s.n, s.d}, DType::kF32), dk = dq;
    Tensor dvg({s.batch, s.heads, s.n, s.dv}, DType::kF32);
    BackwardArgs g;
    g.forward = a, g.dout = dout.view(), g.dq = dq.view(), g.dk = dk.view(), g.dv = dvg.view();
    t.backward_seconds = median_seconds(reps, [&] { index_attention_backward(g, view); });
    t.backward_flops = 2 * pairs * (3 * s.d + 2 * s.dv);  // scores, dP, dQ, dV, dK
  }
  t.params.add("k", k).add("lists", lists).add("list_seconds", list_seconds);
  return t;
}

// attnkit's fused softmax attention on the same shapes (Hq = Hkv).
double time_dense(const Shape& s, DType dtype, bool causal, int threads, int reps, uint64_t seed) {
  const Tensor q = random_normal({s.batch, s.heads, s.n, s.d}, dtype, seed);
  const Tensor k = random_normal({s.batch, s.heads, s.n, s.d}, dtype, seed + 1);
  const Tensor v = random_normal({s.batch, s.heads, s.n, s.dv}, dtype, seed + 2);
  Tensor out({s.batch, s.heads, s.n, s.dv}, DType::kF32), lse({s.batch, s.heads, s.n}, DType::kF32);
  AttentionArgs a;
  a.q = q.view(), a.k = k.view(), a.v = v.view(), a.out = out.view(), a.lse = lse.rows_view();
  a.causal = causal, a.threads = threads;
  return median_seconds(reps, [&] { attention(a); });
}

}  // namespace

const char kOperatorBenchUsage[] =
    "attnkit bench --op lightning|soft|index --n N --d D [--dv DV] --heads H [--batch B]\n"
    "              [--dtype f32|f16|bf16] [--threads T] [--reps R] [--seed S] [--backward]\n"
    "              [--vs-dense] [--json]\n"
    "              lightning: [--block 64] [--decode STEPS (one call per token, state carried)]\n"
    "              soft: --landmarks M | --stride S [--grid HxW]; [--inverse newton|exact]\n"
    "                    [--newton-iterations 20]\n"
    "              index: [--k 32] [--lists knn|random] (kNN of Morton-sorted random 3-D points)\n"
    "    The operators of other shapes on random normal inputs: median seconds, gflops of the\n"
    "    work done, fraction_of_peak; --backward adds backward_seconds and backward_gflops;\n"
    "    --vs-dense times attnkit's softmax attention on the same shapes (causal for lightning)\n"
    "    and adds dense_seconds and speedup.";

int bench_operator_main(const std::vector<std::string>& argv) {
  const Args args(argv,
                  {"--op", "--n", "--d", "--dv", "--heads", "--batch", "--dtype", "--threads",
                   "--reps", "--seed", "--block", "--landmarks", "--stride", "--grid",
                   "--inverse", "--newton-iterations", "--k", "--lists", "--decode"},
                  {"--json", "--backward", "--vs-dense"});
  const std::string op = args.str("--op");
  check(op == "lightning" || op == "soft" || op == "index", "--op",
        "must be lightning, soft or index, got '" + op + "'");
  Shape s;
  s.n = args.integer("--n", 1, int64_t{1} << 24);
  s.d = args.integer("--d", 1, 1024);
  s.dv = args.integer("--dv", s.d, 1, 1024);
  s.heads = args.integer("--heads", 1, 4096);
  s.batch = args.integer("--batch", 1, 1, 4096);
  const DType dtype = parse_dtype(args.str("--dtype", "f32"), "--dtype");
  const int threads = effective_threads(static_cast<int>(args.integer("--threads", 0, 1, 1024)));
  const int reps = static_cast<int>(args.integer("--reps", 5, 1, 100000));
  const uint64_t seed = static_cast<uint64_t>(args.integer("--seed", 1, 0, INT64_MAX));
  const bool backward = args.flag("--backward");

  Timing t = op == "lightning" ? time_lightning(args, s, dtype, threads, reps, seed, backward)
             : op == "soft"    ? time_soft(args, s, dtype, threads, reps, seed, backward)
                               : time_index(args, s, dtype, threads, reps, seed, backward);
  const double dense = args.flag("--vs-dense")
                           ? time_dense(s, dtype, op == "lightning", threads, reps, seed)
                           : 0.0;
  // The probe after the timings: bad flags fail at once, before its second of work.
  const Peak peak = measure_peak(threads);
  const double gflops = t.flops / t.seconds / 1e9;
  const double fraction = peak.fma_gflops > 0 ? gflops / peak.fma_gflops : 0.0;
  const double backward_gflops = backward ? t.backward_flops / t.backward_seconds / 1e9 : 0.0;
  if (args.flag("--json")) {
    JsonObject json;
    json.add("op", op).add("seconds", t.seconds).add("gflops", gflops);
    json.add("peak_gflops", peak.fma_gflops).add("fraction_of_peak", fraction);
    json.add("tokens_per_second", double(s.n) * s.batch / t.seconds);
    if (backward)
      json.add("backward_seconds", t.backward_seconds)
          .add("backward_gflops", backward_gflops)
          .add("backward_fraction_of_peak", backward_gflops / peak.fma_gflops);
    if (dense > 0) json.add("dense_seconds", dense).add("speedup", dense / t.seconds);
    json.add("batch", s.batch).add("heads", s.heads).add("n", s.n).add("d", s.d).add("dv", s.dv);
    json.add("dtype", dtype_name(dtype)).add("threads", threads).add("reps", reps);
    json.add("target", peak.target);
    json.raw("params", t.params.str());
    std::printf("%s\n", json.str().c_str());
  } else {
    std::printf("%s %s B=%lld H=%lld N=%lld D=%lld E=%lld, %d threads: %.4f s (median of %d), "
                "%.1f GFLOP/s = %.1f%% of %.1f peak, %s",
                op.c_str(), dtype_name(dtype), static_cast<long long>(s.batch),
                static_cast<long long>(s.heads), static_cast<long long>(s.n),
                static_cast<long long>(s.d), static_cast<long long>(s.dv), threads, t.seconds,
                reps, gflops, 100.0 * fraction, peak.fma_gflops, t.params.str().c_str());
    if (backward)
      std::printf("; backward %.4f s, %.1f GFLOP/s", t.backward_seconds, backward_gflops);
    if (dense > 0) std::printf("; dense %.4f s, speedup %.2fx", dense, dense / t.seconds);
    std::printf("\n");
  }
  return 0;
}

}  // namespace attnkit::cli
