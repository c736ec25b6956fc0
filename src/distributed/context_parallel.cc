// Context-parallel attention (include/attnkit/distributed.h): the schemes over a Communicator,
// every pair of shards on the local kernels (attention(), attention_backward(), merge()).
//
// A shard's K and V travel packed: [B, Hkv, cap, D] then [B, Hkv, cap, Dv] in the inputs'
// dtype, cap the largest shard, so every message of a scheme has one size. In the backward, the
// dK/dV accumulators of the shard in hand (f32, the same layout) travel with it.
#include <algorithm>
#include <cstring>
#include <limits>
#include <optional>
#include <string>
#include <vector>

#include "attnkit/distributed.h"
#include "attnkit/error.h"
#include "attnkit/pattern.h"
#include "core/attention_args.h"
#include "core/memory.h"
#include "core/score_modifiers.h"
#include "core/timing.h"
#include "distributed/shard_pairs.h"

namespace attnkit {
namespace {

// Rows [start, start + count) of x along the sequence axis.
TensorView seq_rows(TensorView x, int64_t start, int64_t count) {
  x.data = static_cast<const std::byte*>(x.data) + dtype_size(x.dtype) * start * x.stride[2];
  x.shape[2] = count;
  return x;
}

MutableTensorView seq_rows(MutableTensorView x, int64_t start, int64_t count) {
  x.data = static_cast<std::byte*>(x.data) + dtype_size(x.dtype) * start * x.stride[2];
  x.shape[2] = count;
  return x;
}

int64_t tokens(const std::vector<TokenRange>& ranges) {
  int64_t n = 0;
  for (const TokenRange& r : ranges) n += r.size();
  return n;
}

// Where everything lives: the ranks' shards, and the shapes of one shard's block.
struct Layout {
  int rank = 0, size = 1;
  std::vector<std::vector<TokenRange>> shards;  // per rank
  int64_t cap = 0;                              // the largest shard
  int64_t batch = 0, heads_q = 0, heads_kv = 0, dim = 0, dim_v = 0;
  DType dtype = DType::kF32;
};

// K and V of one shard in a packed block of `cap` rows (`elements` wide each: D for K, Dv for V).
struct Block {
  std::vector<std::byte> bytes;
  DType dtype;
  int64_t batch, heads, cap, dim, dim_v;
  Block(const Layout& l, DType type)
      : bytes(dtype_size(type) * l.batch * l.heads_kv * l.cap * (l.dim + l.dim_v)), dtype(type),
        batch(l.batch), heads(l.heads_kv), cap(l.cap), dim(l.dim), dim_v(l.dim_v) {}
  TensorLayout layout(int64_t width, int64_t rows) const {
    TensorLayout t;
    t.dtype = dtype;
    const int64_t shape[4] = {batch, heads, rows, width};
    const int64_t stride[4] = {heads * cap * width, cap * width, width, 1};
    for (int i = 0; i < 4; ++i) t.shape[i] = shape[i], t.stride[i] = stride[i];
    return t;
  }
  size_t v_offset() const { return dtype_size(dtype) * batch * heads * cap * dim; }
  MutableTensorView k(int64_t start, int64_t rows) {
    MutableTensorView x;
    static_cast<TensorLayout&>(x) = layout(dim, cap);
    x.data = bytes.data();
    return seq_rows(x, start, rows);
  }
  MutableTensorView v(int64_t start, int64_t rows) {
    MutableTensorView x;
    static_cast<TensorLayout&>(x) = layout(dim_v, cap);
    x.data = bytes.data() + v_offset();
    return seq_rows(x, start, rows);
  }
};

// Copies rows of `from` into `to` (same shape, same dtype, contiguous head dims).
void copy_rows(const TensorView& from, const MutableTensorView& to) {
  const size_t size = dtype_size(from.dtype), row = size * from.shape[3];
  for (int64_t b = 0; b < from.shape[0]; ++b)
    for (int64_t h = 0; h < from.shape[1]; ++h)
      for (int64_t i = 0; i < from.shape[2]; ++i)
        std::memcpy(static_cast<std::byte*>(to.data) + size * to.offset(b, h, i, 0),
                    static_cast<const std::byte*>(from.data) + size * from.offset(b, h, i, 0), row);
}

// to += from, f32, same shape.
void add_rows(const TensorView& from, const MutableTensorView& to) {
  for (int64_t b = 0; b < from.shape[0]; ++b)
    for (int64_t h = 0; h < from.shape[1]; ++h)
      for (int64_t i = 0; i < from.shape[2]; ++i) {
        const float* x = from.row<float>(b, h, i);
        float* y = to.row<float>(b, h, i);
        for (int64_t d = 0; d < from.shape[3]; ++d) y[d] += x[d];
      }
}

void fill_rows(const MutableTensorView& to, float value) {
  for (int64_t b = 0; b < to.shape[0]; ++b)
    for (int64_t h = 0; h < to.shape[1]; ++h)
      for (int64_t i = 0; i < to.shape[2]; ++i)
        std::fill(to.row<float>(b, h, i), to.row<float>(b, h, i) + to.shape[3], value);
}

// This rank's K and V, packed.
Block pack(const Layout& l, const AttentionArgs& a) {
  Block block(l, a.k.dtype);
  const int64_t n = a.k.shape[2];
  copy_rows(a.k, block.k(0, n));
  copy_rows(a.v, block.v(0, n));
  return block;
}

Layout layout_of(const ContextParallelArgs& args) {
  const AttentionArgs& a = args.local;
  check(args.comm != nullptr, "comm", "is missing");
  validate(a);
  check(!a.lse.empty(), "lse", "context-parallel attention needs the LSE (its merge and backward)");
  check(a.dropout == 0.0f, "dropout", "is not supported context-parallel");
  check(!has_score_modifiers(a), "row_scale", "score modifiers are not supported context-parallel");
  Layout l;
  l.rank = args.comm->rank(), l.size = args.comm->size();
  l.batch = a.q.shape[0], l.heads_q = a.q.shape[1], l.heads_kv = a.k.shape[1];
  l.dim = a.q.shape[3], l.dim_v = a.v.shape[3], l.dtype = a.k.dtype;
  const int64_t align = context_alignment(args.pattern, args.global_n);
  for (int p = 0; p < l.size; ++p) {
    l.shards.push_back(context_shard(args.scheme, args.global_n, p, l.size, align));
    l.cap = std::max(l.cap, tokens(l.shards.back()));
  }
  const int64_t mine = tokens(l.shards[l.rank]);
  check(a.q.shape[2] == mine && a.k.shape[2] == mine, "q",
        "rank " + std::to_string(l.rank) + " of " + std::to_string(l.size) + " holds " +
            std::to_string(mine) + " of the " + std::to_string(args.global_n) +
            " tokens under " + context_scheme_name(args.scheme) + ", but q has " +
            std::to_string(a.q.shape[2]) + " and k " + std::to_string(a.k.shape[2]));
  check_memory(2.0 * double(dtype_size(l.dtype)) * l.batch * l.heads_kv * l.cap *
                   (l.dim + l.dim_v) * (args.scheme == ContextScheme::kAllGather ? l.size : 1),
               "global_n", "the shards of K and V in flight");
  return l;
}

// The rank's queries against every key range of one shard's block: partial (O, LSE) per pair,
// merged into the rank's out and lse (`written` marks the query ranges that hold a result).
class ForwardPass {
 public:
  ForwardPass(const ContextParallelArgs& args, const Layout& l)
      : args_(args), l_(l),
        planner_(args.pattern, l.batch, l.heads_q, l.heads_kv, args.global_n, l.dim,
                 args.local.causal),
        written_(l.shards[l.rank].size(), false) {}

