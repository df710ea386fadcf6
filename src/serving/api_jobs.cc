// Asynchronous jobs: POST /v1/jobs (A1111 txt2img body) -> 202 {id, status}; GET the job,
// its Server-Sent Events stream (queued / step / done / error), its images; DELETE cancels.
// Jobs are not cancelled when the submitting client disconnects.
#include <nlohmann/json.hpp>

#include "serving/server_state.h"

namespace sd::serving {

using nlohmann::json;

Expected<std::string> submit_job(ServerState& state, const GenerationParams& params,
                                 std::function<void(const std::string& job_id, const Expected<EncodedImages>&)> also_on_done) {
  ServerState* s = &state;
  if (s->draining.load())
    return ApiError{503, "draining", "the server is shutting down and accepts no new work", {}, s->options.retry_after_s};
  auto id = s->jobs.create(params.request.steps);
  if (!id) return ApiError{503, "too_many_jobs", "too many unfinished jobs", {}, s->options.retry_after_s};
  std::string job = *id;
  GenerationCallbacks callbacks;
  callbacks.on_queued = [s, job](int position) { s->jobs.on_queued(job, position); };
  callbacks.on_step = [s, job](int step, int total) { s->jobs.on_step(job, step, total); };
  callbacks.on_done = [s, job, also = std::move(also_on_done)](const Expected<EncodedImages>& result) {
    s->jobs.on_done(job, result);
    if (also) also(job, result);
  };
  auto ticket = s->run_generation(params, std::move(callbacks));
  if (!ticket.ok()) {
    s->jobs.remove(job);
    return ticket.error();
  }
  s->jobs.attach(job, ticket.value(), ticket.value()->queue_position());
  return job;
}

void add_job_routes(ServerState& state) {
  ServerState* s = &state;
  state.router.add("POST", "/v1/jobs", "jobs", [s](const std::shared_ptr<Exchange>& ex, const PathParams&) {
    auto parsed = parse_txt2img(ex->request().body, s->options.limits);
    if (!parsed.ok()) return ex->respond(error_response(parsed.error()));
    auto id = submit_job(*s, parsed.value());
    if (!id.ok()) return ex->respond(error_response(id.error()));
    auto job = s->jobs.describe(id.value());
    json body = {{"id", id.value()},
                 {"status", job ? (*job)["status"] : json("queued")},
                 {"queue_position", job ? (*job)["queue_position"] : json(nullptr)},
                 {"url", "/v1/jobs/" + id.value()},
                 {"events_url", "/v1/jobs/" + id.value() + "/events"}};
    HttpResponse r = json_response(202, body.dump());
    r.headers.emplace_back("Location", "/v1/jobs/" + id.value());
    ex->respond(std::move(r));
  });

  auto not_found = [](const std::string& id) {
    return error_response(ApiError{404, "not_found", "no job '" + id + "' (finished jobs expire)", "id", 0});
  };

  state.router.add("GET", "/v1/jobs/{id}", "jobs", [s, not_found](const std::shared_ptr<Exchange>& ex, const PathParams& p) {
    auto job = s->jobs.describe(p.at("id"));
    if (!job) return ex->respond(not_found(p.at("id")));
    ex->respond(json_response(200, job->dump(-1, ' ', false, json::error_handler_t::replace)));
  });

  state.router.add("GET", "/v1/jobs/{id}/events", "jobs",
                   [s, not_found](const std::shared_ptr<Exchange>& ex, const PathParams& p) {
                     if (!s->jobs.subscribe(p.at("id"), ex)) ex->respond(not_found(p.at("id")));
                   });

  state.router.add("GET", "/v1/jobs/{id}/images/{k}", "jobs",
                   [s](const std::shared_ptr<Exchange>& ex, const PathParams& p) {
                     const std::string& k = p.at("k");
                     size_t index = 0;
                     bool digits = !k.empty() && k.size() <= 6;
                     for (char c : k) {
                       digits = digits && c >= '0' && c <= '9';
                       if (digits) index = index * 10 + static_cast<size_t>(c - '0');
                     }
                     auto image = digits ? s->jobs.image(p.at("id"), index) : std::nullopt;
                     if (!image)
                       return ex->respond(error_response(ApiError{
                           404, "not_found", "no image " + k + " for job '" + p.at("id") + "' (yet)", "k", 0}));
                     HttpResponse r;
                     r.content_type = image->first;
                     r.body = std::move(image->second);
                     ex->respond(std::move(r));
                   });

  state.router.add("DELETE", "/v1/jobs/{id}", "jobs", [s, not_found](const std::shared_ptr<Exchange>& ex, const PathParams& p) {
    switch (s->jobs.cancel(p.at("id"))) {
      case JobStore::CancelResult::kNotFound:
        return ex->respond(not_found(p.at("id")));
      case JobStore::CancelResult::kAlreadyFinished:
        return ex->respond(error_response(
            ApiError{409, "already_finished", "job '" + p.at("id") + "' has already finished", "id", 0}));
      case JobStore::CancelResult::kCancelled:
        return ex->respond(json_response(200, json{{"id", p.at("id")}, {"status", "cancelled"}}.dump()));
    }
  });
}

}  // namespace sd::serving
