// Sampler registry: display names and ids, case-insensitive lookup with aliases, the error
// for unknown names, schedule options, and the per-sampler evaluation plan (evals, progress).
#include <gtest/gtest.h>

#include <cmath>

#include "samplers/sampler.h"

namespace sd {
namespace {

// make_sampler that must succeed.
std::unique_ptr<Sampler> must_make(const std::string& name, const SchedulerConfig& config, int steps,
                                   const SamplerOptions& options = {}) {
  auto s = make_sampler(name, config, steps, options);
  EXPECT_TRUE(s.ok()) << s.status().to_string();
  return s.ok() ? std::move(s).value() : nullptr;
}

TEST(SamplerRegistry, ListsTheA1111Samplers) {
  std::vector<std::string> names, ids;
  for (const auto& info : sampler_registry()) {
    names.push_back(info.display_name);
    ids.push_back(info.id);
  }
  EXPECT_EQ(names, (std::vector<std::string>{"DPM++ 2M", "DPM++ 2M Karras", "Euler a", "Euler", "LMS", "Heun", "DDIM",
                                             "PLMS", "UniPC"}));
  EXPECT_EQ(ids, (std::vector<std::string>{"dpmpp_2m", "dpmpp_2m_karras", "euler_a", "euler", "lms", "heun", "ddim",
                                           "plms", "unipc"}));
}

TEST(SamplerRegistry, FindsByNameIdOrAliasIgnoringCase) {
  EXPECT_EQ((*find_sampler("Euler a"))->id, "euler_a");
  EXPECT_EQ((*find_sampler("EULER A"))->id, "euler_a");
  EXPECT_EQ((*find_sampler("euler_ancestral"))->id, "euler_a");
  EXPECT_EQ((*find_sampler("k_euler_a"))->id, "euler_a");
  EXPECT_EQ((*find_sampler("Euler"))->id, "euler");
  EXPECT_EQ((*find_sampler("pndm"))->id, "plms");
  EXPECT_EQ((*find_sampler("PLMS"))->id, "plms");
  EXPECT_EQ((*find_sampler("dpm++ 2m karras"))->id, "dpmpp_2m_karras");
  EXPECT_EQ((*find_sampler("UniPC"))->id, "unipc");
}

TEST(SamplerRegistry, UnknownNamesListTheValidOnes) {
  auto r = find_sampler("Euler b");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument);
  const std::string m = r.status().message();
  EXPECT_NE(m.find("'Euler b'"), std::string::npos) << m;
  for (const auto& info : sampler_registry()) {
    EXPECT_NE(m.find(info.display_name), std::string::npos) << m;
    EXPECT_NE(m.find(info.id), std::string::npos) << m;
  }
  EXPECT_FALSE(make_sampler("nope", SchedulerConfig{}, 20).ok());
}

TEST(SamplerRegistry, ScheduleOptions) {
  EXPECT_EQ(*parse_sigma_schedule("Karras"), SigmaSchedule::kKarras);
  EXPECT_EQ(*parse_sigma_schedule("automatic"), SigmaSchedule::kAutomatic);
  EXPECT_EQ(*parse_sigma_schedule("uniform"), SigmaSchedule::kUniform);
  EXPECT_FALSE(parse_sigma_schedule("exponential").ok());
  // Karras: the DPM++ 2M Karras default; an option for the sigma samplers; not for DDIM/PLMS.
  auto plain = must_make("dpmpp_2m", SchedulerConfig{}, 8);
  auto karras = must_make("dpmpp_2m", SchedulerConfig{}, 8, {SigmaSchedule::kKarras});
  auto named = must_make("DPM++ 2M Karras", SchedulerConfig{}, 8);
  auto uniform = must_make("DPM++ 2M Karras", SchedulerConfig{}, 8, {SigmaSchedule::kUniform});
  EXPECT_EQ(karras->sigmas(), named->sigmas());
  EXPECT_EQ(plain->sigmas(), uniform->sigmas());
  EXPECT_NE(plain->sigmas(), karras->sigmas());
  auto euler_karras = must_make("euler", SchedulerConfig{}, 8, {SigmaSchedule::kKarras});
  EXPECT_NE(euler_karras->model_timestep(1), std::floor(euler_karras->model_timestep(1)));  // fractional t
  auto ddim = make_sampler("ddim", SchedulerConfig{}, 8, {SigmaSchedule::kKarras});
  ASSERT_FALSE(ddim.ok());
  EXPECT_NE(ddim.status().message().find("karras"), std::string::npos);
}

TEST(SamplerRegistry, RejectsBadConfigsAndSteps) {
  SchedulerConfig c;
  EXPECT_FALSE(make_sampler("euler", c, 0).ok());
  EXPECT_FALSE(make_sampler("euler", c, 1001).ok());
  c.prediction_type = "sample";
  EXPECT_EQ(make_sampler("euler", c, 20).status().code(), StatusCode::kUnimplemented);
  c = SchedulerConfig{};
  c.beta_schedule = "squaredcos_cap_v2";
  EXPECT_EQ(make_sampler("euler", c, 20).status().code(), StatusCode::kUnimplemented);
  c = SchedulerConfig{};
  c.timestep_spacing = "odd";
  EXPECT_EQ(make_sampler("dpmpp_2m", c, 20).status().code(), StatusCode::kInvalidArgument);
  c = SchedulerConfig{};
  c.clip_sample = true;
  EXPECT_EQ(make_sampler("ddim", c, 20).status().code(), StatusCode::kUnimplemented);
}

TEST(SamplerRegistry, EvaluationPlans) {
  const int steps = 7;
  for (const auto& info : sampler_registry()) {
    auto s = must_make(info.id, SchedulerConfig{}, steps);
    int evals = steps;
    if (info.id == "heun") evals = 2 * steps - 1;
    if (info.id == "plms") evals = steps + 1;
    EXPECT_EQ(s->num_evals(), evals) << info.id;
    EXPECT_EQ(s->num_steps(), steps);
    int last = 0;
    for (int e = 0; e < s->num_evals(); ++e) {
      EXPECT_GE(s->progress_step(e), last) << info.id;
      last = s->progress_step(e);
      EXPECT_GT(s->input_scale(e), 0.0);
      EXPECT_LE(s->input_scale(e), 1.0);
      EXPECT_GE(s->model_timestep(e), 0.0);
      EXPECT_LE(s->model_timestep(e), 999.0);
    }
    EXPECT_EQ(last, steps) << info.id;
    EXPECT_EQ(s->info().id, info.id);
  }
}

}  // namespace
}  // namespace sd
