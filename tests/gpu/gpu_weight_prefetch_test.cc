// L2 prefetch of upcoming weights in captured graphs (src/backend/cuda/weight_prefetch.h): a
// chain of linears and convolutions captured with the prefetch branch replays bitwise equal to
// the eager chain, forks prefetch kernels, and copes with a capture pass whose calls differ.
#include <gtest/gtest.h>

#include <cmath>
#include <string>

#include "backend/op_cases.h"
#include "gpu_test_util.h"

#if defined(SD_TEST_CUDA_INTERNALS)
#include "backend/cuda/cuda_backend_impl.h"
#include "backend/cuda/weight_prefetch.h"
#endif

namespace sd::testing {
namespace {

#if defined(SD_TEST_CUDA_INTERNALS)

struct Weights {
  Tensor x;      // [2, 8, 8, 640] NHWC
  Tensor w1;     // [640, 640] linear
  Tensor wg;     // [2560, 640] GEGLU: value and gate
  Tensor w2;     // [640, 1280] linear + residual
  Tensor wc;     // [640, 3, 3, 640] conv
  Tensor wc2;    // [640, 3, 3, 640] conv + residual
  Tensor b640;   // [640]
  Tensor b2560;  // [2560]
};

Weights make_weights(Backend& be, DType d) {
  const auto up = [&](Shape shape, uint32_t seed, float lo, float hi) {
    return be.upload(quantize(random_tensor(shape, seed, lo, hi), d), d);
  };
  Weights w;
  w.x = up({2, 8, 8, 640}, 1300, -1.f, 1.f);
  w.w1 = up({640, 640}, 1301, -0.05f, 0.05f);
  w.wg = up({2560, 640}, 1302, -0.05f, 0.05f);
  w.w2 = up({640, 1280}, 1303, -0.04f, 0.04f);
  w.wc = up({640, 3, 3, 640}, 1304, -0.02f, 0.02f);
  w.wc2 = up({640, 3, 3, 640}, 1305, -0.02f, 0.02f);
  w.b640 = up({640}, 1306, -0.2f, 0.2f);
  w.b2560 = up({2560}, 1307, -0.2f, 0.2f);
  return w;
}

// skip_first: leaves out the first linear (a capture pass that does not match its record).
Tensor run_chain(Backend& be, const Weights& w, bool skip_first) {
  const Tensor t = w.x.reshape({2, 64, 640});                                  // [B, H*W, C]
  const Tensor a = skip_first ? t : be.linear(t, w.w1, w.b640);                // [2, 64, 640]
  const Tensor g = be.linear_geglu(a, w.wg, w.b2560);                          // [2, 64, 1280]
  const Tensor r = be.linear_residual(g, w.w2, w.b640, a);                     // [2, 64, 640]
  const Tensor c = be.conv2d(r.reshape({2, 8, 8, 640}), w.wc, w.b640, 1, 1);  // [2, 8, 8, 640]
  return be.conv2d_fused(c, w.wc2, w.b640, 1, 1, Tensor(), c);                 // [2, 8, 8, 640]
}

class PrefetchRestorer {
 public:
  explicit PrefetchRestorer(cuda::CudaBackend& be) : be_(be) {}
  ~PrefetchRestorer() { be_.set_weight_prefetch(cuda::weight_prefetch_options()); }

