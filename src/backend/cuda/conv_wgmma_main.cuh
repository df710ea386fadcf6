// Kernels of the Hopper implicit-GEMM convolution (conv_wgmma.cu): the TMA + wgmma main kernel
// (tile BM x BN, BM 128 or 256 positions, producer warp + two consumer warpgroups) with its three
// ways to finish a split reduction, and the reduce kernel of the global-partials split.
#pragma once

#include "backend/cuda/conv_wgmma_kernel.cuh"
#include "backend/cuda/cuda_types.cuh"
#include "backend/cuda/mma_sync.cuh"

namespace sd::cuda::conv_wgmma {

constexpr int kBox = 128;      // output positions per input box (one TMA load)
constexpr int kBK = 64;        // reduction step: 64 input channels of one filter tap (128 bytes)
constexpr int kThreads = 384;  // warpgroup 0: producer (one thread issues TMA), 1-2: consumers
constexpr size_t kSmemLimit = 232448;  // H100 opt-in dynamic shared memory per block

template <int BM, int BN>
struct Cfg {
  static constexpr uint32_t kABytes = BM * kBK * 2;  // [BM positions][64 channels], swizzled
  static constexpr uint32_t kBBytes = BN * kBK * 2;  // [BN out channels][64 channels], swizzled
  static constexpr int kStages0 = static_cast<int>((kSmemLimit - 2048) / (kABytes + kBBytes));
  static constexpr int kStages = kStages0 > 8 ? 8 : kStages0;
  static constexpr size_t kSmem = size_t{kStages} * (kABytes + kBBytes) + 2 * kStages * 8 + 1024;
  // f32 accumulator tile of the in-cluster (DSMEM) split reduction, rows padded by 8 floats so the
  // float2 stores of a warp hit distinct banks; it reuses the ring once the main loop is done.
  static constexpr int kRedStride = BN + 8;
  static_assert(size_t{BM} * kRedStride * 4 <= size_t{kStages} * (kABytes + kBBytes), "reduction tile > ring");
  static_assert(kStages >= 3, "ring too shallow");
};

struct Params {
  void* y;
  const void* bias;
  const void* row;
  const void* residual;
  float* partial;  // [splits, M, Cout] when splits > 1 and not dsmem
  int m, cout, hw, w_, k, pad;
  int cin_steps;        // Cin / 64
  int kiters;           // k * k * Cin / 64
  int iters_per_split;  // reduction steps per slice
  int splits;
  int dsmem;  // 1: the splits of a tile are one cluster (cx, cy, splits) that sums through DSMEM
  // Cluster cx x cy (BM 128 only): the cx CTAs of one output tile row (along N) each load a_piece
  // positions of the input box and multicast them to the others; the cy CTAs along M share the
  // weight box in pieces of b_piece output channels likewise.
  int cx, cy, a_piece, b_piece;
  // Sub-pixel upsample (conv_subpixel.cc): C > 0 when the GEMM's N = 4 C columns are the four
  // output phases p = 2a + c (a, c: output row / column parity) of a 2x2 convolution of the small
  // image x [B, H, W, Cin]; an N tile lies inside one phase, its taps start at row a - 1 and
  // column c - 1, and position (b, i, j), column p C + ch goes to y [B, 2H, 2W, C] at
  // (b, 2i + a, 2j + c, ch) with bias[ch]. 0: a plain convolution.
  int sub_c;
  // The input-reuse kernel (conv_wgmma_reuse.cuh; kiters / iters_per_split count 64-channel
  // chunks there): halo box bytes, weight ring depth, images per tile, rows per image block,
  // positions per image block, tiles per image, image height.
  int r_box_bytes, r_b_stages, r_imgs, r_tile_h, r_tile_hw, r_tiles_per_img, r_h;
};

// Element offset in y of GEMM position m, column n, and the bias index of n.
__device__ __forceinline__ int64_t y_offset(const Params& p, int m, int n, int& bias_n) {
  if (p.sub_c == 0) {
    bias_n = n;
    return int64_t{m} * p.cout + n;
  }
  const int ph = n / p.sub_c, ch = n - ph * p.sub_c;
  const int b = m / p.hw, r = m - b * p.hw, i = r / p.w_, j = r - i * p.w_;
  bias_n = ch;
  return (int64_t{b} * 4 * p.hw + int64_t{2 * i + (ph >> 1)} * 2 * p.w_ + 2 * j + (ph & 1)) * p.sub_c + ch;
}

// y[m, n..n+1] = v + bias + row + residual (n even).
template <typename T>
__device__ __forceinline__ void store_pair(const Params& p, int m, int n, float v0, float v1) {
  int bn = n;
  const int64_t o = y_offset(p, m, n, bn);  // row / residual: plain convolutions only (sub_c == 0)
  if (p.bias) {
    const float2 b = sm80::unpack_pair<T>(*reinterpret_cast<const uint32_t*>(static_cast<const T*>(p.bias) + bn));
    v0 += b.x;
    v1 += b.y;
  }
  if (p.row) {
    const int img = m / p.hw;
    const float2 r = sm80::unpack_pair<T>(
        *reinterpret_cast<const uint32_t*>(static_cast<const T*>(p.row) + int64_t{img} * p.cout + n));
    v0 += r.x;
    v1 += r.y;
  }
  if (p.residual) {
    const float2 r =
        sm80::unpack_pair<T>(*reinterpret_cast<const uint32_t*>(static_cast<const T*>(p.residual) + o));
    v0 += r.x;
    v1 += r.y;
  }
  *reinterpret_cast<uint32_t*>(static_cast<T*>(p.y) + o) = sm80::pack_pair<T>(v0, v1);
}

// Grid (Cout / BN, output tiles, splits), kThreads threads, Cfg<BM, BN>::kSmem dynamic shared
// memory. xmap: 4D [B, H, W, Cin], box {64, W, rows, imgs} = a_piece positions (BM / 128 boxes
// per stage); wmap: 2D [Cout, k*k*Cin], box {64, b_piece}. Launched as clusters (cx, cy, 1) for
// multicast, or (cx, cy, splits) with dsmem.
template <typename T, int BM, int BN>
__global__ void __launch_bounds__(kThreads, 1)
    conv_wgmma_kernel(const __grid_constant__ CUtensorMap xmap, const __grid_constant__ CUtensorMap wmap,
                      const Params p) {
#if SD_SM90A_COMPILED
  using C = Cfg<BM, BN>;
  constexpr int kStages = C::kStages;
  constexpr int kSub = BM / 128;  // m64 sub-tiles per consumer warpgroup (rows 64 sub .. of its half)
  extern __shared__ unsigned char smem_raw[];
  const uint32_t base = (sm90::smem_addr(smem_raw) + 1023u) & ~1023u;  // swizzle-128B wants 1024-byte stages
  const uint32_t sa = base, sb = base + kStages * C::kABytes;
  const uint32_t full = sb + kStages * C::kBBytes, empty = full + 8 * kStages;
  const int n0 = blockIdx.x * BN, tile = blockIdx.y;
  const int kt0 = blockIdx.z * p.iters_per_split;
  const int niters = min(p.kiters, kt0 + p.iters_per_split) - kt0;
  const int wg = threadIdx.x / 128;
  const int ncta = p.cx * p.cy;  // multicast group: the CTAs of one slice in the cluster
  const uint32_t rx = ncta > 1 ? cluster_ctaid_x() : 0, ry = ncta > 1 ? cluster_ctaid_y() : 0;
  // Cluster rank of this slice's CTA (0, 0): the cluster is (cx, cy, splits) with dsmem, else (cx, cy, 1).
  const uint32_t group0 = p.dsmem ? blockIdx.z * ncta : 0;
  if (threadIdx.x == 0) {
    for (int s = 0; s < kStages; ++s) {
      sm90::mbarrier_init(full + 8 * s, 1);          // the producer's arrive + the TMA bytes
      sm90::mbarrier_init(empty + 8 * s, 2 * ncta);  // one arrive per consumer warpgroup of the cluster
    }
    sm90::mbarrier_init_fence();
    sm90::tma_prefetch_descriptor(&xmap);
    sm90::tma_prefetch_descriptor(&wmap);
  }
  if (ncta > 1) cluster_sync();  // every CTA's barriers exist before anyone multicasts into them
  else __syncthreads();

  if (wg == 0) {
    sm90::setmaxnreg_dec<40>();
    if (threadIdx.x == 0) {
      // This CTA's piece of the input box: positions [a_piece rx, a_piece (rx + 1)) of the tile.
      const uint32_t a_off = rx * p.a_piece * 128, b_off = ry * p.b_piece * 128;
      uint16_t a_mask = 0, b_mask = 0;  // the CTAs of this tile row / of this N column
      for (int i = 0; i < p.cx; ++i) a_mask |= static_cast<uint16_t>(1u << (group0 + ry * p.cx + i));
      for (int j = 0; j < p.cy; ++j) b_mask |= static_cast<uint16_t>(1u << (group0 + j * p.cx + rx));
      int ab[kSub], ah[kSub], boxes = 0;  // boxes of this tile that hold positions < M
#pragma unroll
      for (int h = 0; h < kSub; ++h) {
        const int pos = tile * BM + h * kBox + static_cast<int>(rx) * p.a_piece;
        ab[h] = pos / p.hw, ah[h] = (pos % p.hw) / p.w_;
        boxes += pos < p.m ? 1 : 0;
      }
      if (ncta > 1) boxes = kSub;  // the whole tile arrives, from every CTA of the row
      const uint32_t bytes = boxes * (C::kABytes / kSub) + C::kBBytes;
      const uint64_t stream_once = evict_first_policy();
      const int phase = p.sub_c ? n0 / p.sub_c : 0;
      const int pad_y = p.sub_c ? 1 - (phase >> 1) : p.pad, pad_x = p.sub_c ? 1 - (phase & 1) : p.pad;
      const auto load_w = [&](int it) {
        const int s = it % kStages, kt = kt0 + it;
        const uint32_t db = sb + s * C::kBBytes + b_off;
        const int nb = n0 + static_cast<int>(ry) * p.b_piece;
        if (p.cy > 1) tma_load_2d_multicast(db, &wmap, full + 8 * s, kt * kBK, nb, b_mask, stream_once);
        else sm90::tma_load_2d(db, &wmap, full + 8 * s, kt * kBK, nb, stream_once);
      };
      // The weights do not come from the kernel before this one: the first stages of w are
      // requested before pdl_wait() (programmatic dependent launch), x's after it.
      const int pre = min(niters, kStages);
      for (int it = 0; it < pre; ++it) {
        sm90::mbarrier_arrive_expect_tx(full + 8 * it, bytes);
        load_w(it);
      }
      pdl_wait();
      pdl_trigger();
      for (int it = 0; it < niters; ++it) {
        const int s = it % kStages;
        if (it >= pre) {
          if (it >= kStages) mbar_wait(empty + 8 * s, ((it / kStages) - 1) & 1);
          sm90::mbarrier_arrive_expect_tx(full + 8 * s, bytes);
        }
        const int kt = kt0 + it, tap = kt / p.cin_steps, c0 = (kt - tap * p.cin_steps) * kBK;
        const int ky = tap / p.k, kx = tap - ky * p.k;  // sub-pixel: pad_y / pad_x = 1 - a / 1 - c
        const uint32_t da = sa + s * C::kABytes + a_off;
        if (p.cx > 1) {
          tma_load_4d_multicast(da, &xmap, full + 8 * s, c0, kx - pad_x, ah[0] + ky - pad_y, ab[0], a_mask);
        } else {
#pragma unroll
          for (int h = 0; h < kSub; ++h) {
            if (h < boxes) {
              sm90::tma_load_4d(da + h * (C::kABytes / kSub), &xmap, full + 8 * s, c0, kx - pad_x,
                                ah[h] + ky - pad_y, ab[h]);
            }
          }
        }
        if (it >= pre) load_w(it);
      }
    }
    __syncwarp();  // warp 0 whole again before the aligned cluster barriers
    // Match the consumers' cluster barriers: two with dsmem, else one at the end with multicast.
    if (p.dsmem) {
      cluster_sync();
      cluster_sync();
    } else if (ncta > 1) {
      cluster_sync();
    }
    return;
  }

  sm90::setmaxnreg_inc<232>();
  pdl_wait();  // before the epilogue's residual / row / partial reads and the output writes
  pdl_trigger();
  const int cw = wg - 1;  // consumer: tile rows [BM / 2 cw, BM / 2 (cw + 1))
  float acc[kSub][BN / 2];
#pragma unroll
  for (int h = 0; h < kSub; ++h) {
#pragma unroll
    for (int i = 0; i < BN / 2; ++i) acc[h][i] = 0.f;
  }
  for (int it = 0; it < niters; ++it) {
    const int s = it % kStages;
    mbar_wait(full + 8 * s, (it / kStages) & 1);
    const uint32_t a = sa + s * C::kABytes + cw * (BM / 2) * 128, b = sb + s * C::kBBytes;
    sm90::wgmma_fence();
#pragma unroll
    for (int kk = 0; kk < kBK / 16; ++kk) {
#pragma unroll
      for (int h = 0; h < kSub; ++h) {
        sm90::wgmma_ss<T, BN>(acc[h], sm90::desc_sw128(a + h * 64 * 128 + kk * 32), sm90::desc_sw128(b + kk * 32), 1);
      }
    }
    sm90::wgmma_commit();
    sm90::wgmma_wait<1>();  // the step before this one is done: its stage goes back to the producer
    if (it > 0 && threadIdx.x % 128 == 0) {
      const uint32_t bar = empty + 8 * ((it - 1) % kStages);
      if (ncta > 1) {
        for (int q = 0; q < ncta; ++q) mbar_arrive_cluster(bar, group0 + q);  // free in every CTA of the group
      } else {
        sm90::mbarrier_arrive(bar);
      }
    }
  }
  sm90::wgmma_wait<0>();
#pragma unroll
  for (int h = 0; h < kSub; ++h) sm90::fence_accumulators(acc[h]);

  // Accumulator i of thread (warp w, lane l) in sub-tile h: row 64 h + 16 w + l / 4 + 8 ((i / 2) % 2)
  // of this warpgroup's half, column 8 (i / 4) + 2 (l % 4) + i % 2.
  const int lane = threadIdx.x & 31, warp = (threadIdx.x / 32) & 3;
  if (p.dsmem) {
    // In-cluster split reduction: every CTA parks its f32 tile in its own (now idle) ring, then CTA
    // rank z sums rows [z rows_per, (z + 1) rows_per) over ranks 0 .. splits - 1 in order
    // (deterministic), applies the adds and stores.
    sm90::named_barrier_sync(1, 256);  // both consumer warpgroups are done reading the ring
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
    cluster_sync();  // every slice's tile is in place
    const int rank = static_cast<int>(blockIdx.z), rows_per = (BM + p.splits - 1) / p.splits;
    const int r0 = rank * rows_per, r1 = min(BM, r0 + rows_per);
    const int quads = (r1 - r0) * (BN / 4);
    constexpr int kU = 4;  // float4s per thread in flight
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
            const float4 t = ld_cluster_f32x4(base + (r * C::kRedStride + col) * 4,
                                              q * ncta + static_cast<int>(ry * p.cx + rx));
            v[u].x += t.x, v[u].y += t.y, v[u].z += t.z, v[u].w += t.w;
          }
        }
      }
