// attnkit._ext: the C++ library seen from Python (nanobind). The one binding file.
//
// Arrays arrive as nanobind ndarrays (numpy through the buffer protocol, torch and others through
// DLPack) and are viewed, never copied: shape and strides go straight into TensorViews. Outputs
// are allocated by the Python layer (numpy or torch) and written in place. The GIL is released
// while kernels run. attnkit::Error becomes ValueError ("q: ..."); a dtype that attnkit cannot
// read becomes TypeError naming the argument.
#include <nanobind/nanobind.h>
#include <nanobind/ndarray.h>
#include <nanobind/stl/map.h>
#include <nanobind/stl/optional.h>
#include <nanobind/stl/shared_ptr.h>
#include <nanobind/stl/string.h>
#include <nanobind/stl/vector.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "attnkit/attention.h"
#include "attnkit/block_mask.h"
#include "attnkit/error.h"
#include "attnkit/pattern.h"
#include "attnkit/tensor.h"
#include "ext_views.h"
#include "mask_png.h"
#include "model/evaluate.h"
#include "model/heads.h"
#include "model/llama.h"

namespace nb = nanobind;
using namespace nb::literals;

namespace attnkit::python {
namespace {

// An element mask [B', H', Nq, Nk] (B', H' = 1 or the full size) as a TilePredicate.
class DensePredicate final : public TilePredicate {
 public:
  DensePredicate(std::vector<uint8_t> bits, int64_t batch, int64_t heads, int64_t nq, int64_t nk)
      : bits_(std::move(bits)), batch_(batch), heads_(heads), nq_(nq), nk_(nk) {}
  void fill(int64_t b, int64_t h, int64_t q0, int64_t nq, int64_t k0, int64_t nk, uint8_t* allow,
            int64_t ld) const override {
    const uint8_t* base =
        bits_.data() + ((batch_ == 1 ? 0 : b) * heads_ + (heads_ == 1 ? 0 : h)) * nq_ * nk_;
    for (int64_t i = 0; i < nq; ++i)
      std::memcpy(allow + i * ld, base + (q0 + i) * nk_ + k0, static_cast<size_t>(nk));
  }
  bool same_for_all_heads() const override { return heads_ == 1; }

