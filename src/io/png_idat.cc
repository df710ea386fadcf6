// PNG IDAT encoding in parallel stripes (see png_idat.h). Each stripe is an independent raw
// deflate stream ending on a byte boundary (Z_SYNC_FLUSH; the last one Z_FINISH), so their
// concatenation after one zlib header is a single valid stream; Adler-32 values are combined.
#include "io/png_idat.h"

#include <zlib.h>

#include <algorithm>
#include <string>
#include <thread>

namespace sd {
namespace {

struct Stripe {
  int row0 = 0, row1 = 0;
  bool last = false;
  std::vector<uint8_t> deflated;
  uLong adler = 1;
  size_t filtered_bytes = 0;
  std::string error;
};

// Sub-filtered scanlines of rows [row0, row1): each row is a filter byte (1) then
// x[i] - x[i - 3] (mod 256), the first pixel as is.
void deflate_stripe(const RgbImage& image, Stripe* s) {
  const size_t stride = static_cast<size_t>(image.width) * 3;
  std::vector<uint8_t> filtered((stride + 1) * static_cast<size_t>(s->row1 - s->row0));
  uint8_t* f = filtered.data();
  for (int y = s->row0; y < s->row1; ++y) {
    const uint8_t* p = image.rgb.data() + stride * static_cast<size_t>(y);
    *f++ = 1;  // Sub
    for (size_t i = 0; i < std::min<size_t>(3, stride); ++i) *f++ = p[i];
    for (size_t i = 3; i < stride; ++i) *f++ = static_cast<uint8_t>(p[i] - p[i - 3]);
  }
  s->filtered_bytes = filtered.size();
  s->adler = adler32(adler32(0L, Z_NULL, 0), filtered.data(), static_cast<uInt>(filtered.size()));
  z_stream z{};
  if (deflateInit2(&z, 1, Z_DEFLATED, -15, 8, Z_RLE) != Z_OK) {
    s->error = "deflateInit2 failed";
    return;
  }
  s->deflated.resize(deflateBound(&z, static_cast<uLong>(filtered.size())) + 64);
  z.next_in = filtered.data();
  z.avail_in = static_cast<uInt>(filtered.size());
  size_t written = 0;
  for (;;) {
    z.next_out = s->deflated.data() + written;
    z.avail_out = static_cast<uInt>(s->deflated.size() - written);
    const int rc = deflate(&z, s->last ? Z_FINISH : Z_SYNC_FLUSH);
    written = s->deflated.size() - z.avail_out;
    if (rc == Z_STREAM_ERROR) {
      s->error = "deflate failed";
      break;
    }
    const bool done = s->last ? rc == Z_STREAM_END : (z.avail_in == 0 && z.avail_out > 0);
    if (done) break;
    s->deflated.resize(s->deflated.size() * 2);  // rare: the bound was not enough
  }
  deflateEnd(&z);
  s->deflated.resize(written);
}

void put_be32(std::vector<uint8_t>* out, uint32_t v) {
  out->push_back(static_cast<uint8_t>(v >> 24));
  out->push_back(static_cast<uint8_t>(v >> 16));
  out->push_back(static_cast<uint8_t>(v >> 8));
  out->push_back(static_cast<uint8_t>(v));
}

}  // namespace

Status append_png_idat_iend(const RgbImage& image, int threads, std::vector<uint8_t>* out) {
  if (threads <= 0) threads = static_cast<int>(std::clamp(std::thread::hardware_concurrency(), 1u, 8u));
  const size_t filtered_total = (static_cast<size_t>(image.width) * 3 + 1) * static_cast<size_t>(image.height);
  if (filtered_total > (size_t{1} << 31)) return InvalidArgument("PNG encoding: image too large");
  const int parts = std::clamp(image.height / 32, 1, threads);
  std::vector<Stripe> stripes(static_cast<size_t>(parts));
  for (int i = 0; i < parts; ++i) {
    stripes[i].row0 = static_cast<int>(int64_t{image.height} * i / parts);
    stripes[i].row1 = static_cast<int>(int64_t{image.height} * (i + 1) / parts);
    stripes[i].last = i + 1 == parts;
  }
  std::vector<std::thread> pool;
  for (int i = 1; i < parts; ++i) pool.emplace_back(deflate_stripe, std::cref(image), &stripes[i]);
  deflate_stripe(image, &stripes[0]);
  for (std::thread& t : pool) t.join();

  uLong adler = adler32(0L, Z_NULL, 0);
  size_t deflated = 0;
  for (const Stripe& s : stripes) {
    if (!s.error.empty()) return Internal("PNG encoding: " + s.error);
    adler = adler32_combine(adler, s.adler, static_cast<z_off_t>(s.filtered_bytes));
    deflated += s.deflated.size();
  }
  const size_t data_len = 2 + deflated + 4;  // zlib header, deflate parts, Adler-32
  if (data_len > 0x7fffffffu) return InvalidArgument("PNG encoding: image data too large");
  out->reserve(out->size() + data_len + 24);
  put_be32(out, static_cast<uint32_t>(data_len));
  const size_t type_at = out->size();
  for (char c : {'I', 'D', 'A', 'T'}) out->push_back(static_cast<uint8_t>(c));
  out->push_back(0x78);  // deflate, 32 KiB window
  out->push_back(0x01);  // fastest; (0x78 << 8 | 0x01) % 31 == 0
  for (const Stripe& s : stripes) out->insert(out->end(), s.deflated.begin(), s.deflated.end());
  put_be32(out, static_cast<uint32_t>(adler));
  const uLong crc = crc32(crc32(0L, Z_NULL, 0), out->data() + type_at, static_cast<uInt>(out->size() - type_at));
  put_be32(out, static_cast<uint32_t>(crc));
  static const uint8_t kIend[12] = {0, 0, 0, 0, 'I', 'E', 'N', 'D', 0xAE, 0x42, 0x60, 0x82};
  out->insert(out->end(), kIend, kIend + 12);
  return Status::Ok();
}

}  // namespace sd
