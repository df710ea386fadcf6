// Every route of the in-process server and its JSON shape, auth, CORS, and the HTTP-level
// rows of the bad-input table (413, 404, 405, malformed HTTP, bad JSON over the wire).
#include <gtest/gtest.h>

#include "io/image.h"
#include "serving/request_parsing.h"
#include "test_client.h"

namespace sd::testing {
namespace {

using nlohmann::json;

const std::string kPng = std::string("\x89PNG\r\n\x1a\n", 8);

TEST(ServerRoutes, Health) {
  TestServer t;
  Reply live = http(t.port(), "GET", "/health/live");
  EXPECT_EQ(live.status, 200);
  EXPECT_EQ(live.json()["status"], "ok");
  Reply ready = http(t.port(), "GET", "/health/ready");
  EXPECT_EQ(ready.status, 200);
  EXPECT_EQ(ready.json()["status"], "ready");
}

TEST(ServerRoutes, NotReadyUntilEnginesAreAttached) {
  serving::ServerOptions o;
  o.port = 0;
  o.log_requests = false;
  serving::Server server(o);
  ASSERT_TRUE(server.start().ok());
  Reply ready = http(server.port(), "GET", "/health/ready");
  EXPECT_EQ(ready.status, 503);
  EXPECT_EQ(ready.json()["status"], "loading");
  EXPECT_EQ(http(server.port(), "GET", "/health/live").status, 200);
  Reply gen = http(server.port(), "POST", "/sdapi/v1/txt2img", txt2img_body("x", 1));
  EXPECT_EQ(gen.status, 503);
  EXPECT_EQ(gen.json()["error"]["code"], "not_ready");
  EXPECT_FALSE(gen.header("retry-after").empty());
  EXPECT_EQ(http(server.port(), "GET", "/sdapi/v1/sd-models").json().size(), 0u);
  FakeEngine engine;
  server.attach_engines({&engine});
  EXPECT_EQ(http(server.port(), "GET", "/health/ready").status, 200);
}

TEST(ServerRoutes, Txt2ImgShape) {
  TestServer t;
  Reply r = http(t.port(), "POST", "/sdapi/v1/txt2img",
                 R"({"prompt":"a lighthouse","seed":77,"steps":3,"width":64,"height":64,"batch_size":2,"n_iter":2,
                     "sampler_name":"Euler a","override_settings":{"CLIP_stop_at_last_layers":2},"enable_hr":false})");
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(r.header("content-type"), "application/json");
  json j = r.json();
  ASSERT_EQ(j["images"].size(), 4u);
  std::string png = base64_decode(j["images"][0]);
  EXPECT_EQ(png.substr(0, 8), kPng);
  EXPECT_NE(png.find("parameters"), std::string::npos);  // A1111 text chunk
  EXPECT_EQ(j["parameters"]["prompt"], "a lighthouse");
  EXPECT_EQ(j["parameters"]["n_iter"], 2);
  ASSERT_TRUE(j["info"].is_string());
  json info = json::parse(j["info"].get<std::string>());
  EXPECT_EQ(info["seed"], 77);
  EXPECT_EQ(info["all_seeds"], json({77, 78, 79, 80}));
  EXPECT_EQ(info["prompt"], "a lighthouse");
  EXPECT_EQ(info["sampler_name"], "Euler a");
  EXPECT_EQ(info["steps"], 3);
  EXPECT_EQ(info["clip_skip"], 2);
  EXPECT_EQ(info["sd_model_name"], "fake-model");
  EXPECT_EQ(info["infotexts"].size(), 4u);
  EXPECT_EQ(info["all_prompts"].size(), 4u);
}

TEST(ServerRoutes, RandomSeedIsResolvedAndReported) {
  TestServer t;
  Reply r = http(t.port(), "POST", "/sdapi/v1/txt2img", txt2img_body("x", -1, 2, 2));
  ASSERT_EQ(r.status, 200);
  json info = json::parse(r.json()["info"].get<std::string>());
  int64_t seed = info["seed"];
  EXPECT_GE(seed, 0);
  EXPECT_EQ(info["all_seeds"][1], seed + 1);
}

TEST(ServerRoutes, DiscoveryGets) {
  TestServer t;
  json samplers = http(t.port(), "GET", "/sdapi/v1/samplers").json();
  ASSERT_TRUE(samplers.is_array());
  std::vector<std::string> names;
  for (auto& s : samplers) {
    names.push_back(s["name"]);
    EXPECT_TRUE(s["aliases"].is_array());
    EXPECT_TRUE(s["options"].is_object());
  }
  for (const char* n : {"DDIM", "PLMS", "Euler", "Euler a", "LMS", "Heun", "DPM++ 2M", "DPM++ 2M Karras", "UniPC"})
    EXPECT_NE(std::find(names.begin(), names.end(), n), names.end()) << n;
  json schedulers = http(t.port(), "GET", "/sdapi/v1/schedulers").json();
  ASSERT_EQ(schedulers.size(), 3u);
  EXPECT_EQ(schedulers[0]["name"], "automatic");
  EXPECT_TRUE(schedulers[0].contains("label"));
  json models = http(t.port(), "GET", "/sdapi/v1/sd-models").json();
  ASSERT_EQ(models.size(), 1u);
  EXPECT_EQ(models[0]["model_name"], "fake-model");
  EXPECT_EQ(models[0]["filename"], "fake-model.safetensors");  // no server paths
  json options = http(t.port(), "GET", "/sdapi/v1/options").json();
  EXPECT_EQ(options["sd_model_checkpoint"], "fake-model");
  EXPECT_EQ(options["CLIP_stop_at_last_layers"], 1);
  json progress = http(t.port(), "GET", "/sdapi/v1/progress").json();
  EXPECT_EQ(progress["progress"], 0.0);
  EXPECT_TRUE(progress["state"].contains("sampling_step"));
  EXPECT_TRUE(progress.contains("eta_relative"));
  json models_oai = http(t.port(), "GET", "/v1/models").json();
  EXPECT_EQ(models_oai["object"], "list");
  EXPECT_EQ(models_oai["data"][0]["id"], "fake-model");
  EXPECT_EQ(models_oai["data"][0]["object"], "model");
}

TEST(ServerRoutes, ProgressWhileRunning) {
  TestServer t({}, 1, 5);
  Reply job = http(t.port(), "POST", "/v1/jobs", txt2img_body("slow", 1, 100));
  ASSERT_EQ(job.status, 202);
  ASSERT_TRUE(eventually([&] { return t.engines[0]->steps_run.load() >= 3; }));
  json p = http(t.port(), "GET", "/sdapi/v1/progress").json();
  EXPECT_GT(p["progress"].get<double>(), 0.0);
  EXPECT_EQ(p["state"]["sampling_steps"], 100);
  EXPECT_EQ(p["state"]["job_count"], 1);
  EXPECT_EQ(http(t.port(), "DELETE", "/v1/jobs/" + job.json()["id"].get<std::string>()).status, 200);
}

TEST(ServerRoutes, OpenAiGenerations) {
  TestServer t;
  Reply r = http(t.port(), "POST", "/v1/images/generations",
                 R"({"model":"whatever","prompt":"a boat","n":2,"size":"64x64","response_format":"b64_json",
                     "seed":9,"steps":3,"cfg_scale":5,"negative_prompt":"fog","sampler":"euler"})");
  ASSERT_EQ(r.status, 200) << r.body;
  json j = r.json();
  EXPECT_TRUE(j["created"].is_number_integer());
  ASSERT_EQ(j["data"].size(), 2u);
  EXPECT_EQ(base64_decode(j["data"][1]["b64_json"]).substr(0, 8), kPng);
  GenerationRequest want;
  want.prompt = "a boat";
  want.width = want.height = 64;
  want.steps = 3;
  want.cfg_scale = 5;
  Image expected = FakeEngine::expected_image(want, 9, 1);
  std::string png1 = base64_decode(j["data"][1]["b64_json"]);
  auto decoded = decode_png(std::vector<uint8_t>(png1.begin(), png1.end()));
  ASSERT_TRUE(decoded.ok());
  EXPECT_EQ(decoded->rgb, expected.rgb);
  EXPECT_EQ(t.engines[0]->begun.load(), 1);  // n=2 is one batched job

