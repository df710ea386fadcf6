// run_bench: loads the engine, times the first image, then for every batch size times single
// guided steps (cond+uncond for every image in one UNet call) and whole generations; with
// `profile`, then the per-layer profile (profile.h). Timed regions end with a synchronisation.
#include "pipeline/bench.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <deque>
#include <functional>
#include <mutex>
#include <thread>
#include <nlohmann/json.hpp>

#include "io/image.h"
#include "pipeline/sd_engine.h"

namespace sd {
namespace {

// The energy counter over shorter intervals is coarse (two 0.1 s readings of the same batch-1
// steps on an H100 were 17% apart, session 18): joules are reported from this long on.
constexpr double kMinEnergySeconds = 0.5;


using Clock = std::chrono::steady_clock;
double since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

GenerationRequest bench_request(const BenchOptions& o, int steps, int64_t seed) {
  GenerationRequest r;
  r.prompt = "a photograph of an astronaut riding a horse on mars, highly detailed";
  r.negative_prompt = "blurry, low quality";
  r.width = o.width;
  r.height = o.height;
  r.steps = steps;
  r.sampler = o.sampler;
  r.seed = seed;
  return r;
}

StatusOr<std::vector<std::unique_ptr<Job>>> begin_jobs(SdEngine& e, const BenchOptions& o, int batch, int steps) {
  std::vector<std::unique_ptr<Job>> jobs;
  for (int i = 0; i < batch; ++i) {
    SD_ASSIGN_OR_RETURN(auto job, e.begin(bench_request(o, steps, 1000 + i)));
    jobs.push_back(std::move(job));
  }
  return jobs;
}

std::vector<Job*> raw(const std::vector<std::unique_ptr<Job>>& jobs) {
  std::vector<Job*> out;
  for (auto& j : jobs) out.push_back(j.get());
  return out;
}

// PNG encoding of a batch's images with their infotexts, as a request's response carries them,
// on up to one thread per hardware thread but one, fed by finish()'s on_image while the device
// decodes the next images — as a server's encode pool runs beside its device worker.
class PngEncodePool {
 public:
  PngEncodePool() {
    const unsigned n = std::max(1u, std::thread::hardware_concurrency() - 1);
    for (unsigned t = 0; t < n; ++t) threads_.emplace_back([this] { work(); });
  }
  ~PngEncodePool() { (void)wait(); }
  void add(const Image& image, const std::string& infotext) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      queue_.push_back({image, infotext});
    }
    cv_.notify_one();
  }
  // Waits for every image added; the first encoder error, if any.
  Status wait() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      closed_ = true;
    }
    cv_.notify_all();
    for (std::thread& t : threads_) t.join();
    threads_.clear();
    return first_;
  }

 private:
  void work() {
    for (;;) {
      std::pair<Image, std::string> item;
      {
        std::unique_lock<std::mutex> lock(mu_);
        cv_.wait(lock, [this] { return closed_ || !queue_.empty(); });
        if (queue_.empty()) return;
        item = std::move(queue_.front());
        queue_.pop_front();
      }
      const Image& im = item.first;
      const auto png = encode_png(RgbImage{im.width, im.height, im.rgb}, {{"parameters", item.second}});
      if (!png.ok()) {
        std::lock_guard<std::mutex> lock(mu_);
        if (first_.ok()) first_ = png.status();
      }
    }
  }
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::pair<Image, std::string>> queue_;
  bool closed_ = false;
  Status first_ = Status::Ok();
  std::vector<std::thread> threads_;
};

