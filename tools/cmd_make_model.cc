// `sdserve make-model --preset tiny|sd15|sd21 --seed N --out DIR`: writes a diffusers-layout
// model with seeded random fp16 weights and the bundled tokenizer, for benchmarks and tests
// at full size without downloads.
#include <CLI/CLI.hpp>
#include <cstdio>

#include "pipeline/model_factory.h"
#include "tools/command.h"

namespace {

int run_make_model(int argc, char** argv) {
  CLI::App app{"Write a model with seeded random weights", "sdserve make-model"};
  std::string preset = "sd15", out;
  uint64_t seed = 0;
  app.add_option("--preset", preset, "Architecture: tiny, sd15, sd21")->capture_default_str();
  app.add_option("--seed", seed, "Weight seed")->capture_default_str();
  app.add_option("--out", out, "Output folder (diffusers layout)")->required();
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  auto p = sd::model_preset(preset);
  if (!p.ok()) {
    std::fprintf(stderr, "sdserve make-model: %s\n", p.status().message().c_str());
    return 1;
  }
  auto report = sd::make_model(*p, seed, out);
  if (!report.ok()) {
    std::fprintf(stderr, "sdserve make-model: %s\n", report.status().to_string().c_str());
    return 1;
  }
  std::printf("wrote %s (%s, %.1fM parameters, %.1f MB fp16)\n", out.c_str(), preset.c_str(),
              static_cast<double>(report->parameters) / 1e6, static_cast<double>(report->bytes) / 1e6);
  return 0;
}

}  // namespace

SD_COMMAND("make-model", "Write an SD-shaped model with seeded random weights", run_make_model);
