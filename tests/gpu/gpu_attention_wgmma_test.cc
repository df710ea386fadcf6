// The Hopper wgmma attention kernels (SDSERVE_CUDA_ATTENTION=wgmma, attention_wgmma*.cu) against
// the pipelined mma.sync kernel (mma2) and the CPU backend: head dims 40/64/80, f16 and bf16,
// self / cross lengths, ragged tails, batches 1..32, strided q/k/v from packed projections,
// the softmax options (polynomial exps, skipped rescales).
#include <gtest/gtest.h>

#include <cstdio>
#include <cstdlib>
#include <functional>
#include <string>

#include "backend/op_cases.h"
#include "gpu_test_util.h"
#include "scoped_env.h"

namespace sd::testing {
namespace {

// Sets SDSERVE_CUDA_ATTENTION (read on every attention call) for one scope.
class AttentionPathScope {
 public:
  explicit AttentionPathScope(const char* path) { setenv("SDSERVE_CUDA_ATTENTION", path, 1); }
  ~AttentionPathScope() { unsetenv("SDSERVE_CUDA_ATTENTION"); }
  AttentionPathScope(const AttentionPathScope&) = delete;
  AttentionPathScope& operator=(const AttentionPathScope&) = delete;
};

#define SD_REQUIRE_WGMMA()                                                                            \
  do {                                                                                                \
    SD_REQUIRE_GPU();                                                                                 \
    if (!::sd::cuda::attention_wgmma_supported(0)) GTEST_SKIP() << "device 0 is not sm_90 (wgmma)"; \
  } while (0)

using Run = std::function<Tensor(Backend&, const std::vector<Tensor>&)>;

// Runs `run` on device inputs with the wgmma path and with `other` ("mma2"); returns rel L2.
double wgmma_vs(const char* other, DType dtype, const std::string& name, const std::vector<Tensor>& device_inputs,
                const Run& run) {
  Backend& gpu = gpu_backend(dtype);
  Tensor got, want;
  {
    AttentionPathScope scope("wgmma");
    got = gpu.download(run(gpu, device_inputs));
  }
  {
    AttentionPathScope scope(other);
    want = gpu.download(run(gpu, device_inputs));
  }
  EXPECT_TRUE(gpu.synchronize().ok());
  EXPECT_EQ(got.shape(), want.shape()) << name;
  if (got.shape() != want.shape()) return 1.0;
  const double rel = relative_l2(got, want);
  std::printf("  %-48s %s vs %s: rel_l2 %.2e max_abs %.2e\n", name.c_str(), dtype_name(dtype), other, rel,
              max_abs_diff(got, want));
  return rel;
}

double tolerance(DType dtype) { return dtype == DType::kBF16 ? 1e-2 : 2e-3; }

struct Shape5 {
  int64_t batch, lq, lk, heads, d;
};

std::string shape_name(const Shape5& s) {
  return "b" + std::to_string(s.batch) + " lq" + std::to_string(s.lq) + " lk" + std::to_string(s.lk) + " h" +
         std::to_string(s.heads) + " d" + std::to_string(s.d);
}

class GpuAttentionWgmma : public ::testing::TestWithParam<Shape5> {};

TEST_P(GpuAttentionWgmma, MatchesMma2) {
  SD_REQUIRE_WGMMA();
  const Shape5 s = GetParam();
  const int64_t hd = s.heads * s.d;
  for (DType dtype : {DType::kF16, DType::kBF16}) {
    Backend& gpu = gpu_backend(dtype);
    const std::vector<Tensor> in = {gpu.upload(quantize(random_tensor({s.batch, s.lq, hd}, 401, -2.f, 2.f), dtype)),
                                    gpu.upload(quantize(random_tensor({s.batch, s.lk, hd}, 402, -2.f, 2.f), dtype)),
                                    gpu.upload(quantize(random_tensor({s.batch, s.lk, hd}, 403), dtype))};
    const double rel = wgmma_vs("mma2", dtype, shape_name(s), in, [&](Backend& be, const std::vector<Tensor>& d) {
      return be.attention(d[0], d[1], d[2], static_cast<int>(s.heads), false);
    });
    EXPECT_LE(rel, tolerance(dtype)) << shape_name(s) << " " << dtype_name(dtype);
  }
}

INSTANTIATE_TEST_SUITE_P(Shapes, GpuAttentionWgmma,
                         ::testing::Values(Shape5{2, 4096, 4096, 8, 40}, Shape5{2, 4096, 77, 8, 40},
                                           Shape5{2, 1024, 1024, 8, 40}, Shape5{1, 1000, 77, 8, 40},
                                           Shape5{1, 129, 4097, 2, 40}, Shape5{3, 77, 77, 3, 40},
                                           Shape5{1, 1, 1, 1, 40}, Shape5{32, 4096, 4096, 8, 40},
                                           Shape5{32, 4096, 77, 8, 40}, Shape5{2, 1024, 1024, 10, 64},
                                           Shape5{3, 65, 200, 2, 64}, Shape5{2, 1024, 1024, 8, 80},
                                           Shape5{2, 1024, 77, 8, 80}, Shape5{1, 300, 129, 2, 80}));

// Against the CPU backend (f32 math on the same f16-rounded inputs).
TEST(GpuAttentionWgmmaCpu, MatchesCpu) {
  SD_REQUIRE_WGMMA();
  Backend& gpu = gpu_backend(DType::kF16);
  Backend& cpu = cpu_reference_backend();
  for (const Shape5& s : {Shape5{1, 1000, 77, 8, 40}, Shape5{1, 777, 1031, 8, 40}, Shape5{2, 256, 300, 4, 64},
                          Shape5{1, 333, 257, 4, 80}}) {
    const int64_t hd = s.heads * s.d;
    const std::vector<Tensor> host = {quantize(random_tensor({s.batch, s.lq, hd}, 411, -2.f, 2.f), DType::kF16),
                                      quantize(random_tensor({s.batch, s.lk, hd}, 412, -2.f, 2.f), DType::kF16),
                                      quantize(random_tensor({s.batch, s.lk, hd}, 413), DType::kF16)};
    Tensor got;
    {
      AttentionPathScope scope("wgmma");
      got = gpu.download(gpu.attention(gpu.upload(host[0]), gpu.upload(host[1]), gpu.upload(host[2]),
                                       static_cast<int>(s.heads), false));
    }
    const Tensor want = cpu.download(cpu.attention(cpu.upload(host[0]), cpu.upload(host[1]), cpu.upload(host[2]),
                                                   static_cast<int>(s.heads), false));
    ASSERT_EQ(got.shape(), want.shape());
    const double rel = relative_l2(got, want);
    std::printf("  %-48s vs cpu: rel_l2 %.2e max_abs %.2e\n", shape_name(s).c_str(), rel, max_abs_diff(got, want));
    EXPECT_LE(rel, 1e-2) << shape_name(s);
  }
}

// attention_cols on packed projections: self (one [B, L, 3 inner] QKV buffer) and cross (q
// alone, k|v packed); q/k/v rows are strided.
TEST(GpuAttentionWgmmaCols, PackedProjectionsMatchMma2) {
  SD_REQUIRE_WGMMA();
  struct Cols {
    int64_t batch, lq, lk, heads, d;
    bool shared;
  };
  for (const Cols& c : {Cols{2, 4096, 4096, 8, 40, true}, Cols{2, 4096, 77, 8, 40, false},
                        Cols{1, 1000, 77, 8, 40, false}, Cols{2, 1024, 1024, 10, 64, true},
                        Cols{2, 1024, 1024, 8, 80, true}, Cols{2, 1024, 77, 8, 80, false}}) {
    const int64_t inner = c.heads * c.d;
    for (DType dtype : {DType::kF16, DType::kBF16}) {
      Backend& gpu = gpu_backend(dtype);
      std::vector<Tensor> in = {
          gpu.upload(quantize(random_tensor({c.batch, c.lq, c.shared ? 3 * inner : inner}, 421, -2.f, 2.f), dtype))};
      if (!c.shared) in.push_back(gpu.upload(quantize(random_tensor({c.batch, c.lk, 2 * inner}, 422, -2.f, 2.f), dtype)));
      const std::string name = std::string(c.shared ? "cols self " : "cols cross ") +
                               shape_name(Shape5{c.batch, c.lq, c.lk, c.heads, c.d});
      const double rel = wgmma_vs("mma2", dtype, name, in, [&](Backend& be, const std::vector<Tensor>& d) {
        if (c.shared) return be.attention_cols(d[0], 0, d[0], inner, 2 * inner, inner, static_cast<int>(c.heads), false);
        return be.attention_cols(d[0], 0, d[1], 0, inner, inner, static_cast<int>(c.heads), false);
      });
      EXPECT_LE(rel, tolerance(dtype)) << name << " " << dtype_name(dtype);
    }
  }
}

// The other kernels behind the wgmma path (SDSERVE_CUDA_WGMMA_KERNEL; the tests above run the
// default: "pp4ns" at d 40 / 64, "pp2" at d 80): 2, 3 or 4 consumer warpgroups (4 with 64-key
// tiles), 64-key tiles, turns in pairs, no turns ("ns"), and the "simple" kernel.
TEST(GpuAttentionWgmmaVariants, EachKernelMatchesMma2) {
  SD_REQUIRE_WGMMA();
  for (const char* variant : {"pp2", "pp3", "pp3b64", "pp3b64ns", "pp4", "pp4pairs", "pp2b64", "pp2ns", "simple"}) {
    setenv("SDSERVE_CUDA_WGMMA_KERNEL", variant, 1);
    for (const Shape5& s : {Shape5{2, 4096, 4096, 8, 40}, Shape5{1, 129, 4097, 2, 40}, Shape5{3, 77, 77, 3, 40},
                            Shape5{1, 1, 1, 1, 40}, Shape5{1, 300, 129, 2, 80}, Shape5{3, 65, 200, 2, 64}}) {
      const int64_t hd = s.heads * s.d;
      for (DType dtype : {DType::kF16, DType::kBF16}) {
        Backend& gpu = gpu_backend(dtype);
        const std::vector<Tensor> in = {
            gpu.upload(quantize(random_tensor({s.batch, s.lq, hd}, 431, -2.f, 2.f), dtype)),
            gpu.upload(quantize(random_tensor({s.batch, s.lk, hd}, 432, -2.f, 2.f), dtype)),
            gpu.upload(quantize(random_tensor({s.batch, s.lk, hd}, 433), dtype))};
        const std::string name = std::string(variant) + " " + shape_name(s);
        const double rel = wgmma_vs("mma2", dtype, name, in, [&](Backend& be, const std::vector<Tensor>& d) {
          return be.attention(d[0], d[1], d[2], static_cast<int>(s.heads), false);
        });
        EXPECT_LE(rel, tolerance(dtype)) << name << " " << dtype_name(dtype);
      }
    }
  }
  unsetenv("SDSERVE_CUDA_WGMMA_KERNEL");
}

// The softmax options of the default d 40 kernel: SDSERVE_CUDA_WGMMA_POLY (k of every 8 exps by
// polynomial) x SDSERVE_CUDA_WGMMA_RESCALE (0 always, 1 skip when no row maximum changed, 2 raise
// maxima only by > 8 in log2 units) x SDSERVE_CUDA_WGMMA_ROWSUM (1: row sums by the P V wgmma
// through a ones column of V), on inputs in [-2, 2] and peaky ones in [-6, 6] (the maxima
// move often), vs mma2; the extreme setting also vs the CPU backend.
TEST(GpuAttentionWgmmaSoftmax, PolyAndRescaleMatchMma2AndCpu) {
  SD_REQUIRE_WGMMA();
  ScopedEnv kernel("SDSERVE_CUDA_WGMMA_KERNEL", "pp4ns");
  struct Opt {
    const char *poly, *rescale, *rowsum, *lazy;
  };
  // lazy 1 takes effect with rescale 2 and the ones column (rowsum 1, or -1: its default then).
  for (const Opt& o : {Opt{"0", "0", "0", "0"}, Opt{"1", "0", "0", "0"}, Opt{"2", "0", "0", "0"},
                       Opt{"3", "0", "0", "0"}, Opt{"4", "0", "0", "0"}, Opt{"0", "1", "0", "0"},
                       Opt{"0", "2", "0", "0"}, Opt{"2", "1", "0", "0"}, Opt{"4", "2", "0", "0"},
                       Opt{"0", "0", "1", "0"}, Opt{"0", "2", "1", "0"}, Opt{"4", "2", "1", "0"},
                       Opt{"0", "2", "1", "1"}, Opt{"0", "2", "-1", "1"}, Opt{"0", "0", "1", "1"}}) {
    ScopedEnv poly("SDSERVE_CUDA_WGMMA_POLY", o.poly);
    ScopedEnv rescale("SDSERVE_CUDA_WGMMA_RESCALE", o.rescale);
    ScopedEnv rowsum("SDSERVE_CUDA_WGMMA_ROWSUM", o.rowsum);
    ScopedEnv lazy("SDSERVE_CUDA_WGMMA_LAZY", o.lazy);
    for (const Shape5& s : {Shape5{2, 4096, 4096, 8, 40}, Shape5{1, 129, 4097, 2, 40}, Shape5{3, 77, 77, 3, 40},
                            Shape5{2, 4096, 77, 8, 40}}) {
      for (float range : {2.f, 6.f}) {
        const int64_t hd = s.heads * s.d;
        for (DType dtype : {DType::kF16, DType::kBF16}) {
          Backend& gpu = gpu_backend(dtype);
          const std::vector<Tensor> in = {
              gpu.upload(quantize(random_tensor({s.batch, s.lq, hd}, 441, -range, range), dtype)),
              gpu.upload(quantize(random_tensor({s.batch, s.lk, hd}, 442, -range, range), dtype)),
              gpu.upload(quantize(random_tensor({s.batch, s.lk, hd}, 443), dtype))};
          const std::string name = std::string("poly ") + o.poly + " rescale " + o.rescale + " rowsum " +
                                   o.rowsum + " lazy " + o.lazy + " +-" + std::to_string(static_cast<int>(range)) +
                                   " " + shape_name(s);
          const double rel = wgmma_vs("mma2", dtype, name, in, [&](Backend& be, const std::vector<Tensor>& d) {
            return be.attention(d[0], d[1], d[2], static_cast<int>(s.heads), false);
          });
          EXPECT_LE(rel, tolerance(dtype)) << name << " " << dtype_name(dtype);
        }
      }
    }
  }
  for (const char* rowsum : {"0", "1"}) {
    ScopedEnv lazy("SDSERVE_CUDA_WGMMA_LAZY", "0");
    ScopedEnv poly("SDSERVE_CUDA_WGMMA_POLY", "4");
    ScopedEnv rescale("SDSERVE_CUDA_WGMMA_RESCALE", "2");
    ScopedEnv rowsum_env("SDSERVE_CUDA_WGMMA_ROWSUM", rowsum);
    Backend& gpu = gpu_backend(DType::kF16);
    Backend& cpu = cpu_reference_backend();
    const Shape5 s{1, 777, 1031, 8, 40};
    const int64_t hd = s.heads * s.d;
    const std::vector<Tensor> host = {quantize(random_tensor({s.batch, s.lq, hd}, 451, -4.f, 4.f), DType::kF16),
                                      quantize(random_tensor({s.batch, s.lk, hd}, 452, -4.f, 4.f), DType::kF16),
                                      quantize(random_tensor({s.batch, s.lk, hd}, 453), DType::kF16)};
    Tensor got;
    {
      AttentionPathScope scope("wgmma");
      got = gpu.download(gpu.attention(gpu.upload(host[0]), gpu.upload(host[1]), gpu.upload(host[2]),
                                       static_cast<int>(s.heads), false));
    }
    const Tensor want = cpu.download(
        cpu.attention(cpu.upload(host[0]), cpu.upload(host[1]), cpu.upload(host[2]), static_cast<int>(s.heads), false));
    ASSERT_EQ(got.shape(), want.shape());
    const double rel = relative_l2(got, want);
    std::printf("  poly 4 rescale 2 rowsum %s %-40s vs cpu: rel_l2 %.2e max_abs %.2e\n", rowsum,
                shape_name(s).c_str(), rel, max_abs_diff(got, want));
    EXPECT_LE(rel, 1e-2) << shape_name(s) << " rowsum " << rowsum;
  }
}

// Lazy row maxima (SDSERVE_CUDA_WGMMA_LAZY, the default): tiles keep the running maxima and only
// a warp whose P would exceed 2^8 falls back: P's rows shifted by powers of two
// (SDSERVE_CUDA_WGMMA_LAZY_SHIFT=1, the default), new exps where P overflowed f16 (and always
// with =0). Keys whose scale rises along the sequence (x1 -> x4) make the maxima rise tile after
// tile, so the fallback runs often, mixed with the lazy path inside a block; every 397th key x6
// (a spike far past f16's range) forces the exact path; ragged tiles (zero-filled by TMA past
// Lk), both dtypes, K / V by TMA and by cp.async; vs mma2 and (f16) vs the CPU.
TEST(GpuAttentionWgmmaSoftmax, LazyMaximaWithRisingScoresMatch) {
  SD_REQUIRE_WGMMA();
  ScopedEnv kernel("SDSERVE_CUDA_WGMMA_KERNEL", "pp4ns");
  ScopedEnv lazy("SDSERVE_CUDA_WGMMA_LAZY", "1");
  ScopedEnv rescale("SDSERVE_CUDA_WGMMA_RESCALE", "2");
  ScopedEnv rowsum("SDSERVE_CUDA_WGMMA_ROWSUM", "1");
  for (const char* shift : {"1", "0"}) {
  ScopedEnv shift_env("SDSERVE_CUDA_WGMMA_LAZY_SHIFT", shift);
  for (const char* tma : {"1", "0"}) {  // K / V by TMA (the default) and by cp.async
  ScopedEnv tma_env("SDSERVE_CUDA_WGMMA_TMA", tma);
  for (const Shape5& s : {Shape5{2, 1024, 4096, 8, 40}, Shape5{1, 333, 1093, 4, 40}}) {
  for (bool spikes : {false, true}) {
    const int64_t hd = s.heads * s.d;
    Tensor k = random_tensor({s.batch, s.lk, hd}, 462, -3.f, 3.f);
    float* kd = k.f32();  // [B, Lk, H*D], f32 on the host
    for (int64_t b = 0; b < s.batch; ++b) {
      for (int64_t j = 0; j < s.lk; ++j) {
        float f = 1.f + 3.f * static_cast<float>(j) / static_cast<float>(s.lk);
        if (spikes && j % 397 == 200) f *= 6.f;
        for (int64_t c = 0; c < hd; ++c) kd[(b * s.lk + j) * hd + c] *= f;
      }
    }
    for (DType dtype : {DType::kF16, DType::kBF16}) {
      Backend& gpu = gpu_backend(dtype);
      const std::vector<Tensor> host = {quantize(random_tensor({s.batch, s.lq, hd}, 461, -3.f, 3.f), dtype),
                                        quantize(k, dtype), quantize(random_tensor({s.batch, s.lk, hd}, 463), dtype)};
      const std::vector<Tensor> in = {gpu.upload(host[0]), gpu.upload(host[1]), gpu.upload(host[2])};
      const std::string name = std::string("lazy rising") + (spikes ? "+spikes" : "") + " shift " + shift +
                               " tma " + tma + " " + shape_name(s);
      const double rel = wgmma_vs("mma2", dtype, name, in, [&](Backend& be, const std::vector<Tensor>& d) {
        return be.attention(d[0], d[1], d[2], static_cast<int>(s.heads), false);
      });
      EXPECT_LE(rel, tolerance(dtype)) << name << " " << dtype_name(dtype);
      if (dtype == DType::kF16) {
        Tensor got;
        {
          AttentionPathScope scope("wgmma");
          got = gpu.download(gpu.attention(in[0], in[1], in[2], static_cast<int>(s.heads), false));
        }
        Backend& cpu = cpu_reference_backend();
        const Tensor want = cpu.download(cpu.attention(cpu.upload(host[0]), cpu.upload(host[1]), cpu.upload(host[2]),
                                                       static_cast<int>(s.heads), false));
        const double rel_cpu = relative_l2(got, want);
        std::printf("  %-40s vs cpu: rel_l2 %.2e\n", name.c_str(), rel_cpu);
        EXPECT_LE(rel_cpu, 1e-2) << name;
      }
    }
  }
  }
  }
  }
}

// The 3-consumer form of the default d 40 kernel (lazy maxima, ones-column row sums, K / V by TMA;
// SDSERVE_CUDA_ATTENTION=wgmma3, a candidate of the timed choice): the shapes where its 192-row
// blocks fill the last wave better (1 x 6144, 1 x 9216 queries), ragged and one-row shapes,
// q / k / v as column windows of a packed projection, keys whose scale rises along the sequence
// (the lazy fallback); vs mma2 in f16 / bf16, bitwise equal to the 4-consumer kernel (each
// consumer computes its 64 rows the same way), and one shape vs the CPU.
TEST(GpuAttentionWgmma3, MatchesMma2AndTheFourConsumerKernel) {
  SD_REQUIRE_WGMMA();
  const auto run_path = [](const char* path, Backend& be, const std::vector<Tensor>& in, int64_t heads, bool packed) {
    AttentionPathScope scope(path);
    if (packed) {
      const int64_t inner = heads * 40;
      return be.download(be.attention_cols(in[0], 0, in[0], inner, 2 * inner, inner, static_cast<int>(heads), false));
    }
    return be.download(be.attention(in[0], in[1], in[2], static_cast<int>(heads), false));
  };
  struct Case {
    Shape5 s;
    bool packed, rising;
  };
  for (const Case& c : {Case{{1, 6144, 6144, 8, 40}, false, false}, Case{{1, 9216, 9216, 8, 40}, false, false},
                        Case{{2, 333, 1093, 4, 40}, false, true}, Case{{1, 1, 1, 1, 40}, false, false},
                        Case{{2, 1000, 1000, 8, 40}, true, false}, Case{{3, 77, 4097, 2, 40}, false, true}}) {
    const Shape5& s = c.s;
    const int64_t hd = s.heads * s.d;
    for (DType dtype : {DType::kF16, DType::kBF16}) {
      Backend& gpu = gpu_backend(dtype);
      std::vector<Tensor> in;
      if (c.packed) {  // [B, L, 3 x H*D]: q | k | v side by side
        in = {gpu.upload(quantize(random_tensor({s.batch, s.lq, 3 * hd}, 471, -2.f, 2.f), dtype))};
      } else {
        Tensor k = random_tensor({s.batch, s.lk, hd}, 472, -3.f, 3.f);
        if (c.rising) {
          float* kd = k.f32();
          for (int64_t b = 0; b < s.batch; ++b) {
            for (int64_t j = 0; j < s.lk; ++j) {
              const float f = 1.f + 3.f * static_cast<float>(j) / static_cast<float>(s.lk);
              for (int64_t e = 0; e < hd; ++e) kd[(b * s.lk + j) * hd + e] *= f;
            }
          }
        }
        in = {gpu.upload(quantize(random_tensor({s.batch, s.lq, hd}, 471, -3.f, 3.f), dtype)),
              gpu.upload(quantize(k, dtype)), gpu.upload(quantize(random_tensor({s.batch, s.lk, hd}, 473), dtype))};
      }
      const Tensor got = run_path("wgmma3", gpu, in, s.heads, c.packed);
      const Tensor four = run_path("wgmma", gpu, in, s.heads, c.packed);
      const Tensor want = run_path("mma2", gpu, in, s.heads, c.packed);
      ASSERT_TRUE(gpu.synchronize().ok());
      ASSERT_EQ(got.shape(), want.shape());
      const double rel = relative_l2(got, want);
      const std::string name = shape_name(s) + (c.packed ? " packed" : "") + (c.rising ? " rising" : "");
      std::printf("  wgmma3 %-40s %s vs mma2: rel_l2 %.2e, vs 4 consumers: max_abs %.2e\n", name.c_str(),
                  dtype_name(dtype), rel, max_abs_diff(got, four));
      EXPECT_LE(rel, tolerance(dtype)) << name << " " << dtype_name(dtype);
      EXPECT_EQ(max_abs_diff(got, four), 0.0) << name << " " << dtype_name(dtype);
      if (dtype == DType::kF16 && !c.packed && s.lq * s.lk <= 2000000) {
        Backend& cpu = cpu_reference_backend();
        std::vector<Tensor> host;
        for (const Tensor& t : in) host.push_back(cpu.upload(gpu.download(t)));
        const Tensor ref = run_path("mma2", cpu, host, s.heads, false);
        const double rel_cpu = relative_l2(got, ref);
        std::printf("  wgmma3 %-40s vs cpu: rel_l2 %.2e\n", name.c_str(), rel_cpu);
        EXPECT_LE(rel_cpu, 1e-2) << name;
      }
    }
  }
}

}  // namespace
}  // namespace sd::testing
