// `attnkit recall`: recall of content-based planners on planted-key inputs at a target density,
// with planning time next to attention time. See src/eval/planner_recall.h
// and src/eval/planted_keys.h.
#include <cstdio>
#include <string>
#include <vector>

#include "args.h"
#include "attnkit/attention.h"
#include "attnkit/error.h"
#include "command.h"
#include "core/timing.h"
#include "eval/json.h"
#include "eval/planner_recall.h"
#include "eval/planted_keys.h"

namespace attnkit::cli {
namespace {

constexpr char kUsage[] =
    "attnkit recall [--input planted|phrases] [--n N] [--d D] [--heads HQ] [--kv-heads HKV]\n"
    "               [--density F] [--threads T] [--pattern SPEC]... [--seed S] [--json]\n"
    "    Structured inputs (src/eval/planted_keys.h), causal: planted (default: single-direction\n"
    "    spans, smooth local walk; d 64, 4 query heads over 2) or phrases (phrase-like spans of\n"
    "    uneven weight, local chunks, a sink; d 64, 4 query heads over 1). Dense attention first,\n"
    "    then each pattern (default: topk_oracle, infllm_v2 and hip at the block budget giving\n"
    "    --density, default 0.1): recall = mean exp(LSE_sparse - LSE_dense), worst row, relative\n"
    "    L2 of O, density (attended pairs / N^2), plan and attention seconds (one run each).";

int recall_main(const std::vector<std::string>& argv) {
  const Args args(
      argv, {"--input", "--n", "--d", "--heads", "--kv-heads", "--density", "--threads", "--seed"},
      {"--json"}, {"--pattern"});
  const std::string input = args.str("--input", "planted");
  check(input == "planted" || input == "phrases", "--input",
        "must be planted or phrases, got '" + input + "'");
  PlantedKeysOptions o;
  o.n = args.integer("--n", 8192, 64, int64_t{1} << 22);
  if (input == "phrases") o = phrase_inputs(o.n);
  o.dim = args.integer("--d", o.dim, 18, 1024);
  o.heads_q = args.integer("--heads", o.heads_q, 1, 1024);
  o.heads_kv = args.integer("--kv-heads", input == "phrases" ? o.heads_kv : 2, 1, 1024);
  check(o.heads_q % o.heads_kv == 0, "--kv-heads", "must divide --heads");
  o.seed = static_cast<uint64_t>(args.integer("--seed", 1, 0, INT64_MAX));
  const double density = args.real("--density", 0.1, 1e-4, 1.0);
  const int threads = static_cast<int>(args.integer("--threads", 0, 0, 1024));
  std::vector<std::string> specs = args.all("--pattern");
  const int64_t blocks = blocks_for_density(o.n, 64, density);
  if (specs.empty()) specs = recall_specs(blocks);

  const PlantedKeys in = make_planted_keys(o);
  Tensor dense_out({1, o.heads_q, o.n, o.dim}, DType::kF32),
      dense_lse({1, o.heads_q, o.n}, DType::kF32);
  Tensor out({1, o.heads_q, o.n, o.dim}, DType::kF32), lse({1, o.heads_q, o.n}, DType::kF32);
  AttentionArgs a;
  a.q = in.q.view(), a.k = in.k.view(), a.v = in.v.view();
  a.out = dense_out.view(), a.lse = dense_lse.rows_view();
  a.causal = true;
  a.threads = threads;
  const double start = now_seconds();
  attention(a);
  const double dense_seconds = now_seconds() - start;
  a.out = out.view(), a.lse = lse.rows_view();
  if (!args.flag("--json"))
    std::printf(
        "n=%lld d=%lld heads=%lld/%lld density target %.3f (%lld blocks of 64)\n"
        "dense causal: %.3f s\n%-60s %8s %8s %8s %8s %9s %9s %7s\n",
        (long long)o.n, (long long)o.dim, (long long)o.heads_q, (long long)o.heads_kv, density,
        (long long)blocks, dense_seconds, "pattern", "recall", "worst", "relL2", "density",
        "plan_s", "attn_s", "plan%");
  for (const std::string& spec : specs) {
    const RecallRow row = measure_recall(spec, a, dense_out.view(), dense_lse.rows_view());
    const double attention_seconds = row.total_seconds - row.plan_seconds;
    if (args.flag("--json")) {
      JsonObject json;
      json.add("pattern", row.spec)
          .add("n", o.n)
          .add("d", o.dim)
          .add("recall", row.recall)
          .add("min_recall", row.min_recall)
          .add("rel_l2", row.rel_l2)
          .add("density", row.density)
          .add("plan_seconds", row.plan_seconds)
          .add("attention_seconds", attention_seconds)
          .add("dense_seconds", dense_seconds);
      std::puts(json.str().c_str());
    } else {
      std::printf("%-60s %8.4f %8.4f %8.4f %8.4f %9.4f %9.4f %6.1f%%\n", row.spec.c_str(),
                  row.recall, row.min_recall, row.rel_l2, row.density, row.plan_seconds,
                  attention_seconds, 100.0 * row.plan_seconds / attention_seconds);
    }
  }
  return 0;
}

const bool registered = register_command({"recall", kUsage, recall_main});

}  // namespace
}  // namespace attnkit::cli