// Model load, first image, then per batch size the guided step and end-to-end timings.
Status bench_steps_and_images(const BenchOptions& o, const std::function<void(const std::string&)>& say,
                              BenchReport* out) {
  BenchReport& rep = *out;
  const auto t_load = Clock::now();
  SD_ASSIGN_OR_RETURN(Device device, Device::parse(o.device));
  SD_ASSIGN_OR_RETURN(std::unique_ptr<SdEngine> engine, SdEngine::load(o.model, device));
  rep.load_seconds = since(t_load);
  rep.load_checkpoint_seconds = engine->load_times.checkpoint_seconds;
  rep.load_device_seconds = engine->load_times.device_seconds;
  rep.load_weights_seconds = engine->load_times.weights_seconds;
  rep.device_name = engine->backend().name();
  say("loaded in " + std::to_string(rep.load_seconds) + " s on " + rep.device_name);
  {
    SD_ASSIGN_OR_RETURN(GenerationResult first, engine->generate(bench_request(o, o.steps, 1)));
    rep.first_image_seconds = since(t_load);
    say("first image after " + std::to_string(rep.first_image_seconds) + " s");
  }
  for (int batch : o.batch_sizes) {
    BenchRow row;
    row.batch = batch;
    engine->backend().reset_memory_peak();
    {  // guided step time
      const int warmup = 3;
      SD_ASSIGN_OR_RETURN(auto jobs, begin_jobs(*engine, o, batch, warmup + o.timed_steps + 1));
      std::vector<double> ms;
      for (int i = 0; i < warmup + o.timed_steps; ++i) {
        if (i == warmup) (void)engine->backend().telemetry_start();
        const auto t = Clock::now();
        SD_RETURN_IF_ERROR(engine->step(raw(jobs)));
        // step() keeps one step in flight (it returns when the previous one is done): wait for
        // this one too, so each time is one whole step.
        SD_RETURN_IF_ERROR(engine->backend().synchronize());
        if (i >= warmup) ms.push_back(since(t) * 1e3);
      }
      row.telemetry = engine->backend().telemetry_stop();
      if (row.telemetry && row.telemetry->energy_j >= 0 && row.telemetry->seconds >= kMinEnergySeconds) {
        row.energy_j_per_step = row.telemetry->energy_j / o.timed_steps;
        row.denoise_energy_j_per_image = row.energy_j_per_step * o.steps / batch;
      }
      std::sort(ms.begin(), ms.end());
      row.step_ms_median = ms[ms.size() / 2];
      row.step_ms_min = ms.front();
    }
    if (o.end_to_end) {
      {  // untimed 1-step run: the text encoder and VAE graphs for this many images are recorded here
        SD_ASSIGN_OR_RETURN(auto warm, begin_jobs(*engine, o, batch, 1));
        auto ws = raw(warm);
        while (!ws[0]->finished()) SD_RETURN_IF_ERROR(engine->step(ws));
        SD_ASSIGN_OR_RETURN(auto warm_results, engine->finish(ws));
        // One PNG too: the encoder's first call pays one-time costs (threads' first run, buffer
        // page faults, lazy symbol binding) that a serving process pays once, not per image.
        const Image& im = warm_results.front().images.front();
        SD_RETURN_IF_ERROR(encode_png(RgbImage{im.width, im.height, im.rgb}, {{"parameters", "warm-up"}}).status());
      }
      // o.e2e_runs whole generations; the row reports the run of median total time (one slow
      // run, a descheduled host thread for instance, does not make the figure).
      std::vector<BenchRow> runs;
      for (int run = 0; run < o.e2e_runs; ++run) {
        BenchRow e = row;
        const bool metered = engine->backend().telemetry_start();
        const auto t = Clock::now();
        SD_ASSIGN_OR_RETURN(auto jobs, begin_jobs(*engine, o, batch, o.steps));
        auto js = raw(jobs);
        while (!js[0]->finished()) SD_RETURN_IF_ERROR(engine->step(js));
        // Each image is encoded as soon as finish() has it; SDSERVE_BENCH_PNG_AFTER=1: all of them
        // after finish() returns (sessions 14-19's figures; perf-notes "Session 20").
        const char* after_env = std::getenv("SDSERVE_BENCH_PNG_AFTER");
        const bool after = after_env && after_env[0] == '1';
        PngEncodePool pngs;
        const auto encode = [&](size_t, size_t, const Image& im, const std::string& text) { pngs.add(im, text); };
        SD_ASSIGN_OR_RETURN(auto results, after ? engine->finish(js) : engine->finish(js, encode));
        const auto t_png = Clock::now();
        if (after) {
          for (const GenerationResult& r : results)
            for (size_t k = 0; k < r.images.size(); ++k) pngs.add(r.images[k], r.infotexts[k]);
        }
        SD_RETURN_IF_ERROR(pngs.wait());
        e.png_ms_per_image = since(t_png) * 1e3 / batch;  // the encode's wall time after the decode, per image
        e.batch_seconds = since(t);
        if (metered) {
          const std::optional<DeviceTelemetry> m = engine->backend().telemetry_stop();
          if (m && m->energy_j >= 0 && m->seconds >= kMinEnergySeconds) e.energy_j_per_image = m->energy_j / batch;
        }
        std::vector<double> text;
        for (const auto& r : results) text.push_back(r.seconds_text * 1e3);
        std::sort(text.begin(), text.end());
        e.text_ms = text[text.size() / 2];
        e.decode_ms_per_image = results.front().seconds_decode * 1e3 / batch;  // one decode for the whole finish()
        e.seconds_per_image = e.batch_seconds / batch;
        e.images_per_second = batch / e.batch_seconds;
        runs.push_back(e);
      }
      std::sort(runs.begin(), runs.end(),
                [](const BenchRow& a, const BenchRow& b) { return a.batch_seconds < b.batch_seconds; });
      row = runs[runs.size() / 2];
    }
    row.peak_memory_bytes = engine->backend().memory_peak();
    say("batch " + std::to_string(batch) + ": step " + std::to_string(row.step_ms_median) + " ms");
    rep.rows.push_back(row);
  }
  return Status::Ok();
}

}  // namespace

