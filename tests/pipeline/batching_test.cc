// Step-level batching on the CPU engine: jobs with different samplers, step counts, guidance
// scales and seeds, joining a batch at different times, give the same latents as when each
// runs alone. Also checks cancellation-free progress counts and request validation.
#include <gtest/gtest.h>

#include <string>
#include <tuple>
#include <utility>
#include <vector>

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

// finish() with on_image: every image of every job handed over once, in decode order, with
// its infotext, while later VAE calls are still to come (2 images per call over 2 + 3 images),
// and equal to the returned results and to a plain finish() of the same requests.
TEST(Batching, FinishHandsEachImageOverAsDecoded) {
  auto engine = std::move(SdEngine::load(testing::data_path("tiny-sd1/model"), Device::cpu())).value();
  engine->max_decode_batch = 2;
  const std::vector<GenerationRequest> reqs = {request("euler", 2, 7.0f, 21, 2), request("ddim", 2, 4.0f, 22, 3)};
  const auto run = [&](bool streamed, std::vector<std::tuple<size_t, size_t, Image, std::string>>* seen) {
    std::vector<std::unique_ptr<Job>> jobs;
    std::vector<Job*> raw;
    for (const auto& r : reqs) {
      jobs.push_back(std::move(engine->begin(r)).value());
      raw.push_back(jobs.back().get());
    }
    while (!raw[0]->finished()) EXPECT_TRUE(engine->step(raw).ok());
    auto res = streamed ? engine->finish(raw,
                                         [&](size_t j, size_t k, const Image& im, const std::string& text) {
                                           seen->emplace_back(j, k, im, text);
                                         })
                        : engine->finish(raw);
    EXPECT_TRUE(res.ok()) << res.status().to_string();
    return std::move(res).value();
  };
  std::vector<std::tuple<size_t, size_t, Image, std::string>> seen;
  const std::vector<GenerationResult> streamed = run(true, &seen);
  const std::vector<GenerationResult> plain = run(false, nullptr);
  ASSERT_EQ(seen.size(), 5u);
  const std::pair<size_t, size_t> order[] = {{0, 0}, {0, 1}, {1, 0}, {1, 1}, {1, 2}};
  for (size_t i = 0; i < seen.size(); ++i) {
    const auto& [j, k, im, text] = seen[i];
    EXPECT_EQ(std::make_pair(j, k), order[i]) << i;
    ASSERT_LT(j, streamed.size());
    ASSERT_LT(k, streamed[j].images.size());
    EXPECT_EQ(im.width, 64);
    EXPECT_EQ(im.height, 64);
    EXPECT_EQ(im.rgb, streamed[j].images[k].rgb) << i;
    EXPECT_EQ(im.rgb, plain[j].images[k].rgb) << i;
    EXPECT_EQ(text, streamed[j].infotexts[k]) << i;
    EXPECT_NE(text.find("Seed: " + std::to_string(streamed[j].seeds[k])), std::string::npos) << text;
  }
  EXPECT_NE(std::get<2>(seen[0]).rgb, std::get<2>(seen[2]).rgb) << "two different seeds gave one image";
}

}  // namespace
}  // namespace sd
