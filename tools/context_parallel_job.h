// `attnkit run` and `attnkit grad` with --context-parallel SCHEME, one process per rank under
// mpirun: every rank reads only its shard of the sequence from the files, the scheme runs over
// MPI, and rank 0 gathers the results and writes them. Bad input found by any rank stops every
// rank before the work: rank 0 reports it (one line, exit 2: mpirun's exit code), the others
// leave quietly.
#pragma once

#include <string>

#include "attention_job.h"
#include "attnkit/distributed.h"
#include "attnkit/tensor.h"

namespace attnkit::cli {

struct ContextJobFiles {
  std::string q, k, v;
  std::string dout, dlse;  // grad only (dlse optional)
};

// Whole-sequence results, on rank 0 only (`writer`); the other ranks' are empty.
struct ContextJobResults {
  bool writer = false;
  int ranks = 1;
  ContextScheme scheme = ContextScheme::kRing;
  Tensor out, lse;    // run
  Tensor dq, dk, dv;  // grad
};

// `scheme` is --context-parallel's value (checked by every rank, reported by rank 0).
ContextJobResults run_context_parallel(const std::string& scheme, const JobOptions& options,
                                       const ContextJobFiles& files, bool backward);

}  // namespace attnkit::cli
