// JobStore: records of asynchronous generations (POST /v1/jobs) — state, progress, the
// encoded images — and their Server-Sent Events subscribers. Finished jobs expire after
// a TTL; the number of records is bounded.
#pragma once

#include <chrono>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "serving/api_error.h"
#include "serving/http_types.h"
#include "serving/image_output.h"
#include "serving/scheduler.h"

namespace sd::serving {

class JobStore {
 public:
  JobStore(double ttl_s, size_t max_jobs) : ttl_s_(ttl_s), max_jobs_(max_jobs) {}

  // A new record in state "queued"; nullopt when the store is full of unfinished jobs.
  std::optional<std::string> create(int steps);
  void attach(const std::string& id, std::shared_ptr<Ticket> ticket, int queue_position);
  void remove(const std::string& id);  // submission failed

  // Progress from the scheduler / encoder (any thread).
  void on_queued(const std::string& id, int position);
  void on_step(const std::string& id, int step, int total);
  void on_done(const std::string& id, const Expected<EncodedImages>& result);

  // {id, status, created, started, finished, queue_position, step, steps, images, seeds, error}
  std::optional<nlohmann::json> describe(const std::string& id);
  enum class CancelResult { kNotFound, kCancelled, kAlreadyFinished };
  CancelResult cancel(const std::string& id, CancelReason reason = CancelReason::kClient);
  // Encoded image k: {content_type, bytes}.
  std::optional<std::pair<std::string, std::string>> image(const std::string& id, size_t k);
  // Sends the current state as events and keeps the stream for the next ones; ends it
  // once the job is finished. False if there is no such job.
  bool subscribe(const std::string& id, const std::shared_ptr<Exchange>& stream);

  size_t size();
  static std::string image_url(const std::string& id, size_t k);

 private:
  struct Record {
    std::string id, status = "queued";  // queued | running | succeeded | failed | cancelled
    double created = 0, started = 0, finished = 0;  // unix seconds
    int queue_position = 0, step = 0, steps = 0;
    std::shared_ptr<Ticket> ticket;
    std::optional<EncodedImages> images;
    std::optional<ApiError> error;
    std::vector<std::shared_ptr<Exchange>> subscribers;
    std::chrono::steady_clock::time_point finished_at;
    bool terminal() const { return status == "succeeded" || status == "failed" || status == "cancelled"; }
  };
  nlohmann::json to_json(const Record& r) const;
  std::string event_for(const Record& r) const;  // the SSE event describing the current state
  void publish(Record& r, const std::string& event);
  void finish(Record& r, const std::string& status);
  void expire_locked();

  std::mutex mu_;
  std::map<std::string, Record> jobs_;
  std::deque<std::string> finished_order_;
  double ttl_s_;
  size_t max_jobs_;
};

}  // namespace sd::serving
