// `sdserve loadtest`: load generator for a running sdserve (or any A1111/OpenAI-compatible)
// server: closed loop (--users) or open loop (--rate), optional --sweep, live progress on a
// TTY, tables on stdout, --json and --report (self-contained HTML) files. Logic: src/loadtest.
#include <sys/resource.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <atomic>
#include <csignal>
#include <cstdio>
#include <ctime>

#include "loadtest/load_test.h"
#include "loadtest/svg_plot.h"
#include "tools/command.h"

namespace {

using namespace sd::loadtest;

std::atomic<bool> g_interrupted{false};

extern "C" void on_sigint(int) {
  if (g_interrupted.exchange(true)) {  // second Ctrl-C: give up at once
    std::signal(SIGINT, SIG_DFL);
    std::raise(SIGINT);
  }
}

// Every virtual user holds a connection (a file descriptor): raise the soft limit to the hard one.
void raise_fd_limit() {
  rlimit rl{};
  if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
    rl.rlim_cur = rl.rlim_max;
    setrlimit(RLIMIT_NOFILE, &rl);
  }
}

int fail(const std::string& message) {
  std::fprintf(stderr, "sdserve loadtest: %s\n", message.c_str());
  return 2;
}

std::string utc_now() {
  std::time_t t = std::time(nullptr);
  char buf[64];
  std::tm tm{};
  gmtime_r(&t, &tm);
  std::strftime(buf, sizeof buf, "%Y-%m-%d %H:%M:%S UTC", &tm);
  return buf;
}

