// safetensors reader and writer. The header is untrusted input: parse_header() validates
// every field (length, JSON shape, dtypes, shapes, byte ranges, metadata) and never crashes;
// open() maps the file read-only and read()/read_f32() copy single tensors out of it.
#include "io/safetensors.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <nlohmann/json.hpp>
#include <set>

namespace sd {
namespace {

static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "safetensors data is little-endian");

constexpr uint64_t kMaxHeaderBytes = 100ull * 1000 * 1000;  // the format's own limit
constexpr int kMaxRank = 16;
constexpr int kMaxJsonDepth = 8;

using json = nlohmann::json;

// Dtype names of the format; the ones sdserve cannot hold give an "unsupported dtype" error.
bool parse_dtype(const std::string& s, DType* out) {
  if (s == "F32") *out = DType::kF32;
  else if (s == "F16") *out = DType::kF16;
  else if (s == "BF16") *out = DType::kBF16;
  else if (s == "I32") *out = DType::kI32;
  else if (s == "I64") *out = DType::kI64;
  else if (s == "U8") *out = DType::kU8;
  else return false;
  return true;
}

const char* safetensors_dtype_name(DType d) {
  switch (d) {
    case DType::kF32: return "F32";
    case DType::kF16: return "F16";
    case DType::kBF16: return "BF16";
    case DType::kI32: return "I32";
    case DType::kI64: return "I64";
    case DType::kU8: return "U8";
  }
  return "?";
}

std::string printable(const std::string& s) {
  // Names come from untrusted files: keep messages printable and bounded.
  std::string out = "'";
  for (size_t i = 0; i < s.size() && i < 200; ++i) {
    const unsigned char c = static_cast<unsigned char>(s[i]);
    if (c < 0x20 || c == 0x7f) {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\x%02x", c);
      out += buf;
    } else {
      out += static_cast<char>(c);
    }
  }
  if (s.size() > 200) out += "...";
  return out + "'";
}

// Non-negative JSON integer that fits in uint64.
bool json_uint(const json& v, uint64_t* out) {
  if (v.is_number_unsigned()) {
    *out = v.get<uint64_t>();
    return true;
  }
  if (v.is_number_integer()) {
    const int64_t x = v.get<int64_t>();
    if (x < 0) return false;
    *out = static_cast<uint64_t>(x);
    return true;
  }
  return false;
}

Status parse_entry(const std::string& name, const json& value, uint64_t data_size, SafetensorsEntry* entry) {
  const std::string where = "tensor " + printable(name);
  if (!value.is_object()) return DataLoss(where + ": header entry is not a JSON object");
  auto dt = value.find("dtype");
  if (dt == value.end() || !dt->is_string()) return DataLoss(where + ": missing or non-string 'dtype'");
  const std::string dtype = dt->get<std::string>();
  if (!parse_dtype(dtype, &entry->dtype)) {
    return Unimplemented(where + ": unsupported dtype " + printable(dtype) + " (supported: F32, F16, BF16, I32, I64, U8)");
  }
  auto sh = value.find("shape");
  if (sh == value.end() || !sh->is_array()) return DataLoss(where + ": missing or non-array 'shape'");
  if (sh->size() > static_cast<size_t>(kMaxRank)) return DataLoss(where + ": shape has more than 16 dimensions");
  uint64_t numel = 1;
  bool overflow = false;
  for (const json& d : *sh) {
    uint64_t dim = 0;
    if (!json_uint(d, &dim) || dim > static_cast<uint64_t>(INT64_MAX)) {
      return DataLoss(where + ": shape " + sh->dump() + " must hold non-negative integers");
    }
    entry->shape.push_back(static_cast<int64_t>(dim));
    if (__builtin_mul_overflow(numel, dim, &numel)) overflow = true;
  }
  uint64_t bytes = 0;
  if (overflow || numel > static_cast<uint64_t>(INT64_MAX) ||
      __builtin_mul_overflow(numel, static_cast<uint64_t>(dtype_size(entry->dtype)), &bytes)) {
    return DataLoss(where + ": shape " + sh->dump() + " overflows");
  }
  auto off = value.find("data_offsets");
  if (off == value.end() || !off->is_array() || off->size() != 2) {
    return DataLoss(where + ": 'data_offsets' must be an array [begin, end]");
  }
  uint64_t begin = 0, end = 0;
  if (!json_uint((*off)[0], &begin) || !json_uint((*off)[1], &end)) {
    return DataLoss(where + ": 'data_offsets' must be non-negative integers");
  }
  if (begin > end) return DataLoss(where + ": data_offsets begin " + std::to_string(begin) + " > end " + std::to_string(end));
  if (end > data_size) {
    return DataLoss(where + ": data_offsets [" + std::to_string(begin) + ", " + std::to_string(end) +
                    ") extend beyond the data section (" + std::to_string(data_size) + " bytes; file truncated?)");
  }
  if (end - begin != bytes) {
    return DataLoss(where + ": " + dtype + shape_str(entry->shape) + " needs " + std::to_string(bytes) +
                    " bytes but data_offsets give " + std::to_string(end - begin));
  }
  entry->name = name;
  entry->begin = static_cast<size_t>(begin);
  entry->end = static_cast<size_t>(end);
  return Status::Ok();
}

}  // namespace

