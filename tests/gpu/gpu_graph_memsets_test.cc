// Memset nodes of a captured graph rewritten as kernel nodes (graph_memsets.h): the rewritten
// graph writes exactly the bytes the captured one does (1-, 2- and 4-byte elements, pitched 2D
// memsets, memsets between dependent copies), and no memset node is left.
#include <gtest/gtest.h>

#include <cstdint>
#include <random>
#include <vector>

#include "gpu_test_util.h"

#if SD_TEST_CUDA_INTERNALS
#include <cuda_runtime.h>

#include "backend/cuda/graph_memsets.h"
#endif

namespace sd::testing {
namespace {

#if SD_TEST_CUDA_INTERNALS

constexpr size_t kBytes = 1 << 16;

int memset_nodes(cudaGraph_t g) {
  size_t n = 0;
  EXPECT_EQ(cudaGraphGetNodes(g, nullptr, &n), cudaSuccess);
  std::vector<cudaGraphNode_t> nodes(n);
  EXPECT_EQ(cudaGraphGetNodes(g, nodes.data(), &n), cudaSuccess);
  int count = 0;
  for (cudaGraphNode_t node : nodes) {
    cudaGraphNodeType t;
    EXPECT_EQ(cudaGraphNodeGetType(node, &t), cudaSuccess);
    count += t == cudaGraphNodeTypeMemset;
  }
  return count;
}

// Runs `exec` on buffers first filled with the same random bytes; returns all three buffers.
std::vector<uint8_t> run(cudaGraphExec_t exec, cudaStream_t s, uint8_t* dev, const std::vector<uint8_t>& init) {
  EXPECT_EQ(cudaMemcpy(dev, init.data(), init.size(), cudaMemcpyHostToDevice), cudaSuccess);
  EXPECT_EQ(cudaGraphLaunch(exec, s), cudaSuccess);
  EXPECT_EQ(cudaStreamSynchronize(s), cudaSuccess);
  std::vector<uint8_t> out(init.size());
  EXPECT_EQ(cudaMemcpy(out.data(), dev, out.size(), cudaMemcpyDeviceToHost), cudaSuccess);
  return out;
}

TEST(GpuGraphMemsets, RewrittenGraphWritesTheSameBytes) {
  SD_REQUIRE_GPU();
  ASSERT_EQ(cudaSetDevice(0), cudaSuccess);
  uint8_t* dev = nullptr;
  ASSERT_EQ(cudaMalloc(&dev, 3 * kBytes), cudaSuccess);
  uint8_t *a = dev, *b = dev + kBytes, *c = dev + 2 * kBytes;
  cudaStream_t s;
  ASSERT_EQ(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking), cudaSuccess);
  // Captured: byte memset of an odd length at an odd offset, a dependent copy of it, a pitched
  // 2D memset, and a copy that reads the 2D region.
  cudaGraph_t graph = nullptr;
  ASSERT_EQ(cudaStreamBeginCapture(s, cudaStreamCaptureModeThreadLocal), cudaSuccess);
  ASSERT_EQ(cudaMemsetAsync(a + 3, 0x5a, 1001, s), cudaSuccess);
  ASSERT_EQ(cudaMemcpyAsync(b, a, 2048, cudaMemcpyDeviceToDevice, s), cudaSuccess);
  ASSERT_EQ(cudaMemset2DAsync(c + 16, 256, 0xc3, 100, 7, s), cudaSuccess);
  ASSERT_EQ(cudaMemcpyAsync(b + 4096, c, 2048, cudaMemcpyDeviceToDevice, s), cudaSuccess);
  ASSERT_EQ(cudaStreamEndCapture(s, &graph), cudaSuccess);
  // Added by hand (the runtime's memsets are bytes): 4-byte and 2-byte elements, as cuBLASLt's.
  cudaGraphNode_t root = nullptr, n4 = nullptr, n2 = nullptr;
  size_t n_roots = 1;
  ASSERT_EQ(cudaGraphGetRootNodes(graph, &root, &n_roots), cudaSuccess);
  cudaMemsetParams p4{};
  p4.dst = a + 8192;
  p4.value = 0xdeadbeefu;
  p4.elementSize = 4;
  p4.width = 77;
  p4.height = 3;
  p4.pitch = 400;
  ASSERT_EQ(cudaGraphAddMemsetNode(&n4, graph, &root, 1, &p4), cudaSuccess);
  cudaMemsetParams p2 = p4;
  p2.dst = a + 12290;
  p2.value = 0xbeefu;
  p2.elementSize = 2;
  p2.width = 333;
  p2.height = 1;
  p2.pitch = 0;
  ASSERT_EQ(cudaGraphAddMemsetNode(&n2, graph, &n4, 1, &p2), cudaSuccess);
  cudaMemcpy3DParms cp{};  // a copy after the 2-byte memset reads what it wrote
  cp.srcPtr = make_cudaPitchedPtr(a + 12288, 1024, 1024, 1);
  cp.dstPtr = make_cudaPitchedPtr(b + 8192, 1024, 1024, 1);
  cp.extent = make_cudaExtent(1024, 1, 1);
  cp.kind = cudaMemcpyDeviceToDevice;
  cudaGraphNode_t copy = nullptr;
  ASSERT_EQ(cudaGraphAddMemcpyNode(&copy, graph, &n2, 1, &cp), cudaSuccess);
  ASSERT_EQ(memset_nodes(graph), 4);

  cudaGraph_t rewritten = nullptr;
  ASSERT_EQ(cudaGraphClone(&rewritten, graph), cudaSuccess);
  int replaced = 0;
  ASSERT_EQ(sd::cuda::replace_memset_nodes(rewritten, &replaced), cudaSuccess);
  EXPECT_EQ(replaced, 4);
  EXPECT_EQ(memset_nodes(rewritten), 0);

  std::vector<uint8_t> init(3 * kBytes);
  std::mt19937 rng(7);
  for (auto& v : init) v = static_cast<uint8_t>(rng());
  cudaGraphExec_t e0 = nullptr, e1 = nullptr;
  ASSERT_EQ(cudaGraphInstantiate(&e0, graph, 0), cudaSuccess);
  ASSERT_EQ(cudaGraphInstantiate(&e1, rewritten, 0), cudaSuccess);
  const std::vector<uint8_t> want = run(e0, s, dev, init);
  const std::vector<uint8_t> got = run(e1, s, dev, init);
  ASSERT_NE(want, init);  // the graph did write
  size_t diff = 0;
  for (size_t i = 0; i < want.size(); ++i) diff += want[i] != got[i];
  EXPECT_EQ(diff, 0u) << "bytes that differ between the captured and the rewritten graph";
  EXPECT_EQ(want[3], 0x5a);
  EXPECT_EQ(want[2 * kBytes + 16 + 256 * 6 + 99], 0xc3);
  cudaGraphExecDestroy(e0);
  cudaGraphExecDestroy(e1);
  cudaGraphDestroy(graph);
  cudaGraphDestroy(rewritten);
  cudaStreamDestroy(s);
  cudaFree(dev);
}

#else

TEST(GpuGraphMemsets, RewrittenGraphWritesTheSameBytes) {
  SD_REQUIRE_GPU();
  GTEST_SKIP() << "built without the CUDA backend's internals";
}

#endif

}  // namespace
}  // namespace sd::testing
