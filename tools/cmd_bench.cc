// `sdserve bench`: guided step time, end-to-end seconds per image, images/s, peak device
// memory and model-load-to-first-image time per batch size (--profile: the per-layer profile
// too); a table on stdout and optional JSON. Figures go into docs/performance.md.
#include <CLI/CLI.hpp>
#include <cstdio>
#include <fstream>
#include <sstream>

#include "pipeline/bench.h"
#include "tools/command.h"

namespace {

int run_bench_cmd(int argc, char** argv) {
  CLI::App app{"Benchmark the engine", "sdserve bench"};
  sd::BenchOptions o;
  std::string batch_sizes = "1", json_path;
  bool no_e2e = false, profile_only = false;
  app.add_option("--model", o.model, "Model (diffusers folder or single file)")->required();
  app.add_option("--device", o.device, "cpu or cuda:N")->capture_default_str();
  app.add_option("--batch-sizes", batch_sizes, "Comma-separated batch sizes")->capture_default_str();
  app.add_option("--steps", o.steps, "Steps per image (end to end)")->capture_default_str();
  app.add_option("--width", o.width, "Width")->capture_default_str();
  app.add_option("--height", o.height, "Height")->capture_default_str();
  app.add_option("--timed-steps", o.timed_steps, "Guided steps timed per batch size")->capture_default_str();
  app.add_option("--sampler", o.sampler, "Sampler")->capture_default_str();
  app.add_flag("--no-e2e", no_e2e, "Skip the end-to-end generations");
  app.add_option("--e2e-runs", o.e2e_runs, "End-to-end generations per batch size (the median run is reported)")
      ->capture_default_str();
  app.add_flag("--profile", o.profile,
               "Also profile one guided step per batch size: per block and per op kind time, FLOPs, bytes, "
               "floor (eager, CUDA events on a GPU)");
  app.add_flag("--profile-only", profile_only, "Only the profile (no model-load, step and end-to-end timings)");
  app.add_flag("--profile-ops", o.profile_ops,
               "Profile (as --profile) and also list every op of the step: scope, kind, output, time, floor");
  app.add_option("--profile-repeats", o.profile_repeats, "Recorded steps per batch size (medians)")
      ->capture_default_str();
  app.add_option("--json", json_path, "Also write the results as JSON");
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  o.end_to_end = !no_e2e;
  if (o.profile_ops) o.profile = true;
  if (profile_only) {
    o.profile = true;
    o.steps_and_images = false;
  }
  o.batch_sizes.clear();
  std::stringstream ss(batch_sizes);
  for (std::string item; std::getline(ss, item, ',');) {
    try {
      const int b = std::stoi(item);
      if (b < 1 || b > 128) throw std::out_of_range("batch");
      o.batch_sizes.push_back(b);
    } catch (...) {
      std::fprintf(stderr, "sdserve bench: --batch-sizes: '%s' is not a batch size in 1..128\n", item.c_str());
      return 2;
    }
  }
  if (o.timed_steps < 1 || o.steps < 1 || o.steps > 150 || o.profile_repeats < 1 || o.e2e_runs < 1 ||
      o.e2e_runs > 20) {
    std::fprintf(stderr,
                 "sdserve bench: --steps must be 1..150, --e2e-runs 1..20, --timed-steps and --profile-repeats >= 1\n");
    return 2;
  }
  auto rep = sd::run_bench(o, [](const std::string& s) { std::fprintf(stderr, "bench: %s\n", s.c_str()); });
  if (!rep.ok()) {
    std::fprintf(stderr, "sdserve bench: %s\n", rep.status().to_string().c_str());
    return 1;
  }
  std::printf("%s", rep->table().c_str());
  if (!json_path.empty()) std::ofstream(json_path) << rep->json() << "\n";
  return 0;
}

}  // namespace

SD_COMMAND("bench", "Benchmark step time, images/s and memory per batch size", run_bench_cmd);
