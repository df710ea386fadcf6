// DDIM (eta = 0) and PLMS (diffusers' PNDMScheduler with skip_prk_steps): discrete-timestep
// samplers on the variance-preserving sample, no input scaling, init_noise_sigma 1.
// Reproduces DDIMScheduler.step and PNDMScheduler.step_plms / _get_prev_sample.
#include <algorithm>
#include <cmath>

#include "samplers/sampler_factories.h"

namespace sd {
namespace {

class DdimSampler final : public SamplerBase {
 public:
  DdimSampler(const SamplerSetup& setup, std::vector<int64_t> timesteps) : SamplerBase(setup), ts_(std::move(timesteps)) {
    for (int64_t t : ts_) model_timesteps_.push_back(static_cast<double>(t));
    input_scales_.assign(ts_.size(), 1.0);
    std::vector<int> progress;
    for (int i = 0; i < steps_; ++i) progress.push_back(i + 1);
    set_progress(progress);
  }

  StepPlan plan(int eval) override {
    const int64_t t = ts_[static_cast<size_t>(eval)];
    const int64_t prev = t - setup_.config.num_train_timesteps / steps_;
    const double a_t = setup_.train.alphas_cumprod[static_cast<size_t>(t)];
    const double a_prev = prev >= 0 ? setup_.train.alphas_cumprod[static_cast<size_t>(prev)] : setup_.train.final_alpha_cumprod;
    // pred_x0 and pred_eps as combinations of (x, model_out).
    X0Coefficients x0, eps;
    if (v_prediction_) {
      x0 = {std::sqrt(a_t), -std::sqrt(1 - a_t)};
      eps = {std::sqrt(1 - a_t), std::sqrt(a_t)};
    } else {
      x0 = {1 / std::sqrt(a_t), -std::sqrt(1 - a_t) / std::sqrt(a_t)};
      eps = {0, 1};
    }
    // prev = sqrt(a_prev) x0 + sqrt(1 - a_prev) eps
    const double ca = std::sqrt(a_prev), cb = std::sqrt(1 - a_prev);
    StepPlan p;
    StepPlan::Output& x = p.write(0);
    x.slots[0] = ca * x0.x_coeff + cb * eps.x_coeff;
    x.model_out = ca * x0.out_coeff + cb * eps.out_coeff;
    return p;
  }

 private:
  std::vector<int64_t> ts_;
};

// PLMS: the first two evaluations form a second-order (Heun-like) warm-up at the first
// timestep; afterwards Adams-Bashforth combinations of up to four stored model outputs.
class PlmsSampler final : public SamplerBase {
 public:
  PlmsSampler(const SamplerSetup& setup, std::vector<int64_t> ascending) : SamplerBase(setup) {
    num_slots_ = 6;
    // plms_timesteps = concat(ts[:-1], ts[-2:-1], ts[-1:]) reversed, e.g. 876 751 751 626 ... 1.
    std::vector<int64_t> list(ascending.begin(), ascending.end() - 1);
    if (ascending.size() >= 2) list.push_back(ascending[ascending.size() - 2]);
    list.push_back(ascending.back());
    for (auto it = list.rbegin(); it != list.rend(); ++it) ts_.push_back(*it);
    for (int64_t t : ts_) model_timesteps_.push_back(static_cast<double>(t));
    input_scales_.assign(ts_.size(), 1.0);
    std::vector<int> progress;
    for (size_t e = 0; e < ts_.size(); ++e) progress.push_back(std::min(static_cast<int>(e), steps_));
    progress.back() = steps_;
    set_progress(progress);
  }

