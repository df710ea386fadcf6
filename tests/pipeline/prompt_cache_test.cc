// The prompt cache: least-recently-used eviction keyed by token ids and clip_skip, and on the
// CPU engine a repeated prompt pair skips the text encoder while the images stay bitwise those
// of an engine without the cache (SDSERVE_PROMPT_CACHE=0); a changed negative prompt misses.
#include <gtest/gtest.h>

#include "golden_util.h"
#include "pipeline/prompt_cache.h"
#include "pipeline/sd_engine.h"
#include "pipeline_util.h"
#include "scoped_env.h"

namespace sd {
namespace {

Tensor ids_of(int32_t first, int32_t last) {
  Tensor t = Tensor::empty_host({2, 3}, DType::kI32);
  const int32_t v[6] = {49406, first, 49407, 49406, last, 49407};
  std::copy(v, v + 6, t.i32());
  return t;
}

Tensor context_of(float v) {
  Tensor t = Tensor::empty_host({2, 3, 4}, DType::kF32);
  for (int64_t i = 0; i < t.numel(); ++i) t.f32()[i] = v + static_cast<float>(i);
  return t;
}

TEST(PromptCache, KeysOnIdsAndClipSkipAndDropsTheLeastRecentlyUsed) {
  PromptCache cache(2);
  EXPECT_FALSE(cache.find(ids_of(1, 2), 1).defined());
  cache.put(ids_of(1, 2), 1, context_of(10));
  cache.put(ids_of(3, 4), 1, context_of(20));
  ASSERT_TRUE(cache.find(ids_of(1, 2), 1).defined());  // (1, 2) is now the most recent
  EXPECT_EQ(cache.find(ids_of(1, 2), 1).f32()[0], 10.f);
  EXPECT_FALSE(cache.find(ids_of(1, 2), 2).defined()) << "clip_skip is part of the key";
  EXPECT_FALSE(cache.find(ids_of(2, 1), 1).defined()) << "negative and prompt rows are not interchangeable";
  cache.put(ids_of(5, 6), 1, context_of(30));  // evicts (3, 4), the least recently used
  EXPECT_FALSE(cache.find(ids_of(3, 4), 1).defined());
  EXPECT_TRUE(cache.find(ids_of(5, 6), 1).defined());
  EXPECT_TRUE(cache.find(ids_of(1, 2), 1).defined());
  EXPECT_EQ(cache.size(), 2u);
  EXPECT_EQ(cache.hits(), 4);
  PromptCache off(0);
  off.put(ids_of(1, 2), 1, context_of(10));
  EXPECT_FALSE(off.find(ids_of(1, 2), 1).defined());
}

TEST(PromptCache, RepeatedPromptsSkipTheEncoderWithIdenticalImages) {
  auto cached = std::move(SdEngine::load(testing::data_path("tiny-sd1/model"), Device::cpu())).value();
  std::unique_ptr<SdEngine> plain;
  {
    testing::ScopedEnv off("SDSERVE_PROMPT_CACHE", "0");
    plain = std::move(SdEngine::load(testing::data_path("tiny-sd1/model"), Device::cpu())).value();
  }
  GenerationRequest a = testing::fox_request("euler", 3, 7.0f, 11, 64);
  GenerationRequest b = a;
  b.seed = 12;  // another seed, the same prompt pair: a hit
  GenerationRequest c = b;
  c.negative_prompt = "blurry, dark";  // another negative prompt: a miss
  for (const GenerationRequest& r : {a, b, c}) {
    auto got = cached->generate(r);
    auto want = plain->generate(r);
    ASSERT_TRUE(got.ok() && want.ok());
    EXPECT_EQ(max_abs_diff(got->final_latents, want->final_latents), 0.0) << "seed " << r.seed;
  }
  EXPECT_EQ(cached->prompt_cache_hits(), 1);
  EXPECT_EQ(plain->prompt_cache_hits(), 0);
}

}  // namespace
}  // namespace sd
