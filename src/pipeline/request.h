// What a client asks for (GenerationRequest) and what it gets back (GenerationResult),
// shared by `sdserve generate`, the server's APIs and the scheduler. validate() is the
// single place where request limits live, so every front end rejects the same inputs.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "core/status.h"
#include "tensor/tensor.h"

namespace sd {

enum class RngKind { kCpu, kCuda };  // which reference generator the seeded noise reproduces

struct RequestLimits {
  int min_size = 64, max_size = 2048;  // width/height, multiples of 8
  int max_steps = 150;
  float max_cfg_scale = 30.0f;
  int max_batch_size = 64;             // images per request
  size_t max_prompt_chars = 4096;
};

struct GenerationRequest {
  std::string prompt;
  std::string negative_prompt;
  int width = 512;
  int height = 512;
  int steps = 20;
  std::string sampler = "euler";  // A1111 display name or snake_case id
  std::string scheduler = "automatic";  // A1111 schedule type: automatic|uniform|karras
  float cfg_scale = 7.0f;
  int64_t seed = -1;    // -1: random; image k uses seed + k
  int batch_size = 1;
  int clip_skip = 1;    // 1 = last layer, 2 = penultimate (+ final layer norm), ...
  RngKind rng = RngKind::kCpu;
  // Optional [N,4,H/8,W/8] NCHW f32 host tensor used instead of seeded noise (unit normal,
  // before scaling by the sampler's init_noise_sigma).
  std::optional<Tensor> init_latents;

  // Checks every field against the limits; the message names the field.
  Status validate(const RequestLimits& limits = {}) const;
};

// An 8-bit RGB image, row-major [height, width, 3].
struct Image {
  int width = 0, height = 0;
  std::vector<uint8_t> rgb;
};

struct GenerationResult {
  std::vector<Image> images;
  std::vector<int64_t> seeds;       // per image
  std::string infotext;             // AUTOMATIC1111 "parameters" text of the first image
  std::vector<std::string> infotexts;  // per image
  Tensor final_latents;             // [N,4,H/8,W/8] NCHW f32 host, before 1/scaling_factor
  double seconds_text = 0, seconds_denoise = 0, seconds_decode = 0;
};

// Called after every denoising step with (step done, total); returning false cancels.
using ProgressCallback = std::function<bool(int step, int total)>;

}  // namespace sd
