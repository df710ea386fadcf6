// The sampler and schedule names the server accepts and lists (A1111 display names plus
// their aliases), taken from the samplers registry in src/samplers/ — the one place where
// the server learns which samplers exist.
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace sd::serving {

struct SamplerName {
  std::string name;                  // A1111 display name, e.g. "DPM++ 2M"
  std::vector<std::string> aliases;  // e.g. "dpmpp_2m" (the id), "k_dpmpp_2m"
  bool karras_default = false;       // "DPM++ 2M Karras": Karras sigmas under "automatic"
  bool supports_karras = true;       // false for DDIM and PLMS
};

struct SchedulerName {
  std::string name;   // "automatic" | "uniform" | "karras"
  std::string label;  // "Automatic"
};

const std::vector<SamplerName>& sampler_names();
const std::vector<SchedulerName>& scheduler_names();

// Case-insensitive lookup by display name or alias.
std::optional<SamplerName> find_sampler(std::string_view name);
std::optional<SchedulerName> find_scheduler(std::string_view name);

// "DDIM, PLMS, Euler, ..." for error messages.
std::string sampler_list_text();
std::string scheduler_list_text();

}  // namespace sd::serving
