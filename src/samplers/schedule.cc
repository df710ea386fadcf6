// Schedule arithmetic of diffusers 0.40 reproduced: train schedule in torch float32 semantics,
// timestep spacings with numpy's arange/linspace/round (half to even) semantics, sigma
// interpolation, Karras sigmas and sigma -> t. See schedule.h.
#include "samplers/schedule.h"

#include <algorithm>
#include <cmath>
#include <string>

namespace sd {
namespace {

float f32(double v) { return static_cast<float>(v); }

// torch.linspace(start, end, n, dtype=float32) on the CPU: the step in float32, the first
// half counted from start and the second half from end.
std::vector<float> torch_linspace_f32(double start_d, double end_d, int n) {
  const float start = f32(start_d), end = f32(end_d);
  std::vector<float> out(static_cast<size_t>(n));
  if (n == 1) {
    out[0] = start;
    return out;
  }
  const float step = (end - start) / static_cast<float>(n - 1);
  const int halfway = n / 2;
  for (int i = 0; i < n; ++i) {
    out[static_cast<size_t>(i)] =
        i < halfway ? start + step * static_cast<float>(i) : end - step * static_cast<float>(n - i - 1);
  }
  return out;
}

// numpy.round: half to even (the default floating-point rounding mode).
double np_round(double v) { return std::nearbyint(v); }

Status check_steps(const SchedulerConfig& config, int steps) {
  if (steps < 1) return InvalidArgument("steps must be at least 1 (got " + std::to_string(steps) + ")");
  if (steps > config.num_train_timesteps) {
    return InvalidArgument("steps (" + std::to_string(steps) + ") cannot exceed the model's num_train_timesteps (" +
                           std::to_string(config.num_train_timesteps) + ")");
  }
  return Status::Ok();
}

Status unknown_spacing(const SchedulerConfig& config) {
  return InvalidArgument("unknown timestep_spacing '" + config.timestep_spacing +
                         "' (valid: leading, trailing, linspace)");
}

template <typename T>
Status check_range(const SchedulerConfig& config, const std::vector<T>& timesteps, int steps) {
  for (T t : timesteps) {
    if (t < 0 || t > config.num_train_timesteps - 1) {
      return InvalidArgument("timestep_spacing '" + config.timestep_spacing + "' with steps_offset " +
                             std::to_string(config.steps_offset) + " and " + std::to_string(steps) +
                             " steps gives timestep " + std::to_string(static_cast<double>(t)) + " outside [0, " +
                             std::to_string(config.num_train_timesteps - 1) + "]");
    }
  }
  return Status::Ok();
}

// numpy.arange(start, stop, step) for floats: length ceil((stop - start) / step), values
// start + i * delta with delta = (start + step) - start.
std::vector<double> np_arange(double start, double stop, double step) {
  const double len_d = std::ceil((stop - start) / step);
  const int64_t len = len_d > 0 ? static_cast<int64_t>(len_d) : 0;
  std::vector<double> out(static_cast<size_t>(len));
  const double delta = (start + step) - start;
  for (int64_t i = 0; i < len; ++i) out[static_cast<size_t>(i)] = start + static_cast<double>(i) * delta;
  return out;
}

// numpy.linspace(start, stop, n) (endpoint included).
std::vector<double> np_linspace(double start, double stop, int n) {
  std::vector<double> out(static_cast<size_t>(n));
  if (n == 1) {
    out[0] = start;
    return out;
  }
  const double step = (stop - start) / static_cast<double>(n - 1);
  for (int i = 0; i < n; ++i) out[static_cast<size_t>(i)] = static_cast<double>(i) * step + start;
  out.back() = stop;
  return out;
}

}  // namespace

double round_to_f32(double v) { return static_cast<double>(static_cast<float>(v)); }

StatusOr<TrainSchedule> make_train_schedule(const SchedulerConfig& config) {
  const int T = config.num_train_timesteps;
  if (T < 2 || T > 100000) return InvalidArgument("num_train_timesteps must be in [2, 100000] (got " + std::to_string(T) + ")");
  if (!(config.beta_start > 0) || !(config.beta_end > 0) || !(config.beta_end < 1) || !(config.beta_start < 1)) {
    return InvalidArgument("beta_start and beta_end must lie in (0, 1) (got " + std::to_string(config.beta_start) +
                           ", " + std::to_string(config.beta_end) + ")");
  }
  std::vector<float> betas;
  if (config.beta_schedule == "scaled_linear") {
    betas = torch_linspace_f32(std::sqrt(config.beta_start), std::sqrt(config.beta_end), T);
    for (float& b : betas) b = b * b;
  } else if (config.beta_schedule == "linear") {
    betas = torch_linspace_f32(config.beta_start, config.beta_end, T);
  } else {
    return Unimplemented("beta_schedule '" + config.beta_schedule + "' is not supported (valid: scaled_linear, linear)");
  }
  TrainSchedule s;
  s.num_train_timesteps = T;
  s.alphas_cumprod.resize(static_cast<size_t>(T));
  s.sigmas.resize(static_cast<size_t>(T));
  s.log_sigmas.resize(static_cast<size_t>(T));
  double product = 1.0;  // torch.cumprod on the CPU accumulates float32 inputs in double
  for (int t = 0; t < T; ++t) {
    const float alpha = 1.0f - betas[static_cast<size_t>(t)];
    product *= static_cast<double>(alpha);
    const float acp = f32(product);
    const float sigma = std::sqrt((1.0f - acp) / acp);
    s.alphas_cumprod[static_cast<size_t>(t)] = acp;
    s.sigmas[static_cast<size_t>(t)] = sigma;
    s.log_sigmas[static_cast<size_t>(t)] = std::log(sigma);
  }
  s.final_alpha_cumprod = config.set_alpha_to_one ? 1.0 : s.alphas_cumprod[0];
  return s;
}

StatusOr<std::vector<int64_t>> ddim_timesteps(const SchedulerConfig& config, int steps) {
  SD_RETURN_IF_ERROR(check_steps(config, steps));
  const int T = config.num_train_timesteps;
  std::vector<int64_t> ts;
  if (config.timestep_spacing == "leading") {
    const int64_t ratio = T / steps;
    for (int i = steps - 1; i >= 0; --i) ts.push_back(i * ratio + config.steps_offset);
  } else if (config.timestep_spacing == "trailing") {
    for (double t : np_arange(T, 0, -static_cast<double>(T) / steps)) ts.push_back(static_cast<int64_t>(np_round(t)) - 1);
  } else if (config.timestep_spacing == "linspace") {
    const auto lin = np_linspace(0, T - 1, steps);
    for (auto it = lin.rbegin(); it != lin.rend(); ++it) ts.push_back(static_cast<int64_t>(np_round(*it)));
  } else {
    return unknown_spacing(config);
  }
  SD_RETURN_IF_ERROR(check_range(config, ts, steps));
  return ts;
}

StatusOr<std::vector<double>> discrete_sigma_timesteps(const SchedulerConfig& config, int steps) {
  SD_RETURN_IF_ERROR(check_steps(config, steps));
  const int T = config.num_train_timesteps;
  std::vector<double> ts;
  if (config.timestep_spacing == "leading") {
    const int64_t ratio = T / steps;
    for (int i = steps - 1; i >= 0; --i) ts.push_back(static_cast<double>(i * ratio + config.steps_offset));
  } else if (config.timestep_spacing == "trailing") {
    for (double t : np_arange(T, 0, -static_cast<double>(T) / steps)) ts.push_back(np_round(t) - 1);
  } else if (config.timestep_spacing == "linspace") {
    const auto lin = np_linspace(0, T - 1, steps);
    for (auto it = lin.rbegin(); it != lin.rend(); ++it) ts.push_back(round_to_f32(*it));
  } else {
    return unknown_spacing(config);
  }
  SD_RETURN_IF_ERROR(check_range(config, ts, steps));
  return ts;
}

StatusOr<std::vector<int64_t>> multistep_timesteps(const SchedulerConfig& config, int steps) {
  SD_RETURN_IF_ERROR(check_steps(config, steps));
  const int T = config.num_train_timesteps;  // last_timestep (lambda_min_clipped = -inf clips nothing)
  std::vector<int64_t> ts;
  if (config.timestep_spacing == "leading") {
    const int64_t ratio = T / (steps + 1);
    if (ratio < 1) return InvalidArgument("too many steps (" + std::to_string(steps) + ") for leading spacing");
    for (int i = steps; i >= 1; --i) ts.push_back(i * ratio + config.steps_offset);
  } else if (config.timestep_spacing == "trailing") {
    for (double t : np_arange(T, 0, -static_cast<double>(T) / steps)) ts.push_back(static_cast<int64_t>(np_round(t)) - 1);
  } else if (config.timestep_spacing == "linspace") {
    const auto lin = np_linspace(0, T - 1, steps + 1);
    for (int i = steps; i >= 1; --i) ts.push_back(static_cast<int64_t>(np_round(lin[static_cast<size_t>(i)])));
  } else {
    return unknown_spacing(config);
  }
  SD_RETURN_IF_ERROR(check_range(config, ts, steps));
  return ts;
}

double interp_sigma(const TrainSchedule& s, double t) {
  const int last = s.num_train_timesteps - 1;
  if (t <= 0) return s.sigmas.front();
  if (t >= last) return s.sigmas.back();
  const int j = static_cast<int>(std::floor(t));
  const double slope = s.sigmas[static_cast<size_t>(j + 1)] - s.sigmas[static_cast<size_t>(j)];
  return slope * (t - j) + s.sigmas[static_cast<size_t>(j)];
}

std::vector<double> karras_sigmas(double sigma_min, double sigma_max, int n) {
  constexpr double kRho = 7.0;
  const double min_inv_rho = std::pow(sigma_min, 1.0 / kRho);
  const double max_inv_rho = std::pow(sigma_max, 1.0 / kRho);
  std::vector<double> out;
  for (double ramp : np_linspace(0, 1, n)) out.push_back(std::pow(max_inv_rho + ramp * (min_inv_rho - max_inv_rho), kRho));
  return out;
}

double sigma_to_t(const TrainSchedule& s, double sigma) {
  const double log_sigma = std::log(std::max(sigma, 1e-10));
  const int T = s.num_train_timesteps;
  // low = the last index whose log-sigma is <= log_sigma (0 if none), clipped to T - 2.
  int low = 0;
  for (int i = 0; i < T; ++i) {
    if (log_sigma - s.log_sigmas[static_cast<size_t>(i)] >= 0) low = i;
  }
  low = std::min(low, T - 2);
  const double lo = s.log_sigmas[static_cast<size_t>(low)], hi = s.log_sigmas[static_cast<size_t>(low + 1)];
  const double w = std::clamp((lo - log_sigma) / (lo - hi), 0.0, 1.0);
  return (1 - w) * low + w * (low + 1);
}

}  // namespace sd