  for (const char* format : {"jpeg", "webp"}) {
    Reply f = http(t.port(), "POST", "/v1/images/generations",
                   std::string(R"({"prompt":"p","size":"64x64","steps":2,"output_format":")") + format + "\"}");
    ASSERT_EQ(f.status, 200) << f.body;
    std::string bytes = base64_decode(f.json()["data"][0]["b64_json"]);
    std::string want = std::string(format) == "jpeg" ? "\xff\xd8\xff" : "WEBP";
    EXPECT_EQ(std::string(format) == "jpeg" ? bytes.substr(0, 3) : bytes.substr(8, 4), want);
  }
}

TEST(ServerRoutes, OpenAiUrlResponseServesImagesFromTheJobStore) {
  TestServer t;
  Reply r = http(t.port(), "POST", "/v1/images/generations",
                 R"({"prompt":"url please","size":"64x64","steps":2,"n":2,"response_format":"url"})");
  ASSERT_EQ(r.status, 200) << r.body;
  std::string url = r.json()["data"][1]["url"];
  std::string prefix = "http://127.0.0.1:" + std::to_string(t.port());
  ASSERT_EQ(url.rfind(prefix, 0), 0u) << url;
  Reply image = http(t.port(), "GET", url.substr(prefix.size()));
  EXPECT_EQ(image.status, 200);
  EXPECT_EQ(image.header("content-type"), "image/png");
  EXPECT_EQ(image.body.substr(0, 8), kPng);
}