StatusOr<std::vector<SafetensorsEntry>> SafetensorsFile::parse_header(const uint8_t* data, size_t size,
                                                                       std::map<std::string, std::string>* metadata) {
  if (size < 8) return DataLoss("file too short for a safetensors header (" + std::to_string(size) + " bytes)");
  uint64_t header_len = 0;
  for (int i = 7; i >= 0; --i) header_len = (header_len << 8) | data[i];
  if (header_len > kMaxHeaderBytes) {
    return DataLoss("header length " + std::to_string(header_len) + " exceeds the 100 MB limit (not a safetensors file?)");
  }
  if (header_len > size - 8) {
    return DataLoss("header length " + std::to_string(header_len) + " extends beyond the end of the file (" +
                    std::to_string(size) + " bytes; truncated or not a safetensors file)");
  }
  const uint64_t data_size = size - 8 - header_len;
  const char* text = reinterpret_cast<const char*>(data + 8);

  // Callback: reject duplicate top-level names and deep nesting while parsing.
  std::set<std::string> seen;
  std::string duplicate;
  bool too_deep = false;
  auto callback = [&](int depth, json::parse_event_t event, json& parsed) {
    if (depth > kMaxJsonDepth) too_deep = true;
    if (event == json::parse_event_t::key && depth == 1 && parsed.is_string()) {
      const auto& key = parsed.get_ref<const std::string&>();
      if (!seen.insert(key).second && duplicate.empty()) duplicate = key;
    }
    return !too_deep;
  };
  json header = json::parse(text, text + header_len, callback, /*allow_exceptions=*/false);
  if (too_deep) return DataLoss("header JSON is nested too deeply");
  if (header.is_discarded()) return DataLoss("header is not valid JSON");
  if (!header.is_object()) return DataLoss("header JSON is not an object");
  if (!duplicate.empty()) return DataLoss("header names tensor " + printable(duplicate) + " twice");

  std::vector<SafetensorsEntry> entries;
  entries.reserve(header.size());
  for (auto it = header.begin(); it != header.end(); ++it) {
    if (it.key() == "__metadata__") {
      if (!it->is_object()) return DataLoss("__metadata__ is not a JSON object");
      for (auto m = it->begin(); m != it->end(); ++m) {
        if (!m->is_string()) return DataLoss("__metadata__ value " + printable(m.key()) + " is not a string");
        if (metadata) (*metadata)[m.key()] = m->get<std::string>();
      }
      continue;
    }
    SafetensorsEntry entry;
    SD_RETURN_IF_ERROR(parse_entry(it.key(), it.value(), data_size, &entry));
    entries.push_back(std::move(entry));
  }

  // Ranges must not overlap (empty tensors occupy no bytes and overlap nothing).
  std::vector<const SafetensorsEntry*> by_offset;
  for (const auto& e : entries)
    if (e.end > e.begin) by_offset.push_back(&e);
  std::sort(by_offset.begin(), by_offset.end(),
            [](const SafetensorsEntry* a, const SafetensorsEntry* b) { return a->begin < b->begin; });
  for (size_t i = 1; i < by_offset.size(); ++i) {
    if (by_offset[i]->begin < by_offset[i - 1]->end) {
      return DataLoss("tensors " + printable(by_offset[i - 1]->name) + " and " + printable(by_offset[i]->name) +
                      " have overlapping data_offsets");
    }
  }
  return entries;
}

