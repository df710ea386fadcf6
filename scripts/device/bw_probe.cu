// HBM bandwidth probe (device measurement tool, not part of the engine): streaming read, copy and
// read-modify-write kernels at several unroll depths, blocks per SM and load hints, so the
// elementwise kernels' ~1.4-1.6 TB/s can be put against what the card streams.
#include <cstdio>
#include <cstdint>
#include <cuda_runtime.h>

template <int U, int HINT>
__device__ __forceinline__ uint4 ld(const uint4* p) {
  uint4 v;
  if (HINT == 1) {
    asm volatile("ld.global.nc.L1::no_allocate.L2::256B.v4.u32 {%0,%1,%2,%3}, [%4];" : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w) : "l"(p));
  } else if (HINT == 2) {
    asm volatile("ld.global.cs.v4.u32 {%0,%1,%2,%3}, [%4];" : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w) : "l"(p));
  } else {
    v = *p;
  }
  return v;
}

template <int U, int HINT>
__global__ void copy_kernel(const uint4* __restrict__ x, uint4* __restrict__ y, int64_t n) {
  const int64_t stride = int64_t{gridDim.x} * blockDim.x;
  int64_t i = int64_t{blockIdx.x} * blockDim.x + threadIdx.x;
  for (; i + (U - 1) * stride < n; i += U * stride) {
    uint4 v[U];
#pragma unroll
    for (int u = 0; u < U; ++u) v[u] = ld<U, HINT>(x + i + u * stride);
#pragma unroll
    for (int u = 0; u < U; ++u) { v[u].x ^= 1u; y[i + u * stride] = v[u]; }
  }
  for (; i < n; i += stride) { uint4 v = x[i]; v.x ^= 1u; y[i] = v; }
}

template <int U, int HINT>
__global__ void read_kernel(const uint4* __restrict__ x, unsigned* out, int64_t n) {
  const int64_t stride = int64_t{gridDim.x} * blockDim.x;
  int64_t i = int64_t{blockIdx.x} * blockDim.x + threadIdx.x;
  unsigned acc = 0;
  for (; i + (U - 1) * stride < n; i += U * stride) {
    uint4 v[U];
#pragma unroll
    for (int u = 0; u < U; ++u) v[u] = ld<U, HINT>(x + i + u * stride);
#pragma unroll
    for (int u = 0; u < U; ++u) acc ^= v[u].x + v[u].y + v[u].z + v[u].w;
  }
  for (; i < n; i += stride) { uint4 v = x[i]; acc ^= v.x + v.w; }
  if (acc == 0x12345678u) *out = acc;
}

// Contiguous chunk per block (as the group-norm kernels): block b reads [b*chunk, (b+1)*chunk).
template <int U>
__global__ void chunk_read_kernel(const uint4* __restrict__ x, unsigned* out, int64_t n, int64_t chunk) {
  const int64_t b0 = int64_t{blockIdx.x} * chunk, b1 = min(n, b0 + chunk);
  unsigned acc = 0;
  int64_t i = b0 + threadIdx.x;
  for (; i + (U - 1) * blockDim.x < b1; i += U * blockDim.x) {
    uint4 v[U];
#pragma unroll
    for (int u = 0; u < U; ++u) v[u] = x[i + u * blockDim.x];
#pragma unroll
    for (int u = 0; u < U; ++u) acc ^= v[u].x + v[u].y + v[u].z + v[u].w;
  }
  for (; i < b1; i += blockDim.x) { uint4 v = x[i]; acc ^= v.x; }
  if (acc == 0x12345678u) *out = acc;
}

