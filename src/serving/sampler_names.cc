// The A1111 sampler display names served by /sdapi/v1/samplers and accepted in requests,
// with the aliases clients send (k-diffusion ids, snake_case ids). The engine receives the
// display name; "DPM++ 2M Karras" becomes "DPM++ 2M" with the karras schedule, as A1111 1.9 does.
#include "serving/sampler_names.h"

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
  static const std::vector<SamplerName> names = {
      {"DDIM", {"ddim"}, ""},
      {"PLMS", {"plms"}, ""},
      {"Euler", {"euler", "k_euler"}, ""},
      {"Euler a", {"euler_a", "k_euler_a", "euler_ancestral", "euler-a"}, ""},
      {"LMS", {"lms", "k_lms"}, ""},
      {"Heun", {"heun", "k_heun"}, ""},
      {"DPM++ 2M", {"dpmpp_2m", "k_dpmpp_2m", "dpm++2m", "dpm++_2m"}, ""},
      {"DPM++ 2M Karras", {"dpmpp_2m_karras", "k_dpmpp_2m_ka", "dpm++2m_karras"}, "karras"},
      {"UniPC", {"unipc", "uni_pc"}, ""},
  };
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
