// OpenAI-compatible POST /v1/images/generations: {created, data: [{b64_json}]} (or
// [{url}] served from the job store with response_format=url), with SD extensions as
// extra body fields (negative_prompt, steps, cfg_scale, seed, sampler, scheduler).
#include <chrono>

#include <nlohmann/json.hpp>

#include "serving/server_state.h"

namespace sd::serving {

using nlohmann::json;

namespace {

int64_t unix_seconds() {
  return std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch()).count();
}

// "http://host:port" from the Host header when it looks like a host name, else the bind address.
std::string base_url(const HttpRequest& request, const ServerState& s) {
  std::string host = request.header("host");
  bool valid = !host.empty() && host.size() < 256;
  for (char c : host)
    valid = valid && (std::isalnum(static_cast<unsigned char>(c)) || c == '.' || c == '-' || c == ':' || c == '[' || c == ']');
  if (!valid) host = s.options.host + ":" + std::to_string(s.http ? s.http->port() : s.options.port);
  return "http://" + host;
}

json response_meta(const GenerationParams& p) {
  return {{"created", unix_seconds()},
          {"output_format", p.output_format},
          {"size", std::to_string(p.request.width) + "x" + std::to_string(p.request.height)}};
}

}  // namespace

void add_openai_routes(ServerState& state) {
  ServerState* s = &state;
  state.router.add("POST", "/v1/images/generations", "openai", [s](const std::shared_ptr<Exchange>& ex, const PathParams&) {
    int default_size = s->attached.load() ? s->info().default_size : 512;
    auto parsed = parse_openai_generation(ex->request().body, s->options.limits, default_size);
    if (!parsed.ok()) return ex->respond(error_response(parsed.error()));
    auto params = std::make_shared<GenerationParams>(std::move(parsed.value()));

    if (params->response_format == "url") {
      // Images are kept in the job store and served from /v1/jobs/{id}/images/{k}.
      std::string base = base_url(ex->request(), *s);
      auto id = submit_job(*s, *params, [ex, params, base](const std::string& job_id, const Expected<EncodedImages>& result) {
        if (!result.ok()) return ex->respond(error_response(result.error()));
        json body = response_meta(*params);
        json data = json::array();
        for (size_t k = 0; k < result->images.size(); ++k)
          data.push_back({{"url", base + JobStore::image_url(job_id, k)}});
        body["data"] = data;
        ex->respond(json_response(200, body.dump()));
      });
      if (!id.ok()) return ex->respond(error_response(id.error()));
      ex->on_close([s, id = id.value()] { s->jobs.cancel(id, CancelReason::kDisconnect); });
      return;
    }

    GenerationCallbacks callbacks;
    callbacks.on_done = [ex, params](const Expected<EncodedImages>& result) {
      if (!result.ok()) return ex->respond(error_response(result.error()));
      json body = response_meta(*params);
      json data = json::array();
      for (const auto& bytes : result->images) data.push_back({{"b64_json", base64_encode(bytes)}, {"revised_prompt", nullptr}});
      body["data"] = std::move(data);
      ex->respond(json_response(200, body.dump()));
    };
    auto ticket = s->run_generation(*params, std::move(callbacks));
    if (!ticket.ok()) return ex->respond(error_response(ticket.error()));
    cancel_on_disconnect(ex, ticket.value());
  });
}

}  // namespace sd::serving
