// Fuzz target: index-list attention's key lists, outside input from Python or C++ callers.
// Input: 4 bytes of shape (Nq 1-48, Nk 1-48, K 0-15, and the form: padded shared / per head / per
// batch, or CSR), then int32 values (little-endian) for the lists (and CSR offsets first), any
// values, so out-of-range keys, duplicates, negative padding and broken offsets all occur. Then
// index_attention and its backward on small random Q, K, V (batch 2, heads 2 over 1).
// Property: a clean Error, or outputs that are finite with LSE finite or -inf.
#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

#include "attnkit/index_attention.h"
#include "eval/inputs.h"
#include "fuzz_support.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace attnkit;
  if (size < 4) return 0;
  const int64_t nq = 1 + data[0] % 48, nk = 1 + data[1] % 48, k = data[2] % 16, form = data[3] % 4;
  std::vector<int32_t> words((size - 4) / 4);
  if (!words.empty()) std::memcpy(words.data(), data + 4, words.size() * 4);
  const int64_t batch = 2, heads = 2;
  const int64_t shape[4] = {form == 2 ? batch : 1, form == 1 ? heads : 1, nq, k};
  std::vector<int32_t> padded(shape[0] * shape[1] * nq * k, -1);
  std::vector<int64_t> offsets(nq + 1, 0);
  std::vector<int32_t> columns;
  size_t next = 0;
  auto word = [&] { return next < words.size() ? words[next++] : -1; };
  IndexLists lists;
  if (form == 3) {
    for (int64_t i = 0; i <= nq; ++i) offsets[i] = i == 0 ? word() % 64 : offsets[i - 1] + word() % 8;
    const int64_t total = std::max<int64_t>(0, std::min<int64_t>(offsets[nq], 1024));
    for (int64_t e = 0; e < total; ++e) columns.push_back(word());
    if (offsets[nq] != total) offsets[nq] = total;  // the columns array holds exactly nnz
    lists = IndexLists::csr(offsets.data(), columns.data());
  } else {
    for (int32_t& x : padded) x = word();
    lists = IndexLists::padded_lists(padded.data(), shape);
  }
  const Tensor q = random_normal({batch, heads, nq, 8}, DType::kF32, 1);
  const Tensor key = random_normal({batch, 1, nk, 8}, DType::kF32, 2);
  const Tensor v = random_normal({batch, 1, nk, 4}, DType::kF32, 3);
  Tensor out({batch, heads, nq, 4}, DType::kF32), lse({batch, heads, nq}, DType::kF32);
  AttentionArgs a;
  a.q = q.view(), a.k = key.view(), a.v = v.view(), a.out = out.view(), a.lse = lse.rows_view();
  a.threads = 1;
  try {
    index_attention(a, lists);
  } catch (const Error& e) {
    fuzz::expect_clean_message(e.what());
    return 0;
  }
  for (int64_t i = 0; i < out.numel(); ++i) fuzz::expect(std::isfinite(out.f32()[i]), "finite O");
  for (int64_t i = 0; i < lse.numel(); ++i)
    fuzz::expect(std::isfinite(lse.f32()[i]) || lse.f32()[i] == -INFINITY, "LSE finite or -inf");
  const Tensor dout = random_normal({batch, heads, nq, 4}, DType::kF32, 4);
  Tensor dq({batch, heads, nq, 8}, DType::kF32), dk({batch, 1, nk, 8}, DType::kF32);
  Tensor dv({batch, 1, nk, 4}, DType::kF32);
  BackwardArgs g;
  g.forward = a, g.dout = dout.view(), g.dq = dq.view(), g.dk = dk.view(), g.dv = dv.view();
  index_attention_backward(g, lists);  // the same lists passed the forward's checks
  for (const Tensor* t : {&dq, &dk, &dv})
    for (int64_t i = 0; i < t->numel(); ++i) fuzz::expect(std::isfinite(t->f32()[i]), "finite grads");
  return 0;
}
