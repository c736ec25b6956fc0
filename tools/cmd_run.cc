// `attnkit run`: attention on Q, K, V read from .npy files; O (and LSE) written as .npy.
#include <cstdio>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "args.h"
#include "attention_job.h"
#include "context_parallel_job.h"
#include "attnkit/error.h"
#include "command.h"

namespace attnkit::cli {
namespace {

constexpr char kUsage[] =
    "attnkit run --q Q.npy --k K.npy --v V.npy --out O.npy [--lse LSE.npy] [--causal] [--scale X]\n"
    "            [--dtype f32|f16|bf16] [--threads N] [--pattern SPEC]\n"
    "    Q [B,Hq,Nq,D], K [B,Hkv,Nk,D], V [B,Hkv,Nk,Dv]: .npy, float32 or float16, C order.\n"
    "    Writes O [B,Hq,Nq,Dv] float32 and LSE [B,Hq,Nq] float32 (natural log, -inf where a row\n"
    "    sees no key). --causal: bottom-right aligned (query i sees key j iff j <= i + Nk - Nq).\n"
    "    --dtype: the storage type the kernel reads (inputs converted first; default f32).\n"
    "    Default scale 1/sqrt(D). --pattern: a sparse pattern spec, e.g. name:key=value.\n"
    "    Inputs holding NaN or Inf (also after conversion to --dtype) are rejected (exit 2);\n"
    "    on any error no output file is written.\n"
    "    --context-parallel ring|zigzag|allgather: under `mpirun -np P`, self-attention over the\n"
    "    sequence split across P processes (include/attnkit/distributed.h): each rank reads its\n"
    "    shard of Q, K, V, rank 0 writes the whole O and LSE (equal to one process's).";

int run_main(const std::vector<std::string>& argv) {
  const Args args(
      argv,
      {"--q", "--k", "--v", "--out", "--lse", "--scale", "--dtype", "--threads", "--pattern",
       "--context-parallel"},
      {"--causal"});
  const std::string out_path = args.str("--out");
  const std::string lse_path = args.str("--lse", "");
  const JobOptions options = job_options(args);
  check_output_path(out_path, "--out");
  if (args.has("--lse")) {
    check_output_path(lse_path, "--lse");
    check(std::filesystem::absolute(lse_path) != std::filesystem::absolute(out_path), "--lse",
          "'" + lse_path + "' is also the --out path");
  }

  Tensor out, lse;
  if (args.has("--context-parallel")) {
    ContextJobResults r = run_context_parallel(
        args.str("--context-parallel"), options, {args.str("--q"), args.str("--k"), args.str("--v"), "", ""}, false);
    if (!r.writer) return 0;  // rank 0 writes
    out = std::move(r.out), lse = std::move(r.lse);
  } else {
    const Tensor q = load_input(args.str("--q"), "--q", options.dtype);
    const Tensor k = load_input(args.str("--k"), "--k", options.dtype);
    const Tensor v = load_input(args.str("--v"), "--v", options.dtype);
    check_attention_shapes(q, k, v);
    const auto& qs = q.shape();
    out = Tensor({qs[0], qs[1], qs[2], v.shape()[3]}, DType::kF32);
    lse = Tensor({qs[0], qs[1], qs[2]}, DType::kF32);
    AttentionArgs attention_args;
    attention_args.q = q.view();
    attention_args.k = k.view();
    attention_args.v = v.view();
    attention_args.out = out.view();
    attention_args.lse = lse.rows_view();
    attention_args.scale = options.scale;
    attention_args.causal = options.causal;
    attention_args.threads = options.threads;
    run_attention(attention_args, options.pattern.get());
  }

  if (args.has("--lse")) {
    write_outputs({{out_path, &out}, {lse_path, &lse}}, {"--out", "--lse"});
  } else {
    write_outputs({{out_path, &out}}, {"--out"});
  }
  std::printf("O %s -> %s%s\n", shape_string(out.shape()).c_str(), out_path.c_str(),
              args.has("--lse") ? (", LSE -> " + lse_path).c_str() : "");
  return 0;
}

const bool registered = register_command({"run", kUsage, run_main});

}  // namespace
}  // namespace attnkit::cli
