// Cross-attention over a short text context (<= 80 keys) at head dim 40 with 8 heads (SD 1.x's
// 64x64 level): a tile is 64 query rows with all their heads, so Q and O move as whole 640-byte
// rows by TMA; each warp keeps one head's K / V in registers and writes O over Q in place.
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <type_traits>

#include "backend/cuda/attention.h"
#include "backend/cuda/cuda_backend.h"
#include "backend/cuda/cuda_check.h"
#include "backend/cuda/cuda_types.cuh"
#include "backend/cuda/mma_sync.cuh"
#include "backend/cuda/pdl.cuh"
#include "backend/cuda/tma.h"
#include "backend/cuda/wgmma_sm90.cuh"

namespace sd::cuda {

namespace {

#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
#define SD_ROWS_COMPILED 1
#else
#define SD_ROWS_COMPILED 0
#endif

constexpr int kHeads = 8;    // one consumer warp per head
constexpr int kD = 40;       // head dim: two k16 steps and one k8 step
constexpr int kMaxRows = 64; // query rows per tile: 16, 32 or 64 (blocks of 16 per warp)
constexpr int kKeys = 80;    // keys held (10 n-tiles of 8; lk <= 80)
constexpr int kMaxStages = 16;
// H100 (session 15, gpu_ops_bench attn_path/rows, µs at 2 / 32 / 64 rows of l4096 lk77): plain
// tiles of 16 / 32 / 64 rows 15.4 / 99.5 / 177, 14.6 / 93.1 / 162, 15.2 / 93.0 / 169; swizzled
// 13.9 / 96.9 / 172, 13.3 / 91.0 / 158, 13.3 / 87.7 / 152 (cuDNN 14.0 / 138 / 268, short 11.3 / 113 / 287).
constexpr int kDefaultSwizzle = 1, kDefaultRows = 64;
constexpr int kThreads = 32 * kHeads + 128;  // + the TMA warpgroup (one thread works)
// Registers after setmaxnreg: a sub-partition holds one TMA warp and two head warps (40 + 2 x 232
// of its 512 per lane); K / V fragments alone are 100 per thread.
constexpr int kTmaRegs = 40, kHeadRegs = 232;
constexpr uint32_t kRowBytes = kD * 2;                 // one head of one row: 80 bytes
constexpr uint32_t kRingBytes = 4 * kMaxRows * 640;    // Q / O tiles: 4 of 64 rows, 8 of 32, 16 of 16
constexpr uint32_t kVBytes = kKeys * kRowBytes;        // one head's V staging, [80 keys][40]
constexpr uint32_t kVOffset = kRingBytes;
constexpr uint32_t kBarOffset = kVOffset + kHeads * kVBytes;
constexpr uint32_t kSmemBytes = kBarOffset + 2 * kMaxStages * 8 + 1024;  // full[], done[]; 1 KB alignment slack

// Byte offset in a tile of `rows` rows of the 16-byte unit u (of 40: columns 8u..8u+7) of row r.
// Plain: [head][row][40] (80-byte rows: ldmatrix phases of 8 rows hit distinct bank groups).
// Swizzled: [5 chunks of 64 columns][row][128 bytes], unit u % 8 of a row at (u % 8) ^ (r % 8) (TMA's
// 128-byte swizzle: whole 128-byte requests, conflict-free phases).
template <bool kSwizzle>
__device__ __forceinline__ uint32_t unit_offset(int rows, int r, int u) {
  if constexpr (kSwizzle) {
    return uint32_t(u / 8) * rows * 128 + r * 128 + (((u % 8) ^ (r % 8)) * 16);
  } else {
    return uint32_t(u / 5) * rows * kRowBytes + r * kRowBytes + (u % 5) * 16;
  }
}

// One head's K as the B fragments of S = Q K^T (n-tile j = keys 8j..8j+7: k16 steps 0 and 1 as
// two words each, the k8 step as one) and V as those of O = P V (k16 step kc over keys, n-tile n
// over d), for batch row b; keys >= lk are zeros. V passes through this warp's staging rows.
template <typename T>
__device__ __forceinline__ void load_head_kv(uint32_t (&kf)[10][5], uint32_t (&vf)[5][5][2], const T* __restrict__ k,
                                             const T* __restrict__ v, int b, int h, int lk, int64_t kv_stride,
                                             uint32_t vstage, int lane) {
  const int g = lane / 4, t = lane % 4;
  __syncwarp();  // the previous fragments' ldmatrix reads of the staging rows are done
  for (int idx = lane; idx < kKeys * (kD / 8); idx += 32) {
    const int key = idx / (kD / 8), c = idx % (kD / 8);
    const bool ok = key < lk;
    const T* src = v + (int64_t{b} * lk + (ok ? key : 0)) * kv_stride + h * kD + c * 8;
    sm80::cp_async16(vstage + key * kRowBytes + c * 16, src, ok);
  }
  sm80::cp_async_commit();
#pragma unroll
  for (int j = 0; j < 10; ++j) {
    const int key = 8 * j + g;
    const T* row = k + (int64_t{b} * lk + (key < lk ? key : 0)) * kv_stride + h * kD + 2 * t;
#pragma unroll
    for (int c = 0; c < 5; ++c) kf[j][c] = key < lk ? __ldg(reinterpret_cast<const unsigned int*>(row + 8 * c)) : 0u;
  }
  sm80::cp_async_wait_all();
  __syncwarp();
  // ldmatrix.trans of (keys 16kc + 0..7 | 8..15) x (d 8n..8n+7) gives b0 | b1 of n-tile n.
  const int key_in = (lane % 8) + ((lane / 8) % 2) * 8;
#pragma unroll
  for (int kc = 0; kc < 5; ++kc) {
    const uint32_t row = vstage + (16 * kc + key_in) * kRowBytes;
#pragma unroll
    for (int n = 0; n < 4; n += 2) {
      uint32_t r[4];
      sm80::ldsm_x4_trans(r, row + (8 * n + (lane / 16) * 8) * 2);
      vf[kc][n][0] = r[0], vf[kc][n][1] = r[1], vf[kc][n + 1][0] = r[2], vf[kc][n + 1][1] = r[3];
    }
    uint32_t r2[2];
    sm80::ldsm_x2_trans(r2, row + 32 * 2);
    vf[kc][4][0] = r2[0], vf[kc][4][1] = r2[1];
  }
}

// Grid: one CTA per multiprocessor (at most one per tile); CTA c takes the contiguous tiles
// [c T / G, (c + 1) T / G) of the T = batch x ceil(lq / rows) tiles (row-major over (b, tile)),
// through a ring of `stages` tiles. Warpgroup 0: one thread loads Q tiles and stores O tiles by
// TMA; warps 4-11: head w - 4 of every tile. qmap / omap: rows_map views of q and o.
template <typename T, bool kSwizzle>
__global__ void __launch_bounds__(kThreads, 1)
    attention_rows_kernel(const __grid_constant__ CUtensorMap qmap, const __grid_constant__ CUtensorMap omap,
                          const T* __restrict__ k, const T* __restrict__ v, int lk, int64_t kv_stride, int rows,
                          int stages, int tiles_per_row, int total_tiles, float scale_log2) {
  pdl_wait();
  pdl_trigger();
#if SD_ROWS_COMPILED
  extern __shared__ __align__(128) unsigned char smem[];
  const uint32_t base = (sm80::smem_addr(smem) + 1023u) & ~1023u;  // the swizzle needs 1 KB alignment
  const uint32_t full = base + kBarOffset, done = full + kMaxStages * 8;
  const uint32_t stage_bytes = uint32_t(rows) * 640;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int first = static_cast<int>(int64_t{blockIdx.x} * total_tiles / gridDim.x);
  const int n = static_cast<int>(int64_t{blockIdx.x + 1} * total_tiles / gridDim.x) - first;
  if (threadIdx.x == 0) {
    for (int s = 0; s < stages; ++s) {
      sm90::mbarrier_init(full + 8 * s, 1);
      sm90::mbarrier_init(done + 8 * s, 32 * kHeads);
    }
    sm90::mbarrier_init_fence();
  }
  __syncthreads();

  if (warp < 4) {  // TMA: loads run up to stages - 2 tiles ahead of the store
    sm90::setmaxnreg_dec<kTmaRegs>();
    if (threadIdx.x != 0) return;
    sm90::tma_prefetch_descriptor(&qmap);
    sm90::tma_prefetch_descriptor(&omap);
    const auto load = [&](int i) {
      const int tile = first + i, s = i % stages;
      sm90::mbarrier_arrive_expect_tx(full + 8 * s, stage_bytes);
      sm90::tma_load_4d(base + s * stage_bytes, &qmap, full + 8 * s, 0, (tile % tiles_per_row) * rows, 0,
                        tile / tiles_per_row);
    };
    for (int i = 0; i < min(n, stages); ++i) load(i);
    for (int i = 0; i < n; ++i) {
      const int tile = first + i, s = i % stages;
      sm90::mbarrier_wait(done + 8 * s, (i / stages) & 1);
      sm90::tma_store_4d(&omap, base + s * stage_bytes, 0, (tile % tiles_per_row) * rows, 0, tile / tiles_per_row);
      sm90::bulk_commit_group();
      // Tile i - 1's stage takes tile i - 1 + stages once its store has read it.
      if (i >= 1 && i - 1 + stages < n) {
        sm90::bulk_wait_group_read<1>();
        load(i - 1 + stages);
      }
    }
    sm90::bulk_wait_group<0>();
    return;
  }

  sm90::setmaxnreg_inc<kHeadRegs>();
  const int h = warp - 4, g = lane / 4, t = lane % 4;
  const uint32_t vstage = base + kVOffset + h * kVBytes;
  uint32_t kf[10][5], vf[5][5][2];
  int loaded_b = -1;
  for (int i = 0; i < n; ++i) {
    const int tile = first + i, s = i % stages, b = tile / tiles_per_row;
    if (b != loaded_b) {
      load_head_kv<T>(kf, vf, k, v, b, h, lk, kv_stride, vstage, lane);
      loaded_b = b;
    }
    sm90::mbarrier_wait(full + 8 * s, (i / stages) & 1);
    const uint32_t tile_base = base + s * stage_bytes;
#pragma unroll 1
    for (int mb = 0; mb < rows / 16; ++mb) {
      const int lr = mb * 16 + (lane % 8) + ((lane / 8) % 2) * 8;  // this lane's ldmatrix row
      uint32_t qa0[4], qa1[4], qa2[2];
      sm80::ldsm_x4(qa0, tile_base + unit_offset<kSwizzle>(rows, lr, 5 * h + lane / 16));
      sm80::ldsm_x4(qa1, tile_base + unit_offset<kSwizzle>(rows, lr, 5 * h + 2 + lane / 16));
      sm80::ldsm_x2(qa2, tile_base + unit_offset<kSwizzle>(rows, lr, 5 * h + 4));
      // S [16 x 80] = Q K^T.
      float sc[10][4];
#pragma unroll
      for (int j = 0; j < 10; ++j) {
        sc[j][0] = sc[j][1] = sc[j][2] = sc[j][3] = 0.f;
        sm80::mma<T>(sc[j], qa0, kf[j][0], kf[j][1]);
        sm80::mma<T>(sc[j], qa1, kf[j][2], kf[j][3]);
        sm80::mma_k8<T>(sc[j], qa2[0], qa2[1], kf[j][4]);
      }
      // Softmax over the lk keys (rows g and g + 8; a quad shares a row).
      float inv[2];
#pragma unroll
      for (int r = 0; r < 2; ++r) {
        float mx = -INFINITY;
#pragma unroll
        for (int j = 0; j < 10; ++j) {
#pragma unroll
          for (int e = 0; e < 2; ++e) {
            if (8 * j + 2 * t + e >= lk) sc[j][2 * r + e] = -INFINITY;
            mx = fmaxf(mx, sc[j][2 * r + e]);
          }
        }
        mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
        mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
        const float m_scaled = mx * scale_log2;
        float l = 0.f;
#pragma unroll
        for (int j = 0; j < 10; ++j) {
#pragma unroll
          for (int e = 0; e < 2; ++e) {
            const float p = exp2f(fmaf(sc[j][2 * r + e], scale_log2, -m_scaled));
            sc[j][2 * r + e] = p;
            l += p;
          }
        }
        l += __shfl_xor_sync(0xffffffffu, l, 1);
        l += __shfl_xor_sync(0xffffffffu, l, 2);
        inv[r] = 1.f / l;
      }
      // O [16 x 40] = P V: P's C fragments become A fragments.
      float acc[5][4];
#pragma unroll
      for (int nn = 0; nn < 5; ++nn) acc[nn][0] = acc[nn][1] = acc[nn][2] = acc[nn][3] = 0.f;
#pragma unroll
      for (int kc = 0; kc < 5; ++kc) {
        const uint32_t pa[4] = {sm80::pack_pair<T>(sc[2 * kc][0], sc[2 * kc][1]),
                                sm80::pack_pair<T>(sc[2 * kc][2], sc[2 * kc][3]),
                                sm80::pack_pair<T>(sc[2 * kc + 1][0], sc[2 * kc + 1][1]),
                                sm80::pack_pair<T>(sc[2 * kc + 1][2], sc[2 * kc + 1][3])};
#pragma unroll
        for (int nn = 0; nn < 5; ++nn) sm80::mma<T>(acc[nn], pa, vf[kc][nn][0], vf[kc][nn][1]);
      }
      // O over this block's Q rows (read above into registers; no other warp touches head h).
#pragma unroll
      for (int r = 0; r < 2; ++r) {
        const int row = mb * 16 + g + 8 * r;
#pragma unroll
        for (int nn = 0; nn < 5; ++nn) {
          sm90::st_shared_u32(tile_base + unit_offset<kSwizzle>(rows, row, 5 * h + nn) + 4 * t,
                              sm80::pack_pair<T>(acc[nn][2 * r] * inv[r], acc[nn][2 * r + 1] * inv[r]));
        }
      }
    }
    sm90::fence_proxy_async_smem();  // this thread's O writes, visible to the TMA store
    sm90::mbarrier_arrive(done + 8 * s);
  }
#endif
}

// The 4D view of a [B, L, 8 * 40] tensor whose rows are `row_stride` elements apart whose box of
// `rows` rows lands as unit_offset says: plain (d 40, row, head, batch), box (40, rows, 8, 1);
// swizzled (64 columns, row, 5 chunks, batch), box (64, rows, 5, 1) with the 128-byte swizzle.
bool rows_map(const void* base, DType dtype, int batch, int lq, int64_t row_stride, int rows, bool swizzle,
              CUtensorMap* out) {
  TmaTiledDesc d;
  d.base = base;
  d.dtype = dtype;
  d.rank = 4;
  d.dims[0] = swizzle ? 64 : kD;
  d.dims[1] = static_cast<uint64_t>(lq);
  d.dims[2] = swizzle ? 5 : kHeads;
  d.dims[3] = static_cast<uint64_t>(batch);
  d.strides_bytes[0] = static_cast<uint64_t>(row_stride) * 2;
  d.strides_bytes[1] = swizzle ? 128 : kRowBytes;
  d.strides_bytes[2] = static_cast<uint64_t>(lq) * row_stride * 2;
  d.box[0] = swizzle ? 64 : kD;
  d.box[1] = static_cast<uint32_t>(rows);
  d.box[2] = swizzle ? 5 : kHeads;
  d.box[3] = 1;
  d.swizzle = swizzle ? TmaSwizzle::k128B : TmaSwizzle::kNone;
  return encode_tma_tiled(d, out).ok();
}

bool aligned16(const void* p) { return (reinterpret_cast<uintptr_t>(p) & 15u) == 0; }

std::atomic<long> g_launches{0};

// SDSERVE_CUDA_ROWS_TILE (16 / 32 / 64 query rows a tile) and SDSERVE_CUDA_ROWS_SWIZZLE (0 / 1),
// read per call for measuring.
int env_int(const char* name, int fallback) {
  const char* env = std::getenv(name);
  return env && *env ? std::atoi(env) : fallback;
}

}  // namespace

long attention_rows_launches() { return g_launches.load(std::memory_order_relaxed); }

bool launch_attention_rows(DType dtype, const AttentionArgs& a, cudaStream_t stream) {
  if (a.causal || !a.vec || a.d != kD || a.heads != kHeads || a.lq < 1 || a.lk < 1 || a.lk > kKeys) return false;
  if (a.q_stride % 8 != 0 || a.kv_stride % 8 != 0 || a.batch > 65535) return false;
  if (!aligned16(a.q) || !aligned16(a.k) || !aligned16(a.v) || !aligned16(a.o)) return false;
  const int sms = sm90_multiprocessors();
  if (sms == 0 || !tma_available()) return false;
  int rows = kDefaultRows;  // the smaller tiles' deeper rings measured no faster, even at 2 rows
  const int forced = env_int("SDSERVE_CUDA_ROWS_TILE", 0);
  if (forced == 16 || forced == 32 || forced == 64) rows = forced;
  const bool swizzle = env_int("SDSERVE_CUDA_ROWS_SWIZZLE", kDefaultSwizzle) == 1;
  CUtensorMap qmap, omap;
  if (!rows_map(a.q, dtype, a.batch, a.lq, a.q_stride, rows, swizzle, &qmap) ||
      !rows_map(a.o, dtype, a.batch, a.lq, int64_t{kHeads} * kD, rows, swizzle, &omap)) {
    return false;
  }
  const int tiles_per_row = (a.lq + rows - 1) / rows;
  const int64_t total = int64_t{a.batch} * tiles_per_row;
  if (total > (int64_t{1} << 30)) return false;
  const int grid = static_cast<int>(std::min<int64_t>(total, sms));
  const int stages = std::min<int>(kMaxStages, static_cast<int>(kRingBytes / (uint32_t(rows) * 640)));
  const float scale_log2 = 1.4426950408889634f / std::sqrt(static_cast<float>(kD));
  dispatch_half(dtype, [&](auto tag) {
    using T = decltype(tag);
    auto* kernel = swizzle ? attention_rows_kernel<T, true> : attention_rows_kernel<T, false>;
    SD_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(kSmemBytes)));
    launch_kernel(kernel, dim3(static_cast<unsigned>(grid)), kThreads, kSmemBytes, stream, qmap, omap,
                  static_cast<const T*>(a.k), static_cast<const T*>(a.v), a.lk, a.kv_stride, rows, stages,
                  tiles_per_row, static_cast<int>(total), scale_log2);
    SD_CUDA_LAUNCH_CHECK();
  });
  g_launches.fetch_add(1, std::memory_order_relaxed);
  return true;
}

}  // namespace sd::cuda
