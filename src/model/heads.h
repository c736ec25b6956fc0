// Head-level analyses of the model (AttentionInfluence, 2025; no official code, see
// ../shared/research/seed_more.md section 6):
//
// - Retrieval score of every head (Wu et al. 2024, "Retrieval Head Mechanistically Explains
//   Long-Context Factuality", the score AttentionInfluence detects its heads with), on a
//   synthetic copy task instead of a natural haystack: each trial is `length` random tokens
//   A[0..n) followed by the same tokens again, teacher-forced in one prefill. At position n + t of
//   the repeat the model should predict A[t + 1]; a head retrieves there when the model's
//   argmax prediction is A[t + 1] (it copies) and the head's highest-scoring key lies in the
//   first copy on a token equal to A[t + 1]. score = retrievals / (n - 1) predictions, averaged
//   over trials. Random tokens (ids in [min(1000, V / 4), min(40000, V)), seeded) leave copying as
//   the only way to predict the repeat.
// - Influence of a document: AI = (L_masked - L_base) / L_base, L the mean token NLL of the
//   document with the given heads masked (uniform or zero) and without; higher means the text
//   leans more on those heads. Documents here are the text's consecutive windows of ctx tokens.
#pragma once

#include <cstdint>
#include <vector>

#include "model/llama.h"

namespace attnkit::model {

struct HeadScore {
  int64_t layer = 0, head = 0;
  double score = 0.0;
};
// Every head's retrieval score, sorted by score (highest first; ties by layer, head). Runs
// without the session's modifiers and restores them.
std::vector<HeadScore> retrieval_scores(LlamaSession& session, int64_t length, int64_t trials,
                                        uint64_t seed);

struct DocumentInfluence {
  int64_t index = 0, start = 0;  // window index and first token
  double base_nll = 0.0, masked_nll = 0.0, score = 0.0;
};
// Per window of ctx tokens (at most max_windows, 0 = all): the influence of masking `heads` in
// `mode`; in text order. The session's modifiers are replaced.
std::vector<DocumentInfluence> document_influence(LlamaSession& session,
                                                  const std::vector<int32_t>& tokens, int64_t ctx,
                                                  int64_t max_windows,
                                                  const std::vector<HeadRef>& heads, HeadMode mode);

}  // namespace attnkit::model
