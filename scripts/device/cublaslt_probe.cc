// cuBLASLt GEMM probe (device measurement tool, not part of the engine): for the UNet's linear
// shapes at batch 1 (y[M,N] = x[M,K] w[N,K]^T + bias (+ residual), f16, f32 compute), times the
// heuristic's first 64 algorithms the way the engine times its first 8 (weights cold, x in L2).
// Build: g++ -O2 -std=c++17 cublaslt_probe.cc -I$CUDA/include -L... -lcublasLt -lcudart
#include <cublasLt.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <vector>

namespace {

#define CK(x)                                                                  \
  do {                                                                         \
    cublasStatus_t s_ = (x);                                                   \
    if (s_ != CUBLAS_STATUS_SUCCESS) {                                         \
      std::fprintf(stderr, "%s:%d %s: status %d\n", __FILE__, __LINE__, #x, (int)s_); \
      std::exit(1);                                                            \
    }                                                                          \
  } while (0)

struct Shape {
  int64_t m, n, k;
  bool residual;
};

void probe(cublasLtHandle_t lt, const Shape& s, int wanted, void* flush, size_t flush_bytes, void* scratch) {
  cublasLtMatmulDesc_t op;
  CK(cublasLtMatmulDescCreate(&op, CUBLAS_COMPUTE_32F, CUDA_R_32F));
  const cublasOperation_t tw = CUBLAS_OP_T, tx = CUBLAS_OP_N;
  CK(cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_TRANSA, &tw, sizeof(tw)));
  CK(cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_TRANSB, &tx, sizeof(tx)));
  const cublasLtEpilogue_t epi = CUBLASLT_EPILOGUE_BIAS;
  CK(cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_EPILOGUE, &epi, sizeof(epi)));
  void *x, *w, *y, *r, *bias, *ws;
  const size_t ws_bytes = 64 << 20;
  cudaMalloc(&x, s.m * s.k * 2);
  cudaMalloc(&w, s.n * s.k * 2);
  cudaMalloc(&y, s.m * s.n * 2);
  cudaMalloc(&r, s.m * s.n * 2);
  cudaMalloc(&bias, s.n * 2);
  cudaMalloc(&ws, ws_bytes);
  cudaMemset(x, 0x30, s.m * s.k * 2);
  cudaMemset(w, 0x20, s.n * s.k * 2);
  cudaMemset(r, 0x30, s.m * s.n * 2);
  cudaMemset(bias, 0x30, s.n * 2);
  CK(cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &bias, sizeof(bias)));
  cublasLtMatrixLayout_t lw, lx, ly;
  CK(cublasLtMatrixLayoutCreate(&lw, CUDA_R_16F, s.k, s.n, s.k));
  CK(cublasLtMatrixLayoutCreate(&lx, CUDA_R_16F, s.k, s.m, s.k));
  CK(cublasLtMatrixLayoutCreate(&ly, CUDA_R_16F, s.n, s.m, s.n));
  cublasLtMatmulPreference_t pref;
  CK(cublasLtMatmulPreferenceCreate(&pref));
  CK(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws_bytes, sizeof(ws_bytes)));
  std::vector<cublasLtMatmulHeuristicResult_t> res(wanted);
  int found = 0;
  CK(cublasLtMatmulAlgoGetHeuristic(lt, op, lw, lx, ly, ly, pref, wanted, res.data(), &found));
  const float alpha = 1.f, beta = s.residual ? 1.f : 0.f;
  const void* c = s.residual ? r : y;
  cudaEvent_t e0, e1;
  cudaEventCreate(&e0);
  cudaEventCreate(&e1);
  const double flops = 2.0 * s.m * s.n * s.k;
  std::printf("\n== %lldx%lldx%lld%s: %d heuristic results\n", (long long)s.m, (long long)s.n, (long long)s.k,
              s.residual ? " + residual" : "", found);
  struct Row {
    float us;
    int rank;
    int tile, stages, splitk, swizzle, cluster, id;
  };
  std::vector<Row> rows;
  for (int i = 0; i < found; ++i) {
    if (res[i].state != CUBLAS_STATUS_SUCCESS) continue;
    const cublasLtMatmulAlgo_t* a = &res[i].algo;
    if (cublasLtMatmul(lt, op, &alpha, w, lw, x, lx, &beta, c, ly, y, ly, a, ws, ws_bytes, 0) !=
        CUBLAS_STATUS_SUCCESS)
      continue;
    std::vector<float> t;
    for (int rep = 0; rep < 7; ++rep) {
      cudaMemsetAsync(flush, rep, flush_bytes);                        // weights out of L2
      cudaMemcpyAsync(scratch, x, s.m * s.k * 2, cudaMemcpyDeviceToDevice);  // x back in
      cudaEventRecord(e0);
      cublasLtMatmul(lt, op, &alpha, w, lw, x, lx, &beta, c, ly, y, ly, a, ws, ws_bytes, 0);
      cudaEventRecord(e1);
      cudaEventSynchronize(e1);
      float ms = 0;
      cudaEventElapsedTime(&ms, e0, e1);
      t.push_back(ms * 1000.f);
    }
    std::sort(t.begin(), t.end());
    Row row{t[3], i, 0, 0, 0, 0, 0, 0};
    size_t wr = 0;
    cublasLtMatmulAlgoConfigGetAttribute(a, CUBLASLT_ALGO_CONFIG_ID, &row.id, sizeof(int), &wr);
    cublasLtMatmulAlgoConfigGetAttribute(a, CUBLASLT_ALGO_CONFIG_TILE_ID, &row.tile, sizeof(int), &wr);
    cublasLtMatmulAlgoConfigGetAttribute(a, CUBLASLT_ALGO_CONFIG_STAGES_ID, &row.stages, sizeof(int), &wr);
    cublasLtMatmulAlgoConfigGetAttribute(a, CUBLASLT_ALGO_CONFIG_SPLITK_NUM, &row.splitk, sizeof(int), &wr);
    cublasLtMatmulAlgoConfigGetAttribute(a, CUBLASLT_ALGO_CONFIG_CTA_SWIZZLING, &row.swizzle, sizeof(int), &wr);
    cublasLtMatmulAlgoConfigGetAttribute(a, CUBLASLT_ALGO_CONFIG_CLUSTER_SHAPE_ID, &row.cluster, sizeof(int), &wr);
    rows.push_back(row);
  }
  float best8 = 1e9f;
  for (const Row& q : rows)
    if (q.rank < 8) best8 = std::min(best8, q.us);
  std::sort(rows.begin(), rows.end(), [](const Row& a, const Row& b) { return a.us < b.us; });
  std::printf("best of the first 8: %.2f us (%.0f TFLOP/s)\n", best8, flops / best8 / 1e6);
  for (size_t i = 0; i < rows.size() && i < 8; ++i)
    std::printf("  %7.2f us %5.0f TFLOP/s  rank %2d  algo %d tile %d stages %d splitk %d swizzle %d cluster %d\n",
                rows[i].us, flops / rows[i].us / 1e6, rows[i].rank, rows[i].id, rows[i].tile, rows[i].stages,
                rows[i].splitk, rows[i].swizzle, rows[i].cluster);
  cudaFree(x);
  cudaFree(w);
  cudaFree(y);
  cudaFree(r);
  cudaFree(bias);
  cudaFree(ws);
}

}  // namespace