TEST(ServerRoutes, JobsLifecycle) {
  TestServer t;
  Reply created = http(t.port(), "POST", "/v1/jobs", txt2img_body("job", 5, 3, 2));
  ASSERT_EQ(created.status, 202) << created.body;
  std::string id = created.json()["id"];
  EXPECT_EQ(created.header("location"), "/v1/jobs/" + id);
  EXPECT_TRUE(created.json()["status"] == "queued" || created.json()["status"] == "running" ||
              created.json()["status"] == "succeeded");
  json job;
  ASSERT_TRUE(eventually([&] {
    job = http(t.port(), "GET", "/v1/jobs/" + id).json();
    return job["status"] == "succeeded";
  }));
  EXPECT_EQ(job["images"].size(), 2u);
  EXPECT_EQ(job["seeds"], json({5, 6}));
  EXPECT_EQ(job["step"], 3);
  EXPECT_TRUE(job["error"].is_null());
  Reply image = http(t.port(), "GET", job["images"][1]);
  EXPECT_EQ(image.status, 200);
  EXPECT_EQ(image.body.substr(0, 8), kPng);
  EXPECT_EQ(http(t.port(), "GET", "/v1/jobs/" + id + "/images/2").status, 404);
  EXPECT_EQ(http(t.port(), "GET", "/v1/jobs/" + id + "/images/x").status, 404);
  EXPECT_EQ(http(t.port(), "GET", "/v1/jobs/job_nope").status, 404);
  EXPECT_EQ(http(t.port(), "DELETE", "/v1/jobs/job_nope").status, 404);
  Reply again = http(t.port(), "DELETE", "/v1/jobs/" + id);
  EXPECT_EQ(again.status, 409);
  EXPECT_EQ(again.json()["error"]["code"], "already_finished");
}