int run_loadtest(int argc, char** argv) {
  CLI::App app{"Load-test a text-to-image server: closed loop (--users) or open loop (--rate), reports", "sdserve loadtest"};
  std::string url_text, api_text = "sdapi", prompts_path, json_path, report_path, sweep_text;
  int users = 0;
  double rate = 0, duration = 0;
  int64_t requests = 0;
  bool no_progress = false;
  ClientOptions o;
  GenerationSettings& g = o.generation;
  app.add_option("--url", url_text, "Server base URL, e.g. http://127.0.0.1:7860")->required();
  app.add_option("--api", api_text, "sdapi (/sdapi/v1/txt2img), openai (/v1/images/generations) or jobs (/v1/jobs + SSE)")
      ->capture_default_str();
  auto* users_opt = app.add_option("--users", users, "Closed loop: virtual users, each sends its next request when the last returns")
                        ->check(CLI::Range(1, 1000000));
  auto* rate_opt = app.add_option("--rate", rate, "Open loop: Poisson arrivals per second")->check(CLI::Range(1e-6, 1e6));
  users_opt->excludes(rate_opt);
  app.add_option("--duration", duration, "Seconds to send load per stage (default 30 unless --requests)")
      ->check(CLI::Range(0.001, 1e7));
  app.add_option("--requests", requests, "Requests per stage (with --duration: whichever ends first)")
      ->check(CLI::Range(int64_t{1}, int64_t{1} << 40));
  app.add_option("--sweep", sweep_text, "One stage per value: users=1,2,4,8 or rate=0.5,1,2");
  app.add_option("--prompts", prompts_path, "File with one prompt per line (default: a built-in list)")->check(CLI::ExistingFile);
  app.add_option("--steps", g.steps, "Denoising steps per image")->check(CLI::Range(1, 1000))->capture_default_str();
  app.add_option("--width", g.width, "Image width")->check(CLI::Range(8, 16384))->capture_default_str();
  app.add_option("--height", g.height, "Image height")->check(CLI::Range(8, 16384))->capture_default_str();
  std::string sizes;
  app.add_option("--sizes", sizes,
                 "Image sizes WIDTHxHEIGHT,... taken in turn by request k (k mod count), instead of --width / "
                 "--height; the text report adds each size's latencies");
  app.add_option("--sampler", g.sampler, "Sampler name")->capture_default_str();
  app.add_option("--batch-size", g.batch_size, "Images per request (batch_size / n)")->check(CLI::Range(1, 1024))
      ->capture_default_str();
  app.add_option("--cfg-scale", g.cfg_scale, "Guidance scale")->capture_default_str();
  app.add_option("--negative-prompt", g.negative_prompt, "Negative prompt for every request");
  app.add_option("--seed", o.seed, "Request k uses seed + k; -1 lets the server pick")->capture_default_str();
  app.add_option("--api-key", o.api_key, "Sent as 'Authorization: Bearer KEY'");
  app.add_option("--json", json_path, "Write every number (summaries, time series, each request) as JSON");
  app.add_option("--report", report_path, "Write a self-contained HTML report with SVG plots");
  app.add_option("--timeout", o.timeout_s, "Seconds a request may take in all (a stalled server counts as timeout)")
      ->check(CLI::Range(0.001, 86400.0))->capture_default_str();
  app.add_option("--connect-timeout", o.connect_timeout_s, "Seconds a TCP connect may take")
      ->check(CLI::Range(0.001, 3600.0))->capture_default_str();
  app.add_option("--threads", o.threads, "Client I/O threads")->check(CLI::Range(1, 256))->capture_default_str();
  app.add_option("--arrival-seed", o.arrival_seed, "Seed of the open-loop arrival schedule")->capture_default_str();
  app.add_option("--max-in-flight", o.max_in_flight, "Open loop: arrivals beyond this many pending are not sent (counted)")
      ->check(CLI::Range(int64_t{1}, int64_t{1} << 30))->capture_default_str();
  app.add_flag("--no-progress", no_progress, "No live progress line even on a terminal");
  CLI11_PARSE(app, argc, argv);

  auto url = parse_url(url_text);
  if (!url.ok()) return fail(url.status().message());
  o.url = *url;
  auto api = parse_api(api_text);
  if (!api.ok()) return fail(api.status().message());
  o.api = *api;
  if (!prompts_path.empty()) {
    auto prompts = load_prompts(prompts_path);
    if (!prompts.ok()) return fail(prompts.status().message());
    o.prompts = std::move(*prompts);
  }
  if (!sizes.empty()) {
    auto parsed = sd::parse_size_list(sizes);
    if (!parsed.ok()) return fail("--sizes: " + parsed.status().message());
    for (const sd::ImageSize& size : *parsed) {
      if (size.width < 8 || size.width > 16384 || size.height < 8 || size.height > 16384)
        return fail("--sizes: image size '" + sd::size_name(size) + "' has a side outside 8..16384");
    }
    o.sizes = std::move(*parsed);
  }
  std::string sweep_variable;
  auto stages = plan_stages(users, rate, duration, requests, sweep_text, &sweep_variable);
  if (!stages.ok()) return fail(stages.status().message());
  if (duration <= 0 && requests <= 0) duration = 30;

  std::string image_sizes = o.sizes.empty() ? std::to_string(g.width) + "x" + std::to_string(g.height) : "";
  for (const sd::ImageSize& size : o.sizes) image_sizes += (image_sizes.empty() ? "" : " / ") + sd::size_name(size);
  RunDescription run;
  run.sweep_variable = sweep_variable;
  run.settings = {{"date", utc_now()},
                  {"url", url_text},
                  {"api", std::string(api_name(o.api)) + " (" + submit_route(o.api) + ")"},
                  {"load", sweep_variable.empty() ? (*stages)[0].label : "sweep " + sweep_text},
                  {"per stage", (duration > 0 ? format_number(duration) + " s" : std::string()) +
                                    (duration > 0 && requests > 0 ? " or " : "") +
                                    (requests > 0 ? std::to_string(requests) + " requests" : std::string())},
                  {"image", image_sizes + ", " + std::to_string(g.steps) +
                                " steps, " + g.sampler + ", cfg " + format_number(g.cfg_scale) + ", " +
                                std::to_string(g.batch_size) + " per request"},
                  {"prompts", prompts_path.empty() ? "built-in list (" + std::to_string(builtin_prompts().size()) + ")"
                                                   : prompts_path + " (" + std::to_string(o.prompts.size()) + ")"},
                  {"timeouts", "request " + format_number(o.timeout_s) + " s, connect " + format_number(o.connect_timeout_s) + " s"},
                  {"client threads", std::to_string(o.threads)}};
  if (rate > 0 || sweep_variable == "rate") run.settings.emplace_back("arrival seed", std::to_string(o.arrival_seed));

  raise_fd_limit();
  o.interrupt = &g_interrupted;
  std::signal(SIGINT, on_sigint);
  LoadTestPlan plan;
  plan.client = std::move(o);
  plan.stages = std::move(*stages);
  plan.description = std::move(run);
  plan.json_path = json_path;
  plan.report_path = report_path;
  plan.live_progress = !no_progress && isatty(STDERR_FILENO);
  return execute_load_test(plan, stdout, stderr).exit_code;
}

}  // namespace

SD_COMMAND("loadtest", "Load-test a server: closed/open loop, sweeps, latency/throughput reports", run_loadtest);
