// Quantized mat-mul (Highway, dispatched) against the scalar oracle over odd shapes and every
// supported weight type, plus the property the model relies on: a token's products do not depend
// on how many tokens share the call (prefill == decode, bitwise).
#include "model/qmatmul.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <random>
#include <vector>

#include "hwy/targets.h"
#include "model/ggml_types.h"

namespace attnkit::model {
namespace {

struct Weights {
  std::vector<uint8_t> bytes;
  QMatrix matrix;
};

Weights make_weights(GgmlType type, int64_t rows, int64_t cols, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.0f, 0.5f);
  std::vector<float> values(rows * cols);
  for (auto& v : values) v = normal(rng);
  const GgmlTypeInfo& info = *ggml_type_info(static_cast<uint32_t>(type));
  const int64_t row_bytes = ggml_row_bytes(info, cols);
  Weights w;
  if (type == GgmlType::kF32 || type == GgmlType::kF16 || type == GgmlType::kQ8_0 ||
      type == GgmlType::kQ4_0 || type == GgmlType::kQ4_1) {
    w.bytes = quantize_rows(type, values.data(), rows, cols);
  } else {  // K-quants: random bytes with sane fp16 scales are valid blocks
    w.bytes.resize(rows * row_bytes);
    for (uint8_t& byte : w.bytes) byte = static_cast<uint8_t>(rng());
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t b = 0; b < cols / 256; ++b) {
        const uint16_t d = float_to_fp16(0.01f), m = float_to_fp16(0.02f);
        uint8_t* block = &w.bytes[r * row_bytes + b * info.type_size];
        if (type == GgmlType::kQ6_K) {
          std::memcpy(block + 208, &d, 2);
        } else {
          std::memcpy(block, &d, 2);
          std::memcpy(block + 2, &m, 2);
        }
      }
  }
  w.matrix = {type, w.bytes.data(), rows, cols, row_bytes};
  return w;
}

// Float error bound of one dot product of length k: the fast path rounds each weight product and
// sum in float; an (eps * k) bound on sum |w x| is the textbook worst case for recursive summation.
double bound(const QMatrix& w, const float* x, int64_t r) {
  std::vector<float> row(w.cols);
  dequantize_row(w.type, w.row(r), row.data(), w.cols);
  double magnitude = 0.0;
  for (int64_t k = 0; k < w.cols; ++k) magnitude += std::fabs(row[k] * x[k]);
  return 2.0 * w.cols * 1.1920929e-7 * magnitude + 1e-30;
}

void check_against_reference(GgmlType type, int64_t rows, int64_t cols, int64_t tokens,
                             int threads) {
  SCOPED_TRACE(std::string(ggml_type_info(static_cast<uint32_t>(type))->name) + " rows " +
               std::to_string(rows) + " cols " + std::to_string(cols) + " tokens " +
               std::to_string(tokens) + " threads " + std::to_string(threads));
  const Weights w = make_weights(type, rows, cols, static_cast<uint32_t>(rows * 7 + cols + tokens));
  std::mt19937 rng(42);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  const int64_t ldx = cols + 3, ldy = rows + 5;  // padded strides
  std::vector<float> x(tokens * ldx);
  for (auto& v : x) v = normal(rng);
  std::vector<float> fast(tokens * ldy, NAN), ref(tokens * ldy, NAN);
  matmul(w.matrix, x.data(), tokens, ldx, fast.data(), ldy, threads);
  matmul_reference(w.matrix, x.data(), tokens, ldx, ref.data(), ldy);
  int failures = 0;
  for (int64_t t = 0; t < tokens; ++t)
    for (int64_t r = 0; r < rows; ++r) {
      const double err = std::fabs(fast[t * ldy + r] - ref[t * ldy + r]);
      const double tol = bound(w.matrix, &x[t * ldx], r);
      if (!(err <= tol) && failures++ < 5)
        ADD_FAILURE() << "token " << t << " row " << r << ": fast " << fast[t * ldy + r]
                      << " reference " << ref[t * ldy + r] << " (tolerance " << tol << ")";
    }
  EXPECT_EQ(failures, 0);
  // Padding between rows of y is never written.
  for (int64_t t = 0; t < tokens; ++t)
    for (int64_t r = rows; r < ldy; ++r) EXPECT_TRUE(std::isnan(fast[t * ldy + r]));
}

TEST(ModelQMatmul, MatchesReferenceOverOddShapes) {
  for (GgmlType type :
       {GgmlType::kQ4_1, GgmlType::kQ8_0, GgmlType::kQ4_0, GgmlType::kF32, GgmlType::kF16})
    for (int64_t rows : {1, 3, 4, 7, 65})
      for (int64_t cols : {32, 96, 576})
        for (int64_t tokens : {1, 2, 5, 7, 65, 130})
          check_against_reference(type, rows, cols, tokens, 1);
}

// Every SIMD target compiled in and supported here (AVX-512 uses 4 x 4 register tiles, AVX2 and
// below 2 x 3), with the panel path (many tokens) and the register path (few).
TEST(ModelQMatmul, EveryDispatchTargetMatchesReference) {
  for (int64_t target : hwy::SupportedAndGeneratedTargets()) {
    SCOPED_TRACE(hwy::TargetName(target));
    hwy::SetSupportedTargetsForTest(target);
    for (GgmlType type : {GgmlType::kQ4_1, GgmlType::kQ8_0, GgmlType::kQ4_0})
      for (int64_t tokens : {1, 5, 70}) check_against_reference(type, 7, 96, tokens, 1);
  }
  hwy::SetSupportedTargetsForTest(0);
}

TEST(ModelQMatmul, KQuantsTakeTheRowPath) {
  for (GgmlType type : {GgmlType::kQ4_K, GgmlType::kQ6_K})
    for (int64_t tokens : {1, 7}) check_against_reference(type, 5, 512, tokens, 2);
}

TEST(ModelQMatmul, ThreadCountsAgree) {
  for (int threads : {1, 2, 3, 8}) check_against_reference(GgmlType::kQ4_1, 67, 192, 9, threads);
}

TEST(ModelQMatmul, TokenResultsDoNotDependOnBatch) {
  for (GgmlType type : {GgmlType::kQ4_1, GgmlType::kQ8_0}) {
    const int64_t rows = 36, cols = 576, tokens = 70;
    const Weights w = make_weights(type, rows, cols, 9);
    std::mt19937 rng(5);
    std::normal_distribution<float> normal(0.0f, 1.0f);
    std::vector<float> x(tokens * cols);
    for (auto& v : x) v = normal(rng);
    std::vector<float> batch(tokens * rows), single(rows);
    matmul(w.matrix, x.data(), tokens, cols, batch.data(), rows, 2);
    for (int64_t t = 0; t < tokens; ++t) {
      matmul(w.matrix, &x[t * cols], 1, cols, single.data(), rows, 1);
      ASSERT_EQ(std::memcmp(single.data(), &batch[t * rows], rows * sizeof(float)), 0)
          << "token " << t;
    }
  }
}

}  // namespace
}  // namespace attnkit::model