TEST(ServerRoutes, FinishedJobsExpire) {
  serving::ServerOptions o;
  o.job_ttl_s = 0.05;
  TestServer t(o);
  std::string id = http(t.port(), "POST", "/v1/jobs", txt2img_body("short-lived", 1, 1)).json()["id"];
  ASSERT_TRUE(eventually([&] { return http(t.port(), "GET", "/v1/jobs/" + id).json()["status"] == "succeeded"; }));
  ASSERT_TRUE(eventually([&] { return http(t.port(), "GET", "/v1/jobs/" + id).status == 404; }));
}

TEST(ServerRoutes, Metrics) {
  TestServer t;
  ASSERT_EQ(http(t.port(), "POST", "/sdapi/v1/txt2img", txt2img_body("m", 1, 2, 3)).status, 200);
  // The request is counted after its response is written, so the client can read /metrics first.
  Reply m;
  ASSERT_TRUE(eventually([&] {
    m = http(t.port(), "GET", "/metrics");
    return m.body.find("sd_requests_total{api=\"sdapi\"") != std::string::npos;
  })) << m.body;
  ASSERT_EQ(m.status, 200);
  EXPECT_NE(m.header("content-type").find("text/plain"), std::string::npos);
  for (const char* name : {"sd_requests_total{api=\"sdapi\",status=\"200\"} 1", "sd_queue_depth 0",
                           "sd_inflight_requests 0", "sd_batch_size_bucket{le=\"4\"}", "sd_queue_wait_seconds_count 1",
                           "sd_request_duration_seconds_bucket{api=\"sdapi\",le=\"+Inf\"} 1", "sd_step_seconds_count 2",
                           "sd_images_total 3", "sd_device_memory_bytes{device=\"cpu\"} 12345", "# TYPE sd_batch_size histogram",
                           "# TYPE sd_cancelled_total counter"})
    EXPECT_NE(m.body.find(name), std::string::npos) << name << "\n" << m.body;
  EXPECT_EQ(m.body.find("sd_device_power_watts"), std::string::npos);  // the engine reads no device
}

// Devices that report power, clocks and an energy counter get one line per device and family
// (base units: joules, watts, hertz); a family no device knows is left out.
TEST(ServerRoutes, MetricsDeviceReadings) {
  TestServer t({}, 2);
  DeviceReading r0;
  r0.energy_j = 123456.789, r0.power_w = 689.5, r0.power_limit_w = 700, r0.sm_mhz = 1545, r0.temperature_c = 61;
  r0.power_capped = true;
  DeviceReading r1;  // a board without an energy counter or a known limit
  r1.power_w = 527.722, r1.sm_mhz = 1980, r1.temperature_c = 35;
  t.engines[0]->set_device_reading(r0);
  t.engines[1]->set_device_reading(r1);
  const Reply m = http(t.port(), "GET", "/metrics");
  ASSERT_EQ(m.status, 200);
  for (const char* line :
       {"# TYPE sd_device_energy_joules_total counter\n", "sd_device_energy_joules_total{device=\"cuda:0\"} 123456.789\n",
        "# TYPE sd_device_power_watts gauge\n", "sd_device_power_watts{device=\"cuda:0\"} 689.5\n",
        "sd_device_power_watts{device=\"cuda:1\"} 527.722\n", "sd_device_power_limit_watts{device=\"cuda:0\"} 700\n",
        "sd_device_power_capped{device=\"cuda:0\"} 1\n", "sd_device_power_capped{device=\"cuda:1\"} 0\n",
        "sd_device_sm_clock_hertz{device=\"cuda:0\"} 1545000000\n", "sd_device_sm_clock_hertz{device=\"cuda:1\"} 1980000000\n",
        "sd_device_temperature_celsius{device=\"cuda:1\"} 35\n"})
    EXPECT_NE(m.body.find(line), std::string::npos) << line << "\n" << m.body;
  EXPECT_EQ(m.body.find("sd_device_energy_joules_total{device=\"cuda:1\"}"), std::string::npos) << m.body;
  EXPECT_EQ(m.body.find("sd_device_power_limit_watts{device=\"cuda:1\"}"), std::string::npos) << m.body;
}

