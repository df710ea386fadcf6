// Memset nodes of a captured CUDA graph rewritten as kernel nodes. cuBLASLt and cuDNN enqueue
// 4-byte memsets (semaphores in their workspaces) before many of their kernels; in a graph each
// memset node held the GPU idle for 4-7 us, where two kernel nodes follow each other in ~0.5 us.
#pragma once

#include <cuda_runtime.h>

namespace sd::cuda {

// Replaces every memset node of `graph` whose edges are all plain (default) edges by a kernel
// node that writes the same bytes, with the same dependencies and dependents; nodes with other
// edge types stay. *replaced counts the rewritten nodes. On an error the graph may be partly
// rewritten (still a correct graph: each step keeps the ordering) and the error is returned.
// SDSERVE_CUDA_GRAPH_MEMSETS=keep leaves graphs as captured (capture() checks it).
cudaError_t replace_memset_nodes(cudaGraph_t graph, int* replaced);

// Whether capture() rewrites its graphs (SDSERVE_CUDA_GRAPH_MEMSETS, read per call; default yes).
bool graph_memsets_as_kernels();

}  // namespace sd::cuda
