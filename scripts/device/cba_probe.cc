// cuDNN legacy conv + bias + residual probe (device measurement tool, not part of the engine):
// times cudnnConvolutionBiasActivationForward (y = conv(x) + z + bias, identity activation, z a
// separate tensor) against cudnnConvolutionForward alone for NHWC f16 3x3 convolutions, to see
// whether the fused legacy call runs at the plain convolution's speed on this GPU.
// Build: g++ -O2 -std=c++17 cba_probe.cc -I$CUDA/include -L... -lcudnn -lcudart
#include <cuda_runtime.h>
#include <cudnn.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <vector>

#define CK(x)                                                                                   \
  do {                                                                                          \
    cudnnStatus_t s_ = (x);                                                                     \
    if (s_ != CUDNN_STATUS_SUCCESS) {                                                           \
      std::printf("%s:%d %s: %s\n", __FILE__, __LINE__, #x, cudnnGetErrorString(s_));          \
      return;                                                                                   \
    }                                                                                           \
  } while (0)

namespace {

float time_ms(const std::vector<float>& t) {
  std::vector<float> s = t;
  std::sort(s.begin(), s.end());
  return s[s.size() / 2];
}

void probe(cudnnHandle_t h, int b, int hw, int c) {
  cudnnTensorDescriptor_t xd, yd, bd;
  cudnnFilterDescriptor_t wd;
  cudnnConvolutionDescriptor_t cd;
  cudnnActivationDescriptor_t ad;
  cudnnCreateTensorDescriptor(&xd), cudnnCreateTensorDescriptor(&yd), cudnnCreateTensorDescriptor(&bd);
  cudnnCreateFilterDescriptor(&wd), cudnnCreateConvolutionDescriptor(&cd), cudnnCreateActivationDescriptor(&ad);
  CK(cudnnSetTensor4dDescriptor(xd, CUDNN_TENSOR_NHWC, CUDNN_DATA_HALF, b, c, hw, hw));
  CK(cudnnSetTensor4dDescriptor(yd, CUDNN_TENSOR_NHWC, CUDNN_DATA_HALF, b, c, hw, hw));
  CK(cudnnSetTensor4dDescriptor(bd, CUDNN_TENSOR_NHWC, CUDNN_DATA_HALF, 1, c, 1, 1));
  CK(cudnnSetFilter4dDescriptor(wd, CUDNN_DATA_HALF, CUDNN_TENSOR_NHWC, c, c, 3, 3));
  CK(cudnnSetConvolution2dDescriptor(cd, 1, 1, 1, 1, 1, 1, CUDNN_CROSS_CORRELATION, CUDNN_DATA_FLOAT));
  CK(cudnnSetConvolutionMathType(cd, CUDNN_TENSOR_OP_MATH));
  CK(cudnnSetActivationDescriptor(ad, CUDNN_ACTIVATION_IDENTITY, CUDNN_NOT_PROPAGATE_NAN, 0.0));
  const size_t nx = size_t(b) * hw * hw * c, nw = size_t(c) * c * 9;
  void *x, *w, *y, *z, *bias, *ws;
  const size_t ws_bytes = size_t(512) << 20;
  cudaMalloc(&x, nx * 2), cudaMalloc(&w, nw * 2), cudaMalloc(&y, nx * 2), cudaMalloc(&z, nx * 2);
  cudaMalloc(&bias, c * 2), cudaMalloc(&ws, ws_bytes);
  cudaMemset(x, 0x31, nx * 2), cudaMemset(w, 0x11, nw * 2), cudaMemset(z, 0x31, nx * 2), cudaMemset(bias, 0x31, c * 2);
  cudaEvent_t e0, e1;
  cudaEventCreate(&e0), cudaEventCreate(&e1);
  const double flops = 2.0 * b * hw * hw * c * double(c) * 9;
  std::printf("\n== %dx%dx%dx%d -> %d (%.1f GFLOP)\n", b, hw, hw, c, c, flops / 1e9);
  const auto timed = [&](auto&& fn) {
    if (fn() != CUDNN_STATUS_SUCCESS) return -1.f;
    std::vector<float> t;
    for (int r = 0; r < 7; ++r) {
      cudaEventRecord(e0);
      for (int i = 0; i < 3; ++i) fn();
      cudaEventRecord(e1);
      cudaEventSynchronize(e1);
      float ms = 0;
      cudaEventElapsedTime(&ms, e0, e1);
      t.push_back(ms * 1000.f / 3);
    }
    return time_ms(t);
  };
  cudnnConvolutionFwdAlgoPerf_t perf[CUDNN_CONVOLUTION_FWD_ALGO_COUNT];
  int n = 0;
  CK(cudnnGetConvolutionForwardAlgorithm_v7(h, xd, wd, cd, yd, CUDNN_CONVOLUTION_FWD_ALGO_COUNT, &n, perf));
  const float one = 1.f, zero = 0.f;
  for (int i = 0; i < n; ++i) {
    if (perf[i].status != CUDNN_STATUS_SUCCESS) continue;
    const cudnnConvolutionFwdAlgo_t algo = perf[i].algo;
    const float plain = timed([&] {
      return cudnnConvolutionForward(h, &one, xd, x, wd, w, cd, algo, ws, ws_bytes, &zero, yd, y);
    });
    const float cba = timed([&] {
      return cudnnConvolutionBiasActivationForward(h, &one, xd, x, wd, w, cd, algo, ws, ws_bytes, &one, yd, z, bd,
                                                   bias, ad, yd, y);
    });
    std::printf("algo %d: conv %8.1f us (%5.0f TFLOP/s)   conv + z + bias %8.1f us%s\n", static_cast<int>(algo), plain,
                plain > 0 ? flops / plain / 1e6 : 0.0, cba, cba < 0 ? " (not supported)" : "");
  }
  cudaFree(x), cudaFree(w), cudaFree(y), cudaFree(z), cudaFree(bias), cudaFree(ws);
}

}  // namespace

int main() {
  cudnnHandle_t h;
  if (cudnnCreate(&h) != CUDNN_STATUS_SUCCESS) return 1;
  std::printf("cuDNN %zu\n", cudnnGetVersion());
  probe(h, 128, 64, 320);
  probe(h, 128, 32, 640);
  probe(h, 128, 16, 1280);
  probe(h, 2, 64, 320);
  cudnnDestroy(h);
  return 0;
}