 private:
  std::vector<uint8_t> bits_;
  int64_t batch_, heads_, nq_, nk_;
};

// The (b, h) lists of `mask`: a broadcast dimension of size 1 answers for every index.
int64_t list_index(int64_t index, int64_t size) { return size == 1 ? 0 : index; }

// ---- attention, its backward, merge, the reference ----

AttentionArgs forward_args(const InArray& q, const InArray& k, const InArray& v,
                           const OutArray& out, const std::optional<OutArray>& lse, float scale,
                           bool causal, int threads, float dropout, uint64_t dropout_seed) {
  AttentionArgs args;
  args.q = view_in(q, "q");
  args.k = view_in(k, "k");
  args.v = view_in(v, "v");
  args.out = view_out(out, "out");
  args.lse = view_out(lse, "lse", true);
  args.scale = scale;
  args.causal = causal;
  args.threads = threads;
  args.dropout = dropout;
  args.dropout_seed = dropout_seed;
  return args;
}

void check_mask_shape(const Mask& m, const AttentionArgs& args) {
  const int64_t nq = args.q.shape[2], nk = args.k.shape[2];
  check(m.plan.nq() == nq && m.plan.nk() == nk, "block_mask",
        "was planned for nq=" + std::to_string(m.plan.nq()) +
            ", nk=" + std::to_string(m.plan.nk()) + " but q and k have " + std::to_string(nq) +
            " and " + std::to_string(nk) + " tokens");
}

void run_attention(const InArray& q, const InArray& k, const InArray& v, const OutArray& out,
                   const std::optional<OutArray>& lse, float scale, bool causal, int threads,
                   float dropout, uint64_t dropout_seed, const Mask* mask, bool check_inputs) {
  const AttentionArgs args =
      forward_args(q, k, v, out, lse, scale, causal, threads, dropout, dropout_seed);
  if (check_inputs) {
    check_finite(args.q, "q");
    check_finite(args.k, "k");
    check_finite(args.v, "v");
  }
  nb::gil_scoped_release release;
  if (!mask) return attention(args);
  check_mask_shape(*mask, args);
  if (mask->needs_pattern()) return mask->pattern->forward(args, mask->plan);
  attention(args, mask->mask());
}

void run_backward(const InArray& q, const InArray& k, const InArray& v, const InArray& out,
                  const InArray& lse, const InArray& dout, const std::optional<InArray>& dlse,
                  const OutArray& dq, const OutArray& dk, const OutArray& dv, float scale,
                  bool causal, int threads, float dropout, uint64_t dropout_seed, const Mask* mask,
                  bool check_inputs) {
  BackwardArgs args;
  AttentionArgs& f = args.forward;
  f.q = view_in(q, "q");
  f.k = view_in(k, "k");
  f.v = view_in(v, "v");
  // The backward reads O and LSE only: the const views are passed as the forward's outputs.
  const TensorView o = view_in(out, "out"), l = view_in(lse, "lse", true);
  static_cast<TensorLayout&>(f.out) = o;
  f.out.data = const_cast<void*>(o.data);
  static_cast<TensorLayout&>(f.lse) = l;
  f.lse.data = const_cast<void*>(l.data);
  f.scale = scale;
  f.causal = causal;
  f.threads = threads;
  f.dropout = dropout;
  f.dropout_seed = dropout_seed;
  args.dout = view_in(dout, "dout");
  args.dlse = view_in(dlse, "dlse", true);
  args.dq = view_out(dq, "dq");
  args.dk = view_out(dk, "dk");
  args.dv = view_out(dv, "dv");
  if (check_inputs) {
    check_finite(f.q, "q");
    check_finite(f.k, "k");
    check_finite(f.v, "v");
    check_finite(args.dout, "dout");
    check_finite(args.dlse, "dlse", true);
  }
  nb::gil_scoped_release release;
  if (!mask) return attention_backward(args);
  check_mask_shape(*mask, f);
  if (mask->pattern) return mask->pattern->backward(args, mask->plan);
  attention_backward(args, mask->mask());
}

// Column sums of P from the forward's LSE. validate() wants an output view: it is given one over
// the sums' own memory with zero strides, never written.
void run_column_sums(const InArray& q, const InArray& k, const InArray& lse, const OutArray& sums,
                     float scale, bool causal, int threads) {
  AttentionArgs args;
  args.q = view_in(q, "q");
  args.k = view_in(k, "k");
  args.v = args.k;
  const TensorView l = view_in(lse, "lse", true);
  static_cast<TensorLayout&>(args.lse) = l;
  args.lse.data = const_cast<void*>(l.data);
  const MutableTensorView out = view_out(sums, "col_sums", true);
  args.out = out;
  for (int i = 0; i < 4; ++i) args.out.shape[i] = i == 3 ? args.k.shape[3] : args.q.shape[i];
  args.out.stride[0] = args.out.stride[1] = args.out.stride[2] = 0;
  args.out.stride[3] = 1;
  args.scale = scale;
  args.causal = causal;
  args.threads = threads;
  nb::gil_scoped_release release;
  attention_column_sums(args, out);
}

void run_merge(const InArray& out_a, const InArray& lse_a, const InArray& out_b,
               const InArray& lse_b, const OutArray& out, const OutArray& lse) {
  const TensorView oa = view_in(out_a, "out_a"), la = view_in(lse_a, "lse_a", true);
  const TensorView ob = view_in(out_b, "out_b"), lb = view_in(lse_b, "lse_b", true);
  const MutableTensorView o = view_out(out, "out"), l = view_out(lse, "lse", true);
  nb::gil_scoped_release release;
  merge(oa, la, ob, lb, o, l);
}

void run_reference(const InArray& q, const InArray& k, const InArray& v, const OutArray& out,
                   const std::optional<OutArray>& lse, float scale, bool causal, float dropout,
                   uint64_t dropout_seed, const Mask* mask) {
  const AttentionArgs args =
      forward_args(q, k, v, out, lse, scale, causal, 0, dropout, dropout_seed);
  ElementPredicate allow;
  std::vector<std::vector<uint8_t>> dense;  // token-order element masks per (b, h) list
  if (mask) {
    check_mask_shape(*mask, args);
    const BlockMask& m = mask->mask();
    dense.resize(static_cast<size_t>(m.batch * m.heads));
    for (int64_t b = 0; b < m.batch; ++b)
      for (int64_t h = 0; h < m.heads; ++h) dense[b * m.heads + h] = to_dense(mask->plan, b, h);
    const int64_t nk = args.k.shape[2];
    allow = [&dense, &m, nk](int64_t b, int64_t h, int64_t i, int64_t j) {
      return dense[list_index(b, m.batch) * m.heads + list_index(h, m.heads)][i * nk + j] != 0;
    };
  }
  nb::gil_scoped_release release;
  attention_reference(args, allow);
}

// ---- patterns and masks ----

nb::dict param_dict(const PatternParam& p) {
  static const char* const kTypes[] = {"int", "block", "real", "choice", "text"};
  nb::dict d;
  d["name"] = p.name;
  d["default"] = p.default_value;
  d["help"] = p.help;
  d["type"] = kTypes[static_cast<int>(p.type)];
  if (p.type == PatternParam::Type::kInt || p.type == PatternParam::Type::kReal) {
    d["lo"] = p.lo;
    d["hi"] = p.hi;
  }
  if (p.type == PatternParam::Type::kChoice) d["choices"] = p.choices;
  return d;
}

nb::list list_pattern_infos() {
  nb::list out;
  for (const PatternInfo& info : list_patterns()) {
    nb::dict d;
    d["name"] = info.name;
    d["summary"] = info.summary;
    d["paper"] = info.paper;
    d["family"] = family_name(info.family);
    d["direction"] = direction_name(make_pattern(info.name)->direction());
    nb::list params;
    for (const PatternParam& p : info.params) params.append(param_dict(p));
    d["params"] = params;
    out.append(d);
  }
  return out;
}

struct PyPattern {
  std::shared_ptr<const Pattern> pattern;

