// Host side of the Hopper GEMM (gemm_wgmma.h): support checks, candidate configurations, tensor
// maps (tma.h) and the launches of gemm_wgmma_kernel.cuh (main kernel, then the split-K reduce).
// No host sync or allocation per launch, so it records into CUDA graphs.
#include "backend/cuda/gemm_wgmma.h"

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <mutex>

#include "backend/cuda/gemm_wgmma_kernel.cuh"
#include "backend/cuda/tma.h"

namespace sd::cuda {
namespace {

using gemm_wgmma::kBK;

constexpr int kMaxDevices = 64;

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// f32 partials of the K slices, [splits, M, N (2N with GEGLU)], rounded up to 16 bytes.
size_t partials_bytes(const WgmmaGemmShape& s, int64_t splits) {
  return static_cast<size_t>((splits * s.m * (s.geglu ? 2 * s.n : s.n) * 4 + 15) / 16 * 16);
}

bool config_valid(const WgmmaGemmShape& s, const WgmmaGemmConfig& c) {
  const bool cooperative = c.bm == 128 && (c.bn == 64 || c.bn == 128 || c.bn == 160 || c.bn == 192 || c.bn == 256);
  const bool ping_pong = c.bm == 64 && (c.bn == 128 || c.bn == 160 || c.bn == 256);
  if (!cooperative && !ping_pong) return false;
  if (c.vec_epilogue && (c.splits != 1 || ((s.geglu ? c.bn / 2 : c.bn) / 8) % 4 != 0)) return false;
  if (c.tma_store && c.vec_epilogue) return false;
  if (c.overlap && (!c.tma_store || c.splits != 1 || c.bm != 128 || c.bn > 128 || (s.geglu && c.bn != 128))) {
    return false;
  }
  if (c.tma_store && c.splits > 1 && c.bn == 256) return false;  // the in-kernel sum would spill (168 registers)
  return c.splits >= 1 && c.splits <= ceil_div(s.k, kBK);
}

template <typename T, int BM, int BN, bool GEGLU, bool SPLIT, int EPI>
bool launch_typed(const WgmmaGemmOperands& o, DType dtype, const WgmmaGemmShape& s, const WgmmaGemmConfig& c,
                  cudaStream_t stream, int sms) {
  constexpr int kOutBN = GEGLU ? BN / 2 : BN;
  if constexpr ((EPI == gemm_wgmma::kEpiVec && (kOutBN / 8) % 4 != 0) ||
                (EPI == gemm_wgmma::kEpiTma && SPLIT && BN == 256) ||
                (EPI == gemm_wgmma::kEpiTmaOverlap && (BM != 128 || BN > 128 || (GEGLU && BN != 128) || SPLIT))) {
    return false;  // config_valid rejects it; no such kernel is built
  } else {
  const uint64_t w_rows = GEGLU ? 2 * s.n : s.n;
  CUtensorMap tx, tw, ty{}, tr{}, tx2;
  const int64_t k1 = s.k1 > 0 ? s.k1 : s.k;  // x's columns; the rest (two sources) from x2
  if (!encode_tma_2d(o.x, dtype, s.m, k1, k1, BM, kBK, TmaSwizzle::k128B, &tx).ok()) return false;
  if (k1 < s.k) {
    if (!encode_tma_2d(o.x2, dtype, s.m, s.k - k1, s.k - k1, BM, kBK, TmaSwizzle::k128B, &tx2).ok()) return false;
  } else {
    tx2 = tx;  // unused
  }
  if (!encode_tma_2d(o.w, dtype, w_rows, s.k, s.k, GEGLU ? BN / 2 : BN, kBK, TmaSwizzle::k128B, &tw).ok()) return false;
  constexpr bool kTma = EPI == gemm_wgmma::kEpiTma || EPI == gemm_wgmma::kEpiTmaOverlap;
  if constexpr (kTma) {  // y and residual [M, N] in boxes of 64 rows, swizzled at the box width
    constexpr int kBoxCols = gemm_wgmma::tma_box_cols(kOutBN);
    constexpr TmaSwizzle kSwz = kBoxCols == 64 ? TmaSwizzle::k128B : kBoxCols == 32 ? TmaSwizzle::k64B : TmaSwizzle::k32B;
    if (!encode_tma_2d(o.y, dtype, s.m, s.n, s.n, 64, kBoxCols, kSwz, &ty).ok()) return false;
    if (!GEGLU && o.residual && !encode_tma_2d(o.residual, dtype, s.m, s.n, s.n, 64, kBoxCols, kSwz, &tr).ok())
      return false;
  }
  auto* kernel = gemm_wgmma::gemm_kernel<T, BM, BN, GEGLU, SPLIT, EPI>;
  constexpr int kSmem = kTma ? gemm_wgmma::smem_bytes_for_tma(BM, BN, kOutBN) : gemm_wgmma::smem_bytes_for(BM, BN);
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
  p.k1 = static_cast<int>(k1);
  p.kblocks = static_cast<int>(ceil_div(s.k, kBK));
  p.kblocks_per_split = static_cast<int>(ceil_div(p.kblocks, c.splits));
  const int splits = static_cast<int>(ceil_div(p.kblocks, p.kblocks_per_split));  // no empty slice
  p.m_tiles = static_cast<int>(ceil_div(s.m, BM));
  p.n_tiles = static_cast<int>(ceil_div(s.n, GEGLU ? BN / 2 : BN));
  p.y = o.y;
  p.bias = o.bias;
  p.residual = GEGLU ? nullptr : o.residual;
  p.partial = static_cast<float*>(o.workspace);
  const int64_t units = int64_t{p.m_tiles} * p.n_tiles * splits;
  if (units >= (int64_t{1} << 31)) return false;
  if (SPLIT && kTma) {  // in-kernel reduction: the tile counters follow the partials, zeroed here
    const size_t partial_bytes = partials_bytes(s, splits);
    p.tile_counters = reinterpret_cast<int*>(static_cast<char*>(o.workspace) + partial_bytes);
    const size_t counter_bytes = static_cast<size_t>(p.m_tiles) * p.n_tiles * sizeof(int);
    if (cudaMemsetAsync(p.tile_counters, 0, counter_bytes, stream) != cudaSuccess) return false;
  }
  const unsigned grid = static_cast<unsigned>(std::min<int64_t>(units, sms));  // persistent: one CTA per SM
  if (try_launch_kernel(kernel, dim3(grid), dim3(gemm_wgmma::kThreads), kSmem, stream, tx, tw, ty, tr, tx2, p,
                        static_cast<int>(units), splits) != cudaSuccess) {
    (void)cudaGetLastError();
    return false;
  }
  if (SPLIT && !kTma) {
    const int64_t quads = s.m * s.n / 4;
    const unsigned blocks = static_cast<unsigned>(std::min<int64_t>(ceil_div(quads, 256), int64_t{sms} * 16));
    if (try_launch_kernel(gemm_wgmma::splitk_reduce_kernel<T, GEGLU>, dim3(blocks), dim3(256), 0, stream, p,
                          splits) != cudaSuccess) {
      (void)cudaGetLastError();
      return false;
    }
  }
  return cudaGetLastError() == cudaSuccess;
  }
}

template <typename T, bool GEGLU, bool SPLIT, int EPI>
bool launch_bn(const WgmmaGemmOperands& o, DType dtype, const WgmmaGemmShape& s, const WgmmaGemmConfig& c,
               cudaStream_t stream, int sms) {
  if (c.bm == 64) {
    switch (c.bn) {
      case 128: return launch_typed<T, 64, 128, GEGLU, SPLIT, EPI>(o, dtype, s, c, stream, sms);
      case 160: return launch_typed<T, 64, 160, GEGLU, SPLIT, EPI>(o, dtype, s, c, stream, sms);
      case 256: return launch_typed<T, 64, 256, GEGLU, SPLIT, EPI>(o, dtype, s, c, stream, sms);
      default: return false;
    }
  }
  switch (c.bn) {
    case 64: return launch_typed<T, 128, 64, GEGLU, SPLIT, EPI>(o, dtype, s, c, stream, sms);
    case 128: return launch_typed<T, 128, 128, GEGLU, SPLIT, EPI>(o, dtype, s, c, stream, sms);
    case 160: return launch_typed<T, 128, 160, GEGLU, SPLIT, EPI>(o, dtype, s, c, stream, sms);
    case 192: return launch_typed<T, 128, 192, GEGLU, SPLIT, EPI>(o, dtype, s, c, stream, sms);
    case 256: return launch_typed<T, 128, 256, GEGLU, SPLIT, EPI>(o, dtype, s, c, stream, sms);
    default: return false;
  }
}

template <typename T>
bool launch_dtype(const WgmmaGemmOperands& o, DType dtype, const WgmmaGemmShape& s, const WgmmaGemmConfig& c,
                  cudaStream_t stream, int sms) {
  using namespace gemm_wgmma;
  if (s.geglu) {
    if (c.splits > 1)
      return c.tma_store ? launch_bn<T, true, true, kEpiTma>(o, dtype, s, c, stream, sms)
                         : launch_bn<T, true, true, kEpiPairs>(o, dtype, s, c, stream, sms);
    if (c.overlap) return launch_bn<T, true, false, kEpiTmaOverlap>(o, dtype, s, c, stream, sms);
    if (c.tma_store) return launch_bn<T, true, false, kEpiTma>(o, dtype, s, c, stream, sms);
    return c.vec_epilogue ? launch_bn<T, true, false, kEpiVec>(o, dtype, s, c, stream, sms)
                          : launch_bn<T, true, false, kEpiPairs>(o, dtype, s, c, stream, sms);
  }
  if (c.splits > 1)
    return c.tma_store ? launch_bn<T, false, true, kEpiTma>(o, dtype, s, c, stream, sms)
                       : launch_bn<T, false, true, kEpiPairs>(o, dtype, s, c, stream, sms);
  if (c.overlap) return launch_bn<T, false, false, kEpiTmaOverlap>(o, dtype, s, c, stream, sms);
  if (c.tma_store) return launch_bn<T, false, false, kEpiTma>(o, dtype, s, c, stream, sms);
  return c.vec_epilogue ? launch_bn<T, false, false, kEpiVec>(o, dtype, s, c, stream, sms)
                        : launch_bn<T, false, false, kEpiPairs>(o, dtype, s, c, stream, sms);
}

}  // namespace

std::string WgmmaGemmConfig::describe() const {
  return "wgmma " + std::to_string(bm) + "x" + std::to_string(bn) + " s" + std::to_string(splits) +
         (vec_epilogue ? " v" : "") + (tma_store ? " t" : "") + (overlap ? " o" : "");
}

bool wgmma_gemm_supported(const WgmmaGemmShape& s, DType dtype) {
  if (dtype != DType::kF16 && dtype != DType::kBF16) return false;
  if (s.m < 1 || s.n < 8 || s.k < 8 || s.n % 8 != 0 || s.k % 8 != 0) return false;
  if (s.k1 != 0 && (s.k1 < 0 || s.k1 >= s.k || s.k1 % kBK != 0)) return false;
  const int64_t limit = int64_t{1} << 31;
  const int64_t w_rows = s.geglu ? 2 * s.n : s.n;
  return s.m < limit && w_rows < limit && s.k < limit && s.m * w_rows < limit;
}

namespace {
std::vector<WgmmaGemmConfig> base_candidates(const WgmmaGemmShape& s, int sms);
bool overlap_listed() {
  const char* ov = std::getenv("SDSERVE_CUDA_WGMMA_GEMM_OVERLAP");
  return ov && ov[0] == '1';
}
}  // namespace

std::vector<WgmmaGemmConfig> wgmma_gemm_candidates(const WgmmaGemmShape& s, int sms) {
  std::vector<WgmmaGemmConfig> out = base_candidates(s, sms);
  const char* vec = std::getenv("SDSERVE_CUDA_WGMMA_GEMM_VEC");
  if (vec && vec[0] == '1') {  // wide-store twins of the unsplit candidates, first
    std::vector<WgmmaGemmConfig> twins;
    for (WgmmaGemmConfig c : out) {
      c.vec_epilogue = true;
      if (config_valid(s, c)) twins.push_back(c);
    }
    out.insert(out.begin(), twins.begin(), twins.end());
  }
  // Unsplit: the TMA-store epilogue by default, faster than the 4-byte stores at every shape
  // measured and than the wide stores at all but two (within 1%; perf-notes, H15).
  // SDSERVE_CUDA_WGMMA_GEMM_TMA=0: the 4-byte stores; =2: also the in-kernel split-K reduction for the
  // split ones (correct, but 1.3-3x slower than the reduce kernel on the H100: not by default).
  const char* tma = std::getenv("SDSERVE_CUDA_WGMMA_GEMM_TMA");
  const int tma_mode = tma ? std::atoi(tma) : 1;
  for (WgmmaGemmConfig& c : out) {
    WgmmaGemmConfig t = c;
    t.tma_store = true;
    if (tma_mode >= (c.splits > 1 ? 2 : 1) && !c.vec_epilogue && config_valid(s, t)) c = t;
  }
  // SDSERVE_CUDA_WGMMA_GEMM_OVERLAP=1: the overlapped twin of each unsplit cooperative TMA-store
  // candidate of bn <= 128, after it (correct on the H100, speed not yet measured: opt-in).
  if (overlap_listed()) {
    for (size_t i = 0; i < out.size(); ++i) {
      WgmmaGemmConfig o = out[i];
      o.overlap = true;
      if (!out[i].overlap && config_valid(s, o)) out.insert(out.begin() + static_cast<std::ptrdiff_t>(++i), o);
    }
  }
  return out;
}

namespace {
std::vector<WgmmaGemmConfig> base_candidates(const WgmmaGemmShape& s, int sms) {
  std::vector<WgmmaGemmConfig> out;
  if (sms < 1) sms = 132;
  const int64_t kblocks = ceil_div(s.k, kBK);
  const auto add = [&](int bm, int bn, int64_t splits) {
    splits = std::clamp<int64_t>(splits, 1, kblocks);
    splits = ceil_div(kblocks, ceil_div(kblocks, splits));  // no empty slice
    for (const WgmmaGemmConfig& c : out)
      if (c.bm == bm && c.bn == bn && c.splits == splits) return;
    out.push_back({bm, bn, static_cast<int>(splits)});
  };
  const auto out_cols = [&](int bn) { return s.geglu ? bn / 2 : bn; };
  const auto tiles = [&](int bm, int bn) { return ceil_div(s.m, bm) * ceil_div(s.n, out_cols(bn)); };
  // Tile widths by the share of computed columns that are real (N tails waste the rest), the
  // widest first among equals; widths wasting more than a quarter are left out (but 128).
  std::vector<int> widths = {256, 192, 160, 128, 64};
  const auto waste = [&](int bn) {
    return static_cast<double>(ceil_div(s.n, out_cols(bn)) * out_cols(bn)) / static_cast<double>(s.n);
  };
  std::stable_sort(widths.begin(), widths.end(), [&](int a, int b) { return waste(a) < waste(b) - 1e-9; });
  widths.erase(std::remove_if(widths.begin(), widths.end(), [&](int bn) { return waste(bn) > 1.25 && bn != 128; }),
               widths.end());
  const auto ping_pong_width = [](int bn) { return bn == 128 || bn == 160 || bn == 256; };
  if (tiles(128, 128) >= 2 * sms) {  // plenty of tiles: the persistent CTAs stream them, no split
    int cooperative = 0, ping_pong = 0;
    for (int bn : widths) {
      if (bn != 64 && cooperative < 3) add(128, bn, 1), ++cooperative;
      if (ping_pong_width(bn) && ping_pong < 2) add(64, bn, 1), ++ping_pong;
    }
    add(128, 128, 1);
    if (overlap_listed() && s.n % 64 == 0 && !s.geglu) add(128, 64, 1);  // the overlapped epilogue's other width
    return out;
  }
  // Few tiles: cut K so that about half a wave of CTAs streams the weights (H100: the full-wave
  // split was slower at every small-M shape measured, 1.2-1.5x: its partials cost more than the
  // extra CTAs gain). No 256-wide splits (slowest of all with the reduce kernel, and the in-kernel
  // sum does not fit its registers).
  const auto want_splits = [&](int64_t t) {
    return std::min<int64_t>(ceil_div(sms, t), std::max<int64_t>(1, kblocks / 2));
  };
  for (int bn : widths) {
    const int64_t t = tiles(128, bn);
    if (t >= sms) {
      add(128, bn, 1);
      continue;
    }
    if (4 * t >= 3 * sms) add(128, bn, 1);  // most of a wave already: the unsplit tile too
    if (bn == 256) continue;
    const int64_t want = want_splits(t);
    add(128, bn, want > 2 ? want / 2 : want);
    if (out.size() >= 6) break;
  }
  for (int bn : widths) {  // ping-pong, for M not a multiple of 128 or a tile count just over a wave
    if (!ping_pong_width(bn)) continue;
    const int64_t t = tiles(64, bn);
    if (t < sms && bn == 256) continue;
    const int64_t want = want_splits(t);
    add(64, bn, t >= sms ? 1 : want > 2 ? want / 2 : want);
    break;
  }
  add(128, 128, 1);
  return out;
}
}  // namespace

size_t wgmma_gemm_workspace(const WgmmaGemmShape& s, const WgmmaGemmConfig& c) {
  if (c.splits <= 1) return 0;
  const int64_t kblocks = ceil_div(s.k, kBK);
  const int64_t splits = ceil_div(kblocks, ceil_div(kblocks, c.splits));
  size_t bytes = partials_bytes(s, splits);
  if (c.tma_store) {  // + the in-kernel reduction's tile counters
    const int out_bn = s.geglu ? c.bn / 2 : c.bn;
    bytes += static_cast<size_t>(ceil_div(s.m, c.bm) * ceil_div(s.n, out_bn)) * sizeof(int);
  }
  return bytes;
}

bool launch_wgmma_gemm(const WgmmaGemmOperands& o, DType dtype, const WgmmaGemmShape& s, const WgmmaGemmConfig& c,
                       cudaStream_t stream) {
  if (!wgmma_gemm_supported(s, dtype) || !config_valid(s, c)) return false;
  if (!o.x || !o.w || !o.y || (c.splits > 1 && !o.workspace) || (s.k1 > 0 && !o.x2)) return false;
  const int sms = sm90_multiprocessors();
  if (sms == 0 || !tma_available()) return false;
  if (dtype == DType::kF16) return launch_dtype<__half>(o, dtype, s, c, stream, sms);
  return launch_dtype<__nv_bfloat16>(o, dtype, s, c, stream, sms);
}

}  // namespace sd::cuda
