// PNG IDAT encoding in parallel stripes (see png_idat.h). Each stripe is one literal-only deflate
// block (deflate_literals.h) ending on a byte boundary (an empty stored block after all but the
// last), so their concatenation after one zlib header is one valid stream; checksums combined.
#include "io/png_idat.h"

#include "io/deflate_literals.h"

#include <zlib.h>

#include <algorithm>
#include <mutex>
#include <thread>

namespace sd {
namespace {

struct Stripe {
  int row0 = 0, row1 = 0;
  bool last = false;
  std::vector<uint8_t> deflated;
  uLong adler = 1;
  uLong crc = 0;  // CRC-32 of `deflated`
  size_t filtered_bytes = 0;
};

// Byte buffers of earlier encodings kept for reuse: a fresh large allocation costs a page fault
// per 4 KiB on first touch (about 1 ms for the buffers of one 512x512 image); a reused one not.
class ScratchPool {
 public:
  std::vector<uint8_t> take() {
    std::lock_guard<std::mutex> lock(mu_);
    if (free_.empty()) return {};
    std::vector<uint8_t> v = std::move(free_.back());
    free_.pop_back();
    return v;
  }
  void give(std::vector<uint8_t> v) {
    if (v.capacity() > kMaxKeptBytes) return;
    v.clear();
    std::lock_guard<std::mutex> lock(mu_);
    if (free_.size() < kMaxKept) free_.push_back(std::move(v));
  }

 private:
  static constexpr size_t kMaxKept = 64;
  static constexpr size_t kMaxKeptBytes = size_t{32} << 20;
  std::mutex mu_;
  std::vector<std::vector<uint8_t>> free_;
};

ScratchPool& scratch_pool() {
  static ScratchPool pool;
  return pool;
}

// Sub-filtered scanlines of rows [row0, row1): each row is a filter byte (1) then
// x[i] - x[i - 3] (mod 256), the first pixel as is.
void deflate_stripe(const RgbImage& image, Stripe* s) {
  const size_t stride = static_cast<size_t>(image.width) * 3;
  std::vector<uint8_t> filtered = scratch_pool().take();
  filtered.resize((stride + 1) * static_cast<size_t>(s->row1 - s->row0));
  s->deflated = scratch_pool().take();
  uint8_t* f = filtered.data();
  for (int y = s->row0; y < s->row1; ++y) {
    const uint8_t* p = image.rgb.data() + stride * static_cast<size_t>(y);
    *f++ = 1;  // Sub
    for (size_t i = 0; i < std::min<size_t>(3, stride); ++i) *f++ = p[i];
    for (size_t i = 3; i < stride; ++i) *f++ = static_cast<uint8_t>(p[i] - p[i - 3]);
  }
  s->filtered_bytes = filtered.size();
  s->adler = adler32(adler32(0L, Z_NULL, 0), filtered.data(), static_cast<uInt>(filtered.size()));
  deflate_literals(filtered.data(), filtered.size(), s->last, &s->deflated);
  s->crc = crc32(crc32(0L, Z_NULL, 0), s->deflated.data(), static_cast<uInt>(s->deflated.size()));
  scratch_pool().give(std::move(filtered));
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
  // The chunk's CRC: type and zlib header here, each part's CRC (computed beside its
  // deflation) combined in, then the Adler-32 trailer.
  uLong crc = crc32(crc32(0L, Z_NULL, 0), out->data() + type_at, static_cast<uInt>(out->size() - type_at));
  for (Stripe& s : stripes) {
    out->insert(out->end(), s.deflated.begin(), s.deflated.end());
    crc = crc32_combine(crc, s.crc, static_cast<z_off_t>(s.deflated.size()));
    scratch_pool().give(std::move(s.deflated));
  }
  const size_t adler_at = out->size();
  put_be32(out, static_cast<uint32_t>(adler));
  crc = crc32(crc, out->data() + adler_at, 4);
  put_be32(out, static_cast<uint32_t>(crc));
  static const uint8_t kIend[12] = {0, 0, 0, 0, 'I', 'E', 'N', 'D', 0xAE, 0x42, 0x60, 0x82};
  out->insert(out->end(), kIend, kIend + 12);
  return Status::Ok();
}

}  // namespace sd
