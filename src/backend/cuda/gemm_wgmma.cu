// Host side of the Hopper GEMM (gemm_wgmma.h): support checks, candidate configurations, tensor
// maps (tma.h) and the launches of gemm_wgmma_kernel.cuh (main kernel, then the split-K reduce).
// No host sync or allocation per launch, so it records into CUDA graphs.
#include "backend/cuda/gemm_wgmma.h"

#include <algorithm>
#include <atomic>
#include <mutex>

#include "backend/cuda/gemm_wgmma_kernel.cuh"
#include "backend/cuda/tma.h"

namespace sd::cuda {
namespace {

using gemm_wgmma::kBK;
using gemm_wgmma::kBM;

constexpr int kMaxDevices = 64;

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// True when the current device is sm_90 (looked up once per device).
bool device_is_sm90() {
  static std::mutex mu;
  static int cached[kMaxDevices];  // 0 unknown, 1 yes, 2 no
  int dev = 0;
  if (cudaGetDevice(&dev) != cudaSuccess || dev < 0 || dev >= kMaxDevices) {
    (void)cudaGetLastError();
    return false;
  }
  std::lock_guard<std::mutex> lock(mu);
  if (!cached[dev]) {
    int major = 0, minor = 0;
    const bool ok = cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev) == cudaSuccess &&
                    cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, dev) == cudaSuccess;
    (void)cudaGetLastError();
    cached[dev] = ok && major == 9 && minor == 0 ? 1 : 2;
  }
  return cached[dev] == 1;
}

bool config_valid(const WgmmaGemmShape& s, const WgmmaGemmConfig& c) {
  if (c.bm != kBM || (c.bn != 64 && c.bn != 128 && c.bn != 256)) return false;
  return c.splits >= 1 && c.splits <= ceil_div(s.k, kBK);
}

template <typename T, int BN, bool GEGLU, bool SPLIT>
bool launch_typed(const WgmmaGemmOperands& o, DType dtype, const WgmmaGemmShape& s, const WgmmaGemmConfig& c,
                  cudaStream_t stream) {
  const uint64_t w_rows = GEGLU ? 2 * s.n : s.n;
  CUtensorMap tx, tw;
  if (!encode_tma_2d(o.x, dtype, s.m, s.k, s.k, kBM, kBK, TmaSwizzle::k128B, &tx).ok()) return false;
  if (!encode_tma_2d(o.w, dtype, w_rows, s.k, s.k, GEGLU ? BN / 2 : BN, kBK, TmaSwizzle::k128B, &tw).ok()) return false;
  auto* kernel = gemm_wgmma::gemm_kernel<T, BN, GEGLU, SPLIT>;
  constexpr int kSmem = gemm_wgmma::smem_bytes_for(BN);
  static std::atomic<int> attr_state[kMaxDevices];  // per device: 0 unset, 1 set, 2 failed
  int dev = 0;
  if (cudaGetDevice(&dev) != cudaSuccess || dev < 0 || dev >= kMaxDevices) return false;
  if (attr_state[dev].load() == 0) {
    const bool ok = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, kSmem) == cudaSuccess;
    (void)cudaGetLastError();
    attr_state[dev].store(ok ? 1 : 2);
  }
  if (attr_state[dev].load() != 1) return false;
  gemm_wgmma::Params p{};
  p.m = static_cast<int>(s.m);
  p.n = static_cast<int>(s.n);
  p.k = static_cast<int>(s.k);
  p.kblocks = static_cast<int>(ceil_div(s.k, kBK));
  p.kblocks_per_split = static_cast<int>(ceil_div(p.kblocks, c.splits));
  const int splits = static_cast<int>(ceil_div(p.kblocks, p.kblocks_per_split));  // no empty slice
  p.m_tiles = static_cast<int>(ceil_div(s.m, kBM));
  p.n_tiles = static_cast<int>(ceil_div(s.n, GEGLU ? BN / 2 : BN));
  p.y = o.y;
  p.bias = o.bias;
  p.residual = GEGLU ? nullptr : o.residual;
  p.partial = static_cast<float*>(o.workspace);
  const dim3 grid(static_cast<unsigned>(int64_t{p.m_tiles} * p.n_tiles), static_cast<unsigned>(splits));
  kernel<<<grid, gemm_wgmma::kThreads, kSmem, stream>>>(tx, tw, p);
  if (SPLIT) {
    const int64_t quads = s.m * s.n / 4;
    const unsigned blocks = static_cast<unsigned>(std::min<int64_t>(ceil_div(quads, 256), 132 * 16));
    gemm_wgmma::splitk_reduce_kernel<T, GEGLU><<<blocks, 256, 0, stream>>>(p, splits);
  }
  return cudaGetLastError() == cudaSuccess;
}

