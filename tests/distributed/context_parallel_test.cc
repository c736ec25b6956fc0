// Context-parallel attention on the thread communicator (ranks as threads of this process):
// every scheme, 1 to 4 ranks, causal or not, GQA, a pattern in global coordinates, rows that see
// no key; the ranks' shards put together must equal the single-process attention (forward and
// gradients), bit for bit with one rank; the shard layouts; errors naming the argument. The MPI
// transport runs the same code under mpirun (tests/distributed/mpi_main.cc, and the CLI tests).
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <exception>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "attnkit/block_mask.h"
#include "attnkit/distributed.h"
#include "attnkit/error.h"
#include "attnkit/pattern.h"
#include "kernels/ref/backward_ref.h"
#include "support/backward_check.h"

namespace attnkit {
namespace {

using testing::Problem;

// Causal, except that rows i with i % 7 == 3 see no key at all: a static pattern with empty rows.
class EmptyRowsPattern final : public Pattern {
 public:
  EmptyRowsPattern() : Pattern(PatternParams(info(), {}), Direction::kCausal) {}
  static PatternInfo info() {
    PatternInfo i;
    i.name = "empty_rows";
    i.family = PatternFamily::kStatic;
    return i;
  }
  Plan plan(const PlanInputs& in) const override {
    class Rule final : public TilePredicate {
     public:
      void fill(int64_t, int64_t, int64_t q0, int64_t nq, int64_t k0, int64_t nk, uint8_t* allow,
                int64_t ld) const override {
        for (int64_t i = 0; i < nq; ++i)
          for (int64_t j = 0; j < nk; ++j)
            allow[i * ld + j] = (q0 + i) % 7 != 3 && k0 + j <= q0 + i;
      }
      bool same_for_all_heads() const override { return true; }
    };
    Plan p;
    BlockMaskShape shape{in.q.shape[2], in.k.shape[2], 1, 1, 64, 64};
    p.mask = block_mask_from_predicate(shape, std::make_shared<Rule>());
    p.causal = in.causal;
    return p;
  }
};

std::unique_ptr<Pattern> pattern_of(const std::string& spec) {
  if (spec.empty()) return nullptr;
  if (spec == "empty_rows") return std::make_unique<EmptyRowsPattern>();
  return make_pattern(spec);
}

struct Case {
  int ranks = 2;
  ContextScheme scheme = ContextScheme::kZigzag;
  bool causal = false;
  std::string pattern;
  Problem p;
  std::string name() const {
    std::string s = context_scheme_name(scheme);
    s.append("_P").append(std::to_string(ranks)).append(causal ? "_causal" : "");
    if (!pattern.empty()) {
      std::string tag = pattern.substr(0, pattern.find(':'));
      s.append("_").append(tag);
    }
    return s.append("_").append(p.name());
  }
};

// Rows of x at the shard's ranges, in the shard's order.
Tensor shard_of(const Tensor& x, const std::vector<TokenRange>& ranges) {
  const TensorView v = x.view();
  int64_t n = 0;
  for (const TokenRange& r : ranges) n += r.size();
  Tensor out({v.shape[0], v.shape[1], n, v.shape[3]}, x.dtype());
  const MutableTensorView o = out.view();
  const size_t size = dtype_size(x.dtype()), row = size * v.shape[3];
  for (int64_t b = 0; b < v.shape[0]; ++b)
    for (int64_t h = 0; h < v.shape[1]; ++h) {
      int64_t at = 0;
      for (const TokenRange& r : ranges)
        for (int64_t t = r.start; t < r.end; ++t, ++at)
          std::memcpy(static_cast<std::byte*>(o.data) + size * o.offset(b, h, at, 0),
                      static_cast<const std::byte*>(v.data) + size * v.offset(b, h, t, 0), row);
    }
  return out;
}

// The shard's rows put back at their global positions in `global` (f32).
void place(const Tensor& shard, const std::vector<TokenRange>& ranges, Tensor& global) {
  const TensorView s = shard.view();
  const MutableTensorView g = global.view();
  for (int64_t b = 0; b < s.shape[0]; ++b)
    for (int64_t h = 0; h < s.shape[1]; ++h) {
      int64_t at = 0;
      for (const TokenRange& r : ranges)
        for (int64_t t = r.start; t < r.end; ++t, ++at)
          std::memcpy(g.row<float>(b, h, t), s.row<float>(b, h, at), sizeof(float) * s.shape[3]);
    }
}

// Runs body(rank, comm) on `ranks` threads with thread communicators; rethrows the first error.
template <typename Body>
void on_ranks(int ranks, Body&& body) {
  auto comms = thread_communicators(ranks);
  std::exception_ptr error;
  std::mutex lock;
  std::vector<std::thread> threads;
  for (int r = 0; r < ranks; ++r)
    threads.emplace_back([&, r] {
      try {
        body(r, *comms[r]);
      } catch (...) {
        std::lock_guard<std::mutex> hold(lock);
        if (!error) error = std::current_exception();
      }
    });
  for (std::thread& t : threads) t.join();
  if (error) std::rethrow_exception(error);
}

struct Results {
  Tensor out, lse, dq, dk, dv;
};

// Forward and backward context-parallel, the shards put together.
Results run_parallel(const Case& c, const testing::BackwardInputs& in, const Pattern* pattern) {
  const Problem& p = c.p;
  Results r{Tensor({p.batch, p.heads_q, p.nq, p.dim_v}, DType::kF32),
            Tensor({p.batch, p.heads_q, p.nq, 1}, DType::kF32),
            Tensor({p.batch, p.heads_q, p.nq, p.dim}, DType::kF32),
            Tensor({p.batch, p.heads_kv, p.nk, p.dim}, DType::kF32),
            Tensor({p.batch, p.heads_kv, p.nk, p.dim_v}, DType::kF32)};
  const int64_t align = context_alignment(pattern, p.nq);
  on_ranks(c.ranks, [&](int rank, Communicator& comm) {
    const std::vector<TokenRange> ranges = context_shard(c.scheme, p.nq, rank, c.ranks, align);
    const Tensor q = shard_of(in.in.q, ranges), k = shard_of(in.in.k, ranges);
    const Tensor v = shard_of(in.in.v, ranges), dout = shard_of(in.dout, ranges);
    const int64_t n = q.shape()[2];
    Tensor out({p.batch, p.heads_q, n, p.dim_v}, DType::kF32), lse({p.batch, p.heads_q, n},
                                                                   DType::kF32);
    ContextParallelArgs args;
    args.local.q = q.view(), args.local.k = k.view(), args.local.v = v.view();
    args.local.out = out.view(), args.local.lse = lse.rows_view();
    args.local.causal = c.causal, args.local.threads = 1;
    args.global_n = p.nq, args.scheme = c.scheme, args.pattern = pattern, args.comm = &comm;
    context_parallel_attention(args);
    Tensor dq({p.batch, p.heads_q, n, p.dim}, DType::kF32);
    Tensor dk({p.batch, p.heads_kv, n, p.dim}, DType::kF32), dv({p.batch, p.heads_kv, n, p.dim_v},
                                                                DType::kF32);
    ContextParallelBackwardArgs g;
    g.forward = args, g.dout = dout.view(), g.dq = dq.view(), g.dk = dk.view(), g.dv = dv.view();
    context_parallel_attention_backward(g);
    Tensor lse4 = Tensor({p.batch, p.heads_q, n, 1}, DType::kF32);
    std::memcpy(lse4.data(), lse.data(), lse.bytes());
    place(out, ranges, r.out), place(lse4, ranges, r.lse), place(dq, ranges, r.dq);
    place(dk, ranges, r.dk), place(dv, ranges, r.dv);
  });
  return r;
}

class ContextParallelSweep : public ::testing::TestWithParam<Case> {};

TEST_P(ContextParallelSweep, EqualsTheSingleProcessAttention) {
  const Case c = GetParam();
  const std::unique_ptr<Pattern> pattern = pattern_of(c.pattern);
  Problem p = c.p;
  p.causal = c.causal;
  std::optional<Plan> plan;
  if (pattern) plan = pattern->plan(PlanInputs::shapes(p.batch, p.heads_q, p.heads_kv, p.nq, p.nk,
                                                       p.dim, p.causal));
  // The single-process run: the fast kernels (themselves tested against the double reference).
  const testing::BackwardInputs in = testing::make_backward_inputs(p, false, [&](const AttentionArgs& a) {
    plan ? pattern->forward(a, *plan) : attention(a);
  });
  Results got = run_parallel(c, in, pattern.get());
  AttentionArgs parallel = in.forward;
  parallel.out = got.out.view(), parallel.lse = got.lse.view();
  testing::Gradients want = testing::nan_gradients(p), naive = testing::nan_gradients(p);
  BackwardArgs b = in.args(want);
  b.forward.threads = 1;  // as each rank runs: the block-sparse dQ is bitwise per thread count
  plan ? pattern->backward(b, *plan) : attention_backward(b);
  if (c.ranks == 1) {  // the local call itself: bit for bit
    for (auto [x, y, what] : {std::tuple{&got.out, &in.in.out, "O"}, {&got.dq, &want.dq, "dQ"},
                              {&got.dk, &want.dk, "dK"}, {&got.dv, &want.dv, "dV"}})
      EXPECT_EQ(std::memcmp(x->data(), y->data(), x->bytes()), 0) << c.name() << " " << what;
    return;
  }
  testing::expect_matches_reference(parallel, in.forward, c.name());
  ElementPredicate allow;
  std::vector<uint8_t> dense;
  if (plan) {
    dense = to_dense(*plan, 0, 0);
    allow = [&](int64_t, int64_t, int64_t i, int64_t j) { return dense[i * p.nk + j] != 0; };
  }
  attention_backward_reference_f32(in.args(naive), allow);
  const double s = testing::max_abs_score_sum(in.forward);
  testing::expect_gradient_close(got.dq, want.dq, naive.dq, s, c.name() + " dQ");
  testing::expect_gradient_close(got.dk, want.dk, naive.dk, s, c.name() + " dK");
  testing::expect_gradient_close(got.dv, want.dv, naive.dv, s, c.name() + " dV");
}

std::vector<Case> sweep() {
  std::vector<Case> cases;
  for (ContextScheme scheme : {ContextScheme::kRing, ContextScheme::kZigzag, ContextScheme::kAllGather})
    for (int ranks : {1, 2, 3, 4})
      for (bool causal : {false, true}) {
        Case c;
        c.scheme = scheme, c.ranks = ranks, c.causal = causal;
        c.p.batch = 2, c.p.heads_q = 4, c.p.heads_kv = 2, c.p.nq = c.p.nk = 157;
        c.p.dim = 24, c.p.dim_v = 16;
        cases.push_back(c);
      }
  for (const char* pattern : {"window:size=100", "document:lengths=150+250+200", "power:block=64,window=2",
                              "empty_rows"})
    for (int ranks : {1, 3}) {
      Case c;
      c.scheme = ContextScheme::kZigzag, c.ranks = ranks, c.causal = true, c.pattern = pattern;
      c.p.heads_q = 2, c.p.heads_kv = 1, c.p.nq = c.p.nk = 600, c.p.dim = c.p.dim_v = 16;
      cases.push_back(c);
    }
  Case ring_window;  // a pattern on the ring scheme, 4 ranks
  ring_window.scheme = ContextScheme::kRing, ring_window.ranks = 4, ring_window.causal = true;
  ring_window.pattern = "window:size=100";
  ring_window.p.nq = ring_window.p.nk = 512, ring_window.p.dim = ring_window.p.dim_v = 16;
  cases.push_back(ring_window);
  Case half;  // 16-bit inputs travel in their dtype
  half.scheme = ContextScheme::kZigzag, half.ranks = 2, half.causal = true;
  half.p.nq = half.p.nk = 90, half.p.dim = half.p.dim_v = 32, half.p.dtype = DType::kBF16;
  cases.push_back(half);
  return cases;
}

INSTANTIATE_TEST_SUITE_P(Schemes, ContextParallelSweep, ::testing::ValuesIn(sweep()),
                         [](const auto& info) { return info.param.name(); });

TEST(ContextShard, LayoutsCoverTheSequenceOnce) {
  for (ContextScheme scheme : {ContextScheme::kRing, ContextScheme::kZigzag, ContextScheme::kAllGather})
    for (int size : {1, 2, 3, 4, 7})
      for (int64_t n : {64, 157, 1000})
        for (int64_t align : {1, 16}) {
          const int64_t chunks = (scheme == ContextScheme::kZigzag ? 2 : 1) * size;
          if ((n + align - 1) / align < chunks) continue;
          std::vector<int> owner(n, -1);
          for (int r = 0; r < size; ++r) {
            const std::vector<TokenRange> ranges = context_shard(scheme, n, r, size, align);
            ASSERT_EQ(ranges.size(), scheme == ContextScheme::kZigzag ? 2u : 1u);
            for (const TokenRange& t : ranges) {
              ASSERT_GT(t.size(), 0);
              ASSERT_TRUE(t.start % align == 0) << t.start;
              for (int64_t i = t.start; i < t.end; ++i) {
                ASSERT_EQ(owner[i], -1) << "token " << i << " held twice";
                owner[i] = r;
              }
            }
          }
          for (int64_t i = 0; i < n; ++i) ASSERT_NE(owner[i], -1) << "token " << i << " unheld";
        }
  // Zigzag: rank r holds chunks r and 2P - 1 - r of 2P.
  const std::vector<TokenRange> z = context_shard(ContextScheme::kZigzag, 800, 1, 4);
  EXPECT_EQ(z[0].start, 100);
  EXPECT_EQ(z[0].end, 200);
  EXPECT_EQ(z[1].start, 600);
  EXPECT_EQ(z[1].end, 700);
}

TEST(ContextParallel, ErrorsNameTheArgument) {
  const Tensor q = random_normal({1, 2, 50, 8}, DType::kF32, 1);
  Tensor out({1, 2, 50, 8}, DType::kF32), lse({1, 2, 50}, DType::kF32);
  auto comm = single_process_communicator();
  ContextParallelArgs args;
  args.local.q = args.local.k = args.local.v = q.view();
  args.local.out = out.view(), args.local.lse = lse.rows_view();
  args.global_n = 50, args.comm = comm.get();
  auto expect_error = [](const ContextParallelArgs& a, const std::string& argument) {
    try {
      context_parallel_attention(a);
      ADD_FAILURE() << "no error for " << argument;
    } catch (const Error& e) {
      EXPECT_EQ(e.argument(), argument) << e.what();
    }
  };
  ContextParallelArgs bad = args;
  bad.global_n = 60;  // the shard holds 50 of 60 tokens: it should hold all of them
  expect_error(bad, "q");
  bad = args;
  bad.comm = nullptr;
  expect_error(bad, "comm");
  bad = args;
  bad.local.lse = MutableTensorView{};
  expect_error(bad, "lse");
  const std::unique_ptr<Pattern> grid = make_pattern("natten2d:kernel=3");
  bad = args;
  bad.pattern = grid.get();
  expect_error(bad, "pattern");
  EXPECT_THROW(parse_context_scheme("ulysses", "scheme"), Error);
  try {
    context_shard(ContextScheme::kZigzag, 5, 0, 4);
    ADD_FAILURE() << "5 tokens in 8 chunks";
  } catch (const Error& e) {
    EXPECT_EQ(e.argument(), "global_n");
  }
}

}  // namespace
}  // namespace attnkit
