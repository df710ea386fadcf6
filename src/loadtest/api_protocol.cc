// Request bodies and reply parsing for the sdapi / openai / jobs APIs, the SSE parser and
// the prompt list. Parsing never throws: malformed replies become Reply{ok = false} with a
// message saying what was wrong.
#include "loadtest/api_protocol.h"

#include <fstream>
#include <nlohmann/json.hpp>

namespace sd::loadtest {

using nlohmann::json;

StatusOr<Api> parse_api(const std::string& name) {
  if (name == "sdapi") return Api::kSdapi;
  if (name == "openai") return Api::kOpenai;
  if (name == "jobs") return Api::kJobs;
  return InvalidArgument("--api '" + name + "': expected sdapi, openai or jobs");
}

const char* api_name(Api api) {
  switch (api) {
    case Api::kSdapi: return "sdapi";
    case Api::kOpenai: return "openai";
    case Api::kJobs: return "jobs";
  }
  return "?";
}

const char* submit_route(Api api) {
  switch (api) {
    case Api::kSdapi: return "/sdapi/v1/txt2img";
    case Api::kOpenai: return "/v1/images/generations";
    case Api::kJobs: return "/v1/jobs";
  }
  return "/";
}

std::string request_body(Api api, const GenerationSettings& s, const std::string& prompt, int64_t seed) {
  json body;
  body["prompt"] = prompt;
  if (!s.negative_prompt.empty()) body["negative_prompt"] = s.negative_prompt;
  body["steps"] = s.steps;
  body["cfg_scale"] = s.cfg_scale;
  body["seed"] = seed < 0 ? -1 : seed;
  if (api == Api::kOpenai) {
    body["n"] = s.batch_size;
    body["size"] = std::to_string(s.width) + "x" + std::to_string(s.height);
    body["response_format"] = "b64_json";
    body["sampler"] = s.sampler;
  } else {  // sdapi and jobs take the txt2img body
    body["width"] = s.width;
    body["height"] = s.height;
    body["batch_size"] = s.batch_size;
    body["sampler_name"] = s.sampler;
  }
  return body.dump(-1, ' ', false, json::error_handler_t::replace);
}

std::string error_message(const std::string& body) {
  json doc = json::parse(body, nullptr, false);
  if (!doc.is_discarded() && doc.is_object()) {
    auto err = doc.find("error");
    if (err != doc.end() && err->is_object()) {
      std::string code = err->value("code", std::string());
      std::string message = err->value("message", std::string());
      if (!code.empty() || !message.empty()) return code.empty() ? message : code + ": " + message;
    }
  }
  std::string head = body.substr(0, 200);
  for (char& c : head)
    if (static_cast<unsigned char>(c) < ' ') c = ' ';
  return head.empty() ? "(empty body)" : head;
}

namespace {
// Number of non-empty strings in array `key` of the object, or -1 when it is not that.
int count_strings(const json& doc, const char* key, const char* inner_key) {
  if (!doc.is_object()) return -1;
  auto it = doc.find(key);
  if (it == doc.end() || !it->is_array()) return -1;
  int n = 0;
  for (const json& item : *it) {
    const json* value = &item;
    if (inner_key) {
      if (!item.is_object() || !item.contains(inner_key)) return -1;
      value = &item[inner_key];
    }
    if (!value->is_string() || value->get_ref<const std::string&>().empty()) return -1;
    ++n;
  }
  return n;
}
}  // namespace

Reply parse_submit_reply(Api api, int status, const std::string& body) {
  Reply r;
  bool success = api == Api::kJobs ? (status == 202 || status == 200) : (status >= 200 && status < 300);
  if (!success) {
    r.error = error_message(body);
    return r;
  }
  json doc = json::parse(body, nullptr, false);
  if (doc.is_discarded()) {
    r.error = "the " + std::to_string(status) + " reply is not JSON";
    return r;
  }
  if (api == Api::kJobs) {
    if (!doc.is_object() || !doc.contains("id") || !doc["id"].is_string() || doc["id"].get<std::string>().empty()) {
      r.error = "the job reply has no string 'id'";
      return r;
    }
    r.job_id = doc["id"].get<std::string>();
    r.ok = true;
    return r;
  }
  int images = api == Api::kSdapi ? count_strings(doc, "images", nullptr) : count_strings(doc, "data", "b64_json");
  if (images <= 0) {
    r.error = api == Api::kSdapi ? "the reply has no 'images' array of base64 strings"
                                 : "the reply has no 'data' array of {b64_json}";
    return r;
  }
  r.ok = true;
  r.images = images;
  return r;
}

std::vector<SseEvent> SseParser::feed(std::string_view bytes) {
  std::vector<SseEvent> out;
  pending_.append(bytes);
  size_t pos = 0;
  while (true) {
    size_t nl = pending_.find('\n', pos);
    if (nl == std::string::npos) break;
    std::string line = pending_.substr(pos, nl - pos);
    pos = nl + 1;
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.empty()) {  // blank line: dispatch
      if (has_data_) out.push_back(current_);
      current_ = SseEvent();
      has_data_ = false;
      continue;
    }
    if (line[0] == ':') continue;  // comment / ping
    size_t colon = line.find(':');
    std::string field = line.substr(0, colon);
    std::string value = colon == std::string::npos ? "" : line.substr(colon + 1);
    if (!value.empty() && value[0] == ' ') value.erase(0, 1);
    if (field == "event") {
      current_.event = value;
    } else if (field == "data") {
      if (has_data_) current_.data += '\n';
      current_.data += value;
      has_data_ = true;
    }
  }
  pending_.erase(0, pos);
  return out;
}

JobEventResult interpret_job_event(const SseEvent& event) {
  JobEventResult r;
  if (event.event == "done") {
    r.terminal = true;
    const json doc = json::parse(event.data, nullptr, false);
    const json* images = doc.is_object() && doc.contains("images") ? &doc["images"] : nullptr;
    if (images && images->is_array() && !images->empty()) {
      r.ok = true;
      r.images = static_cast<int>(images->size());
    } else {
      r.error = "the done event lists no images";
    }
  } else if (event.event == "error") {
    r.terminal = true;
    r.error = error_message(event.data);
  }
  return r;
}

StatusOr<std::vector<std::string>> load_prompts(const std::string& path) {
  std::ifstream in(path);
  if (!in) return NotFound("--prompts '" + path + "': cannot open the file");
  std::vector<std::string> prompts;
  std::string line;
  while (std::getline(in, line)) {
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.find_first_not_of(" \t") == std::string::npos) continue;
    prompts.push_back(line);
  }
  if (prompts.empty()) return InvalidArgument("--prompts '" + path + "': the file holds no prompts");
  return prompts;
}

const std::vector<std::string>& builtin_prompts() {
  static const std::vector<std::string> prompts = {
      "a lighthouse on a rocky coast at sunset, oil painting",
      "a red fox in fresh snow, wildlife photography",
      "an astronaut riding a horse on the moon, digital art",
      "a cozy cabin in a pine forest, warm light in the windows",
      "a bowl of ramen with steam rising, studio photo",
      "a futuristic city skyline at night, neon reflections in the rain",
      "a watercolor of a sailboat on a calm lake",
      "a portrait of an old fisherman, dramatic lighting",
      "a field of sunflowers under a blue sky, impressionist style",
      "a steampunk airship above the clouds",
      "a cat wearing a tiny wizard hat, illustration",
      "a mountain village in the alps, early morning fog",
  };
  return prompts;
}

}  // namespace sd::loadtest
