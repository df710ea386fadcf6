// WeightPrefetcher (weight_prefetch.h): the record / emit passes of a capture and the prefetch
// kernel, whose threads issue cp.async.bulk.prefetch.L2 over 16 KB chunks of up to kMaxRanges
// weight ranges and exit (nothing waits for the prefetches; sm_90 and later only).
#include "backend/cuda/weight_prefetch.h"

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "backend/cuda/cuda_check.h"

namespace sd::cuda {

namespace {

constexpr int kMaxRanges = 8;
constexpr uint32_t kChunk = 16384;
constexpr size_t kResyncWindow = 64;  // ops searched ahead for a call that skipped some

struct PrefetchList {
  const char* ptr[kMaxRanges];
  uint32_t bytes[kMaxRanges];  // multiples of 16
  int n;
};

__global__ void __launch_bounds__(128) l2_prefetch_kernel(PrefetchList list, int evict_last) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  const uint32_t tid = blockIdx.x * blockDim.x + threadIdx.x, threads = gridDim.x * blockDim.x;
  uint64_t policy = 0;
  if (evict_last) asm volatile("createpolicy.fractional.L2::evict_last.b64 %0, 1.0;\n" : "=l"(policy));
  for (int r = 0; r < list.n; ++r) {
    const uint32_t bytes = list.bytes[r];
    for (uint32_t off = tid * kChunk; off < bytes; off += threads * kChunk) {
      const uint32_t n = min(kChunk, bytes - off);
      const char* p = list.ptr[r] + off;
      if (evict_last) {
        asm volatile("cp.async.bulk.prefetch.L2.global.L2::cache_hint [%0], %1, %2;\n" ::"l"(p), "r"(n), "l"(policy)
                     : "memory");
      } else {
        asm volatile("cp.async.bulk.prefetch.L2.global [%0], %1;\n" ::"l"(p), "r"(n) : "memory");
      }
    }
  }
#endif
}

int64_t env_int(const char* name, int64_t fallback, int64_t lo, int64_t hi) {
  const char* env = std::getenv(name);
  if (!env || !*env) return fallback;
  char* end = nullptr;
  const long long v = std::strtoll(env, &end, 10);
  if (*end != '\0' || v < lo || v > hi) {
    std::fprintf(stderr, "[sdserve] ignoring %s='%s' (want an integer in [%lld, %lld])\n", name, env,
                 static_cast<long long>(lo), static_cast<long long>(hi));
    return fallback;
  }
  return v;
}

bool log_prefetch() {
  static const bool on = [] {
    const char* env = std::getenv("SDSERVE_CUDA_L2_PREFETCH_LOG");
    return env && env[0] == '1';
  }();
  return on;
}

}  // namespace

const WeightPrefetchOptions& weight_prefetch_options() {
  static const WeightPrefetchOptions options = [] {
    WeightPrefetchOptions o;
    o.enabled = env_int("SDSERVE_CUDA_L2_PREFETCH", o.enabled ? 1 : 0, 0, 1) == 1;
    o.budget_bytes = static_cast<size_t>(env_int("SDSERVE_CUDA_L2_PREFETCH_MB", o.budget_bytes >> 20, 1, 1024)) << 20;
    o.max_ahead = static_cast<int>(env_int("SDSERVE_CUDA_L2_PREFETCH_AHEAD", o.max_ahead, 1, 64));
    o.max_rows = env_int("SDSERVE_CUDA_L2_PREFETCH_MAX_ROWS", o.max_rows, 1, int64_t{1} << 40);
    o.min_bytes = static_cast<size_t>(env_int("SDSERVE_CUDA_L2_PREFETCH_MIN_KB", o.min_bytes >> 10, 0, 1 << 20)) << 10;
    o.ctas = static_cast<int>(env_int("SDSERVE_CUDA_L2_PREFETCH_CTAS", o.ctas, 1, 1024));
    o.evict_last = env_int("SDSERVE_CUDA_L2_PREFETCH_EVICT_LAST", o.evict_last ? 1 : 0, 0, 1) == 1;
    return o;
  }();
  return options;
}

WeightPrefetcher::~WeightPrefetcher() {
  if (fork_) cudaEventDestroy(fork_);
  if (join_) cudaEventDestroy(join_);
  if (side_) cudaStreamDestroy(side_);
  cudaGetLastError();
}

