// Step-level batching on the CPU engine: jobs with different samplers, step counts, guidance
// scales and seeds, joining a batch at different times, give the same latents as when each
// runs alone. Also checks cancellation-free progress counts and request validation.
#include <gtest/gtest.h>

#include "golden_util.h"
#include "pipeline_util.h"
#include "pipeline/sd_engine.h"

namespace sd {
namespace {

GenerationRequest request(const std::string& sampler, int steps, float cfg, int64_t seed, int batch = 1) {
  return testing::fox_request(sampler, steps, cfg, seed, 64, batch);
}

TEST(Batching, JobsInACrowdEqualJobsAlone) {
  auto engine = std::move(SdEngine::load(testing::data_path("tiny-sd1/model"), Device::cpu())).value();
  const std::vector<GenerationRequest> reqs = {request("euler", 6, 7.5f, 1), request("DPM++ 2M Karras", 4, 5.0f, 2),
                                               request("ddim", 5, 1.0f, 3, 2), request("Euler a", 5, 3.0f, 4),
                                               request("heun", 3, 6.0f, 5)};
  std::vector<Tensor> alone;
  for (const auto& r : reqs) {
    auto res = engine->generate(r);
    ASSERT_TRUE(res.ok()) << res.status().to_string();
    alone.push_back(res->final_latents);
  }
  std::vector<std::unique_ptr<Job>> jobs;
  for (const auto& r : reqs) jobs.push_back(std::move(engine->begin(r)).value());
  std::vector<Tensor> together(reqs.size());
  std::vector<Job*> active;
  size_t next = 0;
  while (next < jobs.size() || !active.empty()) {
    if (next < jobs.size()) active.push_back(jobs[next++].get());  // one joins per step
    ASSERT_TRUE(engine->step(active).ok());
    std::vector<Job*> still;
    for (Job* j : active) {
      if (!j->finished()) {
        still.push_back(j);
        continue;
      }
      auto res = engine->finish({j});
      ASSERT_TRUE(res.ok());
      for (size_t k = 0; k < jobs.size(); ++k)
        if (jobs[k].get() == j) together[k] = (*res)[0].final_latents;
    }
    active = still;
  }
  for (size_t k = 0; k < reqs.size(); ++k) {
    ASSERT_TRUE(together[k].defined()) << k;
    EXPECT_LE(relative_l2(together[k], alone[k]), 1e-5) << reqs[k].sampler;
  }
}

TEST(Batching, ProgressCountsUserSteps) {
  auto engine = std::move(SdEngine::load(testing::data_path("tiny-sd1/model"), Device::cpu())).value();
  for (const std::string sampler : {"heun", "euler", "PLMS"}) {
    auto job = std::move(engine->begin(request(sampler, 4, 7.0f, 9))).value();
    int last = 0, calls = 0;
    while (!job->finished()) {
      ASSERT_TRUE(engine->step({job.get()}).ok());
      EXPECT_GE(job->steps_done(), last);
      last = job->steps_done();
      ++calls;
    }
    EXPECT_EQ(job->steps_done(), 4) << sampler;
    EXPECT_EQ(job->steps_total(), 4);
    EXPECT_GE(calls, 4);
  }
}

TEST(Batching, EngineRejectsBadRequests) {
  auto engine = std::move(SdEngine::load(testing::data_path("tiny-sd1/model"), Device::cpu())).value();
  GenerationRequest r = request("euler", 4, 7.0f, 1);
  r.sampler = "warp drive";
  auto job = engine->begin(r);
  ASSERT_FALSE(job.ok());
  EXPECT_NE(job.status().message().find("Euler a"), std::string::npos) << job.status().message();
  r = request("euler", 4, 7.0f, 1);
  r.clip_skip = 9;  // tiny text encoder has 5 layers
  EXPECT_FALSE(engine->begin(r).ok());
  r = request("euler", 4, 7.0f, 1);
  r.width = 72 + 1;
  EXPECT_FALSE(engine->begin(r).ok());
}

TEST(Batching, OddLatentSizesRun) {
  // 72x88 images give 9x11 latents: the UNet's up path crops to the skip sizes.
  auto engine = std::move(SdEngine::load(testing::data_path("tiny-sd2/model"), Device::cpu())).value();
  GenerationRequest r = request("euler", 2, 7.0f, 1);
  r.width = 88;
  r.height = 72;
  auto res = engine->generate(r);
  ASSERT_TRUE(res.ok()) << res.status().to_string();
  EXPECT_EQ(res->images[0].width, 88);
  EXPECT_EQ(res->images[0].height, 72);
  EXPECT_EQ(res->final_latents.shape(), (Shape{1, 4, 9, 11}));
}

}  // namespace
}  // namespace sd
