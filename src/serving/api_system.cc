// Operational routes: GET /health/live (always 200), GET /health/ready (503 while loading
// or draining; both open without an API key), GET /metrics (Prometheus text format) and
// GET /v1/models (OpenAI model list).
#include <nlohmann/json.hpp>

#include "serving/server_state.h"

namespace sd::serving {

using nlohmann::json;

void add_system_routes(ServerState& state) {
  ServerState* s = &state;
  state.router.add("GET", "/health/live", "health", [](const std::shared_ptr<Exchange>& ex, const PathParams&) {
    ex->respond(json_response(200, R"({"status":"ok"})"));
  }, /*open=*/true);

  state.router.add("GET", "/health/ready", "health", [s](const std::shared_ptr<Exchange>& ex, const PathParams&) {
    if (s->ready.load()) return ex->respond(json_response(200, R"({"status":"ready"})"));
    HttpResponse r = json_response(503, s->draining.load() ? R"({"status":"draining"})" : R"({"status":"loading"})");
    r.headers.emplace_back("Retry-After", std::to_string(s->options.retry_after_s));
    ex->respond(std::move(r));
  }, /*open=*/true);

  state.router.add("GET", "/metrics", "metrics", [s](const std::shared_ptr<Exchange>& ex, const PathParams&) {
    HttpResponse r;
    r.content_type = "text/plain; version=0.0.4; charset=utf-8";
    r.body = s->metrics.render(s->gauges());
    ex->respond(std::move(r));
  });

  state.router.add("GET", "/v1/models", "openai", [s](const std::shared_ptr<Exchange>& ex, const PathParams&) {
    json data = json::array();
    if (s->attached.load()) {
      auto created = std::chrono::duration_cast<std::chrono::seconds>(s->started_at.time_since_epoch()).count();
      data.push_back({{"id", s->info().model_name}, {"object", "model"}, {"created", created}, {"owned_by", "sdserve"}});
    }
    ex->respond(json_response(200, json{{"object", "list"}, {"data", data}}.dump()));
  });
}

}  // namespace sd::serving