StatusOr<BenchReport> run_bench(const BenchOptions& o, const std::function<void(const std::string&)>& log) {
  auto say = [&](const std::string& s) {
    if (log) log(s);
  };
  BenchReport rep;
  if (o.steps_and_images) SD_RETURN_IF_ERROR(bench_steps_and_images(o, say, &rep));
  if (o.profile) {  // after the engine above is gone: the profile loads its own UNet
    ProfileOptions po;
    po.model = o.model;
    po.device = o.device;
    po.batch_sizes = o.batch_sizes;
    po.width = o.width;
    po.height = o.height;
    po.repeats = o.profile_repeats;
    po.per_op = o.profile_ops;
    SD_ASSIGN_OR_RETURN(rep.profile, run_profile(po, say));
    if (rep.device_name.empty()) rep.device_name = rep.profile->device_name;
  }
  return rep;
}

std::string BenchReport::table() const {
  std::string s = "device: " + device_name + "\n";
  if (rows.empty()) return s + (profile ? profile->table() : "");
  char buf[256];
  std::snprintf(buf, sizeof buf,
                "model load %.2f s (checkpoint %.2f s, device start %.2f s, weights %.2f s), model file to first image "
                "%.2f s\n",
                load_seconds, load_checkpoint_seconds, load_device_seconds, load_weights_seconds, first_image_seconds);
  s += buf;
  s += "batch  step ms (median)  step ms (min)  s/image (e2e)  images/s  text ms  decode ms/image  png ms/image"
       "  peak memory MiB\n";
  for (const auto& r : rows) {
    std::snprintf(buf, sizeof buf, "%5d  %16.2f  %13.2f  %13.3f  %8.2f  %7.1f  %15.1f  %12.1f  %15.0f\n", r.batch,
                  r.step_ms_median, r.step_ms_min, r.seconds_per_image, r.images_per_second, r.text_ms,
                  r.decode_ms_per_image, r.png_ms_per_image, static_cast<double>(r.peak_memory_bytes) / (1 << 20));
    s += buf;
  }
  for (const auto& r : rows) {  // the clocks behind the step times (cards differ: power cap, cooling)
    if (!r.telemetry) continue;
    const DeviceTelemetry& t = *r.telemetry;
    std::snprintf(buf, sizeof buf,
                  "batch %d, timed steps: SM clock %.0f MHz mean (%.0f-%.0f), power %.0f W mean (max %.0f, limit %.0f), "
                  "power-capped %.0f%% / slowed %.0f%% of %d samples, %.0f C max",
                  r.batch, t.sm_mhz_mean, t.sm_mhz_min, t.sm_mhz_max, t.power_w_mean, t.power_w_max, t.power_limit_w,
                  100 * t.power_capped, 100 * t.slowed, t.samples, t.temperature_c_max);
    s += buf;
    if (r.energy_j_per_step >= 0) {
      // NVML's sampled power trails by ~1 s (439 W where the counter gave 734 on an H100): the
      // counter's mean is the power of these steps.
      std::snprintf(buf, sizeof buf, "; energy %.2f J a step (%.0f W mean by the counter), denoising %.1f J an image",
                    r.energy_j_per_step, t.seconds > 0 ? t.energy_j / t.seconds : 0.0, r.denoise_energy_j_per_image);
      s += buf;
    } else if (t.energy_j >= 0) {
      std::snprintf(buf, sizeof buf, "; energy not shown (%.2f s of steps; more --timed-steps for >= %.1f s)", t.seconds,
                    kMinEnergySeconds);
      s += buf;
    }
    if (r.energy_j_per_image >= 0) {
      std::snprintf(buf, sizeof buf, "; end to end %.1f J an image", r.energy_j_per_image);
      s += buf;
    }
    s += "\n";
  }
  return s + (profile ? profile->table() : "");
}

