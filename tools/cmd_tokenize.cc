// `sdserve tokenize --model PATH TEXT`: prints the model's 77 CLIP token ids for TEXT as one
// JSON array on one line. PATH is a diffusers folder (PATH/tokenizer/ files and pad token) or
// a single-file .safetensors checkpoint (bundled vocabulary; pad "!" for SD 2.x / OpenCLIP).
#include <CLI/CLI.hpp>

#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>

#include "tokenizer/clip_tokenizer.h"
#include "tools/command.h"

namespace {

// True when the safetensors header names OpenCLIP text-encoder tensors
// (cond_stage_model.model.*), which only SD 2.x single-file checkpoints carry.
sd::StatusOr<bool> single_file_has_openclip(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return sd::NotFound("cannot open checkpoint: " + path);
  unsigned char len_bytes[8];
  if (!in.read(reinterpret_cast<char*>(len_bytes), 8)) return sd::DataLoss(path + ": too short for a safetensors file");
  uint64_t header_len = 0;
  for (int i = 7; i >= 0; --i) header_len = (header_len << 8) | len_bytes[i];
  if (header_len == 0 || header_len > (uint64_t{100} << 20)) {
    return sd::DataLoss(path + ": implausible safetensors header length " + std::to_string(header_len));
  }
  std::string header(static_cast<size_t>(header_len), '\0');
  if (!in.read(header.data(), static_cast<std::streamsize>(header_len))) return sd::DataLoss(path + ": truncated header");
  return header.find("\"cond_stage_model.model.") != std::string::npos;
}

sd::StatusOr<sd::TokenizerConfig> resolve_tokenizer(const std::string& model_path) {
  std::error_code ec;
  if (std::filesystem::is_directory(model_path, ec)) {
    return sd::ClipTokenizer::read_diffusers_config((std::filesystem::path(model_path) / "tokenizer").string());
  }
  if (!std::filesystem::exists(model_path, ec)) return sd::NotFound("model not found: " + model_path);
  SD_ASSIGN_OR_RETURN(const bool openclip, single_file_has_openclip(model_path));
  sd::TokenizerConfig config;  // empty paths: the bundled vocabulary
  config.pad_token = openclip ? "!" : sd::ClipTokenizer::kDefaultPadToken;
  return config;
}

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
  auto config = resolve_tokenizer(model);
  if (!config.ok()) {
    std::fprintf(stderr, "sdserve tokenize: %s\n", config.status().to_string().c_str());
    return 1;
  }
  auto tokenizer = sd::ClipTokenizer::load(*config);
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