#pragma unroll
      for (int u = 0; u < kU; ++u) {
        const int e = e0 + u * 256;
        const int r = r0 + e / (BN / 4), col = (e % (BN / 4)) * 4, m = tile * BM + r;
        if (e < quads && m < p.m) {
          store_pair<T>(p, m, n0 + col, v[u].x, v[u].y);
          store_pair<T>(p, m, n0 + col + 2, v[u].z, v[u].w);
        }
      }
    }
    cluster_sync();  // no CTA leaves while others may still read its tile
    return;
  }
  float* part = p.splits > 1 ? p.partial + int64_t{blockIdx.z} * p.m * p.cout : nullptr;
#pragma unroll
  for (int h = 0; h < kSub; ++h) {
#pragma unroll
    for (int hh = 0; hh < 2; ++hh) {
      const int m = tile * BM + cw * (BM / 2) + h * 64 + warp * 16 + lane / 4 + 8 * hh;
      if (m >= p.m) continue;
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
  if (ncta > 1) cluster_sync();
#endif
}

// y = sum over slices of partial (in slice order: deterministic) + the adds; 8 outputs a thread.
template <typename T>
__global__ void conv_wgmma_reduce_kernel(const Params p) {
  pdl_wait();
  pdl_trigger();
  const int64_t mn = int64_t{p.m} * p.cout, n8 = mn / 8;
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n8; i += int64_t{gridDim.x} * blockDim.x) {
    const int64_t e = i * 8;
    float v[8] = {};
    for (int s = 0; s < p.splits; ++s) {
      const float4* src = reinterpret_cast<const float4*>(p.partial + s * mn + e);
      const float4 a = __ldcg(src), b = __ldcg(src + 1);
      v[0] += a.x, v[1] += a.y, v[2] += a.z, v[3] += a.w, v[4] += b.x, v[5] += b.y, v[6] += b.z, v[7] += b.w;
    }
    const int m = static_cast<int>(e / p.cout), n = static_cast<int>(e - int64_t{m} * p.cout);
    int bn = n;
    const int64_t yo = y_offset(p, m, n, bn);  // 8 columns of one phase (C % 8 == 0)
    float add[8];
    if (p.bias) {
      unpack8<T>(*reinterpret_cast<const uint4*>(static_cast<const T*>(p.bias) + bn), add);
      for (int j = 0; j < 8; ++j) v[j] += add[j];
    }
    if (p.row) {
      unpack8<T>(*reinterpret_cast<const uint4*>(static_cast<const T*>(p.row) + int64_t{m / p.hw} * p.cout + n), add);
      for (int j = 0; j < 8; ++j) v[j] += add[j];
    }
    if (p.residual) {
      unpack8<T>(*reinterpret_cast<const uint4*>(static_cast<const T*>(p.residual) + e), add);
      for (int j = 0; j < 8; ++j) v[j] += add[j];
    }
    *reinterpret_cast<uint4*>(static_cast<T*>(p.y) + yo) = pack8<T>(v);
  }
}

}  // namespace sd::cuda::conv_wgmma