  explicit PyPattern(const std::string& spec) : pattern(make_pattern(spec)) {}

  Mask plan(const std::optional<InArray>& q, const std::optional<InArray>& k, int64_t batch,
            int64_t heads, int64_t heads_kv, int64_t nq, int64_t nk, int64_t dim, bool causal,
            int threads) const {
    PlanInputs inputs = PlanInputs::shapes(batch, heads, heads_kv, nq, nk, dim, causal);
    inputs.threads = threads;
    if (q) inputs.q = view_in(*q, "q");
    if (k) inputs.k = view_in(*k, "k");
    const bool needs_data = pattern->family() == PatternFamily::kDynamic;
    check(!needs_data || (q && k), "q",
          "pattern '" + pattern->name() + "' reads Q and K to plan: pass q and k");
    inputs.validate(needs_data);
    Mask m;
    {
      nb::gil_scoped_release release;
      m.plan = pattern->plan(inputs);
    }
    m.pattern = pattern;
    return m;
  }
};

std::vector<uint8_t> dense_bits(const InArray& a, int64_t* batch, int64_t* heads, int64_t* nq,
                                int64_t* nk) {
  check(a.ndim() >= 2 && a.ndim() <= 4, "array",
        "must be [nq, nk], [heads, nq, nk] or [batch, heads, nq, nk], got rank " +
            std::to_string(a.ndim()));
  const auto t = a.dtype();
  const bool boolean =
      t.code == static_cast<uint8_t>(nb::dlpack::dtype_code::Bool) ||
      (t.code == static_cast<uint8_t>(nb::dlpack::dtype_code::UInt) && t.bits == 8);
  if (!boolean) throw nb::type_error("array: must hold bool or uint8 values");
  int64_t shape[4] = {1, 1, 1, 1}, stride[4] = {0, 0, 0, 0};
  const size_t offset = 4 - a.ndim();
  for (size_t i = 0; i < a.ndim(); ++i) {
    shape[offset + i] = static_cast<int64_t>(a.shape(i));
    stride[offset + i] = static_cast<int64_t>(a.stride(i));
    check(shape[offset + i] > 0, "array", "has a zero-size dimension");
  }
  *batch = shape[0], *heads = shape[1], *nq = shape[2], *nk = shape[3];
  std::vector<uint8_t> bits(static_cast<size_t>(shape[0] * shape[1] * shape[2] * shape[3]));
  const uint8_t* src = static_cast<const uint8_t*>(a.data());
  size_t n = 0;
  for (int64_t b = 0; b < shape[0]; ++b)
    for (int64_t h = 0; h < shape[1]; ++h)
      for (int64_t i = 0; i < shape[2]; ++i)
        for (int64_t j = 0; j < shape[3]; ++j)
          bits[n++] =
              src[b * stride[0] + h * stride[1] + i * stride[2] + j * stride[3]] != 0 ? 1 : 0;
  return bits;
}

Mask mask_from_dense(const InArray& a, int64_t q_block, int64_t kv_block) {
  int64_t batch, heads, nq, nk;
  std::vector<uint8_t> bits = dense_bits(a, &batch, &heads, &nq, &nk);
  BlockMaskShape shape{nq, nk, batch, heads, q_block, kv_block};
  auto predicate = std::make_shared<DensePredicate>(std::move(bits), batch, heads, nq, nk);
  Mask m;
  m.plan.mask = block_mask_from_predicate(shape, std::move(predicate));
  return m;
}

Mask mask_from_indices(const std::vector<std::vector<int32_t>>& lists, int64_t nq, int64_t nk,
                       int64_t batch, int64_t heads, int64_t q_block, int64_t kv_block) {
  BlockMaskShape shape{nq, nk, batch, heads, q_block, kv_block};
  Mask m;
  m.plan.mask = block_mask_from_indices(shape, lists);
  return m;
}

const BlockMask& plain_mask(const Mask& m, const char* name) {
  check(m.plan.token_order.empty() && !m.plan.state.has_value(), name,
        "combines only masks in token order (this one comes from a pattern that reorders tokens "
        "or is not one block-sparse pass)");
  return m.mask();
}

Mask combine(const Mask& a, const Mask& b, bool both) {
  const BlockMask& x = plain_mask(a, "block_mask");
  const BlockMask& y = plain_mask(b, "other");
  Mask m;
  m.plan.mask = both ? mask_and(x, y) : mask_or(x, y);
  m.plan.causal = both ? (a.plan.causal || b.plan.causal) : (a.plan.causal && b.plan.causal);
  return m;
}

// (b, h) must name one of the mask's lists (a broadcast dimension has only index 0).
void check_list(const BlockMask& mask, int64_t b, int64_t h) {
  check(b >= 0 && b < mask.batch, "b",
        std::to_string(b) + " is out of range [0, " + std::to_string(mask.batch) + ")");
  check(h >= 0 && h < mask.heads, "h",
        std::to_string(h) + " is out of range [0, " + std::to_string(mask.heads) + ")");
}

nb::ndarray<nb::numpy, uint8_t> mask_to_dense(const Mask& m, int64_t b, int64_t h) {
  const BlockMask& mask = m.mask();
  check_list(mask, b, h);
  const int64_t nq = m.plan.nq(), nk = m.plan.nk();
  check(double(nq) * double(nk) <= double(int64_t{1} << 30), "block_mask",
        "the element mask would hold " + std::to_string(nq) + " x " + std::to_string(nk) +
            " bytes (at most 2^30)");
  auto* bits = new std::vector<uint8_t>(to_dense(m.plan, b, h));
  nb::capsule owner(bits, [](void* p) noexcept { delete static_cast<std::vector<uint8_t>*>(p); });
  return nb::ndarray<nb::numpy, uint8_t>(bits->data(),
                                         {static_cast<size_t>(nq), static_cast<size_t>(nk)}, owner);
}

// Block kinds of list (b, h) in kernel order: uint8 [q_blocks, kv_blocks], 0 absent, 1 FULL,
// 2 PARTIAL.
nb::ndarray<nb::numpy, uint8_t> mask_blocks(const Mask& m, int64_t b, int64_t h) {
  const BlockMask& mask = m.mask();
  check_list(mask, b, h);
  const int64_t rows = mask.q_blocks(), cols = mask.kv_blocks();
  check(double(rows) * double(cols) <= double(int64_t{1} << 28), "block_mask",
        "has too many blocks to show");
  auto* kinds = new std::vector<uint8_t>(static_cast<size_t>(rows * cols), 0);
  for (int64_t qb = 0; qb < rows; ++qb) {
    const int64_t r = mask.list(b, h, qb);
    for (int64_t e = mask.row_start[r]; e < mask.row_start[r + 1]; ++e)
      (*kinds)[qb * cols + mask.kv_index[e]] = static_cast<uint8_t>(mask.kind[e]);
  }
  nb::capsule owner(kinds, [](void* p) noexcept { delete static_cast<std::vector<uint8_t>*>(p); });
  return nb::ndarray<nb::numpy, uint8_t>(
      kinds->data(), {static_cast<size_t>(rows), static_cast<size_t>(cols)}, owner);
}

std::string mask_repr(const Mask& m) {
  const BlockMask& mask = m.mask();
  std::string text =
      "BlockMask(nq=" + std::to_string(m.plan.nq()) + ", nk=" + std::to_string(m.plan.nk()) +
      ", blocks " + std::to_string(mask.q_block) + "x" + std::to_string(mask.kv_block) +
      ", density " + std::to_string(density(m.plan)) + ", block density " +
      std::to_string(block_density(mask)) + (m.plan.token_order.empty() ? "" : ", box order") +
      (m.pattern ? ", pattern " + m.pattern->spec() : "") + ")\n";
  return text + to_ascii(mask, 0, 0, 64);
}

// ---- the real model ----

std::unique_ptr<Pattern> optional_pattern(const std::string& spec) {
  return spec.empty() ? nullptr : make_pattern(spec);
}

// Score modifiers from Python's selective / temperature / mask_heads ("L.H,L.H") / mask_mode;
// validated when set on a session (errors name those parameters).
model::AttentionModifiers modifiers_of(const std::vector<float>& selective, double temperature,
                                       const std::string& heads, const std::string& mode,
                                       const std::string& act, const std::string& moh) {
  model::AttentionModifiers m;
  if (!act.empty()) m.parse_act(act, "act");
  if (!moh.empty()) m.parse_moh(moh, "moh");
  m.selective = selective;
  m.temperature = static_cast<float>(temperature);
  m.masked_heads = model::AttentionModifiers::parse_heads(heads, "mask_heads");
  m.mask_mode = model::AttentionModifiers::parse_mask_mode(mode, "mask_mode");
  return m;
}

struct PyModel {
  std::shared_ptr<const model::LlamaModel> model;
  int threads = 0;

