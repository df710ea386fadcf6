// Literal-only dynamic-Huffman deflate blocks (see deflate_literals.h): byte histogram,
// length-limited code lengths (frequencies halved until the tree fits), canonical codes,
// the code-length header with its run-length symbols 16/17/18, then the literals.
#include "io/deflate_literals.h"

#include <algorithm>
#include <array>
#include <bit>
#include <cstring>
#include <initializer_list>
#include <queue>
#include <utility>

namespace sd {
namespace {

constexpr int kLitCodes = 257;  // bytes 0-255 and end-of-block (256)
constexpr int kEob = 256;
constexpr int kMaxBits = 15;
constexpr int kMaxClBits = 7;
// Order in which the code-length code's lengths are sent (RFC 1951, 3.2.7).
constexpr std::array<int, 19> kClOrder = {16, 17, 18, 0, 8, 7, 9, 6, 10, 5, 11, 4, 12, 3, 13, 2, 14, 1, 15};

static_assert(std::endian::native == std::endian::little, "BitWriter::flush_bytes stores the bit buffer little-endian");

// LSB-first bit writer (deflate's bit order) into a buffer with room for everything written.
class BitWriter {
 public:
  explicit BitWriter(uint8_t* at) : at_(at) {}
  void put(uint32_t bits, int count) {  // count <= 32
    buf_ |= static_cast<uint64_t>(bits) << n_;
    n_ += count;
    if (n_ >= 32) {
      for (int k = 0; k < 4; ++k) *at_++ = static_cast<uint8_t>(buf_ >> (8 * k));
      buf_ >>= 32;
      n_ -= 32;
    }
  }
  // Adds bits without writing out: at most 64 - 8 bits may be pending after a flush_bytes().
  void put_wide(uint32_t bits, int count) {
    buf_ |= static_cast<uint64_t>(bits) << n_;
    n_ += count;
  }
  // Writes out every whole byte (8 bytes stored, n_ / 8 kept), leaving fewer than 8 bits.
  void flush_bytes() {
    std::memcpy(at_, &buf_, 8);  // little-endian: the low bits first
    const int whole = n_ >> 3;
    at_ += whole;
    buf_ = whole == 8 ? 0 : buf_ >> (8 * whole);
    n_ &= 7;
  }
  void align() {  // pads with zero bits to a byte boundary and writes out everything
    while (n_ > 0) {
      *at_++ = static_cast<uint8_t>(buf_);
      buf_ >>= 8;
      n_ = n_ > 8 ? n_ - 8 : 0;
    }
    buf_ = 0;
  }
  void bytes(std::initializer_list<uint8_t> b) {  // only after align()
    for (uint8_t v : b) *at_++ = v;
  }
  uint8_t* at() const { return at_; }

