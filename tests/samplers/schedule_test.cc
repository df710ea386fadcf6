// Schedules against the reference: for every case of tiny-sd1 and tiny-sd2 schedules.json,
// the sampler built from the case's config has the reference timesteps, sigmas and
// init_noise_sigma (relative 1e-6), and the case's solver options are the ones we implement.
#include <gtest/gtest.h>

#include <cmath>
#include <fstream>
#include <nlohmann/json.hpp>

#include "samplers/sampler.h"
#include "samplers/schedule.h"

namespace sd {
namespace {

// schedules.json comes from Python's json module, which writes the non-JSON -Infinity
// (lambda_min_clipped); map it to null before parsing.
nlohmann::json load_cases(const std::string& model) {
  std::ifstream f(std::string(SD_TEST_DATA_DIR) + "/" + model + "/schedules.json");
  EXPECT_TRUE(f.good()) << model;
  std::string text((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  for (const std::string bad : {"-Infinity", "Infinity", "NaN"}) {
    for (size_t at = text.find(bad); at != std::string::npos; at = text.find(bad, at)) text.replace(at, bad.size(), "null");
  }
  return nlohmann::json::parse(text)["cases"];
}

SchedulerConfig config_from_json(const nlohmann::json& c) {
  SchedulerConfig s;
  s.num_train_timesteps = c["num_train_timesteps"];
  s.beta_start = c["beta_start"];
  s.beta_end = c["beta_end"];
  s.beta_schedule = c["beta_schedule"];
  s.prediction_type = c["prediction_type"];
  s.timestep_spacing = c["timestep_spacing"];
  s.steps_offset = c["steps_offset"];
  s.set_alpha_to_one = c.value("set_alpha_to_one", false);
  s.clip_sample = c.value("clip_sample", false);
  return s;
}

void expect_close(double got, double want, const std::string& what) {
  EXPECT_LE(std::fabs(got - want), 1e-6 * std::max(1.0, std::fabs(want))) << what << ": got " << got << " want " << want;
}

// The options of each reference scheduler that our samplers hard-code.
void expect_supported_options(const std::string& name, const nlohmann::json& c) {
  auto is = [&](const char* key, const nlohmann::json& v) {
    if (c.contains(key)) {
      EXPECT_EQ(c[key], v) << name << " " << key;
    }
  };
  is("trained_betas", nullptr);
  is("rescale_betas_zero_snr", false);
  is("thresholding", false);
  is("use_exponential_sigmas", false);
  is("use_beta_sigmas", false);
  is("interpolation_type", "linear");
  is("timestep_type", "discrete");
  is("final_sigmas_type", "zero");
  is("sigma_min", nullptr);
  is("sigma_max", nullptr);
  if (name.rfind("pndm", 0) == 0) is("skip_prk_steps", true);
  if (name.rfind("dpmpp_2m", 0) == 0) {
    is("solver_order", 2);
    is("algorithm_type", "dpmsolver++");
    is("solver_type", "midpoint");
    is("lower_order_final", true);
    is("euler_at_final", false);
    is("use_lu_lambdas", false);
    is("use_karras_sigmas", name.rfind("dpmpp_2m_karras", 0) == 0);
  }
  if (name.rfind("unipc", 0) == 0) {
    is("solver_order", 2);
    is("predict_x0", true);
    is("solver_type", "bh2");
    is("lower_order_final", true);
    is("disable_corrector", nlohmann::json::array());
    is("solver_p", nullptr);
    is("use_karras_sigmas", false);
  }
}

void check_model(const std::string& model) {
  const auto cases = load_cases(model);
  ASSERT_FALSE(cases.empty());
  for (const auto& [name, spec] : cases.items()) {
    SCOPED_TRACE(model + " " + name);
    expect_supported_options(name, spec["config"]);
    auto sampler = make_sampler(spec["scheduler"], config_from_json(spec["config"]), spec["steps"]);
    ASSERT_TRUE(sampler.ok()) << sampler.status().to_string();
    const Sampler& s = **sampler;
    const std::vector<double> want_t = spec["timesteps"], want_s = spec["sigmas"];
    ASSERT_EQ(s.timesteps().size(), want_t.size());
    for (size_t i = 0; i < want_t.size(); ++i) expect_close(s.timesteps()[i], want_t[i], "timestep " + std::to_string(i));
    ASSERT_EQ(s.sigmas().size(), want_s.size());
    for (size_t i = 0; i < want_s.size(); ++i) expect_close(s.sigmas()[i], want_s[i], "sigma " + std::to_string(i));
    expect_close(s.init_noise_sigma(), spec["init_noise_sigma"], "init_noise_sigma");
    EXPECT_EQ(s.num_evals(), static_cast<int>(want_t.size()));
    EXPECT_EQ(s.progress_step(s.num_evals() - 1), static_cast<int>(spec["steps"]));
  }
}

TEST(Schedules, MatchReferenceTinySd1) { check_model("tiny-sd1"); }
TEST(Schedules, MatchReferenceTinySd2) { check_model("tiny-sd2"); }

TEST(Schedules, TrainScheduleFollowsFloat32Arithmetic) {
  auto s = make_train_schedule(SchedulerConfig{});
  ASSERT_TRUE(s.ok());
  // sigma(0) and sigma(999) of the SD schedule as diffusers holds them (float32).
  EXPECT_EQ(static_cast<float>(s->sigmas[0]), 0.029167532920837402f);
  EXPECT_EQ(static_cast<float>(s->sigmas[999]), 14.614646911621094f);
  EXPECT_EQ(s->final_alpha_cumprod, s->alphas_cumprod[0]);
  SchedulerConfig one;
  one.set_alpha_to_one = true;
  EXPECT_EQ(make_train_schedule(one)->final_alpha_cumprod, 1.0);
}

TEST(Schedules, Spacings) {
  SchedulerConfig c;
  c.timestep_spacing = "trailing";
  EXPECT_EQ(*ddim_timesteps(c, 4), (std::vector<int64_t>{999, 749, 499, 249}));
  EXPECT_EQ(*ddim_timesteps(c, 3), (std::vector<int64_t>{999, 666, 332}));
  c.timestep_spacing = "linspace";
  EXPECT_EQ(*ddim_timesteps(c, 4), (std::vector<int64_t>{999, 666, 333, 0}));
  const auto lin = *discrete_sigma_timesteps(c, 4);
  EXPECT_EQ(lin, (std::vector<double>{999, 666, 333, 0}));
  EXPECT_EQ(*multistep_timesteps(c, 4), (std::vector<int64_t>{999, 749, 500, 250}));
  c.timestep_spacing = "leading";
  EXPECT_EQ(*multistep_timesteps(c, 4), (std::vector<int64_t>{801, 601, 401, 201}));
  c.timestep_spacing = "sideways";
  EXPECT_FALSE(ddim_timesteps(c, 4).ok());
  c.timestep_spacing = "leading";
  EXPECT_FALSE(ddim_timesteps(c, 0).ok());
  EXPECT_FALSE(ddim_timesteps(c, 1001).ok());
  c.steps_offset = 1000;
  EXPECT_FALSE(ddim_timesteps(c, 10).ok());  // 1000 + ... lies outside [0, 999]
}

TEST(Schedules, KarrasAndSigmaToTRoundTrip) {
  auto s = *make_train_schedule(SchedulerConfig{});
  const auto k = karras_sigmas(s.sigmas.front(), s.sigmas.back(), 10);
  ASSERT_EQ(k.size(), 10u);
  EXPECT_DOUBLE_EQ(k.front(), s.sigmas.back());
  EXPECT_NEAR(k.back(), s.sigmas.front(), 1e-12);
  for (size_t i = 1; i < k.size(); ++i) EXPECT_LT(k[i], k[i - 1]);
  // log_sigmas are float32 logs (as numpy gives them), so the round trip is only close.
  for (int t : {0, 1, 17, 500, 998, 999}) EXPECT_NEAR(sigma_to_t(s, s.sigmas[static_cast<size_t>(t)]), t, 1e-4);
  EXPECT_NEAR(interp_sigma(s, 10.25), 0.75 * s.sigmas[10] + 0.25 * s.sigmas[11], 1e-15);
}

}  // namespace
}  // namespace sd