  PyModel(const std::string& path, int threads_)
      : model(model::LlamaModel::load(path, "path")), threads(threads_) {}

  nb::dict config() const {
    const model::LlamaConfig& c = model->config();
    nb::dict d;
    d["layers"] = c.layers;
    d["dim"] = c.dim;
    d["heads"] = c.heads;
    d["heads_kv"] = c.heads_kv;
    d["head_dim"] = c.head_dim;
    d["ffn"] = c.ffn;
    d["vocab"] = c.vocab;
    d["context_train"] = c.context_train;
    d["rope_theta"] = c.rope_theta;
    return d;
  }

  std::vector<int32_t> tokenize(const std::string& text) const {
    return model->tokenizer().encode(text, false);
  }

  // The text's tokens, at least ctx of them (else Error("text", ...)).
  std::vector<int32_t> tokens_for(const std::string& text, int64_t ctx) const {
    std::vector<int32_t> tokens = tokenize(text);
    check(
        static_cast<int64_t>(tokens.size()) >= ctx, "text",
        "has " + std::to_string(tokens.size()) + " tokens, fewer than ctx " + std::to_string(ctx));
    return tokens;
  }

  std::string detokenize(const std::vector<int32_t>& ids) const {
    for (int32_t id : ids)
      check(id >= 0 && id < model->tokenizer().vocab_size(), "ids",
            "token id " + std::to_string(id) + " is outside the vocabulary");
    return model->tokenizer().decode(ids);
  }

