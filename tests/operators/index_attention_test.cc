// Index-list attention (include/attnkit/index_attention.h): forward and backward against the
// double reference over odd shapes (lists of 1 to 70 keys, padding anywhere, rows with no key,
// lists shared or per batch / per head, CSR, GQA, every dtype, every SIMD target); equal to the
// block-sparse kernel under the equivalent element mask; results independent of the thread
// count; bad lists refused naming "indices"; knn against a brute-force sort.
#include "attnkit/index_attention.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <memory>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "attnkit/block_mask.h"
#include "attnkit/error.h"
#include "support/backward_check.h"

namespace attnkit {
namespace {

using testing::Problem;

enum class Form { kShared, kPerHead, kPerBatch, kCsr };

struct Case {
  Problem p;
  int64_t list = 8;  // K: slots per row
  Form form = Form::kShared;
  std::string name() const {
    static const char* const kForms[] = {"shared", "per_head", "per_batch", "csr"};
    std::string s = p.name();
    s.append("_K").append(std::to_string(list)).append("_").append(kForms[int(form)]);
    return s;
  }
};

// Random lists: K slots per row, each a distinct key or, with probability 1/5, -1; row 3 (when
// it exists) is all padding. CSR drops the padding and keeps the rest.
struct Lists {
  std::vector<int32_t> padded;
  int64_t shape[4] = {1, 1, 1, 1};
  std::vector<int64_t> offsets;
  std::vector<int32_t> columns;
  IndexLists view;

  Lists(const Case& c, uint32_t seed) {
    const Problem& p = c.p;
    shape[0] = c.form == Form::kPerBatch ? p.batch : 1;
    shape[1] = c.form == Form::kPerHead ? p.heads_q : 1;
    shape[2] = p.nq, shape[3] = c.list;
    std::mt19937 rng(seed);
    std::vector<int32_t> keys(p.nk);
    std::iota(keys.begin(), keys.end(), 0);
    const int64_t rows = shape[0] * shape[1] * shape[2];
    for (int64_t r = 0; r < rows; ++r) {
      std::shuffle(keys.begin(), keys.end(), rng);
      for (int64_t e = 0; e < c.list; ++e) {
        const bool pad = r % p.nq == 3 || rng() % 5 == 0 || e >= p.nk;
        padded.push_back(pad ? -1 : keys[e]);
      }
    }
    if (c.form == Form::kCsr) {
      offsets.push_back(0);
      for (int64_t i = 0; i < p.nq; ++i) {
        for (int64_t e = 0; e < c.list; ++e)
          if (padded[i * c.list + e] >= 0) columns.push_back(padded[i * c.list + e]);
        offsets.push_back(static_cast<int64_t>(columns.size()));
      }
      view = IndexLists::csr(offsets.data(), columns.data());
    } else {
      view = IndexLists::padded_lists(padded.data(), shape);
    }
  }

