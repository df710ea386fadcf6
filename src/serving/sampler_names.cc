// Sampler names from the samplers registry (served by /sdapi/v1/samplers and accepted in
// requests, case-insensitively, by display name, id or alias) and the three A1111 schedule
// types the engine implements. The engine receives the display name.
#include "serving/sampler_names.h"

#include "samplers/sampler.h"

#include <algorithm>
#include <cctype>

namespace sd::serving {

namespace {
bool iequals(std::string_view a, std::string_view b) {
  return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin(), [](char x, char y) {
           return std::tolower(static_cast<unsigned char>(x)) == std::tolower(static_cast<unsigned char>(y));
         });
}
}  // namespace

const std::vector<SamplerName>& sampler_names() {
  static const std::vector<SamplerName> names = [] {
    std::vector<SamplerName> out;
    for (const SamplerInfo& info : sampler_registry()) {
      SamplerName n{info.display_name, {info.id}, info.karras_default, info.supports_karras};
      n.aliases.insert(n.aliases.end(), info.aliases.begin(), info.aliases.end());
      out.push_back(std::move(n));
    }
    return out;
  }();
  return names;
}

const std::vector<SchedulerName>& scheduler_names() {
  static const std::vector<SchedulerName> names = {
      {"automatic", "Automatic"},
      {"uniform", "Uniform"},
      {"karras", "Karras"},
  };
  return names;
}

std::optional<SamplerName> find_sampler(std::string_view name) {
  for (const auto& s : sampler_names()) {
    if (iequals(s.name, name)) return s;
    for (const auto& a : s.aliases)
      if (iequals(a, name)) return s;
  }
  return std::nullopt;
}

std::optional<SchedulerName> find_scheduler(std::string_view name) {
  for (const auto& s : scheduler_names())
    if (iequals(s.name, name) || iequals(s.label, name)) return s;
  return std::nullopt;
}

std::string sampler_list_text() {
  std::string out;
  for (const auto& s : sampler_names()) out += (out.empty() ? "" : ", ") + s.name;
  return out;
}

std::string scheduler_list_text() {
  std::string out;
  for (const auto& s : scheduler_names()) out += (out.empty() ? "" : ", ") + s.name;
  return out;
}

}  // namespace sd::serving
