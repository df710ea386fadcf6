// Image codecs: PNG (with AUTOMATIC1111's `parameters` text chunk), JPEG and WebP
// encoding of 8-bit RGB images, and PNG decoding. Decoders validate untrusted bytes and
// return a Status instead of crashing.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "core/status.h"

namespace sd {

struct RgbImage {
  int width = 0, height = 0;
  std::vector<uint8_t> rgb;  // [height, width, 3]
};

enum class ImageFormat { kPNG, kJPEG, kWebP };
StatusOr<ImageFormat> parse_image_format(const std::string& name);  // "png" | "jpeg" | "jpg" | "webp"

// `text` pairs become tEXt (latin-1) or iTXt (UTF-8) chunks, e.g. {"parameters", infotext}.
StatusOr<std::vector<uint8_t>> encode_png(const RgbImage& image,
                                          const std::vector<std::pair<std::string, std::string>>& text = {});
StatusOr<std::vector<uint8_t>> encode_jpeg(const RgbImage& image, int quality = 90);
StatusOr<std::vector<uint8_t>> encode_webp(const RgbImage& image, int quality = 90);
StatusOr<std::vector<uint8_t>> encode_image(const RgbImage& image, ImageFormat format, const std::string& infotext);

StatusOr<RgbImage> decode_png(const std::vector<uint8_t>& bytes);
// Text chunks of a PNG (tEXt, iTXt, zTXt).
StatusOr<std::vector<std::pair<std::string, std::string>>> read_png_text(const std::vector<uint8_t>& bytes);

// InvalidArgument unless 1 <= width, height <= max_side and rgb holds width*height*3 bytes.
Status check_rgb_image(const RgbImage& image, int max_side);

// Writes atomically (temporary file + rename).
Status write_file(const std::string& path, const std::vector<uint8_t>& bytes);
StatusOr<std::vector<uint8_t>> read_file(const std::string& path, size_t max_bytes = size_t(1) << 34);

}  // namespace sd