  bool allows(const Case& c, int64_t b, int64_t h, int64_t i, int64_t j) const {
    const int64_t bb = shape[0] == 1 ? 0 : b, hh = shape[1] == 1 ? 0 : h;
    const int32_t* row = padded.data() + ((bb * shape[1] + hh) * shape[2] + i) * c.list;
    return std::find(row, row + c.list, static_cast<int32_t>(j)) != row + c.list;
  }
};

class IndexAttentionSweep : public ::testing::TestWithParam<Case> {};

TEST_P(IndexAttentionSweep, ForwardMatchesTheReference) {
  const Case c = GetParam();
  const Lists lists(c, 17);
  testing::Inputs in = testing::make_inputs(c.p);
  AttentionArgs a = in.args();
  a.scale = c.p.scale;
  int64_t pairs = 0;
  a.attended_pairs = &pairs;
  {
    const testing::TargetScope on(c.p.target);
    index_attention(a, lists.view);
  }
  AttentionArgs r = a;
  r.out = in.ref_out.view(), r.lse = in.ref_lse.rows_view(), r.attended_pairs = nullptr;
  index_attention_reference(r, lists.view);
  testing::expect_matches_reference(a, r, c.name());
  int64_t listed = 0;
  for (int64_t b = 0; b < c.p.batch; ++b)
    for (int64_t h = 0; h < c.p.heads_q; ++h)
      for (int64_t i = 0; i < c.p.nq; ++i)
        for (int64_t j = 0; j < c.p.nk; ++j) listed += lists.allows(c, b, h, i, j);
  EXPECT_EQ(pairs, listed) << "attended_pairs";
  // Row 3 lists nothing: O = 0, LSE = -inf.
  if (c.p.nq > 3) {
    EXPECT_EQ(in.lse.rows_view().get(0, 0, 3, 0), -INFINITY);
    EXPECT_EQ(in.out.view().get(0, 0, 3, 0), 0.0f);
  }
}

TEST_P(IndexAttentionSweep, BackwardMatchesTheReference) {
  const Case c = GetParam();
  const Lists lists(c, 23);
  const testing::BackwardInputs in = testing::make_backward_inputs(
      c.p, true, [&](const AttentionArgs& a) { index_attention(a, lists.view); });
  testing::Gradients fast = testing::nan_gradients(c.p), ref = testing::nan_gradients(c.p);
  testing::Gradients naive = testing::nan_gradients(c.p);
  {
    const testing::TargetScope on(c.p.target);
    index_attention_backward(in.args(fast), lists.view);
  }
  index_attention_backward_reference(in.args(ref), lists.view);
  const ElementPredicate allow = [&](int64_t b, int64_t h, int64_t i, int64_t j) {
    return lists.allows(c, b, h, i, j);
  };
  attention_backward_reference_f32(in.args(naive), allow);
  const double s = testing::max_abs_score_sum(in.forward);
  testing::expect_gradient_close(fast.dq, ref.dq, naive.dq, s, c.name() + " dQ");
  testing::expect_gradient_close(fast.dk, ref.dk, naive.dk, s, c.name() + " dK");
  testing::expect_gradient_close(fast.dv, ref.dv, naive.dv, s, c.name() + " dV");
}

std::vector<Case> sweep() {
  std::vector<Case> cases;
  auto add = [&](int64_t nq, int64_t nk, int64_t dim, int64_t dim_v, int64_t list, Form form,
                 int64_t heads_q = 2, int64_t heads_kv = 1, DType dtype = DType::kF32) {
    Case c;
    c.p.batch = 2, c.p.heads_q = heads_q, c.p.heads_kv = heads_kv, c.p.nq = nq, c.p.nk = nk;
    c.p.dim = dim, c.p.dim_v = dim_v, c.p.dtype = dtype, c.list = list, c.form = form;
    c.p.seed = static_cast<uint64_t>(nq * 31 + nk + list);
    cases.push_back(c);
  };
  add(1, 1, 1, 1, 1, Form::kShared);
  add(7, 63, 7, 9, 5, Form::kShared);
  add(65, 65, 64, 64, 32, Form::kPerHead, 4, 2);
  add(100, 130, 65, 33, 70, Form::kPerBatch);
  add(63, 200, 130, 64, 16, Form::kCsr, 3, 3);
  add(40, 50, 64, 64, 32, Form::kShared, 2, 1, DType::kF16);
  add(40, 50, 48, 16, 9, Form::kPerHead, 2, 2, DType::kBF16);
  add(10, 4, 16, 16, 8, Form::kShared);  // K > Nk: the extra slots are padding
  std::vector<Case> out;
  for (int64_t target : testing::simd_targets())
    for (Case c : cases) {
      c.p.target = target;
      out.push_back(c);
    }
  return out;
}

INSTANTIATE_TEST_SUITE_P(Shapes, IndexAttentionSweep, ::testing::ValuesIn(sweep()),
                         [](const auto& info) { return info.param.name(); });

// The lists as an element mask for the block-sparse kernel: the same attention.
class ListPredicate : public TilePredicate {
 public:
  ListPredicate(const Case& c, const Lists& lists) : c_(c), lists_(lists) {}
  void fill(int64_t b, int64_t h, int64_t q0, int64_t nq, int64_t k0, int64_t nk, uint8_t* allow,
            int64_t ld) const override {
    for (int64_t i = 0; i < nq; ++i)
      for (int64_t j = 0; j < nk; ++j) allow[i * ld + j] = lists_.allows(c_, b, h, q0 + i, k0 + j);
  }

