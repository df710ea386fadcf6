// Rendering of the Prometheus text format: HELP/TYPE lines, cumulative histogram buckets,
// label values escaped. Bucket bounds are chosen for diffusion latencies (ms steps to
// minute-long queue waits) and batch sizes up to 64.
#include "serving/metrics.h"

#include <cstdio>

namespace sd::serving {

namespace {
const std::vector<double> kSecondsBuckets = {0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1,
                                             2.5,   5,    10,    30,   60,  120, 300};
const std::vector<double> kBatchBuckets = {1, 2, 4, 8, 16, 32, 64, 128};

std::string number(double v) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.17g", v);
  return buf;
}

std::string escape_label(const std::string& v) {
  std::string out;
  for (char c : v) {
    if (c == '\\' || c == '"') out += '\\';
    if (c == '\n') {
      out += "\\n";
      continue;
    }
    out += c;
  }
  return out;
}

void header(std::string* out, const char* name, const char* type, const char* help) {
  *out += std::string("# HELP ") + name + " " + help + "\n# TYPE " + name + " " + type + "\n";
}

// The devices' power, clocks and energy (Triton's nv_gpu_power_usage / nv_energy_consumption, in
// base units); a family is written only when some device has a value for it.
void render_device_readings(const std::vector<std::pair<std::string, DeviceReading>>& readings, std::string* out) {
  struct Family {
    const char* name;
    const char* type;
    const char* help;
    double (*value)(const DeviceReading&);  // < 0: not known for this device
  };
  static const Family kFamilies[] = {
      {"sd_device_energy_joules_total", "counter", "Energy the device's board has used since its driver loaded.",
       [](const DeviceReading& r) { return r.energy_j; }},
      {"sd_device_power_watts", "gauge", "Board power draw (the driver's trailing average).",
       [](const DeviceReading& r) { return r.power_w; }},
      {"sd_device_power_limit_watts", "gauge", "Board power limit in force.",
       [](const DeviceReading& r) { return r.power_limit_w > 0 ? r.power_limit_w : -1; }},
      {"sd_device_power_capped", "gauge", "1 while the power cap holds the device's clocks down.",
       [](const DeviceReading& r) { return r.power_capped ? 1.0 : 0.0; }},
      {"sd_device_sm_clock_hertz", "gauge", "SM clock.", [](const DeviceReading& r) { return r.sm_mhz * 1e6; }},
      {"sd_device_temperature_celsius", "gauge", "Device temperature.",
       [](const DeviceReading& r) { return r.temperature_c; }},
  };
  for (const Family& f : kFamilies) {
    bool any = false;
    for (const auto& [device, r] : readings) any = any || f.value(r) >= 0;
    if (!any) continue;
    header(out, f.name, f.type, f.help);
    for (const auto& [device, r] : readings) {
      const double v = f.value(r);
      if (v < 0) continue;
      char buf[64];
      std::snprintf(buf, sizeof buf, "%.15g", v);  // 527.722, not 527.72199999999998
      *out += std::string(f.name) + "{device=\"" + escape_label(device) + "\"} " + buf + "\n";
    }
  }
}
}  // namespace

void Histogram::observe(double value) {
  std::lock_guard<std::mutex> lock(mu_);
  size_t i = 0;
  while (i < bounds_.size() && value > bounds_[i]) ++i;
  ++counts_[i];
  sum_ += value;
  ++count_;
}

uint64_t Histogram::count() const {
  std::lock_guard<std::mutex> lock(mu_);
  return count_;
}

void Histogram::render(const std::string& name, const std::string& labels, std::string* out) const {
  std::lock_guard<std::mutex> lock(mu_);
  std::string sep = labels.empty() ? "" : labels + ",";
  uint64_t cumulative = 0;
  for (size_t i = 0; i < bounds_.size(); ++i) {
    cumulative += counts_[i];
    *out += name + "_bucket{" + sep + "le=\"" + number(bounds_[i]) + "\"} " + std::to_string(cumulative) + "\n";
  }
  cumulative += counts_.back();
  *out += name + "_bucket{" + sep + "le=\"+Inf\"} " + std::to_string(cumulative) + "\n";
  std::string braces = labels.empty() ? "" : "{" + labels + "}";
  *out += name + "_sum" + braces + " " + number(sum_) + "\n";
  *out += name + "_count" + braces + " " + std::to_string(count_) + "\n";
}

Metrics::Metrics() : batch_size_(kBatchBuckets), queue_wait_(kSecondsBuckets), step_seconds_(kSecondsBuckets) {}

void Metrics::record_request(const std::string& api, int status, double seconds) {
  std::lock_guard<std::mutex> lock(mu_);
  ++requests_[{api, status}];
  auto it = durations_.find(api);
  if (it == durations_.end()) it = durations_.try_emplace(api, kSecondsBuckets).first;
  it->second.observe(seconds);
}