  nb::dict ppl(const std::string& text, int64_t ctx, const std::string& spec, int64_t max_windows,
               const model::AttentionModifiers& modifiers) const {
    check(ctx >= 2 && ctx <= (int64_t{1} << 20), "ctx",
          "must be in [2, 2^20], got " + std::to_string(ctx));
    check(max_windows >= 0, "max_windows", "must be >= 0");
    const auto pattern = optional_pattern(spec);
    const std::vector<int32_t> tokens = tokens_for(text, ctx);
    model::PerplexityResult r;
    {
      nb::gil_scoped_release release;
      model::LlamaSession session(model, ctx, threads);
      session.set_modifiers(modifiers);
      r = model::perplexity(session, tokens, ctx, max_windows, pattern.get());
    }
    nb::dict d;
    d["ppl"] = r.ppl;
    d["nll"] = r.nll;
    d["tokens"] = r.tokens;
    d["windows"] = r.windows;
    d["seconds"] = r.seconds;
    return d;
  }

  nb::dict passkey(int64_t length, int64_t trials, const std::string& spec, uint64_t seed,
                   const std::string& cache_spec,
                   const model::AttentionModifiers& modifiers) const {
    const model::CacheSpec cache = model::CacheSpec::parse(cache_spec, "cache");
    check(length >= 64 && length <= (int64_t{1} << 20), "length", "must be in [64, 2^20]");
    check(trials >= 1 && trials <= 100000, "trials", "must be in [1, 100000]");
    const auto pattern = optional_pattern(spec);
    model::PasskeyResult r;
    {
      nb::gil_scoped_release release;
      model::LlamaSession session(model, length + 64, threads, cache);
      session.set_modifiers(modifiers);
      r = model::passkey(session, length, trials, seed, pattern.get());
    }
    nb::dict d;
    d["accuracy"] = r.accuracy();
    d["correct"] = r.correct;
    d["trials"] = r.trials;
    d["mean_tokens"] = r.mean_tokens;
    return d;
  }

  std::string generate(const std::string& prompt, int64_t n, const std::string& spec,
                       double temperature, uint64_t seed, const std::string& cache_spec,
                       const model::AttentionModifiers& modifiers) const {
    const model::CacheSpec cache = model::CacheSpec::parse(cache_spec, "cache");
    check(n >= 1 && n <= (int64_t{1} << 20), "n", "must be in [1, 2^20]");
    check(temperature >= 0 && temperature <= 100, "temperature", "must be in [0, 100]");
    const auto pattern = optional_pattern(spec);
    const std::vector<int32_t> ids = model->tokenizer().encode(prompt);
    check(!ids.empty(), "prompt", "is empty");
    model::GenerateOptions options;
    options.max_tokens = n;
    options.temperature = temperature;
    options.seed = seed;
    options.pattern = pattern.get();
    std::vector<int32_t> out;
    {
      nb::gil_scoped_release release;
      model::LlamaSession session(model, static_cast<int64_t>(ids.size()) + n, threads, cache);
      session.set_modifiers(modifiers);
      out = model::generate(session, ids, options);
    }
    return model->tokenizer().decode(out);
  }

