// `attnkit grad`: gradients of attention on Q, K, V read from .npy files, for incoming gradients
// dO (and dLSE); runs the forward itself and writes dQ, dK, dV as float32 .npy.
#include <cstdio>
#include <filesystem>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "args.h"
#include "attention_job.h"
#include "context_parallel_job.h"
#include "attnkit/error.h"
#include "attnkit/npy.h"
#include "command.h"

namespace attnkit::cli {
namespace {

constexpr char kUsage[] =
    "attnkit grad --q Q.npy --k K.npy --v V.npy --do DO.npy [--dlse DLSE.npy]\n"
    "             --dq DQ.npy --dk DK.npy --dv DV.npy [--causal] [--scale X]\n"
    "             [--dtype f32|f16|bf16] [--pattern SPEC] [--threads N]\n"
    "    Q [B,Hq,Nq,D], K [B,Hkv,Nk,D], V [B,Hkv,Nk,Dv] as for `run`; DO [B,Hq,Nq,Dv] is the\n"
    "    gradient of the loss with respect to O, DLSE [B,Hq,Nq] with respect to the LSE.\n"
    "    Runs the forward (as `run` does, --pattern's selection held constant), then the\n"
    "    backward; writes float32 dQ, dK, dV with the shapes of Q, K, V (dK, dV summed over each\n"
    "    GQA group). --dtype: the storage type Q, K, V and dO are read in (default f32); the\n"
    "    arithmetic and the gradients are f32. Bad input: exit 2, no output file.\n"
    "    --context-parallel ring|zigzag|allgather: as for `run`, under mpirun; rank 0 writes.";

void check_shape(const Tensor& t, const std::vector<int64_t>& want, const std::string& argument,
                 const char* layout) {
  check(t.shape() == want, argument,
        "shape " + shape_string(t.shape()) + " must be " + layout + " = " + shape_string(want));
}

int grad_main(const std::vector<std::string>& argv) {
  const Args args(argv,
                  {"--q", "--k", "--v", "--do", "--dlse", "--dq", "--dk", "--dv", "--scale",
                   "--dtype", "--threads", "--pattern", "--context-parallel"},
                  {"--causal"});
  const std::vector<std::string> outputs = {args.str("--dq"), args.str("--dk"), args.str("--dv")};
  const std::vector<std::string> names = {"--dq", "--dk", "--dv"};
  std::set<std::filesystem::path> distinct;
  for (size_t x = 0; x < outputs.size(); ++x) {
    check_output_path(outputs[x], names[x]);
    check(distinct.insert(std::filesystem::absolute(outputs[x])).second, names[x],
          "'" + outputs[x] + "' is also another gradient's path");
  }
  const JobOptions options = job_options(args);
  if (args.has("--context-parallel")) {
    ContextJobResults r = run_context_parallel(
        args.str("--context-parallel"), options,
        {args.str("--q"), args.str("--k"), args.str("--v"), args.str("--do"),
         args.str("--dlse", "")},
        true);
    if (!r.writer) return 0;  // rank 0 writes
    write_outputs({{outputs[0], &r.dq}, {outputs[1], &r.dk}, {outputs[2], &r.dv}}, names);
    std::printf("dQ %s -> %s, dK %s -> %s, dV %s -> %s (%d ranks, %s)\n",
                shape_string(r.dq.shape()).c_str(), outputs[0].c_str(),
                shape_string(r.dk.shape()).c_str(), outputs[1].c_str(),
                shape_string(r.dv.shape()).c_str(), outputs[2].c_str(), r.ranks,
                context_scheme_name(r.scheme));
    return 0;
  }

  const Tensor q = load_input(args.str("--q"), "--q", options.dtype);
  const Tensor k = load_input(args.str("--k"), "--k", options.dtype);
  const Tensor v = load_input(args.str("--v"), "--v", options.dtype);
  check_attention_shapes(q, k, v);
  const auto& qs = q.shape();
  const int64_t dim_v = v.shape()[3];
  const Tensor dout = load_input(args.str("--do"), "--do", options.dtype);
  check_shape(dout, {qs[0], qs[1], qs[2], dim_v}, "--do", "[B,Hq,Nq,Dv]");
  Tensor dlse;
  if (args.has("--dlse")) {
    dlse = load_input(args.str("--dlse"), "--dlse", DType::kF32);
    check_shape(dlse, {qs[0], qs[1], qs[2]}, "--dlse", "[B,Hq,Nq]");
  }

  Tensor out({qs[0], qs[1], qs[2], dim_v}, DType::kF32), lse({qs[0], qs[1], qs[2]}, DType::kF32);
  Tensor dq(qs, DType::kF32), dk(k.shape(), DType::kF32), dv(v.shape(), DType::kF32);
  BackwardArgs b;
  AttentionArgs& f = b.forward;
  f.q = q.view(), f.k = k.view(), f.v = v.view();
  f.out = out.view(), f.lse = lse.rows_view();
  f.scale = options.scale;
  f.causal = options.causal;
  f.threads = options.threads;
  b.dout = dout.view();
  if (args.has("--dlse")) b.dlse = dlse.rows_view();
  b.dq = dq.view(), b.dk = dk.view(), b.dv = dv.view();
  if (const Pattern* pattern = options.pattern.get()) {
    const Plan plan = pattern->plan(PlanInputs::of(f));
    pattern->forward(f, plan);
    pattern->backward(b, plan);
  } else {
    attention(f);
    attention_backward(b);
  }

  write_outputs({{outputs[0], &dq}, {outputs[1], &dk}, {outputs[2], &dv}}, names);
  std::printf("dQ %s -> %s, dK %s -> %s, dV %s -> %s\n", shape_string(dq.shape()).c_str(),
              outputs[0].c_str(), shape_string(dk.shape()).c_str(), outputs[1].c_str(),
              shape_string(dv.shape()).c_str(), outputs[2].c_str());
  return 0;
}

const bool registered = register_command({"grad", kUsage, grad_main});

}  // namespace
}  // namespace attnkit::cli
