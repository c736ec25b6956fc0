// Kernel efficiency measured in CPU time of one thread, so that it stays meaningful while other
// processes share the machine: GFLOP per CPU-second against the single-thread FMA peak.
//   kernel_cpu_time NK D HEADS [causal|dense] [f32|f16|bf16] [NQ] [KV_HEADS]
#include <time.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

#include "attnkit/attention.h"
#include "eval/inputs.h"
#include "eval/peak.h"

namespace {
double cpu_seconds() {
  timespec ts;
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return ts.tv_sec + 1e-9 * ts.tv_nsec;
}
}  // namespace

int main(int argc, char** argv) {
  using namespace attnkit;
  if (argc < 4) {
    std::fprintf(stderr, "usage: kernel_cpu_time NK D HEADS [causal|dense] [f32|f16|bf16] [NQ] [KV_HEADS]\n");
    return 2;
  }
  const int64_t n = std::atoll(argv[1]), dim = std::atoll(argv[2]), heads = std::atoll(argv[3]);
  const bool causal = argc > 4 && std::strcmp(argv[4], "causal") == 0;
  const DType dtype = argc > 5 ? parse_dtype(argv[5], "dtype") : DType::kF32;
  const int64_t nq = argc > 6 ? std::atoll(argv[6]) : n;
  const int64_t heads_kv = argc > 7 ? std::atoll(argv[7]) : heads;
  Tensor q = random_normal({1, heads, nq, dim}, dtype, 1),
         k = random_normal({1, heads_kv, n, dim}, dtype, 2),
         v = random_normal({1, heads_kv, n, dim}, dtype, 3), out({1, heads, nq, dim}, DType::kF32);
  AttentionArgs a;
  a.q = q.view(), a.k = k.view(), a.v = v.view(), a.out = out.view(), a.threads = 1, a.causal = causal;
  attention(a);
  double best = 1e30;
  // At least 3 runs and about half a CPU-second, so short kernels are timed often enough.
  for (int rep = 0, total = 0; rep < 3 || (total < 500 && rep < 1000); ++rep) {
    const double start = cpu_seconds();
    attention(a);
    const double took = cpu_seconds() - start;
    best = std::min(best, took);
    total += static_cast<int>(took * 1000);
  }
  const double pairs = causal && nq == n ? 0.5 * n * (n + 1.0) : double(nq) * n;
  const double gflops = 4.0 * pairs * dim * heads / best / 1e9;
  const Peak peak = measure_peak(1);
  const double bytes = double(q.bytes() + k.bytes() + v.bytes());
  std::printf("K,V,Q read at %.1f GB/s per CPU-second\n", bytes / best / 1e9);
  std::printf("N=%lld D=%lld heads=%lld %s %s: %.4f cpu-s, %.1f GFLOP/s, peak %.1f (%s), %.1f%%\n",
              (long long)n, (long long)dim, (long long)heads, causal ? "causal" : "dense",
              dtype_name(dtype), best, gflops, peak.fma_gflops, peak.target.c_str(),
              100.0 * gflops / peak.fma_gflops);
}
