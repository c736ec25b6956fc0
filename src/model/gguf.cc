// GGUF reader: a bounds-checked cursor over the mapped bytes (see gguf.h for the layout).
#include "model/gguf.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstring>
#include <limits>

#include "attnkit/error.h"
#include "model/ggml_types.h"

namespace attnkit::model {

namespace {

constexpr uint32_t kMagic = 0x46554747;  // "GGUF" read as little-endian u32
constexpr uint64_t kMaxKeyLength = 65535;
constexpr uint64_t kMaxNameLength = 4096;
constexpr int kMaxArrayDepth = 4;
constexpr uint64_t kMaxAlignment = 1u << 20;

// Bytes one element of `type` needs at least; 0 for an unknown type.
uint64_t min_value_bytes(GgufType type) {
  switch (type) {
    case GgufType::kUint8:
    case GgufType::kInt8:
    case GgufType::kBool:
      return 1;
    case GgufType::kUint16:
    case GgufType::kInt16:
      return 2;
    case GgufType::kUint32:
    case GgufType::kInt32:
    case GgufType::kFloat32:
      return 4;
    case GgufType::kUint64:
    case GgufType::kInt64:
    case GgufType::kFloat64:
      return 8;
    case GgufType::kString:
      return 8;
    case GgufType::kArray:
      return 12;
  }
  return 0;
}

class Cursor {
 public:
  Cursor(const uint8_t* data, uint64_t size, const std::string& argument, const std::string& path)
      : data_(data), size_(size), argument_(argument), path_(path) {}

  [[noreturn]] void fail(const std::string& message) const {
    throw Error(argument_,
                path_ + ": malformed GGUF at byte " + std::to_string(pos_) + ": " + message);
  }
  uint64_t pos() const { return pos_; }
  uint64_t remaining() const { return size_ - pos_; }
  void need(uint64_t bytes, const char* what) const {
    if (bytes > remaining())
      fail(std::string("truncated: ") + what + " needs " + std::to_string(bytes) + " bytes, " +
           std::to_string(remaining()) + " left");
  }
  template <typename T>
  T read(const char* what) {
    need(sizeof(T), what);
    T value;
    std::memcpy(&value, data_ + pos_, sizeof(T));
    pos_ += sizeof(T);
    return value;
  }
  std::string string(const char* what, uint64_t max_length) {
    const uint64_t length = read<uint64_t>(what);
    if (length > max_length)
      fail(std::string(what) + " length " + std::to_string(length) + " exceeds the limit " +
           std::to_string(max_length));
    need(length, what);
    std::string text(reinterpret_cast<const char*>(data_ + pos_), length);
    pos_ += length;
    return text;
  }

