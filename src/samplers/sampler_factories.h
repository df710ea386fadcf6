// Internal to samplers/: what make_sampler hands each sampler family, the factories of the
// families (vp_samplers.cc, k_samplers.cc, multistep_samplers.cc) and shared helpers.
// Not part of the public interface (sampler.h).
#pragma once

#include <memory>
#include <span>

#include "samplers/sampler.h"
#include "samplers/schedule.h"

namespace sd {

struct SamplerSetup {
  const SamplerInfo* info = nullptr;
  SchedulerConfig config;
  TrainSchedule train;
  int steps = 0;
  bool karras = false;  // Karras sigmas requested (already checked against info->supports_karras)
};

// Access to the protected plan of a Sampler for the factories.
class SamplerBase : public Sampler {
 protected:
  explicit SamplerBase(const SamplerSetup& setup);
  // Fills progress_ with "evaluation e completes user step progress[e]".
  void set_progress(std::vector<int> progress) { progress_ = std::move(progress); }
  const SamplerSetup setup_;
};

// x0 = x_coeff * x + out_coeff * model_out.
struct X0Coefficients {
  double x_coeff = 0, out_coeff = 0;
};
// Sample in the variance-exploding (k-diffusion) scale x = x0 + sigma * eps, as diffusers'
// Euler/LMS/Heun hold it: epsilon x0 = x - sigma eps; v x0 = x / (sigma^2 + 1) - v sigma / sqrt(sigma^2 + 1).
X0Coefficients x0_from_ve(bool v_prediction, double sigma);
// Sample in the variance-preserving scale x = alpha x0 + sigma_vp eps (DDIM, DPM-Solver).
X0Coefficients x0_from_vp(bool v_prediction, double alpha, double sigma_vp);


std::unique_ptr<Sampler> make_ddim_sampler(const SamplerSetup& setup);
std::unique_ptr<Sampler> make_plms_sampler(const SamplerSetup& setup);
std::unique_ptr<Sampler> make_euler_sampler(const SamplerSetup& setup, bool ancestral);
std::unique_ptr<Sampler> make_heun_sampler(const SamplerSetup& setup);
std::unique_ptr<Sampler> make_lms_sampler(const SamplerSetup& setup);
std::unique_ptr<Sampler> make_dpmpp_2m_sampler(const SamplerSetup& setup);
std::unique_ptr<Sampler> make_unipc_sampler(const SamplerSetup& setup);

}  // namespace sd
