// Multistep exponential-integrator samplers on the variance-preserving sample: DPM++ 2M
// (diffusers' DPMSolverMultistepScheduler, dpmsolver++, order 2, midpoint, lower_order_final)
// and UniPC (UniPCMultistepScheduler, bh2, order 2, predict_x0, corrector on every step).
#include <cmath>

#include "samplers/lincomb.h"
#include "samplers/sampler_factories.h"

namespace sd {
namespace {

// alpha_t = 1 / sqrt(sigma^2 + 1), sigma_t = sigma * alpha_t, lambda_t = log alpha_t - log sigma_t.
struct VpPoint {
  double alpha, sigma, lambda;
};
VpPoint vp_point(double sigma) {
  const double alpha = 1 / std::sqrt(sigma * sigma + 1);
  const double s = sigma * alpha;
  return {alpha, s, std::log(alpha) - std::log(s)};
}

// Timesteps and sigmas as DPMSolverMultistep/UniPC set_timesteps make them: interpolated
// sigmas at the spaced timesteps, or Karras sigmas over the whole training range with the
// timesteps rounded back; final sigma 0 (final_sigmas_type "zero").
void make_multistep_plan(const SamplerSetup& setup, std::vector<double>* timesteps, std::vector<double>* sigmas) {
  std::vector<double> sig;
  if (setup.karras) {
    const auto& train = setup.train.sigmas;
    sig = karras_sigmas(train.front(), train.back(), setup.steps);
    for (double s : sig) timesteps->push_back(std::nearbyint(sigma_to_t(setup.train, s)));
  } else {
    auto ts = multistep_timesteps(setup.config, setup.steps);
    SD_ASSERT(ts.ok(), "make_sampler validates the timesteps first");
    for (int64_t t : *ts) {
      timesteps->push_back(static_cast<double>(t));
      sig.push_back(interp_sigma(setup.train, static_cast<double>(t)));
    }
  }
  for (double s : sig) sigmas->push_back(round_to_f32(s));
  sigmas->push_back(0.0);
}

class MultistepBase : public SamplerBase {
 protected:
  explicit MultistepBase(const SamplerSetup& setup) : SamplerBase(setup) {
    make_multistep_plan(setup, &model_timesteps_, &sigmas_);
    input_scales_.assign(model_timesteps_.size(), 1.0);
    std::vector<int> progress;
    for (int i = 0; i < steps_; ++i) progress.push_back(i + 1);
    set_progress(progress);
  }
  // The data prediction x0 at step i, as a tensor.
  Tensor convert_to_x0(Backend& backend, int i, const Tensor& x, const Tensor& model_out) const {
    const VpPoint p = vp_point(sigmas_[static_cast<size_t>(i)]);
    const X0Coefficients c = x0_from_vp(v_prediction_, p.alpha, p.sigma);
    return LinearCombination().add(x, c.x_coeff).add(model_out, c.out_coeff).eval(backend);
  }
};

class DpmSolverPP2M final : public MultistepBase {
 public:
  explicit DpmSolverPP2M(const SamplerSetup& setup) : MultistepBase(setup) {}

  Tensor step(Backend& backend, int eval, const Tensor& x, const Tensor& model_out,
              std::span<NoiseGenerator* const>) override {
    const size_t i = static_cast<size_t>(eval);
    Tensor x0 = convert_to_x0(backend, eval, x, model_out);
    prev_x0_ = last_x0_;
    last_x0_ = x0;
    // The last step (to sigma 0) is always first order (final_sigmas_type "zero").
    const bool last_step = eval == num_evals() - 1;
    const bool first_order = lower_order_nums_ < 1 || last_step;
    if (lower_order_nums_ < 2) ++lower_order_nums_;
    if (sigmas_[i + 1] == 0) return x0;  // x_t = x0 exactly (alpha_t = 1, sigma_t = 0)
    const VpPoint t = vp_point(sigmas_[i + 1]), s0 = vp_point(sigmas_[i]);
    const double h = t.lambda - s0.lambda;
    const double phi = t.alpha * std::expm1(-h);  // alpha_t * (exp(-h) - 1)
    LinearCombination lc;
    lc.add(x, t.sigma / s0.sigma);
    if (first_order) {
      lc.add(x0, -phi);
    } else {
      // midpoint: D0 = m0, D1 = (m0 - m1) / r0; x_t = ... - phi D0 - 0.5 phi D1.
      const VpPoint s1 = vp_point(sigmas_[i - 1]);
      const double r0 = (s0.lambda - s1.lambda) / h;
      lc.add(x0, -phi - 0.5 * phi / r0).add(prev_x0_, 0.5 * phi / r0);
    }
    return lc.eval(backend);
  }

