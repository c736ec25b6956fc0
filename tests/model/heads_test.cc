// Head analyses on the tiny model: retrieval scores cover every head, sorted, in [0, 1],
// reproducible by seed (their direct count is checked on the real model, which copies, in
// real_test.cc); document influence
// is 0 with no heads masked, per document (independent of the other windows), and restores the
// session's modifiers.
#include "model/heads.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <random>
#include <vector>

#include "attnkit/error.h"
#include "model/evaluate.h"
#include "support/tiny_model.h"
#include "support/tiny_reference.h"

namespace attnkit::model {
namespace {

TEST(Heads, RetrievalScoresCoverEveryHeadSortedAndReproducible) {
  LlamaSession session(tiny().model, 128, 2);
  AttentionModifiers kept;
  kept.selective = {0.1f};
  session.set_modifiers(kept);
  const std::vector<HeadScore> a = retrieval_scores(session, 40, 3, 5);
  const std::vector<HeadScore> b = retrieval_scores(session, 40, 3, 5);
  ASSERT_EQ(a.size(), size_t(kLayers * kHeads));
  for (size_t x = 0; x < a.size(); ++x) {
    EXPECT_EQ(a[x].layer, b[x].layer);
    EXPECT_EQ(a[x].head, b[x].head);
    EXPECT_EQ(a[x].score, b[x].score);
    EXPECT_GE(a[x].score, 0.0);
    EXPECT_LE(a[x].score, 1.0);
    if (x) {
      EXPECT_GE(a[x - 1].score, a[x].score);
    }
  }
  EXPECT_EQ(session.modifiers().selective, kept.selective) << "modifiers restored";
  EXPECT_THROW(retrieval_scores(session, 65, 1, 0), Error);  // 2 * 65 > max_context
}

TEST(Heads, DocumentInfluenceIsZeroUnmaskedAndPerDocument) {
  const std::vector<int32_t> tokens = random_byte_tokens(96, 4);
  LlamaSession session(tiny().model, 32, 2);
  for (const auto& d : document_influence(session, tokens, 32, 0, {}, HeadMode::kZero))
    EXPECT_EQ(d.score, 0.0);
  const std::vector<HeadRef> heads = {{1, 0}};
  const auto all = document_influence(session, tokens, 32, 0, heads, HeadMode::kUniform);
  ASSERT_EQ(all.size(), 3u);
  const std::vector<int32_t> middle(tokens.begin() + 32, tokens.begin() + 64);
  const auto alone = document_influence(session, middle, 32, 0, heads, HeadMode::kUniform);
  EXPECT_EQ(alone[0].base_nll, all[1].base_nll);
  EXPECT_EQ(alone[0].masked_nll, all[1].masked_nll);
  EXPECT_NE(all[1].score, 0.0);
  EXPECT_NEAR(all[1].score, (all[1].masked_nll - all[1].base_nll) / all[1].base_nll, 1e-15);
  EXPECT_EQ(all[2].start, 64);
}

}  // namespace
}  // namespace attnkit::model
