// Field-by-field reading of untrusted JSON into GenerationParams. Every check names the
// field and the allowed range; limits come from RequestLimits (the same numbers as
// GenerationRequest::validate), so all front ends reject the same inputs.
#include "serving/request_parsing.h"

#include <cmath>
#include <limits>
#include <optional>

#include "serving/sampler_names.h"

namespace sd::serving {

using nlohmann::json;

namespace {

constexpr int64_t kMaxSeed = 4294967295;  // A1111 seeds are 32-bit
constexpr int64_t kMaxClipSkip = 24;

std::string type_name(const json& v) { return v.type_name(); }

ApiError wrong_type(const std::string& field, const char* expected, const json& v) {
  return bad_request("wrong_type", "'" + field + "' must be " + expected + ", got " + type_name(v), field);
}

ApiError out_of_range(const std::string& field, const std::string& what) {
  return bad_request("out_of_range", "'" + field + "' " + what, field);
}

// Reads an integer field (integral floats such as 512.0 are accepted, like pydantic).
std::optional<ApiError> read_int(const json& obj, const std::string& field, int64_t lo, int64_t hi, int64_t* out,
                                 const std::string& label = {}) {
  const std::string& name = label.empty() ? field : label;
  auto it = obj.find(field);
  if (it == obj.end() || it->is_null()) return std::nullopt;
  int64_t value = 0;
  if (it->is_number_unsigned()) {
    uint64_t u = it->get<uint64_t>();
    if (u > static_cast<uint64_t>(hi)) return out_of_range(name, "must be in " + std::to_string(lo) + ".." + std::to_string(hi));
    value = static_cast<int64_t>(u);
  } else if (it->is_number_integer()) {
    value = it->get<int64_t>();
  } else if (it->is_number_float()) {
    double d = it->get<double>();
    if (!std::isfinite(d) || std::floor(d) != d) return wrong_type(name, "an integer", *it);
    if (d < static_cast<double>(lo) || d > static_cast<double>(hi))
      return out_of_range(name, "must be in " + std::to_string(lo) + ".." + std::to_string(hi));
    value = static_cast<int64_t>(d);
  } else {
    return wrong_type(name, "an integer", *it);
  }
  if (value < lo || value > hi)
    return out_of_range(name, "must be in " + std::to_string(lo) + ".." + std::to_string(hi) + ", got " +
                                  std::to_string(value));
  *out = value;
  return std::nullopt;
}

std::optional<ApiError> read_float(const json& obj, const std::string& field, double lo, double hi, float* out) {
  auto it = obj.find(field);
  if (it == obj.end() || it->is_null()) return std::nullopt;
  if (!it->is_number()) return wrong_type(field, "a number", *it);
  double d = it->get<double>();
  if (!std::isfinite(d) || d < lo || d > hi) {
    char buf[96];
    std::snprintf(buf, sizeof buf, "must be in %g..%g, got %g", lo, hi, d);
    return out_of_range(field, buf);
  }
  *out = static_cast<float>(d);
  return std::nullopt;
}

std::optional<ApiError> read_string(const json& obj, const std::string& field, std::string* out) {
  auto it = obj.find(field);
  if (it == obj.end() || it->is_null()) return std::nullopt;
  if (!it->is_string()) return wrong_type(field, "a string", *it);
  *out = it->get<std::string>();
  return std::nullopt;
}

std::optional<ApiError> check_prompt(const std::string& field, const std::string& text, const RequestLimits& limits) {
  size_t n = utf8_length(text);
  if (n > limits.max_prompt_chars)
    return bad_request("prompt_too_long",
                       "'" + field + "' has " + std::to_string(n) + " characters, more than the limit of " +
                           std::to_string(limits.max_prompt_chars),
                       field);
  return std::nullopt;
}

std::optional<ApiError> check_dimension(const std::string& field, int64_t v, const RequestLimits& limits) {
  if (v < limits.min_size || v > limits.max_size || v % 8 != 0)
    return out_of_range(field, "must be a multiple of 8 in " + std::to_string(limits.min_size) + ".." +
                                   std::to_string(limits.max_size) + ", got " + std::to_string(v));
  return std::nullopt;
}

// The sampler's display name into the request (after the scheduler, so that DDIM/PLMS
// with the karras schedule are rejected here with a clear message).
std::optional<ApiError> apply_sampler(const std::string& field, const std::string& name, GenerationRequest* req) {
  auto sampler = find_sampler(name);
  if (!sampler)
    return bad_request("unknown_sampler", "unknown sampler '" + name + "' in '" + field + "'; valid samplers: " +
                                              sampler_list_text(), field);
  if (!sampler->supports_karras && req->scheduler == "karras")
    return bad_request("invalid_value", "sampler '" + sampler->name + "' does not support the karras schedule", field);
  req->sampler = sampler->name;
  return std::nullopt;
}

std::optional<ApiError> apply_scheduler(const std::string& field, const std::string& name, GenerationRequest* req) {
  auto scheduler = find_scheduler(name);
  if (!scheduler)
    return bad_request("unknown_scheduler", "unknown scheduler '" + name + "' in '" + field +
                                                "'; valid schedulers: " + scheduler_list_text(), field);
  req->scheduler = scheduler->name;
  return std::nullopt;
}

std::optional<ApiError> check_image_count(int64_t batch, int64_t iters, const RequestLimits& limits,
                                          const std::string& field) {
  if (batch * iters > limits.max_batch_size)
    return bad_request("too_many_images", "the request asks for " + std::to_string(batch * iters) +
                                              " images, more than the limit of " +
                                              std::to_string(limits.max_batch_size) + " per request", field);
  return std::nullopt;
}

// GenerationRequest::validate() has the last word, so the server never accepts what the
// engine would reject.
std::optional<ApiError> final_check(const GenerationRequest& req, const RequestLimits& limits) {
  Status status = req.validate(limits);
  if (!status.ok()) return bad_request("invalid_request", status.message());
  return std::nullopt;
}

// Fields shared by both APIs' SD extensions: steps, cfg_scale, seed, prompts.
#define SD_TRY(expr)                          \
  do {                                        \
    if (auto sd_err_ = (expr)) return *sd_err_; \
  } while (0)

}  // namespace

size_t utf8_length(std::string_view text) {
  size_t n = 0;
  for (unsigned char c : text) n += (c & 0xC0) != 0x80;
  return n;
}

Expected<json> parse_json_body(std::string_view body) {
  // Depth check before building the tree (the DOM and its destructor recurse).
  int depth = 0;
  bool in_string = false, escaped = false;
  for (char c : body) {
    if (in_string) {
      if (escaped) escaped = false;
      else if (c == '\\') escaped = true;
      else if (c == '"') in_string = false;
    } else if (c == '"') {
      in_string = true;
    } else if (c == '[' || c == '{') {
      if (++depth > kMaxJsonDepth)
        return bad_request("malformed_json", "JSON nesting is deeper than " + std::to_string(kMaxJsonDepth));
    } else if (c == ']' || c == '}') {
      --depth;
    }
  }
  json doc = json::parse(body.begin(), body.end(), nullptr, /*allow_exceptions=*/false);
  if (doc.is_discarded()) return bad_request("malformed_json", "the request body is not valid JSON");
  return doc;
}

Expected<std::pair<int, int>> parse_size(std::string_view size, const RequestLimits& limits, int default_size) {
  if (size == "auto") return std::make_pair(default_size, default_size);
  size_t x = size.find_first_of("xX");
  auto digits = [](std::string_view s) {
    if (s.empty() || s.size() > 5) return -1;
    int v = 0;
    for (char c : s) {
      if (c < '0' || c > '9') return -1;
      v = v * 10 + (c - '0');
    }
    return v;
  };
  int w = x == std::string_view::npos ? -1 : digits(size.substr(0, x));
  int h = x == std::string_view::npos ? -1 : digits(size.substr(x + 1));
  if (w < 0 || h < 0)
    return bad_request("invalid_value", "'size' must be \"WIDTHxHEIGHT\" (e.g. \"512x512\") or \"auto\"", "size");
  if (auto e = check_dimension("size", w, limits)) return *e;
  if (auto e = check_dimension("size", h, limits)) return *e;
  return std::make_pair(w, h);
}

namespace {

std::optional<ApiError> read_common(const json& obj, GenerationRequest* req, const RequestLimits& limits,
                                    const char* steps_alias) {
  SD_TRY(read_string(obj, "negative_prompt", &req->negative_prompt));
  SD_TRY(check_prompt("negative_prompt", req->negative_prompt, limits));
  int64_t v = req->steps;
  SD_TRY(read_int(obj, "steps", 1, limits.max_steps, &v));
  if (steps_alias && !obj.contains("steps")) SD_TRY(read_int(obj, steps_alias, 1, limits.max_steps, &v));
  req->steps = static_cast<int>(v);
  SD_TRY(read_float(obj, "cfg_scale", 0.0, limits.max_cfg_scale, &req->cfg_scale));
  v = req->seed;
  SD_TRY(read_int(obj, "seed", -1, kMaxSeed, &v));
  req->seed = v;
  v = req->clip_skip;
  SD_TRY(read_int(obj, "clip_skip", 1, kMaxClipSkip, &v));
  req->clip_skip = static_cast<int>(v);
  std::string scheduler;
  SD_TRY(read_string(obj, "scheduler", &scheduler));
  if (!scheduler.empty()) SD_TRY(apply_scheduler("scheduler", scheduler, req));
  return std::nullopt;
}

}  // namespace

Expected<GenerationParams> parse_txt2img(std::string_view body, const RequestLimits& limits) {
  auto doc = parse_json_body(body);
  if (!doc.ok()) return doc.error();
  const json& obj = doc.value();
  if (!obj.is_object()) return wrong_type("body", "a JSON object", obj);

  GenerationParams p;
  GenerationRequest& req = p.request;
  SD_TRY(read_string(obj, "prompt", &req.prompt));
  SD_TRY(check_prompt("prompt", req.prompt, limits));
  SD_TRY(read_common(obj, &req, limits, nullptr));
  int64_t v = req.width;
  SD_TRY(read_int(obj, "width", 0, 1 << 20, &v));
  SD_TRY(check_dimension("width", v, limits));
  req.width = static_cast<int>(v);
  v = req.height;
  SD_TRY(read_int(obj, "height", 0, 1 << 20, &v));
  SD_TRY(check_dimension("height", v, limits));
  req.height = static_cast<int>(v);
  int64_t batch = 1, iters = 1;
  SD_TRY(read_int(obj, "batch_size", 1, 1 << 20, &batch));
  SD_TRY(read_int(obj, "n_iter", 1, 1 << 20, &iters));
  SD_TRY(check_image_count(batch, iters, limits, batch > limits.max_batch_size ? "batch_size" : "n_iter"));
  p.batch_size = static_cast<int>(batch);
  p.n_iter = static_cast<int>(iters);
  req.batch_size = p.batch_size * p.n_iter;

  // Clip skip: override_settings.CLIP_stop_at_last_layers wins over a top-level clip_skip.
  auto os = obj.find("override_settings");
  if (os != obj.end() && !os->is_null()) {
    if (!os->is_object()) return wrong_type("override_settings", "an object", *os);
    v = req.clip_skip;
    SD_TRY(read_int(*os, "CLIP_stop_at_last_layers", 1, kMaxClipSkip, &v, "override_settings.CLIP_stop_at_last_layers"));
    req.clip_skip = static_cast<int>(v);
  }

  // Sampler: sampler_name, else the deprecated sampler_index (a name, or an index).
  std::string sampler;
  SD_TRY(read_string(obj, "sampler_name", &sampler));
  std::string sampler_field = "sampler_name";
  if (sampler.empty()) {
    auto si = obj.find("sampler_index");
    if (si != obj.end() && si->is_number_integer()) {
      int64_t index = si->get<int64_t>();
      int64_t count = static_cast<int64_t>(sampler_names().size());
      if (index < 0 || index >= count)
        return out_of_range("sampler_index", "must be in 0.." + std::to_string(count - 1));
      sampler = sampler_names()[static_cast<size_t>(index)].name;
    } else {
      SD_TRY(read_string(obj, "sampler_index", &sampler));
    }
    sampler_field = "sampler_index";
  }
  if (sampler.empty()) sampler = "Euler";
  SD_TRY(apply_sampler(sampler_field, sampler, &req));

  SD_TRY(read_string(obj, "output_format", &p.output_format));
  if (p.output_format == "jpg") p.output_format = "jpeg";
  if (p.output_format != "png" && p.output_format != "jpeg" && p.output_format != "webp")
    return bad_request("invalid_value", "'output_format' must be png, jpeg or webp", "output_format");

  SD_TRY(final_check(req, limits));
  p.parameters = {{"prompt", req.prompt},
                  {"negative_prompt", req.negative_prompt},
                  {"styles", obj.value("styles", json(nullptr))},
                  {"seed", req.seed},
                  {"subseed", -1},
                  {"subseed_strength", 0},
                  {"seed_resize_from_h", -1},
                  {"seed_resize_from_w", -1},
                  {"sampler_name", sampler},
                  {"scheduler", req.scheduler},
                  {"batch_size", p.batch_size},
                  {"n_iter", p.n_iter},
                  {"steps", req.steps},
                  {"cfg_scale", req.cfg_scale},
                  {"width", req.width},
                  {"height", req.height},
                  {"restore_faces", nullptr},
                  {"tiling", nullptr},
                  {"do_not_save_samples", false},
                  {"do_not_save_grid", false},
                  {"eta", nullptr},
                  {"denoising_strength", nullptr},
                  {"override_settings", os != obj.end() ? *os : json(nullptr)},
                  {"override_settings_restore_afterwards", true},
                  {"sampler_index", "Euler"},
                  {"script_name", nullptr},
                  {"script_args", json::array()},
                  {"send_images", true},
                  {"save_images", false},
                  {"alwayson_scripts", json::object()}};
  return p;
}

Expected<GenerationParams> parse_openai_generation(std::string_view body, const RequestLimits& limits,
                                                   int default_size) {
  auto doc = parse_json_body(body);
  if (!doc.ok()) return doc.error();
  const json& obj = doc.value();
  if (!obj.is_object()) return wrong_type("body", "a JSON object", obj);

  GenerationParams p;
  GenerationRequest& req = p.request;
  auto prompt = obj.find("prompt");
  if (prompt == obj.end() || prompt->is_null())
    return bad_request("missing_field", "'prompt' is required", "prompt");
  SD_TRY(read_string(obj, "prompt", &req.prompt));
  SD_TRY(check_prompt("prompt", req.prompt, limits));
  SD_TRY(read_common(obj, &req, limits, "sample_steps"));
  int64_t n = 1;
  SD_TRY(read_int(obj, "n", 1, 1 << 20, &n));
  SD_TRY(check_image_count(n, 1, limits, "n"));
  p.batch_size = static_cast<int>(n);
  req.batch_size = p.batch_size;

  std::string size = "auto";
  SD_TRY(read_string(obj, "size", &size));
  auto wh = parse_size(size, limits, default_size);
  if (!wh.ok()) return wh.error();
  req.width = wh->first;
  req.height = wh->second;

  std::string sampler;
  const char* sampler_field = obj.contains("sampler") ? "sampler" : "sampler_name";
  SD_TRY(read_string(obj, sampler_field, &sampler));
  if (sampler.empty()) sampler = "Euler";
  SD_TRY(apply_sampler(sampler_field, sampler, &req));

  SD_TRY(read_string(obj, "response_format", &p.response_format));
  if (p.response_format != "b64_json" && p.response_format != "url")
    return bad_request("invalid_value", "'response_format' must be b64_json or url", "response_format");
  SD_TRY(read_string(obj, "output_format", &p.output_format));
  if (p.output_format == "jpg") p.output_format = "jpeg";
  if (p.output_format != "png" && p.output_format != "jpeg" && p.output_format != "webp")
    return bad_request("invalid_value", "'output_format' must be png, jpeg or webp", "output_format");
  int64_t quality = p.quality;
  SD_TRY(read_int(obj, "output_compression", 0, 100, &quality));
  p.quality = static_cast<int>(quality);
  SD_TRY(final_check(req, limits));
  return p;
}

}  // namespace sd::serving