// One vector per thread, no loop (n / 256 blocks): what a grid of many tiny blocks streams.
__global__ void onepass_add_kernel(uint4* __restrict__ y, const uint4* __restrict__ r, int64_t n) {
  const int64_t i = int64_t{blockIdx.x} * blockDim.x + threadIdx.x;
  if (i < n) { uint4 a = y[i]; const uint4 b = r[i]; a.x += b.x; a.y += b.y; a.z += b.z; a.w += b.w; y[i] = a; }
}
template <int U>
__global__ void stride_add_kernel(uint4* __restrict__ y, const uint4* __restrict__ r, int64_t n) {
  const int64_t stride = int64_t{gridDim.x} * blockDim.x;
  int64_t i = int64_t{blockIdx.x} * blockDim.x + threadIdx.x;
  for (; i + (U - 1) * stride < n; i += U * stride) {
    uint4 a[U], b[U];
#pragma unroll
    for (int u = 0; u < U; ++u) { a[u] = y[i + u * stride]; b[u] = r[i + u * stride]; }
#pragma unroll
    for (int u = 0; u < U; ++u) { a[u].x += b[u].x; a[u].w += b[u].w; y[i + u * stride] = a[u]; }
  }
  for (; i < n; i += stride) { uint4 a = y[i]; const uint4 b = r[i]; a.x += b.x; y[i] = a; }
}

template <typename F>
float time_ms(F f) {
  cudaEvent_t a, b;
  cudaEventCreate(&a); cudaEventCreate(&b);
  f();
  cudaEventRecord(a);
  for (int r = 0; r < 10; ++r) f();
  cudaEventRecord(b);
  cudaEventSynchronize(b);
  float ms = 0; cudaEventElapsedTime(&ms, a, b);
  return ms / 10;
}

int main() {
  int sms = 0; cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, 0);
  const int64_t bytes = int64_t{1} << 28;  // 256 MiB
  const int64_t n = bytes / 16;
  uint4 *x, *y; unsigned* o;
  cudaMalloc(&x, bytes); cudaMalloc(&y, bytes); cudaMalloc(&o, 4);
  cudaMemset(x, 1, bytes); cudaMemset(y, 0, bytes);
  printf("memcpy D2D: %.2f TB/s\n", 2.0 * bytes / time_ms([&] { cudaMemcpyAsync(y, x, bytes, cudaMemcpyDeviceToDevice); }) / 1e9);
  for (int per_sm : {2, 4, 8}) {
    const int grid = per_sm * sms;
#define RUN(U, H) \
    printf("per_sm %d U %d hint %d: copy %.2f TB/s  read %.2f TB/s\n", per_sm, U, H, \
           2.0 * bytes / time_ms([&] { copy_kernel<U, H><<<grid, 256>>>(x, y, n); }) / 1e9, \
           1.0 * bytes / time_ms([&] { read_kernel<U, H><<<grid, 256>>>(x, o, n); }) / 1e9);
    RUN(1, 0) RUN(4, 0) RUN(8, 0) RUN(4, 1) RUN(8, 1) RUN(4, 2)
  }
  for (int blocks : {512, 1056, 2112, 8448}) {
    const int64_t chunk = (n + blocks - 1) / blocks;
    printf("chunked blocks %d: read U4 %.2f TB/s U8 %.2f TB/s\n", blocks,
           1.0 * bytes / time_ms([&] { chunk_read_kernel<4><<<blocks, 256>>>(x, o, n, chunk); }) / 1e9,
           1.0 * bytes / time_ms([&] { chunk_read_kernel<8><<<blocks, 256>>>(x, o, n, chunk); }) / 1e9);
  }
  const int64_t n3 = n / 2;  // two 128 MiB operands
  printf("in-place add, one vector a thread (%lld blocks): %.2f TB/s\n", (long long)((n3 + 255) / 256),
         3.0 * n3 * 16 / time_ms([&] { onepass_add_kernel<<<(n3 + 255) / 256, 256>>>(x, x + n3, n3); }) / 1e9);
  for (int per_sm : {4, 8, 16}) {
    printf("in-place add, grid-stride %d/SM: U1 %.2f TB/s U4 %.2f TB/s\n", per_sm,
           3.0 * n3 * 16 / time_ms([&] { stride_add_kernel<1><<<per_sm * sms, 256>>>(x, x + n3, n3); }) / 1e9,
           3.0 * n3 * 16 / time_ms([&] { stride_add_kernel<4><<<per_sm * sms, 256>>>(x, x + n3, n3); }) / 1e9);
  }
  return 0;
}
