// The CLIP text encoder, UNet and VAE on the CPU backend against the reference outputs
// (float64) for both tiny models: relative L2 error <= 1e-4 in fp32. Also checks that a
// wrongly shaped checkpoint is rejected with a message naming the tensor.
#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <set>

#include "backend/backend.h"
#include "backend/profiling_backend.h"
#include "models/clip_text.h"
#include "golden_util.h"
#include "models/unet.h"
#include "models/vae.h"

namespace sd {
namespace {

using testing::golden_f32;
using testing::load_tiny;
using testing::open_golden;

class Models : public ::testing::TestWithParam<std::string> {
 protected:
  std::unique_ptr<Backend> be = make_cpu_backend();
};

// Host f32 tensor of uniform values in [-1, 1) from `seed`.
Tensor random_tensor(const Shape& shape, unsigned seed) {
  Tensor t = Tensor::empty_host(shape, DType::kF32);
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> uniform(-1.f, 1.f);
  for (int64_t i = 0; i < t.numel(); ++i) t.f32()[i] = uniform(rng);
  return t;
}

// Host rows of a then b.
Tensor concat_rows_host(const Tensor& a, const Tensor& b) {
  Shape shape = a.shape();
  shape[0] += b.dim(0);
  Tensor t = Tensor::empty_host(shape, DType::kF32);
  std::copy(a.f32(), a.f32() + a.numel(), t.f32());
  std::copy(b.f32(), b.f32() + b.numel(), t.f32() + a.numel());
  return t;
}

Tensor ids_i32(const Tensor& ids_i64) {
  Tensor out = Tensor::empty_host(ids_i64.shape(), DType::kI32);
  for (int64_t i = 0; i < ids_i64.numel(); ++i) out.i32()[i] = static_cast<int32_t>(ids_i64.data<int64_t>()[i]);
  return out;
}

TEST_P(Models, TextEncoderMatchesGolden) {
  Checkpoint ck = load_tiny(GetParam() + "/model");
  auto te = ClipTextEncoder::load(ck.text_encoder, *ck.text_encoder_weights, *be);
  ASSERT_TRUE(te.ok()) << te.status().to_string();
  auto g = open_golden(GetParam() + "/text_encoder.safetensors");
  auto ids = g->read("input_ids");
  ASSERT_TRUE(ids.ok());
  Tensor last = be->download((*te)->encode(ids_i32(*ids), 1));
  EXPECT_LE(relative_l2(last, golden_f32(*g, "last_hidden_state")), 1e-4);
  Tensor pen = be->download((*te)->hidden_after(ids_i32(*ids), ck.text_encoder.num_layers - 1));
  EXPECT_LE(relative_l2(pen, golden_f32(*g, "penultimate_hidden_state")), 1e-4);
}

TEST_P(Models, UNetMatchesGolden) {
  Checkpoint ck = load_tiny(GetParam() + "/model");
  auto unet = UNet::load(ck.unet, *ck.unet_weights, *be);
  ASSERT_TRUE(unet.ok()) << unet.status().to_string();
  auto g = open_golden(GetParam() + "/unet.safetensors");
  Tensor sample = nchw_to_nhwc(golden_f32(*g, "sample"));
  auto ts = g->read("timestep");
  ASSERT_TRUE(ts.ok());
  std::vector<double> t;
  for (int64_t i = 0; i < ts->numel(); ++i) t.push_back(static_cast<double>(ts->data<int64_t>()[i]));
  Tensor out = (*unet)->forward(be->upload(sample), t, be->upload(golden_f32(*g, "encoder_hidden_states")));
  Tensor got = nhwc_to_nchw(be->download(out));
  EXPECT_LE(relative_l2(got, golden_f32(*g, "out")), 1e-4);
}

TEST_P(Models, UNetWithEqualHalvesMatchesTheFullRun) {
  // Guidance rows: the same latents and timesteps twice, different contexts per half.
  Checkpoint ck = load_tiny(GetParam() + "/model");
  auto unet = UNet::load(ck.unet, *ck.unet_weights, *be);
  ASSERT_TRUE(unet.ok()) << unet.status().to_string();
  auto g = open_golden(GetParam() + "/unet.safetensors");
  const Tensor sample = be->upload(nchw_to_nhwc(golden_f32(*g, "sample")));  // [B, h, w, C]
  const int64_t B = sample.dim(0);
  const Tensor x = be->concat_rows({sample, sample});  // [2B, h, w, C]
  std::vector<double> t;
  for (int64_t i = 0; i < 2 * B; ++i) t.push_back(100.0 + 300.0 * static_cast<double>(i % B));
  const Tensor features = be->upload((*unet)->timestep_features_of(t));
  Tensor ctx_host = Tensor::empty_host({2 * B, 77, ck.unet.cross_attention_dim}, DType::kF32);
  std::mt19937 rng(3);
  std::uniform_real_distribution<float> uniform(-1.f, 1.f);
  for (int64_t i = 0; i < ctx_host.numel(); ++i) ctx_host.f32()[i] = uniform(rng);
  const Tensor context = be->upload(ctx_host);
  const Tensor full = be->download((*unet)->forward(x, features, context));
  const Tensor halved = be->download((*unet)->forward(x, features, context, /*halves_equal=*/true));
  EXPECT_LE(relative_l2(halved, full), 1e-5);  // f32 rounding: GEMMs of other row counts block differently
  // The halves really differ (the contexts do), so the duplication happened after the split point.
  EXPECT_GT(relative_l2(full.slice_rows(0, B), full.slice_rows(B, 2 * B)), 1e-4);
}

TEST_P(Models, UNetAttentionShapesAreTheCallsForwardMakes) {
  // UNet::attention_shapes (what the engine asks the backend to prepare) lists exactly the
  // attention calls forward() makes, in full and half mode, at the golden size and an odd one.
  Checkpoint ck = load_tiny(GetParam() + "/model");
  ProfilingBackend prof(*be);
  auto unet = UNet::load(ck.unet, *ck.unet_weights, prof);
  ASSERT_TRUE(unet.ok()) << unet.status().to_string();
  const int64_t L = 77, D = ck.unet.cross_attention_dim;
  for (auto [h, w] : {std::pair<int64_t, int64_t>{8, 8}, {9, 7}}) {
    for (bool halves : {false, true}) {
      const int64_t rows = 4;
      const Tensor half = random_tensor({rows / 2, h, w, ck.unet.in_channels}, 11);
      const Tensor x = prof.upload(halves ? concat_rows_host(half, half) : random_tensor({rows, h, w, ck.unet.in_channels}, 12));
      std::vector<double> t(rows, 500.0);
      const Tensor features = prof.upload((*unet)->timestep_features_of(t));
      const Tensor context = prof.upload(random_tensor({rows, L, D}, 13));
      prof.begin_recording();
      (void)(*unet)->forward(x, features, context, halves);
      auto records = prof.end_recording();
      ASSERT_TRUE(records.ok()) << records.status().to_string();
      std::set<std::string> made, listed;
      for (const OpRecord& r : *records) {
        if (std::string(r.kind) == "attention") made.insert(r.detail);
      }
      const auto shapes = (*unet)->attention_shapes(rows, h, w, L, halves);
      for (const auto& s : shapes) listed.insert(ProfilingBackend::attention_detail(s));
      EXPECT_EQ(listed.size(), shapes.size()) << "no shape listed twice";
      EXPECT_EQ(listed, made) << h << "x" << w << (halves ? " halves" : " full");
      EXPECT_GE(made.size(), 2u);
    }
  }
}

TEST_P(Models, UNetWithTimeProjectionsMadeApartMatchesForward) {
  // The time embedding made once per timestep value (StepGraphs' time table) and gathered by
  // row, and the context K/V projected once: the same result as forward() computing them from
  // the features and the text context, in full and half mode.
  Checkpoint ck = load_tiny(GetParam() + "/model");
  auto unet = UNet::load(ck.unet, *ck.unet_weights, *be);
  ASSERT_TRUE(unet.ok()) << unet.status().to_string();
  ASSERT_GT((*unet)->time_projection_width(), 0) << "the loader stacks the ResNet time projections";
  auto g = open_golden(GetParam() + "/unet.safetensors");
  const Tensor sample = be->upload(nchw_to_nhwc(golden_f32(*g, "sample")));  // [B, h, w, C]
  const int64_t B = sample.dim(0);
  const Tensor x = be->concat_rows({sample, sample});  // [2B, h, w, C]
  std::vector<double> t;
  for (int64_t i = 0; i < 2 * B; ++i) t.push_back(37.25 + 411.5 * static_cast<double>(i % B));
  Tensor ctx_host = Tensor::empty_host({2 * B, 77, ck.unet.cross_attention_dim}, DType::kF32);
  std::mt19937 rng(5);
  std::uniform_real_distribution<float> uniform(-1.f, 1.f);
  for (int64_t i = 0; i < ctx_host.numel(); ++i) ctx_host.f32()[i] = uniform(rng);
  const Tensor context = be->upload(ctx_host);
  // A table of the distinct values in another order, gathered by row ids.
  const std::vector<double> values = {t[1 % t.size()], 999.0, t[0]};
  const Tensor table = (*unet)->time_projections(be->upload((*unet)->timestep_features_of(values)));  // [3, width]
  ASSERT_EQ(table.dim(1), (*unet)->time_projection_width());
  Tensor ids = Tensor::empty_host({2 * B}, DType::kI32);
  for (int64_t i = 0; i < 2 * B; ++i) ids.i32()[i] = t[static_cast<size_t>(i)] == values[0] ? 0 : 2;
  const Tensor temb_all = be->embedding(be->upload(ids), table);  // [2B, width]
  // The context's K/V projections made apart too (StepGraphs' projected context rows).
  ASSERT_GT((*unet)->context_projection_width(), 0) << "the loader stacks the cross-attention K/V projections";
  const Tensor kv = (*unet)->project_context(context);  // [2B, 77, width]
  ASSERT_EQ(kv.dim(2), (*unet)->context_projection_width());
  const Tensor features = be->upload((*unet)->timestep_features_of(t));
  // f32 throughout; the paths run GEMMs of other row counts, whose blocking (and so rounding)
  // depends on the CPU's BLAS kernels: 1.01e-6 with halves on an AVX-512 EPYC. Another time row
  // moves the output by more than 1e-4 (the check below).
  constexpr double kTol = 5e-6;
  for (const bool halves : {false, true}) {
    const Tensor want = be->download((*unet)->forward(x, features, context, halves));
    EXPECT_LE(relative_l2(be->download((*unet)->forward_projected(x, temb_all, context, halves)), want), kTol)
        << "halves " << halves;
    EXPECT_LE(relative_l2(be->download((*unet)->forward(x, features, kv, halves, /*context_projected=*/true)), want),
              kTol)
        << "halves " << halves;
    EXPECT_LE(relative_l2(be->download((*unet)->forward_projected(x, temb_all, kv, halves, true)), want), kTol)
        << "halves " << halves;
  }
  // The timestep matters: another table row gives another result.
  Tensor other = Tensor::empty_host({2 * B}, DType::kI32);
  for (int64_t i = 0; i < 2 * B; ++i) other.i32()[i] = 1;
  const Tensor moved = be->download((*unet)->forward_projected(x, be->embedding(be->upload(other), table), context));
  EXPECT_GT(relative_l2(moved, be->download((*unet)->forward_projected(x, temb_all, context))), 1e-4);
}

TEST_P(Models, VaeDecoderAndEncoderMatchGolden) {
  Checkpoint ck = load_tiny(GetParam() + "/model");
  auto vae = VAE::load(ck.vae, *ck.vae_weights, *be);
  ASSERT_TRUE(vae.ok()) << vae.status().to_string();
  auto g = open_golden(GetParam() + "/vae.safetensors");
  Tensor dec = (*vae)->decode(be->upload(nchw_to_nhwc(golden_f32(*g, "latent"))));
  EXPECT_LE(relative_l2(nhwc_to_nchw(be->download(dec)), golden_f32(*g, "decoded")), 1e-4);

  Tensor moments = nhwc_to_nchw(be->download((*vae)->encode_moments(be->upload(nchw_to_nhwc(golden_f32(*g, "image"))))));
  const int64_t B = moments.dim(0), C2 = moments.dim(1), HW = moments.dim(2) * moments.dim(3), C = C2 / 2;
  Tensor mean = Tensor::empty_host({B, C, moments.dim(2), moments.dim(3)}, DType::kF32);
  Tensor logvar = Tensor::empty_host(mean.shape(), DType::kF32);
  for (int64_t b = 0; b < B; ++b)
    for (int64_t c = 0; c < C; ++c)
      for (int64_t i = 0; i < HW; ++i) {
        mean.f32()[(b * C + c) * HW + i] = moments.f32()[(b * C2 + c) * HW + i];
        logvar.f32()[(b * C + c) * HW + i] = std::clamp(moments.f32()[(b * C2 + C + c) * HW + i], -30.f, 20.f);
      }
  EXPECT_LE(relative_l2(mean, golden_f32(*g, "posterior_mean")), 1e-4);
  EXPECT_LE(relative_l2(logvar, golden_f32(*g, "posterior_logvar")), 1e-4);
  EXPECT_NEAR(golden_f32(*g, "scaling_factor").f32()[0], ck.vae.scaling_factor, 1e-7);
}

INSTANTIATE_TEST_SUITE_P(Tiny, Models, ::testing::Values("tiny-sd1", "tiny-sd2"));

TEST(ModelsSingleFile, UNetFromSingleFileMatchesGolden) {
  auto be = make_cpu_backend();
  Checkpoint ck = load_tiny("tiny-sd1/model.safetensors");
  auto unet = UNet::load(ck.unet, *ck.unet_weights, *be);
  ASSERT_TRUE(unet.ok()) << unet.status().to_string();
  auto g = open_golden("tiny-sd1/unet.safetensors");
  auto ts = g->read("timestep");
  ASSERT_TRUE(ts.ok());
  std::vector<double> t{static_cast<double>(ts->data<int64_t>()[0]), static_cast<double>(ts->data<int64_t>()[1])};
  Tensor out = (*unet)->forward(be->upload(nchw_to_nhwc(golden_f32(*g, "sample"))), t,
                                be->upload(golden_f32(*g, "encoder_hidden_states")));
  EXPECT_LE(relative_l2(nhwc_to_nchw(be->download(out)), golden_f32(*g, "out")), 1e-4);
}

TEST(ModelsErrors, WrongConfigNamesTheTensor) {
  auto be = make_cpu_backend();
  Checkpoint ck = load_tiny("tiny-sd1/model");
  UNetConfig c = ck.unet;
  c.cross_attention_dim = 64;  // checkpoint has 32
  auto unet = UNet::load(c, *ck.unet_weights, *be);
  ASSERT_FALSE(unet.ok());
  EXPECT_NE(unet.status().message().find("attn2.to_k.weight"), std::string::npos) << unet.status().to_string();
  EXPECT_NE(unet.status().message().find("diffusion_pytorch_model.safetensors"), std::string::npos)
      << unet.status().to_string();
}

}  // namespace
}  // namespace sd