 private:
  const Case& c_;
  const Lists& lists_;
};

TEST(IndexAttention, EqualsTheBlockSparseKernelUnderTheSameMask) {
  Case c;
  c.p.batch = 2, c.p.heads_q = 4, c.p.heads_kv = 2, c.p.nq = 150, c.p.nk = 170;
  c.p.dim = 64, c.p.dim_v = 48, c.list = 24, c.form = Form::kPerHead;
  const Lists lists(c, 5);
  testing::Inputs in = testing::make_inputs(c.p);
  AttentionArgs a = in.args();
  index_attention(a, lists.view);
  BlockMaskShape shape{c.p.nq, c.p.nk, 1, c.p.heads_q, 64, 64};
  const BlockMask mask =
      block_mask_from_predicate(shape, std::make_shared<ListPredicate>(c, lists));
  AttentionArgs m = a;
  m.out = in.ref_out.view(), m.lse = in.ref_lse.rows_view();
  attention(m, mask);
  testing::expect_matches_reference(a, m, "index lists vs block-sparse mask");
}

TEST(IndexAttention, BackwardDoesNotDependOnTheThreadCount) {
  Case c;
  c.p.batch = 1, c.p.heads_q = 4, c.p.heads_kv = 2, c.p.nq = 300, c.p.nk = 300, c.list = 32;
  c.form = Form::kPerHead;
  const Lists lists(c, 9);
  const testing::BackwardInputs in = testing::make_backward_inputs(
      c.p, false, [&](const AttentionArgs& a) { index_attention(a, lists.view); });
  testing::Gradients one = testing::nan_gradients(c.p), two = testing::nan_gradients(c.p);
  BackwardArgs a1 = in.args(one), a2 = in.args(two);
  a1.forward.threads = 1, a2.forward.threads = 2;
  index_attention_backward(a1, lists.view);
  index_attention_backward(a2, lists.view);
  for (auto [x, y] : {std::pair{&one.dq, &two.dq}, {&one.dk, &two.dk}, {&one.dv, &two.dv}})
    for (int64_t e = 0; e < x->numel(); ++e) ASSERT_EQ(x->f32()[e], y->f32()[e]) << e;
}

TEST(IndexAttention, BadListsNameIndices) {
  Problem p;
  p.heads_q = 2, p.nq = 4, p.nk = 6, p.dim = 8, p.dim_v = 8;
  testing::Inputs in = testing::make_inputs(p);
  const AttentionArgs a = in.args();
  auto expect_error = [&](const IndexLists& lists, const std::string& argument,
                          const std::string& part, const AttentionArgs& args) {
    try {
      index_attention(args, lists);
      ADD_FAILURE() << "no error for " << part;
    } catch (const Error& e) {
      EXPECT_EQ(e.argument(), argument) << e.what();
      EXPECT_NE(std::string(e.what()).find(part), std::string::npos) << e.what();
    }
  };
  std::vector<int32_t> rows = {0, 1, -1, 2, 3, 3, 5, -1, 0, 1, 2, 3, 4, 5, 0, 1};
  const int64_t shape[4] = {1, 1, 4, 4};
  expect_error(IndexLists::padded_lists(rows.data(), shape), "indices", "lists key 3 twice", a);
  rows[5] = 6;
  expect_error(IndexLists::padded_lists(rows.data(), shape), "indices", "is 6, outside", a);
  rows[5] = -2;
  expect_error(IndexLists::padded_lists(rows.data(), shape), "indices", "is -2, outside", a);
  rows[5] = 4;
  const int64_t wrong[4] = {1, 3, 4, 4};  // heads must be 1 or Hq = 2
  expect_error(IndexLists::padded_lists(rows.data(), wrong), "indices", "must be [", a);
  const std::vector<int64_t> offsets = {0, 2, 1, 3, 3};
  expect_error(IndexLists::csr(offsets.data(), rows.data()), "indices", "must not decrease", a);
  AttentionArgs causal = a;
  causal.causal = true;
  expect_error(IndexLists::padded_lists(rows.data(), shape), "causal", "no causal flag", causal);
  index_attention(a, IndexLists::padded_lists(rows.data(), shape));  // now valid
}

// --- knn ---

std::vector<int32_t> brute_force_knn(const std::vector<float>& points, int64_t k) {
  const int64_t n = static_cast<int64_t>(points.size() / 3);
  std::vector<int32_t> out;
  for (int64_t i = 0; i < n; ++i) {
    std::vector<std::pair<double, int32_t>> all;
    for (int64_t j = 0; j < n; ++j) {
      double d2 = 0.0;
      for (int a = 0; a < 3; ++a) {
        const double diff = double(points[i * 3 + a]) - points[j * 3 + a];
        d2 += diff * diff;
      }
      all.push_back({d2, static_cast<int32_t>(j)});
    }
    std::sort(all.begin(), all.end());
    for (int64_t e = 0; e < k; ++e) out.push_back(e < n ? all[e].second : -1);
  }
  return out;
}

TEST(Knn, EqualsABruteForceSort) {
  std::mt19937 rng(3);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::uniform_int_distribution<int> cell(0, 4);
  for (int64_t n : {0, 1, 5, 17, 100, 2000})
    for (int64_t k : {1, 8, 33})
      for (bool grid : {false, true}) {  // grid: integer coordinates, many exact ties
        std::vector<float> points(3 * n);
        for (float& x : points) x = grid ? float(cell(rng)) : normal(rng);
        if (n > 4) points[3] = points[0], points[4] = points[1], points[5] = points[2];
        std::vector<int32_t> fast(n * k, -7);
        knn(points.data(), n, k, fast.data());
        ASSERT_EQ(fast, brute_force_knn(points, k)) << "n=" << n << " k=" << k << " grid=" << grid;
      }
}

TEST(Knn, ErrorsNameTheArgument) {
  std::vector<float> points = {0, 0, 0, 1, NAN, 0};
  std::vector<int32_t> out(4);
  try {
    knn(points.data(), 2, 2, out.data());
    ADD_FAILURE() << "no error for NaN";
  } catch (const Error& e) {
    EXPECT_EQ(e.argument(), "points");
    EXPECT_NE(std::string(e.what()).find("[1,1]"), std::string::npos) << e.what();
  }
  points[4] = 0;
  try {
    knn(points.data(), 2, 0, out.data());
    ADD_FAILURE() << "no error for k = 0";
  } catch (const Error& e) {
    EXPECT_EQ(e.argument(), "k");
  }
}

}  // namespace
}  // namespace attnkit
