// safetensors reader (mmap, validated header) and writer. The reader checks everything an
// untrusted file can get wrong: header length, JSON, dtypes, shape × dtype size = byte
// range, ranges inside the file and not overlapping; errors name the file and tensor.
#pragma once

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "core/status.h"
#include "tensor/tensor.h"

namespace sd {

struct SafetensorsEntry {
  std::string name;
  DType dtype;         // stored dtype (F32/F16/BF16/I32/I64/U8 supported)
  Shape shape;
  size_t begin = 0;    // byte range within the data section
  size_t end = 0;
};

class SafetensorsFile {
 public:
  static StatusOr<std::unique_ptr<SafetensorsFile>> open(const std::string& path);
  // Parses a header from memory (the fuzz target's entry point): `data`/`size` hold the whole
  // file, so `size` also bounds the tensor byte ranges.
  static StatusOr<std::vector<SafetensorsEntry>> parse_header(const uint8_t* data, size_t size,
                                                              std::map<std::string, std::string>* metadata);
  ~SafetensorsFile();
  const std::string& path() const { return path_; }
  const std::vector<SafetensorsEntry>& entries() const { return entries_; }
  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  const SafetensorsEntry* find(const std::string& name) const;
  // Host copy in the stored dtype.
  StatusOr<Tensor> read(const std::string& name) const;
  // Host copy converted to f32 (float dtypes only).
  StatusOr<Tensor> read_f32(const std::string& name) const;
  // The tensor's bytes inside the read-only mapping (valid while this file is open), or
  // nullptr when the name is unknown. Callers that must not copy (weight loading) wrap it.
  const void* mapped_data(const SafetensorsEntry& entry) const;

 private:
  SafetensorsFile() = default;
  std::string path_;
  void* map_ = nullptr;
  size_t map_size_ = 0;
  size_t data_offset_ = 0;
  std::vector<SafetensorsEntry> entries_;
  std::map<std::string, size_t> index_;
  std::map<std::string, std::string> metadata_;
};

// Writes host tensors (any dtype above) in the given order; optional string metadata.
Status write_safetensors(const std::string& path, const std::vector<std::pair<std::string, Tensor>>& tensors,
                         const std::map<std::string, std::string>& metadata = {});

}  // namespace sd
