// `attnkit compare`: exact dense attention against a set of sparse patterns on one input, with
// speed (median seconds, mask planning included) and fidelity (relative L2 error of O, attention
// recall exp(LSE_sparse - LSE_dense) per row: mean and min). Each pattern runs in its paper's
// direction (direction.h) and is judged against dense attention of that direction.
#include <cmath>
#include <cstdio>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "args.h"
#include "attention_job.h"
#include "attnkit/error.h"
#include "attnkit/npy.h"
#include "attnkit/pattern.h"
#include "command.h"
#include "core/attention_args.h"
#include "core/timing.h"
#include "direction.h"
#include "eval/fidelity.h"
#include "eval/json.h"
#include "eval/synthetic.h"

namespace attnkit::cli {
namespace {

constexpr char kUsage[] =
    "attnkit compare [--q Q.npy --k K.npy --v V.npy] [--pattern SPEC]... [--paper-defaults]\n"
    "                [--causal | --non-causal] [--n N] [--heads H] [--kv-heads HKV] [--d D]\n"
    "                [--seed S] [--reps R] [--threads T] [--json]\n"
    "    Exact dense attention against each pattern on the same input: density, seconds (median\n"
    "    of R runs, default 3, planning included), plan_ms, speedup over dense of the same\n"
    "    direction, relative L2 error of O and attention recall exp(LSE_sparse - LSE_dense)\n"
    "    (mean, min over rows). Without --q/--k/--v the input is a structured synthetic set\n"
    "    (local structure, planted global keys, sinks; default B=1 H=8 HKV=8 N=4096 d=64).\n"
    "    Patterns: --pattern SPEC (repeatable); --paper-defaults: every registered pattern at its\n"
    "    paper's defaults; neither: a default set of static patterns and content planners near\n"
    "    11% density. The 'params' column says which: paper (the defaults), matched (changed to\n"
    "    match the others' density) or custom (given). A pattern of a set that cannot serve the\n"
    "    input (a grid that does not fit N) is listed as skipped. Direction: each pattern as its "
    "paper runs\n"
    "    it (a rule of its own as the rule says, content planners causal; the 'direction'\n"
    "    column); --causal ANDs causality into every run, --non-causal makes no run causal.\n"
    "    --json prints one object: {\"input\", \"results\": [{\"pattern\", \"params\", "
    "\"direction\",\n"
    "    \"causal\", \"density\", \"seconds\", \"plan_seconds\", \"dense_seconds\", \"speedup\",\n"
    "    \"rel_l2_error\", \"recall_mean\", \"recall_min\"}], \"skipped\": [{\"pattern\",\n"
    "    \"reason\"}]}.";

// Patterns worth comparing at the default size (N = 4096): the static ones, then the
// content-based planners at about the same density (~11% of all pairs; InfLLM-V2 and
// HyperAttention would be exact below 8192 / 4096 keys with their defaults).
const char* const kDefaultPatterns[] = {"causal",
                                        "window:size=512",
                                        "dilated:size=256,dilation=2",
                                        "streaming:sinks=4,window=512",
                                        "power:block=256,window=5",
                                        "power:block=64,window=4",
                                        "s2attn:groups=4",
                                        "sf_attn:groups=4,sinks=4",
                                        "ssa:ratio=4,seed=0",
                                        "ssa:ratio=8,seed=0",
                                        "topk_oracle:budget=8",
                                        "infllm_v2:dense_len=0,topk=8,local=4",
                                        "hip:k=256",
                                        "dhsa:budget=512",
                                        "hyper:min_seq=1024",
                                        "routing",
                                        "routing:logits=raw"};

struct Row {
  std::unique_ptr<Pattern> pattern;
  std::string params;  // paper | matched | custom
};

struct Skipped {
  std::string spec, reason;
};

struct Result {
  std::string spec, params, direction;
  bool causal;
  double density, seconds, plan_seconds, dense_seconds, speedup;
  Fidelity fidelity;
};

// Whether `pattern` runs at its paper's defaults.
bool at_defaults(const Pattern& pattern) {
  return pattern.spec() == make_pattern(pattern.name())->spec();
}

int compare_main(const std::vector<std::string>& argv) {
  const Args args(
      argv,
      {"--q", "--k", "--v", "--n", "--heads", "--kv-heads", "--d", "--seed", "--reps", "--threads"},
      {"--causal", "--non-causal", "--json", "--paper-defaults"}, {"--pattern"});
  const int reps = static_cast<int>(args.integer("--reps", 3, 1, 1000));
  const int threads = effective_threads(static_cast<int>(args.integer("--threads", 0, 0, 1024)));
  const bool from_files = args.has("--q") || args.has("--k") || args.has("--v");
  const DirectionChoice direction = direction_choice(args);

  // Patterns first, so a bad spec fails before any work.
  std::vector<Row> rows;
  check(!(args.has("--pattern") && args.flag("--paper-defaults")), "--paper-defaults",
        "contradicts --pattern (choose one set)");
  if (args.has("--pattern")) {
    for (const std::string& spec : args.all("--pattern")) {
      auto pattern = make_pattern(spec);
      const std::string params = at_defaults(*pattern) ? "paper" : "custom";
      rows.push_back({std::move(pattern), params});
    }
  } else if (args.flag("--paper-defaults")) {
    for (const PatternInfo& info : list_patterns())
      rows.push_back({make_pattern(info.name), "paper"});
  } else {
    for (const char* spec : kDefaultPatterns) {
      auto pattern = make_pattern(spec);
      const std::string params = at_defaults(*pattern) ? "paper" : "matched";
      rows.push_back({std::move(pattern), params});
    }
  }

  Tensor q, k, v;
  std::string input;
  if (from_files) {
    for (const char* flag : {"--n", "--heads", "--kv-heads", "--d", "--seed"})
      check(!args.has(flag), flag, "sizes come from the files when --q/--k/--v are given");
    q = read_npy(args.str("--q"), "--q");
    k = read_npy(args.str("--k"), "--k");
    v = read_npy(args.str("--v"), "--v");
    check_attention_shapes(q, k, v);
    check_finite(q, "--q");
    check_finite(k, "--k");
    check_finite(v, "--v");
    input = "files " + args.str("--q") + " " + shape_string(q.shape());
  } else {
    SyntheticOptions options;
    options.n = args.integer("--n", options.n, 1, int64_t{1} << 22);
    options.heads_q = args.integer("--heads", options.heads_q, 1, 1024);
    options.heads_kv = args.integer("--kv-heads", options.heads_q, 1, 1024);
    options.dim = args.integer("--d", options.dim, 1, 1024);
    options.seed = static_cast<uint64_t>(args.integer("--seed", 1, 0, INT64_MAX));
    SyntheticInputs synthetic = make_synthetic(options);
    q = std::move(synthetic.q);
    k = std::move(synthetic.k);
    v = std::move(synthetic.v);
    input = synthetic.description;
  }
  const int64_t batch = q.view().shape[0], heads = q.view().shape[1], nq = q.view().shape[2];
  const int64_t dim_v = v.view().shape[3];
  Tensor out({batch, heads, nq, dim_v}, DType::kF32);
  Tensor lse({batch, heads, nq}, DType::kF32);
  AttentionArgs base;
  base.q = q.view();
  base.k = k.view();
  base.v = v.view();
  base.threads = threads;

  // Exact dense attention in each direction a row is judged against, computed once.
  struct Dense {
    Tensor out, lse;
    double seconds = 0.0;
  };
  std::map<bool, Dense> dense;
  auto dense_of = [&](bool causal) -> const Dense& {
    auto it = dense.find(causal);
    if (it != dense.end()) return it->second;
    Dense d{Tensor({batch, heads, nq, dim_v}, DType::kF32),
            Tensor({batch, heads, nq}, DType::kF32)};
    AttentionArgs a = base;
    a.out = d.out.view();
    a.lse = d.lse.rows_view();
    a.causal = causal;
    validate(a);
    d.seconds = median_seconds(reps, [&] { attention(a); });
    return dense.emplace(causal, std::move(d)).first->second;
  };

  std::vector<Result> results;
  std::vector<Skipped> skipped;
  for (const Row& row : rows) {
    const Pattern& pattern = *row.pattern;
    AttentionArgs sparse_args = base;
    sparse_args.out = out.view();
    sparse_args.lse = lse.rows_view();
    sparse_args.causal = runs_causal(direction, &pattern);
    const Dense& reference = dense_of(judged_causal(direction, &pattern));
    // A pattern of a set that cannot serve this input is listed, not fatal; one given with
    // --pattern is an error.
    if (row.params != "custom") {
      try {
        pattern.plan(PlanInputs::of(sparse_args));
      } catch (const Error& e) {
        if (e.argument() != "pattern") throw;
        skipped.push_back({pattern.spec(), e.message()});
        continue;
      }
    }
    RunStats stats;
    std::vector<double> plan_seconds;
    const double seconds = median_seconds(reps, [&] {
      stats = pattern.run(sparse_args);
      plan_seconds.push_back(stats.plan_seconds);
    });
    if (plan_seconds.size() > 1) plan_seconds.erase(plan_seconds.begin());  // the warm-up
    Fidelity f = measure_fidelity(out.view(), lse.rows_view(), reference.out.view(),
                                  reference.lse.rows_view());
    // A subset of the keys carries at most all of the mass: a recall above 1 means the pattern
    // computes another function (routing's layer-normalised logits), with no recall to report.
    if (f.recall_mean > 1.0 + 1e-3) f.recall_mean = f.recall_min = std::nan("");
    results.push_back({pattern.spec(), row.params, direction_label(direction, &pattern),
                       sparse_args.causal, stats.density, seconds, median(plan_seconds),
                       reference.seconds, seconds > 0 ? reference.seconds / seconds : 0.0, f});
  }

  if (args.flag("--json")) {
    std::string list = "[";
    for (size_t r = 0; r < results.size(); ++r) {
      const Result& x = results[r];
      JsonObject item;
      item.add("pattern", x.spec)
          .add("params", x.params)
          .add("direction", x.direction)
          .add("causal", x.causal)
          .add("density", x.density)
          .add("seconds", x.seconds)
          .add("plan_seconds", x.plan_seconds)
          .add("dense_seconds", x.dense_seconds)
          .add("speedup", x.speedup)
          .add("rel_l2_error", x.fidelity.rel_l2_error)
          .add("recall_mean", x.fidelity.recall_mean)
          .add("recall_min", x.fidelity.recall_min);
      if (r) list += ",";
      list += item.str();
    }
    list += "]";
    std::string skips = "[";
    for (size_t r = 0; r < skipped.size(); ++r) {
      JsonObject item;
      item.add("pattern", skipped[r].spec).add("reason", skipped[r].reason);
      if (r) skips += ",";
      skips += item.str();
    }
    skips += "]";
    JsonObject json;
    json.add("input", input).add("threads", threads).add("reps", reps);
    json.raw("results", list).raw("skipped", skips);
    std::printf("%s\n", json.str().c_str());
    return 0;
  }
  std::printf("input: %s\n", input.c_str());
  for (const auto& [causal, d] : dense)
    std::printf("dense exact attention (%s): %.4f s (median of %d, %d threads)\n",
                causal ? "causal" : "bidirectional", d.seconds, reps, threads);
  // The full spec comes last: specs of the planners are long, the numbers stay aligned.
  std::printf("\n%8s %9s %9s %8s %11s %11s %10s  %-7s %-24s %s\n", "density", "seconds", "plan_ms",
              "speedup", "rel_l2_err", "recall_mean", "recall_min", "params", "direction",
              "pattern");
  for (const Result& x : results) {
    char recall[32] = "        n/a        n/a";
    if (!std::isnan(x.fidelity.recall_mean))
      std::snprintf(recall, sizeof(recall), "%11.4f %10.4f", x.fidelity.recall_mean,
                    x.fidelity.recall_min);
    std::printf("%8.4f %9.4f %9.3f %8.2f %11.3e %s  %-7s %-24s %s\n", x.density, x.seconds,
                x.plan_seconds * 1e3, x.speedup, x.fidelity.rel_l2_error, recall, x.params.c_str(),
                x.direction.c_str(), x.spec.c_str());
  }
  for (const Skipped& s : skipped)
    std::printf("skipped  %s: %s\n", s.spec.c_str(), s.reason.c_str());
  std::printf(
      "\ndensity: attended pairs / (Nq*Nk); speedup and recall against dense attention of the\n"
      "row's direction; recall: exp(LSE_sparse - LSE_dense) per row (1 = no softmax mass lost);\n"
      "(n/a: the pattern computes another function, e.g. routing's layer-normalised logits);\n"
      "params: paper = the paper's defaults, matched = changed to match the others' density or\n"
      "to approximate the given attention.\n");
  return 0;
}

[[maybe_unused]] const bool registered = register_command({"compare", kUsage, compare_main});

}  // namespace
}  // namespace attnkit::cli
