// JPEG (libjpeg-turbo) and WebP (libwebp) encoders, format selection for responses, and
// whole-file read/write helpers. Encoders check the image first and turn library errors
// into Status values (libjpeg's error exit longjmps back here).
#include <fcntl.h>
#include <cstdio>  // before jpeglib.h, which uses FILE
#include <jpeglib.h>
#include <sys/stat.h>
#include <unistd.h>
#include <webp/encode.h>

#include <algorithm>
#include <cerrno>
#include <csetjmp>
#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "io/image.h"

namespace sd {
namespace {

struct JpegErrorManager {
  jpeg_error_mgr mgr;
  jmp_buf jump;
  char message[JMSG_LENGTH_MAX];
};

void jpeg_error_exit(j_common_ptr cinfo) {
  auto* err = reinterpret_cast<JpegErrorManager*>(cinfo->err);
  (*cinfo->err->format_message)(cinfo, err->message);
  longjmp(err->jump, 1);
}

void jpeg_silence(j_common_ptr, int) {}

// C-style body: nothing with a destructor lives across setjmp/longjmp. `comment` may be null.
const char* encode_jpeg_raw(const RgbImage& image, int quality, const std::string* comment, unsigned char** buffer,
                            unsigned long* size, JpegErrorManager* err) {
  jpeg_compress_struct cinfo;
  cinfo.err = jpeg_std_error(&err->mgr);
  err->mgr.error_exit = jpeg_error_exit;
  err->mgr.emit_message = jpeg_silence;
  if (setjmp(err->jump)) {
    jpeg_destroy_compress(&cinfo);
    return err->message;
  }
  jpeg_create_compress(&cinfo);
  jpeg_mem_dest(&cinfo, buffer, size);
  cinfo.image_width = static_cast<JDIMENSION>(image.width);
  cinfo.image_height = static_cast<JDIMENSION>(image.height);
  cinfo.input_components = 3;
  cinfo.in_color_space = JCS_RGB;
  jpeg_set_defaults(&cinfo);
  jpeg_set_quality(&cinfo, quality, TRUE);
  jpeg_start_compress(&cinfo, TRUE);
  if (comment && !comment->empty() && comment->size() <= 65533) {
    jpeg_write_marker(&cinfo, JPEG_COM, reinterpret_cast<const JOCTET*>(comment->data()),
                      static_cast<unsigned int>(comment->size()));
  }
  const size_t stride = static_cast<size_t>(image.width) * 3;
  while (cinfo.next_scanline < cinfo.image_height) {
    JSAMPROW row = const_cast<JSAMPROW>(image.rgb.data() + stride * cinfo.next_scanline);
    jpeg_write_scanlines(&cinfo, &row, 1);
  }
  jpeg_finish_compress(&cinfo);
  jpeg_destroy_compress(&cinfo);
  return nullptr;
}

StatusOr<std::vector<uint8_t>> encode_jpeg_with_comment(const RgbImage& image, int quality, const std::string* comment) {
  SD_RETURN_IF_ERROR(check_rgb_image(image, 65500));
  if (quality < 1 || quality > 100) return InvalidArgument("JPEG quality must be in 1..100");
  unsigned char* buffer = nullptr;
  unsigned long size = 0;
  JpegErrorManager err{};
  const char* failure = encode_jpeg_raw(image, quality, comment, &buffer, &size, &err);
  std::vector<uint8_t> out;
  if (!failure && buffer) out.assign(buffer, buffer + size);
  std::free(buffer);
  if (failure) return Internal(std::string("JPEG encoding: ") + failure);
  return out;
}

}  // namespace

StatusOr<ImageFormat> parse_image_format(const std::string& name) {
  std::string n = name;
  std::transform(n.begin(), n.end(), n.begin(), [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  if (n == "png") return ImageFormat::kPNG;
  if (n == "jpeg" || n == "jpg") return ImageFormat::kJPEG;
  if (n == "webp") return ImageFormat::kWebP;
  return InvalidArgument("unknown image format '" + name + "' (expected png, jpeg or webp)");
}

StatusOr<std::vector<uint8_t>> encode_jpeg(const RgbImage& image, int quality) {
  return encode_jpeg_with_comment(image, quality, nullptr);
}

StatusOr<std::vector<uint8_t>> encode_webp(const RgbImage& image, int quality) {
  SD_RETURN_IF_ERROR(check_rgb_image(image, WEBP_MAX_DIMENSION));
  if (quality < 0 || quality > 100) return InvalidArgument("WebP quality must be in 0..100");
  uint8_t* output = nullptr;
  const size_t size = WebPEncodeRGB(image.rgb.data(), image.width, image.height, image.width * 3,
                                    static_cast<float>(quality), &output);
  if (size == 0 || !output) {
    WebPFree(output);
    return Internal("WebP encoding failed");
  }
  std::vector<uint8_t> out(output, output + size);
  WebPFree(output);
  return out;
}

StatusOr<std::vector<uint8_t>> encode_image(const RgbImage& image, ImageFormat format, const std::string& infotext) {
  switch (format) {
    case ImageFormat::kPNG:
      if (infotext.empty()) return encode_png(image);
      return encode_png(image, {{"parameters", infotext}});
    case ImageFormat::kJPEG: return encode_jpeg_with_comment(image, 90, &infotext);
    case ImageFormat::kWebP: return encode_webp(image, 90);
  }
  return InvalidArgument("unknown image format");
}

Status write_file(const std::string& path, const std::vector<uint8_t>& bytes) {
  const std::string tmp = path + ".tmp-" + std::to_string(::getpid());
  FILE* f = std::fopen(tmp.c_str(), "wb");
  if (!f) return InvalidArgument(path + ": cannot create: " + std::strerror(errno));
  bool ok = bytes.empty() || std::fwrite(bytes.data(), 1, bytes.size(), f) == bytes.size();
  ok = (std::fclose(f) == 0) && ok;
  if (!ok || std::rename(tmp.c_str(), path.c_str()) != 0) {
    const int err = errno;
    std::remove(tmp.c_str());
    return Internal(path + ": write failed: " + std::strerror(err));
  }
  return Status::Ok();
}

StatusOr<std::vector<uint8_t>> read_file(const std::string& path, size_t max_bytes) {
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
  if (static_cast<size_t>(st.st_size) > max_bytes) {
    ::close(fd);
    return InvalidArgument(path + ": file is " + std::to_string(st.st_size) + " bytes, over the " +
                           std::to_string(max_bytes) + "-byte limit");
  }
  std::vector<uint8_t> out(static_cast<size_t>(st.st_size));
  size_t done = 0;
  while (done < out.size()) {
    const ssize_t n = ::read(fd, out.data() + done, out.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      ::close(fd);
      return DataLoss(path + ": short read");
    }
    done += static_cast<size_t>(n);
  }
  ::close(fd);
  return out;
}

}  // namespace sd