  void attend(int src, Block& block) {
    const AttentionArgs& a = args_.local;
    int64_t q_at = 0;
    const std::vector<TokenRange>& mine = l_.shards[l_.rank];
    for (size_t qi = 0; qi < mine.size(); ++qi) {
      const TokenRange q = mine[qi];
      int64_t k_at = 0;
      for (const TokenRange& k : l_.shards[src]) {
        const PairPlan plan = planner_.plan(q, k);
        if (plan.kind != PairPlan::Kind::kSkip) {
          AttentionArgs sub = a;
          sub.q = seq_rows(a.q, q_at, q.size());
          sub.k = block.k(k_at, k.size());
          sub.v = block.v(k_at, k.size());
          sub.causal = plan.kind == PairPlan::Kind::kDiagonal;
          const MutableTensorView out = seq_rows(a.out, q_at, q.size());
          const MutableTensorView lse = seq_rows(a.lse, q_at, q.size());
          Tensor part_out, part_lse;
          if (written_[qi]) {  // into a partial, merged below
            part_out = Tensor({l_.batch, l_.heads_q, q.size(), l_.dim_v}, DType::kF32);
            part_lse = Tensor({l_.batch, l_.heads_q, q.size()}, DType::kF32);
            sub.out = part_out.view(), sub.lse = part_lse.rows_view();
          } else {
            sub.out = out, sub.lse = lse;
          }
          if (plan.mask) {
            attention(sub, *plan.mask);
          } else {
            attention(sub);
          }
          if (written_[qi]) merge(out, lse, part_out.view(), part_lse.rows_view(), out, lse);
          written_[qi] = true;
        }
        k_at += k.size();
      }
      q_at += q.size();
    }
  }

