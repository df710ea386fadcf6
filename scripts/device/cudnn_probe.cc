// cuDNN convolution probe (device measurement tool, not part of the engine): for one NHWC f16
// 3x3 convolution, every engine of cuDNN's graph API and every knob setting it accepts, timed,
// against heuristic mode A's first 8 configs (what the engine times today); PROBE_ENERGY_MS=N adds
// joules a call under sustained load (NVML's energy counter) for heuristic A #0 and the fastest.
// Build: g++ -O2 -std=c++17 cudnn_probe.cc -I$CUDA/include -L... -lcudnn -lcudart -ldl
#include <cudnn.h>
#include <cuda_runtime.h>
#include <dlfcn.h>

#include <algorithm>
#include <cmath>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <utility>
#include <vector>

namespace {

#define CK(x)                                                                          \
  do {                                                                                 \
    cudnnStatus_t s_ = (x);                                                            \
    if (s_ != CUDNN_STATUS_SUCCESS) {                                                  \
      std::fprintf(stderr, "%s:%d %s: %s\n", __FILE__, __LINE__, #x, cudnnGetErrorString(s_)); \
      std::exit(1);                                                                    \
    }                                                                                  \
  } while (0)

using Desc = cudnnBackendDescriptor_t;

Desc make(cudnnBackendDescriptorType_t t) {
  Desc d = nullptr;
  CK(cudnnBackendCreateDescriptor(t, &d));
  return d;
}

Desc tensor(int64_t uid, int64_t n, int64_t c, int64_t h, int64_t w) {
  Desc t = make(CUDNN_BACKEND_TENSOR_DESCRIPTOR);
  const int64_t dims[4] = {n, c, h, w};
  const int64_t strides[4] = {c * h * w, 1, w * c, c};  // NHWC
  const cudnnDataType_t dt = CUDNN_DATA_HALF;
  const int64_t align = 16;
  CK(cudnnBackendSetAttribute(t, CUDNN_ATTR_TENSOR_DATA_TYPE, CUDNN_TYPE_DATA_TYPE, 1, &dt));
  CK(cudnnBackendSetAttribute(t, CUDNN_ATTR_TENSOR_DIMENSIONS, CUDNN_TYPE_INT64, 4, dims));
  CK(cudnnBackendSetAttribute(t, CUDNN_ATTR_TENSOR_STRIDES, CUDNN_TYPE_INT64, 4, strides));
  CK(cudnnBackendSetAttribute(t, CUDNN_ATTR_TENSOR_UNIQUE_ID, CUDNN_TYPE_INT64, 1, &uid));
  CK(cudnnBackendSetAttribute(t, CUDNN_ATTR_TENSOR_BYTE_ALIGNMENT, CUDNN_TYPE_INT64, 1, &align));
  CK(cudnnBackendFinalize(t));
  return t;
}

struct Shape {
  int64_t b, h, w, cin, cout, stride;
};

struct Result {
  double us;
  std::string what;
  int64_t engine = -1;
  std::vector<std::pair<cudnnBackendKnobType_t, int64_t>> knobs;
};

// NVML by dlopen (no header): the board's energy counter (mJ) and the SM clock.
struct Nvml {
  using Init = int (*)();
  using Handle = int (*)(unsigned, void**);
  using Energy = int (*)(void*, unsigned long long*);
  using Clock = int (*)(void*, int, unsigned*);
  Energy energy = nullptr;
  Clock clock = nullptr;
  void* dev = nullptr;
  bool open() {
    void* lib = dlopen("libnvidia-ml.so.1", RTLD_NOW | RTLD_LOCAL);
    if (!lib) return false;
    auto init = reinterpret_cast<Init>(dlsym(lib, "nvmlInit_v2"));
    auto handle = reinterpret_cast<Handle>(dlsym(lib, "nvmlDeviceGetHandleByIndex_v2"));
    energy = reinterpret_cast<Energy>(dlsym(lib, "nvmlDeviceGetTotalEnergyConsumption"));
    clock = reinterpret_cast<Clock>(dlsym(lib, "nvmlDeviceGetClockInfo"));
    int cur = 0;
    cudaGetDevice(&cur);
    return init && handle && energy && clock && init() == 0 && handle(static_cast<unsigned>(cur), &dev) == 0;
  }
  unsigned long long mj() const {
    unsigned long long v = 0;
    energy(dev, &v);
    return v;
  }
  unsigned sm_mhz() const {
    unsigned v = 0;
    clock(dev, 1 /* NVML_CLOCK_SM */, &v);
    return v;
  }
};

uint16_t half_bits(float f) {  // round to nearest even; inputs here are small normals
  uint32_t x;
  std::memcpy(&x, &f, 4);
  const uint32_t sign = (x >> 16) & 0x8000u;
  int32_t e = static_cast<int32_t>((x >> 23) & 0xff) - 127 + 15;
  uint32_t m = x & 0x7fffffu;
  if (e <= 0) return static_cast<uint16_t>(sign);  // flush tiny values
  uint32_t h = sign | (static_cast<uint32_t>(e) << 10) | (m >> 13);
  const uint32_t rest = m & 0x1fffu;
  if (rest > 0x1000u || (rest == 0x1000u && (h & 1u))) ++h;
  return static_cast<uint16_t>(h);
}

void fill_random(void* dst, size_t count, float scale, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> nd(0.f, scale);
  std::vector<uint16_t> h(count);
  for (auto& v : h) v = half_bits(nd(rng));
  cudaMemcpy(dst, h.data(), count * 2, cudaMemcpyHostToDevice);
}

std::string knobs_of(Desc cfg) {
  int64_t n = 0;
  std::vector<Desc> ch(64);
  for (auto& c : ch) c = make(CUDNN_BACKEND_KNOB_CHOICE_DESCRIPTOR);
  std::string s;
  if (cudnnBackendGetAttribute(cfg, CUDNN_ATTR_ENGINECFG_KNOB_CHOICES, CUDNN_TYPE_BACKEND_DESCRIPTOR, 64, &n,
                               ch.data()) == CUDNN_STATUS_SUCCESS) {
    for (int64_t i = 0; i < n; ++i) {
      cudnnBackendKnobType_t t;
      int64_t v = 0, k = 0;
      cudnnBackendGetAttribute(ch[i], CUDNN_ATTR_KNOB_CHOICE_KNOB_TYPE, CUDNN_TYPE_KNOB_TYPE, 1, &k, &t);
      cudnnBackendGetAttribute(ch[i], CUDNN_ATTR_KNOB_CHOICE_KNOB_VALUE, CUDNN_TYPE_INT64, 1, &k, &v);
      s += " k" + std::to_string(static_cast<int>(t)) + "=" + std::to_string(v);
    }
  }
  for (auto& c : ch) cudnnBackendDestroyDescriptor(c);
  Desc eng = make(CUDNN_BACKEND_ENGINE_DESCRIPTOR);
  int64_t k = 0, idx = -1;
  if (cudnnBackendGetAttribute(cfg, CUDNN_ATTR_ENGINECFG_ENGINE, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &k, &eng) ==
      CUDNN_STATUS_SUCCESS)
    cudnnBackendGetAttribute(eng, CUDNN_ATTR_ENGINE_GLOBAL_INDEX, CUDNN_TYPE_INT64, 1, &k, &idx);
  cudnnBackendDestroyDescriptor(eng);
  return "engine " + std::to_string(idx) + s;
}

struct Ctx {
  cudnnHandle_t h;
  Desc graph;
  void* ptr[3];
  void* ws;
  int64_t ws_cap;
  cudaEvent_t e0, e1;
  double flops;
};

// Sustained: cfg's plan back to back for ms (settle), then ms metered; prints µs a call, mJ a
// call, pJ/FLOP, W and the SM clock at the end.
void energy_cfg(Ctx& c, Desc cfg, const Nvml& nv, int ms, const std::string& label) {
  Desc plan = make(CUDNN_BACKEND_EXECUTION_PLAN_DESCRIPTOR);
  cudnnBackendSetAttribute(plan, CUDNN_ATTR_EXECUTION_PLAN_HANDLE, CUDNN_TYPE_HANDLE, 1, &c.h);
  int64_t ws = 0, n = 0;
  if (cudnnBackendSetAttribute(plan, CUDNN_ATTR_EXECUTION_PLAN_ENGINE_CONFIG, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1,
                               &cfg) != CUDNN_STATUS_SUCCESS ||
      cudnnBackendFinalize(plan) != CUDNN_STATUS_SUCCESS ||
      cudnnBackendGetAttribute(plan, CUDNN_ATTR_EXECUTION_PLAN_WORKSPACE_SIZE, CUDNN_TYPE_INT64, 1, &n, &ws) !=
          CUDNN_STATUS_SUCCESS ||
      ws > c.ws_cap) {
    cudnnBackendDestroyDescriptor(plan);
    return;
  }
  Desc vp = make(CUDNN_BACKEND_VARIANT_PACK_DESCRIPTOR);
  const int64_t uids[3] = {1, 2, 3};
  CK(cudnnBackendSetAttribute(vp, CUDNN_ATTR_VARIANT_PACK_UNIQUE_IDS, CUDNN_TYPE_INT64, 3, uids));
  CK(cudnnBackendSetAttribute(vp, CUDNN_ATTR_VARIANT_PACK_DATA_POINTERS, CUDNN_TYPE_VOID_PTR, 3, c.ptr));
  CK(cudnnBackendSetAttribute(vp, CUDNN_ATTR_VARIANT_PACK_WORKSPACE, CUDNN_TYPE_VOID_PTR, 1, &c.ws));
  CK(cudnnBackendFinalize(vp));
  using Clock = std::chrono::steady_clock;
  const auto run_for = [&](int millis, long& calls) {
    const auto t0 = Clock::now();
    calls = 0;
    while (std::chrono::duration<double, std::milli>(Clock::now() - t0).count() < millis) {
      for (int i = 0; i < 4; ++i) cudnnBackendExecute(c.h, plan, vp);
      calls += 4;
      cudaEventRecord(c.e1);
      cudaEventSynchronize(c.e1);  // keeps the queue short, so the window is what ran
    }
    return std::chrono::duration<double>(Clock::now() - t0).count();
  };
  long calls = 0;
  run_for(ms, calls);
  const unsigned long long e0 = nv.mj();
  const double sec = run_for(ms, calls);
  const unsigned long long e1 = nv.mj();
  const unsigned mhz = nv.sm_mhz();
  const double mj = static_cast<double>(e1 - e0) / calls;
  std::printf("energy %-10s %9.1f us %8.1f mJ %5.2f pJ/FLOP %5.0f W %4u MHz  %s\n", label.c_str(), sec * 1e6 / calls,
              mj, mj * 1e-3 / c.flops * 1e12, static_cast<double>(e1 - e0) * 1e-3 / sec, mhz, knobs_of(cfg).c_str());
  std::fflush(stdout);
  cudaGetLastError();
  cudnnBackendDestroyDescriptor(vp);
  cudnnBackendDestroyDescriptor(plan);
}

// Finalizes a plan for cfg and times it (median of 5 runs of 3 calls); <0 when it does not run.
// One execution of `cfg` on the context's tensors (false: it does not run).
bool run_cfg_once(Ctx& c, Desc cfg) {
  Desc plan = make(CUDNN_BACKEND_EXECUTION_PLAN_DESCRIPTOR);
  int64_t ws = 0, n = 0;
  bool ok = false;
  cudnnBackendSetAttribute(plan, CUDNN_ATTR_EXECUTION_PLAN_HANDLE, CUDNN_TYPE_HANDLE, 1, &c.h);
  if (cudnnBackendSetAttribute(plan, CUDNN_ATTR_EXECUTION_PLAN_ENGINE_CONFIG, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1,
                               &cfg) == CUDNN_STATUS_SUCCESS &&
      cudnnBackendFinalize(plan) == CUDNN_STATUS_SUCCESS &&
      cudnnBackendGetAttribute(plan, CUDNN_ATTR_EXECUTION_PLAN_WORKSPACE_SIZE, CUDNN_TYPE_INT64, 1, &n, &ws) ==
          CUDNN_STATUS_SUCCESS &&
      ws <= c.ws_cap) {
    Desc vp = make(CUDNN_BACKEND_VARIANT_PACK_DESCRIPTOR);
    const int64_t uids[3] = {1, 2, 3};
    CK(cudnnBackendSetAttribute(vp, CUDNN_ATTR_VARIANT_PACK_UNIQUE_IDS, CUDNN_TYPE_INT64, 3, uids));
    CK(cudnnBackendSetAttribute(vp, CUDNN_ATTR_VARIANT_PACK_DATA_POINTERS, CUDNN_TYPE_VOID_PTR, 3, c.ptr));
    CK(cudnnBackendSetAttribute(vp, CUDNN_ATTR_VARIANT_PACK_WORKSPACE, CUDNN_TYPE_VOID_PTR, 1, &c.ws));
    CK(cudnnBackendFinalize(vp));
    ok = cudnnBackendExecute(c.h, plan, vp) == CUDNN_STATUS_SUCCESS && cudaDeviceSynchronize() == cudaSuccess;
    cudaGetLastError();
    cudnnBackendDestroyDescriptor(vp);
  }
  cudnnBackendDestroyDescriptor(plan);
  return ok;
}

double half_to_double(uint16_t h) {
  const int e = (h >> 10) & 31, m = h & 1023;
  const double v = e == 0 ? std::ldexp(m, -24) : e == 31 ? INFINITY : std::ldexp(1024 + m, e - 25);
  return (h & 0x8000) ? -v : v;
}

double time_cfg(Ctx& c, Desc cfg) {
  Desc plan = make(CUDNN_BACKEND_EXECUTION_PLAN_DESCRIPTOR);
  int64_t ws = 0, n = 0;
  cudnnBackendSetAttribute(plan, CUDNN_ATTR_EXECUTION_PLAN_HANDLE, CUDNN_TYPE_HANDLE, 1, &c.h);
  double out = -1;
  if (cudnnBackendSetAttribute(plan, CUDNN_ATTR_EXECUTION_PLAN_ENGINE_CONFIG, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1,
                               &cfg) == CUDNN_STATUS_SUCCESS &&
      cudnnBackendFinalize(plan) == CUDNN_STATUS_SUCCESS &&
      cudnnBackendGetAttribute(plan, CUDNN_ATTR_EXECUTION_PLAN_WORKSPACE_SIZE, CUDNN_TYPE_INT64, 1, &n, &ws) ==
          CUDNN_STATUS_SUCCESS &&
      ws <= c.ws_cap) {
    Desc vp = make(CUDNN_BACKEND_VARIANT_PACK_DESCRIPTOR);
    const int64_t uids[3] = {1, 2, 3};
    CK(cudnnBackendSetAttribute(vp, CUDNN_ATTR_VARIANT_PACK_UNIQUE_IDS, CUDNN_TYPE_INT64, 3, uids));
    CK(cudnnBackendSetAttribute(vp, CUDNN_ATTR_VARIANT_PACK_DATA_POINTERS, CUDNN_TYPE_VOID_PTR, 3, c.ptr));
    CK(cudnnBackendSetAttribute(vp, CUDNN_ATTR_VARIANT_PACK_WORKSPACE, CUDNN_TYPE_VOID_PTR, 1, &c.ws));
    CK(cudnnBackendFinalize(vp));
    if (cudnnBackendExecute(c.h, plan, vp) == CUDNN_STATUS_SUCCESS && cudaDeviceSynchronize() == cudaSuccess) {
      std::vector<float> t;
      for (int r = 0; r < 5; ++r) {
        cudaEventRecord(c.e0);
        for (int i = 0; i < 3; ++i) cudnnBackendExecute(c.h, plan, vp);
        cudaEventRecord(c.e1);
        cudaEventSynchronize(c.e1);
        float ms = 0;
        cudaEventElapsedTime(&ms, c.e0, c.e1);
        t.push_back(ms * 1000.f / 3);
      }
      std::sort(t.begin(), t.end());
      out = t[2];
    }
    cudaGetLastError();
    cudnnBackendDestroyDescriptor(vp);
  }
  cudnnBackendDestroyDescriptor(plan);
  return out;
}

// With beta 1, two runs from y0 give y1 = conv + y0 and y2 = conv + y1: y2 - y1 must equal y1 - y0
// (up to f16 rounding) and be nonzero, or the engine ignored beta.
void check_accumulates(Ctx& c, Desc cfg, size_t ny) {
  std::vector<uint16_t> h0(ny), h1(ny), h2(ny);
  fill_random(c.ptr[2], ny, 1.f, 7);
  cudaMemcpy(h0.data(), c.ptr[2], ny * 2, cudaMemcpyDeviceToHost);
  if (!run_cfg_once(c, cfg)) return;
  cudaMemcpy(h1.data(), c.ptr[2], ny * 2, cudaMemcpyDeviceToHost);
  run_cfg_once(c, cfg);
  cudaMemcpy(h2.data(), c.ptr[2], ny * 2, cudaMemcpyDeviceToHost);
  double d = 0, m = 0;
  for (size_t i = 0; i < ny; ++i) {
    const double a = half_to_double(h1[i]) - half_to_double(h0[i]), b = half_to_double(h2[i]) - half_to_double(h1[i]);
    d += (a - b) * (a - b), m += a * a;
  }
  std::printf("   beta check: |conv| rms %.3g, rms of run-to-run difference %.3g%s\n", std::sqrt(m / ny),
              std::sqrt(d / ny), m == 0 || d > 0.01 * m ? "  BETA IGNORED OR WRONG" : "  ok");
}

void probe(cudnnHandle_t h, const Shape& s, int max_cfgs_per_engine, double seconds_cap, const Nvml* nv,
           int energy_ms, int energy_top) {
  const int64_t ho = (s.h + 2 - 3) / s.stride + 1, wo = (s.w + 2 - 3) / s.stride + 1;
  Desc x = tensor(1, s.b, s.cin, s.h, s.w), w = tensor(2, s.cout, s.cin, 3, 3), y = tensor(3, s.b, s.cout, ho, wo);
  Desc conv = make(CUDNN_BACKEND_CONVOLUTION_DESCRIPTOR);
  const cudnnDataType_t ct = CUDNN_DATA_FLOAT;
  const cudnnConvolutionMode_t mode = CUDNN_CROSS_CORRELATION;
  const int64_t dims = 2, pad[2] = {1, 1}, one[2] = {1, 1}, st[2] = {s.stride, s.stride};
  CK(cudnnBackendSetAttribute(conv, CUDNN_ATTR_CONVOLUTION_COMP_TYPE, CUDNN_TYPE_DATA_TYPE, 1, &ct));
  CK(cudnnBackendSetAttribute(conv, CUDNN_ATTR_CONVOLUTION_CONV_MODE, CUDNN_TYPE_CONVOLUTION_MODE, 1, &mode));
  CK(cudnnBackendSetAttribute(conv, CUDNN_ATTR_CONVOLUTION_SPATIAL_DIMS, CUDNN_TYPE_INT64, 1, &dims));
  CK(cudnnBackendSetAttribute(conv, CUDNN_ATTR_CONVOLUTION_DILATIONS, CUDNN_TYPE_INT64, 2, one));
  CK(cudnnBackendSetAttribute(conv, CUDNN_ATTR_CONVOLUTION_FILTER_STRIDES, CUDNN_TYPE_INT64, 2, st));
  CK(cudnnBackendSetAttribute(conv, CUDNN_ATTR_CONVOLUTION_PRE_PADDINGS, CUDNN_TYPE_INT64, 2, pad));
  CK(cudnnBackendSetAttribute(conv, CUDNN_ATTR_CONVOLUTION_POST_PADDINGS, CUDNN_TYPE_INT64, 2, pad));
  CK(cudnnBackendFinalize(conv));
  Desc op = make(CUDNN_BACKEND_OPERATION_CONVOLUTION_FORWARD_DESCRIPTOR);
  // PROBE_BETA=1: y = conv(x) + y (the output accumulates onto what it holds: a residual).
  const float alpha = 1.f, beta = std::getenv("PROBE_BETA") && std::getenv("PROBE_BETA")[0] == '1' ? 1.f : 0.f;
  CK(cudnnBackendSetAttribute(op, CUDNN_ATTR_OPERATION_CONVOLUTION_FORWARD_X, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &x));
  CK(cudnnBackendSetAttribute(op, CUDNN_ATTR_OPERATION_CONVOLUTION_FORWARD_W, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &w));
  CK(cudnnBackendSetAttribute(op, CUDNN_ATTR_OPERATION_CONVOLUTION_FORWARD_Y, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &y));
  CK(cudnnBackendSetAttribute(op, CUDNN_ATTR_OPERATION_CONVOLUTION_FORWARD_CONV_DESC, CUDNN_TYPE_BACKEND_DESCRIPTOR,
                              1, &conv));
  CK(cudnnBackendSetAttribute(op, CUDNN_ATTR_OPERATION_CONVOLUTION_FORWARD_ALPHA, CUDNN_TYPE_FLOAT, 1, &alpha));
  CK(cudnnBackendSetAttribute(op, CUDNN_ATTR_OPERATION_CONVOLUTION_FORWARD_BETA, CUDNN_TYPE_FLOAT, 1, &beta));
  CK(cudnnBackendFinalize(op));
  Ctx c{};
  c.h = h;
  c.graph = make(CUDNN_BACKEND_OPERATIONGRAPH_DESCRIPTOR);
  CK(cudnnBackendSetAttribute(c.graph, CUDNN_ATTR_OPERATIONGRAPH_OPS, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &op));
  CK(cudnnBackendSetAttribute(c.graph, CUDNN_ATTR_OPERATIONGRAPH_HANDLE, CUDNN_TYPE_HANDLE, 1, &h));
  CK(cudnnBackendFinalize(c.graph));
  const size_t bx = s.b * s.h * s.w * s.cin * 2, bw = s.cout * s.cin * 9 * 2, by = s.b * ho * wo * s.cout * 2;
  cudaMalloc(&c.ptr[0], bx);
  cudaMalloc(&c.ptr[1], bw);
  cudaMalloc(&c.ptr[2], by);
  c.ws_cap = int64_t{512} << 20;
  cudaMalloc(&c.ws, c.ws_cap);
  fill_random(c.ptr[0], bx / 2, 1.f, 1);  // N(0, 1) activations, N(0, 0.02) weights: energy
  fill_random(c.ptr[1], bw / 2, 0.02f, 2);  // depends on the data, so never constants
  cudaEventCreate(&c.e0);
  cudaEventCreate(&c.e1);
  c.flops = 2.0 * s.b * ho * wo * s.cout * s.cin * 9;
  std::printf("\n== %lldx%lldx%lldx%lld -> %lld stride %lld (%.1f GFLOP)%s\n", (long long)s.b, (long long)s.h,
              (long long)s.w, (long long)s.cin, (long long)s.cout, (long long)s.stride, c.flops / 1e9,
              beta != 0.f ? " beta 1" : "");

  // Heuristic mode A, first 8 (the engine's candidates).
  std::vector<Desc> heur_cfgs;
  {
    Desc hd = make(CUDNN_BACKEND_ENGINEHEUR_DESCRIPTOR);
    const cudnnBackendHeurMode_t m = CUDNN_HEUR_MODE_A;
    int64_t count = 0;
    CK(cudnnBackendSetAttribute(hd, CUDNN_ATTR_ENGINEHEUR_OPERATION_GRAPH, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &c.graph));
    CK(cudnnBackendSetAttribute(hd, CUDNN_ATTR_ENGINEHEUR_MODE, CUDNN_TYPE_HEUR_MODE, 1, &m));
    CK(cudnnBackendFinalize(hd));
    CK(cudnnBackendGetAttribute(hd, CUDNN_ATTR_ENGINEHEUR_RESULTS, CUDNN_TYPE_BACKEND_DESCRIPTOR, 0, &count, nullptr));
    std::vector<Desc> cfgs(count);
    for (auto& d : cfgs) d = make(CUDNN_BACKEND_ENGINECFG_DESCRIPTOR);
    int64_t got = 0;
    CK(cudnnBackendGetAttribute(hd, CUDNN_ATTR_ENGINEHEUR_RESULTS, CUDNN_TYPE_BACKEND_DESCRIPTOR, count, &got,
                                cfgs.data()));
    heur_cfgs.assign(cfgs.begin(), cfgs.begin() + std::min<int64_t>(got, 8));
    for (int64_t i = 0; i < got && i < 8; ++i) {
      const double us = time_cfg(c, cfgs[i]);
      std::printf("heur A #%lld: %9.1f us %6.1f TFLOP/s  %s\n", (long long)i, us, us > 0 ? c.flops / us / 1e6 : 0.0,
                  knobs_of(cfgs[i]).c_str());
      if (beta != 0.f && us > 0) check_accumulates(c, cfgs[i], by / 2);
    }
  }

  // Every engine, every knob setting (capped).
  int64_t engines = 0, k = 0;
  CK(cudnnBackendGetAttribute(c.graph, CUDNN_ATTR_OPERATIONGRAPH_ENGINE_GLOBAL_COUNT, CUDNN_TYPE_INT64, 1, &k,
                              &engines));
  std::vector<Result> all;
  const auto t0 = std::chrono::steady_clock::now();
  int tried = 0, ran = 0;
  std::vector<int64_t> only;  // PROBE_ENGINES=62,63: just these
  if (const char* env = std::getenv("PROBE_ENGINES")) {
    for (const char* q = env; *q;) {
      only.push_back(std::atoll(q));
      while (*q && *q != ',') ++q;
      if (*q) ++q;
    }
  }
  for (int64_t e = 0; e < engines; ++e) {
    if (!only.empty() && std::find(only.begin(), only.end(), e) == only.end()) continue;
    Desc eng = make(CUDNN_BACKEND_ENGINE_DESCRIPTOR);
    cudnnBackendSetAttribute(eng, CUDNN_ATTR_ENGINE_OPERATION_GRAPH, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &c.graph);
    cudnnBackendSetAttribute(eng, CUDNN_ATTR_ENGINE_GLOBAL_INDEX, CUDNN_TYPE_INT64, 1, &e);
    if (cudnnBackendFinalize(eng) != CUDNN_STATUS_SUCCESS) {
      cudnnBackendDestroyDescriptor(eng);
      continue;
    }
    cudnnBackendBehaviorNote_t notes[8];
    int64_t nn = 0;
    cudnnBackendGetAttribute(eng, CUDNN_ATTR_ENGINE_BEHAVIOR_NOTE, CUDNN_TYPE_BEHAVIOR_NOTE, 8, &nn, notes);
    bool rtc = false;
    for (int64_t i = 0; i < nn; ++i) rtc |= notes[i] == CUDNN_BEHAVIOR_NOTE_RUNTIME_COMPILATION;
    std::vector<Desc> info(32);
    for (auto& d : info) d = make(CUDNN_BACKEND_KNOB_INFO_DESCRIPTOR);
    int64_t ni = 0;
    cudnnBackendGetAttribute(eng, CUDNN_ATTR_ENGINE_KNOB_INFO, CUDNN_TYPE_BACKEND_DESCRIPTOR, 32, &ni, info.data());
    struct Knob {
      cudnnBackendKnobType_t t;
      std::vector<int64_t> values;
    };
    std::vector<Knob> knobs;
    std::string space;
    for (int64_t i = 0; i < ni; ++i) {
      Knob kb;
      int64_t lo = 0, hi = 0, stp = 1, q = 0;
      cudnnBackendGetAttribute(info[i], CUDNN_ATTR_KNOB_INFO_TYPE, CUDNN_TYPE_KNOB_TYPE, 1, &q, &kb.t);
      cudnnBackendGetAttribute(info[i], CUDNN_ATTR_KNOB_INFO_MINIMUM_VALUE, CUDNN_TYPE_INT64, 1, &q, &lo);
      cudnnBackendGetAttribute(info[i], CUDNN_ATTR_KNOB_INFO_MAXIMUM_VALUE, CUDNN_TYPE_INT64, 1, &q, &hi);
      cudnnBackendGetAttribute(info[i], CUDNN_ATTR_KNOB_INFO_STRIDE, CUDNN_TYPE_INT64, 1, &q, &stp);
      if (stp <= 0) stp = 1;
      for (int64_t v = lo; v <= hi && kb.values.size() < 24; v += stp) kb.values.push_back(v);
      space += " k" + std::to_string(static_cast<int>(kb.t)) + "[" + std::to_string(lo) + ".." + std::to_string(hi) +
               "/" + std::to_string(stp) + "]";
      if (!kb.values.empty()) knobs.push_back(kb);
    }
    for (auto& d : info) cudnnBackendDestroyDescriptor(d);
    size_t combos = 1;
    for (auto& kb : knobs) combos *= kb.values.size();
    std::printf("engine %lld%s knobs%s (%zu settings)\n", (long long)e, rtc ? " (runtime compiled)" : "",
                space.c_str(), combos);
    std::fflush(stdout);
    if (rtc && std::getenv("PROBE_RTC") == nullptr) {
      cudnnBackendDestroyDescriptor(eng);
      continue;
    }
    std::vector<size_t> idx(knobs.size(), 0);
    int done = 0;
    for (size_t combo = 0; combo < combos && done < max_cfgs_per_engine; ++combo) {
      size_t r = combo;
      for (size_t i = 0; i < knobs.size(); ++i) {
        idx[i] = r % knobs[i].values.size();
        r /= knobs[i].values.size();
      }
      Desc cfg = make(CUDNN_BACKEND_ENGINECFG_DESCRIPTOR);
      std::vector<Desc> choices;
      std::vector<std::pair<cudnnBackendKnobType_t, int64_t>> chosen;
      std::string what = "engine " + std::to_string(e);
      for (size_t i = 0; i < knobs.size(); ++i) {
        Desc ch = make(CUDNN_BACKEND_KNOB_CHOICE_DESCRIPTOR);
        const int64_t v = knobs[i].values[idx[i]];
        cudnnBackendSetAttribute(ch, CUDNN_ATTR_KNOB_CHOICE_KNOB_TYPE, CUDNN_TYPE_KNOB_TYPE, 1, &knobs[i].t);
        cudnnBackendSetAttribute(ch, CUDNN_ATTR_KNOB_CHOICE_KNOB_VALUE, CUDNN_TYPE_INT64, 1, &v);
        if (cudnnBackendFinalize(ch) == CUDNN_STATUS_SUCCESS) choices.push_back(ch), chosen.push_back({knobs[i].t, v});
        what += " k" + std::to_string(static_cast<int>(knobs[i].t)) + "=" + std::to_string(v);
      }
      cudnnBackendSetAttribute(cfg, CUDNN_ATTR_ENGINECFG_ENGINE, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &eng);
      if (!choices.empty())
        cudnnBackendSetAttribute(cfg, CUDNN_ATTR_ENGINECFG_KNOB_CHOICES, CUDNN_TYPE_BACKEND_DESCRIPTOR,
                                 static_cast<int64_t>(choices.size()), choices.data());
      ++tried;
      if (cudnnBackendFinalize(cfg) == CUDNN_STATUS_SUCCESS) {
        const double us = time_cfg(c, cfg);
        if (us > 0) {
          all.push_back({us, what, e, chosen});
          ++ran;
          ++done;
        }
      }
      for (auto& ch : choices) cudnnBackendDestroyDescriptor(ch);
      cudnnBackendDestroyDescriptor(cfg);
      if (std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count() > seconds_cap) break;
    }
    cudnnBackendDestroyDescriptor(eng);
    if (std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count() > seconds_cap) {
      std::printf("(time cap reached)\n");
      break;
    }
  }
  std::sort(all.begin(), all.end(), [](const Result& a, const Result& b) { return a.us < b.us; });
  std::printf("exhaustive: %lld engines, %d settings tried, %d ran; fastest:\n", (long long)engines, tried, ran);
  for (size_t i = 0; i < all.size() && i < 25; ++i)
    std::printf("  %9.1f us %6.1f TFLOP/s  %s\n", all[i].us, c.flops / all[i].us / 1e6, all[i].what.c_str());
  if (nv && energy_ms > 0 && !heur_cfgs.empty()) {
    energy_cfg(c, heur_cfgs[0], *nv, energy_ms, "heur A #0");
    for (size_t i = 1; i < heur_cfgs.size() && i < 3; ++i) energy_cfg(c, heur_cfgs[i], *nv, energy_ms, "heur A #" + std::to_string(i));
    // The fastest energy_top, then the fastest of each other tile size / cluster shape (knobs 2, 27,
    // 28), up to 8 more: a slower tile may still cost fewer joules.
    std::vector<size_t> pick;
    std::vector<std::string> seen;
    for (size_t i = 0; i < all.size(); ++i) {
      std::string key;
      for (const auto& [t, v] : all[i].knobs)
        if (t == 2 || t == 27 || t == 28) key += std::to_string(static_cast<int>(t)) + "=" + std::to_string(v) + " ";
      const bool fresh = std::find(seen.begin(), seen.end(), key) == seen.end();
      if (fresh) seen.push_back(key);
      if (static_cast<int>(i) < energy_top || (fresh && pick.size() < static_cast<size_t>(energy_top) + 8)) pick.push_back(i);
    }
    for (size_t i : pick) {
      Desc eng = make(CUDNN_BACKEND_ENGINE_DESCRIPTOR);
      cudnnBackendSetAttribute(eng, CUDNN_ATTR_ENGINE_OPERATION_GRAPH, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &c.graph);
      cudnnBackendSetAttribute(eng, CUDNN_ATTR_ENGINE_GLOBAL_INDEX, CUDNN_TYPE_INT64, 1, &all[i].engine);
      if (cudnnBackendFinalize(eng) == CUDNN_STATUS_SUCCESS) {
        Desc cfg = make(CUDNN_BACKEND_ENGINECFG_DESCRIPTOR);
        std::vector<Desc> choices;
        for (const auto& [t, v] : all[i].knobs) {
          Desc ch = make(CUDNN_BACKEND_KNOB_CHOICE_DESCRIPTOR);
          cudnnBackendSetAttribute(ch, CUDNN_ATTR_KNOB_CHOICE_KNOB_TYPE, CUDNN_TYPE_KNOB_TYPE, 1, &t);
          cudnnBackendSetAttribute(ch, CUDNN_ATTR_KNOB_CHOICE_KNOB_VALUE, CUDNN_TYPE_INT64, 1, &v);
          if (cudnnBackendFinalize(ch) == CUDNN_STATUS_SUCCESS) choices.push_back(ch);
        }
        cudnnBackendSetAttribute(cfg, CUDNN_ATTR_ENGINECFG_ENGINE, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &eng);
        if (!choices.empty())
          cudnnBackendSetAttribute(cfg, CUDNN_ATTR_ENGINECFG_KNOB_CHOICES, CUDNN_TYPE_BACKEND_DESCRIPTOR,
                                   static_cast<int64_t>(choices.size()), choices.data());
        if (cudnnBackendFinalize(cfg) == CUDNN_STATUS_SUCCESS) energy_cfg(c, cfg, *nv, energy_ms, "#" + std::to_string(i) + " " + std::to_string(static_cast<int>(all[i].us)) + "us");
        for (auto& ch : choices) cudnnBackendDestroyDescriptor(ch);
        cudnnBackendDestroyDescriptor(cfg);
      }
      cudnnBackendDestroyDescriptor(eng);
    }
    energy_cfg(c, heur_cfgs[0], *nv, energy_ms, "heur A #0");  // again: the card's drift over the pass
  }
  for (int i = 0; i < 3; ++i) cudaFree(c.ptr[i]);
  cudaFree(c.ws);
}

}  // namespace

int main(int argc, char** argv) {
  cudnnHandle_t h;
  CK(cudnnCreate(&h));
  std::printf("cuDNN %zu\n", cudnnGetVersion());
  const int64_t b = argc > 1 ? std::atoll(argv[1]) : 64;
  const int per_engine = argc > 2 ? std::atoi(argv[2]) : 400;
  const double cap = argc > 3 ? std::atof(argv[3]) : 60;
  const int energy_ms = std::getenv("PROBE_ENERGY_MS") ? std::atoi(std::getenv("PROBE_ENERGY_MS")) : 0;
  const int energy_top = std::getenv("PROBE_ENERGY_TOP") ? std::atoi(std::getenv("PROBE_ENERGY_TOP")) : 10;
  Nvml nvml;
  const bool have_nvml = energy_ms > 0 && nvml.open();
  if (energy_ms > 0 && !have_nvml) std::printf("(no NVML energy counter: energy pass skipped)\n");
  std::vector<Shape> shapes = {{b, 64, 64, 320, 320, 1}, {b, 64, 64, 640, 320, 1}, {b, 32, 32, 640, 640, 1},
                               {b, 64, 64, 960, 320, 1}, {b, 64, 64, 320, 320, 2}, {b, 16, 16, 1280, 1280, 1},
                               {b, 8, 8, 1280, 1280, 1}};
  if (const char* env = std::getenv("PROBE_SHAPES")) {  // "0,2": only these of the list above
    std::vector<Shape> keep;
    for (const char* q = env; *q;) {
      const int i = std::atoi(q);
      if (i >= 0 && i < static_cast<int>(shapes.size())) keep.push_back(shapes[static_cast<size_t>(i)]);
      while (*q && *q != ',') ++q;
      if (*q) ++q;
    }
    shapes = keep;
  }
  for (const Shape& s : shapes) probe(h, s, per_engine, cap, have_nvml ? &nvml : nullptr, energy_ms, energy_top);
  cudnnDestroy(h);
  return 0;
}
