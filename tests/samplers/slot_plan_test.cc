// StepPlans applied as one batched Backend::slot_update: requests with different samplers at
// different evaluations, guidance folded into the coefficients, equal each request stepped on
// its own; plans stay within the slot and output limits and never read unwritten history.
#include <gtest/gtest.h>

#include <cmath>
#include <random>

#include "samplers/sampler.h"
#include "samplers/slot_table.h"

namespace sd {
namespace {

Backend& cpu() {
  static std::unique_ptr<Backend> b = make_cpu_backend(1);
  return *b;
}

Tensor random_host(const Shape& shape, uint32_t seed, double scale = 1.0) {
  std::mt19937 gen(seed);
  std::normal_distribution<float> d(0, 1);
  Tensor t = Tensor::empty_host(shape, DType::kF32);
  for (int64_t i = 0; i < t.numel(); ++i) t.f32()[i] = static_cast<float>(d(gen) * scale);
  return t;
}

const std::vector<std::string> kAll = {"ddim", "plms", "euler", "euler_a", "lms", "heun", "dpmpp_2m", "dpmpp_2m_karras", "unipc"};
const Shape kShape = {2, 3, 5, 4};  // NHWC, 2 images

std::unique_ptr<Sampler> make(const std::string& name, int steps, const std::string& prediction = "epsilon") {
  SchedulerConfig config;
  config.prediction_type = prediction;
  auto s = make_sampler(name, config, steps);
  EXPECT_TRUE(s.ok()) << s.status().to_string();
  return std::move(s).value();
}

// The model outputs of request j at evaluation e: uncond and cond predictions (host).
Tensor uncond_of(size_t j, int e) { return random_host(kShape, static_cast<uint32_t>(1000 + 37 * j + e)); }
Tensor cond_of(size_t j, int e) { return random_host(kShape, static_cast<uint32_t>(5000 + 37 * j + e)); }
double guidance_of(size_t j) { return j % 3 == 0 ? 1.0 : 2.0 + static_cast<double>(j); }  // 1: no guidance

std::vector<std::unique_ptr<NoiseGenerator>> generators(size_t j) {
  std::vector<std::unique_ptr<NoiseGenerator>> g;
  for (int k = 0; k < kShape[0]; ++k) g.push_back(make_noise_generator(NoiseSource::kTorchCpu, 70 + 10 * j + k));
  return g;
}
std::vector<NoiseGenerator*> raw(const std::vector<std::unique_ptr<NoiseGenerator>>& g) {
  std::vector<NoiseGenerator*> r;
  for (const auto& p : g) r.push_back(p.get());
  return r;
}

TEST(SlotPlans, OneBatchedUpdateOfMixedSamplersAtDifferentStepsEqualsEachAlone) {
  Backend& be = cpu();
  const size_t J = kAll.size();
  // Alone: Sampler::step with the guided prediction computed on the host.
  std::vector<Tensor> alone(J);
  for (size_t j = 0; j < J; ++j) {
    auto s = make(kAll[j], 4 + static_cast<int>(j % 3));
    auto gens = generators(j);
    Tensor x = be.upload(random_host(kShape, static_cast<uint32_t>(j), s->init_noise_sigma()), DType::kF32);
    for (int e = 0; e < s->num_evals(); ++e) {
      const Tensor u = uncond_of(j, e), c = cond_of(j, e);
      const double w = guidance_of(j);
      Tensor guided = Tensor::empty_host(kShape, DType::kF32);
      for (int64_t i = 0; i < guided.numel(); ++i) {
        guided.f32()[i] = static_cast<float>(w == 1.0 ? c.f32()[i] : (1 - w) * u.f32()[i] + w * c.f32()[i]);
      }
      x = s->step(be, e, x, be.upload(guided, DType::kF32), raw(gens));
    }
    alone[j] = be.download(x);
  }
  // Together: request j joins at round j, so every batched update mixes evaluations.
  struct Job {
    std::unique_ptr<Sampler> sampler;
    std::vector<std::unique_ptr<NoiseGenerator>> gens;
    std::vector<Tensor> slots;
    int eval = 0;
  };
  std::vector<Job> jobs(J);
  for (size_t j = 0; j < J; ++j) {
    jobs[j].sampler = make(kAll[j], 4 + static_cast<int>(j % 3));
    jobs[j].gens = generators(j);
    ASSERT_LE(jobs[j].sampler->num_slots(), StepPlan::kMaxSlots);
    for (int s = 0; s < jobs[j].sampler->num_slots(); ++s) jobs[j].slots.push_back(be.upload(Tensor::zeros_host(kShape, DType::kF32), DType::kF32));
    be.copy(be.upload(random_host(kShape, static_cast<uint32_t>(j), jobs[j].sampler->init_noise_sigma()), DType::kF32),
            jobs[j].slots[static_cast<size_t>(jobs[j].sampler->x_slot())]);
  }
  for (int round = 0;; ++round) {
    std::vector<size_t> active;
    for (size_t j = 0; j < J && static_cast<int>(j) <= round; ++j)
      if (jobs[j].eval < jobs[j].sampler->num_evals()) active.push_back(j);
    if (active.empty() && round >= static_cast<int>(J)) break;
    const int64_t n = kShape[0];
    SlotUpdateTable table(static_cast<int64_t>(active.size()) * n, /*direct_model_outputs=*/false);
    std::vector<StepPlan> plans(active.size());
    std::vector<Tensor> held;  // model outputs and noise, alive until the update ran
    for (size_t a = 0; a < active.size(); ++a) {
      Job& job = jobs[active[a]];
      const size_t j = active[a];
      const int x_slot = job.sampler->x_slot();
      plans[a] = job.sampler->plan(job.eval);
      ASSERT_LE(plans[a].outputs.size(), static_cast<size_t>(StepPlan::kMaxOutputs));
      Tensor noise;
      if (plans[a].draws_noise) noise = draw_noise_like(be, job.slots[static_cast<size_t>(x_slot)], raw(job.gens));
      const Tensor u = be.upload(uncond_of(j, job.eval), DType::kF32), c = be.upload(cond_of(j, job.eval), DType::kF32);
      held.insert(held.end(), {u, c, noise});
      for (int64_t k = 0; k < n; ++k) {
        SlotRow row;
        row.plan = &plans[a];
        const double w = guidance_of(j);
        if (w != 1.0) {
          row.uncond_weight = 1 - w;
          row.cond_weight = w;
          row.uncond = row_address(u, k);
        }
        row.cond = row_address(c, k);
        if (noise.defined()) row.noise = row_address(noise, k);
        for (size_t s = 0; s < job.slots.size(); ++s) row.slots[s] = row_address(job.slots[s], k);
        table.set_row(static_cast<int64_t>(a) * n + k, row);
      }
      ++job.eval;
    }
    table.apply(be, {}, shape_numel(kShape) / n, DType::kF32);
  }
  for (size_t j = 0; j < J; ++j) {
    const Tensor together = be.download(jobs[j].slots[static_cast<size_t>(jobs[j].sampler->x_slot())]);
    const double e = relative_l2(together, alone[j]);
    EXPECT_LE(e, 1e-5) << kAll[j];
    EXPECT_TRUE(std::isfinite(e)) << kAll[j];
  }
}

// History slots are written before any plan gives them a non-zero weight, for every sampler
// and prediction type, and plans never write one slot twice.
TEST(SlotPlans, NoPlanReadsAnUnwrittenSlot) {
  for (const std::string prediction : {"epsilon", "v_prediction"}) {
    for (const std::string& name : kAll) {
      for (int steps : {1, 2, 3, 7}) {
        auto s = make(name, steps, prediction);
        std::vector<bool> written(static_cast<size_t>(s->num_slots()), false);
        written[static_cast<size_t>(s->x_slot())] = true;
        for (int e = 0; e < s->num_evals(); ++e) {
          const StepPlan p = s->plan(e);
          for (const StepPlan::Output& o : p.outputs) {
            for (int k = 0; k < StepPlan::kMaxSlots; ++k) {
              if (o.slots[static_cast<size_t>(k)] == 0) continue;
              ASSERT_LT(k, s->num_slots()) << name;
              EXPECT_TRUE(written[static_cast<size_t>(k)]) << name << " " << prediction << " steps " << steps << " eval " << e
                                                         << " reads slot " << k << " before writing it";
            }
          }
          for (const StepPlan::Output& o : p.outputs) written[static_cast<size_t>(o.slot)] = true;
          EXPECT_TRUE(written[static_cast<size_t>(s->x_slot())]) << name;
        }
      }
    }
  }
}

}  // namespace
}  // namespace sd