 private:
  uint8_t* at_;
  uint64_t buf_ = 0;
  int n_ = 0;
};

uint32_t reverse_bits(uint32_t code, int len) {
  uint32_t r = 0;
  for (int i = 0; i < len; ++i) r |= ((code >> i) & 1u) << (len - 1 - i);
  return r;
}

// Canonical codes (RFC 1951, 3.2.2) for `lengths`, bit-reversed for the LSB-first writer.
std::vector<uint32_t> canonical_codes(const std::vector<uint8_t>& lengths) {
  std::array<uint32_t, kMaxBits + 2> count{}, next{};
  for (uint8_t l : lengths) ++count[l];
  count[0] = 0;
  uint32_t code = 0;
  for (int bits = 1; bits <= kMaxBits + 1; ++bits) {
    code = (code + count[bits - 1]) << 1;
    next[bits] = code;
  }
  std::vector<uint32_t> codes(lengths.size(), 0);
  for (size_t s = 0; s < lengths.size(); ++s) {
    if (lengths[s] != 0) codes[s] = reverse_bits(next[lengths[s]]++, lengths[s]);
  }
  return codes;
}

// Depth of every leaf of a Huffman tree over the non-zero frequencies (0 for the rest).
std::vector<uint8_t> huffman_depths(const std::vector<uint64_t>& freq) {
  struct Node {
    int parent = -1;
  };
  std::vector<Node> nodes(freq.size());
  using Item = std::pair<uint64_t, int>;  // weight, node
  std::priority_queue<Item, std::vector<Item>, std::greater<>> heap;
  for (size_t s = 0; s < freq.size(); ++s)
    if (freq[s] > 0) heap.emplace(freq[s], static_cast<int>(s));
  while (heap.size() > 1) {
    const Item a = heap.top();
    heap.pop();
    const Item b = heap.top();
    heap.pop();
    const int parent = static_cast<int>(nodes.size());
    nodes.push_back(Node{});
    nodes[static_cast<size_t>(a.second)].parent = parent;
    nodes[static_cast<size_t>(b.second)].parent = parent;
    heap.emplace(a.first + b.first, parent);
  }
  std::vector<uint8_t> depth(freq.size(), 0);
  for (size_t s = 0; s < freq.size(); ++s) {
    if (freq[s] == 0) continue;
    int d = 0;
    for (int n = nodes[s].parent; n >= 0; n = nodes[static_cast<size_t>(n)].parent) ++d;
    depth[s] = static_cast<uint8_t>(std::min(d, 255));
  }
  return depth;
}

}  // namespace

std::vector<uint8_t> huffman_code_lengths(const std::vector<uint32_t>& freq, int max_bits) {
  std::vector<uint64_t> f(freq.begin(), freq.end());
  // A complete code needs two symbols: give unused ones a count of 1 where there are fewer.
  for (size_t s = 0, used = static_cast<size_t>(std::count_if(f.begin(), f.end(), [](uint64_t v) { return v > 0; }));
       used < 2 && s < f.size(); ++s) {
    if (f[s] == 0) {
      f[s] = 1;
      ++used;
    }
  }
  for (;;) {
    std::vector<uint8_t> depth = huffman_depths(f);
    if (*std::max_element(depth.begin(), depth.end()) <= max_bits) return depth;
    // Too deep: flatten the distribution (non-zero counts stay non-zero) and build again.
    for (uint64_t& v : f)
      if (v > 0) v = (v + 1) / 2;
  }
}

void deflate_literals(const uint8_t* data, size_t n, bool last, std::vector<uint8_t>* out) {
  // Histogram in four interleaved tables (fewer store-to-load stalls on runs of one byte).
  std::array<std::array<uint32_t, 256>, 4> hist{};
  size_t i = 0;
  for (; i + 4 <= n; i += 4) {
    ++hist[0][data[i]];
    ++hist[1][data[i + 1]];
    ++hist[2][data[i + 2]];
    ++hist[3][data[i + 3]];
  }
  for (; i < n; ++i) ++hist[0][data[i]];
  std::vector<uint32_t> freq(kLitCodes, 0);
  for (int s = 0; s < 256; ++s) freq[static_cast<size_t>(s)] = hist[0][s] + hist[1][s] + hist[2][s] + hist[3][s];
  freq[kEob] = 1;
  const std::vector<uint8_t> lit_len = huffman_code_lengths(freq, kMaxBits);
  const std::vector<uint32_t> lit_code = canonical_codes(lit_len);

  // Code lengths of the literal/length alphabet (257) then of two 1-bit distance codes (zlib
  // writes the same: a distance code must exist even when no match uses it), run-length coded.
  std::vector<uint8_t> all(lit_len);
  all.push_back(1);
  all.push_back(1);
  struct ClSym {
    uint8_t sym, extra_bits, extra;
  };
  std::vector<ClSym> cl;
  for (size_t k = 0; k < all.size();) {
    const uint8_t v = all[k];
    size_t run = 1;
    while (k + run < all.size() && all[k + run] == v) ++run;
    size_t left = run;
    if (v == 0) {
      while (left >= 11) {
        const size_t r = std::min<size_t>(left, 138);
        cl.push_back({18, 7, static_cast<uint8_t>(r - 11)});
        left -= r;
      }
      if (left >= 3) {
        cl.push_back({17, 3, static_cast<uint8_t>(left - 3)});
        left = 0;
      }
      for (; left > 0; --left) cl.push_back({0, 0, 0});
    } else {
      cl.push_back({v, 0, 0});
      --left;
      while (left >= 3) {
        const size_t r = std::min<size_t>(left, 6);
        cl.push_back({16, 2, static_cast<uint8_t>(r - 3)});
        left -= r;
      }
      for (; left > 0; --left) cl.push_back({v, 0, 0});
    }
    k += run;
  }
  std::vector<uint32_t> cl_freq(19, 0);
  for (const ClSym& c : cl) ++cl_freq[c.sym];
  const std::vector<uint8_t> cl_len = huffman_code_lengths(cl_freq, kMaxClBits);
  const std::vector<uint32_t> cl_code = canonical_codes(cl_len);
  int hclen = 19;
  while (hclen > 4 && cl_len[static_cast<size_t>(kClOrder[static_cast<size_t>(hclen - 1)])] == 0) --hclen;

  // Room for the worst case: 15 bits per literal, the header (< 600 bytes) and the trailer.
  const size_t start = out->size();
  out->resize(start + n * 15 / 8 + 1024);  // (+ 8 bytes of slack for flush_bytes' 8-byte stores)
  BitWriter w(out->data() + start);
  w.put(last ? 1u : 0u, 1);
  w.put(2, 2);  // dynamic Huffman codes
  w.put(kLitCodes - 257, 5);
  w.put(2 - 1, 5);
  w.put(static_cast<uint32_t>(hclen - 4), 4);
  for (int k = 0; k < hclen; ++k) w.put(cl_len[static_cast<size_t>(kClOrder[static_cast<size_t>(k)])], 3);
  for (const ClSym& c : cl) {
    w.put(cl_code[c.sym], cl_len[c.sym]);
    if (c.extra_bits) w.put(c.extra, c.extra_bits);
  }
  // The literals: a table of (code, length) per byte, three symbols per flush (<= 45 bits).
  std::array<uint32_t, 256> code{};
  std::array<uint8_t, 256> len{};
  for (int s = 0; s < 256; ++s) {
    code[static_cast<size_t>(s)] = lit_code[static_cast<size_t>(s)];
    len[static_cast<size_t>(s)] = lit_len[static_cast<size_t>(s)];
  }
  w.flush_bytes();
  i = 0;
  for (; i + 3 <= n; i += 3) {
    const uint8_t a = data[i], b = data[i + 1], c = data[i + 2];
    w.put_wide(code[a], len[a]);
    w.put_wide(code[b], len[b]);
    w.put_wide(code[c], len[c]);
    w.flush_bytes();
  }
  for (; i < n; ++i) w.put(code[data[i]], len[data[i]]);
  w.put(lit_code[kEob], lit_len[kEob]);
  if (!last) {
    w.put(0, 3);  // an empty stored block: byte-aligned LEN 0, NLEN 0xFFFF
    w.align();
    w.bytes({0x00, 0x00, 0xFF, 0xFF});
  } else {
    w.align();
  }
  out->resize(static_cast<size_t>(w.at() - out->data()));
}

}  // namespace sd
