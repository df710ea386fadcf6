// Sigma-based samplers on the variance-exploding sample x = x0 + sigma * eps with input
// scaling 1 / sqrt(sigma^2 + 1): Euler, Euler a, Heun and LMS, reproducing diffusers'
// EulerDiscrete, EulerAncestralDiscrete, HeunDiscrete and LMSDiscrete schedulers.
#include <cmath>

#include "samplers/sampler_factories.h"

namespace sd {
namespace {

// The sigma schedule shared by these samplers: interpolated sigmas at the spaced timesteps
// (or Karras sigmas between the first and last of them, with fractional timesteps), float32.
struct SigmaPlan {
  std::vector<double> timesteps;  // [steps]
  std::vector<double> sigmas;     // [steps + 1], last 0
  double init_noise_sigma = 1;
};

SigmaPlan make_sigma_plan(const SamplerSetup& setup) {
  auto ts = discrete_sigma_timesteps(setup.config, setup.steps);
  SD_ASSERT(ts.ok(), "make_sampler validates the timesteps first");
  SigmaPlan plan;
  std::vector<double> sigmas;
  for (double t : *ts) sigmas.push_back(interp_sigma(setup.train, t));
  std::vector<double> timesteps = *ts;
  if (setup.karras) {
    sigmas = karras_sigmas(sigmas.back(), sigmas.front(), setup.steps);
    timesteps.clear();
    for (double s : sigmas) timesteps.push_back(sigma_to_t(setup.train, s));
  }
  for (double t : timesteps) plan.timesteps.push_back(round_to_f32(t));
  for (double s : sigmas) plan.sigmas.push_back(round_to_f32(s));
  plan.sigmas.push_back(0.0);
  double max_sigma = 0;
  for (double s : plan.sigmas) max_sigma = std::max(max_sigma, s);
  const std::string& spacing = setup.config.timestep_spacing;
  plan.init_noise_sigma = (spacing == "linspace" || spacing == "trailing") ? max_sigma : std::sqrt(max_sigma * max_sigma + 1);
  return plan;
}

double ve_input_scale(double sigma) { return 1 / std::sqrt(sigma * sigma + 1); }

// derivative d = (x - x0) / sigma_div with x0 taken at sigma_x0, as coefficients of (x, out).
X0Coefficients derivative(bool v_prediction, double sigma_x0, double sigma_div) {
  const X0Coefficients x0 = x0_from_ve(v_prediction, sigma_x0);
  return {(1 - x0.x_coeff) / sigma_div, -x0.out_coeff / sigma_div};
}

// Euler, and Euler a (ancestral: steps to sigma_down, then adds sigma_up * fresh noise).
class EulerSampler final : public SamplerBase {
 public:
  EulerSampler(const SamplerSetup& setup, bool ancestral) : SamplerBase(setup), ancestral_(ancestral) {
    SigmaPlan plan = make_sigma_plan(setup);
    model_timesteps_ = plan.timesteps;
    sigmas_ = plan.sigmas;
    init_noise_sigma_ = plan.init_noise_sigma;
    std::vector<int> progress;
    for (int i = 0; i < steps_; ++i) {
      input_scales_.push_back(ve_input_scale(sigmas_[static_cast<size_t>(i)]));
      progress.push_back(i + 1);
    }
    set_progress(progress);
  }

  // One slot: x <- x + dt * d (+ sigma_up * noise), d = (x - x0) / sigma.
  StepPlan plan(int eval) override {
    const double sigma = sigmas_[static_cast<size_t>(eval)], next = sigmas_[static_cast<size_t>(eval) + 1];
    const X0Coefficients d = derivative(v_prediction_, sigma, sigma);
    double target = next, sigma_up = 0;
    if (ancestral_) {
      sigma_up = std::sqrt(next * next * (sigma * sigma - next * next) / (sigma * sigma));
      target = std::sqrt(next * next - sigma_up * sigma_up);  // sigma_down
    }
    const double dt = target - sigma;
    StepPlan p;
    StepPlan::Output& x = p.write(0);
    x.slots[0] = 1 + dt * d.x_coeff;
    x.model_out = dt * d.out_coeff;
    if (ancestral_ && sigma_up > 0) {
      x.noise = sigma_up;
      p.draws_noise = true;
    }
    return p;
  }

