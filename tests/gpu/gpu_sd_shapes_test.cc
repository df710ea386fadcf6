// Ops at Stable Diffusion shapes (UNet 64x64 latents, CLIP text encoder, head dims 40, 64,
// 80, 160, cross-attention over 77 tokens, attention_cols on packed projections) on the CUDA
// backend in f16, against the CPU backend in f32 on the same f16-rounded inputs.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <functional>
#include <string>

#include "backend/op_cases.h"
#include "gpu_test_util.h"

namespace sd::testing {
namespace {

using Run = std::function<Tensor(Backend&, const std::vector<Tensor>&)>;

// Runs `run` on the CUDA backend (f16) and the CPU backend with identical f16-rounded
// inputs; returns the relative L2 error of CUDA against CPU.
double gpu_vs_cpu(const std::string& name, const std::vector<Tensor>& inputs, const Run& run) {
  Backend& gpu = gpu_backend(DType::kF16);
  Backend& cpu = cpu_reference_backend();
  std::vector<Tensor> dg, dc;
  for (const Tensor& x : inputs) {
    const Tensor q = quantize(x, DType::kF16);
    dg.push_back(gpu.upload(q));
    dc.push_back(cpu.upload(q));
  }
  const Tensor got = gpu.download(run(gpu, dg));
  const Tensor want = cpu.download(run(cpu, dc));
  EXPECT_TRUE(gpu.synchronize().ok());
  EXPECT_EQ(got.shape(), want.shape()) << name;
  if (got.shape() != want.shape()) return 1.0;
  const double rel = relative_l2(got, want);
  std::printf("  %-50s rel_l2 %.2e  max_abs %.2e\n", name.c_str(), rel, max_abs_diff(got, want));
  return rel;
}

struct AttnShape {
  int64_t batch, lq, lk, heads, head_dim;
  bool causal;
};

class GpuSdAttention : public ::testing::TestWithParam<AttnShape> {};

TEST_P(GpuSdAttention, MatchesCpu) {
  SD_REQUIRE_GPU();
  const AttnShape s = GetParam();
  const int64_t hd = s.heads * s.head_dim;
  const std::vector<Tensor> in = {random_tensor({s.batch, s.lq, hd}, 101, -2.f, 2.f),
                                  random_tensor({s.batch, s.lk, hd}, 102, -2.f, 2.f),
                                  random_tensor({s.batch, s.lk, hd}, 103)};
  const std::string name = "attention b" + std::to_string(s.batch) + " lq" + std::to_string(s.lq) + " lk" +
                           std::to_string(s.lk) + " h" + std::to_string(s.heads) + " d" + std::to_string(s.head_dim) +
                           (s.causal ? " causal" : "");
  const double rel = gpu_vs_cpu(name, in, [&](Backend& be, const std::vector<Tensor>& d) {
    return be.attention(d[0], d[1], d[2], static_cast<int>(s.heads), s.causal);
  });
  EXPECT_LE(rel, 1e-2) << name;
}

INSTANTIATE_TEST_SUITE_P(
    Shapes, GpuSdAttention,
    ::testing::Values(AttnShape{2, 1024, 1024, 8, 40, false},  // SD1.5 self-attn, 32x32 latents
                      AttnShape{2, 4096, 77, 8, 40, false},    // SD1.5 cross-attn, 64x64 latents
                      AttnShape{2, 256, 77, 8, 160, false},    // SD1.5 cross-attn, 16x16, d160
                      AttnShape{1, 256, 256, 8, 160, false},   // SD1.5 self-attn, d160
                      AttnShape{2, 1024, 1024, 10, 64, false}, // SD2 self-attn, d64
                      AttnShape{2, 1024, 77, 20, 64, false},   // SD2 cross-attn
                      AttnShape{1, 512, 512, 4, 80, false},    // head dim 80
                      AttnShape{2, 77, 77, 12, 64, true},      // CLIP ViT-L text encoder
                      AttnShape{1, 77, 77, 16, 64, true},      // OpenCLIP ViT-H text encoder
                      AttnShape{1, 130, 130, 2, 40, true},     // causal over 3 query tiles
                      AttnShape{1, 100, 77, 2, 200, false},    // head dim > 160: the WMMA kernel
                      AttnShape{1, 1024, 1024, 1, 512, false}, // VAE mid-block (256x256 image): unfused path
                      AttnShape{2, 90, 90, 2, 300, true}));    // unfused path, causal

// attention_cols on packed projections at SD shapes: q from columns [q_col, q_col + inner) of
// q_src [B, Lq, q_width], k / v from kv_src [B, Lk, kv_width] (q_src itself when shared, as
// a self-attention QKV GEMM output). Checked against the CPU backend and against the CUDA
// attention() on split copies of the windows (the strided kernels must agree with it).
struct ColsShape {
  const char* name;
  int64_t batch, lq, lk, heads, head_dim;
  bool causal, shared;
  int64_t q_width, q_col, kv_width, k_col, v_col;
};

class GpuSdAttentionCols : public ::testing::TestWithParam<ColsShape> {};

TEST_P(GpuSdAttentionCols, MatchesCpuAndSplitCopies) {
  SD_REQUIRE_GPU();
  const ColsShape s = GetParam();
  const int64_t inner = s.heads * s.head_dim;
  const int heads = static_cast<int>(s.heads);
  std::vector<Tensor> in = {random_tensor({s.batch, s.lq, s.q_width}, 301, -2.f, 2.f)};
  if (!s.shared) in.push_back(random_tensor({s.batch, s.lk, s.kv_width}, 302, -2.f, 2.f));
  const double rel = gpu_vs_cpu(std::string("attention_cols ") + s.name, in,
                                [&](Backend& be, const std::vector<Tensor>& d) {
                                  const Tensor& kv = s.shared ? d[0] : d[1];
                                  return be.attention_cols(d[0], s.q_col, kv, s.k_col, s.v_col, inner, heads, s.causal);
                                });
  EXPECT_LE(rel, 1e-2) << s.name;

  // The same f16 values through attention() on contiguous copies of the windows.
  Backend& gpu = gpu_backend(DType::kF16);
  const Tensor q_host = quantize(in[0], DType::kF16);
  const Tensor kv_host = s.shared ? q_host : quantize(in[1], DType::kF16);
  const auto window = [](const Tensor& x, int64_t col, int64_t width) {
    Tensor out = Tensor::empty_host({x.dim(0), x.dim(1), width}, DType::kF32);
    for (int64_t r = 0; r < x.dim(0) * x.dim(1); ++r) {
      for (int64_t j = 0; j < width; ++j) out.f32()[r * width + j] = x.f32()[r * x.dim(2) + col + j];
    }
    return out;
  };
  const Tensor split = gpu.download(gpu.attention(gpu.upload(window(q_host, s.q_col, inner)),
                                                  gpu.upload(window(kv_host, s.k_col, inner)),
                                                  gpu.upload(window(kv_host, s.v_col, inner)), heads, s.causal));
  const Tensor qd = gpu.upload(q_host), kvd = s.shared ? qd : gpu.upload(kv_host);
  const Tensor packed = gpu.download(gpu.attention_cols(qd, s.q_col, kvd, s.k_col, s.v_col, inner, heads, s.causal));
  ASSERT_TRUE(gpu.synchronize().ok());
  ASSERT_EQ(packed.shape(), split.shape());
  const double rel_split = relative_l2(packed, split);
  std::printf("  %-50s vs split copies: rel_l2 %.2e max_abs %.2e\n", s.name, rel_split, max_abs_diff(packed, split));
  EXPECT_LE(rel_split, 2e-3) << s.name;
}

std::string cols_name(const ::testing::TestParamInfo<ColsShape>& info) { return info.param.name; }

INSTANTIATE_TEST_SUITE_P(
    Shapes, GpuSdAttentionCols,
    ::testing::Values(
        // name, batch, lq, lk, heads, d, causal, shared, q_width, q_col, kv_width, k_col, v_col
        ColsShape{"self_l4096_h8_d40", 2, 4096, 4096, 8, 40, false, true, 960, 0, 960, 320, 640},
        ColsShape{"cross_l4096_lk77_h8_d40", 2, 4096, 77, 8, 40, false, false, 320, 0, 640, 0, 320},
        ColsShape{"self_l1024_h8_d80", 2, 1024, 1024, 8, 80, false, true, 1920, 0, 1920, 640, 1280},
        ColsShape{"cross_l1024_lk77_h8_d80", 2, 1024, 77, 8, 80, false, false, 640, 0, 1280, 0, 640},
        ColsShape{"self_l256_h8_d160", 2, 256, 256, 8, 160, false, true, 3840, 0, 3840, 1280, 2560},
        ColsShape{"cross_l256_lk77_h8_d160", 2, 256, 77, 8, 160, false, false, 1280, 0, 2560, 0, 1280},
        ColsShape{"clip_causal_l77_h12_d64", 2, 77, 77, 12, 64, true, true, 2304, 0, 2304, 768, 1536},
        // inner 20 (d 10) at odd offsets: no 16-byte loads, cuDNN and mma2 refuse (scalar mma1 path)
        ColsShape{"unaligned_l300_h2_d10", 2, 300, 300, 2, 10, false, true, 61, 1, 61, 21, 41},
        ColsShape{"unaligned_causal_l130_h2_d12", 1, 130, 130, 2, 12, true, true, 75, 3, 75, 27, 51},
        // VAE mid-block: head dim 512, the unfused path on copies of the windows
        ColsShape{"vae_l1024_h1_d512", 1, 1024, 1024, 1, 512, false, true, 1536, 0, 1536, 512, 1024}),
    cols_name);

TEST(GpuSdShapes, ConvLinearNormsMatchCpu) {
  SD_REQUIRE_GPU();
  const auto conv = [](int64_t b, int64_t h, int64_t cin, int64_t cout, int k, int stride) {
    const float wr = 1.f / std::sqrt(static_cast<float>(cin * k * k));
    const std::vector<Tensor> in = {random_tensor({b, h, h, cin}, 201), random_tensor({cout, k, k, cin}, 202, -wr, wr),
                                    random_tensor({cout}, 203)};
    const std::string name = "conv2d " + std::to_string(b) + "x" + std::to_string(h) + "x" + std::to_string(h) + "x" +
                             std::to_string(cin) + " -> " + std::to_string(cout) + " k" + std::to_string(k) + " s" +
                             std::to_string(stride);
    EXPECT_LE(gpu_vs_cpu(name, in,
                         [&](Backend& be, const std::vector<Tensor>& d) {
                           return be.conv2d(d[0], d[1], d[2], stride, k / 2);
                         }),
              1e-2)
        << name;
  };
  conv(2, 64, 4, 320, 3, 1);     // UNet conv_in
  conv(2, 32, 320, 320, 3, 1);   // resnet conv
  conv(2, 32, 320, 320, 3, 2);   // downsample
  conv(2, 16, 640, 1280, 1, 1);  // 1x1 shortcut

  const std::vector<Tensor> lin = {random_tensor({2, 1024, 320}, 211), random_tensor({2560, 320}, 212, -0.06f, 0.06f),
                                   random_tensor({2560}, 213)};
  EXPECT_LE(gpu_vs_cpu("linear 2x1024x320 -> 2560 (geglu proj)", lin,
                       [](Backend& be, const std::vector<Tensor>& d) { return be.geglu(be.linear(d[0], d[1], d[2])); }),
            1e-2);
  const std::vector<Tensor> gn = {random_tensor({2, 64, 64, 320}, 221, -1.f, 3.f), random_tensor({320}, 222, 0.5f, 1.5f),
                                  random_tensor({320}, 223)};
  EXPECT_LE(gpu_vs_cpu("group_norm 2x64x64x320 g32 silu", gn,
                       [](Backend& be, const std::vector<Tensor>& d) {
                         return be.group_norm(d[0], d[1], d[2], 32, 1e-5f, true);
                       }),
            1e-2);
  const std::vector<Tensor> gn2 = {random_tensor({1, 8, 8, 1280}, 224), random_tensor({1280}, 225, 0.5f, 1.5f),
                                   random_tensor({1280}, 226)};
  EXPECT_LE(gpu_vs_cpu("group_norm 1x8x8x1280 g32", gn2,
                       [](Backend& be, const std::vector<Tensor>& d) {
                         return be.group_norm(d[0], d[1], d[2], 32, 1e-6f, false);
                       }),
            1e-2);
  const std::vector<Tensor> ln = {random_tensor({2, 4096, 320}, 231), random_tensor({320}, 232, 0.5f, 1.5f),
                                  random_tensor({320}, 233)};
  EXPECT_LE(gpu_vs_cpu("layer_norm 2x4096x320", ln,
                       [](Backend& be, const std::vector<Tensor>& d) { return be.layer_norm(d[0], d[1], d[2], 1e-5f); }),
            1e-2);
  // Sub-pixel upsample conv of the UNet's 32x32 -> 64x64 level (narrowed to 320 channels): the 2x2
  // conv with padding 1 into the four phases [2, 33, 33, 4*320], then interleave + bias.
  const float wp = 1.f / std::sqrt(4.f * 320.f);
  const std::vector<Tensor> sub = {random_tensor({2, 32, 32, 320}, 251), random_tensor({4 * 320, 2, 2, 320}, 252, -wp, wp),
                                   random_tensor({320}, 253)};
  EXPECT_LE(gpu_vs_cpu("sub-pixel upsample conv 2x32x32x320 -> 2x64x64x320", sub,
                       [](Backend& be, const std::vector<Tensor>& d) {
                         return be.interleave_phases2x(be.conv2d(d[0], d[1], Tensor(), 1, 1), d[2]);
                       }),
            1e-2);
  const std::vector<Tensor> tev = {random_tensor({2, 32, 32, 640}, 241), random_tensor({2, 640}, 242)};
  EXPECT_LE(gpu_vs_cpu("add_per_channel + upsample + concat", tev,
                       [](Backend& be, const std::vector<Tensor>& d) {
                         const Tensor h = be.add_per_channel(d[0], d[1]);
                         return be.concat_channels(be.upsample_nearest2x(h), be.upsample_nearest2x(d[0]));
                       }),
            1e-3);
}

}  // namespace
}  // namespace sd::testing
