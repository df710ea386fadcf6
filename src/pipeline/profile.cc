// The guided-step profile: warm-up, unrecorded timed steps (the graph-free step time), then
// recorded steps whose per-op times are reduced to medians and summed per block scope and per
// op kind. Tables and JSON for `sdserve bench --profile`.
#include "pipeline/profile.h"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <map>
#include <nlohmann/json.hpp>
#include <random>

#include "io/checkpoint.h"

namespace sd {
namespace {

using Clock = std::chrono::steady_clock;
double ms_since(Clock::time_point t) { return std::chrono::duration<double, std::milli>(Clock::now() - t).count(); }

// Host f32 [rows, n] coefficients, every row equal to `row`.
Tensor coefficients(int64_t rows, const std::vector<float>& row) {
  Tensor c = Tensor::empty_host({rows, static_cast<int64_t>(row.size())}, DType::kF32);
  for (int64_t r = 0; r < rows; ++r) std::copy(row.begin(), row.end(), c.f32() + r * static_cast<int64_t>(row.size()));
  return c;
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.empty() ? 0 : v[v.size() / 2];
}

void add_op(ProfileRow& row, double ms, const OpRecord& op) {
  row.ops += 1;
  row.ms += ms;
  row.flops += op.flops;
  row.bytes += op.bytes;
  row.floor_ms += op_floor_ms(op.flops, op.bytes);
}

}  // namespace

double op_floor_ms(double flops, double bytes) {
  return 1e3 * std::max(flops / kPeakMatmulFlops, bytes / kPeakBandwidthBytes);
}

StatusOr<StepProfile> profile_guided_step(const UNet& unet, ProfilingBackend& be, int batch, int latent_h,
                                          int latent_w, int warmup, int repeats) {
  SD_ASSERT(batch >= 1 && latent_h >= 1 && latent_w >= 1 && repeats >= 1, "profile_guided_step: bad arguments");
  const UNetConfig& c = unet.config();
  const int64_t B = batch, rows = 2 * B;
  StepProfile prof;
  prof.batch = batch;
  prof.latent_h = latent_h;
  prof.latent_w = latent_w;
  std::vector<std::vector<OpRecord>> runs;
  Status s = guard_errors([&]() -> Status {
    const Tensor x = be.upload(uniform_random_host({B, latent_h, latent_w, c.in_channels}, 1));  // [B, h, w, C] latents
    const Tensor context = be.upload(uniform_random_host({rows, 77, c.cross_attention_dim}, 2));  // [2B, 77, D]
    const Tensor features = be.upload(unet.timestep_features_of(std::vector<double>(rows, 500.0)));  // [2B, C0]
    const Tensor c_in = coefficients(rows, {0.25f});               // sampler's input scale per row
    const Tensor cfg = coefficients(B, {1.f - 7.5f, 7.5f});        // uncond + 7.5 (cond - uncond)
    const Tensor euler = coefficients(B, {1.f, -0.05f});           // x + dt * d
    SD_RETURN_IF_ERROR(be.synchronize());
    // One guided step as the engine runs it eagerly: uncond rows, then cond rows.
    auto step = [&] {
      Tensor in;
      {
        BackendScope sc(be, "scale_in");
        in = be.lincomb({be.concat_rows({x, x})}, c_in);  // [2B, h, w, C]
      }
      const Tensor eps = unet.forward(in, features, context, /*halves_equal=*/true);  // [2B, h, w, C], as StepGraphs runs it
      Tensor guided;
      {
        BackendScope sc(be, "guidance");
        guided = be.lincomb({eps.slice_rows(0, B), eps.slice_rows(B, rows)}, cfg);  // [B, h, w, C]
      }
      BackendScope sc(be, "sampler");
      return be.lincomb({x, guided}, euler);
    };
    for (int i = 0; i < warmup; ++i) (void)step();
    SD_RETURN_IF_ERROR(be.synchronize());
    // Graph-free step time, and how long the host takes to enqueue one (for the hold).
    std::vector<double> step_ms;
    double enqueue_ms = 0;
    for (int r = 0; r < repeats; ++r) {
      const auto t0 = Clock::now();
      (void)step();
      enqueue_ms = std::max(enqueue_ms, ms_since(t0));
      SD_RETURN_IF_ERROR(be.synchronize());
      step_ms.push_back(ms_since(t0));
    }
    prof.step_ms = median(step_ms);
    prof.step_ms_min = *std::min_element(step_ms.begin(), step_ms.end());
    // Recorded steps: on a device the queue is held while the host enqueues the step (with
    // twice as many marks as ops, so allow for 2x), which keeps launch gaps off the timeline.
    prof.hold_ms = be.device().is_cpu() ? 0 : std::min(1000.0, 2.0 * enqueue_ms + 2.0);
    for (int r = 0; r < repeats; ++r) {
      be.hold_queue(prof.hold_ms);
      be.begin_recording();
      (void)step();
      SD_ASSIGN_OR_RETURN(std::vector<OpRecord> ops, be.end_recording());
      if (!runs.empty() && ops.size() != runs.front().size()) {
        return Internal("profile: recorded steps differ in op count (" + std::to_string(runs.front().size()) + " vs " +
                        std::to_string(ops.size()) + ")");
      }
      runs.push_back(std::move(ops));
    }
    return Status::Ok();
  });
  SD_RETURN_IF_ERROR(s);

  // Per-op median over the recorded steps, summed per scope (first-use order) and per kind.
  const std::vector<OpRecord>& ops = runs.front();
  std::map<std::string, size_t> scope_index, kind_index;
  prof.total.name = "total";
  for (size_t i = 0; i < ops.size(); ++i) {
    std::vector<double> t;
    for (const auto& run : runs) t.push_back(run[i].ms);
    const double ms = median(t);
    const OpRecord& op = ops[i];
    const std::string scope = op.scope.empty() ? "(no scope)" : op.scope;
    auto [si, new_scope] = scope_index.emplace(scope, prof.scopes.size());
    if (new_scope) prof.scopes.push_back(ProfileRow{scope});
    add_op(prof.scopes[si->second], ms, op);
    auto [ki, new_kind] = kind_index.emplace(op.kind, prof.kinds.size());
    if (new_kind) prof.kinds.push_back(ProfileRow{op.kind});
    add_op(prof.kinds[ki->second], ms, op);
    add_op(prof.total, ms, op);
    prof.ops.push_back(ProfileOp{scope, op.kind, op.output, ms, op.flops, op.bytes, op_floor_ms(op.flops, op.bytes)});
  }
  std::stable_sort(prof.kinds.begin(), prof.kinds.end(),
                   [](const ProfileRow& a, const ProfileRow& b) { return a.ms > b.ms; });
  return prof;
}

StatusOr<ProfileReport> run_profile(const ProfileOptions& o, const std::function<void(const std::string&)>& log) {
  if (o.width % 8 != 0 || o.height % 8 != 0 || o.width < 8 || o.height < 8) {
    return InvalidArgument("profile: width and height must be positive multiples of 8, got " +
                           std::to_string(o.width) + "x" + std::to_string(o.height));
  }
  if (o.repeats < 1 || o.warmup < 0) return InvalidArgument("profile: repeats must be >= 1 and warm-up >= 0");
  SD_ASSIGN_OR_RETURN(Device device, Device::parse(o.device));
  SD_ASSIGN_OR_RETURN(Checkpoint ck, load_checkpoint(o.model));
  SD_ASSIGN_OR_RETURN(std::unique_ptr<Backend> inner, make_backend(device));
  ProfilingBackend be(*inner);
  std::unique_ptr<UNet> unet;
  SD_RETURN_IF_ERROR(guard_errors([&]() -> Status {
    SD_ASSIGN_OR_RETURN(unet, UNet::load(ck.unet, *ck.unet_weights, be));
    return be.synchronize();
  }));
  ProfileReport rep;
  rep.device_name = be.name();
  rep.gpu = !device.is_cpu();
  rep.repeats = o.repeats;
  rep.per_op = o.per_op;
  for (int batch : o.batch_sizes) {
    if (log) log("profiling the guided step at batch " + std::to_string(batch));
    SD_ASSIGN_OR_RETURN(StepProfile p,
                        profile_guided_step(*unet, be, batch, o.height / 8, o.width / 8, o.warmup, o.repeats));
    rep.steps.push_back(std::move(p));
  }
  rep.device_timer = be.device_marks();
  return rep;
}

}  // namespace sd