bool WeightPrefetcher::eligible(const Op& op) const {
  return op.bytes >= std::max<size_t>(opt_.min_bytes, 16) && op.rows <= opt_.max_rows &&
         reinterpret_cast<uintptr_t>(op.w) % 16 == 0;
}

size_t WeightPrefetcher::prefetch_bytes(const Op& op) const {
  return std::min(op.bytes, opt_.budget_bytes) & ~size_t{15};
}

void WeightPrefetcher::begin_record() {
  mode_ = opt_.enabled ? Mode::kRecord : Mode::kIdle;
  ops_.clear();
}

void WeightPrefetcher::begin_emit(cudaStream_t main) {
  (void)main;
  mode_ = opt_.enabled && !ops_.empty() ? Mode::kEmit : Mode::kIdle;
  cursor_ = next_ = 0;
  started_ = lost_ = false;
  forks_ = 0;
  if (mode_ != Mode::kEmit || side_) return;
  SD_CUDA_CHECK(cudaStreamCreateWithFlags(&side_, cudaStreamNonBlocking));
  SD_CUDA_CHECK(cudaEventCreateWithFlags(&fork_, cudaEventDisableTiming));
  SD_CUDA_CHECK(cudaEventCreateWithFlags(&join_, cudaEventDisableTiming));
}

void WeightPrefetcher::finish(cudaStream_t main) {
  if (mode_ == Mode::kEmit && forks_ > 0) {
    SD_CUDA_CHECK(cudaEventRecord(join_, side_));
    SD_CUDA_CHECK(cudaStreamWaitEvent(main, join_, 0));
  }
  if (mode_ == Mode::kEmit && log_prefetch()) {
    std::fprintf(stderr, "[sdserve] L2 prefetch: %zu weight ops recorded, %d prefetch kernels%s\n", ops_.size(), forks_,
                 lost_ ? ", stopped at a call that did not match the record" : "");
  }
  mode_ = Mode::kIdle;
}

void WeightPrefetcher::abandon(cudaStream_t main) noexcept {
  if (mode_ == Mode::kEmit && forks_ > 0) {
    cudaEventRecord(join_, side_);
    cudaStreamWaitEvent(main, join_, 0);
  }
  cudaGetLastError();
  mode_ = Mode::kIdle;
}

void WeightPrefetcher::on_weight_op(cudaStream_t main, const void* w, size_t bytes, int64_t rows) {
  if (mode_ == Mode::kRecord) {
    if (!ops_.empty() && ops_.back().w == w) return;  // autotuning's repeats of one op
    ops_.push_back({w, bytes, rows});
    return;
  }
  if (mode_ != Mode::kEmit || lost_) return;
  if (started_ && ops_[cursor_].w == w) return;
  const size_t from = started_ ? cursor_ + 1 : 0, to = std::min(ops_.size(), from + kResyncWindow);
  size_t at = from;
  while (at < to && ops_[at].w != w) ++at;
  if (at == to) {
    lost_ = true;
    return;
  }
  cursor_ = at;
  started_ = true;
  next_ = std::max(next_, cursor_ + 1);
  size_t in_flight = 0;  // prefetched, not yet run
  for (size_t i = cursor_ + 1; i < next_; ++i) {
    if (eligible(ops_[i])) in_flight += prefetch_bytes(ops_[i]);
  }
  PrefetchList list{};
  while (next_ < ops_.size() && next_ - cursor_ <= static_cast<size_t>(opt_.max_ahead) && list.n < kMaxRanges) {
    const Op& op = ops_[next_];
    if (eligible(op)) {
      const size_t n = prefetch_bytes(op);
      if (in_flight > 0 && in_flight + n > opt_.budget_bytes) break;
      list.ptr[list.n] = static_cast<const char*>(op.w);
      list.bytes[list.n] = static_cast<uint32_t>(n);
      ++list.n;
      in_flight += n;
    }
    ++next_;
  }
  if (list.n == 0) return;
  SD_CUDA_CHECK(cudaEventRecord(fork_, main));
  SD_CUDA_CHECK(cudaStreamWaitEvent(side_, fork_, 0));
  l2_prefetch_kernel<<<opt_.ctas, 128, 0, side_>>>(list, opt_.evict_last ? 1 : 0);
  SD_CUDA_LAUNCH_CHECK();
  ++forks_;
}

}  // namespace sd::cuda
