// Server behaviour under load and failure: 64 concurrent clients (each image equal to the
// same request served alone), batching observed, queue full -> 503 + Retry-After, queue
// deadline, disconnect and DELETE cancel work (metrics show it), SSE order, drain/SIGTERM.
#include <gtest/gtest.h>

#include <csignal>
#include <thread>

#include "io/image.h"
#include "test_client.h"

namespace sd::testing {
namespace {

using nlohmann::json;

TEST(ServerBehavior, SixtyFourConcurrentClientsGetTheirOwnImages) {
  serving::ServerOptions o;
  o.max_batch = 16;
  TestServer t(o, 1, 2);
  constexpr int kClients = 64;
  auto body = [](int i) { return txt2img_body("client " + std::to_string(i), 5000 + 3 * i, 3 + i % 5, 1 + i % 2); };
  // Alone: a few requests served one at a time (no batch-mates).
  std::map<int, std::vector<std::string>> alone;
  for (int i : {0, 1, 7, 33, 63}) {
    Reply r = http(t.port(), "POST", "/sdapi/v1/txt2img", body(i));
    ASSERT_EQ(r.status, 200);
    json j = r.json();
    for (auto& im : j["images"]) alone[i].push_back(im);
  }
  t.engines[0]->clear_records();
  std::vector<Reply> replies(kClients);
  std::vector<std::thread> clients;
  for (int i = 0; i < kClients; ++i)
    clients.emplace_back([&, i] { replies[i] = http(t.port(), "POST", "/sdapi/v1/txt2img", body(i)); });
  for (auto& c : clients) c.join();
  for (int i = 0; i < kClients; ++i) {
    ASSERT_EQ(replies[i].status, 200) << i << " " << replies[i].error << replies[i].body.substr(0, 200);
    json j = replies[i].json();
    ASSERT_EQ(j["images"].size(), static_cast<size_t>(1 + i % 2));
    GenerationRequest want;
    want.prompt = "client " + std::to_string(i);
    want.width = want.height = 64;
    want.steps = 3 + i % 5;
    for (size_t k = 0; k < j["images"].size(); ++k) {
      std::string png = base64_decode(j["images"][k]);
      auto decoded = decode_png(std::vector<uint8_t>(png.begin(), png.end()));
      ASSERT_TRUE(decoded.ok());
      EXPECT_EQ(decoded->rgb, FakeEngine::expected_image(want, 5000 + 3 * i, static_cast<int>(k)).rgb) << i;
      if (alone.count(i)) {
        EXPECT_EQ(j["images"][k], alone[i][k]) << "client " << i << " differs from alone";
      }
    }
  }
  EXPECT_GT(t.engines[0]->max_batch_images(), 1) << "no batching happened";
  EXPECT_LE(t.engines[0]->max_batch_images(), 16);
  // Requests are counted after their responses are written: the last ones may still be counting.
  EXPECT_TRUE(eventually([&] { return t.metric("sd_requests_total{api=\"sdapi\",status=\"200\"}") == kClients + 5; }))
      << t.metric("sd_requests_total{api=\"sdapi\",status=\"200\"}");
}

TEST(ServerBehavior, QueueFullGives503WithRetryAfter) {
  serving::ServerOptions o;
  o.max_batch = 1;
  o.max_queue = 2;
  o.retry_after_s = 7;
  TestServer t(o, 1, 2);
  std::vector<std::string> ids;
  Reply first = http(t.port(), "POST", "/v1/jobs", txt2img_body("running", 1, 150));
  ASSERT_EQ(first.status, 202);
  ids.push_back(first.json()["id"]);
  ASSERT_TRUE(eventually([&] { return t.engines[0]->steps_run.load() >= 1; }));
  for (int i = 0; i < 2; ++i) {
    Reply queued = http(t.port(), "POST", "/v1/jobs", txt2img_body("queued", 2 + i, 2));
    ASSERT_EQ(queued.status, 202);
    EXPECT_EQ(queued.json()["queue_position"], i);
    ids.push_back(queued.json()["id"]);
  }
  for (const char* path : {"/sdapi/v1/txt2img", "/v1/jobs"}) {
    Reply full = http(t.port(), "POST", path, txt2img_body("rejected", 9, 2));
    EXPECT_EQ(full.status, 503) << path;
    EXPECT_EQ(full.json()["error"]["code"], "queue_full");
    EXPECT_EQ(full.header("retry-after"), "7");
  }
  Reply full_oai = http(t.port(), "POST", "/v1/images/generations", R"({"prompt":"x","size":"64x64"})");
  EXPECT_EQ(full_oai.status, 503);
  EXPECT_EQ(t.metric("sd_queue_depth"), 2);
  EXPECT_EQ(t.metric("sd_inflight_requests"), 3);
  for (auto& id : ids) http(t.port(), "DELETE", "/v1/jobs/" + id);
}

TEST(ServerBehavior, QueueDeadline) {
  serving::ServerOptions o;
  o.max_batch = 1;
  o.queue_timeout_s = 0.1;
  TestServer t(o, 1, 5);
  std::string id = http(t.port(), "POST", "/v1/jobs", txt2img_body("hog", 1, 100)).json()["id"];
  ASSERT_TRUE(eventually([&] { return t.engines[0]->steps_run.load() >= 1; }));
  Reply late = http(t.port(), "POST", "/sdapi/v1/txt2img", txt2img_body("late", 2, 2));
  EXPECT_EQ(late.status, 503);
  EXPECT_EQ(late.json()["error"]["code"], "queue_timeout");
  EXPECT_FALSE(late.header("retry-after").empty());
  EXPECT_EQ(t.metric("sd_cancelled_total{reason=\"deadline\"}"), 1);
  http(t.port(), "DELETE", "/v1/jobs/" + id);
}

TEST(ServerBehavior, ClientDisconnectCancelsTheWork) {
  TestServer t({}, 1, 3);
  {
    RawConnection c(t.port());
    std::string body = txt2img_body("abandoned", 1, 150);
    c.send("POST /sdapi/v1/txt2img HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: " +
           std::to_string(body.size()) + "\r\n\r\n" + body);
    ASSERT_TRUE(eventually([&] { return t.engines[0]->steps_run.load() >= 3; }));
  }  // closes the socket while the request waits for its image
  ASSERT_TRUE(eventually([&] { return t.metric("sd_cancelled_total{reason=\"disconnect\"}") == 1; }));
  int steps = t.engines[0]->steps_run.load();
  EXPECT_LT(steps, 150);
  std::this_thread::sleep_for(std::chrono::milliseconds(30));
  EXPECT_EQ(t.engines[0]->steps_run.load(), steps) << "work continued after the disconnect";
  EXPECT_EQ(t.metric("sd_inflight_requests"), 0);
  EXPECT_TRUE(eventually([&] { return t.metric("sd_requests_total{api=\"sdapi\",status=\"499\"}") == 1; }));

  // OpenAI route too, and a request still queued when its client leaves.
  serving::ServerOptions o;
  o.max_batch = 1;
  TestServer q(o, 1, 3);
  std::string hog = http(q.port(), "POST", "/v1/jobs", txt2img_body("hog", 1, 150)).json()["id"];
  ASSERT_TRUE(eventually([&] { return q.engines[0]->steps_run.load() >= 1; }));
  {
    RawConnection c(q.port());
    std::string body = R"({"prompt":"queued then gone","size":"64x64","steps":5})";
    c.send("POST /v1/images/generations HTTP/1.1\r\nHost: x\r\nContent-Length: " + std::to_string(body.size()) +
           "\r\n\r\n" + body);
    ASSERT_TRUE(eventually([&] { return q.metric("sd_queue_depth") == 1; }));
  }
  ASSERT_TRUE(eventually([&] { return q.metric("sd_cancelled_total{reason=\"disconnect\"}") == 1; }));
  EXPECT_EQ(q.engines[0]->begun.load(), 1);  // the queued one never started
  http(q.port(), "DELETE", "/v1/jobs/" + hog);
}

TEST(ServerBehavior, DeleteCancelsAJob) {
  TestServer t({}, 1, 3);
  std::string id = http(t.port(), "POST", "/v1/jobs", txt2img_body("to cancel", 1, 150)).json()["id"];
  ASSERT_TRUE(eventually([&] { return t.engines[0]->steps_run.load() >= 2; }));
  Reply del = http(t.port(), "DELETE", "/v1/jobs/" + id);
  ASSERT_EQ(del.status, 200);
  EXPECT_EQ(del.json()["status"], "cancelled");
  json job = http(t.port(), "GET", "/v1/jobs/" + id).json();
  EXPECT_EQ(job["status"], "cancelled");
  EXPECT_EQ(job["error"]["code"], "cancelled");
  ASSERT_TRUE(eventually([&] { return t.metric("sd_cancelled_total{reason=\"client\"}") == 1; }));
  EXPECT_LT(t.engines[0]->steps_run.load(), 150);
  EXPECT_EQ(http(t.port(), "GET", "/v1/jobs/" + id + "/images/0").status, 404);
}

// Parses an SSE body into (event, data) pairs, skipping comments.
std::vector<std::pair<std::string, json>> parse_events(const std::string& text) {
  std::vector<std::pair<std::string, json>> out;
  size_t pos = 0;
  while (pos < text.size()) {
    size_t end = text.find("\n\n", pos);
    if (end == std::string::npos) break;
    std::string block = text.substr(pos, end - pos);
    pos = end + 2;
    if (block.rfind("event: ", 0) != 0) continue;
    size_t nl = block.find('\n');
    std::string event = block.substr(7, nl - 7);
    out.emplace_back(event, json::parse(block.substr(nl + 7)));
  }
  return out;
}

TEST(ServerBehavior, ServerSentEventsInOrder) {
  serving::ServerOptions o;
  o.max_batch = 1;
  TestServer t(o, 1, 4);
  std::string first = http(t.port(), "POST", "/v1/jobs", txt2img_body("first", 1, 10)).json()["id"];
  ASSERT_TRUE(eventually([&] { return t.engines[0]->steps_run.load() >= 1; }));
  std::string id = http(t.port(), "POST", "/v1/jobs", txt2img_body("streamed", 2, 6, 2)).json()["id"];
  Reply stream = http(t.port(), "GET", "/v1/jobs/" + id + "/events");
  ASSERT_EQ(stream.status, 200);
  EXPECT_EQ(stream.header("content-type"), "text/event-stream");
  auto events = parse_events(stream.body);
  ASSERT_GE(events.size(), 3u) << stream.body;
  EXPECT_EQ(events.front().first, "queued");
  EXPECT_EQ(events.front().second["position"], 0);
  int last_step = 0;
  for (size_t i = 1; i + 1 < events.size(); ++i) {
    ASSERT_EQ(events[i].first, "step") << stream.body;
    int step = events[i].second["step"];
    EXPECT_GT(step, last_step);
    EXPECT_EQ(events[i].second["steps"], 6);
    last_step = step;
  }
  EXPECT_EQ(last_step, 6);
  ASSERT_EQ(events.back().first, "done");
  json done = events.back().second;
  ASSERT_EQ(done["images"].size(), 2u);
  EXPECT_EQ(done["seeds"], json({2, 3}));
  Reply image = http(t.port(), "GET", done["images"][0]);
  EXPECT_EQ(image.status, 200);
  EXPECT_EQ(image.header("content-type"), "image/png");
  // A late subscriber gets the final state at once; errors arrive as `error` events.
  auto late = parse_events(http(t.port(), "GET", "/v1/jobs/" + first + "/events").body);
  ASSERT_EQ(late.size(), 1u);
  EXPECT_EQ(late[0].first, "done");
  std::string failing = http(t.port(), "POST", "/v1/jobs", txt2img_body("fail in begin", 3, 2)).json()["id"];
  auto failed = parse_events(http(t.port(), "GET", "/v1/jobs/" + failing + "/events").body);
  ASSERT_FALSE(failed.empty());
  EXPECT_EQ(failed.back().first, "error");
  EXPECT_EQ(failed.back().second["status"], "failed");
  EXPECT_EQ(http(t.port(), "GET", "/v1/jobs/job_missing/events").status, 404);
}

// The device running out of memory fails that request with 503 out_of_memory (and Retry-After),
// not queue_full or a 500; the next request is served.
TEST(ServerBehavior, DeviceOutOfMemoryIs503OutOfMemoryAndServingGoesOn) {
  TestServer t;
  Reply oom = http(t.port(), "POST", "/sdapi/v1/txt2img", txt2img_body("out of memory in begin", 3, 2));
  EXPECT_EQ(oom.status, 503);
  EXPECT_EQ(oom.json()["error"]["code"], "out_of_memory") << oom.body;
  EXPECT_NE(oom.json()["error"]["message"].get<std::string>().find("out of GPU memory"), std::string::npos);
  EXPECT_FALSE(oom.header("retry-after").empty());
  Reply ok = http(t.port(), "POST", "/sdapi/v1/txt2img", txt2img_body("fine again", 4, 2));
  EXPECT_EQ(ok.status, 200) << ok.body;
}

TEST(ServerBehavior, DrainFinishesInFlightWorkThenStops) {
  serving::ServerOptions o;
  o.drain_timeout_s = 10;
  TestServer t(o, 1, 3);
  int port = t.port();
  Reply in_flight;
  std::thread client([&] { in_flight = http(port, "POST", "/sdapi/v1/txt2img", txt2img_body("in flight", 1, 40)); });
  ASSERT_TRUE(eventually([&] { return t.engines[0]->steps_run.load() >= 2; }));
  t.server->install_signal_handlers();
  std::raise(SIGTERM);  // the real signal path
  ASSERT_TRUE(eventually([&] { return http(port, "GET", "/health/ready").status == 503; }));
  Reply ready = http(port, "GET", "/health/ready");
  if (ready.status == 503) {
    EXPECT_EQ(ready.json()["status"], "draining");
  }
  Reply rejected = http(port, "POST", "/sdapi/v1/txt2img", txt2img_body("too late", 2, 2));
  if (rejected.status != 0) {  // 0: already stopped listening
    EXPECT_EQ(rejected.status, 503);
    EXPECT_EQ(rejected.json()["error"]["code"], "draining");
  }
  EXPECT_EQ(t.server->wait(), 0);
  client.join();
  EXPECT_EQ(in_flight.status, 200) << in_flight.body.substr(0, 200);
  EXPECT_EQ(t.engines[0]->steps_run.load(), 40);
  EXPECT_EQ(http(port, "GET", "/health/live").status, 0) << "still listening after the drain";
}

TEST(ServerBehavior, DrainTimeoutCancelsWhatIsLeft) {
  serving::ServerOptions o;
  o.drain_timeout_s = 0.1;
  TestServer t(o, 1, 5);
  Reply in_flight;
  std::thread client([&] { in_flight = http(t.port(), "POST", "/sdapi/v1/txt2img", txt2img_body("too long", 1, 150)); });
  ASSERT_TRUE(eventually([&] { return t.engines[0]->steps_run.load() >= 1; }));
  auto start = std::chrono::steady_clock::now();
  t.server->begin_drain();
  EXPECT_EQ(t.server->wait(), 0);
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(3));
  client.join();
  EXPECT_EQ(in_flight.status, 503);
  EXPECT_LT(t.engines[0]->steps_run.load(), 150);
}

TEST(ServerBehavior, ManyIdleConnectionsAreHeldWithoutThreads) {
  serving::ServerOptions o;
  o.io_threads = 2;
  TestServer t(o);
  std::vector<std::unique_ptr<RawConnection>> idle;
  for (int i = 0; i < 500; ++i) idle.push_back(std::make_unique<RawConnection>(t.port()));
  ASSERT_TRUE(eventually([&] { return t.server->state().http->open_connections() >= 500; }));
  EXPECT_EQ(http(t.port(), "GET", "/health/live").status, 200);
  Reply r = http(t.port(), "POST", "/sdapi/v1/txt2img", txt2img_body("with 500 idle", 1, 2));
  EXPECT_EQ(r.status, 200);
  idle.clear();
  EXPECT_TRUE(eventually([&] { return t.server->state().http->open_connections() == 0; }));
}

}  // namespace
}  // namespace sd::testing
