// `sdserve generate`: one text-to-image request from the command line. Writes PNGs with
// the AUTOMATIC1111 `parameters` chunk, shows a progress bar on a terminal, and can read
// initial latents / save final latents (safetensors, tensor `latents`, NCHW f32).
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <chrono>
#include <cstdio>
#include <filesystem>

#include "io/image.h"
#include "io/safetensors.h"
#include "pipeline/engine.h"
#include "tools/command.h"

namespace {

std::string output_name(const std::string& base, int k, int n) {
  if (n == 1) return base;
  std::filesystem::path p(base);
  return (p.parent_path() / (p.stem().string() + "-" + std::to_string(k) + p.extension().string())).string();
}

int fail(const sd::Status& s) {
  std::fprintf(stderr, "sdserve generate: %s\n", s.to_string().c_str());
  return 1;
}

int run_generate(int argc, char** argv) {
  CLI::App app{"Generate images from a text prompt", "sdserve generate"};
  std::string model, device = "cpu", output = "out.png", rng = "cpu", init_latents, save_latents;
  sd::GenerationRequest r;
  r.steps = 20;
  app.add_option("--model", model, "Model: diffusers folder or single-file .safetensors")->required();
  app.add_option("--prompt", r.prompt, "Prompt")->required();
  app.add_option("--negative-prompt", r.negative_prompt, "Negative prompt");
  app.add_option("--steps", r.steps, "Denoising steps (1..150)")->capture_default_str();
  app.add_option("--cfg-scale", r.cfg_scale, "Classifier-free guidance scale (0..30)")->capture_default_str();
  app.add_option("--sampler", r.sampler, "Sampler (AUTOMATIC1111 name or id, e.g. \"Euler a\", dpmpp_2m)")
      ->capture_default_str();
  app.add_option("--scheduler", r.scheduler, "Schedule type: automatic, uniform, karras")->capture_default_str();
  app.add_option("--seed", r.seed, "Seed (-1 = random); image k uses seed+k")->capture_default_str();
  app.add_option("--width", r.width, "Width (multiple of 8, 64..2048)")->capture_default_str();
  app.add_option("--height", r.height, "Height (multiple of 8, 64..2048)")->capture_default_str();
  app.add_option("--batch-size", r.batch_size, "Images in one batch")->capture_default_str();
  app.add_option("--clip-skip", r.clip_skip, "CLIP layers to skip from the end (1 = none)")->capture_default_str();
  app.add_option("--rng", rng, "Noise generator to reproduce: cpu (torch CPU) or cuda (torch CUDA Philox)")
      ->check(CLI::IsMember({"cpu", "cuda"}))
      ->capture_default_str();
  app.add_option("--device", device, "cpu or cuda:N")->capture_default_str();
  app.add_option("--output,-o", output, "Output PNG (batch: name-1.png, ...)")->capture_default_str();
  app.add_option("--init-latents", init_latents, "safetensors with `latents` [N,4,H/8,W/8] instead of seeded noise");
  app.add_option("--save-latents", save_latents, "write the final latents to this safetensors file");
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  r.rng = rng == "cuda" ? sd::RngKind::kCuda : sd::RngKind::kCpu;
  if (!init_latents.empty()) {
    auto f = sd::SafetensorsFile::open(init_latents);
    if (!f.ok()) return fail(f.status());
    auto t = (*f)->read_f32("latents");
    if (!t.ok()) return fail(t.status().with_context("--init-latents"));
    r.init_latents = *t;
  }
  if (auto s = r.validate(); !s.ok()) return fail(s);

  auto engine = sd::load_engine(model, device);
  if (!engine.ok()) return fail(engine.status());
  const bool tty = isatty(2);
  const auto t0 = std::chrono::steady_clock::now();
  auto progress = [&](int step, int total) {
    if (tty) {
      const int width = 30, filled = total ? step * width / total : width;
      const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      std::fprintf(stderr, "\r[%.*s%*s] %d/%d  %.1fs", filled, "==============================", width - filled, "",
                   step, total, secs);
      if (step == total) std::fprintf(stderr, "\n");
    }
    return true;
  };
  auto result = (*engine)->generate(r, progress);
  if (!result.ok()) return fail(result.status());
  for (size_t k = 0; k < result->images.size(); ++k) {
    const sd::Image& im = result->images[k];
    sd::RgbImage rgb{im.width, im.height, im.rgb};
    auto png = sd::encode_png(rgb, {{"parameters", result->infotexts[k]}});
    if (!png.ok()) return fail(png.status());
    const std::string name = output_name(output, static_cast<int>(k), static_cast<int>(result->images.size()));
    if (auto s = sd::write_file(name, *png); !s.ok()) return fail(s);
    std::printf("%s  seed %lld\n", name.c_str(), static_cast<long long>(result->seeds[k]));
  }
  if (!save_latents.empty()) {
    if (auto s = sd::write_safetensors(save_latents, {{"latents", result->final_latents}}); !s.ok()) return fail(s);
  }
  std::fprintf(stderr, "text %.2fs, denoise %.2fs, decode %.2fs\n", result->seconds_text, result->seconds_denoise,
               result->seconds_decode);
  return 0;
}

}  // namespace

SD_COMMAND("generate", "Generate images from a prompt (text-to-image)", run_generate);
