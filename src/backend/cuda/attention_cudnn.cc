// Attention through cuDNN 9's fused SDPA operation (CUDNN_BACKEND_OPERATION_SDPA_FWD_DESCRIPTOR,
// graph API): Q/K/V/O described as [B, H, L, D] over our [B, L, row stride] buffers, the softmax
// scale passed by value. One execution plan per shape, strides and device, built on first use or
// ahead of it in background threads (prepare_attention_cudnn).
#include <condition_variable>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <limits>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <thread>
#include <string>
#include <tuple>
#include <vector>

#include "backend/cuda/attention.h"
#include "backend/cuda/cuda_backend_impl.h"
#include "backend/cuda/cuda_check.h"
#include "backend/cuda/cudnn_plans.h"

namespace sd::cuda {

namespace {

constexpr int64_t kUidQ = 1, kUidK = 2, kUidV = 3, kUidO = 4, kUidScale = 5;
constexpr int kDefaultCandidates = 8;  // SDSERVE_CUDNN_CANDIDATES overrides
constexpr int64_t kMaxWorkspace = int64_t{256} << 20;

struct SdpaKey {
  DType dtype;
  int64_t batch, heads, lq, lk, d;
  int64_t q_stride, kv_stride;  // row strides of Q and K/V in elements (O is contiguous)
  auto tie() const { return std::tie(dtype, batch, heads, lq, lk, d, q_stride, kv_stride); }
  bool operator<(const SdpaKey& o) const { return tie() < o.tie(); }
};

struct SdpaPlan {
  cudnnHandle_t handle = nullptr;               // the handle the plans were built with, and run with
  std::vector<cudnnBackendDescriptor_t> plans;  // candidates until one has run, then exactly one
  std::vector<int64_t> workspace;
  std::vector<cudnnBackendDescriptor_t> keep;  // tensors, op, graph, configs
  bool proven = false;                         // plans[0] has run successfully
};

void destroy_all(std::vector<cudnnBackendDescriptor_t>& ds) {
  for (cudnnBackendDescriptor_t d : ds) {
    if (d) cudnnBackendDestroyDescriptor(d);
  }
  ds.clear();
}

bool log_enabled() {
  static const bool on = [] {
    const char* env = std::getenv("SDSERVE_CUDNN_LOG");
    return env && env[0] == '1';
  }();
  return on;
}

std::string key_str(const SdpaKey& k) {
  return std::string(dtype_name(k.dtype)) + " b" + std::to_string(k.batch) + " h" + std::to_string(k.heads) + " lq" +
         std::to_string(k.lq) + " lk" + std::to_string(k.lk) + " d" + std::to_string(k.d) + " strides " +
         std::to_string(k.q_stride) + "/" + std::to_string(k.kv_stride);
}

void set(cudnnBackendDescriptor_t d, cudnnBackendAttributeName_t name, cudnnBackendAttributeType_t type, int64_t n,
         const void* value) {
  SD_CUDNN_CHECK(cudnnBackendSetAttribute(d, name, type, n, value));
}

cudnnBackendDescriptor_t create(cudnnBackendDescriptorType_t type, std::vector<cudnnBackendDescriptor_t>& keep) {
  cudnnBackendDescriptor_t d = nullptr;
  SD_CUDNN_CHECK(cudnnBackendCreateDescriptor(type, &d));
  keep.push_back(d);
  return d;
}

// [B, H, L, D] view of a [B, L, row_stride] buffer (head h at column h*D).
cudnnBackendDescriptor_t make_bhld(int64_t uid, const SdpaKey& k, int64_t len, int64_t row_stride,
                                   std::vector<cudnnBackendDescriptor_t>& keep) {
  cudnnBackendDescriptor_t t = create(CUDNN_BACKEND_TENSOR_DESCRIPTOR, keep);
  const cudnnDataType_t dt = cudnn_data_type(k.dtype);
  const int64_t dims[4] = {k.batch, k.heads, len, k.d};
  const int64_t strides[4] = {len * row_stride, k.d, row_stride, 1};
  const int64_t align = 16;
  set(t, CUDNN_ATTR_TENSOR_DATA_TYPE, CUDNN_TYPE_DATA_TYPE, 1, &dt);
  set(t, CUDNN_ATTR_TENSOR_DIMENSIONS, CUDNN_TYPE_INT64, 4, dims);
  set(t, CUDNN_ATTR_TENSOR_STRIDES, CUDNN_TYPE_INT64, 4, strides);
  set(t, CUDNN_ATTR_TENSOR_UNIQUE_ID, CUDNN_TYPE_INT64, 1, &uid);
  set(t, CUDNN_ATTR_TENSOR_BYTE_ALIGNMENT, CUDNN_TYPE_INT64, 1, &align);
  SD_CUDNN_CHECK(cudnnBackendFinalize(t));
  return t;
}

cudnnBackendDescriptor_t make_scale(std::vector<cudnnBackendDescriptor_t>& keep) {
  cudnnBackendDescriptor_t t = create(CUDNN_BACKEND_TENSOR_DESCRIPTOR, keep);
  const cudnnDataType_t dt = CUDNN_DATA_FLOAT;
  const int64_t dims[4] = {1, 1, 1, 1}, strides[4] = {1, 1, 1, 1};
  const int64_t uid = kUidScale, align = 16;
  const bool by_value = true;
  set(t, CUDNN_ATTR_TENSOR_DATA_TYPE, CUDNN_TYPE_DATA_TYPE, 1, &dt);
  set(t, CUDNN_ATTR_TENSOR_DIMENSIONS, CUDNN_TYPE_INT64, 4, dims);
  set(t, CUDNN_ATTR_TENSOR_STRIDES, CUDNN_TYPE_INT64, 4, strides);
  set(t, CUDNN_ATTR_TENSOR_UNIQUE_ID, CUDNN_TYPE_INT64, 1, &uid);
  set(t, CUDNN_ATTR_TENSOR_BYTE_ALIGNMENT, CUDNN_TYPE_INT64, 1, &align);
  set(t, CUDNN_ATTR_TENSOR_IS_BY_VALUE, CUDNN_TYPE_BOOLEAN, 1, &by_value);
  SD_CUDNN_CHECK(cudnnBackendFinalize(t));
  return t;
}

// Builds the candidate plans into `out` (throws sd::Error on API failures).
void build(cudnnHandle_t handle, const SdpaKey& k, SdpaPlan& out) {
  cudnnBackendDescriptor_t q = make_bhld(kUidQ, k, k.lq, k.q_stride, out.keep);
  cudnnBackendDescriptor_t kt = make_bhld(kUidK, k, k.lk, k.kv_stride, out.keep);
  cudnnBackendDescriptor_t v = make_bhld(kUidV, k, k.lk, k.kv_stride, out.keep);
  cudnnBackendDescriptor_t o = make_bhld(kUidO, k, k.lq, k.heads * k.d, out.keep);
  cudnnBackendDescriptor_t scale = make_scale(out.keep);

  cudnnBackendDescriptor_t op = create(CUDNN_BACKEND_OPERATION_SDPA_FWD_DESCRIPTOR, out.keep);
  set(op, CUDNN_ATTR_OPERATION_SDPA_FWD_QDESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &q);
  set(op, CUDNN_ATTR_OPERATION_SDPA_FWD_KDESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &kt);
  set(op, CUDNN_ATTR_OPERATION_SDPA_FWD_VDESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &v);
  set(op, CUDNN_ATTR_OPERATION_SDPA_FWD_ODESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &o);
  set(op, CUDNN_ATTR_OPERATION_SDPA_FWD_SCALEDESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &scale);
  SD_CUDNN_CHECK(cudnnBackendFinalize(op));

  cudnnBackendDescriptor_t graph = create(CUDNN_BACKEND_OPERATIONGRAPH_DESCRIPTOR, out.keep);
  set(graph, CUDNN_ATTR_OPERATIONGRAPH_OPS, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &op);
  cudnnBackendSetAttribute(graph, CUDNN_ATTR_OPERATIONGRAPH_HANDLE, CUDNN_TYPE_HANDLE, 1, &handle);  // deprecated
  SD_CUDNN_CHECK(cudnnBackendFinalize(graph));

  CudnnCandidates c = find_cudnn_plans(handle, graph, cudnn_max_candidates(kDefaultCandidates), kMaxWorkspace);
  out.plans = std::move(c.plans);
  out.workspace = std::move(c.workspace);
  out.keep.insert(out.keep.end(), c.configs.begin(), c.configs.end());
}

cudnnStatus_t execute(cudnnHandle_t handle, cudnnBackendDescriptor_t plan, const AttentionArgs& a, float* scale,
                      void* workspace) {
  cudnnBackendDescriptor_t pack = nullptr;
  cudnnStatus_t st = cudnnBackendCreateDescriptor(CUDNN_BACKEND_VARIANT_PACK_DESCRIPTOR, &pack);
  if (st != CUDNN_STATUS_SUCCESS) return st;
  void* ptrs[5] = {const_cast<void*>(a.q), const_cast<void*>(a.k), const_cast<void*>(a.v), a.o, scale};
  const int64_t uids[5] = {kUidQ, kUidK, kUidV, kUidO, kUidScale};
  st = cudnnBackendSetAttribute(pack, CUDNN_ATTR_VARIANT_PACK_DATA_POINTERS, CUDNN_TYPE_VOID_PTR, 5, ptrs);
  if (st == CUDNN_STATUS_SUCCESS) {
    st = cudnnBackendSetAttribute(pack, CUDNN_ATTR_VARIANT_PACK_UNIQUE_IDS, CUDNN_TYPE_INT64, 5, uids);
  }
  if (st == CUDNN_STATUS_SUCCESS) {
    st = cudnnBackendSetAttribute(pack, CUDNN_ATTR_VARIANT_PACK_WORKSPACE, CUDNN_TYPE_VOID_PTR, 1, &workspace);
  }
  if (st == CUDNN_STATUS_SUCCESS) st = cudnnBackendFinalize(pack);
  if (st == CUDNN_STATUS_SUCCESS) st = cudnnBackendExecute(handle, plan, pack);
  cudnnBackendDestroyDescriptor(pack);
  return st;
}

// One cuDNN handle and plan cache per device, for the whole process (never destroyed: plans
// may be used until exit, after which the driver reclaims everything). Background builds
// (prepare_attention_cudnn) use a handle each, which their plans keep.
struct DeviceSdpa {
  std::mutex mu;
  std::condition_variable built;  // a background build finished
  cudnnHandle_t handle = nullptr;
  std::map<SdpaKey, SdpaPlan> plans;  // empty `plans` = cuDNN has none for this shape
  std::set<SdpaKey> building;         // background builds in flight
  std::vector<std::thread> threads;
};

bool prepare_enabled() {
  static const bool on = [] {
    const char* env = std::getenv("SDSERVE_CUDNN_PREPARE");
    return !(env && env[0] == '0');
  }();
  return on;
}

// Builds the candidates of `key` with `handle` into `plan`; on failure `plan` has none.
void build_or_none(cudnnHandle_t handle, const SdpaKey& key, SdpaPlan& plan) {
  plan.handle = handle;
  try {
    build(handle, key, plan);
  } catch (const Error& e) {
    if (log_enabled()) std::fprintf(stderr, "sdserve: cuDNN SDPA %s: %s\n", key_str(key).c_str(), e.what());
    destroy_all(plan.plans);
    destroy_all(plan.keep);
    plan.workspace.clear();
  }
  if (plan.plans.empty() && log_enabled()) {
    std::fprintf(stderr, "sdserve: cuDNN SDPA has no plan for %s\n", key_str(key).c_str());
  }
}

DeviceSdpa& device_state(int device) {
  static std::mutex mu;
  static auto* states = new std::map<int, std::unique_ptr<DeviceSdpa>>();
  std::lock_guard<std::mutex> lock(mu);
  auto& s = (*states)[device];
  if (!s) s = std::make_unique<DeviceSdpa>();
  return *s;
}

}  // namespace

bool run_attention_cudnn(int device, DType dtype, const AttentionArgs& a, cudaStream_t stream,
                         const std::function<void*(size_t)>& workspace) {
  if (a.causal || !a.vec || a.d % 8 != 0 || a.d > 256 || a.q_stride % 8 != 0 || a.kv_stride % 8 != 0) return false;
  int current = -1;
  if (cudaGetDevice(&current) != cudaSuccess || current != device) return false;
  cudaStreamCaptureStatus capture = cudaStreamCaptureStatusNone;
  SD_CUDA_CHECK(cudaStreamIsCapturing(stream, &capture));
  const bool capturing = capture != cudaStreamCaptureStatusNone;

  DeviceSdpa& st = device_state(device);
  std::unique_lock<std::mutex> lock(st.mu);
  const SdpaKey key{dtype, a.batch, a.heads, a.lq, a.lk, a.d, a.q_stride, a.kv_stride};
  if (capturing && st.building.count(key)) return false;  // never block a capture
  st.built.wait(lock, [&] { return st.building.count(key) == 0; });
  auto it = st.plans.find(key);
  if (it == st.plans.end()) {
    if (capturing) return false;  // no plan building (or first runs) inside a graph capture
    if (!st.handle) SD_CUDNN_CHECK(cudnnCreate(&st.handle));
    SdpaPlan plan;
    build_or_none(st.handle, key, plan);
    it = st.plans.emplace(key, std::move(plan)).first;
  }
  SdpaPlan& plan = it->second;
  if (plan.plans.empty() || (capturing && !plan.proven)) return false;
  const cudnnHandle_t handle = plan.handle;
  SD_CUDNN_CHECK(cudnnSetStream(handle, stream));
  float scale = 1.f / std::sqrt(static_cast<float>(a.d));
  if (plan.proven) {
    void* ws = plan.workspace[0] > 0 ? workspace(static_cast<size_t>(plan.workspace[0])) : nullptr;
    const cudnnStatus_t s = execute(handle, plan.plans[0], a, &scale, ws);
    if (s != CUDNN_STATUS_SUCCESS) {
      throw Error(Internal("cuDNN SDPA failed for " + key_str(key) + ": " + cudnnGetErrorString(s)));
    }
    return true;
  }
  // First (eager) call: run every candidate; with more than one that runs, time each (1 warm-up
  // + 3 runs between events) and keep the fastest, which then computes the result.
  size_t best = plan.plans.size();
  float best_ms = std::numeric_limits<float>::max();
  cudaEvent_t start = nullptr, stop = nullptr;
  SD_CUDA_CHECK(cudaEventCreate(&start));
  SD_CUDA_CHECK(cudaEventCreate(&stop));
  std::vector<bool> runs(plan.plans.size(), false);
  for (size_t i = 0; i < plan.plans.size(); ++i) {
    void* ws = plan.workspace[i] > 0 ? workspace(static_cast<size_t>(plan.workspace[i])) : nullptr;
    cudnnStatus_t s = execute(handle, plan.plans[i], a, &scale, ws);
    if (s != CUDNN_STATUS_SUCCESS) {
      if (log_enabled()) {
        std::fprintf(stderr, "sdserve: cuDNN SDPA plan %zu failed for %s: %s\n", i, key_str(key).c_str(),
                     cudnnGetErrorString(s));
      }
      continue;
    }
    runs[i] = true;
    if (plan.plans.size() == 1) {
      best = i;
      break;
    }
    SD_CUDA_CHECK(cudaEventRecord(start, stream));
    for (int r = 0; r < 3 && s == CUDNN_STATUS_SUCCESS; ++r) s = execute(handle, plan.plans[i], a, &scale, ws);
    SD_CUDA_CHECK(cudaEventRecord(stop, stream));
    SD_CUDA_CHECK(cudaEventSynchronize(stop));
    float ms = 0.f;
    SD_CUDA_CHECK(cudaEventElapsedTime(&ms, start, stop));
    if (log_enabled()) std::fprintf(stderr, "sdserve: cuDNN SDPA %s plan %zu: %.4f ms\n", key_str(key).c_str(), i, ms / 3);
    if (s == CUDNN_STATUS_SUCCESS && ms < best_ms) {
      best_ms = ms;
      best = i;
    }
  }
  cudaEventDestroy(start);
  cudaEventDestroy(stop);
  if (best == plan.plans.size()) {  // none runs: this shape goes to our own kernels
    destroy_all(plan.plans);
    plan.workspace.clear();
    return false;
  }
  for (size_t i = 0; i < plan.plans.size(); ++i) {
    if (i != best) cudnnBackendDestroyDescriptor(plan.plans[i]);
  }
  plan.plans = {plan.plans[best]};
  plan.workspace = {plan.workspace[best]};
  plan.proven = true;
  if (log_enabled()) std::fprintf(stderr, "sdserve: cuDNN SDPA runs %s with plan %zu\n", key_str(key).c_str(), best);
  if (runs.size() > 1) {  // the last run was another candidate's: recompute with the winner
    void* ws = plan.workspace[0] > 0 ? workspace(static_cast<size_t>(plan.workspace[0])) : nullptr;
    const cudnnStatus_t s = execute(handle, plan.plans[0], a, &scale, ws);
    if (s != CUDNN_STATUS_SUCCESS) {
      throw Error(Internal("cuDNN SDPA failed for " + key_str(key) + ": " + cudnnGetErrorString(s)));
    }
  }
  return true;
}

bool attention_cudnn_building(int device, DType dtype, const std::vector<SdpaShape>& shapes) {
  DeviceSdpa& st = device_state(device);
  std::lock_guard<std::mutex> lock(st.mu);
  for (const SdpaShape& s : shapes) {
    if (st.building.count(SdpaKey{dtype, s.batch, s.heads, s.lq, s.lk, s.d, s.q_stride, s.kv_stride})) return true;
  }
  return false;
}

void prepare_attention_cudnn(int device, DType dtype, const std::vector<SdpaShape>& shapes) {
  if (!prepare_enabled()) return;
  DeviceSdpa& st = device_state(device);
  std::lock_guard<std::mutex> lock(st.mu);
  if (st.building.empty()) {  // every earlier build has finished (or only returns now): reap them
    for (std::thread& t : st.threads) t.join();
    st.threads.clear();
  }
  for (const SdpaShape& s : shapes) {
    if (s.d % 8 != 0 || s.d > 256 || s.q_stride % 8 != 0 || s.kv_stride % 8 != 0 || s.batch < 1) continue;
    const SdpaKey key{dtype, s.batch, s.heads, s.lq, s.lk, s.d, s.q_stride, s.kv_stride};
    if (st.plans.count(key) || st.building.count(key)) continue;
    st.building.insert(key);
    st.threads.emplace_back([&st, key, device] {
      // A capture on another thread (thread-local mode) must not see this thread's calls.
      cudaStreamCaptureMode mode = cudaStreamCaptureModeRelaxed;
      cudaThreadExchangeStreamCaptureMode(&mode);
      SdpaPlan plan;
      cudnnHandle_t handle = nullptr;
      if (cudaSetDevice(device) == cudaSuccess && cudnnCreate(&handle) == CUDNN_STATUS_SUCCESS) {
        build_or_none(handle, key, plan);
      } else if (log_enabled()) {
        std::fprintf(stderr, "sdserve: cuDNN SDPA %s: no handle for a background build\n", key_str(key).c_str());
      }
      // No plan (or no handle): the key is not recorded, so the first call builds it itself.
      if (plan.plans.empty()) {
        destroy_all(plan.keep);
        if (handle) cudnnDestroy(handle);
      }
      std::lock_guard<std::mutex> done(st.mu);
      if (!plan.plans.empty()) st.plans.emplace(key, std::move(plan));
      st.building.erase(key);
      st.built.notify_all();
    });
  }
}

namespace {
std::mutex users_mu;
std::map<int, int>& users() {
  static auto* u = new std::map<int, int>();
  return *u;
}
}  // namespace

void attention_cudnn_user(int device, int delta) {
  std::lock_guard<std::mutex> lock(users_mu);
  users()[device] += delta;
}

bool forget_attention_cudnn(int device) {
  {
    std::lock_guard<std::mutex> lock(users_mu);
    if (users()[device] > 1) return false;
  }
  wait_attention_cudnn_prepared(device);
  DeviceSdpa& st = device_state(device);
  std::unique_lock<std::mutex> lock(st.mu);
  st.built.wait(lock, [&] { return st.building.empty(); });
  std::set<cudnnHandle_t> handles;
  for (auto& [key, plan] : st.plans) {
    destroy_all(plan.plans);
    destroy_all(plan.keep);
    if (plan.handle && plan.handle != st.handle) handles.insert(plan.handle);
  }
  st.plans.clear();
  for (cudnnHandle_t h : handles) cudnnDestroy(h);
  if (st.handle) {
    cudnnDestroy(st.handle);
    st.handle = nullptr;  // made again by the next plan built in place
  }
  return true;
}

void wait_attention_cudnn_prepared(int device) {
  DeviceSdpa& st = device_state(device);
  std::vector<std::thread> threads;
  {
    std::lock_guard<std::mutex> lock(st.mu);
    threads.swap(st.threads);
  }
  for (std::thread& t : threads) t.join();
}

}  // namespace sd::cuda
