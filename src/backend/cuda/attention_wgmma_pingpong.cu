// Warp-specialized wgmma attention (sm_90a), FlashAttention-3 structure: a producer warpgroup
// streams K/V tiles by cp.async into a ring of stages (full/empty mbarriers, no block barrier per
// tile); 2-4 consumer warpgroups, optionally taking turns issuing wgmmas (named barriers).
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <type_traits>

#include "backend/cuda/attention.h"
#include "backend/cuda/attention_wgmma_common.cuh"
#include "backend/cuda/cuda_check.h"
#include "backend/cuda/cuda_types.cuh"
#include "backend/cuda/pdl.cuh"
#include "backend/cuda/tma.h"
#include "backend/cuda/wgmma_sm90.cuh"

namespace sd::cuda {

namespace {

// kOnes: V tiles get a column of ones after the D real ones (kN = D + 8 wide), so the P V wgmma
// also yields the row sums of P (column D of the output accumulators).
template <int D, int NC, int BN, bool kOnes = false>
struct PingpongCfg {
  static constexpr int kDK = (D + 15) / 16 * 16;  // Q K^T depth, zero-filled past D
  static constexpr int kN = kOnes ? D + 8 : D;     // P V width
  static constexpr int kChunksK = kDK / 8, kChunksV = kN / 8;
  static constexpr int kStages = BN == 64 ? 4 : 3;
  static constexpr int kBM = 64 * NC;               // queries per block
  static constexpr int kThreads = 128 * (NC + 1);   // warpgroup 0 produces, 1..NC consume
  // Registers per thread after setmaxnreg: the block holds 168 x 384 (NC 2), 128 x 512 (NC 3)
  // or 96 x 640 (NC 4).
  static constexpr int kProducerRegs = NC == 4 && D > 40 ? 32 : 40;
  static constexpr int kConsumerRegs = NC == 2 ? 232 : NC == 3 ? 152 : kProducerRegs == 32 ? 112 : 104;
  static constexpr uint32_t kQBytes = uint32_t{kBM} * kDK * 2;
  static constexpr uint32_t kKBytes = uint32_t{BN} * kDK * 2;
  static constexpr uint32_t kVBytes = uint32_t{BN} * kN * 2;
  static constexpr uint32_t kStageBytes = kKBytes + kVBytes;
  static constexpr uint32_t kBarOffset = kQBytes + kStages * kStageBytes;  // full[kStages], empty[kStages]
  static constexpr uint32_t kBytes = kBarOffset + 2 * kStages * 8;
};

template <int R>
__device__ __forceinline__ void setmaxnreg_dec() {
  asm volatile("setmaxnreg.dec.sync.aligned.u32 %0;\n" ::"n"(R));
}
template <int R>
__device__ __forceinline__ void setmaxnreg_inc() {
  asm volatile("setmaxnreg.inc.sync.aligned.u32 %0;\n" ::"n"(R));
}

// q [B, Lq, H*D] (rows q_stride apart), k/v [B, Lk, H*D] (rows kv_stride apart) -> o [B, Lq,
// H*D] contiguous. Grid (ceil(Lq / 64 NC), H, B), 128 (NC + 1) threads, one block per SM.
// Tile j of BN keys lives in stage j % kStages: full[s] completes when the producer's 128
// threads' copies have landed (kTma: its one thread's two boxes, by transaction count), empty[s]
// when all 128 NC consumer threads are done with it.
// Consumer c issues its wgmmas in "sections" (QK^T of tile j with PV of tile j - 1) between
// bar.sync(1 + c) and bar.arrive(1 + (c + 1) % NC): sections run round-robin over the consumers,
// so one's softmax overlaps the others' wgmmas; inside a consumer, the softmax of tile j runs
// while its PV of tile j - 1 is still on the tensor cores. `group` consumers take turns (NC: all,
// round-robin; 2: pairs 0/1 and 2/3); 0: no named barriers, the consumers run freely.
// kPoly / 8 of the exps by polynomial (softmax_exp); max_slack > 0 or skip_rescale: a warp skips
// the output rescale when no row of it raised its maximum (WgmmaSoftmax::rescale 2 / 1).
// kOnes: row sums by the P V wgmma (PingpongCfg), none in the softmax.
// kLazy (kOnes, max_slack > 0, group 0: no turns): tiles after the first take exp_pack_lazy's
// fast path (the running maxima as they are, no row maxima) and only fall back to softmax_exp when
// a warp's P exceeds lazy_limit (2^8 by default): with lazy_shift the rows over it are scaled by
// a power of two (shift_p_rows, no new exps) unless P overflowed f16, else softmax_exp; S and the
// previous P V are waited for together (P then overwrites pa: one P register set fits the
// 96-register budget, two do not).
// kTma (kLazy only): one producer thread streams K / V tiles by TMA (kmap / vmap: tma_kv_map)
// into a chunk-major layout (16-byte d chunk c of key r at c * BN * 16 + r * 16): no cp.async
// work for the other producer threads and no proxy fence per tile in the consumers.
// Fragment layouts as in attention_wgmma.cu.
template <typename T, int D, int NC, int BN, int kPoly, bool kOnes, bool kLazy, bool kTma>
__global__ void __launch_bounds__(128 * (NC + 1), 1)
    attention_wgmma_pingpong_kernel(const T* __restrict__ q, const T* __restrict__ k, const T* __restrict__ v,
                                    T* __restrict__ o, int lq, int lk, int heads, int64_t q_stride,
                                    int64_t kv_stride, float scale_log2, uint64_t qk_bits, uint64_t v_bits,
                                    int group, float max_slack, bool skip_rescale, float lazy_limit,
                                    bool lazy_shift, const __grid_constant__ CUtensorMap kmap, const __grid_constant__ CUtensorMap vmap) {
  pdl_wait();  // PDL (pdl.cuh): first, in every CTA
  pdl_trigger();
#if SD_WGMMA_COMPILED
  using C = PingpongCfg<D, NC, BN, kOnes>;
  constexpr int kNB = BN / 8;  // 8-key blocks per tile
  constexpr int kS = C::kStages;
  extern __shared__ __align__(128) unsigned char smem[];
  const uint32_t sq = smem_u32(smem);
  const uint32_t sstage = sq + C::kQBytes;
  const uint32_t full = sq + C::kBarOffset, empty = full + 8 * kS;

  const int b = blockIdx.z, h = blockIdx.y, q0 = blockIdx.x * C::kBM;
  const int ntiles = (lk + BN - 1) / BN;
  if (threadIdx.x == 0) {
#pragma unroll
    for (int s = 0; s < kS; ++s) {
      mbar_init(full + 8 * s, kTma ? 1 : 128);
      mbar_init(empty + 8 * s, 128 * NC);
    }
    fence_mbar_init();
  }
  if constexpr (kOnes) {  // column D of every stage's V tile: (1, 0 x 7) per key, written once
    static_assert(!kTma || (D % 8 == 0 && C::kDK == D + 8), "TMA layout: one padding chunk after D");
    for (int idx = threadIdx.x; idx < kS * BN; idx += C::kThreads) {
      const int st = idx / BN, r = idx % BN;
      const uint32_t at = kTma ? sstage + st * C::kStageBytes + C::kKBytes + (D / 8) * BN * 16 + r * 16
                               : sstage + st * C::kStageBytes + C::kKBytes + (r / 8) * C::kChunksV * 128 +
                                     (D / 8) * 128 + (r % 8) * 16;
      const uint32_t one = std::is_same_v<T, __half> ? 0x3C00u : 0x3F80u;
      asm volatile("st.shared.v4.u32 [%0], {%1, %2, %3, %4};\n" ::"r"(at), "r"(one), "r"(0u), "r"(0u), "r"(0u)
                   : "memory");
      if constexpr (kTma) {  // K's padding chunk (d D..D+7): zeros, never written by the TMA boxes
        const uint32_t kat = sstage + st * C::kStageBytes + (D / 8) * BN * 16 + r * 16;
        asm volatile("st.shared.v4.u32 [%0], {%1, %1, %1, %1};\n" ::"r"(kat), "r"(0u) : "memory");
      }
    }
    fence_proxy_async();
  }
  __syncthreads();

  const int wg = threadIdx.x / 128;
  if (wg == 0 && kTma) {  // producer: one thread, TMA boxes [b][D / 8 chunks][BN keys][8]
    setmaxnreg_dec<C::kProducerRegs>();
    if (threadIdx.x == 0) {
      constexpr uint32_t kBoxBytes = uint32_t{BN} * D * 2;
      for (int j = 0; j < ntiles; ++j) {
        const int s = j % kS;
        if (j >= kS) mbar_wait(empty + 8 * s, (j / kS - 1) & 1);
        const uint32_t dst = sstage + s * C::kStageBytes;
        sm90::mbarrier_arrive_expect_tx(full + 8 * s, 2 * kBoxBytes);
        sm90::tma_load_4d(dst, &kmap, full + 8 * s, 0, j * BN, h * (D / 8), b);
        sm90::tma_load_4d(dst + C::kKBytes, &vmap, full + 8 * s, 0, j * BN, h * (D / 8), b);
      }
    }
  } else if (wg == 0) {  // producer
    setmaxnreg_dec<C::kProducerRegs>();
    const T* kb = k + int64_t{b} * lk * kv_stride + int64_t{h} * D;
    const T* vb = v + int64_t{b} * lk * kv_stride + int64_t{h} * D;
    for (int j = 0; j < ntiles; ++j) {
      const int s = j % kS;
      if (j >= kS) mbar_wait(empty + 8 * s, (j / kS - 1) & 1);
      const int k0 = j * BN;
      const uint32_t dst = sstage + s * C::kStageBytes;
      load_canonical<BN, C::kChunksK, 128>(dst, kb + int64_t{k0} * kv_stride, kv_stride, min(BN, lk - k0), D,
                                            threadIdx.x);
      load_canonical<BN, C::kChunksV, 128, T, kOnes>(dst + C::kKBytes, vb + int64_t{k0} * kv_stride, kv_stride,
                                           min(BN, lk - k0), D, threadIdx.x);
      cp_async_mbar_arrive(full + 8 * s);
    }
    cp_async_wait_all();
  } else {  // consumer c: query rows q0 + 64 c ..
    setmaxnreg_inc<C::kConsumerRegs>();
    const int c = wg - 1, tid = threadIdx.x % 128;
    const int warp = tid / 32, lane = tid % 32, g = lane / 4, t = lane % 4;
    constexpr int kSteps = C::kDK / 16;
    constexpr int kOut = C::kN / 2;                      // output accumulators per thread
    // K / V descriptor bits and the bytes of one k16 step (16 d of K, 16 keys of V): chunk-major
    // TMA tiles (kTma) or load_canonical's 8-row-group-major ones.
    constexpr uint32_t kKStep = kTma ? 2 * BN * 16 : 256;
    constexpr uint32_t kVStep = kTma ? 256 : 2 * C::kChunksV * 128;
    const uint64_t k_bits = kTma ? desc_bits(BN * 16, 128) : qk_bits;
    const uint64_t vt_bits = kTma ? desc_bits(128, BN * 16) : v_bits;
    const int qr0 = q0 + 64 * c;
    const uint32_t q_tile = sq + uint32_t(c) * 64 * C::kDK * 2;
    load_canonical<64, C::kChunksK, 128>(q_tile, q + (int64_t{b} * lq + min(qr0, lq - 1)) * q_stride + int64_t{h} * D,
                                         q_stride, max(0, min(64, lq - qr0)), D, tid);
    cp_async_commit();
    cp_async_wait_all();
    fence_proxy_async();
    named_bar_sync(1 + NC + c, 128);

    // Ping-pong sections: ntiles + 1 per consumer; the last consumer's last arrive has no taker.
    const int nsec = ntiles + 1;
    int sec = 0;
    const int first = group > 0 ? c - c % group : c, turn = group > 0 ? c % group : 0;
    const bool last_of_group = group > 0 && turn == group - 1;
    // The next consumer's barrier, computed once: inside section_end the modulo by the runtime
    // group compiled to a ~25-instruction integer division in every tile (session 12's SASS).
    const int next_bar = group > 0 ? 1 + first + (turn + 1) % group : 0;
    const auto section_begin = [&] {
      if (group > 0) named_bar_sync(1 + c, 256);
    };
    const auto section_end = [&] {
      if (group > 0 && !(last_of_group && sec == nsec - 1)) named_bar_arrive(next_bar, 256);
      ++sec;
    };
    if (last_of_group) named_bar_arrive(1 + first, 256);  // the group's first consumer goes first

    float acc[kOut];
#pragma unroll
    for (int i = 0; i < kOut; ++i) acc[i] = 0.f;
    float m0 = -INFINITY, m1 = -INFINITY;  // running row maxima (raw score units), rows g and g + 8
    float l0 = 0.f, l1 = 0.f;              // this thread's share of the row sums
    float s[BN / 2];                       // S [64 x BN] of the current tile, then its probabilities
    uint32_t pa[BN / 16][4];               // P of the previous tile, register A fragments
    float a0, a1;

    const auto issue_qk = [&](int st) {
      const uint32_t ks = sstage + st * C::kStageBytes;
#pragma unroll
      for (int kk = 0; kk < kSteps; ++kk) {
        wgmma_ss<T, BN>(s, make_desc(qk_bits, q_tile + kk * 256), make_desc(k_bits, ks + kk * kKStep), kk > 0);
      }
      wgmma_commit();
    };
    const auto issue_pv_from = [&](int st, const uint32_t(&p)[BN / 16][4]) {
      const uint32_t vs = sstage + st * C::kStageBytes + C::kKBytes;
#pragma unroll
      for (int kk = 0; kk < BN / 16; ++kk) wgmma_rs<T, C::kN>(acc, p[kk], make_desc(vt_bits, vs + kk * kVStep));
      wgmma_commit();
    };
    const auto issue_pv = [&](int st) { issue_pv_from(st, pa); };

    // Tile 0: S, softmax, P.
    mbar_wait(full, 0);
    if constexpr (!kTma) fence_proxy_async();  // cp.async wrote through the generic proxy
    section_begin();
    wgmma_fence();
    issue_qk(0);
    section_end();
    wgmma_wait<0>();
    fence_regs(s);
    softmax_exp<kNB, kPoly, !kOnes>(s, 0, lk, t, scale_log2, m0, m1, l0, l1, a0, a1, max_slack);
    pack_p<T, kNB>(s, pa);
    if constexpr (kLazy) {
      // Tile j: S and P_{j-1} V_{j-1} both waited for first (P then goes straight into pa, and
      // s stays live for the rare exact path within the 96 registers), then the lazy softmax.
      // Descriptors of stage 0 computed once; per stage and k step only their address fields
      // move (unsigned stage arithmetic: kS is a power of two).
      static_assert((kS & (kS - 1)) == 0, "stage count: a power of two");
      constexpr uint32_t kStageDesc = C::kStageBytes >> 4;
      // The consumer index through a warp reduction: provably warp-uniform, so Q's descriptor
      // can live in uniform registers instead of being rebuilt from the thread index every tile.
      const uint32_t cu = __reduce_max_sync(0xffffffffu, static_cast<uint32_t>(c));
      const float inv_scale_log2 = 1.f / scale_log2;  // P's power-of-two shifts in raw score units
      const uint64_t dq = make_desc(qk_bits, sq + cu * (64 * C::kDK * 2)), dk = make_desc(k_bits, sstage),
                     dv = make_desc(vt_bits, sstage + C::kKBytes);
      for (int j = 1; j < ntiles; ++j) {
        const uint32_t uj = static_cast<uint32_t>(j), st = uj % kS, prev = (uj - 1) % kS;
        mbar_wait(full + 8 * st, (uj / kS) & 1);
        if constexpr (!kTma) fence_proxy_async();
        wgmma_fence();
        const uint64_t k_desc = dk + st * kStageDesc, v_desc = dv + prev * kStageDesc;
#pragma unroll
        for (int kk = 0; kk < kSteps; ++kk) wgmma_ss<T, BN>(s, dq + kk * 16, k_desc + kk * (kKStep >> 4), kk > 0);
        wgmma_commit();
#pragma unroll
        for (int kk = 0; kk < BN / 16; ++kk) wgmma_rs<T, C::kN>(acc, pa[kk], v_desc + kk * (kVStep >> 4));
        wgmma_commit();
        wgmma_wait<0>();
        fence_regs(s);
        fence_regs(acc);
        keep_live(pa);
        mbar_arrive(empty + 8 * prev);
        mask_keys<kNB>(s, j * BN, lk, t);
        const bool over = exp_pack_lazy<T, kNB>(s, m0 * scale_log2, m1 * scale_log2, scale_log2, lazy_limit, pa);
        if (__any_sync(0xffffffffu, over)) {  // a row's maximum rose by more than the slack
          // Cheap fallback (lazy_shift): the rows over the limit scaled down by a power of two,
          // P and the output alike, their maxima raised to match; the exact path (new exps)
          // only where P overflowed f16.
          int k0 = 0, k1 = 0;
          if (lazy_shift && __all_sync(0xffffffffu, shift_p_rows<T, kNB>(pa, lazy_limit, k0, k1))) {
            scale_rows(acc, __uint_as_float(static_cast<uint32_t>(127 - k0) << 23),
                       __uint_as_float(static_cast<uint32_t>(127 - k1) << 23));
            m0 += static_cast<float>(k0) * inv_scale_log2;
            m1 += static_cast<float>(k1) * inv_scale_log2;
          } else {
            softmax_exp<kNB, kPoly, !kOnes>(s, j * BN, lk, t, scale_log2, m0, m1, l0, l1, a0, a1, max_slack);
            if (!skip_rescale || __any_sync(0xffffffffu, a0 != 1.f || a1 != 1.f)) scale_rows(acc, a0, a1);
            pack_p<T, kNB>(s, pa);
          }
        }
      }
    } else {
      for (int j = 1; j < ntiles; ++j) {
        const int st = j % kS, prev = (j - 1) % kS;
        mbar_wait(full + 8 * st, (j / kS) & 1);
        fence_proxy_async();
        section_begin();
        wgmma_fence();
        issue_qk(st);    // S = Q K_j^T
        issue_pv(prev);  // O += P_{j-1} V_{j-1}
        section_end();
        wgmma_wait<1>();  // S has landed
        fence_regs(s);
        softmax_exp<kNB, kPoly, !kOnes>(s, j * BN, lk, t, scale_log2, m0, m1, l0, l1, a0, a1, max_slack);
        wgmma_wait<0>();  // P V has landed: stage prev is free, pa may be overwritten
        fence_regs(acc);
        keep_live(pa);
        mbar_arrive(empty + 8 * prev);
        if (!skip_rescale || __any_sync(0xffffffffu, a0 != 1.f || a1 != 1.f)) scale_rows(acc, a0, a1);
        pack_p<T, kNB>(s, pa);
      }
    }
    section_begin();
    wgmma_fence();
    issue_pv((ntiles - 1) % kS);
    section_end();
    wgmma_wait<0>();
    fence_regs(acc);
    keep_live(pa);

    if constexpr (kOnes) {  // column D: lane t == 0 of each quad holds it (rows g, g + 8)
      l0 = t == 0 ? acc[2 * D / 4] : 0.f;
      l1 = t == 0 ? acc[2 * D / 4 + 2] : 0.f;
    }
    store_output_rows<T, D, C::kN>(o, acc, l0, l1, b, h, heads, lq, qr0 + warp * 16 + g, t);
  }
#endif
}

// The K / V tensor map of the TMA producer: [B, Lk, heads * D] rows kv_stride apart, viewed as 4D
// (8 elements, Lk, heads * D / 8 chunks, B) so that a box {8, BN, D / 8, 1} lands chunk-major
// (chunk c of key r at c * BN * 16 + r * 16), the no-swizzle canonical layout with 16-byte rows.
// Keys past Lk read as zeros. False when the driver cannot encode it (then cp.async is used).
template <typename T, int D, int BN>
bool tma_kv_map(const void* base, const AttentionArgs& a, CUtensorMap* out) {
  if (!tma_available() || (a.heads * D) % 8 != 0 || reinterpret_cast<uintptr_t>(base) % 16 != 0) return false;
  TmaTiledDesc d;
  d.base = base;
  d.dtype = std::is_same_v<T, __half> ? DType::kF16 : DType::kBF16;
  d.rank = 4;
  d.dims[0] = 8;
  d.dims[1] = static_cast<uint64_t>(a.lk);
  d.dims[2] = static_cast<uint64_t>(a.heads) * D / 8;
  d.dims[3] = static_cast<uint64_t>(a.batch);
  d.strides_bytes[0] = static_cast<uint64_t>(a.kv_stride) * 2;
  d.strides_bytes[1] = 16;
  d.strides_bytes[2] = static_cast<uint64_t>(a.lk) * a.kv_stride * 2;
  d.box[0] = 8;
  d.box[1] = BN;
  d.box[2] = D / 8;
  d.box[3] = 1;
  return encode_tma_tiled(d, out).ok();
}

template <typename T, int D, int NC, int BN, int kPoly = 0, bool kOnes = false, bool kLazy = false, bool kTma = false>
void launch(const AttentionArgs& a, cudaStream_t stream, int group, const WgmmaSoftmax& sm,
            const CUtensorMap* kmap = nullptr, const CUtensorMap* vmap = nullptr) {
  using C = PingpongCfg<D, NC, BN, kOnes>;
  const auto kernel = attention_wgmma_pingpong_kernel<T, D, NC, BN, kPoly, kOnes, kLazy, kTma>;
  SD_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(C::kBytes)));
  const WgmmaLaunch l = wgmma_launch_params<C, D>(a);
  alignas(64) static const CUtensorMap kNone{};
  launch_kernel(kernel, l.grid, C::kThreads, C::kBytes, stream, static_cast<const T*>(a.q), static_cast<const T*>(a.k),
                                                   static_cast<const T*>(a.v), static_cast<T*>(a.o), a.lq, a.lk,
                                                   a.heads, a.q_stride, a.kv_stride, l.scale_log2, l.qk_bits, l.v_bits,
                                                   group, sm.rescale == 2 ? 8.f / l.scale_log2 : 0.f,
                                                   sm.rescale != 0, std::ldexp(1.f, sm.lazy_limit_log2),
                                                   sm.lazy_shift, kmap ? *kmap : kNone, vmap ? *vmap : kNone);
  SD_CUDA_LAUNCH_CHECK();
}

