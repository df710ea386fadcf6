// Job records and SSE fan-out. Events are `event: queued|step|done|error` with a JSON
// `data:` line; a subscriber first receives the current state, so a late subscriber of a
// finished job still gets `done` (or `error`) and the stream ends.
#include "serving/job_store.h"

#include <random>

namespace sd::serving {

using nlohmann::json;

namespace {
double unix_now() {
  return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
}

std::string new_id() {
  static std::mutex mu;
  static std::mt19937_64 rng{std::random_device{}() ^ (uint64_t(std::random_device{}()) << 32)};
  std::lock_guard<std::mutex> lock(mu);
  char buf[40];
  std::snprintf(buf, sizeof buf, "job_%016llx%016llx", static_cast<unsigned long long>(rng()),
                static_cast<unsigned long long>(rng()));
  return buf;
}

std::string sse(const std::string& event, const json& data) {
  return "event: " + event + "\ndata: " + data.dump(-1, ' ', false, json::error_handler_t::replace) + "\n\n";
}
}  // namespace

std::string JobStore::image_url(const std::string& id, size_t k) { return "/v1/jobs/" + id + "/images/" + std::to_string(k); }

std::optional<std::string> JobStore::create(int steps) {
  std::lock_guard<std::mutex> lock(mu_);
  expire_locked();
  while (jobs_.size() >= max_jobs_ && !finished_order_.empty()) {  // evict the oldest finished
    jobs_.erase(finished_order_.front());
    finished_order_.pop_front();
  }
  if (jobs_.size() >= max_jobs_) return std::nullopt;
  Record r;
  r.id = new_id();
  r.created = unix_now();
  r.steps = steps;
  std::string id = r.id;
  jobs_.emplace(id, std::move(r));
  return id;
}

void JobStore::attach(const std::string& id, std::shared_ptr<Ticket> ticket, int queue_position) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = jobs_.find(id);
  if (it == jobs_.end()) return;
  if (it->second.terminal()) {  // cancelled before the ticket arrived
    ticket->cancel(CancelReason::kClient);
    return;
  }
  it->second.ticket = std::move(ticket);
  if (it->second.status == "queued") it->second.queue_position = std::max(0, queue_position);
}

void JobStore::remove(const std::string& id) {
  std::lock_guard<std::mutex> lock(mu_);
  jobs_.erase(id);
}

size_t JobStore::size() {
  std::lock_guard<std::mutex> lock(mu_);
  return jobs_.size();
}

json JobStore::to_json(const Record& r) const {
  json j = {{"id", r.id},
            {"status", r.status},
            {"created", r.created},
            {"started", r.started > 0 ? json(r.started) : json(nullptr)},
            {"finished", r.finished > 0 ? json(r.finished) : json(nullptr)},
            {"queue_position", r.status == "queued" ? json(r.queue_position) : json(nullptr)},
            {"step", r.step},
            {"steps", r.steps}};
  json images = json::array();
  if (r.images)
    for (size_t k = 0; k < r.images->images.size(); ++k) images.push_back(image_url(r.id, k));
  j["images"] = images;
  j["seeds"] = r.images ? json(r.images->seeds) : json::array();
  if (r.images) j["info"] = r.images->infotext;
  j["error"] = r.error ? json{{"code", r.error->code}, {"message", r.error->message}} : json(nullptr);
  return j;
}

std::string JobStore::event_for(const Record& r) const {
  if (r.status == "queued") return sse("queued", {{"id", r.id}, {"status", r.status}, {"position", r.queue_position}});
  if (r.status == "running")
    return sse("step", {{"id", r.id}, {"status", r.status}, {"step", r.step}, {"steps", r.steps}});
  if (r.status == "succeeded") {
    json j = to_json(r);
    return sse("done", {{"id", r.id}, {"status", r.status}, {"images", j["images"]}, {"seeds", j["seeds"]}});
  }
  return sse("error", {{"id", r.id},
                       {"status", r.status},
                       {"error", r.error ? json{{"code", r.error->code}, {"message", r.error->message}} : json(nullptr)}});
}

