// Multistep exponential-integrator samplers on the variance-preserving sample: DPM++ 2M
// (diffusers' DPMSolverMultistepScheduler, dpmsolver++, order 2, midpoint, lower_order_final)
// and UniPC (UniPCMultistepScheduler, bh2, order 2, predict_x0, corrector on every step).
#include <algorithm>
#include <array>
#include <cmath>

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
  // The data prediction x0 at step i as coefficients of (x, model_out).
  X0Coefficients x0_at(int i) const {
    const VpPoint p = vp_point(sigmas_[static_cast<size_t>(i)]);
    return x0_from_vp(v_prediction_, p.alpha, p.sigma);
  }
};

class DpmSolverPP2M final : public MultistepBase {
 public:
  explicit DpmSolverPP2M(const SamplerSetup& setup) : MultistepBase(setup) { num_slots_ = 2; }

  // Slot 0 holds x, slot 1 the previous step's data prediction; this step's x0 = cx x + co m
  // replaces it while x takes the (first- or second-order) update.
  StepPlan plan(int eval) override {
    const size_t i = static_cast<size_t>(eval);
    const X0Coefficients x0 = x0_at(eval);
    // The last step (to sigma 0) is always first order (final_sigmas_type "zero").
    const bool last_step = eval == num_evals() - 1;
    const bool first_order = lower_order_nums_ < 1 || last_step;
    if (lower_order_nums_ < 2) ++lower_order_nums_;
    StepPlan p;
    StepPlan::Output& x = p.write(0);
    StepPlan::Output& store = p.write(1);
    store.slots[0] = x0.x_coeff;
    store.model_out = x0.out_coeff;
    if (sigmas_[i + 1] == 0) {  // x_t = x0 exactly (alpha_t = 1, sigma_t = 0)
      x.slots[0] = x0.x_coeff;
      x.model_out = x0.out_coeff;
      return p;
    }
    const VpPoint t = vp_point(sigmas_[i + 1]), s0 = vp_point(sigmas_[i]);
    const double h = t.lambda - s0.lambda;
    const double phi = t.alpha * std::expm1(-h);  // alpha_t * (exp(-h) - 1)
    double w_x0 = -phi;  // weight of this step's x0
    if (!first_order) {
      // midpoint: D0 = m0, D1 = (m0 - m1) / r0; x_t = ... - phi D0 - 0.5 phi D1.
      const VpPoint s1 = vp_point(sigmas_[i - 1]);
      const double r0 = (s0.lambda - s1.lambda) / h;
      w_x0 = -phi - 0.5 * phi / r0;
      x.slots[1] = 0.5 * phi / r0;
    }
    x.slots[0] = t.sigma / s0.sigma + w_x0 * x0.x_coeff;
    x.model_out = w_x0 * x0.out_coeff;
    return p;
  }

 private:
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
  explicit UniPcSampler(const SamplerSetup& setup) : MultistepBase(setup) { num_slots_ = kSlots; }

  // Slots: x, the last sample (the corrected x the predictor started from) and two data
  // predictions (m_last, m_prev), relabelled each step: this step's m_t overwrites m_prev's
  // slot and the old m_last becomes m_prev. All terms are linear in the slots before the step,
  // the model output m and x: m_t = cx x + co m, the corrected sample x_c (x itself at the
  // first step) and the predictor's result from x_c.
  StepPlan plan(int eval) override {
    const size_t i = static_cast<size_t>(eval);
    const X0Coefficients c = x0_at(eval);
    Form m_t;
    m_t.slots[static_cast<size_t>(x_slot_)] = c.x_coeff;
    m_t.model_out = c.out_coeff;
    Form x_c;
    x_c.slots[static_cast<size_t>(x_slot_)] = 1;
    if (eval > 0 && has_last_sample_) x_c = corrector(i, m_t);
    // m_prev <- m_last, m_last <- m_t (written into the old m_prev's slot).
    std::swap(m_last_slot_, m_prev_slot_);
    int order = std::min(2, num_evals() - eval);  // lower_order_final
    order = std::min(order, lower_order_nums_ + 1);
    this_order_ = order;
    has_last_sample_ = true;
    if (lower_order_nums_ < 2) ++lower_order_nums_;
    const Form x_next = predictor(i, x_c, m_t, order);

    StepPlan p;
    auto write = [&](int s, const Form& f) {
      StepPlan::Output& o = p.write(s);
      o.slots = f.slots;
      o.model_out = f.model_out;
    };
    write(x_slot_, x_next);
    write(last_sample_slot_, x_c);
    write(m_last_slot_, m_t);
    return p;
  }

 private:
  static constexpr int kSlots = 4;
  // A linear form over (state slots before the step, model output).
  struct Form {
    std::array<double, StepPlan::kMaxSlots> slots{};
    double model_out = 0;
    void add(const Form& f, double w) {
      for (size_t s = 0; s < slots.size(); ++s) slots[s] += w * f.slots[s];
      model_out += w * f.model_out;
    }
  };

  Form predictor(size_t i, const Form& x_c, const Form& m_t, int order) const {
    // UniP-bh2: x_t = sigma_t/sigma_s0 x - alpha_t h_phi_1 m0 - alpha_t B_h * 0.5 * D1, m0 = m_t.
    if (sigmas_[i + 1] == 0) return m_t;  // alpha_t = 1, sigma_t = 0: x_t = m0
    const VpPoint t = vp_point(sigmas_[i + 1]), s0 = vp_point(sigmas_[i]);
    const double h = t.lambda - s0.lambda, hh = -h;
    const double h_phi_1 = std::expm1(hh), B_h = std::expm1(hh);
    Form out;
    out.add(x_c, t.sigma / s0.sigma);
    out.add(m_t, -t.alpha * h_phi_1);
    if (order == 2) {
      const double rk = (vp_point(sigmas_[i - 1]).lambda - s0.lambda) / h;
      const double w = -t.alpha * B_h * 0.5 / rk;  // D1 = (m_prev - m_last) / rk, rho_p = 0.5
      out.slots[static_cast<size_t>(m_prev_slot_)] += w;  // m_prev after the shift: the old m_last
      out.add(m_t, -w);
    }
    return out;
  }

  // UniC-bh2 on the sample predicted at the previous step, with the fresh prediction m_t (the
  // slots still labelled as before the shift: m_last_slot_ holds m0, m_prev_slot_ m_prev).
  Form corrector(size_t i, const Form& m_t) const {
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
    // D1 = (m_prev - m0) / rk, x = the last sample.
    const double k = -t.alpha * B_h;
    Form out;
    out.slots[static_cast<size_t>(last_sample_slot_)] += t.sigma / s0.sigma;
    double m0_coeff = -t.alpha * h_phi_1 - k * rho_t;
    if (order == 2) {
      out.slots[static_cast<size_t>(m_prev_slot_)] += k * rho_d1 / rk;
      m0_coeff -= k * rho_d1 / rk;
    }
    out.slots[static_cast<size_t>(m_last_slot_)] += m0_coeff;
    out.add(m_t, k * rho_t);
    return out;
  }

  int last_sample_slot_ = 1, m_last_slot_ = 2, m_prev_slot_ = 3;
  bool has_last_sample_ = false;
  int this_order_ = 1;
  int lower_order_nums_ = 0;
};

}  // namespace

std::unique_ptr<Sampler> make_dpmpp_2m_sampler(const SamplerSetup& setup) { return std::make_unique<DpmSolverPP2M>(setup); }
std::unique_ptr<Sampler> make_unipc_sampler(const SamplerSetup& setup) { return std::make_unique<UniPcSampler>(setup); }

}  // namespace sd