// The lazy d40 kernel with NC consumers (4: the default; 3: 192 query rows a block, for shapes
// whose 256-row blocks leave the last wave mostly empty), fed by TMA where the maps encode
// (SDSERVE_CUDA_WGMMA_TMA=0: cp.async).
template <typename T, int D, int NC = 4>
void launch_lazy(const AttentionArgs& a, cudaStream_t stream, const WgmmaSoftmax& sm) {
  if (sm.tma) {
    CUtensorMap kmap, vmap;
    if (tma_kv_map<T, D, 64>(a.k, a, &kmap) && tma_kv_map<T, D, 64>(a.v, a, &vmap)) {
      return launch<T, D, NC, 64, 0, true, true, true>(a, stream, 0, sm, &kmap, &vmap);
    }
  }
  launch<T, D, NC, 64, 0, true, true>(a, stream, 0, sm);
}

// Consumers per turn group for NC consumers: all (-1 or no divisor of NC), pairs, none (0, 1).
template <int NC>
int turn_group(int requested) {
  if (requested == 0 || requested == 1) return 0;
  return requested < 0 || requested > NC || NC % requested != 0 ? NC : requested;
}

template <typename T, int D>
void launch_d(const AttentionArgs& a, cudaStream_t stream, const WgmmaVariant& w, const WgmmaSoftmax& sm) {
  // 4 consumers (104-112 registers each) only with 64-key tiles up to d 64 (d 80 spills and
  // serializes its wgmmas); 3 (152) only at d 40. The polynomial exps only in the d 40 default.
  if constexpr (D == 40) {
    if (w.consumers == 4) {
      const int g = turn_group<4>(w.group);
      if (sm.rowsum_mma) {
        switch (sm.poly) {
          case 1: return launch<T, D, 4, 64, 1, true>(a, stream, g, sm);
          case 2: return launch<T, D, 4, 64, 2, true>(a, stream, g, sm);
          case 3: return launch<T, D, 4, 64, 3, true>(a, stream, g, sm);
          case 4: return launch<T, D, 4, 64, 4, true>(a, stream, g, sm);
          default:
            if (sm.lazy && g == 0) return launch_lazy<T, D>(a, stream, sm);
            return launch<T, D, 4, 64, 0, true>(a, stream, g, sm);
        }
      }
      switch (sm.poly) {
        case 1: return launch<T, D, 4, 64, 1>(a, stream, g, sm);
        case 2: return launch<T, D, 4, 64, 2>(a, stream, g, sm);
        case 3: return launch<T, D, 4, 64, 3>(a, stream, g, sm);
        case 4: return launch<T, D, 4, 64, 4>(a, stream, g, sm);
        default: return launch<T, D, 4, 64>(a, stream, g, sm);
      }
    }
  }
  if constexpr (D <= 64) {
    if (w.consumers == 4) return launch<T, D, 4, 64>(a, stream, turn_group<4>(w.group), sm);
  }
  if constexpr (D == 40) {
    if (w.consumers == 3 && w.keys == 64) {
      const int g = turn_group<3>(w.group);
      if (sm.lazy && sm.poly == 0 && g == 0) return launch_lazy<T, D, 3>(a, stream, sm);
      return launch<T, D, 3, 64>(a, stream, g, sm);
    }
    if (w.consumers == 3) return launch<T, D, 3, 128>(a, stream, turn_group<3>(w.group), sm);
  }
  if (w.keys == 64) return launch<T, D, 2, 64>(a, stream, turn_group<2>(w.group), sm);
  launch<T, D, 2, 128>(a, stream, turn_group<2>(w.group), sm);
}

