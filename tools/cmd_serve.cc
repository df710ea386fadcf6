// `sdserve serve`: the HTTP server (A1111 + OpenAI + jobs APIs, metrics, health). Binds
// first (so /health/live answers and /health/ready is 503 while loading), loads one engine
// per --device, then serves until SIGTERM/SIGINT, which drains and exits 0.
#include <sys/resource.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <cctype>
#include <cstdio>
#include <fstream>
#include <sstream>

#include "pipeline/engine.h"
#include "pipeline/sd_engine.h"
#include "pipeline/warmup.h"
#include "serving/server.h"
#include "tools/command.h"

namespace {

int fail(const std::string& message) {
  std::fprintf(stderr, "sdserve serve: %s\n", message.c_str());
  return 2;
}

// "cpu" or "cuda:0,cuda:1" -> {"cpu"} / {"cuda:0", "cuda:1"}; empty on a bad list.
std::vector<std::string> parse_devices(const std::string& list, std::string* error) {
  std::vector<std::string> out;
  std::stringstream ss(list);
  std::string item;
  while (std::getline(ss, item, ',')) {
    bool cuda = item.rfind("cuda:", 0) == 0 && item.size() > 5 && item.size() <= 7 &&
                item.find_first_not_of("0123456789", 5) == std::string::npos;
    if (item != "cpu" && !cuda) {
      *error = "--device: '" + item + "' is not cpu or cuda:N";
      return {};
    }
    if (std::find(out.begin(), out.end(), item) != out.end()) {
      *error = "--device: '" + item + "' is listed twice";
      return {};
    }
    out.push_back(item);
  }
  if (out.empty()) *error = "--device: empty device list";
  if (out.size() > 1 && std::find(out.begin(), out.end(), "cpu") != out.end()) {
    *error = "--device: cpu cannot be combined with other devices";
    return {};
  }
  return out;
}

// Every open connection is a file descriptor: raise the soft limit to the hard one.
void raise_fd_limit() {
  rlimit rl{};
  if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
    rl.rlim_cur = rl.rlim_max;
    setrlimit(RLIMIT_NOFILE, &rl);
  }
}

