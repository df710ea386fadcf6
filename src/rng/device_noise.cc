// Latent noise on the device (device_noise.h): each image's draw goes through the
// generator's device kernel when it has one, else through the host generator and an upload,
// so callers never care which generator or backend they have.
#include "rng/device_noise.h"

#include <string>

namespace sd {

void fill_randn_nhwc(Backend& backend, NoiseGenerator& gen, const Tensor& out) {
  SD_ASSERT(out.defined() && out.ndim() == 4 && out.dim(0) == 1,
            "fill_randn_nhwc needs one NHWC image [1, h, w, c], got " + out.describe());
  if (gen.fill_randn_device(backend, out, /*nchw_to_nhwc=*/true)) return;
  const int64_t h = out.dim(1), w = out.dim(2), c = out.dim(3);
  const Tensor nchw = gen.randn({1, c, h, w});  // f32 [1, c, h, w] on the host
  backend.copy(backend.upload(nchw_to_nhwc(nchw), out.dtype()), out);
}

Tensor randn_nhwc(Backend& backend, NoiseGenerator& gen, int64_t h, int64_t w, int64_t c, DType dtype) {
  NoiseGenerator* gens[1] = {&gen};
  return randn_nhwc(backend, std::span<NoiseGenerator* const>(gens), h, w, c, dtype);
}

Tensor randn_nhwc(Backend& backend, NoiseGenerator& gen, int64_t h, int64_t w, int64_t c) {
  return randn_nhwc(backend, gen, h, w, c, backend.compute_dtype());
}

Tensor randn_nhwc(Backend& backend, std::span<NoiseGenerator* const> gens, int64_t h, int64_t w, int64_t c,
                  DType dtype) {
  SD_ASSERT(!gens.empty() && h > 0 && w > 0 && c > 0, "randn_nhwc: no generators or an empty shape");
  const int64_t n = static_cast<int64_t>(gens.size());
  Tensor out = backend.empty({n, h, w, c}, dtype);  // [n, h, w, c]
  for (int64_t b = 0; b < n; ++b) {
    NoiseGenerator* gen = gens[static_cast<size_t>(b)];
    SD_ASSERT(gen != nullptr, "randn_nhwc: null generator for image " + std::to_string(b));
    fill_randn_nhwc(backend, *gen, out.slice_rows(b, b + 1));
  }
  return out;
}

}  // namespace sd
