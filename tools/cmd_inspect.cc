// `sdserve inspect PATH`: loads a checkpoint (diffusers folder or single .safetensors) and
// prints its family, layout, per-component parameter counts and dtypes, and the detected
// configuration. Errors go to stderr with exit status 1.
#include <CLI/CLI.hpp>
#include <cstdio>

#include "io/checkpoint.h"
#include "tools/command.h"

namespace {

int run_inspect(int argc, char** argv) {
  CLI::App app{"Describe a Stable Diffusion checkpoint (diffusers folder or single-file .safetensors)",
               "sdserve inspect"};
  std::string path;
  app.add_option("path", path, "Diffusers folder or .safetensors single file")->required();
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  auto checkpoint = sd::load_checkpoint(path);
  if (!checkpoint.ok()) {
    std::fprintf(stderr, "sdserve inspect: %s\n", checkpoint.status().to_string().c_str());
    return 1;
  }
  std::fputs(sd::describe_checkpoint(*checkpoint).c_str(), stdout);
  return 0;
}

}  // namespace

SD_COMMAND("inspect", "Describe a checkpoint: family, layout, parameters, configuration", run_inspect);
