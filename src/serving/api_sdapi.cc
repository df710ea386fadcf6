// AUTOMATIC1111-compatible routes: POST /sdapi/v1/txt2img ({images, parameters, info})
// and the discovery GETs clients call first (samplers, schedulers, sd-models, options,
// progress). No route loads models or reads files named by the client.
#include <chrono>
#include <ctime>

#include <nlohmann/json.hpp>

#include "serving/sampler_names.h"
#include "serving/server_state.h"

namespace sd::serving {

using nlohmann::json;

namespace {

std::string file_name(const std::string& path) {
  size_t slash = path.find_last_of('/');
  return slash == std::string::npos ? path : path.substr(slash + 1);
}

std::string job_timestamp() {
  std::time_t t = std::time(nullptr);
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y%m%d%H%M%S", &tm);
  return buf;
}

// The `info` JSON string of A1111's txt2img response.
json build_info(const GenerationParams& p, const EncodedImages& out, const EngineInfo& engine) {
  const GenerationRequest& r = p.request;
  size_t n = out.images.size();
  json all_prompts = json::array(), all_negative = json::array(), subseeds = json::array();
  for (size_t i = 0; i < n; ++i) {
    all_prompts.push_back(r.prompt);
    all_negative.push_back(r.negative_prompt);
    subseeds.push_back(out.seeds.size() > i ? out.seeds[i] : 0);
  }
  int64_t seed = out.seeds.empty() ? r.seed : out.seeds.front();
  return {{"prompt", r.prompt},
          {"all_prompts", all_prompts},
          {"negative_prompt", r.negative_prompt},
          {"all_negative_prompts", all_negative},
          {"seed", seed},
          {"all_seeds", out.seeds},
          {"subseed", seed},
          {"all_subseeds", subseeds},
          {"subseed_strength", 0},
          {"width", r.width},
          {"height", r.height},
          {"sampler_name", r.sampler},
          {"scheduler", r.scheduler},
          {"cfg_scale", r.cfg_scale},
          {"steps", r.steps},
          {"batch_size", p.batch_size},
          {"n_iter", p.n_iter},
          {"restore_faces", false},
          {"face_restoration_model", nullptr},
          {"sd_model_name", engine.model_name},
          {"sd_model_hash", nullptr},
          {"sd_vae_name", nullptr},
          {"sd_vae_hash", nullptr},
          {"seed_resize_from_w", -1},
          {"seed_resize_from_h", -1},
          {"denoising_strength", nullptr},
          {"extra_generation_params", json::object()},
          {"index_of_first_image", 0},
          {"infotexts", out.infotexts},
          {"styles", json::array()},
          {"job_timestamp", job_timestamp()},
          {"clip_skip", r.clip_skip},
          {"is_using_inpainting_conditioning", false},
          {"version", "sdserve 0.1.0"}};
}

}  // namespace

void add_sdapi_routes(ServerState& state) {
  ServerState* s = &state;
  state.router.add("POST", "/sdapi/v1/txt2img", "sdapi", [s](const std::shared_ptr<Exchange>& ex, const PathParams&) {
    auto parsed = parse_txt2img(ex->request().body, s->options.limits);
    if (!parsed.ok()) return ex->respond(error_response(parsed.error()));
    auto params = std::make_shared<GenerationParams>(std::move(parsed.value()));
    params->output_format = "png";  // A1111 returns PNG
    GenerationCallbacks callbacks;
    callbacks.on_done = [ex, params, s](const Expected<EncodedImages>& result) {
      if (!result.ok()) return ex->respond(error_response(result.error()));
      json images = json::array();
      for (const auto& bytes : result->images) images.push_back(base64_encode(bytes));
      json info = build_info(*params, result.value(), s->info());
      json body = {{"images", std::move(images)},
                   {"parameters", params->parameters},
                   {"info", info.dump(-1, ' ', false, json::error_handler_t::replace)}};
      ex->respond(json_response(200, body.dump(-1, ' ', false, json::error_handler_t::replace)));
    };
    auto ticket = s->run_generation(*params, std::move(callbacks));
    if (!ticket.ok()) return ex->respond(error_response(ticket.error()));
    cancel_on_disconnect(ex, ticket.value());
  });

  state.router.add("GET", "/sdapi/v1/samplers", "sdapi", [](const std::shared_ptr<Exchange>& ex, const PathParams&) {
    json list = json::array();
    for (const auto& sampler : sampler_names()) {
      json options = json::object();
      if (sampler.karras_default) options["scheduler"] = "karras";
      list.push_back({{"name", sampler.name}, {"aliases", sampler.aliases}, {"options", options}});
    }
    ex->respond(json_response(200, list.dump()));
  });

  state.router.add("GET", "/sdapi/v1/schedulers", "sdapi", [](const std::shared_ptr<Exchange>& ex, const PathParams&) {
    json list = json::array();
    for (const auto& scheduler : scheduler_names())
      list.push_back({{"name", scheduler.name},
                      {"label", scheduler.label},
                      {"aliases", nullptr},
                      {"default_rho", scheduler.name == "karras" ? json(7.0) : json(-1)},
                      {"need_inner_model", false}});
    ex->respond(json_response(200, list.dump()));
  });

  state.router.add("GET", "/sdapi/v1/sd-models", "sdapi", [s](const std::shared_ptr<Exchange>& ex, const PathParams&) {
    json list = json::array();
    if (s->attached.load()) {
      EngineInfo info = s->info();
      list.push_back({{"title", info.model_name},
                      {"model_name", info.model_name},
                      {"hash", nullptr},
                      {"sha256", nullptr},
                      {"filename", file_name(info.model_path)},
                      {"config", nullptr}});
    }
    ex->respond(json_response(200, list.dump()));
  });

  state.router.add("GET", "/sdapi/v1/options", "sdapi", [s](const std::shared_ptr<Exchange>& ex, const PathParams&) {
    EngineInfo info = s->info();
    json options = {{"sd_model_checkpoint", s->attached.load() ? json(info.model_name) : json(nullptr)},
                    {"sd_checkpoint_hash", nullptr},
                    {"CLIP_stop_at_last_layers", 1},
                    {"samples_format", "png"},
                    {"sd_vae", "Automatic"},
                    {"eta_noise_seed_delta", 0},
                    {"randn_source", "CPU"}};
    ex->respond(json_response(200, options.dump()));
  });

  state.router.add("GET", "/sdapi/v1/progress", "sdapi", [s](const std::shared_ptr<Exchange>& ex, const PathParams&) {
    ProgressSnapshot p;
    int64_t jobs = 0;
    if (s->attached.load()) {
      p = s->scheduler->progress();
      jobs = s->scheduler->inflight();
    }
    double progress = p.steps > 0 ? static_cast<double>(p.step) / p.steps : 0.0;
    double eta = p.steps > 0 ? (p.steps - p.step) * p.seconds_per_step : 0.0;
    json body = {{"progress", progress},
                 {"eta_relative", eta},
                 {"state",
                  {{"skipped", false},
                   {"interrupted", false},
                   {"stopping_generation", false},
                   {"job", p.running > 0 ? "txt2img" : ""},
                   {"job_count", jobs},
                   {"job_timestamp", "0"},
                   {"job_no", 0},
                   {"sampling_step", p.step},
                   {"sampling_steps", p.steps},
                   {"queued", p.waiting},
                   {"running", p.running}}},
                 {"current_image", nullptr},
                 {"textinfo", nullptr}};
    ex->respond(json_response(200, body.dump()));
  });
}

}  // namespace sd::serving
