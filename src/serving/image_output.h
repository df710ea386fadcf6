// Turning a GenerationResult into bytes for clients: PNG (with the A1111 `parameters`
// text chunk = infotexts[k]), JPEG or WebP via src/io/image.h, and base64 for JSON.
// Runs on the server's encode threads, never on a device worker.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "core/status.h"
#include "pipeline/request.h"

namespace sd::serving {

struct EncodedImages {
  std::vector<std::string> images;  // encoded files, one per image
  std::string content_type;         // "image/png", "image/jpeg", "image/webp"
  std::string format;               // "png" | "jpeg" | "webp"
  std::vector<int64_t> seeds;
  std::vector<std::string> infotexts;
  std::string infotext;
};

// format: png | jpeg | webp; quality applies to jpeg/webp.
StatusOr<EncodedImages> encode_result(const GenerationResult& result, const std::string& format, int quality);

std::string base64_encode(std::string_view bytes);

}  // namespace sd::serving