 private:
  Tensor last_x0_, prev_x0_;  // data predictions of this step and the one before
  int lower_order_nums_ = 0;
};

// The b-vector of UniPC's bh2 variant for `order` (1 or 2) and hh = -h.
std::vector<double> unipc_b(int order, double hh) {
  const double h_phi_1 = std::expm1(hh);
  const double B_h = std::expm1(hh);
  double h_phi_k = h_phi_1 / hh - 1;
  double factorial = 1;
  std::vector<double> b;
  for (int k = 1; k <= order; ++k) {
    b.push_back(h_phi_k * factorial / B_h);
    factorial *= k + 1;
    h_phi_k = h_phi_k / hh - 1 / factorial;
  }
  return b;
}

class UniPcSampler final : public MultistepBase {
 public:
  explicit UniPcSampler(const SamplerSetup& setup) : MultistepBase(setup) {}

  Tensor step(Backend& backend, int eval, const Tensor& x_in, const Tensor& model_out,
              std::span<NoiseGenerator* const>) override {
    const size_t i = static_cast<size_t>(eval);
    Tensor x = x_in;
    Tensor m_t = convert_to_x0(backend, eval, x, model_out);
    if (eval > 0 && last_sample_.defined()) x = corrector(backend, i, m_t);
    m_prev_ = m_last_;
    m_last_ = m_t;
    int order = std::min(2, num_evals() - eval);  // lower_order_final
    order = std::min(order, lower_order_nums_ + 1);
    this_order_ = order;
    last_sample_ = x;
    if (lower_order_nums_ < 2) ++lower_order_nums_;
    return predictor(backend, i, x, order);
  }

 private:
  // UniP-bh2: x_t = sigma_t/sigma_s0 x - alpha_t h_phi_1 m0 - alpha_t B_h * 0.5 * D1.
  Tensor predictor(Backend& backend, size_t i, const Tensor& x, int order) const {
    if (sigmas_[i + 1] == 0) return m_last_;  // alpha_t = 1, sigma_t = 0: x_t = m0
    const VpPoint t = vp_point(sigmas_[i + 1]), s0 = vp_point(sigmas_[i]);
    const double h = t.lambda - s0.lambda, hh = -h;
    const double h_phi_1 = std::expm1(hh), B_h = std::expm1(hh);
    LinearCombination lc;
    lc.add(x, t.sigma / s0.sigma).add(m_last_, -t.alpha * h_phi_1);
    if (order == 2) {
      const double rk = (vp_point(sigmas_[i - 1]).lambda - s0.lambda) / h;
      const double w = -t.alpha * B_h * 0.5 / rk;  // D1 = (m_prev - m_last) / rk, rho_p = 0.5
      lc.add(m_prev_, w).add(m_last_, -w);
    }
    return lc.eval(backend);
  }

  // UniC-bh2 on the sample predicted at the previous step, with the fresh model output m_t.
  Tensor corrector(Backend& backend, size_t i, const Tensor& m_t) const {
    const int order = this_order_;
    const VpPoint t = vp_point(sigmas_[i]), s0 = vp_point(sigmas_[i - 1]);
    const double h = t.lambda - s0.lambda, hh = -h;
    const double h_phi_1 = std::expm1(hh), B_h = std::expm1(hh);
    double rho_d1 = 0, rho_t = 0.5, rk = 1;
    if (order == 2) {
      rk = (vp_point(sigmas_[i - 2]).lambda - s0.lambda) / h;
      // Solve [[1, 1], [rk, 1]] rho = b.
      const std::vector<double> b = unipc_b(2, hh);
      rho_d1 = (b[0] - b[1]) / (1 - rk);
      rho_t = b[0] - rho_d1;
    }
    // x_t = sigma_t/sigma_s0 x - alpha_t h_phi_1 m0 - alpha_t B_h (rho_d1 D1 + rho_t (m_t - m0)),
    // D1 = (m_prev - m0) / rk, m0 = m_last_.
    const double k = -t.alpha * B_h;
    LinearCombination lc;
    lc.add(last_sample_, t.sigma / s0.sigma);
    double m0_coeff = -t.alpha * h_phi_1 - k * rho_t;
    if (order == 2) {
      lc.add(m_prev_, k * rho_d1 / rk);
      m0_coeff -= k * rho_d1 / rk;
    }
    lc.add(m_last_, m0_coeff).add(m_t, k * rho_t);
    return lc.eval(backend);
  }

  Tensor m_last_, m_prev_;  // data predictions of the previous two steps (after the shift: this and previous)
  Tensor last_sample_;
  int this_order_ = 1;
  int lower_order_nums_ = 0;
};

}  // namespace

std::unique_ptr<Sampler> make_dpmpp_2m_sampler(const SamplerSetup& setup) { return std::make_unique<DpmSolverPP2M>(setup); }
std::unique_ptr<Sampler> make_unipc_sampler(const SamplerSetup& setup) { return std::make_unique<UniPcSampler>(setup); }

}  // namespace sd
