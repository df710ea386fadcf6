// The HTTP server over the real engine with the tiny SD 1.x model on the CPU: 64 concurrent
// clients are all served and each image equals the same request served alone (within 2/255);
// infotext and seeds come back as AUTOMATIC1111 clients expect.
#include <gtest/gtest.h>

#include <thread>

#include "golden_util.h"
#include "io/image.h"
#include "pipeline/sd_engine.h"
#include "test_client.h"

namespace sd {
namespace {

using testing::base64_decode;
using testing::http;

std::vector<uint8_t> image_of(const testing::Reply& r) {
  const auto j = r.json();
  const std::string png = base64_decode(j["images"][0].get<std::string>());
  auto img = decode_png(std::vector<uint8_t>(png.begin(), png.end()));
  EXPECT_TRUE(img.ok());
  return img.ok() ? img->rgb : std::vector<uint8_t>{};
}

TEST(ServingE2E, SixtyFourConcurrentClientsGetTheirOwnImages) {
  auto engine = SdEngine::load(testing::data_path("tiny-sd1/model"), Device::cpu());
  ASSERT_TRUE(engine.ok()) << engine.status().to_string();
  serving::ServerOptions opts;
  opts.port = 0;
  opts.max_batch = 16;
  opts.max_queue = 128;
  serving::Server server(opts);
  ASSERT_TRUE(server.start().ok());
  server.attach_engines({engine->get()});
  const int port = server.port();

  const int kClients = 64;
  auto body = [](int i) {
    return testing::txt2img_body("a tiny robot number " + std::to_string(i % 7), 1000 + i, 2 + i % 3, 1, 64);
  };
  std::vector<testing::Reply> crowd(kClients);
  std::vector<std::thread> threads;
  for (int i = 0; i < kClients; ++i) {
    threads.emplace_back([&, i] { crowd[i] = http(port, "POST", "/sdapi/v1/txt2img", body(i)); });
  }
  for (auto& t : threads) t.join();
  for (int i = 0; i < kClients; ++i) ASSERT_EQ(crowd[i].status, 200) << i << ": " << crowd[i].body.substr(0, 300);

  // Each request served alone (sequentially) gives the same image within fp tolerance.
  for (int i = 0; i < kClients; i += 9) {
    const auto alone = http(port, "POST", "/sdapi/v1/txt2img", body(i));
    ASSERT_EQ(alone.status, 200);
    const auto a = image_of(crowd[i]), b = image_of(alone);
    ASSERT_EQ(a.size(), b.size());
    int worst = 0;
    for (size_t p = 0; p < a.size(); ++p) worst = std::max(worst, std::abs(int(a[p]) - int(b[p])));
    EXPECT_LE(worst, 2) << "client " << i;
    const auto info = nlohmann::json::parse(crowd[i].json()["info"].get<std::string>());
    EXPECT_EQ(info["seed"].get<int64_t>(), 1000 + i);
  }
  const auto params = crowd[0].json()["parameters"];
  EXPECT_EQ(params["seed"].get<int64_t>(), 1000);
  const auto metrics = http(port, "GET", "/metrics");
  EXPECT_NE(metrics.body.find("sd_images_total"), std::string::npos);
  server.stop();
}

}  // namespace
}  // namespace sd