// Each worker's engine events (graph recordings, their seconds, out-of-memory retries), as the
// worker last read them after a step.
TEST(ServerRoutes, MetricsEngineEvents) {
  TestServer t;
  EngineEvents e;
  e.graph_recordings = 3;
  e.graph_recording_seconds = 4.5;
  e.memory_retries = 1;
  e.plan_releases = 2;
  t.engines[0]->set_events(e);
  ASSERT_EQ(http(t.port(), "POST", "/sdapi/v1/txt2img", txt2img_body("events", 1, 2)).status, 200);
  const Reply m = http(t.port(), "GET", "/metrics");
  ASSERT_EQ(m.status, 200);
  for (const char* line : {"# TYPE sd_graph_recordings_total counter\n", "sd_graph_recordings_total{worker=\"0\",device=\"cpu\"} 3\n",
                           "sd_graph_recording_seconds_total{worker=\"0\",device=\"cpu\"} 4.5\n",
                           "sd_out_of_memory_retries_total{worker=\"0\",device=\"cpu\"} 1\n",
                           "sd_plan_releases_total{worker=\"0\",device=\"cpu\"} 2\n"})
    EXPECT_NE(m.body.find(line), std::string::npos) << line << "\n" << m.body;
}

TEST(ServerRoutes, AuthOnEveryRouteButHealth) {
  serving::ServerOptions o;
  o.api_key = "test-key";
  TestServer t(o);
  EXPECT_EQ(http(t.port(), "GET", "/health/live").status, 200);
  EXPECT_EQ(http(t.port(), "GET", "/health/ready").status, 200);
  for (const auto& [method, path] : std::vector<std::pair<std::string, std::string>>{
           {"GET", "/metrics"}, {"GET", "/sdapi/v1/samplers"}, {"GET", "/v1/models"}, {"POST", "/sdapi/v1/txt2img"},
           {"POST", "/v1/images/generations"}, {"POST", "/v1/jobs"}, {"GET", "/v1/jobs/job_x"}, {"DELETE", "/v1/jobs/job_x"},
           {"GET", "/sdapi/v1/progress"}}) {
    Reply r = http(t.port(), method, path, method == "POST" ? txt2img_body("x", 1) : "");
    EXPECT_EQ(r.status, 401) << method << " " << path;
    EXPECT_EQ(r.json()["error"]["code"], "unauthorized");
    EXPECT_EQ(r.header("www-authenticate"), "Bearer");
  }
  EXPECT_EQ(http(t.port(), "GET", "/v1/models", "", {{"Authorization", "Bearer wrong-key"}}).status, 401);
  EXPECT_EQ(http(t.port(), "GET", "/v1/models", "", {{"Authorization", "Bearer test-ke"}}).status, 401);
  EXPECT_EQ(http(t.port(), "GET", "/v1/models", "", {{"Authorization", "Bearer test-key2"}}).status, 401);
  EXPECT_EQ(http(t.port(), "GET", "/v1/models", "", {{"Authorization", "Bearer test-key"}}).status, 200);
  EXPECT_EQ(http(t.port(), "GET", "/v1/models", "", {{"Authorization", "bearer test-key"}}).status, 200);
  EXPECT_EQ(http(t.port(), "GET", "/v1/models", "", {{"X-API-Key", "test-key"}}).status, 200);
  EXPECT_EQ(http(t.port(), "POST", "/sdapi/v1/txt2img", txt2img_body("x", 1, 1), {{"Authorization", "Bearer test-key"}}).status, 200);
}

TEST(ServerRoutes, ConstantTimeCompare) {
  EXPECT_TRUE(serving::constant_time_equals("abc", "abc"));
  EXPECT_FALSE(serving::constant_time_equals("abd", "abc"));
  EXPECT_FALSE(serving::constant_time_equals("ab", "abc"));
  EXPECT_FALSE(serving::constant_time_equals("abcd", "abc"));
  EXPECT_FALSE(serving::constant_time_equals("", ""));
}