void Metrics::count_cancelled(const std::string& reason) {
  std::lock_guard<std::mutex> lock(mu_);
  ++cancelled_[reason];
}

uint64_t Metrics::requests(const std::string& api, int status) const {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = requests_.find({api, status});
  return it == requests_.end() ? 0 : it->second;
}

uint64_t Metrics::cancelled(const std::string& reason) const {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = cancelled_.find(reason);
  return it == cancelled_.end() ? 0 : it->second;
}

std::string Metrics::render(const GaugeSnapshot& g) const {
  std::string out;
  std::lock_guard<std::mutex> lock(mu_);
  header(&out, "sd_requests_total", "counter", "HTTP requests by API and status code.");
  for (const auto& [key, n] : requests_)
    out += "sd_requests_total{api=\"" + escape_label(key.first) + "\",status=\"" + std::to_string(key.second) +
           "\"} " + std::to_string(n) + "\n";
  header(&out, "sd_request_duration_seconds", "histogram", "Time from request read to response written, by API.");
  for (const auto& [api, h] : durations_) h.render("sd_request_duration_seconds", "api=\"" + escape_label(api) + "\"", &out);
  header(&out, "sd_queue_depth", "gauge", "Generation tasks waiting for a device worker.");
  out += "sd_queue_depth " + std::to_string(g.queue_depth) + "\n";
  header(&out, "sd_inflight_requests", "gauge", "Generations accepted and not finished (queued or running).");
  out += "sd_inflight_requests " + std::to_string(g.inflight_requests) + "\n";
  header(&out, "sd_batch_size", "histogram", "Images in each batched denoising step.");
  batch_size_.render("sd_batch_size", "", &out);
  header(&out, "sd_queue_wait_seconds", "histogram", "Time a generation task waited before joining a batch.");
  queue_wait_.render("sd_queue_wait_seconds", "", &out);
  header(&out, "sd_step_seconds", "histogram", "Duration of one batched denoising step.");
  step_seconds_.render("sd_step_seconds", "", &out);
  header(&out, "sd_images_total", "counter", "Images generated.");
  out += "sd_images_total " + std::to_string(images_total_.load()) + "\n";
  header(&out, "sd_cancelled_total", "counter", "Generations cancelled, by reason (client, disconnect, drain, deadline).");
  for (const auto& [reason, n] : cancelled_)
    out += "sd_cancelled_total{reason=\"" + escape_label(reason) + "\"} " + std::to_string(n) + "\n";
  header(&out, "sd_device_memory_bytes", "gauge", "Device memory in use by each engine.");
  for (const auto& [device, bytes] : g.device_memory)
    out += "sd_device_memory_bytes{device=\"" + escape_label(device) + "\"} " + std::to_string(bytes) + "\n";
  render_device_readings(g.device_readings, &out);
  const auto worker_labels = [](const WorkerStats& w) {
    return "{worker=\"" + std::to_string(w.index) + "\",device=\"" + escape_label(w.device) + "\"} ";
  };
  header(&out, "sd_worker_images_total", "counter", "Images finished by each device worker.");
  for (const auto& w : g.workers) out += "sd_worker_images_total" + worker_labels(w) + std::to_string(w.images) + "\n";
  header(&out, "sd_graph_recordings_total", "counter",
         "Denoising-step graphs recorded by each worker's engine (a new image size or batch bucket).");
  for (const auto& w : g.workers)
    out += "sd_graph_recordings_total" + worker_labels(w) + std::to_string(w.events.graph_recordings) + "\n";
  header(&out, "sd_graph_recording_seconds_total", "counter",
         "Seconds those recordings took; every job of that worker waited through them.");
  for (const auto& w : g.workers)
    out += "sd_graph_recording_seconds_total" + worker_labels(w) + number(w.events.graph_recording_seconds) + "\n";
  header(&out, "sd_out_of_memory_retries_total", "counter",
         "Stages run again after the device ran out of memory (recorded graphs and the memory cache given back first).");
  for (const auto& w : g.workers)
    out += "sd_out_of_memory_retries_total" + worker_labels(w) + std::to_string(w.events.memory_retries) + "\n";
  header(&out, "sd_plan_releases_total", "counter",
         "Times a worker gave back every graph and per-shape plan for one image size more than it keeps "
         "(SDSERVE_MAX_PLAN_SIZES); those sizes are planned again when next met.");
  for (const auto& w : g.workers)
    out += "sd_plan_releases_total" + worker_labels(w) + std::to_string(w.events.plan_releases) + "\n";
  header(&out, "sd_ready", "gauge", "1 when the models are loaded and the server is not draining.");
  out += std::string("sd_ready ") + (g.ready ? "1" : "0") + "\n";
  return out;
}

}  // namespace sd::serving
