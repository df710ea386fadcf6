// Cluster residency probe (device measurement tool, not part of the engine): for a kernel shaped
// like the persistent ResNet block (384 threads, ~214 KB of dynamic shared memory, one CTA an SM),
// how many CTAs can be co-resident — what a cooperative launch needs — per cluster size, and
// whether a cooperative launch of clusters actually runs, with a grid barrier and a DSMEM read.
// Build on the device: nvcc -O2 -std=c++17 -arch=sm_90a cluster_probe.cu -o cluster_probe
#include <cooperative_groups.h>
#include <cuda_runtime.h>

#include <cstdio>

namespace cg = cooperative_groups;

__global__ void probe_kernel(int* out) {
  extern __shared__ int smem[];
  cg::cluster_group cluster = cg::this_cluster();
  smem[0] = static_cast<int>(blockIdx.x);
  cluster.sync();
  // Read the next CTA's first word of shared memory through the cluster (DSMEM).
  const unsigned rank = cluster.block_rank(), next = (rank + 1) % cluster.num_blocks();
  const int* remote = cluster.map_shared_rank(smem, next);
  const int v = remote[0];
  cluster.sync();
  cg::this_grid().sync();
  if (threadIdx.x == 0) out[blockIdx.x] = v;
}

int main() {
  int sms = 0;
  cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, 0);
  const size_t smem = 214 * 1024;
  cudaFuncSetAttribute(probe_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem));
  cudaFuncSetAttribute(probe_kernel, cudaFuncAttributeNonPortableClusterSizeAllowed, 1);
  int* out = nullptr;
  cudaMalloc(&out, 4096 * sizeof(int));
  std::printf("SMs %d, 384 threads, %zu KB shared a CTA\n", sms, smem / 1024);
  for (const int cs : {1, 2, 3, 4, 6, 8, 12, 16}) {
    cudaLaunchConfig_t cfg{};
    cfg.blockDim = dim3(384);
    cfg.dynamicSmemBytes = smem;
    cudaLaunchAttribute attr[2];
    attr[0].id = cudaLaunchAttributeClusterDimension;
    attr[0].val.clusterDim.x = cs, attr[0].val.clusterDim.y = 1, attr[0].val.clusterDim.z = 1;
    attr[1].id = cudaLaunchAttributeCooperative;
    attr[1].val.cooperative = 1;
    cfg.attrs = attr;
    cfg.numAttrs = 1;
    cfg.gridDim = dim3((sms / cs) * cs);
    int clusters = 0;
    const cudaError_t oe = cudaOccupancyMaxActiveClusters(&clusters, probe_kernel, &cfg);
    const int grid = clusters * cs;
    cudaError_t le = cudaErrorInvalidValue;
    int ok = 0;
    if (oe == cudaSuccess && grid > 0) {
      cfg.gridDim = dim3(grid);
      cfg.numAttrs = 2;
      le = cudaLaunchKernelEx(&cfg, probe_kernel, out);
      if (le == cudaSuccess) le = cudaDeviceSynchronize();
      if (le == cudaSuccess) {
        static int host[4096];
        cudaMemcpy(host, out, grid * sizeof(int), cudaMemcpyDeviceToHost);
        for (int b = 0; b < grid; ++b) ok += host[b] == (b / cs) * cs + ((b % cs) + 1) % cs;
      }
    }
    std::printf("cluster %2d: max active clusters %3d (%s) -> %3d CTAs co-resident; cooperative launch of %3d: %s, "
                "DSMEM reads right %d\n",
                cs, clusters, cudaGetErrorString(oe), grid, grid, cudaGetErrorString(le), ok);
    (void)cudaGetLastError();
  }
  return 0;
}
