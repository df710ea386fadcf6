// libFuzzer target for the safetensors header parser (untrusted model files): any input must
// give an error or entries whose byte ranges are consistent; accepted names are then fed to the
// single-file key renamer, which must not crash on arbitrary names and shapes either.
#include <cstdint>
#include <cstdlib>
#include <map>
#include <string>

#include "io/safetensors.h"
#include "io/single_file_keys.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::map<std::string, std::string> metadata;
  auto entries = sd::SafetensorsFile::parse_header(data, size, &metadata);
  if (!entries.ok()) return 0;
  std::vector<std::pair<std::string, sd::Shape>> keys;
  for (const auto& e : *entries) {
    const int64_t bytes = sd::shape_numel(e.shape) * static_cast<int64_t>(sd::dtype_size(e.dtype));
    if (e.begin > e.end || e.end > size || static_cast<int64_t>(e.end - e.begin) != bytes) std::abort();
    keys.emplace_back(e.name, e.shape);
  }
  auto plan = sd::plan_single_file_renaming(keys);
  if (plan.ok()) {
    for (const auto& t : plan->tensors) {
      if (t.mapping.split_count > 1 && t.mapping.shape.empty()) std::abort();
    }
  }
  return 0;
}