 private:
  bool ancestral_;
};

// Heun: evaluation 2i is an Euler step sigma_i -> sigma_{i+1} whose derivative is kept;
// evaluation 2i+1 re-evaluates there and restarts from the saved sample with the mean of
// both derivatives. The last step (to sigma 0) is a plain Euler step.
class HeunSampler final : public SamplerBase {
 public:
  explicit HeunSampler(const SamplerSetup& setup) : SamplerBase(setup) {
    num_slots_ = 3;
    SigmaPlan plan = make_sigma_plan(setup);
    init_noise_sigma_ = plan.init_noise_sigma;
    // sigmas = [s0, s1, s1, s2, s2, ..., s_{n-1}, s_{n-1}, 0]; timesteps = [t0, t1, t1, ...].
    sigmas_.push_back(plan.sigmas.front());
    for (size_t i = 1; i + 1 < plan.sigmas.size(); ++i) sigmas_.insert(sigmas_.end(), 2, plan.sigmas[i]);
    sigmas_.push_back(plan.sigmas.back());
    model_timesteps_.push_back(plan.timesteps.front());
    for (size_t i = 1; i < plan.timesteps.size(); ++i) model_timesteps_.insert(model_timesteps_.end(), 2, plan.timesteps[i]);
    std::vector<int> progress;
    for (size_t e = 0; e < model_timesteps_.size(); ++e) {
      input_scales_.push_back(ve_input_scale(sigmas_[e]));
      progress.push_back(static_cast<int>((e + 1) / 2));
    }
    progress.back() = steps_;
    set_progress(progress);
  }

  // Three slots, relabelled instead of copied: the first evaluation of a step writes the
  // derivative d1 and the Euler point x + dt d1 into the two slots not holding x, whose slot
  // then holds the saved sample; the second writes saved + dt/2 (d1 + d2) over the Euler point.
  StepPlan plan(int eval) override {
    const size_t e = static_cast<size_t>(eval);
    StepPlan p;
    if (!second_pending_) {
      const double sigma = sigmas_[e], next = sigmas_[e + 1];
      const X0Coefficients d = derivative(v_prediction_, sigma, sigma);
      dt_ = next - sigma;
      saved_slot_ = x_slot_;
      derivative_slot_ = (x_slot_ + 1) % 3;
      const int euler_slot = (x_slot_ + 2) % 3;
      StepPlan::Output& deriv = p.write(derivative_slot_);
      deriv.slots[static_cast<size_t>(saved_slot_)] = d.x_coeff;
      deriv.model_out = d.out_coeff;
      StepPlan::Output& x = p.write(euler_slot);
      x.slots[static_cast<size_t>(saved_slot_)] = 1 + dt_ * d.x_coeff;
      x.model_out = dt_ * d.out_coeff;
      x_slot_ = euler_slot;
      second_pending_ = true;
      return p;
    }
    // Second order: sigma_next = sigmas[e]; x0 and the derivative both use sigma_next.
    const double next = sigmas_[e];
    const X0Coefficients d2 = derivative(v_prediction_, next, next);
    StepPlan::Output& x = p.write(x_slot_);
    x.slots[static_cast<size_t>(saved_slot_)] = 1;
    x.slots[static_cast<size_t>(derivative_slot_)] = dt_ / 2;
    x.slots[static_cast<size_t>(x_slot_)] = dt_ / 2 * d2.x_coeff;
    x.model_out = dt_ / 2 * d2.out_coeff;
    second_pending_ = false;
    return p;
  }

