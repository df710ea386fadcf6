// URL parsing, request bodies per API, reply parsing (images, job ids, server error
// messages), the SSE parser fed byte by byte, prompt files and stage planning.
#include <gtest/gtest.h>

#include <cstdio>
#include <fstream>
#include <nlohmann/json.hpp>

#include "loadtest/api_protocol.h"
#include "loadtest/load_test.h"
#include "loadtest/url.h"

namespace sd::loadtest {
namespace {

using nlohmann::json;

TEST(Url, Parses) {
  auto u = parse_url("http://127.0.0.1:7860");
  ASSERT_TRUE(u.ok());
  EXPECT_EQ(u->host, "127.0.0.1");
  EXPECT_EQ(u->port, "7860");
  EXPECT_EQ(u->base_path, "");
  EXPECT_EQ(u->host_header(), "127.0.0.1:7860");
  u = parse_url("http://example.com/prefix/");
  ASSERT_TRUE(u.ok());
  EXPECT_EQ(u->port, "80");
  EXPECT_EQ(u->base_path, "/prefix");
  EXPECT_EQ(u->host_header(), "example.com");
  u = parse_url("http://[::1]:8080/");
  ASSERT_TRUE(u.ok());
  EXPECT_EQ(u->host, "::1");
  EXPECT_EQ(u->host_header(), "[::1]:8080");
}

TEST(Url, RejectsWithReason) {
  for (const char* bad : {"127.0.0.1:7860", "https://x", "http://", "http://:80", "http://h:", "http://h:99999",
                          "http://h:12a", "http://h/a?b=1", "http://u@h", "http://[::1", "http://h h"}) {
    auto u = parse_url(bad);
    EXPECT_FALSE(u.ok()) << bad;
    if (!u.ok()) {
      EXPECT_NE(u.status().message().find(bad), std::string::npos) << u.status().message();
    }
  }
}

TEST(Protocol, RequestBodies) {
  GenerationSettings s;
  s.steps = 3;
  s.width = 64;
  s.height = 128;
  s.batch_size = 2;
  s.sampler = "Euler";
  json sd = json::parse(request_body(Api::kSdapi, s, "a \"cat\"", 5));
  EXPECT_EQ(sd["prompt"], "a \"cat\"");
  EXPECT_EQ(sd["steps"], 3);
  EXPECT_EQ(sd["width"], 64);
  EXPECT_EQ(sd["height"], 128);
  EXPECT_EQ(sd["batch_size"], 2);
  EXPECT_EQ(sd["sampler_name"], "Euler");
  EXPECT_EQ(sd["seed"], 5);
  json oa = json::parse(request_body(Api::kOpenai, s, "p", -7));
  EXPECT_EQ(oa["size"], "64x128");
  EXPECT_EQ(oa["n"], 2);
  EXPECT_EQ(oa["response_format"], "b64_json");
  EXPECT_EQ(oa["sampler"], "Euler");
  EXPECT_EQ(oa["seed"], -1);
  EXPECT_FALSE(oa.contains("width"));
  json jb = json::parse(request_body(Api::kJobs, s, "p", 1));
  EXPECT_EQ(jb["width"], 64);
  EXPECT_STREQ(submit_route(Api::kJobs), "/v1/jobs");
  EXPECT_STREQ(submit_route(Api::kOpenai), "/v1/images/generations");
  EXPECT_STREQ(submit_route(Api::kSdapi), "/sdapi/v1/txt2img");
  EXPECT_FALSE(parse_api("a1111").ok());
}

TEST(Protocol, ReplyParsing) {
  Reply r = parse_submit_reply(Api::kSdapi, 200, R"({"images":["aaa","bbb"],"parameters":{},"info":"{}"})");
  EXPECT_TRUE(r.ok);
  EXPECT_EQ(r.images, 2);
  r = parse_submit_reply(Api::kOpenai, 200, R"({"created":1,"data":[{"b64_json":"x"}]})");
  EXPECT_TRUE(r.ok);
  EXPECT_EQ(r.images, 1);
  r = parse_submit_reply(Api::kJobs, 202, R"({"id":"j1","status":"queued"})");
  EXPECT_TRUE(r.ok);
  EXPECT_EQ(r.job_id, "j1");
  // Malformed successes.
  EXPECT_FALSE(parse_submit_reply(Api::kSdapi, 200, "not json").ok);
  EXPECT_FALSE(parse_submit_reply(Api::kSdapi, 200, R"({"images":[]})").ok);
  EXPECT_FALSE(parse_submit_reply(Api::kSdapi, 200, R"({"images":[1]})").ok);
  EXPECT_FALSE(parse_submit_reply(Api::kOpenai, 200, R"({"data":[{"url":"x"}]})").ok);
  EXPECT_FALSE(parse_submit_reply(Api::kJobs, 202, R"({"status":"queued"})").ok);
  // Errors carry the server's message.
  r = parse_submit_reply(Api::kSdapi, 503, R"({"error":{"code":"queue_full","message":"the queue is full"}})");
  EXPECT_FALSE(r.ok);
  EXPECT_EQ(r.error, "queue_full: the queue is full");
  EXPECT_EQ(error_message("<html>\nBad Gateway</html>"), "<html> Bad Gateway</html>");
  EXPECT_EQ(error_message(""), "(empty body)");
}

TEST(Sse, ParsesEventsSplitAnywhere) {
  std::string stream =
      ": ping\n\nevent: queued\ndata: {\"position\":2}\n\nevent: step\r\ndata: {\"step\":1}\r\n\r\n"
      "data: line1\ndata: line2\n\nevent: done\ndata: {\"images\":[\"/a\",\"/b\"]}\n\n";
  for (size_t chunk : {size_t{1}, size_t{7}, stream.size()}) {
    SseParser parser;
    std::vector<SseEvent> events;
    for (size_t i = 0; i < stream.size(); i += chunk) {
      auto got = parser.feed(std::string_view(stream).substr(i, chunk));
      events.insert(events.end(), got.begin(), got.end());
    }
    ASSERT_EQ(events.size(), 4u) << chunk;
    EXPECT_EQ(events[0].event, "queued");
    EXPECT_EQ(events[1].event, "step");
    EXPECT_EQ(events[1].data, "{\"step\":1}");
    EXPECT_EQ(events[2].event, "message");
    EXPECT_EQ(events[2].data, "line1\nline2");
    JobEventResult done = interpret_job_event(events[3]);
    EXPECT_TRUE(done.terminal);
    EXPECT_TRUE(done.ok);
    EXPECT_EQ(done.images, 2);
    EXPECT_FALSE(interpret_job_event(events[1]).terminal);
  }
  JobEventResult err = interpret_job_event({"error", R"({"id":"x","error":{"code":"cancelled","message":"gone"}})"});
  EXPECT_TRUE(err.terminal);
  EXPECT_FALSE(err.ok);
  EXPECT_EQ(err.error, "cancelled: gone");
  EXPECT_FALSE(interpret_job_event({"done", "{}"}).ok);
}

TEST(Prompts, FileAndBuiltIn) {
  std::string path = ::testing::TempDir() + "/loadtest_prompts.txt";
  {
    std::ofstream f(path);
    f << "first prompt\r\n\n   \nsecond prompt\n";
  }
  auto p = load_prompts(path);
  ASSERT_TRUE(p.ok());
  EXPECT_EQ(*p, (std::vector<std::string>{"first prompt", "second prompt"}));
  { std::ofstream f(path); }
  EXPECT_FALSE(load_prompts(path).ok());
  EXPECT_FALSE(load_prompts(path + ".missing").ok());
  std::remove(path.c_str());
  EXPECT_GE(builtin_prompts().size(), 8u);
}

TEST(Plan, StagesFromFlags) {
  std::string variable;
  auto one = plan_stages(0, 0, 0, 0, "", &variable);
  ASSERT_TRUE(one.ok());
  ASSERT_EQ(one->size(), 1u);
  EXPECT_EQ((*one)[0].users, 1);
  EXPECT_EQ((*one)[0].duration_s, 30);
  auto open = plan_stages(0, 2.5, 0, 100, "", &variable);
  ASSERT_TRUE(open.ok());
  EXPECT_EQ((*open)[0].rate, 2.5);
  EXPECT_EQ((*open)[0].requests, 100);
  EXPECT_EQ((*open)[0].duration_s, 0);
  auto sweep = plan_stages(0, 0, 5, 0, "users=1,2,4", &variable);
  ASSERT_TRUE(sweep.ok());
  EXPECT_EQ(variable, "users");
  ASSERT_EQ(sweep->size(), 3u);
  EXPECT_EQ((*sweep)[2].users, 4);
  EXPECT_EQ((*sweep)[2].label, "users=4");
  EXPECT_FALSE(plan_stages(4, 0, 5, 0, "users=1,2", &variable).ok());
  EXPECT_FALSE(plan_stages(2, 1.0, 5, 0, "", &variable).ok());
  EXPECT_FALSE(plan_stages(0, 0, 5, 0, "users=x", &variable).ok());
}

}  // namespace
}  // namespace sd::loadtest