 private:
  cuda::CudaBackend& be_;
};

TEST(GpuWeightPrefetch, ReplaysEqualEagerWithThePrefetchBranch) {
  SD_REQUIRE_GPU();
  Backend& be = gpu_backend(DType::kF16);
  auto& cuda_be = dynamic_cast<cuda::CudaBackend&>(be);
  PrefetchRestorer restore(cuda_be);
  const Weights w = make_weights(be, DType::kF16);
  cuda_be.set_weight_prefetch({});  // off: the reference
  const Tensor want = be.download(run_chain(be, w, false));
  ASSERT_TRUE(be.synchronize().ok());
  const Tensor want_f32 = to_f32_host(want);
  double norm = 0.0;
  for (int64_t i = 0; i < want_f32.numel(); ++i) norm += std::fabs(want_f32.f32()[i]);
  ASSERT_GT(norm / want_f32.numel(), 1e-2) << "the chain's result is (near) zero: the test would prove nothing";

  struct Case {
    const char* name;
    cuda::WeightPrefetchOptions opt;
  };
  cuda::WeightPrefetchOptions base;
  base.enabled = true;
  base.min_bytes = 0;
  cuda::WeightPrefetchOptions tight = base;  // every prefetch capped to 1 MB, one op ahead, one CTA
  tight.budget_bytes = size_t{1} << 20;
  tight.max_ahead = 1;
  tight.ctas = 1;
  cuda::WeightPrefetchOptions last = base;
  last.evict_last = true;
  for (const Case& c : {Case{"defaults, any size", base}, Case{"1 MB, one ahead", tight}, Case{"evict_last", last}}) {
    SCOPED_TRACE(c.name);
    cuda_be.set_weight_prefetch(c.opt);
    ASSERT_NE(cuda_be.weight_prefetcher(), nullptr) << "the prefetch needs sm_90";
    Tensor got;
    auto graph = be.capture([&] { got = run_chain(be, w, false); });
    EXPECT_EQ(cuda_be.weight_prefetcher()->recorded_ops(), 5u);
    EXPECT_GE(cuda_be.weight_prefetcher()->forks(), 3);  // the last op has nothing after it
    EXPECT_FALSE(cuda_be.weight_prefetcher()->lost());
    for (int i = 0; i < 3; ++i) {
      graph->replay();
      EXPECT_EQ(max_abs_diff(be.download(got), want), 0.0) << "replay " << i;
    }
  }

  // Rows above max_rows: nothing is prefetched, the graph is the plain one.
  cuda::WeightPrefetchOptions few_rows = base;
  few_rows.max_rows = 64;  // the chain's GEMMs have 128 rows
  cuda_be.set_weight_prefetch(few_rows);
  {
    Tensor got;
    auto graph = be.capture([&] { got = run_chain(be, w, false); });
    EXPECT_EQ(cuda_be.weight_prefetcher()->forks(), 0);
    graph->replay();
    EXPECT_EQ(max_abs_diff(be.download(got), want), 0.0);
  }

  // A capture pass that skips the recorded first op resynchronises on the second; one that
  // uses other weights stops prefetching. Both replay the right result.
  cuda_be.set_weight_prefetch(base);
  for (const bool other_weights : {false, true}) {
    SCOPED_TRACE(other_weights ? "other weights" : "first op skipped");
    int calls = 0;
    Weights w_other = w;
    if (other_weights) {
      w_other.w1 = be.upload(quantize(random_tensor({640, 640}, 1310, -0.05f, 0.05f), DType::kF16), DType::kF16);
    }
    Tensor got;
    auto graph = be.capture([&] {
      const bool recorded = calls++ == 0;
      got = other_weights ? run_chain(be, recorded ? w : w_other, false) : run_chain(be, w, !recorded);
    });
    ASSERT_EQ(calls, 2);
    EXPECT_EQ(cuda_be.weight_prefetcher()->lost(), other_weights);
    if (!other_weights) {
      EXPECT_GE(cuda_be.weight_prefetcher()->forks(), 2);
    }
    graph->replay();
    const Tensor eager = be.download(other_weights ? run_chain(be, w_other, false) : run_chain(be, w, true));
    EXPECT_EQ(max_abs_diff(be.download(got), eager), 0.0);
  }
}

#else

TEST(GpuWeightPrefetch, ReplaysEqualEagerWithThePrefetchBranch) {
  GTEST_SKIP() << "built without the CUDA backend's internals";
}

#endif

}  // namespace
}  // namespace sd::testing
