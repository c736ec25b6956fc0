// Machine peak probe (see peak.h).
//
// FMA: each thread runs kChains independent chains acc = acc * m + a on full vectors. To keep the
// FMA units busy the number of chains must be at least latency x throughput (4 cycles x 2 pipes on
// current x86 cores = 8); 16 leaves margin and still fits the 32 AVX-512 registers. One FMA
// counts 2 * lanes flops. The probe is calibrated to ~0.1 s per pass; we report the best of five
// passes (a peak is what the machine can do, and other load only lowers it).
// Read: each thread streams its share of a 512 MiB buffer (far beyond any L3) with vector loads
// into several independent sums; the buffer is allocated and written once, then read in 6
// passes, of which we report the median.
#include "eval/peak.h"

#include <omp.h>

#include <algorithm>
#include <cstdint>
#include <vector>

#include "core/attention_args.h"

#ifndef ATTNKIT_EVAL_PEAK_CHAINS_
#define ATTNKIT_EVAL_PEAK_CHAINS_  // this file is re-included once per SIMD target
namespace attnkit {
constexpr int kChains = 16;  // independent FMA chains per thread
}  // namespace attnkit
#endif

#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "eval/peak.cc"
#include "hwy/aligned_allocator.h"
#include "hwy/foreach_target.h"  // IWYU pragma: keep
#include "hwy/highway.h"

HWY_BEFORE_NAMESPACE();
namespace attnkit {
namespace HWY_NAMESPACE {
namespace hn = hwy::HWY_NAMESPACE;

const char* ProbeTargetName() { return hwy::TargetName(HWY_TARGET); }

size_t ProbeFloatLanes() { return hn::Lanes(hn::ScalableTag<float>()); }

// kChains * iterations FMAs on full vectors; returns a value that depends on all of them.
float ProbeFma(int64_t iterations, float multiplier, float addend) {
  const hn::ScalableTag<float> d;
  using V = hn::Vec<decltype(d)>;
  const V m = hn::Set(d, multiplier);
  const V a = hn::Set(d, addend);
  V acc[kChains];
  for (int c = 0; c < kChains; ++c) acc[c] = hn::Set(d, static_cast<float>(c));
  for (int64_t i = 0; i < iterations; ++i) {
#pragma GCC unroll 16
    for (int c = 0; c < kChains; ++c) acc[c] = hn::MulAdd(acc[c], m, a);
  }
  V sum = acc[0];
  for (int c = 1; c < kChains; ++c) sum = hn::Add(sum, acc[c]);
  return hn::GetLane(hn::SumOfLanes(d, sum));
}

// Sums `count` floats (a multiple of 4 vectors) with four independent accumulators.
float ProbeRead(const float* HWY_RESTRICT data, size_t count) {
  const hn::ScalableTag<float> d;
  const size_t lanes = hn::Lanes(d);
  auto s0 = hn::Zero(d), s1 = hn::Zero(d), s2 = hn::Zero(d), s3 = hn::Zero(d);
  for (size_t i = 0; i + 4 * lanes <= count; i += 4 * lanes) {
    s0 = hn::Add(s0, hn::Load(d, data + i));
    s1 = hn::Add(s1, hn::Load(d, data + i + lanes));
    s2 = hn::Add(s2, hn::Load(d, data + i + 2 * lanes));
    s3 = hn::Add(s3, hn::Load(d, data + i + 3 * lanes));
  }
  return hn::GetLane(hn::SumOfLanes(d, hn::Add(hn::Add(s0, s1), hn::Add(s2, s3))));
}

}  // namespace HWY_NAMESPACE
}  // namespace attnkit
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
#include "core/timing.h"

namespace attnkit {

HWY_EXPORT(ProbeTargetName);
HWY_EXPORT(ProbeFloatLanes);
HWY_EXPORT(ProbeFma);
HWY_EXPORT(ProbeRead);

namespace {

volatile float g_sink = 0.0f;  // keeps the probes' results alive

constexpr size_t kReadBytes = size_t{512} << 20;
constexpr int kFmaPasses = 5;
constexpr int kReadPasses = 6;

// Seconds for one FMA pass of `iterations` per thread on `threads` threads.
double fma_pass(int threads, int64_t iterations) {
  std::vector<float> results(threads);
  const double start = now_seconds();
#pragma omp parallel num_threads(threads)
  {
    const int t = omp_get_thread_num();
    results[t] = HWY_DYNAMIC_DISPATCH(ProbeFma)(iterations, 0.999999f, 1e-7f * (t + 1));
  }
  const double seconds = now_seconds() - start;
  for (float r : results) g_sink = g_sink + r;
  return seconds;
}

double measure_fma(int threads) {
  const double lanes = static_cast<double>(HWY_DYNAMIC_DISPATCH(ProbeFloatLanes)());
  const double flops_per_iteration = 2.0 * lanes * kChains * threads;
  // Calibrate: grow the pass until it takes >= 20 ms. Passes are then sized to ~0.1 s at the best
  // rate seen so far, re-sized after every pass: a calibration slowed by other load must not
  // leave passes so short that thread start-up and scheduling dominate them.
  int64_t iterations = 1 << 14;
  double seconds = fma_pass(threads, iterations);
  while (seconds < 0.02 && iterations < (int64_t{1} << 40)) {
    iterations *= 4;
    seconds = fma_pass(threads, iterations);
  }
  double best = flops_per_iteration * static_cast<double>(iterations) / seconds;  // flop/s
  for (int pass = 0; pass < kFmaPasses; ++pass) {
    iterations =
        std::max<int64_t>(iterations, static_cast<int64_t>(0.1 * best / flops_per_iteration));
    const double flops = flops_per_iteration * static_cast<double>(iterations);
    best = std::max(best, flops / fma_pass(threads, iterations));
  }
  return best / 1e9;
}

double measure_read(int threads) {
  const size_t count = kReadBytes / sizeof(float);
  hwy::AlignedFreeUniquePtr<float[]> buffer = hwy::AllocateAligned<float>(count);
  if (!buffer) return 0.0;
    // Touch every page from the thread that will read it (first-touch placement).
#pragma omp parallel for num_threads(threads) schedule(static)
  for (int64_t i = 0; i < static_cast<int64_t>(count); ++i) buffer[i] = 1.0f;
  // Per-thread chunks, multiples of 64 floats (a multiple of 4 vectors on every target).
  const size_t chunk = count / threads / 64 * 64;
  std::vector<double> passes;
  for (int pass = 0; pass < kReadPasses; ++pass) {
    std::vector<float> results(threads);
    const double start = now_seconds();
#pragma omp parallel num_threads(threads)
    {
      const int t = omp_get_thread_num();
      results[t] = HWY_DYNAMIC_DISPATCH(ProbeRead)(buffer.get() + t * chunk, chunk);
    }
    passes.push_back(now_seconds() - start);
    for (float r : results) g_sink = g_sink + r;
  }
  const double bytes = static_cast<double>(chunk) * threads * sizeof(float);
  return bytes / median(passes) / 1e9;
}

}  // namespace

Peak measure_peak(int threads) {
  Peak peak;
  peak.threads = effective_threads(threads);
  peak.target = HWY_DYNAMIC_DISPATCH(ProbeTargetName)();  // also initializes the dispatch table
  peak.fma_gflops = measure_fma(peak.threads);
  peak.read_gbps = measure_read(peak.threads);
  return peak;
}

}  // namespace attnkit
#endif  // HWY_ONCE
