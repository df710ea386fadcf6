// Kernel timeline for device measurements (not part of the engine): a CUDA injection library
// (CUDA_INJECTION64_PATH=libktrace.so) that records every kernel and memset, graph nodes included,
// through CUPTI's activity API and writes "start end stream graph node grid name" lines to $KTRACE_OUT.
// Build here and carry with libcupti.so.13 beside it: g++ -O2 -shared -fPIC -std=c++17
//   -I/usr/local/cuda/include ktrace.cc -L/usr/local/cuda/lib -lcupti -Wl,-rpath,'$ORIGIN' -o libktrace.so
#include <cupti.h>

#include <cstdio>
#include <cstdlib>
#include <mutex>

namespace {

FILE* g_out = nullptr;
std::mutex g_mutex;

void CUPTIAPI buffer_requested(uint8_t** buffer, size_t* size, size_t* max_records) {
  *size = 16u << 20;
  *buffer = static_cast<uint8_t*>(std::aligned_alloc(8, *size));
  *max_records = 0;
}

void CUPTIAPI buffer_completed(CUcontext, uint32_t, uint8_t* buffer, size_t, size_t valid) {
  std::lock_guard<std::mutex> lock(g_mutex);
  CUpti_Activity* r = nullptr;
  while (cuptiActivityGetNextRecord(buffer, valid, &r) == CUPTI_SUCCESS) {
    if (!g_out) break;
    if (r->kind == CUPTI_ACTIVITY_KIND_CONCURRENT_KERNEL || r->kind == CUPTI_ACTIVITY_KIND_KERNEL) {
      const auto* k = reinterpret_cast<const CUpti_ActivityKernel10*>(r);
      std::fprintf(g_out, "%llu %llu %u %u %llu %d %s\n", static_cast<unsigned long long>(k->start),
                   static_cast<unsigned long long>(k->end), k->streamId, k->graphId,
                   static_cast<unsigned long long>(k->graphNodeId), k->gridX * k->gridY * k->gridZ, k->name);
    } else if (r->kind == CUPTI_ACTIVITY_KIND_MEMSET) {
      const auto* m = reinterpret_cast<const CUpti_ActivityMemset4*>(r);
      std::fprintf(g_out, "%llu %llu %u %u %llu 0 memset_%llu\n", static_cast<unsigned long long>(m->start),
                   static_cast<unsigned long long>(m->end), m->streamId, m->graphId,
                   static_cast<unsigned long long>(m->graphNodeId), static_cast<unsigned long long>(m->bytes));
    } else if (r->kind == CUPTI_ACTIVITY_KIND_MEMCPY) {
      const auto* m = reinterpret_cast<const CUpti_ActivityMemcpy6*>(r);
      std::fprintf(g_out, "%llu %llu %u %u %llu 0 memcpy_%llu\n", static_cast<unsigned long long>(m->start),
                   static_cast<unsigned long long>(m->end), m->streamId, m->graphId,
                   static_cast<unsigned long long>(m->graphNodeId), static_cast<unsigned long long>(m->bytes));
    }
  }
  std::free(buffer);
}

void finish() {
  cuptiActivityFlushAll(1);
  std::lock_guard<std::mutex> lock(g_mutex);
  if (g_out) std::fclose(g_out);
  g_out = nullptr;
}

}  // namespace

extern "C" int InitializeInjection(void) {
  const char* path = std::getenv("KTRACE_OUT");
  g_out = std::fopen(path ? path : "ktrace.txt", "w");
  if (!g_out) return 0;
  cuptiActivityRegisterCallbacks(buffer_requested, buffer_completed);
  cuptiActivityEnable(CUPTI_ACTIVITY_KIND_CONCURRENT_KERNEL);
  cuptiActivityEnable(CUPTI_ACTIVITY_KIND_MEMSET);
  cuptiActivityEnable(CUPTI_ACTIVITY_KIND_MEMCPY);
  std::atexit(finish);
  return 1;
}
