// Engine warm-up (pipeline/warmup.h): runs one batched 2-step generation per graph bucket
// (1, 2, 4, 8, 12, ...) below the limit and one of the limit, leaves the engine usable, and
// rejects a bad limit; `--warmup-sizes` lists parse and reject bad items by name.
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

TEST(Warmup, ParsesImageSizeLists) {
  auto one = parse_image_sizes("512x512");
  ASSERT_TRUE(one.ok()) << one.status().to_string();
  EXPECT_EQ(*one, (std::vector<ImageSize>{{512, 512}}));
  auto three = parse_image_sizes("768x512, 512X768 ,768x512,1024x64");
  ASSERT_TRUE(three.ok()) << three.status().to_string();
  EXPECT_EQ(*three, (std::vector<ImageSize>{{768, 512}, {512, 768}, {1024, 64}}));  // the repeat kept once
  RequestLimits small;
  small.max_size = 256;
  EXPECT_TRUE(parse_image_sizes("256x64", small).ok());
  EXPECT_FALSE(parse_image_sizes("512x64", small).ok());
}

TEST(Warmup, RejectsBadImageSizes) {
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"", "'' is not WIDTHxHEIGHT"},
      {"512", "'512' is not WIDTHxHEIGHT"},
      {"512x", "'512x' is not WIDTHxHEIGHT"},
      {"x512", "'x512' is not WIDTHxHEIGHT"},
      {"512x512,", "'' is not WIDTHxHEIGHT"},
      {"512x512x512", "'512x512x512' is not"},
      {"+512x512", "is not WIDTHxHEIGHT"},
      {"512x5l2", "is not WIDTHxHEIGHT"},
      {"99999999999x512", "is not WIDTHxHEIGHT"},  // out of int range
      {"500x512", "width must be a multiple of 8, got 500"},
      {"512x4096", "height must be between 64 and 2048, got 4096"},
      {"-512x512", "width must be between 64 and 2048"},
      {"512x512,0x0", "'0x0': width"},
  };
  for (const auto& [list, want] : cases) {
    auto r = parse_image_sizes(list);
    ASSERT_FALSE(r.ok()) << list;
    EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument) << list;
    EXPECT_NE(r.status().message().find(want), std::string::npos) << list << ": " << r.status().to_string();
  }
}

}  // namespace
}  // namespace sd