// SDSERVE_CUDA_WGMMA_POLY (0..4: that many of every 8 exps by polynomial; default
// kDefaultPoly), SDSERVE_CUDA_WGMMA_RESCALE (0 / 1 / 2, WgmmaSoftmax; default
// kDefaultRescale) and SDSERVE_CUDA_WGMMA_ROWSUM (0 FADDs, 1 the ones column; default
// kDefaultRowsumMma), read per call so tests and benchmarks can sweep them in one process.
// Defaults from the H100 sweep (perf-notes, helper H11; l4096 h8 d40): the polynomial lost at
// every fraction (b2: 150 us at 0, 154 / 168 / 171 / 183 at 1..4 of 8); rescale 2 won 1-2% at
// every batch; the ones-column row sums won 1-3% from batch x heads 32 up (b4 283-288 vs 291,
// b8 558 vs 574, b32 2274 vs 2344) and lost at 8 (b1: 81 vs 77) and 16 (b2: 148-152 vs 146-149),
// so by default (-1) they are on from batch x heads >= kRowsumMinBh, and always with
// SDSERVE_CUDA_WGMMA_LAZY (0 / 1, default kDefaultLazy: lazy row maxima, exp_pack_lazy), which
// needs them and rescale 2: session 13 (H100, gpu_ops_bench) b2 145 -> 139 us, b32 2256 -> 2118
// (-6%; ncu: 16% fewer instructions issued); with the ones column forced in both, b2 152 -> 142
// (H200). SDSERVE_CUDA_WGMMA_LAZY_LIMIT (log2, 1..15, default 8 = the rescale-2 slack): the
// fallback's threshold; 14 measured the same as 8 on the SD 1.5-shape step's activations.
constexpr int kDefaultPoly = 0;
constexpr int kDefaultRescale = 2;
constexpr int kDefaultRowsumMma = -1;
constexpr int64_t kRowsumMinBh = 32;
constexpr int kDefaultLazy = 1;
WgmmaSoftmax softmax_options(const AttentionArgs& a) {
  const auto read = [](const char* name, int fallback) {
    const char* env = std::getenv(name);
    return env && env[0] >= '0' && env[0] <= '4' && env[1] == '\0' ? env[0] - '0' : fallback;
  };
  WgmmaSoftmax sm;
  sm.poly = read("SDSERVE_CUDA_WGMMA_POLY", kDefaultPoly);
  sm.rescale = read("SDSERVE_CUDA_WGMMA_RESCALE", kDefaultRescale);
  if (sm.rescale > 2) sm.rescale = kDefaultRescale;
  const int rowsum = read("SDSERVE_CUDA_WGMMA_ROWSUM", kDefaultRowsumMma);
  const bool lazy = read("SDSERVE_CUDA_WGMMA_LAZY", kDefaultLazy) == 1 && sm.rescale == 2;
  sm.rowsum_mma = rowsum == 1 || (rowsum < 0 && (lazy || int64_t{a.batch} * a.heads >= kRowsumMinBh));
  sm.lazy = lazy && sm.rowsum_mma;
  sm.tma = read("SDSERVE_CUDA_WGMMA_TMA", 1) == 1;
  sm.lazy_shift = read("SDSERVE_CUDA_WGMMA_LAZY_SHIFT", 1) == 1;
  if (const char* env = std::getenv("SDSERVE_CUDA_WGMMA_LAZY_LIMIT")) {  // log2 of the limit, 1..15
    const int v = std::atoi(env);
    if (v >= 1 && v <= 15) sm.lazy_limit_log2 = v;
  }
  return sm;
}

}  // namespace

void launch_attention_wgmma_pingpong(DType dtype, const AttentionArgs& a, cudaStream_t stream,
                                     const WgmmaVariant& w) {
  dispatch_half(dtype, [&](auto tag) {
    using T = decltype(tag);
    const WgmmaSoftmax sm = softmax_options(a);
    if (a.d == 40) launch_d<T, 40>(a, stream, w, sm);
    else if (a.d == 64) launch_d<T, 64>(a, stream, w, sm);
    else launch_d<T, 80>(a, stream, w, sm);
  });
}

}  // namespace sd::cuda
