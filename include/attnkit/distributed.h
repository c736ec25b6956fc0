// Context-parallel attention: one self-attention over a sequence split across processes, on an
// existing transport (MPI from C++ and the CLI; torch.distributed from Python, attnkit.torch).
//
// Every rank holds its shard of the sequence: the queries, keys and values of the global token
// positions context_shard() gives it, in that order. It computes partial attentions of its
// queries against the key shards it sees, each with (O, LSE), and merges them exactly by LSE
// (attnkit::merge): the result is the single-process attention of the whole sequence, restricted
// to the rank's queries. The schemes differ in what moves (../shared/research/dist_gpu.md, A):
//   ring       contiguous shards; K/V pass around the ring, P - 1 exchanges, each overlapped
//              with the previous shard's attention (a communication thread runs the transfer)
//   zigzag     the sequence in 2P chunks, rank r holding chunks r and 2P - 1 - r: the same
//              ring, with equal causal work on every rank (Megatron / ring-flash-attention)
//   allgather  contiguous shards; one all-gather of K/V, then local attention (Llama 3)
// Causality is in global positions (query t sees key s iff s <= t); a pattern (static family:
// window, document, power, ...) is planned once over the whole sequence and each pair of shards
// walks its part of that mask, so every shard sees exactly its keys. Rows that see no key get
// O = 0 and LSE = -inf, as everywhere. The backward passes K/V with their dK/dV accumulators
// around the same ring (P exchanges of the gradients, the last one home), from the forward's
// merged O and LSE; allgather sums dK/dV over the ranks.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "attnkit/attention.h"

namespace attnkit {

class Pattern;

// The transport: point-to-point exchanges and the two collectives the schemes need.
class Communicator {
 public:
  virtual ~Communicator() = default;
  virtual int rank() const = 0;
  virtual int size() const = 0;

  // An exchange in flight; finish() waits for both directions. The buffers stay untouched until
  // then.
  class Exchange {
   public:
    virtual ~Exchange() = default;
    virtual void finish() = 0;
  };
  // Starts sending `bytes` at `send` to rank `to` while receiving `bytes` into `recv` from rank
  // `from` (every rank of a ring calls it together).
  virtual std::unique_ptr<Exchange> start_exchange(const void* send, void* recv, size_t bytes,
                                                   int to, int from) = 0;
  // recv[r * bytes, (r + 1) * bytes) = rank r's `send`, on every rank.
  virtual void all_gather(const void* send, void* recv, size_t bytes) = 0;
  // data = the sum over ranks of every rank's data (f32, elementwise), on every rank.
  virtual void all_reduce_sum(float* data, size_t count) = 0;
};

// A communicator of one rank (exchanges copy to themselves): P = 1 without a transport.
std::unique_ptr<Communicator> single_process_communicator();

// `size` communicators whose ranks are threads of this process (shared memory): each thread
// uses its own one. For tests and for machines without MPI.
std::vector<std::unique_ptr<Communicator>> thread_communicators(int size);

// MPI: whether this build has it, its world communicator (MPI initialised by an MpiSession, with
// MPI_THREAD_SERIALIZED: the communication thread of a ring step never runs beside another MPI
// call). Without MPI, mpi_world() throws Error("context_parallel", "... built without MPI").
bool mpi_available();
class MpiSession {
 public:
  MpiSession(int* argc, char*** argv);  // MPI_Init_thread
  ~MpiSession();                        // MPI_Finalize
  MpiSession(const MpiSession&) = delete;
  MpiSession& operator=(const MpiSession&) = delete;
};
std::unique_ptr<Communicator> mpi_world();

enum class ContextScheme : uint8_t { kRing, kZigzag, kAllGather };
// "ring" | "zigzag" | "allgather"; throws Error(argument, ...) otherwise.
ContextScheme parse_context_scheme(const std::string& text, const std::string& argument);
const char* context_scheme_name(ContextScheme scheme);

// Global token positions [start, end).
struct TokenRange {
  int64_t start = 0, end = 0;
  int64_t size() const { return end - start; }
};
// The global positions rank `rank` of `size` holds, in its shard's order: one range (ring,
// allgather: rank r holds [r N / P, (r + 1) N / P)) or two (zigzag: chunks r and 2P - 1 - r of
// 2P). Chunk boundaries are multiples of `align` (the last one N): a pattern's blocks stay whole.
std::vector<TokenRange> context_shard(ContextScheme scheme, int64_t n, int rank, int size,
                                      int64_t align = 1);

// The alignment context_shard() needs for `pattern` over N tokens: the least common multiple of
// its mask's block sizes (1 without a pattern). Throws Error("pattern", ...) for patterns that
// cannot run context-parallel: those that reorder tokens (grid family) or plan from Q and K
// (dynamic family).
int64_t context_alignment(const Pattern* pattern, int64_t n);

// What one rank's call spent: the whole call, the local attention kernels in it, and the time
// it waited for transfers (a ring's exchange that had not finished when the kernels had, the
// all-gather, the gradients' passes). seconds - compute_seconds is what communication cost.
struct ContextParallelStats {
  double seconds = 0.0, compute_seconds = 0.0, wait_seconds = 0.0;
};

struct ContextParallelArgs {
  // This rank's shard: q [B, Hq, n_r, D], k [B, Hkv, n_r, D], v [B, Hkv, n_r, Dv] in its
  // positions' order, out [B, Hq, n_r, Dv] and lse [B, Hq, n_r, 1] (required: the backward needs
  // it); causal in global positions, scale and threads as attention(). No dropout or score
  // modifiers.
  AttentionArgs local;
  int64_t global_n = 0;  // N, the whole sequence
  ContextScheme scheme = ContextScheme::kZigzag;
  const Pattern* pattern = nullptr;  // optional: static-family patterns, in global positions
  Communicator* comm = nullptr;
  ContextParallelStats* stats = nullptr;  // optional, filled by the forward and the backward
};

// Errors name "q", "k", "v", "out", "lse", "global_n", "pattern", "comm" or the arguments of
// attention(). Every rank must call it with the same scheme, N, shapes and pattern.
void context_parallel_attention(const ContextParallelArgs& args);

struct ContextParallelBackwardArgs {
  ContextParallelArgs forward;  // its out and lse: the forward's merged results
  TensorView dout;              // [B, Hq, n_r, Dv]
  TensorView dlse;              // optional [B, Hq, n_r, 1] f32
  MutableTensorView dq, dk, dv;  // f32, shaped like this rank's q, k, v shards
};
void context_parallel_attention_backward(const ContextParallelBackwardArgs& args);

}  // namespace attnkit
