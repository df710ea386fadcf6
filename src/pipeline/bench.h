// Benchmark driver behind `sdserve bench`: model-load-to-first-image time, then per batch
// size the guided UNet step time (median over timed steps), end-to-end seconds per image,
// images/s and peak device memory; optionally the per-layer profile of the guided step.
#pragma once

#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "core/status.h"
#include "pipeline/profile.h"

namespace sd {

struct BenchOptions {
  std::string model, device = "cpu";
  std::vector<int> batch_sizes = {1};
  int steps = 50;
  int width = 512, height = 512;
  int timed_steps = 20;  // guided steps timed per batch size (after warm-up)
  std::string sampler = "euler";
  bool end_to_end = true;  // also run whole generations per batch size
  int e2e_runs = 3;        // whole generations per batch size; the run of median time is reported
  bool steps_and_images = true;  // the timings above (false: --profile-only)
  bool profile = false;          // also profile the guided step per batch size (profile.h)
  int profile_repeats = 10;
  bool profile_ops = false;  // the profile table also lists every op
};

struct BenchRow {
  int batch = 0;
  double step_ms_median = 0, step_ms_min = 0;  // one guided UNet step for the whole batch
  double seconds_per_image = 0;                // end to end (text, steps, decode) / images
  double images_per_second = 0;
  double batch_seconds = 0;                    // end-to-end wall time of the batch
  double text_ms = 0;              // end-to-end run: median per job of begin() (tokenize, text encoder, noise)
  double decode_ms_per_image = 0;  // end-to-end run: finish() decode (VAE + download) / images
  double png_ms_per_image = 0;     // end-to-end run: PNG encoding left after the decode (PNGs are encoded while the VAE decodes) / images
  size_t peak_memory_bytes = 0;
  // The device during the timed steps (SM clock, power, power-cap share), where it can be read.
  std::optional<DeviceTelemetry> telemetry;
  // From the board's energy counter over the timed steps (< 0: none): joules per guided step of
  // the batch, and the denoising's share of an image (that over all `steps` steps / batch).
  double energy_j_per_step = -1, denoise_energy_j_per_image = -1;
  // End to end (text, steps, decode, PNG) over the reported run, per image (< 0: no counter).
  double energy_j_per_image = -1;
};

struct BenchReport {
  std::string device_name;
  double load_seconds = 0;
  // Parts of load_seconds: checkpoint parsing (headers, config), device start (context,
  // library handles), weights (read, convert, upload) -- SdEngine::LoadTimes.
  double load_checkpoint_seconds = 0, load_device_seconds = 0, load_weights_seconds = 0;
  double first_image_seconds = 0;  // model file to first image (includes load)
  std::vector<BenchRow> rows;
  std::optional<ProfileReport> profile;
  std::string table() const;   // text table for stdout
  std::string json() const;    // machine-readable
};

StatusOr<BenchReport> run_bench(const BenchOptions& options, const std::function<void(const std::string&)>& log = {});

}  // namespace sd
