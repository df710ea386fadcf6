// TextEncoderGraph and VaeDecodeGraph on the CPU: the portable capture re-runs the recorded
// function, so graph results (static inputs refilled, shapes alternating, LRU eviction) must
// equal the eager text encoder and VAE decoder bit for bit; graphs stay off by default.
#include <gtest/gtest.h>

#include "stage_graphs_util.h"

namespace sd {
namespace {

TEST(StageGraphs, OffByDefaultOnTheCpuAndEagerEqualsTheModels) {
  auto cpu = make_cpu_backend(0);
  auto s = testing::load_tiny_stages(*cpu);
  ASSERT_TRUE(s);
  TextEncoderGraph text(*cpu, *s->encoder);
  VaeDecodeGraph vae(*cpu, *s->vae, s->checkpoint.vae.scaling_factor);
  EXPECT_FALSE(text.enabled);
  EXPECT_FALSE(vae.enabled);
  const Tensor ids = testing::random_ids(2, s->checkpoint.text_encoder.vocab_size, 1);
  EXPECT_EQ(max_abs_diff(text.encode(ids, 1), s->encoder->encode(ids, 1)), 0.0);
  const Tensor z = testing::random_latents(*cpu, 1, 8, 8, s->checkpoint.vae.latent_channels, 2);
  EXPECT_EQ(max_abs_diff(vae.decode(z), s->vae->decode(cpu->scale(z, 1.0f / s->checkpoint.vae.scaling_factor))), 0.0);
  EXPECT_EQ(text.graphs() + vae.graphs(), 0u);
}

TEST(StageGraphs, PortableCaptureOnCpuEqualsEager) {
  auto cpu = make_cpu_backend(0);
  auto s = testing::load_tiny_stages(*cpu);
  ASSERT_TRUE(s);
  testing::expect_stage_graphs_equal_eager(*cpu, *s, 0.0);
}

TEST(StageGraphs, TextEncoderTakesIdsAlreadyOnTheDevice) {
  // The graph passes device ids to encode(); on the CPU backend host ids are device ids.
  auto cpu = make_cpu_backend(0);
  auto s = testing::load_tiny_stages(*cpu);
  ASSERT_TRUE(s);
  const Tensor ids = testing::random_ids(3, s->checkpoint.text_encoder.vocab_size, 9);
  const Tensor a = s->encoder->encode(ids, 1);
  const Tensor b = s->encoder->encode(cpu->upload(ids, DType::kI32), 1);
  EXPECT_EQ(max_abs_diff(a, b), 0.0);
}

}  // namespace
}  // namespace sd
