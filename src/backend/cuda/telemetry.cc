// GpuTelemetry (telemetry.h): NVML loaded with dlopen, the handful of entry points it needs
// declared here from NVML's public C API (nvmlReturn_t is an int, 0 on success; power in
// milliwatts; clock-event reason bits as nvidia-smi's clocks_throttle_reasons.active prints them).
#include "backend/cuda/telemetry.h"

#include <dlfcn.h>

#include <algorithm>
#include <chrono>
#include <mutex>

namespace sd::cuda {
namespace {

using NvmlDevice = void*;
constexpr int kNvmlClockSm = 1;           // nvmlClockType_t NVML_CLOCK_SM
constexpr int kNvmlTemperatureGpu = 0;    // nvmlTemperatureSensors_t NVML_TEMPERATURE_GPU
constexpr unsigned long long kSwPowerCap = 0x4, kHwSlowdown = 0x8, kSwThermal = 0x20, kHwThermal = 0x40,
                             kPowerBrake = 0x80;

struct Nvml {
  int (*init)() = nullptr;
  int (*handle_by_bus_id)(const char*, NvmlDevice*) = nullptr;
  int (*clock_info)(NvmlDevice, int, unsigned*) = nullptr;
  int (*power_usage)(NvmlDevice, unsigned*) = nullptr;
  int (*power_limit)(NvmlDevice, unsigned*) = nullptr;
  int (*temperature)(NvmlDevice, int, unsigned*) = nullptr;
  int (*reasons)(NvmlDevice, unsigned long long*) = nullptr;
  int (*total_energy)(NvmlDevice, unsigned long long*) = nullptr;  // optional (Volta and later)
  bool ok = false;
};

template <typename F>
bool resolve(void* lib, const char* name, F& fn) {
  fn = reinterpret_cast<F>(dlsym(lib, name));
  return fn != nullptr;
}

// Loaded and initialized once per process (never unloaded: other threads may still sample).
const Nvml& nvml() {
  static Nvml n;
  static std::once_flag once;
  std::call_once(once, [] {
    void* lib = dlopen("libnvidia-ml.so.1", RTLD_NOW | RTLD_LOCAL);
    if (!lib) return;
    bool ok = resolve(lib, "nvmlInit_v2", n.init) && resolve(lib, "nvmlDeviceGetHandleByPciBusId_v2", n.handle_by_bus_id) &&
              resolve(lib, "nvmlDeviceGetClockInfo", n.clock_info) && resolve(lib, "nvmlDeviceGetPowerUsage", n.power_usage) &&
              resolve(lib, "nvmlDeviceGetEnforcedPowerLimit", n.power_limit) &&
              resolve(lib, "nvmlDeviceGetTemperature", n.temperature);
    // The reasons call was renamed (clocks "event" reasons, driver 535+); either will do.
    if (!resolve(lib, "nvmlDeviceGetCurrentClocksEventReasons", n.reasons)) {
      ok = ok && resolve(lib, "nvmlDeviceGetCurrentClocksThrottleReasons", n.reasons);
    }
    if (!resolve(lib, "nvmlDeviceGetTotalEnergyConsumption", n.total_energy)) n.total_energy = nullptr;
    n.ok = ok && n.init() == 0;
  });
  return n;
}

// The board's energy counter in millijoules since the driver loaded; -1 where it has none.
long long energy_mj(const Nvml& n, NvmlDevice d) {
  unsigned long long mj = 0;
  return n.total_energy && n.total_energy(d, &mj) == 0 ? static_cast<long long>(mj) : -1;
}

}  // namespace

GpuTelemetry::GpuTelemetry(std::string pci_bus_id) : bus_id_(std::move(pci_bus_id)) {}

GpuTelemetry::~GpuTelemetry() { (void)stop(); }

bool GpuTelemetry::start() {
  (void)stop();
  const Nvml& n = nvml();
  if (!n.ok) return false;
  if (!device_) {
    NvmlDevice d = nullptr;
    if (n.handle_by_bus_id(bus_id_.c_str(), &d) != 0 || !d) return false;
    device_ = d;
    unsigned mw = 0;
    if (n.power_limit(d, &mw) == 0) power_limit_w_ = mw / 1e3;
  }
  samples_.clear();
  started_ = std::chrono::steady_clock::now();
  energy_start_mj_ = energy_mj(n, device_);
  running_ = true;
  thread_ = std::thread([this, &n] {
    while (running_.load(std::memory_order_relaxed)) {
      Sample s;
      unsigned mhz = 0, mw = 0, temp = 0;
      unsigned long long reasons = 0;
      if (n.clock_info(device_, kNvmlClockSm, &mhz) == 0 && n.power_usage(device_, &mw) == 0) {
        s.sm_mhz = mhz;
        s.power_w = mw / 1e3;
        if (n.temperature(device_, kNvmlTemperatureGpu, &temp) == 0) s.temperature_c = temp;
        if (n.reasons(device_, &reasons) == 0) s.reasons = reasons;
        samples_.push_back(s);
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
  });
  return true;
}

std::optional<DeviceTelemetry> GpuTelemetry::stop() {
  if (!thread_.joinable()) return std::nullopt;
  running_ = false;
  thread_.join();
  const long long energy_stop_mj = energy_mj(nvml(), device_);
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - started_).count();
  if (samples_.empty()) return std::nullopt;
  DeviceTelemetry t = summarize(samples_, power_limit_w_);
  add_energy(&t, seconds, energy_start_mj_, energy_stop_mj);
  return t;
}

std::optional<DeviceReading> GpuTelemetry::read() const {
  const Nvml& n = nvml();
  NvmlDevice d = nullptr;
  if (!n.ok || n.handle_by_bus_id(bus_id_.c_str(), &d) != 0 || !d) return std::nullopt;
  unsigned mhz = 0, mw = 0, limit_mw = 0, temp = 0;
  unsigned long long reasons = 0;
  if (n.clock_info(d, kNvmlClockSm, &mhz) != 0 || n.power_usage(d, &mw) != 0) return std::nullopt;
  DeviceReading r;
  r.sm_mhz = mhz;
  r.power_w = mw / 1e3;
  if (n.power_limit(d, &limit_mw) == 0) r.power_limit_w = limit_mw / 1e3;
  if (n.temperature(d, kNvmlTemperatureGpu, &temp) == 0) r.temperature_c = temp;
  if (n.reasons(d, &reasons) == 0) r.power_capped = (reasons & (kSwPowerCap | kPowerBrake)) != 0;
  const long long mj = energy_mj(n, d);
  if (mj >= 0) r.energy_j = static_cast<double>(mj) / 1e3;
  return r;
}

void GpuTelemetry::add_energy(DeviceTelemetry* t, double seconds, long long mj_start, long long mj_stop) {
  t->seconds = seconds;
  t->energy_j = mj_start >= 0 && mj_stop >= mj_start ? static_cast<double>(mj_stop - mj_start) / 1e3 : -1;
}

DeviceTelemetry GpuTelemetry::summarize(const std::vector<Sample>& samples, double power_limit_w) {
  DeviceTelemetry t;
  t.samples = static_cast<int>(samples.size());
  t.power_limit_w = power_limit_w;
  if (samples.empty()) return t;
  t.sm_mhz_min = t.sm_mhz_max = samples.front().sm_mhz;
  int capped = 0, slowed = 0;
  for (const Sample& s : samples) {
    t.sm_mhz_mean += s.sm_mhz;
    t.sm_mhz_min = std::min(t.sm_mhz_min, s.sm_mhz);
    t.sm_mhz_max = std::max(t.sm_mhz_max, s.sm_mhz);
    t.power_w_mean += s.power_w;
    t.power_w_max = std::max(t.power_w_max, s.power_w);
    t.temperature_c_max = std::max(t.temperature_c_max, s.temperature_c);
    if (s.reasons & (kSwPowerCap | kPowerBrake)) ++capped;
    if (s.reasons & (kSwThermal | kHwThermal | kHwSlowdown)) ++slowed;
  }
  t.sm_mhz_mean /= t.samples;
  t.power_w_mean /= t.samples;
  t.power_capped = static_cast<double>(capped) / t.samples;
  t.slowed = static_cast<double>(slowed) / t.samples;
  return t;
}

}  // namespace sd::cuda