int main(int argc, char** argv) {
  cublasLtHandle_t lt;
  CK(cublasLtCreate(&lt));
  const int wanted = argc > 1 ? std::atoi(argv[1]) : 64;
  const size_t flush_bytes = size_t{128} << 20;
  void *flush, *scratch;
  cudaMalloc(&flush, flush_bytes);
  cudaMalloc(&scratch, size_t{64} << 20);
  // Batch 1 = 2 UNet rows: tokens x 2 per level; q/k/v/out (C -> C), ff out (4C -> C, + residual),
  // proj in / out (C -> C), the decoder's shortcut-sized GEMMs.
  const Shape shapes[] = {{8192, 320, 320, false},   {8192, 320, 320, true},   {8192, 320, 1280, true},
                          {2048, 640, 640, false},   {2048, 640, 640, true},   {2048, 640, 2560, true},
                          {512, 1280, 1280, false},  {512, 1280, 1280, true},  {512, 1280, 5120, true},
                          {128, 1280, 1280, false},  {128, 1280, 1280, true},  {128, 1280, 5120, true},
                          {8192, 960, 320, false},   {2048, 1920, 640, false}, {512, 3840, 1280, false}};
  for (const Shape& s : shapes) probe(lt, s, wanted, flush, flush_bytes, scratch);
  cublasLtDestroy(lt);
  return 0;
}
