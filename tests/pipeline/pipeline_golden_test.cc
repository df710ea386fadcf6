// Whole text-to-image runs on the CPU against the reference pipelines: for every sampler
// case of both tiny models (golden initial latents in, final latents within relative L2 1e-3
// and images within 2/255 out). Case 1 puts two prompts into one batch as two jobs.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <fstream>
#include <nlohmann/json.hpp>

#include "golden_util.h"
#include "pipeline_util.h"
#include "pipeline/engine.h"
#include "pipeline/sd_engine.h"

namespace sd {
namespace {

using testing::data_path;
using testing::golden_f32;
using testing::read_schedules;

struct Case {
  std::string model, name;  // "tiny-sd1", "ddim.case0"
};

std::vector<Case> all_cases() {
  std::vector<Case> cases;
  for (std::string model : {"tiny-sd1", "tiny-sd2"}) {
    auto j = read_schedules(model);
    for (auto& [name, _] : j["cases"].items()) cases.push_back({model, name});
  }
  return cases;
}

class PipelineGolden : public ::testing::TestWithParam<Case> {};

std::map<std::string, std::unique_ptr<SdEngine>>& engines() {
  static std::map<std::string, std::unique_ptr<SdEngine>> e;
  return e;
}

SdEngine& engine_for(const std::string& model) {
  auto& e = engines()[model];
  if (!e) {
    auto loaded = SdEngine::load(data_path(model + "/model"), Device::cpu());
    EXPECT_TRUE(loaded.ok()) << loaded.status().to_string();
    e = std::move(loaded).value();
  }
  return *e;
}

TEST_P(PipelineGolden, FinalLatentsAndImagesMatch) {
  const Case& c = GetParam();
  const auto spec = read_schedules(c.model)["cases"][c.name];
  auto golden = testing::open_golden(c.model + "/pipeline.safetensors");
  const Tensor init = golden_f32(*golden, c.name + ".initial_latents");    // [N,4,h,w]
  const Tensor want_latents = golden_f32(*golden, c.name + ".final_latents");
  const Tensor want_image = golden_f32(*golden, c.name + ".image");        // [N,3,H,W]
  SdEngine& engine = engine_for(c.model);

  std::vector<std::unique_ptr<Job>> jobs;
  const auto& prompts = spec["prompt"];
  for (size_t i = 0; i < prompts.size(); ++i) {
    GenerationRequest r = testing::golden_request(spec, i, init);
    auto job = engine.begin(r);
    ASSERT_TRUE(job.ok()) << job.status().to_string();
    jobs.push_back(std::move(job).value());
  }
  std::vector<Job*> batch;
  for (auto& j : jobs) batch.push_back(j.get());
  while (!batch[0]->finished()) ASSERT_TRUE(engine.step(batch).ok());
  auto results = engine.finish(batch);
  ASSERT_TRUE(results.ok()) << results.status().to_string();

  for (size_t i = 0; i < results->size(); ++i) {
    const GenerationResult& r = (*results)[i];
    const int64_t n = static_cast<int64_t>(i);
    EXPECT_LE(relative_l2(r.final_latents, want_latents.slice_rows(n, n + 1)), 1e-3) << c.name << " image " << i;
    const Image& im = r.images[0];
    const int64_t H = want_image.dim(2), W = want_image.dim(3);
    ASSERT_EQ(im.width, W);
    ASSERT_EQ(im.height, H);
    double worst = 0;
    for (int64_t ch = 0; ch < 3; ++ch)
      for (int64_t p = 0; p < H * W; ++p) {
        const double want = want_image.f32()[((n * 3 + ch) * H * W) + p];
        worst = std::max(worst, std::fabs(im.rgb[static_cast<size_t>(p * 3 + ch)] / 255.0 - want));
      }
    EXPECT_LE(worst, 2.0 / 255.0) << c.name << " image " << i;
  }
}

INSTANTIATE_TEST_SUITE_P(Tiny, PipelineGolden, ::testing::ValuesIn(all_cases()),
                         [](const ::testing::TestParamInfo<Case>& info) {
                           std::string s = info.param.model + "_" + info.param.name;
                           for (char& ch : s)
                             if (!std::isalnum(static_cast<unsigned char>(ch))) ch = '_';
                           return s;
                         });

}  // namespace
}  // namespace sd
