// KV-cache policies (rules and layout in kv_cache.h).
#include "model/kv_cache.h"

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <map>
#include <numeric>

#include "attnkit/error.h"
#include "core/memory.h"
#include "model/rope.h"

namespace attnkit::model {

namespace {

constexpr int64_t kMaxBudget = int64_t{1} << 22;

// "key=value,key=value" into a map; each key once, each value non-empty.
std::map<std::string, std::string> spec_items(const std::string& text, const std::string& spec,
                                              const std::string& argument) {
  std::map<std::string, std::string> items;
  size_t start = 0;
  while (start <= text.size()) {
    const size_t comma = std::min(text.find(',', start), text.size());
    const std::string item = text.substr(start, comma - start);
    const size_t eq = item.find('=');
    check(eq != std::string::npos && eq > 0 && eq + 1 < item.size(), argument,
          "expected key=value, got '" + item + "' in '" + spec + "'");
    const std::string key = item.substr(0, eq);
    // append(), not operator+ chains: GCC 12 warns falsely (-Wrestrict) on the latter.
    std::string twice = "'";
    twice.append(key).append("' given twice in '").append(spec).append("'");
    check(items.emplace(key, item.substr(eq + 1)).second, argument, twice);
    start = comma + 1;
  }
  return items;
}

int64_t spec_int(const std::string& key, const std::string& value, int64_t lo,
                 const std::string& argument) {
  char* end = nullptr;
  const long long v = std::strtoll(value.c_str(), &end, 10);
  check(*end == '\0' && v >= lo && v <= kMaxBudget, argument,
        key + " must be an integer in [" + std::to_string(lo) + ", " + std::to_string(kMaxBudget) +
            "], got '" + value + "'");
  return v;
}

}  // namespace

CacheSpec CacheSpec::parse(const std::string& text, const std::string& argument) {
  const size_t colon = text.find(':');
  const std::string kind = text.substr(0, colon);
  CacheSpec spec;
  std::vector<std::string> keys;
  if (kind == "full") {
    spec.kind = Kind::kFull;
  } else if (kind == "streaming") {
    spec.kind = Kind::kStreaming;
    spec.cache_positions = true;
    keys = {"sinks", "recent"};
  } else if (kind == "h2o") {
    spec.kind = Kind::kH2O;
    spec.recent = 512;
    keys = {"heavy", "recent", "pos"};
  } else {
    throw Error(argument, "unknown cache policy '" + kind + "' in '" + text +
                              "' (full, streaming:sinks=S,recent=R, h2o:heavy=H,recent=R)");
  }
  if (colon == std::string::npos) return spec;
  for (const auto& [key, value] : spec_items(text.substr(colon + 1), text, argument)) {
    check(std::find(keys.begin(), keys.end(), key) != keys.end(), argument,
          "'" + kind + "' has no parameter '" + key + "'" +
              (keys.empty() ? std::string(" (it takes none)") : ""));
    if (key == "sinks") spec.sinks = spec_int(key, value, 0, argument);
    if (key == "heavy") spec.heavy = spec_int(key, value, 0, argument);
    if (key == "recent") spec.recent = spec_int(key, value, 1, argument);
    if (key == "pos") {
      check(value == "original" || value == "cache", argument,
            "pos must be 'original' or 'cache', got '" + value + "'");
      spec.cache_positions = value == "cache";
    }
  }
  return spec;
}

std::string CacheSpec::str() const {
  const std::string r = std::to_string(recent);
  switch (kind) {
    case Kind::kFull:
      return "full";
    case Kind::kStreaming:
      return "streaming:sinks=" + std::to_string(sinks) + ",recent=" + r;
    case Kind::kH2O:
      return "h2o:heavy=" + std::to_string(heavy) + ",recent=" + r +
             ",pos=" + (cache_positions ? "cache" : "original");
  }
  return "full";
}

int64_t CacheSpec::budget() const {
  switch (kind) {
    case Kind::kFull:
      return 0;
    case Kind::kStreaming:
      return sinks + recent;
    case Kind::kH2O:
      return heavy + recent;
  }
  return 0;
}

KvCache::KvCache(const CacheSpec& spec, int64_t layers, int64_t heads_kv, int64_t head_dim,
                 int64_t max_tokens, double rope_theta, DType dtype)
    : spec_(spec),
      dtype_(dtype),
      layers_(layers),
      heads_kv_(heads_kv),
      head_dim_(head_dim),
      rope_theta_(rope_theta) {
  // Streaming appends after making room (at most S + R after a step); H2O evicts after the step.
  capacity_ = spec.kind == CacheSpec::Kind::kFull        ? max_tokens
              : spec.kind == CacheSpec::Kind::kStreaming ? spec.budget()
                                                         : spec.budget() + spec.recent;
  row_bytes_ = head_dim * static_cast<int64_t>(dtype_size(dtype));
  const double slots = static_cast<double>(layers * heads_kv * capacity_);
  const double raw_bytes = needs_raw_keys() ? head_dim * sizeof(float) : 0.0;
  const double bytes = slots * (2.0 * row_bytes_ + raw_bytes + 24);
  check_memory(bytes, "max_context", "a KV cache of " + std::to_string(capacity_) + " tokens");
  const size_t rows = static_cast<size_t>(slots);
  k_.assign(rows * row_bytes_, 0);
  v_.assign(rows * row_bytes_, 0);
  if (needs_raw_keys()) raw_k_.assign(rows * head_dim, 0.0f);
  pos_.assign(rows, 0);
  rotated_.assign(rows, 0);
  if (needs_scores()) score_.assign(rows, 0.0);
  if (needs_raw_keys()) {
    angles_.resize(capacity_ * head_dim);
    angles_ready_.assign(capacity_, 0);
  }
  rotated_row_.resize(head_dim);
}

void KvCache::store(std::vector<char>& buffer, int64_t r, const float* row) {
  char* dst = &buffer[r * row_bytes_];
  if (dtype_ == DType::kF32) {
    std::memcpy(dst, row, row_bytes_);
    return;
  }
  uint16_t* bits = reinterpret_cast<uint16_t*>(dst);
  for (int64_t d = 0; d < head_dim_; ++d)
    bits[d] = dtype_ == DType::kF16 ? f32_to_f16(row[d]) : f32_to_bf16(row[d]);
}

int64_t KvCache::step_limit() const {
  return spec_.kind == CacheSpec::Kind::kFull ? capacity_ : spec_.recent;
}

void KvCache::move_slots(int64_t layer, int64_t head, int64_t from, int64_t to, int64_t count) {
  if (from == to || count <= 0) return;
  const int64_t src = row(layer, head, from), dst = row(layer, head, to);
  const size_t bytes = static_cast<size_t>(count * row_bytes_);
  std::memmove(&k_[dst * row_bytes_], &k_[src * row_bytes_], bytes);
  std::memmove(&v_[dst * row_bytes_], &v_[src * row_bytes_], bytes);
  if (!raw_k_.empty())
    std::memmove(&raw_k_[dst * head_dim_], &raw_k_[src * head_dim_],
                 static_cast<size_t>(count * head_dim_) * sizeof(float));
  std::memmove(&pos_[dst], &pos_[src], count * sizeof(int64_t));
  std::memmove(&rotated_[dst], &rotated_[src], count * sizeof(int64_t));
  if (!score_.empty()) std::memmove(&score_[dst], &score_[src], count * sizeof(double));
}

const float* KvCache::target_angles(int64_t slot, int64_t shift) {
  if (shift != angles_shift_) {
    std::fill(angles_ready_.begin(), angles_ready_.end(), 0);
    angles_shift_ = shift;
  }
  float* angles = &angles_[slot * head_dim_];
  if (!angles_ready_[slot]) {
    rope_angles(slot + shift, head_dim_, rope_theta_, angles);
    angles_ready_[slot] = 1;
  }
  return angles;
}

void KvCache::make_room(int64_t count) {
  check(count >= 1 && count <= step_limit(), "tokens",
        "a step of " + std::to_string(count) + " tokens exceeds the cache's step limit " +
            std::to_string(step_limit()));
  if (spec_.kind == CacheSpec::Kind::kFull) {
    check(size_ + count <= capacity_, "max_context",
          "sequence of " + std::to_string(size_ + count) +
              " tokens exceeds the session's context " + std::to_string(capacity_));
    return;
  }
  if (spec_.kind != CacheSpec::Kind::kStreaming || size_ + count <= capacity_) return;
  // Keep [0, sinks) and the last recent - count slots.
  const int64_t keep = spec_.recent - count, from = size_ - keep;
  for (int64_t l = 0; l < layers_; ++l)
    for (int64_t h = 0; h < heads_kv_; ++h) move_slots(l, h, from, spec_.sinks, keep);
  size_ = spec_.sinks + keep;
}

void KvCache::append(int64_t layer, int64_t count, int64_t first_pos, const float* k,
                     const float* raw_k, const float* v) {
  check(size_ + count <= capacity_, "tokens", "cache overflow (make_room first)");
  const int64_t hd = head_dim_, stride = heads_kv_ * hd;
  const int64_t n = size_ + count, last_pos = first_pos + count - 1;
  for (int64_t h = 0; h < heads_kv_; ++h) {
    for (int64_t t = 0; t < count; ++t) {
      const int64_t r = row(layer, h, size_ + t);
      store(k_, r, k + t * stride + h * hd);
      store(v_, r, v + t * stride + h * hd);
      if (!raw_k_.empty())
        std::memcpy(&raw_k_[r * hd], raw_k + t * stride + h * hd, hd * sizeof(float));
      pos_[r] = rotated_[r] = first_pos + t;
      if (!score_.empty()) score_[r] = 0.0;
    }
    if (!spec_.cache_positions) continue;
    // Slot s's target position: s + (last_pos - (n - 1)).
    const int64_t shift = last_pos - (n - 1);
    for (int64_t s = 0; s < size_; ++s) {
      const int64_t r = row(layer, h, s);
      if (rotated_[r] == s + shift) continue;
      rope(&raw_k_[r * hd], 1, hd, target_angles(s, shift), rotated_row_.data());
      store(k_, r, rotated_row_.data());
      rotated_[r] = s + shift;
    }
  }
}

TensorView KvCache::keys(int64_t layer, int64_t slots) const {
  TensorView t;
  t.data = &k_[row(layer, 0, 0) * row_bytes_];
  t.dtype = dtype_;
  const int64_t shape[4] = {1, heads_kv_, slots, head_dim_};
  const int64_t stride[4] = {heads_kv_ * capacity_ * head_dim_, capacity_ * head_dim_, head_dim_,
                             1};
  std::copy(shape, shape + 4, t.shape);
  std::copy(stride, stride + 4, t.stride);
  return t;
}

TensorView KvCache::values(int64_t layer, int64_t slots) const {
  TensorView t = keys(layer, slots);
  t.data = &v_[row(layer, 0, 0) * row_bytes_];
  return t;
}

void KvCache::add_scores(int64_t layer, int64_t slots, const float* col_sums) {
  for (int64_t h = 0; h < heads_kv_; ++h)
    for (int64_t s = 0; s < slots; ++s) score_[row(layer, h, s)] += col_sums[h * slots + s];
}

void KvCache::evict_h2o(int64_t layer, int64_t head) {
  const int64_t old = size_ - spec_.recent;  // candidates [0, old) for `heavy` places
  const int64_t base = row(layer, head, 0);
  std::vector<int64_t> order(old);
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(),
                   [&](int64_t a, int64_t b) { return score_[base + a] > score_[base + b]; });
  std::vector<char> keep(old, 0);
  for (int64_t i = 0; i < spec_.heavy; ++i) keep[order[i]] = 1;
  int64_t to = 0;
  for (int64_t s = 0; s < old; ++s)
    if (keep[s]) move_slots(layer, head, s, to++, 1);
  move_slots(layer, head, old, to, spec_.recent);
}

void KvCache::commit(int64_t count) {
  size_ += count;
  if (spec_.kind != CacheSpec::Kind::kH2O || size_ <= spec_.budget()) return;
  for (int64_t l = 0; l < layers_; ++l)
    for (int64_t h = 0; h < heads_kv_; ++h) evict_h2o(l, h);
  size_ = spec_.budget();
}

const int64_t* KvCache::positions(int64_t layer, int64_t head) const {
  return &pos_[row(layer, head, 0)];
}

const double* KvCache::scores(int64_t layer, int64_t head) const {
  return score_.empty() ? nullptr : &score_[row(layer, head, 0)];
}

}  // namespace attnkit::model
