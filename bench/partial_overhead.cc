// Cost of PARTIAL blocks: the same attention through a mask whose blocks are all FULL and through
// one whose blocks are all PARTIAL with a predicate that allows everything (BENCHMARKS.md).
//   partial_overhead N D HEADS [threads [q_block kv_block]]   (blocks default to 64 x 64)
#include <cstdio>
#include <cstdlib>
#include <memory>

#include "attnkit/attention.h"
#include "attnkit/block_mask.h"
#include "core/timing.h"
#include "eval/inputs.h"

namespace {

class AllowAll : public attnkit::TilePredicate {
 public:
  void fill(int64_t, int64_t, int64_t, int64_t nq, int64_t, int64_t nk, uint8_t* allow,
            int64_t ld) const override {
    for (int64_t i = 0; i < nq; ++i)
      for (int64_t j = 0; j < nk; ++j) allow[i * ld + j] = 1;
  }
  bool same_for_all_heads() const override { return true; }
};

attnkit::BlockMask every_block(int64_t n, int64_t q_block, int64_t kv_block,
                               attnkit::BlockKind kind) {
  attnkit::BlockMask m;
  m.nq = m.nk = n;
  m.q_block = q_block;
  m.kv_block = kv_block;
  m.predicate = std::make_shared<AllowAll>();
  m.row_start.push_back(0);
  for (int64_t qb = 0; qb < m.q_blocks(); ++qb) {
    for (int32_t kb = 0; kb < m.kv_blocks(); ++kb) {
      m.kv_index.push_back(kb);
      m.kind.push_back(kind);
    }
    m.row_start.push_back(static_cast<int64_t>(m.kv_index.size()));
  }
  return m;
}

}  // namespace

int main(int argc, char** argv) {
  using namespace attnkit;
  if (argc < 4) {
    std::fprintf(stderr, "usage: partial_overhead N D HEADS [threads [q_block kv_block]]\n");
    return 2;
  }
  const int64_t n = std::atoll(argv[1]), dim = std::atoll(argv[2]), heads = std::atoll(argv[3]);
  Tensor q = random_normal({1, heads, n, dim}, DType::kF32, 1);
  Tensor k = random_normal({1, heads, n, dim}, DType::kF32, 2);
  Tensor v = random_normal({1, heads, n, dim}, DType::kF32, 3);
  Tensor out({1, heads, n, dim}, DType::kF32);
  AttentionArgs a;
  a.q = q.view(), a.k = k.view(), a.v = v.view(), a.out = out.view();
  a.threads = argc > 4 ? std::atoi(argv[4]) : 0;
  const int64_t q_block = argc > 6 ? std::atoll(argv[5]) : 64;
  const int64_t kv_block = argc > 6 ? std::atoll(argv[6]) : 64;
  const BlockMask full = every_block(n, q_block, kv_block, BlockKind::kFull);
  const BlockMask partial = every_block(n, q_block, kv_block, BlockKind::kPartial);
  const double t_full = median_seconds(5, [&] { attention(a, full); });
  const double t_partial = median_seconds(5, [&] { attention(a, partial); });
  std::printf(
      "{\"n\": %lld, \"d\": %lld, \"heads\": %lld, \"q_block\": %lld, \"kv_block\": %lld, "
      "\"full_seconds\": %.5f, "
      "\"partial_seconds\": %.5f, \"ratio\": %.3f}\n",
      (long long)n, (long long)dim, (long long)heads, (long long)q_block, (long long)kv_block,
      t_full, t_partial, t_partial / t_full);
}
