// L2 prefetch of the next ops' weights inside captured graphs. A batch-1 step streams ~1.7 GB of
// weights through a 50 MB L2, and its small-M GEMMs / convs read them at well under HBM speed.
// capture()'s eager warm-up records the weight tensors of the linear / conv ops in call order;
// while the graph is recorded, each such op forks a tiny kernel onto a side stream that
// prefetches the following ops' weights into L2 (cp.async.bulk.prefetch.L2) while the op runs.
// Results never depend on it (a prefetch is a hint); switches in weight_prefetch.cu.
#pragma once

#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>
#include <vector>

namespace sd::cuda {

struct WeightPrefetchOptions {
  bool enabled = false;
  size_t budget_bytes = size_t{24} << 20;  // weights prefetched and not yet used, at most
  int max_ahead = 4;                       // ops ahead of the running one
  int64_t max_rows = 2048;                 // only ops with at most this many GEMM rows (weight-bound)
  size_t min_bytes = size_t{1} << 20;      // only weights of at least this size
  int ctas = 8;                            // CTAs of the prefetch kernel (128 threads each)
  bool evict_last = false;                 // prefetched lines with the L2 evict_last priority
};

// From SDSERVE_CUDA_L2_PREFETCH (0 / 1), _MB, _AHEAD, _MAX_ROWS, _MIN_KB, _CTAS, _EVICT_LAST;
// read once per process.
const WeightPrefetchOptions& weight_prefetch_options();

class WeightPrefetcher {
 public:
  explicit WeightPrefetcher(const WeightPrefetchOptions& options) : opt_(options) {}
  ~WeightPrefetcher();
  WeightPrefetcher(const WeightPrefetcher&) = delete;
  WeightPrefetcher& operator=(const WeightPrefetcher&) = delete;

  // The eager warm-up of a capture: records the weight ops from here on.
  void begin_record();
  // The recorded pass: `main` is capturing; ops fork prefetches of what was recorded.
  void begin_emit(cudaStream_t main);
  // Ends either mode; in emit mode joins the side stream back into `main` (before EndCapture).
  void finish(cudaStream_t main);
  // finish() for a capture being abandoned: errors ignored, nothing thrown.
  void abandon(cudaStream_t main) noexcept;
  // Called by each linear / conv before its kernels are enqueued: w, its bytes, the GEMM rows.
  void on_weight_op(cudaStream_t main, const void* w, size_t bytes, int64_t rows);
  // Prefetch kernels enqueued by the last emit pass (tests, logs).
  int forks() const { return forks_; }
  // The last emit pass stopped matching the record (then it stops prefetching).
  bool lost() const { return lost_; }
  size_t recorded_ops() const { return ops_.size(); }

 private:
  struct Op {
    const void* w;
    size_t bytes;
    int64_t rows;
  };
  bool eligible(const Op& op) const;
  size_t prefetch_bytes(const Op& op) const;

  enum class Mode { kIdle, kRecord, kEmit };
  WeightPrefetchOptions opt_;
  Mode mode_ = Mode::kIdle;
  std::vector<Op> ops_;     // recorded, consecutive repeats of one weight merged
  size_t cursor_ = 0;       // emit: index of the op now running
  size_t next_ = 0;         // emit: first op not prefetched yet
  bool started_ = false;    // emit: the first op has been matched
  bool lost_ = false;       // emit: the calls stopped matching the record; no more prefetches
  int forks_ = 0;
  cudaStream_t side_ = nullptr;
  cudaEvent_t fork_ = nullptr, join_ = nullptr;
};

}  // namespace sd::cuda
