// Index-list attention on the CPU (the rule is in include/attnkit/index_attention.h).
//
// Forward, per row, in one dispatch (cpu::gathered_attention_row): the listed keys' scores, their
// softmax, the weighted sum of the listed values; rows are independent, scheduled in static
// chunks.
// Backward: pass 1 per row recomputes P from the LSE, dP = dO . V_j and dS = P (dP - D) with
// D = dO . O - dLSE, writes dQ = scale * sum dS K_j and keeps P and dS per listed pair; pass 2
// per key walks the lists transposed (heads of the GQA group in order, rows ascending) for
// dV = sum P dO_i and dK = scale * sum dS Q_i. Extra memory: two floats per listed pair and the
// transposed lists, O(pairs); nothing N x N.
#include <cmath>
#include <limits>
#include <string>
#include <vector>

#include "attnkit/error.h"
#include "attnkit/index_attention.h"
#include "core/attention_args.h"
#include "core/memory.h"
#include "kernels/cpu/gather_ops.h"
#include "kernels/cpu/planner_ops.h"
#include "operators/index_lists.h"

namespace attnkit {
namespace {

// The rows of x[b, h] as a gather source.
cpu::RowSource source(const TensorView& x, int64_t b, int64_t h) {
  const auto* base = static_cast<const std::byte*>(x.data) + dtype_size(x.dtype) * x.offset(b, h, 0, 0);
  return {base, x.dtype, x.stride[2], x.shape[3]};
}

// The valid (non-padding) entries of a row: key indices and their slots.
int64_t compact(const ListRow& r, int32_t* keys, int64_t* slots) {
  int64_t m = 0;
  for (int64_t e = 0; e < r.count; ++e) {  // branch-free: padding may stand anywhere
    const int32_t j = r.data[e * r.stride];
    keys[m] = j;
    if (slots) slots[m] = r.first + e;
    m += j >= 0;
  }
  return m;
}

// Rows (b, h, i) in parallel, `body(b, h, i, scratch)` with per-thread scratch made by `make`.
template <typename Make, typename Body>
void for_each_row(int64_t batch, int64_t heads, int64_t nq, int threads, Make&& make,
                  Body&& body) {
  const int64_t rows = batch * heads * nq;
#pragma omp parallel num_threads(effective_threads(threads))
  {
    auto scratch = make();
#pragma omp for schedule(static, 64)
    for (int64_t r = 0; r < rows; ++r) body(r / (heads * nq), (r / nq) % heads, r % nq, scratch);
  }
}

// One row's query (scaled), dO, scores or P, dP or dS, listed keys and their slots.
struct RowScratch {
  std::vector<float> q, dout, p, dp;
  std::vector<int32_t> keys;
  std::vector<int64_t> slots;
  RowScratch(int64_t dim, int64_t dim_v, int64_t longest)
      : q(dim), dout(dim_v), p(longest), dp(longest), keys(longest), slots(longest) {}
};

}  // namespace

void index_attention(const AttentionArgs& args, const IndexLists& indices) {
  validate(args);
  check_index_attention_flags(args);
  const TensorView q = args.q, k = args.k, v = args.v;
  const int64_t batch = q.shape[0], heads = q.shape[1], nq = q.shape[2], nk = k.shape[2];
  const int64_t dim = q.shape[3], dim_v = v.shape[3], group = heads / k.shape[1];
  const ListSet lists(indices, batch, heads, nq, nk, args.threads);
  const float scale_log2e = effective_scale(args) * 1.4426950408889634f;  // scores in log2 units
  int64_t pairs = 0;
  for_each_row(
      batch, heads, nq, args.threads, [&] { return RowScratch(dim, dim_v, lists.longest()); },
      [&](int64_t b, int64_t h, int64_t i, RowScratch& w) {
        const int64_t m = compact(lists.row(b, h, i), w.keys.data(), nullptr);
        float* out = args.out.row<float>(b, h, i);
        float lse = -std::numeric_limits<float>::infinity();
        if (m == 0) {
          std::fill(out, out + dim_v, 0.0f);
        } else {
          cpu::load_rows(q, b, h, i, 1, w.q.data());
          lse = cpu::gathered_attention_row(w.q.data(), scale_log2e, source(k, b, h / group),
                                            source(v, b, h / group), w.keys.data(), m, w.p.data(),
                                            out);
        }
        if (!args.lse.empty()) *args.lse.row<float>(b, h, i) = lse;
        if (args.attended_pairs) {
#pragma omp atomic
          pairs += m;
        }
      });
  if (args.attended_pairs) *args.attended_pairs += pairs;
}

void index_attention_backward(const BackwardArgs& g, const IndexLists& indices) {
  validate(g);
  const AttentionArgs& f = g.forward;
  check_index_attention_flags(f);
  const int64_t batch = f.q.shape[0], heads = f.q.shape[1], nq = f.q.shape[2];
  const int64_t heads_kv = f.k.shape[1], nk = f.k.shape[2], group = heads / heads_kv;
  const int64_t dim = f.q.shape[3], dim_v = f.v.shape[3];
  const ListSet lists(indices, batch, heads, nq, nk, f.threads);
  const float scale = effective_scale(f);
  const int64_t entries = lists.entries();
  check_memory(2.0 * 4.0 * double(batch * heads) * double(entries) +
                   double(lists.batches() * lists.heads()) * (12.0 * double(entries) + 8.0 * nk),
               "indices", "index-list attention's backward (two floats per listed pair)");
  // P and dS per (batch, head, listed entry).
  std::vector<float> prob(batch * heads * entries), dscore(batch * heads * entries);

  for_each_row(
      batch, heads, nq, f.threads, [&] { return RowScratch(dim, dim_v, lists.longest()); },
      [&](int64_t b, int64_t h, int64_t i, RowScratch& w) {
        float* dq = g.dq.row<float>(b, h, i);
        const float lse = *f.lse.row<float>(b, h, i);
        const int64_t m = compact(lists.row(b, h, i), w.keys.data(), w.slots.data());
        if (m == 0 || !std::isfinite(lse)) {
          std::fill(dq, dq + dim, 0.0f);
          return;
        }
        cpu::load_rows(f.q, b, h, i, 1, w.q.data());
        cpu::load_rows(g.dout, b, h, i, 1, w.dout.data());
        const float* out = f.out.row<float>(b, h, i);
        double delta = g.dlse.empty() ? 0.0 : -double(*g.dlse.row<float>(b, h, i));
        for (int64_t e = 0; e < dim_v; ++e) delta += double(w.dout[e]) * out[e];
        // P = exp(s - LSE), dP = dO . V_j, then dS = P (dP - D) in place of dP.
        cpu::gathered_dots(w.q.data(), scale, source(f.k, b, h / group), w.keys.data(), m, w.p.data());
        cpu::exp_shift_sum(w.p.data(), m, lse, true);
        cpu::gathered_dots(w.dout.data(), 1.0f, source(f.v, b, h / group), w.keys.data(), m, w.dp.data());
        float* prob_row = prob.data() + (b * heads + h) * entries;
        float* ds_row = dscore.data() + (b * heads + h) * entries;
        for (int64_t e = 0; e < m; ++e) {
          w.dp[e] = w.p[e] * (w.dp[e] - static_cast<float>(delta));
          prob_row[w.slots[e]] = w.p[e];
          ds_row[w.slots[e]] = w.dp[e];
        }
        cpu::gathered_axpy(w.dp.data(), w.keys.data(), m, source(f.k, b, h / group), dq, false);
        for (int64_t c = 0; c < dim; ++c) dq[c] *= scale;
      });

  // Pass 2: per key, over the heads of its group and the rows that list it.
  std::vector<TransposedLists> transposed(lists.batches() * lists.heads());
  for (int64_t x = 0; x < static_cast<int64_t>(transposed.size()); ++x)
    transposed[x] = transpose_lists(lists, x / lists.heads(), x % lists.heads(), nq, nk);
  const int64_t keys = batch * heads_kv * nk;
#pragma omp parallel num_threads(effective_threads(f.threads))
  {
    std::vector<float> wp, wds;
    std::vector<int32_t> rows;
#pragma omp for schedule(static, 64)
    for (int64_t r = 0; r < keys; ++r) {
      const int64_t b = r / (heads_kv * nk), kv = (r / nk) % heads_kv, j = r % nk;
      float* dk = g.dk.row<float>(b, kv, j);
      float* dv = g.dv.row<float>(b, kv, j);
      std::fill(dk, dk + dim, 0.0f);
      std::fill(dv, dv + dim_v, 0.0f);
      for (int64_t h = kv * group; h < (kv + 1) * group; ++h) {
        const TransposedLists& t = transposed[(lists.batches() == 1 ? 0 : b) * lists.heads() +
                                              (lists.heads() == 1 ? 0 : h)];
        const int64_t begin = t.start[j], count = t.start[j + 1] - begin;
        if (count == 0) continue;
        const float* prob_set = prob.data() + (b * heads + h) * entries;
        const float* ds_set = dscore.data() + (b * heads + h) * entries;
        wp.resize(count), wds.resize(count), rows.resize(count);
        for (int64_t e = 0; e < count; ++e) {
          rows[e] = t.rows[begin + e];
          wp[e] = prob_set[t.position[begin + e]];
          wds[e] = ds_set[t.position[begin + e]];
        }
        cpu::gathered_axpy(wp.data(), rows.data(), count, source(g.dout, b, h), dv, true);
        cpu::gathered_axpy(wds.data(), rows.data(), count, source(f.q, b, h), dk, true);
      }
      for (int64_t c = 0; c < dim; ++c) dk[c] *= scale;
    }
  }
}

}  // namespace attnkit