  nb::dict stream_ppl(const std::string& text, int64_t count, const std::string& cache_spec,
                      const model::AttentionModifiers& modifiers) const {
    const model::CacheSpec cache = model::CacheSpec::parse(cache_spec, "cache");
    check(count >= 2 && count <= (int64_t{1} << 22), "tokens", "must be in [2, 2^22]");
    const std::vector<int32_t> tokens = tokens_for(text, count);
    model::StreamPerplexityResult r;
    {
      nb::gil_scoped_release release;
      model::LlamaSession session(model, count, threads, cache);
      session.set_modifiers(modifiers);
      r = model::stream_perplexity(session, tokens, count, 1024);
    }
    nb::list segments;
    for (const auto& s : r.segments) {
      nb::dict segment;
      segment["start"] = s.start;
      segment["end"] = s.end;
      segment["ppl"] = s.ppl;
      segments.append(segment);
    }
    nb::dict d;
    d["tokens"] = r.tokens;
    d["ppl"] = r.ppl;
    d["ppl_by_segment"] = segments;
    d["tokens_per_s"] = r.tokens_per_s;
    d["cache_tokens"] = r.cache_tokens;
    d["cache"] = cache.str();
    return d;
  }

  // Every head's retrieval score, highest first: [{"layer", "head", "score"}].
  nb::list retrieval_heads(int64_t length, int64_t trials, uint64_t seed) const {
    check(length >= 8 && length <= (int64_t{1} << 16), "length", "must be in [8, 2^16]");
    std::vector<model::HeadScore> scores;
    {
      nb::gil_scoped_release release;
      model::LlamaSession session(model, 2 * length, threads);
      scores = model::retrieval_scores(session, length, trials, seed);
    }
    nb::list out;
    for (const model::HeadScore& h : scores) {
      nb::dict d;
      d["layer"] = h.layer, d["head"] = h.head, d["score"] = h.score;
      out.append(d);
    }
    return out;
  }

  // Per window of ctx tokens, in text order: {"index", "start", "base_nll", "masked_nll", "score"}.
  nb::list influence(const std::string& text, int64_t ctx, const std::string& heads,
                     const std::string& mode, int64_t max_windows) const {
    check(ctx >= 2 && ctx <= (int64_t{1} << 20), "ctx",
          "must be in [2, 2^20], got " + std::to_string(ctx));
    check(max_windows >= 0, "max_windows", "must be >= 0");
    const std::vector<model::HeadRef> chosen =
        model::AttentionModifiers::parse_heads(heads, "heads");
    const HeadMode head_mode = model::AttentionModifiers::parse_mask_mode(mode, "mask_mode");
    const std::vector<int32_t> tokens = tokens_for(text, ctx);
    std::vector<model::DocumentInfluence> docs;
    {
      nb::gil_scoped_release release;
      model::LlamaSession session(model, ctx, threads);
      docs = model::document_influence(session, tokens, ctx, max_windows, chosen, head_mode);
    }
    nb::list out;
    for (const auto& doc : docs) {
      nb::dict d;
      d["index"] = doc.index, d["start"] = doc.start, d["base_nll"] = doc.base_nll;
      d["masked_nll"] = doc.masked_nll, d["score"] = doc.score;
      out.append(d);
    }
    return out;
  }

  // ACT's hidden sinks per layer: [{"layer", "per_head", "heads_with", "top"}].
  nb::list sinks(const std::string& text, int64_t ctx, int64_t windows, double tau) const {
    check(ctx >= 2 && ctx <= (int64_t{1} << 20), "ctx",
          "must be in [2, 2^20], got " + std::to_string(ctx));
    check(tau > 0.0 && tau <= 1.0, "tau", "must be in (0, 1], got " + std::to_string(tau));
    const std::vector<int32_t> tokens = tokens_for(text, ctx);
    std::vector<model::LayerSinks> layers;
    {
      nb::gil_scoped_release release;
      model::LlamaSession session(model, ctx, threads);
      layers = model::hidden_sinks(session, tokens, ctx, windows, static_cast<float>(tau));
    }
    nb::list out;
    for (size_t l = 0; l < layers.size(); ++l) {
      nb::dict d;
      d["layer"] = static_cast<int64_t>(l);
      d["per_head"] = layers[l].per_head;
      d["heads_with"] = layers[l].heads_with;
      d["top"] = layers[l].top;
      out.append(d);
    }
    return out;
  }

