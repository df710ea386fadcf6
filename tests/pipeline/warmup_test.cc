// Engine warm-up (pipeline/warmup.h): runs one batched 2-step generation per graph bucket
// (1, 2, 4, 8, 12, ...) below the limit and one of the limit, leaves the engine usable, and
// rejects a bad limit.
#include <gtest/gtest.h>

#include "golden_util.h"
#include "pipeline/sd_engine.h"
#include "pipeline/warmup.h"

namespace sd {
namespace {

TEST(Warmup, RunsEveryBucketAndLeavesTheEngineUsable) {
  auto engine = std::move(SdEngine::load(testing::data_path("tiny-sd1/model"), Device::cpu())).value();
  auto report = warm_up(*engine, 64, 64, 5);
  ASSERT_TRUE(report.ok()) << report.status().to_string();
  EXPECT_EQ(report->buckets, 4);  // 1, 2, 4 and 5 images
  auto twelve = warm_up(*engine, 64, 64, 13);
  ASSERT_TRUE(twelve.ok()) << twelve.status().to_string();
  EXPECT_EQ(twelve->buckets, 6);  // 1, 2, 4, 8, 12 and 13 images
  EXPECT_GT(report->seconds, 0);

  GenerationRequest r;
  r.prompt = "a red cube";
  r.width = r.height = 64;
  r.steps = 3;
  r.seed = 7;
  auto job = engine->begin(r);
  ASSERT_TRUE(job.ok());
  std::vector<Job*> jobs{job->get()};
  while (!jobs[0]->finished()) ASSERT_TRUE(engine->step(jobs).ok());
  auto result = engine->finish(jobs);
  ASSERT_TRUE(result.ok());
  ASSERT_EQ((*result)[0].images.size(), 1u);
  EXPECT_EQ((*result)[0].images[0].width, 64);
}

TEST(Warmup, RejectsBadLimitsAndReportsEngineErrors) {
  auto engine = std::move(SdEngine::load(testing::data_path("tiny-sd1/model"), Device::cpu())).value();
  EXPECT_EQ(warm_up(*engine, 64, 64, 0).status().code(), StatusCode::kInvalidArgument);
  auto bad = warm_up(*engine, 60, 64, 1);  // not a multiple of 8
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("width"), std::string::npos) << bad.status().to_string();
}

}  // namespace
}  // namespace sd
