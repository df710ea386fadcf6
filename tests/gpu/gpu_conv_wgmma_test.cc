// The Hopper wgmma implicit-GEMM convolution (src/backend/cuda/conv_wgmma.cu), forced with
// SDSERVE_CUDA_WGMMA_CONV=2 and each tile / split configuration, against the CPU backend's
// conv2d_fused on the same rounded inputs: SD 1.5 shapes, 1x1, odd sizes, bf16, clusters that
// multicast the input (along N) and the weights (along M), 256-position tiles, DSMEM split sums,
// and the input-reuse kernel (halo boxes per channel chunk, taps read out of shared memory).
#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <cstdio>
#include <string>
#include <vector>

#include "backend/op_cases.h"
#include "gpu_test_util.h"
#include "scoped_env.h"

#if SD_TEST_CUDA_INTERNALS
#include "backend/cuda/conv_wgmma.h"
#endif

namespace sd::testing {
namespace {

struct WgmmaCase {
  const char* name;
  int64_t b, h, w, cin, cout;
  int k, stride;
  bool bias, row, residual;
  const char* bn;      // SDSERVE_CUDA_WGMMA_CONV_BN ("" = heuristic)
  const char* splits;  // SDSERVE_CUDA_WGMMA_CONV_SPLITS ("" = heuristic)
  DType dtype;
  const char* cluster = "";  // SDSERVE_CUDA_WGMMA_CONV_CLUSTER ("CXxCY"; "" = heuristic)
  const char* bm = "";       // SDSERVE_CUDA_WGMMA_CONV_BM ("128" / "256"; "" = heuristic)
  const char* dsmem = "";    // SDSERVE_CUDA_WGMMA_CONV_DSMEM ("1": split summed in-cluster)
  const char* reuse = "";    // SDSERVE_CUDA_WGMMA_CONV_REUSE ("1": the input-reuse kernel)
};

class GpuConvWgmma : public ::testing::TestWithParam<WgmmaCase> {};

TEST_P(GpuConvWgmma, MatchesCpuAndIsDeterministic) {
  SD_REQUIRE_GPU();
  const WgmmaCase c = GetParam();
  const int pad = c.k / 2;
  const int64_t ho = (c.h + 2 * pad - c.k) / c.stride + 1, wo = (c.w + 2 * pad - c.k) / c.stride + 1;
  const float wr = 1.f / std::sqrt(static_cast<float>(c.cin * c.k * c.k));
  const std::vector<Tensor> host = {
      quantize(random_tensor({c.b, c.h, c.w, c.cin}, 601, -2.f, 3.f), c.dtype),    // x [B, H, W, Cin]
      quantize(random_tensor({c.cout, c.k, c.k, c.cin}, 602, -wr, wr), c.dtype),  // w [Cout, k, k, Cin]
      quantize(random_tensor({c.cout}, 603), c.dtype),                            // bias [Cout]
      quantize(random_tensor({c.b, c.cout}, 604), c.dtype),                       // row [B, Cout]
      quantize(random_tensor({c.b, ho, wo, c.cout}, 605), c.dtype)};              // residual like y
  const auto conv = [&](Backend& be, const std::vector<Tensor>& d) {
    return be.conv2d_fused(d[0], d[1], c.bias ? d[2] : Tensor(), c.stride, pad, c.row ? d[3] : Tensor(),
                           c.residual ? d[4] : Tensor());
  };
  Backend& gpu = gpu_backend(c.dtype);
  Backend& cpu = cpu_reference_backend();
  std::vector<Tensor> dg, dc;
  for (const Tensor& t : host) {
    dg.push_back(gpu.upload(t));
    dc.push_back(cpu.upload(t));
  }
  const Tensor want = cpu.download(conv(cpu, dc));
  Tensor got, again;
#if SD_TEST_CUDA_INTERNALS
  const uint64_t reuse_before = cuda::wgmma_conv_reuse_launches();
#endif
  {
    ScopedEnv mode("SDSERVE_CUDA_WGMMA_CONV", "2");
    ScopedEnv splitk("SDSERVE_CUDA_SPLITK_CONV", "0");
    ScopedEnv bn("SDSERVE_CUDA_WGMMA_CONV_BN", c.bn);
    ScopedEnv splits("SDSERVE_CUDA_WGMMA_CONV_SPLITS", c.splits);
    ScopedEnv cluster("SDSERVE_CUDA_WGMMA_CONV_CLUSTER", c.cluster);
    ScopedEnv bm("SDSERVE_CUDA_WGMMA_CONV_BM", c.bm);
    ScopedEnv dsmem("SDSERVE_CUDA_WGMMA_CONV_DSMEM", c.dsmem);
    ScopedEnv reuse("SDSERVE_CUDA_WGMMA_CONV_REUSE", c.reuse);
    got = gpu.download(conv(gpu, dg));
    again = gpu.download(conv(gpu, dg));
  }
  Tensor cudnn;
  {
    ScopedEnv mode("SDSERVE_CUDA_WGMMA_CONV", "0");
    ScopedEnv splitk("SDSERVE_CUDA_SPLITK_CONV", "0");
    cudnn = gpu.download(conv(gpu, dg));
  }
  ASSERT_TRUE(gpu.synchronize().ok());
#if SD_TEST_CUDA_INTERNALS
  // A case that forces the reuse kernel on a shape it takes must have run it (not a fallback).
  const cuda::SplitKConvShape shape{c.b, c.h, c.w, c.cin, c.cout, c.k, c.stride, pad, ho, wo};
  const bool reuse_expected = c.reuse[0] == '1' && c.k == 3 && c.stride == 1;
  EXPECT_EQ(cuda::wgmma_conv_reuse_launches() - reuse_before, reuse_expected ? 2u : 0u) << c.name;
  if (reuse_expected) {
    cuda::WgmmaConvConfig cfg;
    cfg.bn = std::atoi(c.bn), cfg.splits = std::atoi(c.splits), cfg.dsmem = c.dsmem[0] == '1', cfg.reuse = true;
    if (c.bm[0]) cfg.bm = std::atoi(c.bm);
    EXPECT_TRUE(cuda::wgmma_conv_config_ok(shape, cfg)) << c.name << ": " << cfg.describe();
  }
#endif
  ASSERT_EQ(got.shape(), want.shape()) << c.name;
  const double rel = relative_l2(got, want), rel_cudnn = relative_l2(got, cudnn);
  std::printf("  %-30s vs CPU rel_l2 %.2e max_abs %.2e | vs cuDNN rel_l2 %.2e\n", c.name, rel,
              max_abs_diff(got, want), rel_cudnn);
  const double tol = c.dtype == DType::kBF16 ? 1e-2 : 2e-3;
  EXPECT_LE(rel, tol) << c.name;
  EXPECT_LE(rel_cudnn, tol) << c.name;
  EXPECT_EQ(max_abs_diff(got, again), 0.0) << c.name << ": two runs differ";
}

std::string case_name(const ::testing::TestParamInfo<WgmmaCase>& info) { return info.param.name; }

INSTANTIATE_TEST_SUITE_P(
    Shapes, GpuConvWgmma,
    ::testing::Values(
        // name, b, h, w, cin, cout, k, stride, bias, row, residual, bn, splits, dtype
        WgmmaCase{"l8_resnet_conv2", 2, 8, 8, 1280, 1280, 3, 1, true, false, true, "", "", DType::kF16},
        WgmmaCase{"l8_conv1_row_bn64_s7", 2, 8, 8, 1280, 1280, 3, 1, true, true, false, "64", "7", DType::kF16},
        WgmmaCase{"l8_nosplit_all_adds", 2, 8, 8, 1280, 1280, 3, 1, true, true, true, "128", "1", DType::kF16},
        WgmmaCase{"l8_concat_2560", 2, 8, 8, 2560, 1280, 3, 1, true, true, true, "", "", DType::kF16},
        WgmmaCase{"l8_shortcut_k1_2560", 2, 8, 8, 2560, 1280, 1, 1, true, false, false, "", "", DType::kF16},
        WgmmaCase{"l16_1280", 2, 16, 16, 1280, 1280, 3, 1, true, false, true, "", "", DType::kF16},
        WgmmaCase{"l16_640_to_1280_row", 2, 16, 16, 640, 1280, 3, 1, true, true, false, "", "", DType::kF16},
        WgmmaCase{"l16_1920_bn64_s3", 2, 16, 16, 1920, 1280, 3, 1, true, false, true, "64", "3", DType::kF16},
        WgmmaCase{"l16_shortcut_k1_1920", 2, 16, 16, 1920, 1280, 1, 1, true, false, true, "", "", DType::kF16},
        WgmmaCase{"l32_640", 2, 32, 32, 640, 640, 3, 1, true, false, true, "", "", DType::kF16},
        WgmmaCase{"odd_3x4x8_imgs4_s5", 3, 4, 8, 128, 192, 3, 1, true, true, true, "64", "5", DType::kF16},
        WgmmaCase{"odd_1x16x8_cout320", 1, 16, 8, 192, 320, 3, 1, true, true, false, "", "4", DType::kF16},
        WgmmaCase{"odd_3x32x8_rows16", 3, 32, 8, 64, 128, 3, 1, true, true, true, "128", "3", DType::kF16},
        WgmmaCase{"odd_5x2x2_k1", 5, 2, 2, 64, 64, 1, 1, true, true, true, "", "", DType::kF16},
        WgmmaCase{"many_splits_uneven", 1, 8, 8, 1280, 1280, 3, 1, false, false, false, "64", "37", DType::kF16},
        WgmmaCase{"s2_falls_back_to_cudnn", 2, 16, 16, 640, 640, 3, 2, true, false, false, "", "", DType::kF16},
        WgmmaCase{"l8_bf16", 2, 8, 8, 1280, 1280, 3, 1, true, true, true, "", "", DType::kBF16},
        WgmmaCase{"l16_bf16_bn64_nosplit", 2, 16, 16, 640, 1280, 3, 1, true, false, true, "64", "1", DType::kBF16},
        WgmmaCase{"odd_bf16_3x4x8", 3, 4, 8, 128, 192, 3, 1, false, true, true, "64", "2", DType::kBF16},
        WgmmaCase{"l16_bn256_s6_all_adds", 2, 16, 16, 1280, 1280, 3, 1, true, true, true, "256", "6", DType::kF16},
        WgmmaCase{"l8_bn256_nosplit", 2, 8, 8, 1280, 1280, 3, 1, true, false, false, "256", "1", DType::kF16},
        WgmmaCase{"odd_bf16_bn256_3x4x8", 3, 4, 8, 128, 256, 3, 1, true, true, true, "256", "4", DType::kBF16},
        // name, ..., bn, splits, dtype, cluster
        WgmmaCase{"l8_cluster4x1_bn64_s6", 2, 8, 8, 1280, 1280, 3, 1, true, true, true, "64", "6", DType::kF16,
                  "4x1"},
        WgmmaCase{"l8_cluster2x1_bn128", 2, 8, 8, 2560, 1280, 3, 1, true, false, true, "128", "", DType::kF16,
                  "2x1"},
        WgmmaCase{"l16_cluster2x2_s3", 2, 16, 16, 1280, 1280, 3, 1, true, true, true, "128", "3", DType::kF16,
                  "2x2"},
        WgmmaCase{"l16_cluster4x2_bn64", 2, 16, 16, 640, 1280, 3, 1, true, false, false, "64", "2", DType::kF16,
                  "4x2"},
        WgmmaCase{"l32_cluster1x2", 2, 32, 32, 640, 640, 3, 1, true, false, true, "128", "1", DType::kF16, "1x2"},
        WgmmaCase{"odd_rows16_cluster1x2", 3, 32, 8, 64, 128, 3, 1, true, true, true, "128", "3", DType::kF16,
                  "1x2"},
        WgmmaCase{"odd_3x8x4_cluster4x1", 3, 8, 4, 128, 256, 3, 1, true, true, true, "64", "3", DType::kF16, "4x1"},
        WgmmaCase{"odd_bf16_rows2_cluster4x2", 1, 32, 16, 64, 256, 3, 1, true, true, true, "64", "1", DType::kBF16,
                  "4x2"},
        // name, ..., bn, splits, dtype, cluster, bm, dsmem: 256-position tiles and in-cluster split sums
        WgmmaCase{"l32_bm256_bn128_dsmem3", 2, 32, 32, 640, 640, 3, 1, true, false, true, "128", "3", DType::kF16, "",
                  "256", "1"},
        WgmmaCase{"l32_bm256_bn160_dsmem4_row", 2, 32, 32, 640, 640, 3, 1, true, true, false, "160", "4", DType::kF16,
                  "", "256", "1"},
        WgmmaCase{"l32_1280_bm256_bn64_nosplit", 2, 32, 32, 1280, 640, 3, 1, true, false, true, "64", "1",
                  DType::kF16, "", "256", "0"},
        WgmmaCase{"l32_bm256_split3_partials", 2, 32, 32, 960, 640, 3, 1, true, true, true, "128", "3", DType::kF16,
                  "", "256", "0"},
        WgmmaCase{"l8_bn160_dsmem16_all_adds", 2, 8, 8, 1280, 1280, 3, 1, true, true, true, "160", "16", DType::kF16,
                  "", "128", "1"},
        WgmmaCase{"l8_2560_bn128_dsmem12_bf16", 2, 8, 8, 2560, 1280, 3, 1, true, false, true, "128", "12",
                  DType::kBF16, "", "128", "1"},
        WgmmaCase{"l64_320_bm256_bn160_dsmem2", 2, 64, 64, 320, 320, 3, 1, true, true, true, "160", "2", DType::kF16,
                  "", "256", "1"},
        WgmmaCase{"l64_960_bm128_bn160_dsmem2", 2, 64, 64, 960, 320, 3, 1, true, false, true, "160", "2", DType::kF16,
                  "", "128", "1"},
        WgmmaCase{"l64_k1_640_bm256_bn160", 2, 64, 64, 640, 320, 1, 1, true, false, false, "160", "1", DType::kF16, "",
                  "256", "0"},
        WgmmaCase{"l16_640_bm256_dsmem8", 2, 16, 16, 640, 1280, 3, 1, true, true, false, "128", "8", DType::kF16, "",
                  "256", "1"},
        WgmmaCase{"l16_bn256_dsmem4", 2, 16, 16, 1280, 1280, 3, 1, true, false, true, "256", "4", DType::kF16, "",
                  "128", "1"},
        WgmmaCase{"l8_bm128_bn64_dsmem6", 2, 8, 8, 1280, 1280, 3, 1, true, true, true, "64", "6", DType::kF16, "",
                  "128", "1"},
        WgmmaCase{"l8_bm256_half_tile_dsmem8", 2, 8, 8, 1280, 1280, 3, 1, true, false, true, "64", "8", DType::kF16, "",
                  "256", "1"},
        WgmmaCase{"uneven_dsmem7", 1, 8, 8, 1280, 1280, 3, 1, false, false, false, "128", "7", DType::kF16, "", "128",
                  "1"},
        WgmmaCase{"odd_3x4x8_bm256_dsmem5", 3, 4, 8, 128, 192, 3, 1, true, true, true, "64", "5", DType::kF16, "",
                  "256", "1"},
        WgmmaCase{"odd_bf16_3x32x8_bm256_dsmem3", 3, 32, 8, 192, 128, 3, 1, true, true, true, "64", "3", DType::kBF16,
                  "", "256", "1"},
        WgmmaCase{"odd_bf16_1x16x8_bm256_bn160", 1, 16, 8, 192, 320, 3, 1, true, true, false, "160", "2", DType::kBF16,
                  "", "256", "1"},
        WgmmaCase{"l32_bf16_bm256_bn128_nosplit", 2, 32, 32, 640, 640, 3, 1, true, true, true, "128", "1",
                  DType::kBF16, "", "256", "0"},
        // multicast pairs with split sums: clusters (cx, cy, splits)
        WgmmaCase{"l32_bn160_cluster1x2_dsmem2", 2, 32, 32, 640, 640, 3, 1, true, false, true, "160", "2",
                  DType::kF16, "1x2", "128", "1"},
        WgmmaCase{"l32_bn160_cluster1x2_s2_partials", 2, 32, 32, 960, 640, 3, 1, true, true, false, "160", "2",
                  DType::kF16, "1x2", "128", "0"},
        WgmmaCase{"l16_bn128_cluster2x1_dsmem3", 2, 16, 16, 1280, 1280, 3, 1, true, true, true, "128", "3",
                  DType::kF16, "2x1", "128", "1"},
        WgmmaCase{"l8_bn160_cluster2x1_dsmem4", 2, 8, 8, 1280, 1280, 3, 1, true, true, true, "160", "4", DType::kF16,
                  "2x1", "128", "1"},
        WgmmaCase{"odd_bf16_rows16_cluster1x2_dsmem3", 3, 32, 8, 64, 128, 3, 1, true, true, true, "128", "3",
                  DType::kBF16, "1x2", "128", "1"},
        // the input-reuse kernel: name, ..., bn, splits, dtype, cluster, bm, dsmem, reuse
        WgmmaCase{"reuse_l64_320_bn64_dsmem2", 2, 64, 64, 320, 320, 3, 1, true, false, true, "64", "2", DType::kF16,
                  "", "128", "1", "1"},
        WgmmaCase{"reuse_l64_320_bn64_s3_partials", 2, 64, 64, 320, 320, 3, 1, true, true, false, "64", "3",
                  DType::kF16, "", "128", "0", "1"},
        WgmmaCase{"reuse_l64_ring2_bn128", 1, 64, 64, 128, 256, 3, 1, true, false, true, "128", "1", DType::kF16, "",
                  "128", "0", "1"},
        WgmmaCase{"reuse_l32_640_bn160_dsmem2", 2, 32, 32, 640, 640, 3, 1, true, false, true, "160", "2", DType::kF16,
                  "", "128", "1", "1"},
        WgmmaCase{"reuse_l32_640_bn128_nosplit", 2, 32, 32, 640, 640, 3, 1, true, true, true, "128", "1", DType::kF16,
                  "", "128", "0", "1"},
        WgmmaCase{"reuse_l16_1280_bn160_dsmem4", 2, 16, 16, 1280, 1280, 3, 1, true, false, true, "160", "4",
                  DType::kF16, "", "128", "1", "1"},
        WgmmaCase{"reuse_l16_1280_bn128_s5_partials", 2, 16, 16, 1280, 1280, 3, 1, true, true, true, "128", "5",
                  DType::kF16, "", "128", "0", "1"},
        WgmmaCase{"reuse_l8_1280_bn64_dsmem6", 2, 8, 8, 1280, 1280, 3, 1, true, true, true, "64", "6", DType::kF16, "",
                  "128", "1", "1"},
        WgmmaCase{"reuse_l8_2560_bn160_s8_partials", 2, 8, 8, 2560, 1280, 3, 1, true, false, false, "160", "8",
                  DType::kF16, "", "128", "0", "1"},
        WgmmaCase{"reuse_l8_2560_bn160_dsmem16", 2, 8, 8, 2560, 1280, 3, 1, true, true, true, "160", "16",
                  DType::kF16, "", "128", "1", "1"},
        WgmmaCase{"reuse_b32_l32_640_bn160", 32, 32, 32, 640, 640, 3, 1, true, false, false, "160", "1", DType::kF16,
                  "", "128", "0", "1"},
        WgmmaCase{"reuse_odd_3x12x16_cin64_rows", 3, 12, 16, 64, 128, 3, 1, true, true, true, "64", "1", DType::kF16,
                  "", "128", "0", "1"},
        WgmmaCase{"reuse_odd_1x20x8_cin128_s2", 1, 20, 8, 128, 192, 3, 1, true, true, false, "64", "2", DType::kF16,
                  "", "128", "0", "1"},
        WgmmaCase{"reuse_odd_3x4x16_imgs2_dsmem2", 3, 4, 16, 128, 64, 3, 1, true, true, true, "64", "2", DType::kF16,
                  "", "128", "1", "1"},
        WgmmaCase{"reuse_odd_2x8x16_imgs1_bn128", 2, 8, 16, 64, 128, 3, 1, true, false, true, "128", "1", DType::kF16,
                  "", "128", "0", "1"},
        WgmmaCase{"reuse_odd_3x4x8_short_tile", 3, 4, 8, 128, 192, 3, 1, true, true, true, "64", "1", DType::kF16, "",
                  "128", "0", "1"},
        WgmmaCase{"reuse_k1_falls_back", 2, 16, 16, 640, 1280, 1, 1, true, false, true, "128", "1", DType::kF16, "",
                  "128", "0", "1"},
        WgmmaCase{"reuse_bf16_l8_bn128_dsmem5", 2, 8, 8, 1280, 1280, 3, 1, true, true, true, "128", "5", DType::kBF16,
                  "", "128", "1", "1"},
        WgmmaCase{"reuse_bf16_l32_bn160_s3_partials", 2, 32, 32, 640, 640, 3, 1, true, false, true, "160", "3",
                  DType::kBF16, "", "128", "0", "1"},
        WgmmaCase{"reuse_bf16_odd_1x6x32_dsmem3", 1, 6, 32, 192, 128, 3, 1, true, true, true, "128", "3",
                  DType::kBF16, "", "128", "1", "1"},
        WgmmaCase{"reuse_bf16_odd_2x12x16_bn128", 2, 12, 16, 64, 256, 3, 1, false, true, true, "128", "1",
                  DType::kBF16, "", "128", "0", "1"},
        // bm 256: 32-channel chunks, 64-byte swizzle, two m64 sub-tiles a consumer warpgroup
        WgmmaCase{"reuse_bm256_l32_640_bn160_dsmem2", 2, 32, 32, 640, 640, 3, 1, true, false, true, "160", "2",
                  DType::kF16, "", "256", "1", "1"},
        WgmmaCase{"reuse_bm256_l16_1280_bn128_s3_partials", 2, 16, 16, 1280, 1280, 3, 1, true, true, true, "128", "3",
                  DType::kF16, "", "256", "0", "1"},
        WgmmaCase{"reuse_bm256_l8_1280_bn128_dsmem4", 2, 8, 8, 1280, 1280, 3, 1, true, true, true, "128", "4",
                  DType::kF16, "", "256", "1", "1"},
        WgmmaCase{"reuse_bm256_l64_320_bn160_nosplit", 2, 64, 64, 320, 320, 3, 1, true, false, true, "160", "1",
                  DType::kF16, "", "256", "0", "1"},
        WgmmaCase{"reuse_bm256_b32_l32_640_bn160", 32, 32, 32, 640, 640, 3, 1, true, false, false, "160", "1",
                  DType::kF16, "", "256", "0", "1"},
        WgmmaCase{"reuse_bm256_odd_3x12x16_dsmem2", 3, 12, 16, 64, 128, 3, 1, true, true, true, "128", "2", DType::kF16,
                  "", "256", "1", "1"},
        WgmmaCase{"reuse_bm256_odd_1x20x8_s4", 1, 20, 8, 128, 256, 3, 1, true, true, false, "128", "4", DType::kF16, "",
                  "256", "0", "1"},
        WgmmaCase{"reuse_bm256_bf16_l16_bn160_dsmem3", 2, 16, 16, 1280, 1280, 3, 1, true, false, true, "160", "3",
                  DType::kBF16, "", "256", "1", "1"},
        WgmmaCase{"reuse_bm256_bf16_odd_3x4x16_imgs4", 3, 4, 16, 128, 128, 3, 1, true, true, true, "128", "1",
                  DType::kBF16, "", "256", "0", "1"}),
    case_name);

// The timed choice (mode 1) must give the same values as whichever path it picks.
TEST(GpuConvWgmmaChoice, TimedChoiceMatchesCpu) {
  SD_REQUIRE_GPU();
  Backend& gpu = gpu_backend(DType::kF16);
  Backend& cpu = cpu_reference_backend();
  const float wr = 1.f / std::sqrt(2560.f * 9.f);
  const std::vector<Tensor> host = {quantize(random_tensor({2, 8, 8, 2560}, 611, -2.f, 3.f), DType::kF16),
                                    quantize(random_tensor({1280, 3, 3, 2560}, 612, -wr, wr), DType::kF16),
                                    quantize(random_tensor({1280}, 613), DType::kF16)};
  ScopedEnv mode("SDSERVE_CUDA_WGMMA_CONV", "1");
  const Tensor want = cpu.download(cpu.conv2d(cpu.upload(host[0]), cpu.upload(host[1]), cpu.upload(host[2]), 1, 1));
  const Tensor x = gpu.upload(host[0]), w = gpu.upload(host[1]), b = gpu.upload(host[2]);
  const Tensor first = gpu.download(gpu.conv2d(x, w, b, 1, 1));   // times the candidates
  const Tensor second = gpu.download(gpu.conv2d(x, w, b, 1, 1));  // runs the chosen one
  ASSERT_TRUE(gpu.synchronize().ok());
  EXPECT_LE(relative_l2(first, want), 2e-3);
  EXPECT_LE(relative_l2(second, want), 2e-3);
}

}  // namespace
}  // namespace sd::testing