  // {layer: {"q": [1, Hq, T, hd], "k": [1, Hkv, T, hd], "v": ...}} of the first ctx tokens.
  nb::dict capture(const std::string& text, int64_t ctx, const std::vector<int64_t>& layers) const {
    const model::LlamaConfig& c = model->config();
    check(ctx >= 1 && ctx <= (int64_t{1} << 20), "ctx", "must be in [1, 2^20]");
    check(!layers.empty(), "layers", "no layer given");
    for (int64_t l : layers)
      check(
          l >= 0 && l < c.layers, "layers",
          std::to_string(l) + " is not a layer index in [0, " + std::to_string(c.layers - 1) + "]");
    std::vector<int32_t> tokens = tokens_for(text, ctx);
    tokens.resize(static_cast<size_t>(ctx));
    std::map<std::pair<int64_t, int>, std::vector<float>> captured;
    {
      nb::gil_scoped_release release;
      model::LlamaSession session(model, ctx, threads);
      session.set_capture([&](int64_t layer, int64_t T, const float* q, const float* k,
                              const float* v) {
        if (std::find(layers.begin(), layers.end(), layer) == layers.end()) return;
        const float* rows[3] = {q, k, v};
        const int64_t heads[3] = {c.heads, c.heads_kv, c.heads_kv};
        for (int x = 0; x < 3; ++x) {  // [T, heads, hd] rows -> [heads, T, hd]
          std::vector<float>& t = captured[{layer, x}];
          t.resize(static_cast<size_t>(heads[x] * T * c.head_dim));
          for (int64_t h = 0; h < heads[x]; ++h)
            for (int64_t s = 0; s < T; ++s)
              std::memcpy(&t[(h * T + s) * c.head_dim], rows[x] + (s * heads[x] + h) * c.head_dim,
                          c.head_dim * sizeof(float));
        }
      });
      session.forward(tokens.data(), ctx);
    }
    nb::dict result;
    static const char* const kNames[3] = {"q", "k", "v"};
    for (auto& [key, data] : captured) {
      const int64_t heads = key.second == 0 ? c.heads : c.heads_kv;
      auto* owned = new std::vector<float>(std::move(data));
      nb::capsule owner(owned,
                        [](void* p) noexcept { delete static_cast<std::vector<float>*>(p); });
      nb::ndarray<nb::numpy, float> array(owned->data(),
                                          {1, static_cast<size_t>(heads), static_cast<size_t>(ctx),
                                           static_cast<size_t>(c.head_dim)},
                                          owner);
      nb::object layer = nb::int_(key.first);
      if (!result.contains(layer)) result[layer] = nb::dict();
      nb::dict arrays = nb::borrow<nb::dict>(result[layer]);
      arrays[kNames[key.second]] = nb::cast(array);
    }
    return result;
  }
};

}  // namespace
}  // namespace attnkit::python

