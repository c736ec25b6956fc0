// One rank's part of a context-parallel `run` or `grad` (see context_parallel_job.h).
#include "context_parallel_job.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "attnkit/error.h"
#include "attnkit/npy.h"
#include "command.h"

namespace attnkit::cli {
namespace {

// A rank's verdict on a step, the same size on every rank so that one all-gather carries all.
struct Status {
  int32_t failed = 0;
  char argument[64] = {};
  char message[956] = {};
};

// Runs `step` on every rank, then agrees: when any rank failed, rank 0 throws the first failing
// rank's error (main prints it: one line, exit 2) and the others leave quietly with code 0, so
// no rank waits forever for one that stopped. (Were they to exit 2 first, mpirun would abort the
// job and could kill rank 0 before its report; the job's exit code is rank 0's 2.)
void agree(Communicator& comm, const std::function<void()>& step) {
  Status mine;
  try {
    step();
  } catch (const Error& e) {
    mine.failed = 1;
    std::strncpy(mine.argument, e.argument().c_str(), sizeof(mine.argument) - 1);
    std::strncpy(mine.message, e.message().c_str(), sizeof(mine.message) - 1);
  }
  std::vector<Status> all(comm.size());
  comm.all_gather(&mine, all.data(), sizeof(Status));
  for (const Status& s : all) {
    if (!s.failed) continue;
    if (comm.rank() == 0) throw Error(s.argument, s.message);
    throw QuietExit{0};
  }
}

std::vector<std::pair<int64_t, int64_t>> pairs_of(const std::vector<TokenRange>& ranges) {
  std::vector<std::pair<int64_t, int64_t>> out;
  for (const TokenRange& r : ranges) out.emplace_back(r.start, r.end);
  return out;
}

// The first element of a shard [B, H, n_r, D] that is not finite, named by its position in the
// whole file ("NaN at [0,1,280,3]"); throws Error(argument, ...).
void check_shard_finite(const Tensor& t, const std::vector<TokenRange>& ranges,
                        const std::string& argument, const std::string& why) {
  const TensorView v = t.view();
  for (int64_t b = 0; b < v.shape[0]; ++b)
    for (int64_t h = 0; h < v.shape[1]; ++h) {
      int64_t at = 0;
      for (const TokenRange& r : ranges)
        for (int64_t pos = r.start; pos < r.end; ++pos, ++at)
          for (int64_t d = 0; d < v.shape[3]; ++d) {
            const float x = v.get(b, h, at, d);
            if (std::isfinite(x)) continue;
            throw Error(argument, std::string("contains ") + (std::isnan(x) ? "NaN" : "Inf") +
                                      " at [" + std::to_string(b) + "," + std::to_string(h) +
                                      "," + std::to_string(pos) + "," + std::to_string(d) + "]" +
                                      why);
          }
    }
}

// This rank's rows of a file, checked finite and converted as `run` reads its inputs.
Tensor load_shard(const std::string& path, const std::string& argument, DType dtype,
                  const std::vector<TokenRange>& ranges) {
  Tensor t = read_npy_rows(path, argument, pairs_of(ranges));
  check_shard_finite(t, ranges, argument, "");
  if (t.dtype() == dtype) return t;
  Tensor converted = t.to(dtype);
  check_shard_finite(converted, ranges, argument,
                     std::string(" after conversion to ") + dtype_name(dtype));
  return converted;
}

// Every rank's shard [B, H, n_r, D] (f32) put back at its positions in [B, H, N, D], on every
// rank (one all-gather of shards padded to the largest).
Tensor gather_shards(Communicator& comm, const Tensor& shard,
                     const std::vector<std::vector<TokenRange>>& shards, int64_t n) {
  const auto& s = shard.shape();
  int64_t cap = 0;
  for (const auto& ranges : shards) {
    int64_t rows = 0;
    for (const TokenRange& r : ranges) rows += r.size();
    cap = std::max(cap, rows);
  }
  const int64_t row = s[3];
  Tensor padded({s[0], s[1], cap, row}, DType::kF32);
  for (int64_t bh = 0; bh < s[0] * s[1]; ++bh)
    std::memcpy(padded.f32() + bh * cap * row, shard.f32() + bh * s[2] * row,
                sizeof(float) * s[2] * row);
  std::vector<float> all(static_cast<size_t>(padded.numel()) * comm.size());
  comm.all_gather(padded.data(), all.data(), padded.bytes());
  Tensor whole({s[0], s[1], n, row}, DType::kF32);
  for (int r = 0; r < comm.size(); ++r) {
    const float* from = all.data() + static_cast<size_t>(padded.numel()) * r;
    for (int64_t bh = 0; bh < s[0] * s[1]; ++bh) {
      int64_t at = 0;
      for (const TokenRange& t : shards[r]) {
        std::memcpy(whole.f32() + (bh * n + t.start) * row, from + (bh * cap + at) * row,
                    sizeof(float) * t.size() * row);
        at += t.size();
      }
    }
  }
  return whole;
}

Tensor rows_to_rank3(const Tensor& t) {  // [B, H, N, 1] -> [B, H, N]
  Tensor out({t.shape()[0], t.shape()[1], t.shape()[2]}, DType::kF32);
  std::memcpy(out.data(), t.data(), t.bytes());
  return out;
}

}  // namespace

ContextJobResults run_context_parallel(const std::string& scheme_name, const JobOptions& options,
                                       const ContextJobFiles& files, bool backward) {
  const MpiSession session(nullptr, nullptr);
  const std::unique_ptr<Communicator> comm = mpi_world();
  const int rank = comm->rank(), size = comm->size();
  ContextScheme scheme = ContextScheme::kRing;
  int64_t n = 0;
  std::vector<std::vector<TokenRange>> shards;
  Tensor q, k, v, dout, dlse;
  agree(*comm, [&] {
    scheme = parse_context_scheme(scheme_name, "--context-parallel");
    const NpyHeader qh = read_npy_header(files.q, "--q"), kh = read_npy_header(files.k, "--k");
    check(qh.shape.size() == 4 && kh.shape.size() == 4 && qh.shape[2] == kh.shape[2], "--k",
          "context parallelism is self-attention over one sequence: --q " +
              shape_string(qh.shape) + " and --k " + shape_string(kh.shape) +
              " must be [B,H,N,D] with the same N");
    n = qh.shape[2];
    const int64_t align = context_alignment(options.pattern.get(), n);
    for (int r = 0; r < size; ++r) shards.push_back(context_shard(scheme, n, r, size, align));
    const std::vector<TokenRange>& mine = shards[rank];
    q = load_shard(files.q, "--q", options.dtype, mine);
    k = load_shard(files.k, "--k", options.dtype, mine);
    v = load_shard(files.v, "--v", options.dtype, mine);
    check_attention_shapes(q, k, v);
    if (backward) {
      dout = load_shard(files.dout, "--do", options.dtype, mine);
      const std::vector<int64_t> want = {q.shape()[0], q.shape()[1], q.shape()[2], v.shape()[3]};
      check(dout.shape() == want, "--do",
            "shard shape " + shape_string(dout.shape()) + " must be [B,Hq,n,Dv] = " +
                shape_string(want));
      if (!files.dlse.empty()) {
        const NpyHeader lh = read_npy_header(files.dlse, "--dlse");
        check(lh.shape == std::vector<int64_t>{q.shape()[0], q.shape()[1], n}, "--dlse",
              "shape " + shape_string(lh.shape) + " must be [B,Hq,N]");
        // Small ([B, Hq, N] floats): read whole, this rank's positions kept.
        const std::vector<std::pair<int64_t, int64_t>> rows = pairs_of(mine);
        const Tensor all = read_npy(files.dlse, "--dlse");
        check_finite(all, "--dlse");  // [B, Hq, N]: flat indices are the file's
        dlse = Tensor({q.shape()[0], q.shape()[1], q.shape()[2]}, DType::kF32);
        for (int64_t bh = 0; bh < q.shape()[0] * q.shape()[1]; ++bh) {
          int64_t at = 0;
          for (const auto& [start, end] : rows) {
            std::memcpy(dlse.f32() + bh * q.shape()[2] + at, all.f32() + bh * n + start,
                        sizeof(float) * (end - start));
            at += end - start;
          }
        }
      }
    }
  });

  const auto& qs = q.shape();
  const int64_t dim_v = v.shape()[3];
  Tensor out({qs[0], qs[1], qs[2], dim_v}, DType::kF32), lse({qs[0], qs[1], qs[2], 1}, DType::kF32);
  ContextParallelArgs args;
  args.local.q = q.view(), args.local.k = k.view(), args.local.v = v.view();
  args.local.out = out.view(), args.local.lse = lse.view();
  args.local.scale = options.scale, args.local.causal = options.causal;
  args.local.threads = options.threads;
  args.global_n = n, args.scheme = scheme, args.pattern = options.pattern.get();
  args.comm = comm.get();
  agree(*comm, [&] { context_parallel_attention(args); });

  ContextJobResults results;
  results.writer = rank == 0;
  results.ranks = size;
  results.scheme = scheme;
  if (!backward) {
    Tensor whole_out = gather_shards(*comm, out, shards, n);
    Tensor whole_lse = gather_shards(*comm, lse, shards, n);
    if (results.writer) results.out = std::move(whole_out), results.lse = rows_to_rank3(whole_lse);
    return results;
  }
  Tensor dq(qs, DType::kF32), dk(k.shape(), DType::kF32), dv(v.shape(), DType::kF32);
  ContextParallelBackwardArgs g;
  g.forward = args;
  g.dout = dout.view();
  if (dlse.numel()) g.dlse = dlse.rows_view();
  g.dq = dq.view(), g.dk = dk.view(), g.dv = dv.view();
  agree(*comm, [&] { context_parallel_attention_backward(g); });
  Tensor whole_dq = gather_shards(*comm, dq, shards, n);
  Tensor whole_dk = gather_shards(*comm, dk, shards, n);
  Tensor whole_dv = gather_shards(*comm, dv, shards, n);
  if (results.writer)
    results.dq = std::move(whole_dq), results.dk = std::move(whole_dk),
    results.dv = std::move(whole_dv);
  return results;
}

}  // namespace attnkit::cli