 private:
  const uint8_t* data_;
  uint64_t size_;
  uint64_t pos_ = 0;
  const std::string& argument_;
  const std::string& path_;
};

GgufValue read_value(Cursor& in, GgufType type, int depth);

void read_array(Cursor& in, GgufValue& value, int depth) {
  const uint32_t raw_type = in.read<uint32_t>("array element type");
  const GgufType element = static_cast<GgufType>(raw_type);
  const uint64_t element_bytes = min_value_bytes(element);
  if (element_bytes == 0) in.fail("unknown array element type " + std::to_string(raw_type));
  if (element == GgufType::kArray && depth >= kMaxArrayDepth) in.fail("arrays nested too deeply");
  const uint64_t count = in.read<uint64_t>("array count");
  if (count > in.remaining() / element_bytes)
    in.fail("array count " + std::to_string(count) + " cannot fit in the " +
            std::to_string(in.remaining()) + " bytes left");
  value.element_type = element;
  value.count = count;
  switch (element) {
    case GgufType::kString:
      value.strings.reserve(count);
      for (uint64_t i = 0; i < count; ++i)
        value.strings.push_back(in.string("array string", in.remaining()));
      break;
    case GgufType::kFloat32:
    case GgufType::kFloat64:
      value.reals.reserve(count);
      for (uint64_t i = 0; i < count; ++i)
        value.reals.push_back(read_value(in, element, depth).real);
      break;
    case GgufType::kArray:
      for (uint64_t i = 0; i < count; ++i)
        value.arrays.push_back(read_value(in, element, depth + 1));
      break;
    default:
      value.integers.reserve(count);
      for (uint64_t i = 0; i < count; ++i)
        value.integers.push_back(read_value(in, element, depth).integer);
  }
}

GgufValue read_value(Cursor& in, GgufType type, int depth) {
  GgufValue value;
  value.type = type;
  switch (type) {
    case GgufType::kUint8:
      value.integer = in.read<uint8_t>("u8");
      break;
    case GgufType::kInt8:
      value.integer = in.read<int8_t>("i8");
      break;
    case GgufType::kUint16:
      value.integer = in.read<uint16_t>("u16");
      break;
    case GgufType::kInt16:
      value.integer = in.read<int16_t>("i16");
      break;
    case GgufType::kUint32:
      value.integer = in.read<uint32_t>("u32");
      break;
    case GgufType::kInt32:
      value.integer = in.read<int32_t>("i32");
      break;
    case GgufType::kUint64:
      value.uinteger = in.read<uint64_t>("u64");
      value.integer = static_cast<int64_t>(value.uinteger);
      return value;
    case GgufType::kInt64:
      value.integer = in.read<int64_t>("i64");
      break;
    case GgufType::kFloat32:
      value.real = in.read<float>("f32");
      return value;
    case GgufType::kFloat64:
      value.real = in.read<double>("f64");
      return value;
    case GgufType::kBool: {
      const uint8_t byte = in.read<uint8_t>("bool");
      if (byte > 1) in.fail("bool value " + std::to_string(byte) + " is neither 0 nor 1");
      value.integer = byte;
      break;
    }
    case GgufType::kString:
      value.text = in.string("string value", in.remaining());
      return value;
    case GgufType::kArray:
      read_array(in, value, depth);
      return value;
    default:
      in.fail("unknown value type " + std::to_string(static_cast<uint32_t>(type)));
  }
  value.uinteger = static_cast<uint64_t>(value.integer);
  return value;
}

}  // namespace

const char* gguf_type_name(GgufType type) {
  switch (type) {
    case GgufType::kUint8:
      return "u8";
    case GgufType::kInt8:
      return "i8";
    case GgufType::kUint16:
      return "u16";
    case GgufType::kInt16:
      return "i16";
    case GgufType::kUint32:
      return "u32";
    case GgufType::kInt32:
      return "i32";
    case GgufType::kFloat32:
      return "f32";
    case GgufType::kBool:
      return "bool";
    case GgufType::kString:
      return "string";
    case GgufType::kArray:
      return "array";
    case GgufType::kUint64:
      return "u64";
    case GgufType::kInt64:
      return "i64";
    case GgufType::kFloat64:
      return "f64";
  }
  return "unknown";
}

bool GgufValue::is_integer() const {
  switch (type) {
    case GgufType::kUint8:
    case GgufType::kInt8:
    case GgufType::kUint16:
    case GgufType::kInt16:
    case GgufType::kUint32:
    case GgufType::kInt32:
    case GgufType::kUint64:
    case GgufType::kInt64:
    case GgufType::kBool:
      return true;
    default:
      return false;
  }
}

std::string GgufTensor::shape_string() const {
  std::string text = "[";
  for (size_t i = 0; i < dims.size(); ++i) text += (i ? ", " : "") + std::to_string(dims[i]);
  return text + "]";
}

GgufFile GgufFile::open(const std::string& path, const std::string& argument) {
  GgufFile file;
  file.path_ = path;
  file.argument_ = argument;
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) throw Error(argument, path + ": cannot open (" + std::strerror(errno) + ")");
  struct stat st;
  if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    ::close(fd);
    throw Error(argument, path + ": not a regular file");
  }
  file.size_ = static_cast<uint64_t>(st.st_size);
  if (file.size_ == 0) {
    ::close(fd);
    throw Error(argument, path + ": empty file, not GGUF");
  }
  void* map = mmap(nullptr, file.size_, PROT_READ, MAP_PRIVATE, fd, 0);
  ::close(fd);
  if (map == MAP_FAILED)
    throw Error(argument, path + ": mmap failed (" + std::strerror(errno) + ")");
  const uint64_t size = file.size_;
  file.base_ = std::shared_ptr<const uint8_t>(
      static_cast<const uint8_t*>(map),
      [size](const uint8_t* p) { munmap(const_cast<uint8_t*>(p), size); });
  file.parse();
  return file;
}

