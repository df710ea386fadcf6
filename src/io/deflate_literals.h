// A fast deflate encoder for PNG image data: one block of literals only (no LZ77 matches)
// with a dynamic Huffman code built from the data's byte histogram (RFC 1951, BTYPE 2).
// On Sub-filtered images it compresses like zlib's Huffman-only strategy, several times faster.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

namespace sd {

// Appends one raw deflate block coding data[0, n) to `out`, ending on a byte boundary. `last`:
// the final block of the stream (BFINAL set); otherwise an empty stored block follows (as
// zlib's Z_SYNC_FLUSH writes), so that separately encoded parts can be concatenated into one
// stream.
void deflate_literals(const uint8_t* data, size_t n, bool last, std::vector<uint8_t>* out);

// Lengths (<= max_bits) of a length-limited prefix code for `freq` (0 for unused symbols); at
// least two symbols get a non-zero length so the code is complete. Exposed for tests.
std::vector<uint8_t> huffman_code_lengths(const std::vector<uint32_t>& freq, int max_bits);

}  // namespace sd
