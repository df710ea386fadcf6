// Standard-normal latents on a backend's device, drawn per image as NCHW [1, C, h, w] from a
// NoiseGenerator (as diffusers/A1111 draw them) and stored NHWC in the compute dtype: on the
// GPU when generator and backend allow (torch CUDA + CUDA backend), else drawn on the host.
#pragma once

#include <cstdint>
#include <span>

#include "backend/backend.h"
#include "rng/noise.h"

namespace sd {

// Fills `out` ([1, h, w, c] NHWC on `backend`, f32/f16/bf16) with gen's next randn of shape
// [1, c, h, w], continuing its stream. Device kernel when available; otherwise fill_randn on
// the host, NCHW -> NHWC, upload and copy into out. Both give the same values (the GPU's
// __sincosf may differ from the host model in the last float bit: see noise.h).
void fill_randn_nhwc(Backend& backend, NoiseGenerator& gen, const Tensor& out);

// A fresh [1, h, w, c] tensor in `dtype` (default: the backend's compute dtype).
Tensor randn_nhwc(Backend& backend, NoiseGenerator& gen, int64_t h, int64_t w, int64_t c);
Tensor randn_nhwc(Backend& backend, NoiseGenerator& gen, int64_t h, int64_t w, int64_t c, DType dtype);

// [n, h, w, c] with row b drawn from gens[b] (n = gens.size() >= 1): initial latents of a
// batch and ancestral samplers' fresh noise.
Tensor randn_nhwc(Backend& backend, std::span<NoiseGenerator* const> gens, int64_t h, int64_t w, int64_t c,
                  DType dtype);

}  // namespace sd