GgufFile GgufFile::from_bytes(std::vector<uint8_t> bytes, const std::string& argument) {
  GgufFile file;
  file.path_ = "<memory>";
  file.argument_ = argument;
  file.size_ = bytes.size();
  auto holder = std::make_shared<std::vector<uint8_t>>(std::move(bytes));
  file.base_ = std::shared_ptr<const uint8_t>(holder, holder->data());
  file.parse();
  return file;
}

void GgufFile::parse() {
  Cursor in(base_.get(), size_, argument_, path_);
  const uint32_t magic = in.read<uint32_t>("magic");
  if (magic != kMagic) in.fail("bad magic (not a GGUF file)");
  version_ = in.read<uint32_t>("version");
  if (version_ != 2 && version_ != 3)
    in.fail("unsupported version " + std::to_string(version_) + " (supported: 2, 3)");
  const uint64_t tensor_count = in.read<uint64_t>("tensor count");
  const uint64_t kv_count = in.read<uint64_t>("metadata count");
  // Each kv needs >= 8 (key length) + 4 (type) + 1 bytes; each tensor info >= 8 + 4 + 8 + 4 + 8.
  if (kv_count > in.remaining() / 13)
    in.fail("metadata count " + std::to_string(kv_count) + " cannot fit in the file");
  if (tensor_count > in.remaining() / 32)
    in.fail("tensor count " + std::to_string(tensor_count) + " cannot fit in the file");

  for (uint64_t i = 0; i < kv_count; ++i) {
    std::string key = in.string("key", kMaxKeyLength);
    const uint32_t type = in.read<uint32_t>("value type");
    if (min_value_bytes(static_cast<GgufType>(type)) == 0)
      in.fail("key '" + key + "' has unknown value type " + std::to_string(type));
    GgufValue value = read_value(in, static_cast<GgufType>(type), 0);
    if (metadata_index_.count(key)) in.fail("duplicate key '" + key + "'");
    metadata_index_[key] = metadata_.size();
    metadata_.emplace_back(std::move(key), std::move(value));
  }

  if (const GgufValue* align = find("general.alignment")) {
    if (!align->is_integer() || align->integer <= 0 ||
        static_cast<uint64_t>(align->integer) > kMaxAlignment ||
        (align->integer & (align->integer - 1)) != 0 || align->integer % 8 != 0)
      in.fail("general.alignment must be a power of two, a multiple of 8 and <= 2^20, got " +
              (align->is_integer() ? std::to_string(align->integer) : std::string("non-integer")));
    alignment_ = static_cast<uint64_t>(align->integer);
  }

  for (uint64_t i = 0; i < tensor_count; ++i) {
    GgufTensor t;
    t.name = in.string("tensor name", kMaxNameLength);
    const uint32_t n_dims = in.read<uint32_t>("tensor n_dims");
    if (n_dims < 1 || n_dims > 4)
      in.fail("tensor '" + t.name + "' has " + std::to_string(n_dims) + " dims (1..4 allowed)");
    uint64_t elements = 1;
    for (uint32_t d = 0; d < n_dims; ++d) {
      const uint64_t dim = in.read<uint64_t>("tensor dim");
      if (dim == 0 || dim > (uint64_t{1} << 40) || elements > (uint64_t{1} << 50) / dim)
        in.fail("tensor '" + t.name + "' has an absurd dimension " + std::to_string(dim));
      elements *= dim;
      t.dims.push_back(static_cast<int64_t>(dim));
    }
    t.type = in.read<uint32_t>("tensor type");
    const GgmlTypeInfo* info = ggml_type_info(t.type);
    if (!info)
      in.fail("tensor '" + t.name + "' has unsupported ggml type " + std::to_string(t.type));
    if (t.dims[0] % info->block_size != 0)
      in.fail("tensor '" + t.name + "' row length " + std::to_string(t.dims[0]) +
              " is not a multiple of the " + info->name + " block size");
    t.offset = in.read<uint64_t>("tensor offset");
    if (t.offset % alignment_ != 0)
      in.fail("tensor '" + t.name + "' offset " + std::to_string(t.offset) +
              " is not a multiple of the alignment " + std::to_string(alignment_));
    t.elements = static_cast<int64_t>(elements);
    t.bytes = t.elements / info->block_size * info->type_size;
    if (tensor_index_.count(t.name)) in.fail("duplicate tensor '" + t.name + "'");
    tensor_index_[t.name] = tensors_.size();
    tensors_.push_back(std::move(t));
  }

  const uint64_t end_of_header = in.pos();
  data_offset_ = end_of_header + (alignment_ - end_of_header % alignment_) % alignment_;
  if (tensor_count > 0 && data_offset_ > size_)
    in.fail("data section starts at " + std::to_string(data_offset_) +
            ", past the end of the file");
  const uint64_t data_size = size_ > data_offset_ ? size_ - data_offset_ : 0;
  for (GgufTensor& t : tensors_) {
    const uint64_t bytes = static_cast<uint64_t>(t.bytes);
    if (t.offset > data_size || bytes > data_size - t.offset)
      throw Error(argument_, path_ + ": tensor '" + t.name + "' (" + std::to_string(bytes) +
                                 " bytes at data offset " + std::to_string(t.offset) +
                                 ") lies outside the file's " + std::to_string(data_size) +
                                 " data bytes");
    t.data = base_.get() + data_offset_ + t.offset;
  }
}

