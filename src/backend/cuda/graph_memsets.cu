// Memset nodes of captured graphs as kernel nodes (graph_memsets.h): the fill kernel and the
// graph rewrite. Measured with the CUPTI timeline (scripts/device/ktrace.cc): a batch-32 step
// graph held 140 memset nodes costing ~0.67 ms of idle GPU (docs/perf-notes.md, "Session 16").
#include <cstdlib>
#include <cstring>
#include <vector>

#include "backend/cuda/graph_memsets.h"

namespace sd::cuda {
namespace {

// cudaMemsetParams semantics: `height` rows of `width` elements of `elem` bytes (1, 2 or 4), rows
// `pitch` bytes apart, each element set to the low `elem` bytes of `value`.
__global__ void graph_memset_kernel(char* dst, size_t pitch, unsigned value, unsigned elem, size_t width,
                                    size_t height) {
  const size_t n = width * height;
  for (size_t i = size_t{blockIdx.x} * blockDim.x + threadIdx.x; i < n; i += size_t{gridDim.x} * blockDim.x) {
    char* p = dst + (i / width) * pitch + (i % width) * elem;
    if (elem == 4) {
      *reinterpret_cast<unsigned*>(p) = value;
    } else if (elem == 2) {
      *reinterpret_cast<unsigned short*>(p) = static_cast<unsigned short>(value);
    } else {
      *p = static_cast<char>(value);
    }
  }
}

bool plain(const cudaGraphEdgeData& e) { return e.type == cudaGraphDependencyTypeDefault && e.from_port == 0 && e.to_port == 0; }

}  // namespace

bool graph_memsets_as_kernels() {
  const char* env = std::getenv("SDSERVE_CUDA_GRAPH_MEMSETS");
  return !(env && std::strcmp(env, "keep") == 0);
}

cudaError_t replace_memset_nodes(cudaGraph_t graph, int* replaced) {
  *replaced = 0;
  size_t count = 0;
  cudaError_t err = cudaGraphGetNodes(graph, nullptr, &count);
  if (err != cudaSuccess || count == 0) return err;
  std::vector<cudaGraphNode_t> nodes(count);
  if ((err = cudaGraphGetNodes(graph, nodes.data(), &count)) != cudaSuccess) return err;
  for (cudaGraphNode_t node : nodes) {
    cudaGraphNodeType type;
    if ((err = cudaGraphNodeGetType(node, &type)) != cudaSuccess) return err;
    if (type != cudaGraphNodeTypeMemset) continue;
    cudaMemsetParams m{};
    if ((err = cudaGraphMemsetNodeGetParams(node, &m)) != cudaSuccess) return err;
    if (m.elementSize != 1 && m.elementSize != 2 && m.elementSize != 4) continue;
    size_t n_in = 0, n_out = 0;
    if ((err = cudaGraphNodeGetDependencies(node, nullptr, nullptr, &n_in)) != cudaSuccess) return err;
    if ((err = cudaGraphNodeGetDependentNodes(node, nullptr, nullptr, &n_out)) != cudaSuccess) return err;
    std::vector<cudaGraphNode_t> in(n_in), out(n_out);
    std::vector<cudaGraphEdgeData> in_edges(n_in), out_edges(n_out);
    if (n_in && (err = cudaGraphNodeGetDependencies(node, in.data(), in_edges.data(), &n_in)) != cudaSuccess) return err;
    if (n_out && (err = cudaGraphNodeGetDependentNodes(node, out.data(), out_edges.data(), &n_out)) != cudaSuccess)
      return err;
    bool all_plain = true;
    for (const auto& e : in_edges) all_plain = all_plain && plain(e);
    for (const auto& e : out_edges) all_plain = all_plain && plain(e);
    if (!all_plain) continue;
    char* dst = static_cast<char*>(m.dst);
    size_t pitch = m.pitch, width = m.width, height = m.height;
    unsigned value = m.value, elem = m.elementSize;
    void* args[] = {&dst, &pitch, &value, &elem, &width, &height};
    const size_t elements = width * height;
    const unsigned threads = elements < 256 ? 32u : 256u;
    const size_t blocks = (elements + threads - 1) / threads;
    cudaKernelNodeParams k{};
    k.func = reinterpret_cast<void*>(&graph_memset_kernel);
    k.gridDim = dim3(static_cast<unsigned>(blocks < 1024 ? (blocks ? blocks : 1) : 1024));
    k.blockDim = dim3(threads);
    k.kernelParams = args;
    cudaGraphNode_t fill = nullptr;
    if ((err = cudaGraphAddKernelNode(&fill, graph, in.data(), n_in, &k)) != cudaSuccess) return err;
    for (size_t i = 0; i < n_out; ++i) {
      if ((err = cudaGraphAddDependencies(graph, &fill, &out[i], nullptr, 1)) != cudaSuccess) return err;
    }
    if ((err = cudaGraphDestroyNode(node)) != cudaSuccess) return err;
    ++*replaced;
  }
  return cudaSuccess;
}

}  // namespace sd::cuda