 private:
  bool second_pending_ = false;
  double dt_ = 0;
  int saved_slot_ = 0, derivative_slot_ = 0;
};

// LMS: linear multistep of order up to 4 over the stored derivatives; coefficient k is the
// integral over [sigma_i, sigma_{i+1}] of the Lagrange basis polynomial of sigma_{i-k}.
class LmsSampler final : public SamplerBase {
 public:
  explicit LmsSampler(const SamplerSetup& setup) : SamplerBase(setup) {
    num_slots_ = 5;
    SigmaPlan plan = make_sigma_plan(setup);
    model_timesteps_ = plan.timesteps;
    sigmas_ = plan.sigmas;
    init_noise_sigma_ = plan.init_noise_sigma;
    std::vector<int> progress;
    for (int i = 0; i < steps_; ++i) {
      input_scales_.push_back(ve_input_scale(sigmas_[static_cast<size_t>(i)]));
      progress.push_back(i + 1);
    }
    set_progress(progress);
  }

  // Slot 0 holds x, slots 1-4 the last derivatives (a ring): the new derivative goes into a
  // free slot, or the oldest one's (no longer needed), and x takes the multistep combination.
  StepPlan plan(int eval) override {
    constexpr int kMaxOrder = 4;
    const double sigma = sigmas_[static_cast<size_t>(eval)];
    const X0Coefficients d = derivative(v_prediction_, sigma, sigma);
    const int order = std::min(eval + 1, kMaxOrder);
    int new_slot = static_cast<int>(derivative_slots_.size()) + 1;
    if (derivative_slots_.size() == kMaxOrder) {
      new_slot = derivative_slots_.front();
      derivative_slots_.erase(derivative_slots_.begin());
    }
    StepPlan p;
    StepPlan::Output& deriv = p.write(new_slot);
    deriv.slots[0] = d.x_coeff;
    deriv.model_out = d.out_coeff;
    StepPlan::Output& x = p.write(0);
    const double c0 = lms_coefficient(order, eval, 0);  // the new derivative's weight
    x.slots[0] = 1 + c0 * d.x_coeff;
    x.model_out = c0 * d.out_coeff;
    for (int k = 1; k < order; ++k) {
      const int slot = derivative_slots_[derivative_slots_.size() - static_cast<size_t>(k)];
      x.slots[static_cast<size_t>(slot)] += lms_coefficient(order, eval, k);
    }
    derivative_slots_.push_back(new_slot);
    return p;
  }

  // integral_{s_t}^{s_{t+1}} prod_{j != k} (tau - s_{t-j}) / (s_{t-k} - s_{t-j}) dtau, exact
  // (the integrand has degree <= 3) by 3-point Gauss-Legendre.
  double lms_coefficient(int order, int t, int k) const {
    auto basis = [&](double tau) {
      double prod = 1;
      for (int j = 0; j < order; ++j) {
        if (j == k) continue;
        const double sj = sigmas_[static_cast<size_t>(t - j)], sk = sigmas_[static_cast<size_t>(t - k)];
        prod *= (tau - sj) / (sk - sj);
      }
      return prod;
    };
    const double a = sigmas_[static_cast<size_t>(t)], b = sigmas_[static_cast<size_t>(t) + 1];
    const double mid = (a + b) / 2, half = (b - a) / 2;
    const double node = std::sqrt(3.0 / 5.0);
    return half * (5.0 / 9.0 * basis(mid - half * node) + 8.0 / 9.0 * basis(mid) + 5.0 / 9.0 * basis(mid + half * node));
  }

 private:
  std::vector<int> derivative_slots_;  // slots of the stored derivatives, oldest first, at most 4
};

}  // namespace

std::unique_ptr<Sampler> make_euler_sampler(const SamplerSetup& setup, bool ancestral) {
  return std::make_unique<EulerSampler>(setup, ancestral);
}
std::unique_ptr<Sampler> make_heun_sampler(const SamplerSetup& setup) { return std::make_unique<HeunSampler>(setup); }
std::unique_ptr<Sampler> make_lms_sampler(const SamplerSetup& setup) { return std::make_unique<LmsSampler>(setup); }

}  // namespace sd
