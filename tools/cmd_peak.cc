// `attnkit peak`: the machine's FMA throughput and read bandwidth (see src/eval/peak.h).
#include <cstdio>
#include <string>
#include <vector>

#include "args.h"
#include "command.h"
#include "eval/json.h"
#include "eval/peak.h"

namespace attnkit::cli {
namespace {

constexpr char kUsage[] =
    "attnkit peak [--threads N] [--json]\n"
    "    Measures (about 1 s) the FMA GFLOP/s on all SIMD lanes and the streaming read GB/s of\n"
    "    a 512 MiB buffer. --json prints {\"fma_gflops\",\"read_gbps\",\"threads\",\"target\"}.\n"
    "    --threads: default every core.";

int peak_main(const std::vector<std::string>& argv) {
  const Args args(argv, {"--threads"}, {"--json"});
  const int threads = static_cast<int>(args.integer("--threads", 0, 1, 4096));
  const Peak peak = measure_peak(threads);
  if (args.flag("--json")) {
    JsonObject json;
    json.add("fma_gflops", peak.fma_gflops)
        .add("read_gbps", peak.read_gbps)
        .add("threads", peak.threads)
        .add("target", peak.target);
    std::printf("%s\n", json.str().c_str());
  } else {
    std::printf("peak: %.1f FMA GFLOP/s, %.1f GB/s read, %d threads, SIMD target %s\n",
                peak.fma_gflops, peak.read_gbps, peak.threads, peak.target.c_str());
  }
  return 0;
}

const bool registered = register_command({"peak", kUsage, peak_main});

}  // namespace
}  // namespace attnkit::cli