const GgufValue* GgufFile::find(const std::string& key) const {
  auto it = metadata_index_.find(key);
  return it == metadata_index_.end() ? nullptr : &metadata_[it->second].second;
}

int64_t GgufFile::get_int(const std::string& key) const {
  const GgufValue* value = find(key);
  if (!value) throw Error(argument_, path_ + ": missing metadata key '" + key + "'");
  if (!value->is_integer())
    throw Error(argument_, path_ + ": metadata key '" + key + "' is " +
                               gguf_type_name(value->type) + ", expected an integer");
  return value->integer;
}
int64_t GgufFile::get_int(const std::string& key, int64_t fallback) const {
  return find(key) ? get_int(key) : fallback;
}
double GgufFile::get_real(const std::string& key) const {
  const GgufValue* value = find(key);
  if (!value) throw Error(argument_, path_ + ": missing metadata key '" + key + "'");
  if (value->is_real()) return value->real;
  if (value->is_integer()) return static_cast<double>(value->integer);
  throw Error(argument_, path_ + ": metadata key '" + key + "' is " + gguf_type_name(value->type) +
                             ", expected a number");
}
double GgufFile::get_real(const std::string& key, double fallback) const {
  return find(key) ? get_real(key) : fallback;
}
std::string GgufFile::get_string(const std::string& key) const {
  const GgufValue* value = find(key);
  if (!value) throw Error(argument_, path_ + ": missing metadata key '" + key + "'");
  if (value->type != GgufType::kString)
    throw Error(argument_, path_ + ": metadata key '" + key + "' is " +
                               gguf_type_name(value->type) + ", expected a string");
  return value->text;
}
std::string GgufFile::get_string(const std::string& key, const std::string& fallback) const {
  return find(key) ? get_string(key) : fallback;
}
bool GgufFile::get_bool(const std::string& key, bool fallback) const {
  return find(key) ? get_int(key) != 0 : fallback;
}
const GgufValue& GgufFile::get_array(const std::string& key) const {
  const GgufValue* value = find(key);
  if (!value) throw Error(argument_, path_ + ": missing metadata key '" + key + "'");
  if (value->type != GgufType::kArray)
    throw Error(argument_, path_ + ": metadata key '" + key + "' is " +
                               gguf_type_name(value->type) + ", expected an array");
  return *value;
}

const GgufTensor* GgufFile::find_tensor(const std::string& name) const {
  auto it = tensor_index_.find(name);
  return it == tensor_index_.end() ? nullptr : &tensors_[it->second];
}
const GgufTensor& GgufFile::tensor(const std::string& name) const {
  const GgufTensor* t = find_tensor(name);
  if (!t) throw Error(argument_, path_ + ": missing tensor '" + name + "'");
  return *t;
}

}  // namespace attnkit::model
