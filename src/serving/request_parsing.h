// Parsing and validation of generation requests from untrusted JSON bodies: A1111
// /sdapi/v1/txt2img (also the body of POST /v1/jobs) and OpenAI /v1/images/generations.
// Pure functions (no I/O, no globals): every bad input becomes a 4xx ApiError; fuzzed.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <utility>

#include <nlohmann/json.hpp>

#include "pipeline/request.h"
#include "serving/api_error.h"

namespace sd::serving {

constexpr int kMaxJsonDepth = 64;

struct GenerationParams {
  // request.batch_size is the total number of images (batch_size * n_iter); request.seed
  // may be -1 (the server picks one before submitting).
  GenerationRequest request;
  int batch_size = 1;  // images per iteration as asked (A1111 batch_size, OpenAI n)
  int n_iter = 1;      // A1111 iterations (seeds continue across iterations)
  std::string output_format = "png";        // png | jpeg | webp
  int quality = 90;                          // jpeg/webp quality (OpenAI output_compression)
  std::string response_format = "b64_json";  // OpenAI: b64_json | url
  nlohmann::json parameters;  // A1111 "parameters" echo: every known field, effective values
};

// Parses a JSON document, rejecting nesting deeper than kMaxJsonDepth (malformed_json).
Expected<nlohmann::json> parse_json_body(std::string_view body);

// A1111 txt2img fields (prompt, negative_prompt, steps, cfg_scale, width, height, seed,
// batch_size, n_iter, sampler_name | sampler_index, scheduler,
// override_settings.CLIP_stop_at_last_layers, clip_skip; output_format for jobs). Fields it
// does not use are accepted and ignored, as A1111 does.
Expected<GenerationParams> parse_txt2img(std::string_view body, const RequestLimits& limits);

// OpenAI images/generations: prompt (required), n, size "WxH" | "auto", response_format,
// output_format, output_compression, plus negative_prompt, steps, cfg_scale, seed, sampler,
// scheduler, clip_skip. `default_size` is the model's native size (for "auto" / no size).
Expected<GenerationParams> parse_openai_generation(std::string_view body, const RequestLimits& limits,
                                                   int default_size);

// "512x768" -> {512, 768}; "auto" -> {default_size, default_size}. Checks the limits.
Expected<std::pair<int, int>> parse_size(std::string_view size, const RequestLimits& limits, int default_size);

// Number of Unicode code points in UTF-8 text (what "prompt over 4096 characters" counts).
size_t utf8_length(std::string_view text);

}  // namespace sd::serving
