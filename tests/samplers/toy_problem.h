// Analytic toy diffusion problems for the sampler tests: data that is a point mass at a known
// x0, or Gaussian N(mu, s^2) per element, with the exact model prediction (epsilon or v) of
// the ideal denoiser, and the exact probability-flow ODE solution to compare against.
#pragma once

#include <cmath>
#include <vector>

#include "backend/backend.h"
#include "samplers/sampler.h"
#include "samplers/schedule.h"

namespace sd::testing {

struct ToyData {
  std::vector<float> mu;  // per element: the point mass (s = 0) or the Gaussian mean
  double s = 0;           // data standard deviation (0: point mass)
};

// The noise level the model infers from its timestep: exact at integer timesteps
// (alphas_cumprod), log-sigma interpolation in between (the inverse of sigma_to_t).
inline double sigma_of_timestep(const TrainSchedule& train, double t) {
  const double ti = std::floor(t);
  if (t == ti) {
    const double acp = train.alphas_cumprod[static_cast<size_t>(ti)];
    return std::sqrt((1 - acp) / acp);
  }
  const size_t j = static_cast<size_t>(ti);
  const double w = t - ti;
  return std::exp((1 - w) * train.log_sigmas[j] + w * train.log_sigmas[j + 1]);
}

// Ideal model output for the (scaled) model input x_in (VP sample) at timestep t.
inline std::vector<float> ideal_model(const TrainSchedule& train, bool v_prediction, const ToyData& data,
                                      const std::vector<float>& x_in, double t) {
  const double sigma = sigma_of_timestep(train, t);
  const double acp = 1 / (sigma * sigma + 1);
  std::vector<float> out(x_in.size());
  for (size_t i = 0; i < x_in.size(); ++i) {
    const double x_ve = x_in[i] / std::sqrt(acp);  // = x0 + sigma eps
    const double mu = data.mu[i];
    const double x0 = mu + data.s * data.s / (data.s * data.s + sigma * sigma) * (x_ve - mu);  // E[x0 | x]
    const double eps = (x_ve - x0) / sigma;
    out[i] = static_cast<float>(v_prediction ? std::sqrt(acp) * eps - std::sqrt(1 - acp) * x0 : eps);
  }
  return out;
}

// Runs `sampler` from host NHWC latents x_init (already scaled by init_noise_sigma) with the
// ideal model; returns the final latents on the host.
inline std::vector<float> run_toy(Backend& backend, Sampler& sampler, const TrainSchedule& train, bool v_prediction,
                                  const ToyData& data, const Shape& nhwc, const std::vector<float>& x_init,
                                  std::span<NoiseGenerator* const> noise = {}) {
  Tensor x = backend.upload(Tensor::from_vector(nhwc, x_init), DType::kF32);
  for (int e = 0; e < sampler.num_evals(); ++e) {
    Tensor host = backend.download(x);
    std::vector<float> x_in(host.f32(), host.f32() + host.numel());
    for (float& v : x_in) v = static_cast<float>(v * sampler.input_scale(e));
    const auto out = ideal_model(train, v_prediction, data, x_in, sampler.model_timestep(e));
    x = sampler.step(backend, e, x, backend.upload(Tensor::from_vector(nhwc, out), DType::kF32), noise);
  }
  Tensor host = backend.download(x);
  return std::vector<float>(host.f32(), host.f32() + host.numel());
}

// The exact probability-flow ODE end point (sigma = 0) from the starting latents: in the
// variance-exploding scale x - mu grows like sqrt(s^2 + sigma^2).
inline std::vector<float> ode_solution(const Sampler& sampler, const TrainSchedule& train, const ToyData& data,
                                       const std::vector<float>& x_init) {
  const double sigma0 = sigma_of_timestep(train, sampler.model_timestep(0));
  // Samplers with input scaling hold x in the VE scale already; the others hold the VP sample.
  const double to_ve = sampler.input_scale(0) < 1 ? 1.0 : std::sqrt(sigma0 * sigma0 + 1);
  std::vector<float> out(x_init.size());
  for (size_t i = 0; i < x_init.size(); ++i) {
    const double mu = data.mu[i];
    out[i] = static_cast<float>(mu + (x_init[i] * to_ve - mu) * data.s / std::sqrt(data.s * data.s + sigma0 * sigma0));
  }
  return out;
}

}  // namespace sd::testing