void JobStore::publish(Record& r, const std::string& event) {
  for (auto it = r.subscribers.begin(); it != r.subscribers.end();) {
    if ((*it)->closed()) {
      it = r.subscribers.erase(it);
      continue;
    }
    (*it)->stream_write(event);
    ++it;
  }
}

void JobStore::finish(Record& r, const std::string& status) {
  r.status = status;
  r.finished = unix_now();
  r.finished_at = std::chrono::steady_clock::now();
  r.ticket.reset();
  publish(r, event_for(r));
  for (auto& s : r.subscribers) s->stream_end();
  r.subscribers.clear();
  finished_order_.push_back(r.id);
}

void JobStore::on_queued(const std::string& id, int position) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = jobs_.find(id);
  if (it == jobs_.end() || it->second.status != "queued") return;
  it->second.queue_position = position;
  publish(it->second, event_for(it->second));
}

void JobStore::on_step(const std::string& id, int step, int total) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = jobs_.find(id);
  if (it == jobs_.end() || it->second.terminal()) return;
  Record& r = it->second;
  if (r.status == "queued") {
    r.status = "running";
    r.started = unix_now();
  }
  r.step = step;
  r.steps = total;
  publish(r, event_for(r));
}

void JobStore::on_done(const std::string& id, const Expected<EncodedImages>& result) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = jobs_.find(id);
  if (it == jobs_.end() || it->second.terminal()) return;
  Record& r = it->second;
  if (r.started == 0) r.started = unix_now();
  if (result.ok()) {
    r.images = result.value();
    r.step = r.steps;
    finish(r, "succeeded");
  } else {
    r.error = result.error();
    finish(r, result.error().code == "cancelled" ? "cancelled" : "failed");
  }
}

std::optional<json> JobStore::describe(const std::string& id) {
  std::lock_guard<std::mutex> lock(mu_);
  expire_locked();
  auto it = jobs_.find(id);
  if (it == jobs_.end()) return std::nullopt;
  return to_json(it->second);
}

JobStore::CancelResult JobStore::cancel(const std::string& id, CancelReason reason) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = jobs_.find(id);
  if (it == jobs_.end()) return CancelResult::kNotFound;
  Record& r = it->second;
  if (r.terminal()) return CancelResult::kAlreadyFinished;
  if (r.ticket) r.ticket->cancel(reason);
  r.error = ApiError{409, "cancelled", reason == CancelReason::kDisconnect ? "the client disconnected" : "the job was cancelled by the client", {}, 0};
  finish(r, "cancelled");
  return CancelResult::kCancelled;
}

std::optional<std::pair<std::string, std::string>> JobStore::image(const std::string& id, size_t k) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = jobs_.find(id);
  if (it == jobs_.end() || !it->second.images || k >= it->second.images->images.size()) return std::nullopt;
  return std::make_pair(it->second.images->content_type, it->second.images->images[k]);
}

bool JobStore::subscribe(const std::string& id, const std::shared_ptr<Exchange>& stream) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = jobs_.find(id);
  if (it == jobs_.end()) return false;
  Record& r = it->second;
  HttpResponse head;
  head.content_type = "text/event-stream";
  head.headers.emplace_back("X-Accel-Buffering", "no");
  stream->start_stream(std::move(head));
  stream->stream_write(event_for(r));
  if (r.terminal()) {
    stream->stream_end();
  } else {
    r.subscribers.push_back(stream);
  }
  return true;
}

void JobStore::expire_locked() {
  auto now = std::chrono::steady_clock::now();
  while (!finished_order_.empty()) {
    auto it = jobs_.find(finished_order_.front());
    if (it != jobs_.end() && std::chrono::duration<double>(now - it->second.finished_at).count() < ttl_s_) break;
    if (it != jobs_.end()) jobs_.erase(it);
    finished_order_.pop_front();
  }
}

}  // namespace sd::serving
