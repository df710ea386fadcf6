// StubServer: blocking Beast server used by the loadtest tests. Each accepted socket gets a
// thread that reads requests in a keep-alive loop; stop() shuts the sockets down so every
// blocking read returns and the threads can be joined (no test can hang on the stub).
#include "stub_server.h"

#include <sys/socket.h>

#include <utility>

#include <boost/asio.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <chrono>
#include <nlohmann/json.hpp>

namespace sd::loadtest::testing {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = asio::ip::tcp;

const char* const kTinyPngBase64 =
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg==";

struct StubServer::Impl {
  asio::io_context io;
  tcp::acceptor acceptor{io};
  std::vector<std::unique_ptr<tcp::socket>> sockets;
};

StubServer::StubServer(StubBehavior behavior) : behavior_(std::move(behavior)), impl_(std::make_unique<Impl>()) {
  tcp::endpoint endpoint(asio::ip::make_address("127.0.0.1"), 0);
  impl_->acceptor.open(endpoint.protocol());
  impl_->acceptor.set_option(tcp::acceptor::reuse_address(true));
  impl_->acceptor.bind(endpoint);
  impl_->acceptor.listen();
  port_ = impl_->acceptor.local_endpoint().port();
  acceptor_thread_ = std::thread([this] { accept_loop(); });
}

StubServer::~StubServer() {
  stopping_ = true;
  stop_cv_.notify_all();
  {  // unblock accept() with a connection of our own
    asio::io_context io;
    tcp::socket wake(io);
    beast::error_code ignored;
    wake.connect(tcp::endpoint(asio::ip::make_address("127.0.0.1"), static_cast<unsigned short>(port_)), ignored);
  }
  acceptor_thread_.join();
  {
    std::lock_guard<std::mutex> lock(mutex_);
    for (auto& s : impl_->sockets) ::shutdown(s->native_handle(), SHUT_RDWR);
  }
  for (auto& t : connection_threads_) t.join();
}

void StubServer::accept_loop() {
  while (!stopping_) {
    auto socket = std::make_unique<tcp::socket>(impl_->io);
    beast::error_code ec;
    impl_->acceptor.accept(*socket, ec);
    if (ec || stopping_) break;
    connections_++;
    std::lock_guard<std::mutex> lock(mutex_);
    impl_->sockets.push_back(std::move(socket));
    int index = static_cast<int>(impl_->sockets.size()) - 1;
    connection_threads_.emplace_back([this, index] { serve(index); });
  }
}

namespace {

http::response<http::string_body> json_reply(int status, const nlohmann::json& body, bool keep_alive) {
  http::response<http::string_body> r{static_cast<http::status>(status), 11};
  r.set(http::field::content_type, status == 200 && body.is_string() ? "text/event-stream" : "application/json");
  r.body() = body.is_string() ? body.get<std::string>() : body.dump();
  r.keep_alive(keep_alive);
  r.prepare_payload();
  return r;
}

http::response<http::string_body> answer(const http::request<http::string_body>& req, int64_t n, int status,
                                         bool keep_alive) {
  using nlohmann::json;
  if (status != 200) {
    auto r = json_reply(status, {{"error", {{"code", status == 503 ? "queue_full" : "internal"},
                                            {"message", "stub error for request " + std::to_string(n)}}}},
                        keep_alive);
    if (status == 503) r.set(http::field::retry_after, "1");
    return r;
  }
  std::string target(req.target());
  json body = json::parse(req.body(), nullptr, false);
  int images = 1;
  if (body.is_object()) images = body.value("batch_size", body.value("n", 1));
  json list = json::array();
  for (int i = 0; i < images; ++i) list.push_back(kTinyPngBase64);
  if (req.method() == http::verb::post && target == "/sdapi/v1/txt2img")
    return json_reply(200, {{"images", list}, {"parameters", body}, {"info", "{}"}}, keep_alive);
  if (req.method() == http::verb::post && target == "/v1/images/generations") {
    json data = json::array();
    for (int i = 0; i < images; ++i) data.push_back({{"b64_json", kTinyPngBase64}});
    return json_reply(200, {{"created", 1700000000}, {"data", data}}, keep_alive);
  }
  if (req.method() == http::verb::post && target == "/v1/jobs")
    return json_reply(202, {{"id", "job" + std::to_string(n)}, {"status", "queued"}}, keep_alive);
  if (req.method() == http::verb::get && target.rfind("/v1/jobs/", 0) == 0 && target.size() > 16 &&
      target.substr(target.size() - 7) == "/events") {
    std::string id = target.substr(9, target.size() - 16);
    std::string sse = ": ping\n\nevent: queued\ndata: {\"id\":\"" + id + "\",\"position\":0}\n\n";
    for (int s = 1; s <= 2; ++s)
      sse += "event: step\ndata: {\"id\":\"" + id + "\",\"step\":" + std::to_string(s) + ",\"steps\":2}\n\n";
    sse += "event: done\ndata: {\"id\":\"" + id + "\",\"status\":\"succeeded\",\"images\":[\"/v1/jobs/" + id +
           "/images/0\"]}\n\n";
    return json_reply(200, json(sse), keep_alive);
  }
  return json_reply(404, {{"error", {{"code", "not_found"}, {"message", "no route " + target}}}}, keep_alive);
}

}  // namespace

void StubServer::serve(int index) {
  tcp::socket* socket = nullptr;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    socket = impl_->sockets[static_cast<size_t>(index)].get();
  }
  beast::flat_buffer buffer;
  while (!stopping_) {
    http::request<http::string_body> req;
    beast::error_code ec;
    http::read(*socket, buffer, req, ec);
    if (ec) break;
    if (req.method() == http::verb::get && req.target() == "/metrics") {
      http::response<http::string_body> res{behavior_.energy_j_per_request > 0 ? http::status::ok : http::status::not_found,
                                            req.version()};
      if (behavior_.energy_j_per_request > 0) {  // split over two devices, as a two-GPU server reports it
        const double j = 1000 + behavior_.energy_j_per_request * static_cast<double>(requests_.load());
        res.body() = "# TYPE sd_device_energy_joules_total counter\nsd_device_energy_joules_total{device=\"cuda:0\"} " +
                     std::to_string(0.75 * j) + "\nsd_device_energy_joules_total{device=\"cuda:1\"} " +
                     std::to_string(0.25 * j) + "\nsd_device_energy_joules_total_x 99\n";
      }
      res.keep_alive(req.keep_alive());
      res.prepare_payload();
      http::write(*socket, res, ec);
      if (ec || !req.keep_alive()) break;
      continue;
    }
    int64_t n = ++requests_;
    if (behavior_.stall) {
      std::unique_lock<std::mutex> lock(mutex_);
      stop_cv_.wait(lock, [this] { return stopping_.load(); });
      break;
    }
    if (behavior_.delay_s > 0) std::this_thread::sleep_for(std::chrono::duration<double>(behavior_.delay_s));
    int status = behavior_.status_for ? behavior_.status_for(n) : 200;
    if (!behavior_.required_key.empty() && req[http::field::authorization] != "Bearer " + behavior_.required_key)
      status = 401;
    bool keep_alive = req.keep_alive() && !behavior_.close_after_each;
    auto res = answer(req, n, status, keep_alive);
    http::write(*socket, res, ec);
    if (ec || !keep_alive) break;
  }
  beast::error_code ignored;
  socket->shutdown(tcp::socket::shutdown_both, ignored);
}

int closed_port() {
  asio::io_context io;
  tcp::acceptor acceptor(io, tcp::endpoint(asio::ip::make_address("127.0.0.1"), 0));
  int port = acceptor.local_endpoint().port();
  acceptor.close();
  return port;
}

}  // namespace sd::loadtest::testing