std::string BenchReport::json() const {
  nlohmann::json j;
  j["device"] = device_name;
  if (!rows.empty()) {
    j["load_seconds"] = load_seconds;
    j["first_image_seconds"] = first_image_seconds;
    j["load_checkpoint_seconds"] = load_checkpoint_seconds;
    j["load_device_seconds"] = load_device_seconds;
    j["load_weights_seconds"] = load_weights_seconds;
  }
  for (const auto& r : rows) {
    j["rows"].push_back({{"batch", r.batch},
                         {"step_ms_median", r.step_ms_median},
                         {"step_ms_min", r.step_ms_min},
                         {"seconds_per_image", r.seconds_per_image},
                         {"images_per_second", r.images_per_second},
                         {"batch_seconds", r.batch_seconds},
                         {"text_ms", r.text_ms},
                         {"decode_ms_per_image", r.decode_ms_per_image},
                         {"png_ms_per_image", r.png_ms_per_image},
                         {"peak_memory_bytes", r.peak_memory_bytes}});
    if (r.telemetry) {
      const DeviceTelemetry& t = *r.telemetry;
      j["rows"].back()["telemetry"] = {{"samples", t.samples},
                                       {"sm_mhz_mean", t.sm_mhz_mean},
                                       {"sm_mhz_min", t.sm_mhz_min},
                                       {"sm_mhz_max", t.sm_mhz_max},
                                       {"power_w_mean", t.power_w_mean},
                                       {"power_w_max", t.power_w_max},
                                       {"power_limit_w", t.power_limit_w},
                                       {"power_capped_fraction", t.power_capped},
                                       {"slowed_fraction", t.slowed},
                                       {"temperature_c_max", t.temperature_c_max},
                                       {"seconds", t.seconds}};
      if (t.energy_j >= 0) j["rows"].back()["telemetry"]["energy_j"] = t.energy_j;
      if (r.energy_j_per_step >= 0) {
        j["rows"].back()["energy_j_per_step"] = r.energy_j_per_step;
        j["rows"].back()["denoise_energy_j_per_image"] = r.denoise_energy_j_per_image;
      }
    }
    if (r.energy_j_per_image >= 0) j["rows"].back()["energy_j_per_image"] = r.energy_j_per_image;
  }
  if (profile) j["profile"] = nlohmann::json::parse(profile->json());
  return j.dump(2);
}

}  // namespace sd