NB_MODULE(_ext, m) {
  using namespace attnkit;
  using namespace attnkit::python;
  m.doc() = "attnkit's C++ core (use the attnkit package, not this module)";
  // Plans cached by attnkit.torch live until interpreter exit, past nanobind's leak check.
  nb::set_leak_warnings(false);
  nb::register_exception_translator([](const std::exception_ptr& p, void*) {
    try {
      std::rethrow_exception(p);
    } catch (const Error& e) {
      PyErr_SetString(PyExc_ValueError, e.what());
    }
  });

  nb::class_<Mask>(m, "Mask", nb::is_weak_referenceable())
      .def_prop_ro("nq", [](const Mask& x) { return x.plan.nq(); })
      .def_prop_ro("nk", [](const Mask& x) { return x.plan.nk(); })
      .def_prop_ro("q_block", [](const Mask& x) { return x.mask().q_block; })
      .def_prop_ro("kv_block", [](const Mask& x) { return x.mask().kv_block; })
      .def_prop_ro("batch", [](const Mask& x) { return x.mask().batch; })
      .def_prop_ro("heads", [](const Mask& x) { return x.mask().heads; })
      .def_prop_ro("causal", [](const Mask& x) { return x.plan.causal; })
      .def_prop_ro("density", [](const Mask& x) { return density(x.plan); })
      .def_prop_ro("block_density", [](const Mask& x) { return block_density(x.mask()); })
      .def_prop_ro("pattern",
                   [](const Mask& x) { return x.pattern ? x.pattern->spec() : std::string(); })
      .def_prop_ro("token_order", [](const Mask& x) { return x.plan.token_order; })
      .def_prop_ro("kv_counts",
                   [](const Mask& x) {
                     std::vector<int64_t> counts;
                     const BlockMask& b = x.mask();
                     for (int64_t r = 0; r < b.lists(); ++r)
                       counts.push_back(b.row_start[r + 1] - b.row_start[r]);
                     return counts;
                   })
      .def("to_dense", &mask_to_dense, "b"_a = 0, "h"_a = 0)
      .def("blocks", &mask_blocks, "b"_a = 0, "h"_a = 0)
      .def(
          "ascii",
          [](const Mask& x, int64_t b, int64_t h, int64_t columns) {
            return to_ascii(x.mask(), b, h, columns);
          },
          "b"_a = 0, "h"_a = 0, "max_columns"_a = 0)
      .def(
          "save_png",
          [](const Mask& x, const std::string& path, int64_t b, int64_t h, int64_t scale) {
            cli::write_block_mask_png(path, x.mask(), b, h, scale, "path");
          },
          "path"_a, "b"_a = 0, "h"_a = 0, "scale"_a = 0)
      .def("__and__", [](const Mask& a, const Mask& b) { return combine(a, b, true); })
      .def("__or__", [](const Mask& a, const Mask& b) { return combine(a, b, false); })
      .def("__repr__", &mask_repr)
      .def_static("from_dense", &mask_from_dense, "array"_a, "q_block"_a, "kv_block"_a)
      .def_static("_from_index_lists", &mask_from_indices, "lists"_a, "nq"_a, "nk"_a, "batch"_a,
                  "heads"_a, "q_block"_a, "kv_block"_a);

  nb::class_<PyPattern>(m, "Pattern")
      .def(nb::init<const std::string&>(), "spec"_a)
      .def_prop_ro("name", [](const PyPattern& p) { return p.pattern->name(); })
      .def_prop_ro("spec", [](const PyPattern& p) { return p.pattern->spec(); })
      .def_prop_ro("family", [](const PyPattern& p) { return family_name(p.pattern->family()); })
      .def_prop_ro("direction",
                   [](const PyPattern& p) { return direction_name(p.pattern->direction()); })
      .def("plan", &PyPattern::plan, "q"_a.none(), "k"_a.none(), "batch"_a, "heads"_a, "heads_kv"_a,
           "nq"_a, "nk"_a, "dim"_a, "causal"_a, "threads"_a);

  nb::class_<model::AttentionModifiers>(m, "AttentionModifiers");
  m.def("modifiers", &modifiers_of, "selective"_a, "temperature"_a, "mask_heads"_a, "mask_mode"_a,
        "act"_a, "moh"_a);
  nb::class_<PyModel>(m, "Model")
      .def(nb::init<const std::string&, int>(), "path"_a, "threads"_a)
      .def_prop_ro("config", &PyModel::config)
      .def("tokenize", &PyModel::tokenize, "text"_a)
      .def("detokenize", &PyModel::detokenize, "ids"_a)
      .def("ppl", &PyModel::ppl, "text"_a, "ctx"_a, "pattern"_a, "max_windows"_a, "modifiers"_a)
      .def("passkey", &PyModel::passkey, "length"_a, "trials"_a, "pattern"_a, "seed"_a, "cache"_a,
           "modifiers"_a)
      .def("generate", &PyModel::generate, "prompt"_a, "n"_a, "pattern"_a, "temperature"_a,
           "seed"_a, "cache"_a, "modifiers"_a)
      .def("stream_ppl", &PyModel::stream_ppl, "text"_a, "tokens"_a, "cache"_a, "modifiers"_a)
      .def("sinks", &PyModel::sinks, "text"_a, "ctx"_a, "windows"_a, "tau"_a)
      .def("retrieval_heads", &PyModel::retrieval_heads, "length"_a, "trials"_a, "seed"_a)
      .def("influence", &PyModel::influence, "text"_a, "ctx"_a, "heads"_a, "mask_mode"_a,
           "max_windows"_a)
      .def("capture", &PyModel::capture, "text"_a, "ctx"_a, "layers"_a);

  m.def("patterns", &list_pattern_infos);
  m.def("attention", &run_attention, "q"_a, "k"_a, "v"_a, "out"_a, "lse"_a.none(), "scale"_a,
        "causal"_a, "threads"_a, "dropout"_a, "dropout_seed"_a, "mask"_a.none(), "check_inputs"_a);
  m.def("attention_backward", &run_backward, "q"_a, "k"_a, "v"_a, "out"_a, "lse"_a, "dout"_a,
        "dlse"_a.none(), "dq"_a, "dk"_a, "dv"_a, "scale"_a, "causal"_a, "threads"_a, "dropout"_a,
        "dropout_seed"_a, "mask"_a.none(), "check_inputs"_a);
  m.def("attention_column_sums", &run_column_sums, "q"_a, "k"_a, "lse"_a, "col_sums"_a, "scale"_a,
        "causal"_a, "threads"_a);
  m.def("merge", &run_merge, "out_a"_a, "lse_a"_a, "out_b"_a, "lse_b"_a, "out"_a, "lse"_a);
  bind_operators(m);
  bind_distributed(m);
  m.def("reference", &run_reference, "q"_a, "k"_a, "v"_a, "out"_a, "lse"_a.none(), "scale"_a,
        "causal"_a, "dropout"_a, "dropout_seed"_a, "mask"_a.none());
}
