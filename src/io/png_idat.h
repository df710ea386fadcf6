// The image data of a PNG written without libpng's single-threaded row writer: scanlines with
// the Sub filter, deflated (literal-only dynamic Huffman blocks) in horizontal stripes on several
// threads, joined into one valid zlib stream (byte-aligned parts, combined Adler-32) in one IDAT.
#pragma once

#include <cstdint>
#include <vector>

#include "io/image.h"

namespace sd {

// Appends the IDAT chunk of `image` (8-bit RGB, size already checked) and then the IEND chunk
// to `out`, which already holds the signature, IHDR and any text chunks. `threads` <= 0: one
// per hardware thread, at most 8; stripes are never shorter than 32 rows.
Status append_png_idat_iend(const RgbImage& image, int threads, std::vector<uint8_t>* out);

}  // namespace sd
