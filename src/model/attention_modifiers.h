// How the model's attention scores are changed (issue 14), on every layer's attention call
// through AttentionArgs' score modifiers (include/attnkit/attention.h):
//
// - Selective Attention (Leviathan et al., NeurIPS 2024; the released code
//   umich-sota/selective_attention): logit_ij = (q_i . k_j / sqrt(d)) * (1 + s_l ln(i)), i the
//   1-based position of the query, one s per layer (the code's s = exp(-exp(beta_l)), trained) or
//   one shared by all layers (here: given, training-free). Decode uses the query's absolute
//   position n_past + t, also after a cache policy has evicted tokens. The reference code
//   multiplies by a buffer of the new rows' own indices, so in KV-cache decode i = 1 and the
//   temperature silently disappears; we do not copy that.
// - TempScale (length-induced embedding collapse, ACL 2025, Yuqi-Zhou/Length_Collapse): one
//   temperature T on every layer's softmax, softmax(q . k / (sqrt(d) T)); additive biases would
//   be divided by T too, and SmolLM2 has none (RoPE rotates, it adds nothing).
// - Head masks (AttentionInfluence, 2025; no official code): the listed (layer, head) pairs
//   become uniform causal attention (the prefix mean of V) or zero output.
// - MoH (mixture-of-head attention, Jin et al. 2024, SkyworkAI/MoH): each token's heads are
//   gated. MoH-LLaMA3's parameter-free router (a training-free model has no router weights):
//   r_h = ||q_h|| / std over the layer's heads of ||q||, p = softmax over the routed heads, the
//   top k routed heads kept; gate = 1 (binary, the default) or p renormalised over the kept
//   heads times k (weighted, the code's g_r); the first `moh_shared` heads of each layer always
//   kept with gate 1; the rest 0 (and a kernel tile whose rows all have gate 0 is skipped).
//   Binary by default because SmolLM2 was not trained with gates: weighted gates with every head
//   kept give perplexity 176,819 against 28.35 on the essays at 512 tokens (the softmax of
//   ||q|| / std is peaked), where binary gates with every head kept are dense bit for bit.
// - ACT (include/attnkit/act.h): hidden sinks calibrated in every head of layers >= act_from
//   (the official code: a searched head subset of layers 2..30 of Llama-2-7B; the search needs
//   its task data, so every head here). A step of several tokens detects the sinks from its own
//   map; a decode step reuses the last detection of its layer (key indices of the full cache).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "attnkit/act.h"
#include "attnkit/attention.h"

namespace attnkit::model {

struct HeadRef {
  int64_t layer = 0, head = 0;
  bool operator==(const HeadRef& o) const { return layer == o.layer && head == o.head; }
};

struct AttentionModifiers {
  // Selective Attention's s: one value for every layer, or one per layer (then `layers` values).
  std::vector<float> selective;
  float temperature = 1.0f;  // TempScale's T (> 0)
  std::vector<HeadRef> masked_heads;
  HeadMode mask_mode = HeadMode::kUniform;  // kUniform or kZero
  int64_t moh_top = 0;                      // routed heads kept per token (0: MoH off)
  int64_t moh_shared = 0;                   // heads 0 .. moh_shared - 1 always kept
  bool moh_weighted = false;                // binary by default: see the header
  bool act = false;
  ActOptions act_options;  // tau, beta (sinks: detected)
  int64_t act_from = 2;    // first calibrated layer

  bool any() const;
  // s of layer l (0 when none is set).
  float selective_of(int64_t l) const;
  // "text" forms, errors naming `argument`: numbers "0.05" or "0.01,0.02,..." (selective, and the
  // collapse lengths); heads "L.H,L.H"; the mode "uniform" or "zero".
  static std::vector<float> parse_numbers(const std::string& text, const std::string& argument);
  static std::vector<HeadRef> parse_heads(const std::string& text, const std::string& argument);
  static HeadMode parse_mask_mode(const std::string& text, const std::string& argument);
  // "top=K[,shared=S][,gates=weighted|binary]": sets the moh_ fields.
  void parse_moh(const std::string& text, const std::string& argument);
  // "on" (the defaults) or "tau=0.1,beta=0.4,from=2" (any of them): sets act, act_options and
  // act_from.
  void parse_act(const std::string& text, const std::string& argument);
  // The heads as "L.H,L.H" (the inverse of parse_heads).
  static std::string heads_text(const std::vector<HeadRef>& heads);
  // MoH's gates of T tokens: q [T, heads * head_dim] -> gates [heads][T] (the output_gate layout
  // of a [1, heads, T, 1] tensor).
  void moh_gates(const float* q, int64_t tokens, int64_t heads, int64_t head_dim,
                 float* gates) const;
  // Throws Error(argument, ...) unless the values fit a model of `layers` x `heads`: s finite and
  // >= 0, one or `layers` values; T finite and > 0; heads in range and distinct; act_from a
  // layer; 1 <= moh_top <= heads - moh_shared when MoH is on.
  void validate(int64_t layers, int64_t heads) const;
};

}  // namespace attnkit::model
