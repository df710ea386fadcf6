// The Hopper 3x3 convolution that loads its input once per 64-channel chunk: three column-shifted
// halo boxes (x offsets -1, 0, +1) of the tile's rows + 2, and the 9 taps read out of them by
// moving the wgmma descriptor's start address; the weights stream through their own ring per tap.
#pragma once

#include "backend/cuda/conv_wgmma_main.cuh"

namespace sd::cuda::conv_wgmma {

// Shared-memory budget of the reuse kernel: a ring of 2 chunk stages (3 halo boxes each) and a
// ring of b_stages weight tiles [BN, KC], 1024-byte aligned. KC = 64 channels a chunk (128-byte
// rows, swizzle 128B) at BM 128; KC = 32 (64-byte rows, swizzle 64B) at BM 256, whose boxes of
// twice the positions would not fit twice otherwise.
constexpr int kReuseMaxBStages = 8;
template <int BM, int BN>
struct ReuseCfg {
  static constexpr int kKC = BM == 256 ? 32 : 64;
  static constexpr uint32_t kRowBytes = kKC * 2;
  static constexpr uint32_t kBBytes = BN * kRowBytes;
  static constexpr int kRedStride = BN + 8;  // f32 DSMEM reduction tile, as Cfg
};

// wgmma shared-memory descriptor of a K-major tile with 64-byte rows, 64-byte swizzle: 8-row
// core groups 512 bytes apart (the start 512-byte aligned: base offset 0).
__device__ __forceinline__ uint64_t desc_sw64(uint32_t smem_byte_addr) {
  return (uint64_t{1} << 16) | (uint64_t{512 >> 4} << 32) | (uint64_t{2} << 62) |
         uint64_t{(smem_byte_addr >> 4) & 0x3FFFu};
}
template <int KC>
__device__ __forceinline__ uint64_t reuse_desc(uint32_t addr) {
  if constexpr (KC == 64) {
    return sm90::desc_sw128(addr);
  } else {
    return desc_sw64(addr);
  }
}

// Shared memory bytes for halo boxes of `box_bytes` and b_stages weight tiles of b_bytes.
__host__ __device__ constexpr size_t reuse_smem_bytes(uint32_t box_bytes, int b_stages, uint32_t b_bytes) {
  return 1024 + size_t{2} * 3 * box_bytes + size_t(b_stages) * b_bytes + 8 * (4 + 2 * size_t(b_stages));
}

// Grid (Cout / BN, tiles, splits), kThreads threads; cluster (1, 1, splits) with dsmem. A tile is
// BM output positions: r_imgs whole images (H*W a multiple of 64, <= BM) or r_tile_h rows of one
// image (r_tiles_per_img tiles an image; rows past H are zero-filled on load and never stored).
// xmap: 4D [B, H, W, Cin], box {KC, W, r_tile_h + 2, r_imgs}; wmap: 2D [Cout, 9 Cin], box {KC, BN}.
// Reduction steps (p.kiters, p.iters_per_split) count KC-channel chunks, 9 weight tiles each;
// p.cin_steps = Cin / KC. Each consumer warpgroup owns BM / 2 rows as BM / 128 m64 sub-tiles.
template <typename T, int BM, int BN>
__global__ void __launch_bounds__(kThreads, 1)
    conv_wgmma_reuse_kernel(const __grid_constant__ CUtensorMap xmap, const __grid_constant__ CUtensorMap wmap,
                            const Params p) {
#if SD_SM90A_COMPILED
  using C = ReuseCfg<BM, BN>;
  constexpr int KC = C::kKC, kSub = BM / 128;
  extern __shared__ unsigned char smem_raw[];
  const uint32_t base = (sm90::smem_addr(smem_raw) + 1023u) & ~1023u;
  const uint32_t box = static_cast<uint32_t>(p.r_box_bytes), a_stage = 3 * box;
  const int kB = p.r_b_stages;
  const uint32_t sa = base, sb = base + 2 * a_stage;
  const uint32_t full_a = sb + kB * C::kBBytes, empty_a = full_a + 16, full_b = empty_a + 16,
                 empty_b = full_b + 8 * kB;
  const int n0 = blockIdx.x * BN, tile = blockIdx.y;
  const int c_begin = blockIdx.z * p.iters_per_split;
  const int nchunks = min(p.kiters, c_begin + p.iters_per_split) - c_begin;
  // The tile: images b0 .. b0 + r_imgs - 1 whole, or rows y0 .. y0 + r_tile_h - 1 of image b0;
  // its output positions are m = mbase + r, r < mvalid (contiguous in both cases).
  const int b0 = (tile / p.r_tiles_per_img) * p.r_imgs, y0 = (tile % p.r_tiles_per_img) * p.r_tile_h;
  const int mbase = b0 * p.hw + y0 * p.w_;
  const int mvalid = min(BM, p.r_imgs > 1 ? p.m - mbase : (p.r_h - y0) * p.w_);
  const int wg = threadIdx.x / 128;
  if (threadIdx.x == 0) {
    for (int s = 0; s < 2; ++s) {
      sm90::mbarrier_init(full_a + 8 * s, 1);
      sm90::mbarrier_init(empty_a + 8 * s, 2);
    }
    for (int s = 0; s < kB; ++s) {
      sm90::mbarrier_init(full_b + 8 * s, 1);
      sm90::mbarrier_init(empty_b + 8 * s, 2);
    }
    sm90::mbarrier_init_fence();
    sm90::tma_prefetch_descriptor(&xmap);
    sm90::tma_prefetch_descriptor(&wmap);
  }
  __syncthreads();

  if (wg == 0) {
    sm90::setmaxnreg_dec<40>();
    if (threadIdx.x == 0) {
      const uint64_t stream_once = evict_first_policy();
      // Chunk ci's three halo boxes: columns -1, 0, +1, rows y0 - 1 .. y0 + r_tile_h (TMA's zero
      // fill is the padding). Stage ci % 2 is free once chunk ci - 2's last tap is done.
      const auto load_a = [&](int ci) {
        const int s = ci & 1;
        if (ci >= 2) mbar_wait(empty_a + 8 * s, ((ci >> 1) - 1) & 1);
        sm90::mbarrier_arrive_expect_tx(full_a + 8 * s, a_stage);
        const int c0 = (c_begin + ci) * KC;
#pragma unroll
        for (int sx = 0; sx < 3; ++sx) {
          sm90::tma_load_4d(sa + s * a_stage + sx * box, &xmap, full_a + 8 * s, c0, sx - 1, y0 - 1, b0);
        }
      };
      // The next chunk's boxes go out just before the weight tile whose slot frees at the same
      // moment (step 9 ci - 1 done), so neither load waits on the other.
      const int a_at = min(kB - 1, 8);
      const auto load_w = [&](int g, int slot) {  // step g = 9 ci + t into weight slot `slot`
        const int ci = g / 9, t = g - 9 * ci;
        sm90::mbarrier_arrive_expect_tx(full_b + 8 * slot, C::kBBytes);
        sm90::tma_load_2d(sb + slot * C::kBBytes, &wmap, full_b + 8 * slot, (t * p.cin_steps + c_begin + ci) * KC, n0,
                          stream_once);
      };
      // The weights do not come from the kernel before this one: the first kB weight tiles are
      // requested before pdl_wait() (programmatic dependent launch), the input boxes after it.
      const int pre = min(kB, 9 * nchunks);
      for (int g = 0; g < pre; ++g) load_w(g, g);
      pdl_wait();
      pdl_trigger();
      if (nchunks > 0) load_a(0);
      int sB = 0, ph = 0, g = 0;
      for (int ci = 0; ci < nchunks; ++ci) {
        for (int t = 0; t < 9; ++t, ++g) {
          if (t == a_at && ci + 1 < nchunks) load_a(ci + 1);
          if (g >= pre) {
            if (g >= kB) mbar_wait(empty_b + 8 * sB, ph ^ 1);
            load_w(g, sB);
          }
          if (++sB == kB) sB = 0, ph ^= 1;
        }
      }
    }
    __syncwarp();
    if (p.dsmem) {  // match the consumers' two cluster barriers
      cluster_sync();
      cluster_sync();
    }
    return;
  }

  sm90::setmaxnreg_inc<232>();
  pdl_wait();  // before the epilogue's residual / row reads and the output writes
  pdl_trigger();
  const int cw = wg - 1;  // consumer: tile rows [BM / 2 cw, BM / 2 (cw + 1)); each m64 in one image block
  // Box byte offset of sub-tile h's first output row at tap row 0: each image block owns
  // r_tile_h + 2 box rows.
  uint32_t a_off[kSub];
#pragma unroll
  for (int h = 0; h < kSub; ++h) {
    const int r = cw * (BM / 2) + h * 64, blk = r / p.r_tile_hw, within = r - blk * p.r_tile_hw;
    a_off[h] = static_cast<uint32_t>(blk * (p.r_tile_h + 2) * p.w_ + within) * C::kRowBytes;
  }
  // One image row: a multiple of the swizzle pattern (8 rows: 1024 / 512 bytes), as W % 8 == 0.
  const uint32_t tap_row_bytes = static_cast<uint32_t>(p.w_) * C::kRowBytes;
  float acc[kSub][BN / 2];
#pragma unroll
  for (int h = 0; h < kSub; ++h) {
#pragma unroll
    for (int i = 0; i < BN / 2; ++i) acc[h][i] = 0.f;
  }
  int sB = 0, ph = 0;
  for (int ci = 0; ci < nchunks; ++ci) {
    const int s = ci & 1;
    mbar_wait(full_a + 8 * s, (ci >> 1) & 1);
    const uint32_t a_base = sa + s * a_stage;
#pragma unroll
    for (int t = 0; t < 9; ++t) {
      mbar_wait(full_b + 8 * sB, ph);
      const uint32_t a = a_base + (t % 3) * box + (t / 3) * tap_row_bytes, b = sb + sB * C::kBBytes;
      sm90::wgmma_fence();
#pragma unroll
      for (int kk = 0; kk < KC / 16; ++kk) {
#pragma unroll
        for (int h = 0; h < kSub; ++h) {
          sm90::wgmma_ss<T, BN>(acc[h], reuse_desc<KC>(a + a_off[h] + kk * 32), reuse_desc<KC>(b + kk * 32), 1);
        }
      }
      sm90::wgmma_commit();
      sm90::wgmma_wait<1>();  // the previous step is done: its weight slot (and after a chunk's
                              // last tap, its halo stage) goes back to the producer
      if ((ci > 0 || t > 0) && threadIdx.x % 128 == 0) {
        sm90::mbarrier_arrive(empty_b + 8 * (sB == 0 ? kB - 1 : sB - 1));
        if (t == 0) sm90::mbarrier_arrive(empty_a + 8 * (s ^ 1));
      }
      if (++sB == kB) sB = 0, ph ^= 1;
    }
  }
  sm90::wgmma_wait<0>();
#pragma unroll
  for (int h = 0; h < kSub; ++h) sm90::fence_accumulators(acc[h]);

  // Accumulator i of thread (warp w, lane l) in sub-tile h: row 64 h + 16 w + l / 4 + 8 ((i / 2) % 2)
  // of this warpgroup's BM / 2, column 8 (i / 4) + 2 (l % 4) + i % 2.
  const int lane = threadIdx.x & 31, warp = (threadIdx.x / 32) & 3;
  if (p.dsmem) {
    // In-cluster split sum (as conv_wgmma_kernel): park the f32 tile in the idle ring, then CTA z
    // sums rows [z rows_per, ...) over slices 0 .. splits - 1 in order and stores.
    sm90::named_barrier_sync(1, 256);
#pragma unroll
    for (int h = 0; h < kSub; ++h) {
#pragma unroll
      for (int hh = 0; hh < 2; ++hh) {
        const int r = cw * (BM / 2) + h * 64 + warp * 16 + lane / 4 + 8 * hh;
#pragma unroll
        for (int i = 0; i < BN / 8; ++i) {
          const int col = i * 8 + 2 * (lane & 3);
          st_shared_f32x2(base + (r * C::kRedStride + col) * 4, acc[h][i * 4 + hh * 2], acc[h][i * 4 + hh * 2 + 1]);
        }
      }
    }
    cluster_sync();
    const int rank = static_cast<int>(blockIdx.z), rows_per = (BM + p.splits - 1) / p.splits;
    const int r0 = rank * rows_per, r1 = min(mvalid, min(BM, r0 + rows_per));
    const int quads = max(0, r1 - r0) * (BN / 4);
    constexpr int kU = 4;
    for (int e0 = threadIdx.x - 128; e0 < quads; e0 += 256 * kU) {
      float4 v[kU];
#pragma unroll
      for (int u = 0; u < kU; ++u) v[u] = make_float4(0.f, 0.f, 0.f, 0.f);
      for (int q = 0; q < p.splits; ++q) {
#pragma unroll
        for (int u = 0; u < kU; ++u) {
          const int e = e0 + u * 256;
          if (e < quads) {
            const int r = r0 + e / (BN / 4), col = (e % (BN / 4)) * 4;
            const float4 t = ld_cluster_f32x4(base + (r * C::kRedStride + col) * 4, q);
            v[u].x += t.x, v[u].y += t.y, v[u].z += t.z, v[u].w += t.w;
          }
        }
      }
#pragma unroll
      for (int u = 0; u < kU; ++u) {
        const int e = e0 + u * 256;
        if (e < quads) {
          const int r = r0 + e / (BN / 4), col = (e % (BN / 4)) * 4;
          store_pair<T>(p, mbase + r, n0 + col, v[u].x, v[u].y);
          store_pair<T>(p, mbase + r, n0 + col + 2, v[u].z, v[u].w);
        }
      }
    }
    cluster_sync();
    return;
  }
  float* part = p.splits > 1 ? p.partial + int64_t{blockIdx.z} * p.m * p.cout : nullptr;
#pragma unroll
  for (int h = 0; h < kSub; ++h) {
#pragma unroll
    for (int hh = 0; hh < 2; ++hh) {
      const int r = cw * (BM / 2) + h * 64 + warp * 16 + lane / 4 + 8 * hh;
      if (r >= mvalid) continue;
      const int m = mbase + r;
#pragma unroll
      for (int i = 0; i < BN / 8; ++i) {
        const int n = n0 + i * 8 + 2 * (lane & 3);
        const float v0 = acc[h][i * 4 + hh * 2], v1 = acc[h][i * 4 + hh * 2 + 1];
        if (part) {
          __stcg(reinterpret_cast<float2*>(part + int64_t{m} * p.cout + n), make_float2(v0, v1));
        } else {
          store_pair<T>(p, m, n, v0, v1);
        }
      }
    }
  }
#endif
}

}  // namespace sd::cuda::conv_wgmma
