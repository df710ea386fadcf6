// Per-layer profile of the guided denoising step behind `sdserve bench --profile`: the UNet
// runs eagerly through a ProfilingBackend; per block scope and per op kind it reports time,
// FLOPs, bytes and the floor max(FLOP / peak matmul rate, bytes / peak bandwidth).
#pragma once

#include <functional>
#include <string>
#include <vector>

#include "backend/profiling_backend.h"
#include "core/status.h"
#include "models/unet.h"

namespace sd {

// Peak rates the floors are computed against (the H100 SXM the targets of issue 5 are set on).
constexpr double kPeakMatmulFlops = 790e12;     // dense fp16 matmul, FLOP/s (issue 5's figure)
constexpr double kPeakBandwidthBytes = 3.35e12;  // HBM3, bytes/s (H100 SXM datasheet)

struct ProfileOptions {
  std::string model, device = "cpu";
  std::vector<int> batch_sizes = {1};  // images; the guided step runs the UNet on 2x rows
  int width = 512, height = 512;
  int warmup = 2;    // unrecorded steps first (cuDNN autotuning happens on the first)
  int repeats = 10;  // recorded steps; per-op medians over them
  bool per_op = false;  // the table also lists every op (the JSON always does)
};

struct ProfileRow {
  std::string name;  // scope ("down.1.attn.0") or op kind ("conv2d")
  int ops = 0;       // backend op calls (one or more kernels each)
  double ms = 0;     // sum of the per-op median times
  double flops = 0, bytes = 0;
  // Sum over its ops of each op's floor max(flops / kPeakMatmulFlops, bytes / kPeakBandwidthBytes).
  double floor_ms = 0;
  double efficiency() const { return ms > 0 ? floor_ms / ms : 0; }
};

// The floor of one op, in ms.
double op_floor_ms(double flops, double bytes);

// One recorded op of the step (median time over the recorded steps).
struct ProfileOp {
  std::string scope, kind;
  std::string output;  // e.g. "f16[2,64,64,320] on cuda:0"
  double ms = 0, flops = 0, bytes = 0, floor_ms = 0;
};

struct StepProfile {
  int batch = 0;           // images (UNet rows: 2 * batch)
  int latent_h = 0, latent_w = 0;
  std::vector<ProfileRow> scopes;  // in order of first use
  std::vector<ProfileRow> kinds;   // by time, longest first
  ProfileRow total;                // every recorded op (= sum of the scope rows = sum of the kind rows)
  std::vector<ProfileOp> ops;      // every recorded op, in issue order
  double step_ms = 0;              // the same step unrecorded: host clock to synchronize(), median
  double step_ms_min = 0;
  double hold_ms = 0;              // queue hold before each recorded step (0 on the CPU)
};

struct ProfileReport {
  std::string device_name;
  bool device_timer = false;  // CUDA events (true) or the host clock
  bool gpu = false;           // floors and efficiencies are meaningful (vs H100 peaks)
  int repeats = 0;
  bool per_op = false;  // table() lists every op too
  std::vector<StepProfile> steps;
  std::string table() const;
  std::string json() const;
};

// Profiles one guided step (input scaling, UNet on 2*batch rows, guidance, an Euler update)
// of `unet`, which must have been loaded on `be`. Random inputs, fixed timestep.
StatusOr<StepProfile> profile_guided_step(const UNet& unet, ProfilingBackend& be, int batch, int latent_h,
                                          int latent_w, int warmup, int repeats);

// Loads the UNet of options.model on options.device through a ProfilingBackend and profiles
// the guided step at every batch size.
StatusOr<ProfileReport> run_profile(const ProfileOptions& options,
                                    const std::function<void(const std::string&)>& log = {});

}  // namespace sd
