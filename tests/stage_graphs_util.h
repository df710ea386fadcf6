// Shared by the CPU and GPU tests of pipeline/stage_graphs.h: the tiny SD 1.x model's text
// encoder and VAE decoder on a backend, random token ids and latents, and the check that
// graph results (alternating shapes, LRU eviction) equal the eager model calls.
#pragma once

#include <gtest/gtest.h>

#include <memory>
#include <random>
#include <string>
#include <vector>

#include "golden_util.h"
#include "io/checkpoint.h"
#include "models/clip_text.h"
#include "models/vae.h"
#include "pipeline/stage_graphs.h"

namespace sd::testing {

struct TinyStages {
  Checkpoint checkpoint;
  std::unique_ptr<ClipTextEncoder> encoder;
  std::unique_ptr<VAE> vae;
};

inline std::unique_ptr<TinyStages> load_tiny_stages(Backend& be) {
  auto ck = load_checkpoint(data_path("tiny-sd1/model"));
  EXPECT_TRUE(ck.ok()) << ck.status().to_string();
  if (!ck.ok()) return nullptr;
  auto s = std::make_unique<TinyStages>();
  s->checkpoint = std::move(ck).value();
  auto enc = ClipTextEncoder::load(s->checkpoint.text_encoder, *s->checkpoint.text_encoder_weights, be);
  auto vae = VAE::load(s->checkpoint.vae, *s->checkpoint.vae_weights, be, /*with_encoder=*/false);
  EXPECT_TRUE(enc.ok() && vae.ok());
  if (!enc.ok() || !vae.ok()) return nullptr;
  s->encoder = std::move(enc).value();
  s->vae = std::move(vae).value();
  return s;
}

// Host i32 [rows, 77]: BOS, random tokens, EOS padding (as the tokenizer lays them out).
inline Tensor random_ids(int64_t rows, int vocab, uint32_t seed) {
  std::mt19937 gen(seed);
  Tensor ids = Tensor::empty_host({rows, 77}, DType::kI32);
  for (int64_t r = 0; r < rows; ++r) {
    const int64_t len = 3 + static_cast<int64_t>(gen() % 60);
    for (int64_t i = 0; i < 77; ++i) {
      int32_t id = vocab - 1;  // EOS / padding
      if (i == 0) id = vocab - 2;
      else if (i < len) id = static_cast<int32_t>(gen() % static_cast<uint32_t>(vocab - 2));
      ids.i32()[r * 77 + i] = id;
    }
  }
  return ids;
}

// Device latents [m, h, w, C] in the backend's compute dtype, standard normal.
inline Tensor random_latents(Backend& be, int64_t m, int64_t h, int64_t w, int64_t c, uint32_t seed) {
  std::mt19937 gen(seed);
  std::normal_distribution<float> normal;
  std::vector<float> v(static_cast<size_t>(m * h * w * c));
  for (float& x : v) x = normal(gen);
  return be.upload(Tensor::from_vector({m, h, w, c}, v));
}

// Alternates two prompt shapes / clip skips and two latent shapes through the graphs (with
// room for one VAE graph only, so it is evicted and re-recorded) and compares every result
// with the eager call on the same inputs: within `tolerance` max-abs (0 = bitwise).
inline void expect_stage_graphs_equal_eager(Backend& be, TinyStages& s, double tolerance) {
  TextEncoderGraph text(be, *s.encoder);
  text.enabled = true;
  const int vocab = s.checkpoint.text_encoder.vocab_size;
  const int skips[2] = {1, s.checkpoint.text_encoder.num_layers > 1 ? 2 : 1};
  const int64_t rows[2] = {2, 1};
  for (int round = 0; round < 4; ++round) {
    const int k = round % 2;
    const Tensor ids = random_ids(rows[k], vocab, 100 + static_cast<uint32_t>(round));
    const Tensor got = be.download(text.encode(ids, skips[k]));
    const Tensor want = be.download(s.encoder->encode(ids, skips[k]));
    ASSERT_EQ(got.shape(), want.shape());
    EXPECT_LE(max_abs_diff(got, want), tolerance) << "text encoder, round " << round;
  }
  EXPECT_TRUE(text.enabled) << "graph recording failed";
  EXPECT_EQ(text.graphs(), 2u);

  VaeDecodeGraph vae(be, *s.vae, s.checkpoint.vae.scaling_factor);
  vae.enabled = true;
  vae.max_graphs = 1;
  const int64_t C = s.checkpoint.vae.latent_channels;
  const int64_t shapes[2][3] = {{1, 8, 8}, {2, 6, 10}};  // m, h, w
  Tensor first_result, first_want;  // round 0's result must survive later replays
  for (int round = 0; round < 4; ++round) {
    const auto& sh = shapes[round % 2];
    const Tensor z = random_latents(be, sh[0], sh[1], sh[2], C, 200 + static_cast<uint32_t>(round));
    const Tensor got_device = vae.decode(z);
    const Tensor got = be.download(got_device);
    const Tensor want = be.download(s.vae->decode(be.scale(z, 1.0f / s.checkpoint.vae.scaling_factor)));
    ASSERT_EQ(got.shape(), want.shape());
    EXPECT_EQ(got.dim(0), sh[0]);
    EXPECT_LE(max_abs_diff(got, want), tolerance) << "VAE decode, round " << round;
    if (round == 0) {
      first_result = got_device;
      first_want = want;
    }
  }
  EXPECT_LE(max_abs_diff(be.download(first_result), first_want), tolerance) << "an earlier result was overwritten";
  EXPECT_TRUE(vae.enabled) << "graph recording failed";
  EXPECT_EQ(vae.graphs(), 1u);
}

}  // namespace sd::testing
