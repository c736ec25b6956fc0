// `attnkit model info | generate | ppl | passkey | stream-ppl | capture | bench`: the real-model
// runtime (src/model/) on the command line. --model defaults to the file scripts/setup-model.sh
// fetches.
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <climits>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <functional>
#include <map>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "args.h"
#include "attnkit/error.h"
#include "attnkit/npy.h"
#include "attnkit/pattern.h"
#include "attnkit/tensor.h"
#include "command.h"
#include "eval/json.h"
#include "model/evaluate.h"
#include "model/ggml_types.h"
#include "model/heads.h"
#include "model/kv_cache.h"
#include "model/llama.h"
#include "model/model_files.h"

namespace attnkit::cli {
namespace {

constexpr char kUsage[] =
    "attnkit model info [--model FILE]\n"
    "attnkit model generate [--model FILE] --prompt TEXT [--n N] [--pattern SPEC] [--cache SPEC] "
    "[--seed S] [--temp T]\n"
    "attnkit model ppl [--model FILE] --text FILE --ctx N [--pattern SPEC] [--max-windows W] "
    "[--json]\n"
    "    perplexity over consecutive non-overlapping windows of N tokens; --json prints\n"
    "    {\"tokens\": n_scored, \"ppl\": x, \"nll\": mean_nll, \"windows\": w}\n"
    "attnkit model passkey [--model FILE] --len N --trials T [--pattern SPEC] [--cache SPEC] "
    "[--seed S] [--json]\n"
    "    the Landmark Attention / LongLoRA prompt, scored teacher-forced on greedy argmax;\n"
    "    --json prints {\"len\": N, \"trials\": T, \"accuracy\": x}\n"
    "attnkit model stream-ppl [--model FILE] --text FILE --tokens N [--cache SPEC] [--kv-dtype T] "
    "[--pattern SPEC] [--json]\n"
    "    teacher-forced perplexity token by token (one decode step each) over the text's first N\n"
    "    tokens, past the trained context when the cache policy allows; --json prints\n"
    "    {\"tokens\": n_scored, \"ppl\": x, \"ppl_by_segment\": [{\"start\", \"end\", \"ppl\"}, "
    "...],\n"
    "    \"tokens_per_s\": x, \"cache_tokens\": n} with segments of 1024 scored positions\n"
    "    --cache: full (default), streaming[:sinks=4,recent=1020] (StreamingLLM),\n"
    "    h2o[:heavy=512,recent=512,pos=original|cache] (H2O); src/model/kv_cache.h has the rules\n"
    "    --kv-dtype: the cache's storage, f32 (default), f16 or bf16; generate and passkey take\n"
    "    --cache and --kv-dtype too. --pattern (full cache) applies to prefill and decode steps\n"
    "    generate, ppl, passkey, stream-ppl and bench change the scores with --selective S\n"
    "    (Selective Attention: x (1 + S ln i), i the 1-based absolute position; one S or one per\n"
    "    layer, S1,S2,...), --temperature T (TempScale: softmax(q.k / (sqrt(d) T))) and\n"
    "    --mask-heads L.H,... with --mask-mode uniform|zero (prefix mean of V, or zero output)\n"
    "    and --act on|tau=0.1,beta=0.4,from=2 (ACT: hidden sinks calibrated; full cache only)\n"
    "    and --moh top=K[,shared=S][,gates=weighted|binary] (MoH's parameter-free router)\n"
    "attnkit model heads [--model FILE] --detect retrieval [--len N] [--trials T] [--seed S] "
    "[--json]\n"
    "    every head's retrieval score on a synthetic copy task (N random tokens, default 256,\n"
    "    repeated; T trials, default 4), highest first; --json prints\n"
    "    {\"heads\": [{\"layer\", \"head\", \"score\"}, ...]}\n"
    "attnkit model influence [--model FILE] --text FILE --ctx N --top K [--mask-mode M] "
    "[--max-windows W] [--json]\n"
    "    AttentionInfluence: the top K retrieval heads (as model heads) masked, each window of N\n"
    "    tokens scored (masked NLL - NLL) / NLL, highest first; --json prints {\"heads\",\n"
    "    \"mask_mode\", \"documents\": [{\"index\", \"start\", \"base_nll\", \"masked_nll\", "
    "\"score\"}]}\n"
    "attnkit model collapse [--model FILE] --text FILE [--lengths 32,64,...] [--chunks K] "
    "[--temperature T] [--json]\n"
    "    length-induced embedding collapse: the mean pairwise cosine similarity of K (default 16)\n"
    "    mean-pooled chunk embeddings per chunk length (default 32 to 2048 by powers of 2);\n"
    "    --json prints {\"temperature\", \"points\": [{\"length\", \"chunks\", \"mean_cosine\"}]}\n"
    "attnkit model sinks [--model FILE] --text FILE --ctx N [--max-windows W] [--tau X] [--json]\n"
    "    ACT's hidden sinks per layer (columns other than each head's first sink whose mean\n"
    "    attention exceeds tau, default 0.1) over W windows (default 4); --json prints\n"
    "    {\"ctx\", \"windows\", \"tau\", \"layers\": [{\"layer\", \"per_head\", \"heads_with\", "
    "\"top\"}]}\n"
    "attnkit model capture [--model FILE] --text FILE --ctx N --layers L1,L2 --out DIR\n"
    "    writes DIR/layer{L}_{q,k,v}.npy, [1, heads, N, 64] float32, post-RoPE\n"
    "attnkit model bench [--model FILE] [--ctx N] [--decode D] [--cache SPEC] [--kv-dtype T] "
    "[--json]\n"
    "    prefill tokens/s for N tokens (default 2048) and decode tokens/s for D more (default 64)\n"
    "    Every sub-command takes --threads N (default every core). --model defaults to\n"
    "    $ATTNKIT_MODEL, else models/SmolLM2-135M-Instruct.Q4_1.gguf (from the working directory\n"
    "    or next to the build directory); scripts/setup-model.sh fetches it.";

bool exists(const std::string& path) {
  struct stat st;
  return stat(path.c_str(), &st) == 0;
}

std::string model_path(const Args& args) {
  if (args.has("--model")) return args.str("--model");
  const std::string found = model::locate_model();
  if (found.empty())
    throw Error("--model", std::string(model::kDefaultModelFile) +
                               " not found (nor $ATTNKIT_MODEL); run scripts/setup-model.sh or "
                               "pass --model FILE");
  return found;
}

std::string read_text(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw Error("--text", path + ": cannot open");
  std::ostringstream text;
  text << in.rdbuf();
  return text.str();
}

std::unique_ptr<Pattern> pattern_of(const Args& args) {
  return args.has("--pattern") ? make_pattern(args.str("--pattern")) : nullptr;
}

DType kv_dtype_of(const Args& args) {
  return args.has("--kv-dtype") ? parse_dtype(args.str("--kv-dtype"), "--kv-dtype") : DType::kF32;
}

model::CacheSpec cache_of(const Args& args) {
  return args.has("--cache") ? model::CacheSpec::parse(args.str("--cache"), "--cache")
                             : model::CacheSpec{};
}

// The score-modifier flags every evaluating command takes, and what they set.
const std::vector<std::string> kModifierFlags = {"--selective", "--temperature", "--mask-heads",
                                                 "--mask-mode", "--act",         "--moh"};

std::vector<std::string> with_modifier_flags(std::vector<std::string> flags) {
  flags.insert(flags.end(), kModifierFlags.begin(), kModifierFlags.end());
  return flags;
}

// --selective S or S1,...,S_layers; --temperature T; --mask-heads L.H,...; --mask-mode
// uniform|zero (default uniform), validated against the model.
model::AttentionModifiers modifiers_of(const Args& args, const model::LlamaModel& m) {
  model::AttentionModifiers out;
  if (args.has("--selective"))
    out.selective =
        model::AttentionModifiers::parse_numbers(args.str("--selective"), "--selective");
  out.temperature = static_cast<float>(args.real("--temperature", 1.0, 1e-3, 1e3));
  if (args.has("--mask-heads"))
    out.masked_heads =
        model::AttentionModifiers::parse_heads(args.str("--mask-heads"), "--mask-heads");
  if (args.has("--mask-mode"))
    out.mask_mode =
        model::AttentionModifiers::parse_mask_mode(args.str("--mask-mode"), "--mask-mode");
  if (args.has("--act")) out.parse_act(args.str("--act"), "--act");
  if (args.has("--moh")) out.parse_moh(args.str("--moh"), "--moh");
  out.validate(m.config().layers, m.config().heads);  // errors shown as the flags (main.cc)
  return out;
}

// Progress on stderr when it is a terminal (or ATTNKIT_PROGRESS is set); stdout stays clean.
bool show_progress() { return isatty(2) || std::getenv("ATTNKIT_PROGRESS") != nullptr; }

int threads_of(const Args& args) { return static_cast<int>(args.integer("--threads", 0, 1, 4096)); }

int info(const std::vector<std::string>& argv) {
  const Args args(argv, {"--model"});
  const auto model = model::LlamaModel::load(model_path(args));
  const model::LlamaConfig& c = model->config();
  const model::GgufFile& f = model->file();
  std::printf("file: %s (%llu bytes, GGUF v%u, alignment %llu, %zu metadata keys, %zu tensors)\n",
              f.path().c_str(), static_cast<unsigned long long>(f.file_size()), f.version(),
              static_cast<unsigned long long>(f.alignment()), f.metadata().size(),
              f.tensors().size());
  std::printf("name: %s\n", f.get_string("general.name", "?").c_str());
  std::printf(
      "architecture: llama, %lld layers, dim %lld, heads %lld (kv %lld, head dim %lld), "
      "ffn %lld, vocab %lld\n",
      (long long)c.layers, (long long)c.dim, (long long)c.heads, (long long)c.heads_kv,
      (long long)c.head_dim, (long long)c.ffn, (long long)c.vocab);
  std::printf("context: %lld (trained), rope base %g, rms eps %g\n", (long long)c.context_train,
              c.rope_theta, c.rms_eps);
  const model::Tokenizer& tok = model->tokenizer();
  std::printf("tokenizer: %s/%s, %lld tokens, bos %d '%s', eos %d '%s'\n",
              f.get_string("tokenizer.ggml.model").c_str(),
              f.get_string("tokenizer.ggml.pre", "default").c_str(), (long long)tok.vocab_size(),
              tok.bos_id, tok.bos_id >= 0 ? tok.token(tok.bos_id).c_str() : "", tok.eos_id,
              tok.eos_id >= 0 ? tok.token(tok.eos_id).c_str() : "");
  std::map<std::string, std::pair<int, int64_t>> by_type;
  int64_t params = 0;
  for (const auto& t : f.tensors()) {
    auto& entry = by_type[model::ggml_type_name(t.type)];
    ++entry.first;
    entry.second += t.bytes;
    params += t.elements;
  }
  std::printf("tensors: %lld parameters;", (long long)params);
  for (const auto& [name, entry] : by_type)
    std::printf(" %s x%d (%.1f MB)", name.c_str(), entry.first, entry.second / 1e6);
  std::printf("\n");
  return 0;
}

int generate(const std::vector<std::string>& argv) {
  const Args args(argv, with_modifier_flags({"--model", "--prompt", "--n", "--pattern", "--cache",
                                             "--kv-dtype", "--seed", "--temp", "--threads"}));
  const model::CacheSpec cache = cache_of(args);
  const auto model = model::LlamaModel::load(model_path(args));
  const auto pattern = pattern_of(args);
  model::GenerateOptions options;
  options.max_tokens = args.integer("--n", 32, 1, 1 << 20);
  options.seed = static_cast<uint64_t>(args.integer("--seed", 0, 0, INT64_MAX));
  options.temperature = args.real("--temp", 0.0, 0.0, 100.0);
  options.pattern = pattern.get();
  const std::vector<int32_t> prompt = model->tokenizer().encode(args.str("--prompt"));
  check(!prompt.empty(), "--prompt", "empty prompt");
  model::LlamaSession session(model, static_cast<int64_t>(prompt.size()) + options.max_tokens,
                              threads_of(args), cache, kv_dtype_of(args));
  session.set_modifiers(modifiers_of(args, *model));
  const auto start = std::chrono::steady_clock::now();
  const std::vector<int32_t> out = model::generate(session, prompt, options);
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  std::printf("%s\n", model->tokenizer().decode(out).c_str());
  std::fprintf(stderr, "generate: %zu prompt tokens, %zu generated, %.2f s\n", prompt.size(),
               out.size(), seconds);
  return 0;
}

int ppl(const std::vector<std::string>& argv) {
  const Args args(argv,
                  with_modifier_flags(
                      {"--model", "--text", "--ctx", "--pattern", "--max-windows", "--threads"}),
                  {"--json"});
  const int64_t ctx = args.integer("--ctx", 2, 1 << 20);
  const int64_t max_windows = args.integer("--max-windows", 0, 0, INT64_MAX);
  const std::string text = read_text(args.str("--text"));
  const auto model = model::LlamaModel::load(model_path(args));
  const auto pattern = pattern_of(args);
  const std::vector<int32_t> tokens = model->tokenizer().encode(text, false);
  model::LlamaSession session(model, ctx, threads_of(args));
  session.set_modifiers(modifiers_of(args, *model));
  const model::PerplexityResult r =
      model::perplexity(session, tokens, ctx, max_windows, pattern.get());
  if (args.flag("--json")) {
    JsonObject json;
    json.add("tokens", r.tokens).add("ppl", r.ppl).add("nll", r.nll).add("windows", r.windows);
    std::printf("%s\n", json.str().c_str());
  } else {
    std::printf(
        "ppl %.4f  nll %.5f  over %lld tokens in %lld windows of %lld (%.1f s, %.0f "
        "tokens/s)\n",
        r.ppl, r.nll, (long long)r.tokens, (long long)r.windows, (long long)ctx, r.seconds,
        r.windows * ctx / r.seconds);
  }
  return 0;
}

int passkey(const std::vector<std::string>& argv) {
  const Args args(argv,
                  with_modifier_flags({"--model", "--len", "--trials", "--pattern", "--cache",
                                       "--kv-dtype", "--seed", "--threads"}),
                  {"--json"});
  const int64_t length = args.integer("--len", 64, 1 << 20);
  const int64_t trials = args.integer("--trials", 1, 100000);
  const uint64_t seed = static_cast<uint64_t>(args.integer("--seed", 0, 0, INT64_MAX));
  const model::CacheSpec cache = cache_of(args);
  const auto model = model::LlamaModel::load(model_path(args));
  const auto pattern = pattern_of(args);
  model::LlamaSession session(model, length + 64, threads_of(args), cache, kv_dtype_of(args));
  session.set_modifiers(modifiers_of(args, *model));
  const model::PasskeyResult r = model::passkey(session, length, trials, seed, pattern.get());
  if (args.flag("--json")) {
    JsonObject json;
    json.add("len", length).add("trials", trials).add("accuracy", r.accuracy());
    std::printf("%s\n", json.str().c_str());
  } else {
    std::printf("passkey accuracy %.3f (%lld / %lld) at %lld tokens (mean prompt %.0f tokens)\n",
                r.accuracy(), (long long)r.correct, (long long)r.trials, (long long)length,
                r.mean_tokens);
  }
  return 0;
}

int stream_ppl(const std::vector<std::string>& argv) {
  const Args args(argv,
                  with_modifier_flags({"--model", "--text", "--tokens", "--cache", "--kv-dtype",
                                       "--pattern", "--threads"}),
                  {"--json"});
  const int64_t count = args.integer("--tokens", 2, 1 << 22);
  const model::CacheSpec cache = cache_of(args);
  const std::string text = read_text(args.str("--text"));
  const auto model = model::LlamaModel::load(model_path(args));
  const auto pattern = pattern_of(args);
  const std::vector<int32_t> tokens = model->tokenizer().encode(text, false);
  check(count <= static_cast<int64_t>(tokens.size()), "--tokens",
        std::to_string(count) + " exceeds the text's " + std::to_string(tokens.size()) + " tokens");
  model::LlamaSession session(model, count, threads_of(args), cache, kv_dtype_of(args));
  session.set_modifiers(modifiers_of(args, *model));
  std::function<void(int64_t, int64_t)> progress;
  if (show_progress())
    progress = [](int64_t done, int64_t total) {
      std::fprintf(stderr, "\rstream-ppl: %lld / %lld tokens", (long long)done, (long long)total);
      if (done == total) std::fprintf(stderr, "\n");
    };
  const model::StreamPerplexityResult r =
      model::stream_perplexity(session, tokens, count, 1024, pattern.get(), progress);
  if (args.flag("--json")) {
    std::string segments = "[";
    for (const auto& s : r.segments) {
      JsonObject segment;
      segment.add("start", s.start).add("end", s.end).add("ppl", s.ppl);
      segments += (segments.size() > 1 ? ", " : "") + segment.str();
    }
    JsonObject json;
    json.add("tokens", r.tokens)
        .add("ppl", r.ppl)
        .raw("ppl_by_segment", segments + "]")
        .add("tokens_per_s", r.tokens_per_s)
        .add("cache_tokens", r.cache_tokens)
        .add("cache", cache.str());
    std::printf("%s\n", json.str().c_str());
  } else {
    std::printf("ppl %.4f over %lld tokens, cache %s (%lld slots at the end), %.1f tokens/s\n",
                r.ppl, (long long)r.tokens, cache.str().c_str(), (long long)r.cache_tokens,
                r.tokens_per_s);
    for (const auto& s : r.segments)
      std::printf("  [%lld, %lld): ppl %.4f\n", (long long)s.start, (long long)s.end, s.ppl);
  }
  return 0;
}

std::vector<int64_t> parse_layers(const std::string& text, int64_t layers) {
  std::vector<int64_t> out;
  std::stringstream in(text);
  std::string item;
  while (std::getline(in, item, ',')) {
    char* end = nullptr;
    const long long v = std::strtoll(item.c_str(), &end, 10);
    if (item.empty() || *end != '\0' || v < 0 || v >= layers)
      throw Error("--layers",
                  "'" + item + "' is not a layer index in [0, " + std::to_string(layers - 1) + "]");
    out.push_back(v);
  }
  check(!out.empty(), "--layers", "no layer given");
  return out;
}

int capture(const std::vector<std::string>& argv) {
  const Args args(argv, {"--model", "--text", "--ctx", "--layers", "--out", "--threads"});
  const int64_t ctx = args.integer("--ctx", 1, 1 << 20);
  const std::string dir = args.str("--out");
  const std::string text = read_text(args.str("--text"));
  const auto model = model::LlamaModel::load(model_path(args));
  const model::LlamaConfig& c = model->config();
  const std::vector<int64_t> layers = parse_layers(args.str("--layers"), c.layers);
  std::vector<int32_t> tokens = model->tokenizer().encode(text, false);
  check(
      static_cast<int64_t>(tokens.size()) >= ctx, "--text",
      "has " + std::to_string(tokens.size()) + " tokens, fewer than --ctx " + std::to_string(ctx));
  tokens.resize(ctx);
  if (!exists(dir) && mkdir(dir.c_str(), 0755) != 0)
    throw Error("--out", dir + ": cannot create directory");
  // [T, heads, hd] rows -> [1, heads, T, hd] tensors, kept until the pass ends so that a failure
  // writes nothing.
  std::map<std::string, Tensor> outputs;
  auto to_tensor = [&](const float* rows, int64_t heads, int64_t T) {
    Tensor t({1, heads, T, c.head_dim}, DType::kF32);
    float* dst = t.f32();
    for (int64_t h = 0; h < heads; ++h)
      for (int64_t s = 0; s < T; ++s)
        std::memcpy(dst + (h * T + s) * c.head_dim, rows + (s * heads + h) * c.head_dim,
                    c.head_dim * sizeof(float));
    return t;
  };
  model::LlamaSession session(model, ctx, threads_of(args));
  session.set_capture(
      [&](int64_t layer, int64_t T, const float* q, const float* k, const float* v) {
        if (std::find(layers.begin(), layers.end(), layer) == layers.end()) return;
        const std::string stem = dir + "/layer" + std::to_string(layer) + "_";
        outputs[stem + "q.npy"] = to_tensor(q, c.heads, T);
        outputs[stem + "k.npy"] = to_tensor(k, c.heads_kv, T);
        outputs[stem + "v.npy"] = to_tensor(v, c.heads_kv, T);
      });
  session.forward(tokens.data(), ctx);
  for (const auto& [path, tensor] : outputs) write_npy(path, tensor, "--out");
  std::printf("wrote %zu files to %s (%lld tokens, layers %s)\n", outputs.size(), dir.c_str(),
              (long long)ctx, args.str("--layers").c_str());
  return 0;
}

int bench(const std::vector<std::string>& argv) {
  const Args args(argv,
                  with_modifier_flags({"--model", "--ctx", "--decode", "--threads", "--pattern",
                                       "--cache", "--kv-dtype"}),
                  {"--json"});
  const int64_t ctx = args.integer("--ctx", 2048, 1, 1 << 20);
  const int64_t decode = args.integer("--decode", 64, 0, 1 << 20);
  const model::CacheSpec cache = cache_of(args);
  const DType kv_dtype = kv_dtype_of(args);
  const auto model = model::LlamaModel::load(model_path(args));
  const auto pattern = pattern_of(args);
  // Real text, repeated as needed: GPL-3 is on every Debian machine.
  std::vector<int32_t> tokens;
  const std::string text = exists("/usr/share/common-licenses/GPL-3")
                               ? read_text("/usr/share/common-licenses/GPL-3")
                               : std::string("The quick brown fox jumps over the lazy dog. ");
  const std::vector<int32_t> base = model->tokenizer().encode(text, false);
  while (static_cast<int64_t>(tokens.size()) < ctx + decode)
    tokens.insert(tokens.end(), base.begin(), base.end());
  model::LlamaSession session(model, ctx + decode, threads_of(args), cache, kv_dtype);
  session.set_modifiers(modifiers_of(args, *model));
  auto now = [] { return std::chrono::steady_clock::now(); };
  const auto t0 = now();
  session.forward(tokens.data(), ctx, pattern.get());
  const auto t1 = now();
  for (int64_t i = 0; i < decode; ++i) {
    session.forward(&tokens[ctx + i], 1, pattern.get());
    (void)session.last_logits();
  }
  const auto t2 = now();
  const double prefill_s = std::chrono::duration<double>(t1 - t0).count();
  const double decode_s = std::chrono::duration<double>(t2 - t1).count();
  const double prefill_tps = ctx / prefill_s;
  const double decode_tps = decode > 0 ? decode / decode_s : 0.0;
  if (args.flag("--json")) {
    JsonObject json;
    json.add("ctx", ctx)
        .add("prefill_tokens_per_s", prefill_tps)
        .add("decode", decode)
        .add("decode_tokens_per_s", decode_tps)
        .add("cache", cache.str())
        .add("kv_dtype", dtype_name(kv_dtype));
    std::printf("%s\n", json.str().c_str());
  } else {
    std::printf(
        "prefill %lld tokens: %.3f s (%.0f tokens/s); decode %lld tokens after them: "
        "%.3f s (%.1f tokens/s)\n",
        (long long)ctx, prefill_s, prefill_tps, (long long)decode, decode_s, decode_tps);
  }
  return 0;
}

int sinks(const std::vector<std::string>& argv) {
  const Args args(argv, {"--model", "--text", "--ctx", "--max-windows", "--tau", "--threads"},
                  {"--json"});
  const int64_t ctx = args.integer("--ctx", 2, 1 << 20);
  const int64_t windows = args.integer("--max-windows", 4, 1, 1 << 20);
  const float tau = static_cast<float>(args.real("--tau", 0.1, 1e-6, 1.0));
  const std::string text = read_text(args.str("--text"));
  const auto model = model::LlamaModel::load(model_path(args));
  const std::vector<int32_t> tokens = model->tokenizer().encode(text, false);
  check(windows * ctx <= static_cast<int64_t>(tokens.size()), "--max-windows",
        std::to_string(windows) + " windows of " + std::to_string(ctx) +
            " tokens exceed the text's " + std::to_string(tokens.size()));
  model::LlamaSession session(model, ctx, threads_of(args));
  const std::vector<model::LayerSinks> layers =
      model::hidden_sinks(session, tokens, ctx, windows, tau);
  if (args.flag("--json")) {
    std::string list = "[";
    for (size_t l = 0; l < layers.size(); ++l) {
      std::string top = "[";
      for (size_t x = 0; x < layers[l].top.size(); ++x)
        top.append(x ? "," : "").append(std::to_string(layers[l].top[x]));
      top.append("]");
      JsonObject layer;
      layer.add("layer", static_cast<int64_t>(l))
          .add("per_head", layers[l].per_head)
          .add("heads_with", layers[l].heads_with)
          .raw("top", top);
      list.append(l ? "," : "").append(layer.str());
    }
    list.append("]");
    JsonObject json;
    json.add("ctx", ctx).add("windows", windows).add("tau", static_cast<double>(tau));
    json.raw("layers", list);
    std::printf("%s\n", json.str().c_str());
  } else {
    std::printf("hidden sinks (tau %.3g) over %lld windows of %lld tokens\n", tau,
                (long long)windows, (long long)ctx);
    for (size_t l = 0; l < layers.size(); ++l) {
      std::printf("layer %2zu: %.2f per head, %.1f heads with one; top columns", l,
                  layers[l].per_head, layers[l].heads_with);
      for (int64_t j : layers[l].top) std::printf(" %lld", (long long)j);
      std::printf("\n");
    }
  }
  return 0;
}

// The retrieval scores of --len / --trials / --seed (defaults 256, 4, 0), progress on stderr.
std::vector<model::HeadScore> retrieval_of(const Args& args, model::LlamaSession& session) {
  const int64_t length = args.integer("--len", 256, 8, 1 << 16);
  const int64_t trials = args.integer("--trials", 4, 1, 10000);
  const uint64_t seed = static_cast<uint64_t>(args.integer("--seed", 0, 0, INT64_MAX));
  if (show_progress())
    std::fprintf(stderr, "heads: retrieval scores, %lld trials\n", (long long)trials);
  return model::retrieval_scores(session, length, trials, seed);
}

int heads(const std::vector<std::string>& argv) {
  const Args args(argv, {"--model", "--detect", "--len", "--trials", "--seed", "--threads"},
                  {"--json"});
  const std::string detect = args.str("--detect");
  check(detect == "retrieval", "--detect",
        std::string("'").append(detect).append("' is not a head score (retrieval)"));
  const auto model = model::LlamaModel::load(model_path(args));
  model::LlamaSession session(model, 2 * args.integer("--len", 256, 8, 1 << 16), threads_of(args));
  const std::vector<model::HeadScore> scores = retrieval_of(args, session);
  if (args.flag("--json")) {
    std::string list = "[";
    for (size_t x = 0; x < scores.size(); ++x) {
      JsonObject head;
      head.add("layer", scores[x].layer).add("head", scores[x].head).add("score", scores[x].score);
      list.append(x ? "," : "").append(head.str());
    }
    JsonObject json;
    json.raw("heads", list.append("]"));
    std::printf("%s\n", json.str().c_str());
  } else {
    for (const model::HeadScore& h : scores)
      std::printf("%lld.%lld %.4f\n", (long long)h.layer, (long long)h.head, h.score);
  }
  return 0;
}

int influence(const std::vector<std::string>& argv) {
  const Args args(argv,
                  {"--model", "--text", "--ctx", "--top", "--mask-mode", "--max-windows", "--len",
                   "--trials", "--seed", "--threads"},
                  {"--json"});
  const int64_t ctx = args.integer("--ctx", 2, 1 << 20);
  const int64_t top = args.integer("--top", 1, 100000);
  const int64_t max_windows = args.integer("--max-windows", 0, 0, INT64_MAX);
  const HeadMode mode = args.has("--mask-mode") ? model::AttentionModifiers::parse_mask_mode(
                                                      args.str("--mask-mode"), "--mask-mode")
                                                : HeadMode::kUniform;
  const std::string text = read_text(args.str("--text"));
  const auto model = model::LlamaModel::load(model_path(args));
  const int64_t total = model->config().layers * model->config().heads;
  check(top <= total, "--top", "must be at most the model's " + std::to_string(total) + " heads");
  const std::vector<int32_t> tokens = model->tokenizer().encode(text, false);
  model::LlamaSession session(model, std::max(ctx, 2 * args.integer("--len", 256, 8, 1 << 16)),
                              threads_of(args));
  const std::vector<model::HeadScore> scores = retrieval_of(args, session);
  std::vector<model::HeadRef> chosen;
  for (int64_t x = 0; x < top; ++x) chosen.push_back({scores[x].layer, scores[x].head});
  std::vector<model::DocumentInfluence> docs =
      model::document_influence(session, tokens, ctx, max_windows, chosen, mode);
  std::stable_sort(docs.begin(), docs.end(),
                   [](const auto& a, const auto& b) { return a.score > b.score; });
  const std::string heads_text = model::AttentionModifiers::heads_text(chosen);
  const char* mode_name = mode == HeadMode::kZero ? "zero" : "uniform";
  if (args.flag("--json")) {
    std::string list = "[";
    for (size_t x = 0; x < docs.size(); ++x) {
      JsonObject d;
      d.add("index", docs[x].index).add("start", docs[x].start).add("base_nll", docs[x].base_nll);
      d.add("masked_nll", docs[x].masked_nll).add("score", docs[x].score);
      list.append(x ? "," : "").append(d.str());
    }
    JsonObject json;
    json.add("heads", heads_text).add("mask_mode", mode_name).raw("documents", list.append("]"));
    std::printf("%s\n", json.str().c_str());
  } else {
    std::printf("heads %s masked (%s)\n", heads_text.c_str(), mode_name);
    for (const auto& d : docs)
      std::printf("window %lld (token %lld): nll %.4f -> %.4f, influence %.4f\n",
                  (long long)d.index, (long long)d.start, d.base_nll, d.masked_nll, d.score);
  }
  return 0;
}

int collapse(const std::vector<std::string>& argv) {
  const Args args(argv,
                  with_modifier_flags({"--model", "--text", "--lengths", "--chunks", "--threads"}),
                  {"--json"});
  std::vector<int64_t> lengths = {32, 64, 128, 256, 512, 1024, 2048};
  if (args.has("--lengths")) {
    lengths.clear();
    for (float x : model::AttentionModifiers::parse_numbers(args.str("--lengths"), "--lengths")) {
      check(x >= 1 && x <= (1 << 20) && x == std::floor(x), "--lengths",
            std::string("'")
                .append(args.str("--lengths"))
                .append("' must list whole token counts in [1, 2^20]"));
      lengths.push_back(static_cast<int64_t>(x));
    }
  }
  const int64_t chunks = args.integer("--chunks", 16, 2, 1 << 16);
  const std::string text = read_text(args.str("--text"));
  const auto model = model::LlamaModel::load(model_path(args));
  const std::vector<int32_t> tokens = model->tokenizer().encode(text, false);
  model::LlamaSession session(model, *std::max_element(lengths.begin(), lengths.end()),
                              threads_of(args));
  const model::AttentionModifiers modifiers = modifiers_of(args, *model);
  session.set_modifiers(modifiers);
  const std::vector<model::CollapsePoint> points =
      model::length_collapse(session, tokens, lengths, chunks);
  if (args.flag("--json")) {
    std::string list = "[";
    for (size_t x = 0; x < points.size(); ++x) {
      JsonObject p;
      p.add("length", points[x].length).add("chunks", points[x].chunks);
      p.add("mean_cosine", points[x].mean_cosine);
      list.append(x ? "," : "").append(p.str());
    }
    JsonObject json;
    json.add("temperature", static_cast<double>(modifiers.temperature))
        .raw("points", list.append("]"));
    std::printf("%s\n", json.str().c_str());
  } else {
    for (const auto& p : points)
      std::printf("length %6lld: mean cosine %.4f over %lld chunks\n", (long long)p.length,
                  p.mean_cosine, (long long)p.chunks);
  }
  return 0;
}

int model_main(const std::vector<std::string>& argv) {
  if (argv.empty())
    throw Error("model",
                "missing sub-command (info, generate, ppl, passkey, stream-ppl, capture, bench, "
                "sinks, heads, influence, collapse)");
  const std::string sub = argv[0];
  const std::vector<std::string> rest(argv.begin() + 1, argv.end());
  if (sub == "info") return info(rest);
  if (sub == "generate") return generate(rest);
  if (sub == "ppl") return ppl(rest);
  if (sub == "passkey") return passkey(rest);
  if (sub == "stream-ppl") return stream_ppl(rest);
  if (sub == "capture") return capture(rest);
  if (sub == "bench") return bench(rest);
  if (sub == "sinks") return sinks(rest);
  if (sub == "heads") return heads(rest);
  if (sub == "collapse") return collapse(rest);
  if (sub == "influence") return influence(rest);
  throw Error("model", "unknown sub-command '" + sub +
                           "' (info, generate, ppl, passkey, stream-ppl, capture, bench, sinks, "
                           "heads, influence, collapse)");
}

const bool registered = register_command({"model", kUsage, model_main});

}  // namespace
}  // namespace attnkit::cli