StatusOr<std::unique_ptr<SafetensorsFile>> SafetensorsFile::open(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    const int err = errno;
    if (err == ENOENT) return NotFound(path + ": no such file");
    return InvalidArgument(path + ": cannot open: " + std::strerror(err));
  }
  struct stat st {};
  if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    ::close(fd);
    return InvalidArgument(path + ": not a regular file");
  }
  const size_t size = static_cast<size_t>(st.st_size);
  if (size < 8) {
    ::close(fd);
    return DataLoss(path + ": file too short for a safetensors header (" + std::to_string(size) + " bytes)");
  }
  void* map = mmap(nullptr, size, PROT_READ, MAP_PRIVATE, fd, 0);
  ::close(fd);
  if (map == MAP_FAILED) return ResourceExhausted(path + ": mmap failed: " + std::strerror(errno));

  std::unique_ptr<SafetensorsFile> file(new SafetensorsFile());
  file->path_ = path;
  file->map_ = map;
  file->map_size_ = size;
  auto entries = parse_header(static_cast<const uint8_t*>(map), size, &file->metadata_);
  if (!entries.ok()) return entries.status().with_context(path);
  uint64_t header_len = 0;
  for (int i = 7; i >= 0; --i) header_len = (header_len << 8) | static_cast<const uint8_t*>(map)[i];
  file->data_offset_ = 8 + static_cast<size_t>(header_len);
  file->entries_ = std::move(entries).value();
  for (size_t i = 0; i < file->entries_.size(); ++i) file->index_[file->entries_[i].name] = i;
  return file;
}

SafetensorsFile::~SafetensorsFile() {
  if (map_) munmap(map_, map_size_);
}

const SafetensorsEntry* SafetensorsFile::find(const std::string& name) const {
  auto it = index_.find(name);
  return it == index_.end() ? nullptr : &entries_[it->second];
}

const void* SafetensorsFile::mapped_data(const SafetensorsEntry& entry) const {
  return static_cast<const char*>(map_) + data_offset_ + entry.begin;
}

StatusOr<Tensor> SafetensorsFile::read(const std::string& name) const {
  const SafetensorsEntry* e = find(name);
  if (!e) return NotFound(path_ + ": tensor " + printable(name) + " not found");
  Tensor t = Tensor::empty_host(e->shape, e->dtype);
  if (e->end > e->begin) std::memcpy(t.raw(), static_cast<const char*>(map_) + data_offset_ + e->begin, e->end - e->begin);
  return t;
}

StatusOr<Tensor> SafetensorsFile::read_f32(const std::string& name) const {
  const SafetensorsEntry* e = find(name);
  if (!e) return NotFound(path_ + ": tensor " + printable(name) + " not found");
  if (e->dtype != DType::kF32 && e->dtype != DType::kF16 && e->dtype != DType::kBF16) {
    return InvalidArgument(path_ + ": tensor " + printable(name) + " has integer dtype " + dtype_name(e->dtype) +
                           ", expected a float tensor");
  }
  SD_ASSIGN_OR_RETURN(Tensor stored, read(name));
  return to_f32_host(stored);
}

Status write_safetensors(const std::string& path, const std::vector<std::pair<std::string, Tensor>>& tensors,
                         const std::map<std::string, std::string>& metadata) {
  json header = json::object();
  if (!metadata.empty()) {
    json meta = json::object();
    for (const auto& [k, v] : metadata) meta[k] = v;
    header["__metadata__"] = meta;
  }
  size_t offset = 0;
  for (const auto& [name, t] : tensors) {
    SD_ASSERT(t.defined() && t.device().is_cpu(), "write_safetensors needs host tensors: " + name);
    if (name == "__metadata__" || header.contains(name)) {
      return InvalidArgument(path + ": tensor name " + printable(name) + " is reserved or repeated");
    }
    json shape = json::array();
    for (int64_t d : t.shape()) shape.push_back(d);
    header[name] = {{"dtype", safetensors_dtype_name(t.dtype())},
                    {"shape", shape},
                    {"data_offsets", {offset, offset + t.nbytes()}}};
    offset += t.nbytes();
  }
  // Invalid UTF-8 in names or metadata is replaced rather than thrown on.
  std::string text = header.dump(-1, ' ', false, json::error_handler_t::replace);
  while (text.size() % 8 != 0) text += ' ';  // align the data section to 8 bytes
  uint8_t len[8];
  for (int i = 0; i < 8; ++i) len[i] = static_cast<uint8_t>((static_cast<uint64_t>(text.size()) >> (8 * i)) & 0xff);

  FILE* f = std::fopen(path.c_str(), "wb");
  if (!f) return InvalidArgument(path + ": cannot create: " + std::strerror(errno));
  bool ok = std::fwrite(len, 1, 8, f) == 8 && std::fwrite(text.data(), 1, text.size(), f) == text.size();
  for (const auto& [name, t] : tensors) {
    if (!ok) break;
    if (t.nbytes() > 0) ok = std::fwrite(t.raw(), 1, t.nbytes(), f) == t.nbytes();
  }
  ok = (std::fclose(f) == 0) && ok;
  if (!ok) return Internal(path + ": write failed: " + std::strerror(errno));
  return Status::Ok();
}

}  // namespace sd