  // Query ranges that saw no key: O = 0, LSE = -inf.
  void finish() {
    int64_t q_at = 0;
    const std::vector<TokenRange>& mine = l_.shards[l_.rank];
    for (size_t qi = 0; qi < mine.size(); ++qi) {
      if (!written_[qi]) {
        fill_rows(seq_rows(args_.local.out, q_at, mine[qi].size()), 0.0f);
        fill_rows(seq_rows(args_.local.lse, q_at, mine[qi].size()),
                  -std::numeric_limits<float>::infinity());
      }
      q_at += mine[qi].size();
    }
  }

 private:
  const ContextParallelArgs& args_;
  const Layout& l_;
  PairPlanner planner_;
  std::vector<bool> written_;
};

// The rank's gradients from one shard's block: dQ added into args.dq, dK and dV into `grads`
// (the block's f32 accumulators).
class BackwardPass {
 public:
  BackwardPass(const ContextParallelBackwardArgs& args, const Layout& l)
      : args_(args), l_(l),
        planner_(args.forward.pattern, l.batch, l.heads_q, l.heads_kv, args.forward.global_n,
                 l.dim, args.forward.local.causal) {}

  void attend(int src, Block& block, Block& grads) {
    const AttentionArgs& a = args_.forward.local;
    int64_t q_at = 0;
    for (const TokenRange& q : l_.shards[l_.rank]) {
      int64_t k_at = 0;
      for (const TokenRange& k : l_.shards[src]) {
        const PairPlan plan = planner_.plan(q, k);
        if (plan.kind != PairPlan::Kind::kSkip) {
          BackwardArgs sub;
          sub.forward = a;
          sub.forward.q = seq_rows(a.q, q_at, q.size());
          sub.forward.k = block.k(k_at, k.size());
          sub.forward.v = block.v(k_at, k.size());
          sub.forward.out = seq_rows(a.out, q_at, q.size());
          sub.forward.lse = seq_rows(a.lse, q_at, q.size());
          sub.forward.causal = plan.kind == PairPlan::Kind::kDiagonal;
          sub.dout = seq_rows(args_.dout, q_at, q.size());
          if (!args_.dlse.empty()) sub.dlse = seq_rows(args_.dlse, q_at, q.size());
          Tensor dq({l_.batch, l_.heads_q, q.size(), l_.dim}, DType::kF32);
          Tensor dk({l_.batch, l_.heads_kv, k.size(), l_.dim}, DType::kF32);
          Tensor dv({l_.batch, l_.heads_kv, k.size(), l_.dim_v}, DType::kF32);
          sub.dq = dq.view(), sub.dk = dk.view(), sub.dv = dv.view();
          if (plan.mask) {
            attention_backward(sub, *plan.mask);
          } else {
            attention_backward(sub);
          }
          add_rows(dq.view(), seq_rows(args_.dq, q_at, q.size()));
          add_rows(dk.view(), grads.k(k_at, k.size()));
          add_rows(dv.view(), grads.v(k_at, k.size()));
        }
        k_at += k.size();
      }
      q_at += q.size();
    }
  }