  // Slots: 0 = x, 1 = the warm-up's saved sample, 2-5 = stored model outputs (a ring). The
  // output just stored this step is the model prediction itself in the combination.
  StepPlan plan(int eval) override {
    SD_ASSERT(eval == counter_, "PLMS evaluations must be stepped in order");
    const int64_t ratio = setup_.config.num_train_timesteps / steps_;
    int64_t timestep = ts_[static_cast<size_t>(eval)];
    int64_t prev = timestep - ratio;
    StepPlan p;
    // ets as (slot or -1 for this step's model output) per entry, oldest first.
    if (counter_ != 1) {
      if (ets_slots_.size() > 3) ets_slots_.erase(ets_slots_.begin(), ets_slots_.end() - 3);
      int free_slot = kFirstEtsSlot;
      while (std::find(ets_slots_.begin(), ets_slots_.end(), free_slot) != ets_slots_.end()) ++free_slot;
      StepPlan::Output& store = p.write(free_slot);
      store.model_out = 1;
      ets_slots_.push_back(free_slot);
    } else {
      prev = timestep;
      timestep = timestep + ratio;
    }
    // The model output to use, as weights over (entry of ets or this step's output), and
    // the sample slot.
    const size_t n = ets_slots_.size();
    auto ets = [&](size_t k) { return k + 1 == n && counter_ != 1 ? kThisOutput : ets_slots_[k]; };
    std::vector<std::pair<int, double>> mo;
    int sample = 0;
    if (n == 1 && counter_ == 0) {
      mo = {{kThisOutput, 1.0}};
      StepPlan::Output& save = p.write(1);  // cur_sample = x
      save.slots[0] = 1;
    } else if (n == 1 && counter_ == 1) {
      mo = {{kThisOutput, 0.5}, {ets(0), 0.5}};
      sample = 1;
    } else if (n == 2) {
      mo = {{ets(1), 1.5}, {ets(0), -0.5}};
    } else if (n == 3) {
      mo = {{ets(2), 23.0 / 12}, {ets(1), -16.0 / 12}, {ets(0), 5.0 / 12}};
    } else {
      mo = {{ets(3), 55.0 / 24}, {ets(2), -59.0 / 24}, {ets(1), 37.0 / 24}, {ets(0), -9.0 / 24}};
    }
    ++counter_;
    prev_sample(p.write(0), sample, mo, timestep, prev);
    return p;
  }

 private:
  static constexpr int kFirstEtsSlot = 2;
  static constexpr int kThisOutput = -1;

  // _get_prev_sample: x_prev = sqrt(a_prev / a_t) x - (a_prev - a_t) eps / denom.
  void prev_sample(StepPlan::Output& x, int sample, const std::vector<std::pair<int, double>>& mo, int64_t t,
                   int64_t prev) const {
    const double a_t = setup_.train.alphas_cumprod[static_cast<size_t>(t)];
    const double a_prev = prev >= 0 ? setup_.train.alphas_cumprod[static_cast<size_t>(prev)] : setup_.train.final_alpha_cumprod;
    const double b_t = 1 - a_t, b_prev = 1 - a_prev;
    const double sample_coeff = std::sqrt(a_prev / a_t);
    const double denom = a_t * std::sqrt(b_prev) + std::sqrt(a_t * b_t * a_prev);
    const double eps_coeff = -(a_prev - a_t) / denom;
    // v-prediction: eps = sqrt(a_t) v + sqrt(b_t) sample (of the combined output).
    const double out_scale = v_prediction_ ? std::sqrt(a_t) : 1.0;
    const double sample_from_eps = v_prediction_ ? std::sqrt(b_t) : 0.0;
    x.slots[static_cast<size_t>(sample)] += sample_coeff + eps_coeff * sample_from_eps;
    for (const auto& [slot, w] : mo) {
      if (slot == kThisOutput) {
        x.model_out += eps_coeff * out_scale * w;
      } else {
        x.slots[static_cast<size_t>(slot)] += eps_coeff * out_scale * w;
      }
    }
  }

  std::vector<int64_t> ts_;
  int counter_ = 0;
  std::vector<int> ets_slots_;  // slots of the stored model outputs (eps or v as the model gives them), oldest first
};

}  // namespace

std::unique_ptr<Sampler> make_ddim_sampler(const SamplerSetup& setup) {
  auto ts = ddim_timesteps(setup.config, setup.steps);
  SD_ASSERT(ts.ok(), "make_sampler validates the timesteps first");
  return std::make_unique<DdimSampler>(setup, std::move(ts).value());
}

std::unique_ptr<Sampler> make_plms_sampler(const SamplerSetup& setup) {
  auto ts = ddim_timesteps(setup.config, setup.steps);  // descending
  SD_ASSERT(ts.ok(), "make_sampler validates the timesteps first");
  std::vector<int64_t> ascending(ts->rbegin(), ts->rend());
  return std::make_unique<PlmsSampler>(setup, std::move(ascending));
}

}  // namespace sd
