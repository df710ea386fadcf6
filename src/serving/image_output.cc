// Image encoding for responses (delegates to the codecs in src/io) and a small base64
// encoder (RFC 4648, with padding) for b64_json / A1111 images.
// Infotexts that are missing per image fall back to the result's infotext.
#include "serving/image_output.h"

#include "io/image.h"

namespace sd::serving {

std::string base64_encode(std::string_view bytes) {
  static const char kAlphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string out;
  out.reserve((bytes.size() + 2) / 3 * 4);
  size_t i = 0;
  for (; i + 3 <= bytes.size(); i += 3) {
    uint32_t v = (uint32_t(uint8_t(bytes[i])) << 16) | (uint32_t(uint8_t(bytes[i + 1])) << 8) | uint8_t(bytes[i + 2]);
    out += kAlphabet[v >> 18];
    out += kAlphabet[(v >> 12) & 63];
    out += kAlphabet[(v >> 6) & 63];
    out += kAlphabet[v & 63];
  }
  size_t rest = bytes.size() - i;
  if (rest > 0) {
    uint32_t v = uint32_t(uint8_t(bytes[i])) << 16;
    if (rest == 2) v |= uint32_t(uint8_t(bytes[i + 1])) << 8;
    out += kAlphabet[v >> 18];
    out += kAlphabet[(v >> 12) & 63];
    out += rest == 2 ? kAlphabet[(v >> 6) & 63] : '=';
    out += '=';
  }
  return out;
}

StatusOr<EncodedImages> encode_result(const GenerationResult& result, const std::string& format, int quality) {
  EncodedImages out;
  out.format = format;
  out.seeds = result.seeds;
  out.infotext = result.infotext;
  out.infotexts = result.infotexts;
  out.infotexts.resize(result.images.size(), result.infotext);
  if (format == "png") out.content_type = "image/png";
  else if (format == "jpeg") out.content_type = "image/jpeg";
  else if (format == "webp") out.content_type = "image/webp";
  else return InvalidArgument("unknown output format '" + format + "'");
  for (size_t k = 0; k < result.images.size(); ++k) {
    const Image& image = result.images[k];
    RgbImage rgb{image.width, image.height, image.rgb};
    StatusOr<std::vector<uint8_t>> bytes = format == "png"    ? encode_png(rgb, {{"parameters", out.infotexts[k]}})
                                           : format == "jpeg" ? encode_jpeg(rgb, quality)
                                                              : encode_webp(rgb, quality);
    if (!bytes.ok()) return bytes.status().with_context("encoding image " + std::to_string(k));
    out.images.emplace_back(bytes->begin(), bytes->end());
  }
  return out;
}

}  // namespace sd::serving