TEST(ServerRoutes, CorsOnlyWhenConfigured) {
  {
    TestServer t;
    Reply r = http(t.port(), "GET", "/v1/models", "", {{"Origin", "http://ui.example"}});
    EXPECT_EQ(r.status, 200);
    EXPECT_EQ(r.header("access-control-allow-origin"), "");
    EXPECT_EQ(http(t.port(), "OPTIONS", "/v1/models", "", {{"Origin", "http://ui.example"}}).status, 405);
  }
  serving::ServerOptions o;
  o.cors_origin = "http://ui.example";
  o.api_key = "test-key";
  TestServer t(o);
  Reply ok = http(t.port(), "GET", "/v1/models", "", {{"Origin", "http://ui.example"}, {"X-API-Key", "test-key"}});
  EXPECT_EQ(ok.header("access-control-allow-origin"), "http://ui.example");
  Reply other = http(t.port(), "GET", "/v1/models", "", {{"Origin", "http://evil.example"}, {"X-API-Key", "test-key"}});
  EXPECT_EQ(other.header("access-control-allow-origin"), "");
  Reply preflight = http(t.port(), "OPTIONS", "/sdapi/v1/txt2img", "",
                         {{"Origin", "http://ui.example"}, {"Access-Control-Request-Method", "POST"}});
  EXPECT_EQ(preflight.status, 204);  // no API key needed for the preflight
  EXPECT_NE(preflight.header("access-control-allow-methods").find("POST"), std::string::npos);
  EXPECT_NE(preflight.header("access-control-allow-headers").find("Authorization"), std::string::npos);
}

TEST(ServerRoutes, BadInputOverHttp) {
  TestServer t;
  struct Case {
    std::string method, path, body;
    int status;
    std::string code;
  };
  const std::vector<Case> cases = {
      {"POST", "/sdapi/v1/txt2img", "{not json", 400, "malformed_json"},
      {"POST", "/sdapi/v1/txt2img", R"({"steps":"x"})", 400, "wrong_type"},
      {"POST", "/sdapi/v1/txt2img", R"({"width":500})", 400, "out_of_range"},
      {"POST", "/sdapi/v1/txt2img", R"({"width":4096})", 400, "out_of_range"},
      {"POST", "/sdapi/v1/txt2img", R"({"steps":151})", 400, "out_of_range"},
      {"POST", "/sdapi/v1/txt2img", R"({"cfg_scale":31})", 400, "out_of_range"},
      {"POST", "/sdapi/v1/txt2img", R"({"batch_size":64,"n_iter":2})", 400, "too_many_images"},
      {"POST", "/sdapi/v1/txt2img", "{\"prompt\":\"" + std::string(4097, 'p') + "\"}", 400, "prompt_too_long"},
      {"POST", "/sdapi/v1/txt2img", R"({"sampler_name":"Nope"})", 400, "unknown_sampler"},
      {"POST", "/v1/images/generations", R"({"prompt":"x","size":"1x1"})", 400, "out_of_range"},
      {"POST", "/v1/images/generations", R"({"n":1})", 400, "missing_field"},
      {"POST", "/v1/jobs", R"({"steps":0})", 400, "out_of_range"},
      {"GET", "/nope", "", 404, "not_found"},
      {"GET", "/sdapi/v1/txt2img", "", 405, "method_not_allowed"},
      {"DELETE", "/health/live", "", 405, "method_not_allowed"},
      {"PUT", "/v1/jobs", "{}", 405, "method_not_allowed"},
      {"GET", "/v1/jobs/", "", 404, "not_found"},
  };
  for (const auto& c : cases) {
    Reply r = http(t.port(), c.method, c.path, c.body);
    EXPECT_EQ(r.status, c.status) << c.method << " " << c.path << " " << c.body.substr(0, 60);
    EXPECT_EQ(r.json()["error"]["code"], c.code) << r.body;
    EXPECT_TRUE(r.json()["error"]["message"].is_string());
  }
  EXPECT_EQ(http(t.port(), "GET", "/sdapi/v1/txt2img").header("allow"), "POST");
  EXPECT_EQ(t.engines[0]->begun.load(), 0);
}