 private:
  const ContextParallelBackwardArgs& args_;
  const Layout& l_;
  PairPlanner planner_;
};

// Adds the seconds `body` takes to *total (when total is set).
template <typename Body>
void timed(double* total, Body&& body) {
  const double start = now_seconds();
  body();
  if (total) *total += now_seconds() - start;
}

int next(const Layout& l) { return (l.rank + 1) % l.size; }
int previous(const Layout& l) { return (l.rank + l.size - 1) % l.size; }

// One rank holds the whole sequence in order (every scheme's shard of P = 1): the local call
// itself, so that P = 1 is bit for bit the single-process result.
std::optional<Plan> whole_plan(const ContextParallelArgs& args) {
  if (!args.pattern) return std::nullopt;
  return args.pattern->plan(PlanInputs::of(args.local));
}

}  // namespace

void context_parallel_attention(const ContextParallelArgs& args) {
  const double start = now_seconds();
  ContextParallelStats unused;
  ContextParallelStats& stats = args.stats ? *args.stats : unused;
  stats = {};
  const Layout l = layout_of(args);
  if (l.size == 1) {
    const std::optional<Plan> plan = whole_plan(args);
    timed(&stats.compute_seconds,
          [&] { plan ? args.pattern->forward(args.local, *plan) : attention(args.local); });
    stats.seconds = now_seconds() - start;
    return;
  }
  Communicator& comm = *args.comm;
  ForwardPass pass(args, l);
  Block held = pack(l, args.local);
  if (args.scheme == ContextScheme::kAllGather) {
    Block all(l, l.dtype);
    all.bytes.resize(held.bytes.size() * l.size);
    timed(&stats.wait_seconds,
          [&] { comm.all_gather(held.bytes.data(), all.bytes.data(), held.bytes.size()); });
    for (int src = 0; src < l.size; ++src) {
      std::memcpy(held.bytes.data(), all.bytes.data() + src * held.bytes.size(), held.bytes.size());
      timed(&stats.compute_seconds, [&] { pass.attend(src, held); });
    }
  } else {  // ring and zigzag: the next shard arrives while this one is attended
    Block arriving(l, l.dtype);
    for (int step = 0; step < l.size; ++step) {
      const int src = (l.rank + l.size - step) % l.size;
      std::unique_ptr<Communicator::Exchange> exchange;
      if (step + 1 < l.size)
        exchange = comm.start_exchange(held.bytes.data(), arriving.bytes.data(), held.bytes.size(),
                                       next(l), previous(l));
      timed(&stats.compute_seconds, [&] { pass.attend(src, held); });
      if (exchange) {
        timed(&stats.wait_seconds, [&] { exchange->finish(); });
        std::swap(held.bytes, arriving.bytes);
      }
    }
  }
  pass.finish();
  stats.seconds = now_seconds() - start;
}

void context_parallel_attention_backward(const ContextParallelBackwardArgs& args) {
  const double start = now_seconds();
  const ContextParallelArgs& f = args.forward;
  ContextParallelStats unused;
  ContextParallelStats& stats = f.stats ? *f.stats : unused;
  stats = {};
  const Layout l = layout_of(f);
  const int64_t mine = tokens(l.shards[l.rank]);
  check(args.dout.data != nullptr, "dout", "is missing (null data)");
  BackwardArgs shapes;  // the gradients' checks, on this rank's shard
  shapes.forward = f.local, shapes.dout = args.dout, shapes.dlse = args.dlse;
  shapes.dq = args.dq, shapes.dk = args.dk, shapes.dv = args.dv;
  validate(shapes);
  if (l.size == 1) {
    const std::optional<Plan> plan = whole_plan(f);
    timed(&stats.compute_seconds,
          [&] { plan ? f.pattern->backward(shapes, *plan) : attention_backward(shapes); });
    stats.seconds = now_seconds() - start;
    return;
  }
  Communicator& comm = *f.comm;
  BackwardPass pass(args, l);
  fill_rows(args.dq, 0.0f);
  Block held = pack(l, f.local);
  Block grads(l, DType::kF32);  // zeros: the dK/dV of the shard in hand
  if (f.scheme == ContextScheme::kAllGather) {
    Block all(l, l.dtype);
    all.bytes.resize(held.bytes.size() * l.size);
    timed(&stats.wait_seconds,
          [&] { comm.all_gather(held.bytes.data(), all.bytes.data(), held.bytes.size()); });
    std::vector<std::byte> every(grads.bytes.size() * l.size, std::byte{0});
    for (int src = 0; src < l.size; ++src) {
      std::memcpy(held.bytes.data(), all.bytes.data() + src * held.bytes.size(), held.bytes.size());
      std::fill(grads.bytes.begin(), grads.bytes.end(), std::byte{0});
      timed(&stats.compute_seconds, [&] { pass.attend(src, held, grads); });
      std::memcpy(every.data() + src * grads.bytes.size(), grads.bytes.data(), grads.bytes.size());
    }
    timed(&stats.wait_seconds, [&] {
      comm.all_reduce_sum(reinterpret_cast<float*>(every.data()), every.size() / sizeof(float));
    });
    std::memcpy(grads.bytes.data(), every.data() + l.rank * grads.bytes.size(),
                grads.bytes.size());
  } else {
    // Shard src's accumulators travel with it; after the last step one more pass brings each
    // home (P passes of the gradients, P - 1 of K and V).
    Block arriving(l, l.dtype), grads_arriving(l, DType::kF32);
    for (int step = 0; step < l.size; ++step) {
      const int src = (l.rank + l.size - step) % l.size;
      std::unique_ptr<Communicator::Exchange> exchange;
      if (step + 1 < l.size)
        exchange = comm.start_exchange(held.bytes.data(), arriving.bytes.data(), held.bytes.size(),
                                       next(l), previous(l));
      timed(&stats.compute_seconds, [&] { pass.attend(src, held, grads); });
      timed(&stats.wait_seconds, [&] {
        if (exchange) exchange->finish();
        comm.start_exchange(grads.bytes.data(), grads_arriving.bytes.data(), grads.bytes.size(),
                            next(l), previous(l))
            ->finish();
      });
      if (exchange) std::swap(held.bytes, arriving.bytes);
      std::swap(grads.bytes, grads_arriving.bytes);
    }
  }
  copy_rows(grads.k(0, mine), args.dk);
  copy_rows(grads.v(0, mine), args.dv);
  stats.seconds = now_seconds() - start;
}

}  // namespace attnkit
