// GGUF v3 writer (tests build small models with it; the layout is in gguf.h).
#include <cstdio>
#include <cstring>

#include "attnkit/error.h"
#include "model/gguf.h"

namespace attnkit::model {

namespace {

template <typename T>
void put(std::vector<uint8_t>& out, T value) {
  const size_t at = out.size();
  out.resize(at + sizeof(T));
  std::memcpy(out.data() + at, &value, sizeof(T));
}

void put_string(std::vector<uint8_t>& out, const std::string& text) {
  put<uint64_t>(out, text.size());
  out.insert(out.end(), text.begin(), text.end());
}

void put_scalar(std::vector<uint8_t>& out, GgufType type, int64_t integer, double real) {
  switch (type) {
    case GgufType::kUint8:
    case GgufType::kBool:
      put<uint8_t>(out, integer);
      break;
    case GgufType::kInt8:
      put<int8_t>(out, integer);
      break;
    case GgufType::kUint16:
      put<uint16_t>(out, integer);
      break;
    case GgufType::kInt16:
      put<int16_t>(out, integer);
      break;
    case GgufType::kUint32:
      put<uint32_t>(out, integer);
      break;
    case GgufType::kInt32:
      put<int32_t>(out, integer);
      break;
    case GgufType::kUint64:
      put<uint64_t>(out, integer);
      break;
    case GgufType::kInt64:
      put<int64_t>(out, integer);
      break;
    case GgufType::kFloat32:
      put<float>(out, static_cast<float>(real));
      break;
    case GgufType::kFloat64:
      put<double>(out, real);
      break;
    default:
      throw Error("gguf", "not a scalar type");
  }
}

void put_value(std::vector<uint8_t>& out, const GgufValue& value) {
  if (value.type == GgufType::kString) return put_string(out, value.text);
  if (value.type != GgufType::kArray) return put_scalar(out, value.type, value.integer, value.real);
  put<uint32_t>(out, static_cast<uint32_t>(value.element_type));
  switch (value.element_type) {
    case GgufType::kString:
      put<uint64_t>(out, value.strings.size());
      for (const auto& s : value.strings) put_string(out, s);
      break;
    case GgufType::kFloat32:
    case GgufType::kFloat64:
      put<uint64_t>(out, value.reals.size());
      for (double r : value.reals) put_scalar(out, value.element_type, 0, r);
      break;
    case GgufType::kArray:
      put<uint64_t>(out, value.arrays.size());
      for (const auto& a : value.arrays) put_value(out, a);  // each: element type, count, data
      break;
    default:
      put<uint64_t>(out, value.integers.size());
      for (int64_t i : value.integers) put_scalar(out, value.element_type, i, 0.0);
  }
}

}  // namespace

void GgufWriter::add(const std::string& key, GgufValue value) {
  metadata_.emplace_back(key, std::move(value));
}

void GgufWriter::add_u32(const std::string& key, uint32_t v) {
  GgufValue value;
  value.type = GgufType::kUint32;
  value.integer = v;
  add(key, std::move(value));
}
void GgufWriter::add_i32(const std::string& key, int32_t v) {
  GgufValue value;
  value.type = GgufType::kInt32;
  value.integer = v;
  add(key, std::move(value));
}
void GgufWriter::add_f32(const std::string& key, float v) {
  GgufValue value;
  value.type = GgufType::kFloat32;
  value.real = v;
  add(key, std::move(value));
}
void GgufWriter::add_bool(const std::string& key, bool v) {
  GgufValue value;
  value.type = GgufType::kBool;
  value.integer = v;
  add(key, std::move(value));
}
void GgufWriter::add_string(const std::string& key, const std::string& v) {
  GgufValue value;
  value.type = GgufType::kString;
  value.text = v;
  add(key, std::move(value));
}
void GgufWriter::add_string_array(const std::string& key, const std::vector<std::string>& v) {
  GgufValue value;
  value.type = GgufType::kArray;
  value.element_type = GgufType::kString;
  value.strings = v;
  value.count = v.size();
  add(key, std::move(value));
}
void GgufWriter::add_i32_array(const std::string& key, const std::vector<int32_t>& v) {
  GgufValue value;
  value.type = GgufType::kArray;
  value.element_type = GgufType::kInt32;
  value.integers.assign(v.begin(), v.end());
  value.count = v.size();
  add(key, std::move(value));
}
void GgufWriter::add_f32_array(const std::string& key, const std::vector<float>& v) {
  GgufValue value;
  value.type = GgufType::kArray;
  value.element_type = GgufType::kFloat32;
  value.reals.assign(v.begin(), v.end());
  value.count = v.size();
  add(key, std::move(value));
}

void GgufWriter::add_tensor(const std::string& name, uint32_t ggml_type, std::vector<int64_t> dims,
                            std::vector<uint8_t> data) {
  tensors_.push_back({name, ggml_type, std::move(dims), std::move(data)});
}

std::vector<uint8_t> GgufWriter::bytes() const {
  std::vector<uint8_t> out;
  put<uint32_t>(out, 0x46554747);
  put<uint32_t>(out, 3);
  put<uint64_t>(out, tensors_.size());
  put<uint64_t>(out, metadata_.size());
  for (const auto& [key, value] : metadata_) {
    put_string(out, key);
    put<uint32_t>(out, static_cast<uint32_t>(value.type));
    put_value(out, value);
  }
  auto aligned = [this](uint64_t o) { return o + (alignment_ - o % alignment_) % alignment_; };
  uint64_t offset = 0;
  for (const auto& t : tensors_) {
    put_string(out, t.name);
    put<uint32_t>(out, t.dims.size());
    for (int64_t d : t.dims) put<uint64_t>(out, d);
    put<uint32_t>(out, t.type);
    put<uint64_t>(out, offset);
    offset = aligned(offset + t.data.size());
  }
  out.resize(aligned(out.size()), 0);
  for (const auto& t : tensors_) {
    out.insert(out.end(), t.data.begin(), t.data.end());
    out.resize(aligned(out.size()), 0);
  }
  return out;
}

void GgufWriter::write(const std::string& path) const {
  const std::vector<uint8_t> data = bytes();
  const std::string temp = path + ".tmp";
  FILE* f = std::fopen(temp.c_str(), "wb");
  if (!f) throw Error("gguf", path + ": cannot write");
  const bool ok = std::fwrite(data.data(), 1, data.size(), f) == data.size();
  if (std::fclose(f) != 0 || !ok || std::rename(temp.c_str(), path.c_str()) != 0) {
    std::remove(temp.c_str());
    throw Error("gguf", path + ": write failed");
  }
}

}  // namespace attnkit::model