TEST(ServerRoutes, BodyOverOneMebibyteIs413) {
  TestServer t;
  std::string big = "{\"prompt\":\"" + std::string(1100000, 'a') + "\"}";
  Reply r = http(t.port(), "POST", "/sdapi/v1/txt2img", big);
  EXPECT_EQ(r.status, 413);
  EXPECT_EQ(r.json()["error"]["code"], "body_too_large");
  // Chunked bodies (no Content-Length) are limited too.
  std::string chunked = "POST /sdapi/v1/txt2img HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n";
  for (int i = 0; i < 20; ++i) chunked += "10000\r\n" + std::string(0x10000, 'a') + "\r\n";
  std::string reply = raw_exchange(t.port(), chunked, 3000);
  EXPECT_EQ(reply.rfind("HTTP/1.1 413", 0), 0u) << reply.substr(0, 100);
  // 100-continue: rejected before the body is sent.
  std::string head = "POST /sdapi/v1/txt2img HTTP/1.1\r\nHost: x\r\nContent-Length: 5000000\r\nExpect: 100-continue\r\n\r\n";
  EXPECT_EQ(raw_exchange(t.port(), head, 3000).rfind("HTTP/1.1 413", 0), 0u);
  EXPECT_EQ(http(t.port(), "GET", "/health/live").status, 200);  // still serving
}

TEST(ServerRoutes, MalformedHttpAndKeepAlive) {
  TestServer t;
  EXPECT_EQ(raw_exchange(t.port(), "GARBAGE\r\n\r\n", 2000).rfind("HTTP/1.1 400", 0), 0u);
  std::string huge_header = "GET /health/live HTTP/1.1\r\nHost: x\r\nX-Big: " + std::string(40000, 'h') + "\r\n\r\n";
  EXPECT_EQ(raw_exchange(t.port(), huge_header, 2000).rfind("HTTP/1.1 431", 0), 0u);
  // Two requests on one keep-alive connection, the second closing.
  std::string two = "GET /health/live HTTP/1.1\r\nHost: x\r\n\r\nGET /health/ready HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
  std::string reply = raw_exchange(t.port(), two, 3000);
  EXPECT_NE(reply.find("\"ok\""), std::string::npos);
  EXPECT_NE(reply.find("\"ready\""), std::string::npos);
  // 100-continue for an acceptable body.
  RawConnection c(t.port());
  std::string body = txt2img_body("continue", 1, 1);
  c.send("POST /sdapi/v1/txt2img HTTP/1.1\r\nHost: x\r\nConnection: close\r\nExpect: 100-continue\r\nContent-Length: " +
         std::to_string(body.size()) + "\r\n\r\n");
  EXPECT_EQ(c.read_some(300).rfind("HTTP/1.1 100 Continue", 0), 0u);
  c.send(body);
  EXPECT_NE(c.read_some(3000).find("HTTP/1.1 200"), std::string::npos);
}

TEST(ServerRoutes, StalledClientsAreTimedOut) {
  serving::ServerOptions o;
  o.read_timeout_s = 0.2;
  TestServer t(o);
  RawConnection c(t.port());
  c.send("POST /sdapi/v1/txt2img HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{\"pro");  // never finishes
  auto start = std::chrono::steady_clock::now();
  c.read_some(3000);  // returns when the server closes the connection
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(2));
  EXPECT_TRUE(eventually([&] { return t.server->state().http->open_connections() == 0; }));
}

}  // namespace
}  // namespace sd::testing