template <typename T, bool GEGLU, bool SPLIT>
bool launch_bn(const WgmmaGemmOperands& o, DType dtype, const WgmmaGemmShape& s, const WgmmaGemmConfig& c,
               cudaStream_t stream) {
  switch (c.bn) {
    case 64: return launch_typed<T, 64, GEGLU, SPLIT>(o, dtype, s, c, stream);
    case 128: return launch_typed<T, 128, GEGLU, SPLIT>(o, dtype, s, c, stream);
    case 256: return launch_typed<T, 256, GEGLU, SPLIT>(o, dtype, s, c, stream);
    default: return false;
  }
}

template <typename T>
bool launch_dtype(const WgmmaGemmOperands& o, DType dtype, const WgmmaGemmShape& s, const WgmmaGemmConfig& c,
                  cudaStream_t stream) {
  const bool split = c.splits > 1;
  if (s.geglu) return split ? launch_bn<T, true, true>(o, dtype, s, c, stream) : launch_bn<T, true, false>(o, dtype, s, c, stream);
  return split ? launch_bn<T, false, true>(o, dtype, s, c, stream) : launch_bn<T, false, false>(o, dtype, s, c, stream);
}

}  // namespace

std::string WgmmaGemmConfig::describe() const {
  return "wgmma " + std::to_string(bm) + "x" + std::to_string(bn) + " s" + std::to_string(splits);
}

bool wgmma_gemm_supported(const WgmmaGemmShape& s, DType dtype) {
  if (dtype != DType::kF16 && dtype != DType::kBF16) return false;
  if (s.m < 1 || s.n < 8 || s.k < 8 || s.n % 8 != 0 || s.k % 8 != 0) return false;
  const int64_t limit = int64_t{1} << 31;
  const int64_t w_rows = s.geglu ? 2 * s.n : s.n;
  return s.m < limit && w_rows < limit && s.k < limit && s.m * w_rows < limit;
}

std::vector<WgmmaGemmConfig> wgmma_gemm_candidates(const WgmmaGemmShape& s, int sms) {
  std::vector<WgmmaGemmConfig> out;
  if (sms < 1) sms = 132;
  const int64_t kblocks = ceil_div(s.k, kBK), m_tiles = ceil_div(s.m, kBM);
  const auto add = [&](int bn, int splits) {
    splits = static_cast<int>(std::clamp<int64_t>(splits, 1, kblocks));
    splits = static_cast<int>(ceil_div(kblocks, ceil_div(kblocks, splits)));  // no empty slice
    for (const WgmmaGemmConfig& c : out)
      if (c.bn == bn && c.splits == splits) return;
    out.push_back({kBM, bn, splits});
  };
  const auto tiles = [&](int bn) { return m_tiles * ceil_div(s.n, s.geglu ? bn / 2 : bn); };
  if (tiles(256) >= 2 * sms) {  // plenty of tiles: the widest first
    add(256, 1);
    add(128, 1);
    return out;
  }
  // Few tiles: cut K so that about one wave of CTAs streams the weights (>= 2 K blocks a slice).
  for (int bn : {128, 64, 256}) {
    const int64_t t = tiles(bn);
    if (t >= sms) {
      add(bn, 1);
      continue;
    }
    const int64_t want = std::min<int64_t>(ceil_div(sms, t), std::max<int64_t>(1, kblocks / 2));
    add(bn, static_cast<int>(want));
    if (want > 2) add(bn, static_cast<int>(want / 2));
  }
  add(128, 1);
  return out;
}

size_t wgmma_gemm_workspace(const WgmmaGemmShape& s, const WgmmaGemmConfig& c) {
  if (c.splits <= 1) return 0;
  const int64_t kblocks = ceil_div(s.k, kBK);
  const int64_t splits = ceil_div(kblocks, ceil_div(kblocks, c.splits));
  return static_cast<size_t>(splits * s.m * (s.geglu ? 2 * s.n : s.n)) * sizeof(float);
}

bool launch_wgmma_gemm(const WgmmaGemmOperands& o, DType dtype, const WgmmaGemmShape& s, const WgmmaGemmConfig& c,
                       cudaStream_t stream) {
  if (!wgmma_gemm_supported(s, dtype) || !config_valid(s, c)) return false;
  if (!o.x || !o.w || !o.y || (c.splits > 1 && !o.workspace)) return false;
  if (!device_is_sm90() || !tma_available()) return false;
  if (dtype == DType::kF16) return launch_dtype<__half>(o, dtype, s, c, stream);
  return launch_dtype<__nv_bfloat16>(o, dtype, s, c, stream);
}

}  // namespace sd::cuda
