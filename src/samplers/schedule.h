// Noise schedules of the SD family computed as diffusers computes them: the training
// schedule (float32 betas and alphas_cumprod, like torch), the inference timestep spacings
// (leading / trailing / linspace) and the sigma helpers (interpolation, Karras, sigma -> t).
#pragma once

#include <cstdint>
#include <vector>

#include "core/status.h"
#include "io/model_config.h"

namespace sd {

// The training schedule. Values are exactly what diffusers holds in its float32 tensors
// (torch.linspace in float32, squared, 1 - beta rounded to float32, cumprod accumulated in
// double and stored as float32), kept as doubles; everything derived from them is computed
// in double.
struct TrainSchedule {
  int num_train_timesteps = 0;
  std::vector<double> alphas_cumprod;  // [T]
  std::vector<double> sigmas;          // [T] sqrt((1 - acp) / acp) (float32 math), ascending in t
  std::vector<double> log_sigmas;      // [T] log of sigmas as numpy's float32 log gives it
  double final_alpha_cumprod = 1.0;    // 1 if set_alpha_to_one, else alphas_cumprod[0]
};

// Checks beta_schedule, num_train_timesteps, betas; the message names the field.
StatusOr<TrainSchedule> make_train_schedule(const SchedulerConfig& config);

// Integer timesteps, descending, as DDIMScheduler.set_timesteps makes them (also the basis
// of PNDM's list). Fails when a timestep falls outside [0, T).
StatusOr<std::vector<int64_t>> ddim_timesteps(const SchedulerConfig& config, int steps);
// Float timesteps, descending, as Euler/EulerAncestral/LMS/Heun set_timesteps make them
// (before any Karras conversion); float32-valued.
StatusOr<std::vector<double>> discrete_sigma_timesteps(const SchedulerConfig& config, int steps);
// Integer timesteps, descending, as DPMSolverMultistep/UniPC set_timesteps make them
// (leading spacing divides T by steps + 1).
StatusOr<std::vector<int64_t>> multistep_timesteps(const SchedulerConfig& config, int steps);

// np.interp of the training sigmas at (fractional) timestep t in [0, T-1].
double interp_sigma(const TrainSchedule& schedule, double t);
// Karras et al. (2022) rho = 7 spacing of `n` sigmas from sigma_max down to sigma_min.
std::vector<double> karras_sigmas(double sigma_min, double sigma_max, int n);
// diffusers' _sigma_to_t: the fractional timestep whose log-sigma interpolates to sigma.
double sigma_to_t(const TrainSchedule& schedule, double sigma);

// Rounds to the nearest float32 value (diffusers keeps sigmas and timesteps in float32).
double round_to_f32(double v);

}  // namespace sd
