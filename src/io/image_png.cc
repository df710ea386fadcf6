// PNG encoding with text chunks (libpng; image data in parallel stripes: png_idat.cc), decoding
// to RGB (libpng's simplified API), and a validating tEXt/zTXt/iTXt chunk walker (CRC checked,
// inflated text capped), so that untrusted uploads never crash the process.
#include <png.h>
#include <zlib.h>

#include <csetjmp>
#include <cstring>

#include "io/image.h"
#include "io/png_idat.h"

namespace sd {
namespace {

constexpr uint32_t kMaxSide = 16384;
constexpr uint64_t kMaxPixels = 64ull << 20;
constexpr size_t kMaxTextBytes = 16u << 20;

void append_bytes(png_structp png, png_bytep data, png_size_t length) {
  auto* out = static_cast<std::vector<uint8_t>*>(png_get_io_ptr(png));
  out->insert(out->end(), data, data + length);
}

void flush_nothing(png_structp) {}

// Plain C-style body: nothing with a destructor lives across setjmp/longjmp. Writes everything
// before the image data (IDAT and IEND follow from append_png_idat_iend).
const char* encode_png_head(const RgbImage& image, png_text* texts, int num_texts, std::vector<uint8_t>* out) {
  png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, nullptr, nullptr, nullptr);
  if (!png) return "cannot create a libpng writer";
  png_infop info = png_create_info_struct(png);
  if (!info) {
    png_destroy_write_struct(&png, nullptr);
    return "cannot create a libpng info struct";
  }
  if (setjmp(png_jmpbuf(png))) {
    png_destroy_write_struct(&png, &info);
    return "libpng failed while encoding";
  }
  png_set_write_fn(png, out, append_bytes, flush_nothing);
  png_set_IHDR(png, info, static_cast<png_uint_32>(image.width), static_cast<png_uint_32>(image.height), 8,
               PNG_COLOR_TYPE_RGB, PNG_INTERLACE_NONE, PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
  if (num_texts > 0) png_set_text(png, info, texts, num_texts);
  png_write_info(png, info);  // signature, IHDR, text chunks; the image data: png_idat.cc
  png_write_flush(png);
  png_destroy_write_struct(&png, &info);
  return nullptr;
}

uint32_t be32(const uint8_t* p) {
  return (uint32_t(p[0]) << 24) | (uint32_t(p[1]) << 16) | (uint32_t(p[2]) << 8) | uint32_t(p[3]);
}

std::string latin1_to_utf8(const uint8_t* p, size_t n) {
  std::string s;
  for (size_t i = 0; i < n; ++i) {
    if (p[i] < 0x80) {
      s += static_cast<char>(p[i]);
    } else {
      s += static_cast<char>(0xc0 | (p[i] >> 6));
      s += static_cast<char>(0x80 | (p[i] & 0x3f));
    }
  }
  return s;
}

// zlib-inflates at most kMaxTextBytes.
StatusOr<std::string> inflate_text(const uint8_t* p, size_t n) {
  z_stream z{};
  if (inflateInit(&z) != Z_OK) return Internal("zlib inflateInit failed");
  std::string out;
  z.next_in = const_cast<Bytef*>(p);
  z.avail_in = static_cast<uInt>(n);
  int rc = Z_OK;
  char buf[16384];
  while (rc == Z_OK) {
    z.next_out = reinterpret_cast<Bytef*>(buf);
    z.avail_out = sizeof buf;
    rc = inflate(&z, Z_NO_FLUSH);
    if (rc != Z_OK && rc != Z_STREAM_END) break;
    out.append(buf, sizeof buf - z.avail_out);
    if (out.size() > kMaxTextBytes) rc = Z_MEM_ERROR;
    if (rc == Z_OK && z.avail_in == 0 && z.avail_out != 0) rc = Z_DATA_ERROR;  // input ended early
  }
  inflateEnd(&z);
  if (rc != Z_STREAM_END) return DataLoss("PNG: corrupt or oversized compressed text chunk");
  return out;
}

Status check_image(const RgbImage& image, int max_side) {
  if (image.width <= 0 || image.height <= 0 || image.width > max_side || image.height > max_side) {
    return InvalidArgument("image size " + std::to_string(image.width) + "x" + std::to_string(image.height) +
                           " is outside 1.." + std::to_string(max_side));
  }
  if (image.rgb.size() != static_cast<size_t>(image.width) * static_cast<size_t>(image.height) * 3) {
    return InvalidArgument("image buffer holds " + std::to_string(image.rgb.size()) + " bytes, expected width*height*3");
  }
  return Status::Ok();
}

}  // namespace

Status check_rgb_image(const RgbImage& image, int max_side) { return check_image(image, max_side); }

StatusOr<std::vector<uint8_t>> encode_png(const RgbImage& image, const std::vector<std::pair<std::string, std::string>>& text) {
  SD_RETURN_IF_ERROR(check_image(image, 1 << 16));
  // tEXt for ASCII values, iTXt (UTF-8) otherwise. Keys: 1-79 printable Latin-1 characters.
  std::vector<std::string> storage;
  storage.reserve(text.size() * 2);
  std::vector<png_text> chunks(text.size());
  for (size_t i = 0; i < text.size(); ++i) {
    const auto& [key, value] = text[i];
    if (key.empty() || key.size() > 79 || key.front() == ' ' || key.back() == ' ') {
      return InvalidArgument("PNG text key '" + key + "' must be 1-79 characters without leading/trailing spaces");
    }
    for (unsigned char c : key) {
      if (c < 0x20 || c > 0x7e) return InvalidArgument("PNG text key '" + key + "' must be printable ASCII");
    }
    bool ascii = true;
    for (unsigned char c : value) {
      if (c == 0) return InvalidArgument("PNG text '" + key + "' contains a NUL character");
      if (c >= 0x80) ascii = false;
    }
    storage.push_back(key);
    storage.push_back(value);
    png_text& t = chunks[i];
    std::memset(&t, 0, sizeof t);
    t.compression = ascii ? PNG_TEXT_COMPRESSION_NONE : PNG_ITXT_COMPRESSION_NONE;
    t.key = storage[storage.size() - 2].data();
    t.text = storage.back().data();
    t.text_length = ascii ? value.size() : 0;
    t.itxt_length = ascii ? 0 : value.size();
    t.lang = nullptr;
    t.lang_key = nullptr;
  }
  std::vector<uint8_t> out;
  out.reserve(static_cast<size_t>(image.width) * image.height + 1024);
  if (const char* err = encode_png_head(image, chunks.data(), static_cast<int>(chunks.size()), &out)) {
    return Internal(std::string("PNG encoding: ") + err);
  }
  SD_RETURN_IF_ERROR(append_png_idat_iend(image, /*threads=*/0, &out));
  return out;
}

StatusOr<RgbImage> decode_png(const std::vector<uint8_t>& bytes) {
  if (bytes.size() < 8 || png_sig_cmp(bytes.data(), 0, 8) != 0) return InvalidArgument("not a PNG image (bad signature)");
  png_image img;
  std::memset(&img, 0, sizeof img);
  img.version = PNG_IMAGE_VERSION;
  if (!png_image_begin_read_from_memory(&img, bytes.data(), bytes.size())) {
    return DataLoss(std::string("corrupt PNG: ") + img.message);
  }
  if (img.width == 0 || img.height == 0 || img.width > kMaxSide || img.height > kMaxSide ||
      uint64_t(img.width) * img.height > kMaxPixels) {
    const std::string size = std::to_string(img.width) + "x" + std::to_string(img.height);
    png_image_free(&img);
    return InvalidArgument("PNG image " + size + " is too large (max " + std::to_string(kMaxSide) + " per side)");
  }
  img.format = PNG_FORMAT_RGB;  // alpha is composited onto black; 16-bit, palette and gray converted
  RgbImage out;
  out.width = static_cast<int>(img.width);
  out.height = static_cast<int>(img.height);
  out.rgb.resize(PNG_IMAGE_SIZE(img));
  if (!png_image_finish_read(&img, nullptr, out.rgb.data(), 0, nullptr)) {
    const std::string message = img.message;
    png_image_free(&img);
    return DataLoss("corrupt PNG: " + message);
  }
  png_image_free(&img);
  return out;
}

StatusOr<std::vector<std::pair<std::string, std::string>>> read_png_text(const std::vector<uint8_t>& bytes) {
  static const uint8_t kSignature[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
  if (bytes.size() < 8 || std::memcmp(bytes.data(), kSignature, 8) != 0) {
    return InvalidArgument("not a PNG image (bad signature)");
  }
  std::vector<std::pair<std::string, std::string>> texts;
  size_t pos = 8;
  bool first = true;
  while (true) {
    if (bytes.size() - pos < 12) return DataLoss("truncated PNG (no IEND chunk)");
    const uint32_t length = be32(&bytes[pos]);
    const uint8_t* type = &bytes[pos + 4];
    if (length > 0x7fffffffu || length > bytes.size() - pos - 12) return DataLoss("truncated or corrupt PNG chunk");
    const uint8_t* data = type + 4;
    const uint32_t crc = be32(data + length);
    if (crc32(crc32(0, nullptr, 0), type, length + 4) != crc) {
      return DataLoss("PNG chunk '" + std::string(reinterpret_cast<const char*>(type), 4) + "' has a bad CRC");
    }
    const std::string kind(reinterpret_cast<const char*>(type), 4);
    if (first && kind != "IHDR") return DataLoss("PNG does not start with IHDR");
    first = false;
    pos += 12 + length;
    if (kind == "IEND") break;
    if (kind != "tEXt" && kind != "zTXt" && kind != "iTXt") continue;
    const uint8_t* end = data + length;
    const uint8_t* nul = static_cast<const uint8_t*>(std::memchr(data, 0, length));
    if (!nul || nul == data || nul - data > 79) return DataLoss("PNG " + kind + " chunk has a bad keyword");
    std::string key = latin1_to_utf8(data, static_cast<size_t>(nul - data));
    const uint8_t* p = nul + 1;
    if (kind == "tEXt") {
      texts.emplace_back(key, latin1_to_utf8(p, static_cast<size_t>(end - p)));
    } else if (kind == "zTXt") {
      if (p >= end || *p != 0) return DataLoss("PNG zTXt chunk has an unknown compression method");
      SD_ASSIGN_OR_RETURN(std::string raw, inflate_text(p + 1, static_cast<size_t>(end - p - 1)));
      texts.emplace_back(key, latin1_to_utf8(reinterpret_cast<const uint8_t*>(raw.data()), raw.size()));
    } else {  // iTXt: flag, method, language\0, translated keyword\0, UTF-8 text
      if (end - p < 2) return DataLoss("truncated PNG iTXt chunk");
      const bool compressed = p[0] != 0;
      if (compressed && p[1] != 0) return DataLoss("PNG iTXt chunk has an unknown compression method");
      p += 2;
      for (int field = 0; field < 2; ++field) {
        const uint8_t* z = static_cast<const uint8_t*>(std::memchr(p, 0, static_cast<size_t>(end - p)));
        if (!z) return DataLoss("truncated PNG iTXt chunk");
        p = z + 1;
      }
      if (compressed) {
        SD_ASSIGN_OR_RETURN(std::string raw, inflate_text(p, static_cast<size_t>(end - p)));
        texts.emplace_back(key, std::move(raw));
      } else {
        texts.emplace_back(key, std::string(reinterpret_cast<const char*>(p), static_cast<size_t>(end - p)));
      }
    }
  }
  return texts;
}

}  // namespace sd
