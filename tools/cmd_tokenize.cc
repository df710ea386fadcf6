// `sdserve tokenize --model PATH TEXT`: prints the model's 77 CLIP token ids for TEXT as one
// JSON array on one line. PATH is a diffusers folder (PATH/tokenizer/ files and pad token) or
// a single-file .safetensors checkpoint (bundled vocabulary; pad "!" for SD 2.x / OpenCLIP).
#include <CLI/CLI.hpp>

#include <cstdio>
#include <string>

#include "io/checkpoint.h"
#include "tokenizer/clip_tokenizer.h"
#include "tools/command.h"

namespace {

int run_tokenize(int argc, char** argv) {
  CLI::App app{"Print the CLIP token ids of a prompt as a JSON array", "sdserve tokenize"};
  std::string model, text;
  app.add_option("--model", model, "Diffusers folder or single-file .safetensors checkpoint")->required();
  app.add_option("text", text, "Prompt text")->required();
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  // The checkpoint loader decides the family (and so the pad token) for both layouts.
  auto checkpoint = sd::load_checkpoint(model);
  if (!checkpoint.ok()) {
    std::fprintf(stderr, "sdserve tokenize: %s\n", checkpoint.status().to_string().c_str());
    return 1;
  }
  auto tokenizer = sd::ClipTokenizer::load(checkpoint->tokenizer);
  if (!tokenizer.ok()) {
    std::fprintf(stderr, "sdserve tokenize: %s\n", tokenizer.status().to_string().c_str());
    return 1;
  }
  const auto tokens = (*tokenizer)->tokenize(text);
  std::string line = "[";
  for (size_t i = 0; i < tokens.ids.size(); ++i) line += (i ? ", " : "") + std::to_string(tokens.ids[i]);
  std::printf("%s]\n", line.c_str());
  if (tokens.truncated) {
    std::fprintf(stderr, "sdserve tokenize: prompt truncated (%d tokens, limit %d)\n", tokens.untruncated_len,
                 (*tokenizer)->max_length());
  }
  return 0;
}

}  // namespace

SD_COMMAND("tokenize", "Print a prompt's CLIP token ids as a JSON array", run_tokenize);
