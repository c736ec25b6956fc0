// `mpirun -np P attnkit bench --context-parallel SCHEME ...`: times context-parallel attention
// on random shards, every rank reporting what its calls spent (ContextParallelStats): the whole
// call, the local kernels, the waits for transfers. Rank 0 prints per-rank medians and the two
// figures the schemes are judged by: overlap (a rank's time over its kernels' time: 1.0 when
// communication hides behind compute) and imbalance (the busiest rank's kernel time over the
// mean, minus 1).
#include "bench_context_parallel.h"

#include <algorithm>
#include <cstdio>
#include <memory>
#include <numeric>
#include <string>
#include <vector>

#include "args.h"
#include "attnkit/distributed.h"
#include "attnkit/error.h"
#include "attnkit/pattern.h"
#include "command.h"
#include "core/attention_args.h"
#include "core/timing.h"
#include "eval/inputs.h"
#include "eval/json.h"

namespace attnkit::cli {

const char kContextBenchUsage[] =
    "mpirun -np P attnkit bench --context-parallel ring|zigzag|allgather --n N --d D --heads H\n"
    "              [--kv-heads HKV] [--batch B] [--causal] [--pattern SPEC] [--dtype T]\n"
    "              [--threads T] [--reps R] [--backward] [--json]\n"
    "    Each rank times its part on random shards: median seconds, kernel seconds and wait\n"
    "    seconds per rank (forward; with --backward the backward too); overlap = seconds /\n"
    "    kernel seconds per rank, imbalance = max kernel seconds / mean - 1.";

namespace {

struct Medians {
  double seconds, compute, wait;
};

template <typename Call>
Medians timed_stats(int reps, ContextParallelStats& stats, Call&& call) {
  std::vector<double> seconds, compute, wait;
  call();  // warm-up
  for (int r = 0; r < reps; ++r) {
    call();
    seconds.push_back(stats.seconds), compute.push_back(stats.compute_seconds);
    wait.push_back(stats.wait_seconds);
  }
  return {median(seconds), median(compute), median(wait)};
}

// A JSON array of numbers. (append(), not operator+ chains: GCC 12 warns falsely on those.)
std::string json_array(const std::vector<double>& values) {
  std::string text = "[";
  for (size_t i = 0; i < values.size(); ++i) text.append(i ? "," : "").append(std::to_string(values[i]));
  return text.append("]");
}

std::string key(const char* prefix, const char* name) { return std::string(prefix).append(name); }

// Every rank's medians, on every rank, as JSON arrays and the judged figures.
void report(Communicator& comm, const char* prefix, const Medians& mine, JsonObject& json) {
  std::vector<Medians> all(comm.size());
  comm.all_gather(&mine, all.data(), sizeof(Medians));
  std::vector<double> seconds, compute, wait, overlap;
  for (const Medians& m : all) {
    seconds.push_back(m.seconds), compute.push_back(m.compute), wait.push_back(m.wait);
    overlap.push_back(m.seconds / m.compute);
  }
  const double mean = std::accumulate(compute.begin(), compute.end(), 0.0) / compute.size();
  json.raw(key(prefix, "seconds_per_rank"), json_array(seconds))
      .raw(key(prefix, "compute_seconds_per_rank"), json_array(compute))
      .raw(key(prefix, "wait_seconds_per_rank"), json_array(wait))
      .raw(key(prefix, "overlap_per_rank"), json_array(overlap))
      .add(key(prefix, "seconds"), *std::max_element(seconds.begin(), seconds.end()))
      .add(key(prefix, "overlap"), *std::max_element(overlap.begin(), overlap.end()))
      .add(key(prefix, "imbalance"), *std::max_element(compute.begin(), compute.end()) / mean - 1.0);
}

}  // namespace

int bench_context_parallel_main(const std::vector<std::string>& argv) {
  const Args args(argv,
                  {"--context-parallel", "--n", "--d", "--dv", "--heads", "--kv-heads", "--batch",
                   "--dtype", "--threads", "--reps", "--pattern", "--seed"},
                  {"--causal", "--json", "--backward"});
  const MpiSession session(nullptr, nullptr);
  const std::unique_ptr<Communicator> comm = mpi_world();
  const ContextScheme scheme = parse_context_scheme(args.str("--context-parallel"),
                                                    "--context-parallel");
  const int64_t n = args.integer("--n", 1, int64_t{1} << 26);
  const int64_t d = args.integer("--d", 1, 1024), dv = args.integer("--dv", d, 1, 1024);
  const int64_t heads = args.integer("--heads", 1, 4096);
  const int64_t kv_heads = args.integer("--kv-heads", heads, 1, 4096);
  const int64_t batch = args.integer("--batch", 1, 1, 4096);
  check(heads % kv_heads == 0, "--kv-heads", "must divide --heads");
  const DType dtype = parse_dtype(args.str("--dtype", "f32"), "--dtype");
  const int threads = effective_threads(static_cast<int>(args.integer("--threads", 0, 1, 1024)));
  const int reps = static_cast<int>(args.integer("--reps", 3, 1, 10000));
  const uint64_t seed = static_cast<uint64_t>(args.integer("--seed", 1, 0, INT64_MAX));
  std::unique_ptr<Pattern> pattern;
  if (args.has("--pattern")) pattern = make_pattern(args.str("--pattern"));

  const std::vector<TokenRange> mine =
      context_shard(scheme, n, comm->rank(), comm->size(), context_alignment(pattern.get(), n));
  int64_t local = 0;
  for (const TokenRange& r : mine) local += r.size();
  const uint64_t s = seed + 10 * static_cast<uint64_t>(comm->rank());
  const Tensor q = random_normal({batch, heads, local, d}, dtype, s);
  const Tensor k = random_normal({batch, kv_heads, local, d}, dtype, s + 1);
  const Tensor v = random_normal({batch, kv_heads, local, dv}, dtype, s + 2);
  Tensor out({batch, heads, local, dv}, DType::kF32), lse({batch, heads, local}, DType::kF32);
  ContextParallelStats stats;
  ContextParallelArgs a;
  a.local.q = q.view(), a.local.k = k.view(), a.local.v = v.view();
  a.local.out = out.view(), a.local.lse = lse.rows_view();
  a.local.causal = args.flag("--causal"), a.local.threads = threads;
  a.global_n = n, a.scheme = scheme, a.pattern = pattern.get(), a.comm = comm.get();
  a.stats = &stats;
  JsonObject json;
  json.add("scheme", context_scheme_name(scheme)).add("ranks", comm->size()).add("n", n);
  json.add("batch", batch).add("heads", heads).add("kv_heads", kv_heads).add("d", d).add("dv", dv);
  json.add("causal", a.local.causal).add("threads_per_rank", threads).add("reps", reps);
  if (pattern) json.add("pattern", pattern->spec());
  report(*comm, "", timed_stats(reps, stats, [&] { context_parallel_attention(a); }), json);
  if (args.flag("--backward")) {
    const Tensor dout = random_normal({batch, heads, local, dv}, dtype, s + 3);
    Tensor dq({batch, heads, local, d}, DType::kF32), dk({batch, kv_heads, local, d}, DType::kF32);
    Tensor dvg({batch, kv_heads, local, dv}, DType::kF32);
    ContextParallelBackwardArgs g;
    g.forward = a, g.dout = dout.view(), g.dq = dq.view(), g.dk = dk.view(), g.dv = dvg.view();
    context_parallel_attention(a);
    report(*comm, "backward_",
           timed_stats(reps, stats, [&] { context_parallel_attention_backward(g); }), json);
  }
  if (comm->rank() == 0) std::printf("%s\n", json.str().c_str());
  return 0;
}

}  // namespace attnkit::cli