int run_serve(int argc, char** argv) {
  CLI::App app{"Serve text-to-image over HTTP (AUTOMATIC1111 and OpenAI APIs, async jobs)", "sdserve serve"};
  sd::serving::ServerOptions o;
  std::string model, devices = "cpu", api_key_file, warmup_sizes;
  bool no_warmup = false;
  int workers_per_device = 1;
  app.add_option("--model", model, "Model: diffusers folder or single-file .safetensors")->required();
  app.add_option("--host", o.host, "Address to bind")->capture_default_str();
  app.add_option("--port", o.port, "Port (0 = any free port)")->check(CLI::Range(0, 65535))->capture_default_str();
  app.add_option("--device", devices, "cpu, or CUDA devices: cuda:0,cuda:1 (one worker each)")->capture_default_str();
  app.add_option("--workers-per-device", workers_per_device,
                 "Workers (engines, each with its own stream and weights) per CUDA device: one's host work and "
                 "decode overlap the other's denoising")
      ->check(CLI::Range(1, 8))->capture_default_str();
  app.add_option("--max-batch", o.max_batch, "Images per batched denoising step")->check(CLI::Range(1, 128))
      ->capture_default_str();
  app.add_option("--max-queue", o.max_queue, "Requests waiting for a batch before 503")->check(CLI::Range(1, 1000000))
      ->capture_default_str();
  app.add_option("--queue-timeout", o.queue_timeout_s, "Seconds a request may wait in the queue")
      ->check(CLI::Range(0.001, 86400.0))->capture_default_str();
  auto* key = app.add_option("--api-key", o.api_key, "API key required on every route but /health/*");
  auto* key_file = app.add_option("--api-key-file", api_key_file, "File holding the API key")->check(CLI::ExistingFile);
  key->excludes(key_file);
  key_file->excludes(key);
  app.add_option("--cors-origin", o.cors_origin, "Allow browser requests from this origin (or *); none by default");
  app.add_option("--drain-timeout", o.drain_timeout_s, "Seconds in-flight work may take after SIGTERM")
      ->check(CLI::Range(0.0, 3600.0))->capture_default_str();
  app.add_option("--threads", o.io_threads, "HTTP I/O threads (0 = hardware threads)")->check(CLI::Range(0, 1024))
      ->capture_default_str();
  auto* no_warm = app.add_flag(
      "--no-warmup", no_warmup,
      "Skip the warm-up (CUDA: a 2-step generation per batch bucket up to --max-batch at each --warmup-sizes size)");
  auto* warm_sizes = app.add_option(
      "--warmup-sizes", warmup_sizes,
      "Image sizes to warm up before serving, WIDTHxHEIGHT,... (default: the model's own size, e.g. 512x512); "
      "a size met first under load holds every request on its worker for ~2 s (tuning, graph capture)");
  no_warm->excludes(warm_sizes);
  warm_sizes->excludes(no_warm);
  app.add_option("--job-ttl", o.job_ttl_s, "Seconds finished jobs are kept")->check(CLI::Range(1.0, 86400.0))
      ->capture_default_str();
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }

  if (!api_key_file.empty()) {
    std::ifstream in(api_key_file);
    std::stringstream ss;
    ss << in.rdbuf();
    o.api_key = ss.str();
    while (!o.api_key.empty() && std::isspace(static_cast<unsigned char>(o.api_key.back()))) o.api_key.pop_back();
    if (o.api_key.empty()) return fail("--api-key-file " + api_key_file + " is empty");
  }
  if (key->count() > 0 && o.api_key.empty()) return fail("--api-key is empty");
  for (char c : o.api_key + o.cors_origin)
    if (c == '\r' || c == '\n' || c == '\0') return fail("--api-key and --cors-origin must be one line");
  std::vector<sd::ImageSize> sizes;  // empty: the model's own size
  if (!warmup_sizes.empty()) {
    auto parsed = sd::parse_image_sizes(warmup_sizes);
    if (!parsed.ok()) return fail("--warmup-sizes: " + parsed.status().message());
    sizes = std::move(parsed).value();
    const size_t bound = sd::SdEngine::max_plan_sizes_setting();
    if (bound > 0 && sizes.size() > bound)
      return fail("--warmup-sizes lists " + std::to_string(sizes.size()) + " sizes, more than the " + std::to_string(bound) +
                  " image sizes a worker keeps planned (SDSERVE_MAX_PLAN_SIZES): warming the last would give back the first");
  }
  std::string error;
  std::vector<std::string> device_list = parse_devices(devices, &error);
  if (device_list.empty()) return fail(error);
  if (workers_per_device > 1) {
    if (device_list.front() == "cpu") return fail("--workers-per-device applies to CUDA devices, not cpu");
    std::vector<std::string> expanded;  // cuda:0,cuda:1 x 2 -> cuda:0,cuda:0,cuda:1,cuda:1
    for (const auto& d : device_list) expanded.insert(expanded.end(), static_cast<size_t>(workers_per_device), d);
    device_list = std::move(expanded);
  }
  if (!sizes.empty() && device_list.front() == "cpu")
    std::fprintf(stderr, "sdserve serve: note: --warmup-sizes has no effect on cpu (nothing to tune or record)\n");
  if (o.host != "127.0.0.1" && o.host != "localhost" && o.host != "::1" && o.api_key.empty())
    std::fprintf(stderr, "sdserve serve: warning: listening on %s without --api-key\n", o.host.c_str());

  raise_fd_limit();
  std::vector<std::unique_ptr<sd::GenerationEngine>> engines;  // outlives the server
  sd::serving::Server server(o);
  sd::Status started = server.start();
  if (!started.ok()) return fail(started.to_string());
  server.install_signal_handlers();
  std::fprintf(stderr, "sdserve serve: listening on http://%s:%d (loading %s on %s)\n", o.host.c_str(), server.port(),
               model.c_str(), devices.c_str());

  for (const auto& device : device_list) {
    auto engine = sd::load_engine(model, device);
    if (!engine.ok()) {
      server.stop();
      return fail("loading " + model + " on " + device + ": " + engine.status().to_string());
    }
    if (!no_warmup && device != "cpu") {
      const int native = (*engine)->info().default_size;
      const std::vector<sd::ImageSize> warm_at = sizes.empty() ? std::vector<sd::ImageSize>{{native, native}} : sizes;
      for (const sd::ImageSize& size : warm_at) {
        auto warm = sd::warm_up(**engine, size.width, size.height, o.max_batch);
        if (!warm.ok()) {
          server.stop();
          return fail("warming up " + device + " at " + std::to_string(size.width) + "x" +
                      std::to_string(size.height) + ": " + warm.status().to_string());
        }
        std::fprintf(stderr, "sdserve serve: %s warmed up at %dx%d, %d batch sizes, in %.1f s\n", device.c_str(),
                     size.width, size.height, warm->buckets, warm->seconds);
      }
    }
    engines.push_back(std::move(engine).value());
  }
  std::vector<sd::GenerationEngine*> raw;
  for (auto& e : engines) raw.push_back(e.get());
  server.attach_engines(raw);
  std::fprintf(stderr, "sdserve serve: ready (%zu device worker%s, max batch %d, max queue %d)\n", raw.size(),
               raw.size() == 1 ? "" : "s", o.max_batch, o.max_queue);
  int code = server.wait();
  std::fprintf(stderr, "sdserve serve: stopped\n");
  return code;
}

}  // namespace

SD_COMMAND("serve", "HTTP server: AUTOMATIC1111 + OpenAI APIs, async jobs, metrics", run_serve);
