// Test client implementation: Beast for well-formed requests (reads chunked SSE bodies to
// the end), POSIX sockets with poll() timeouts for raw and misbehaving clients.
#include "test_client.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <boost/asio.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>

namespace sd::testing {

namespace net = boost::asio;
namespace beast = boost::beast;
namespace bhttp = beast::http;

nlohmann::json Reply::json() const { return nlohmann::json::parse(body, nullptr, false); }

std::string Reply::header(const std::string& name) const {
  auto it = headers.find(name);
  return it == headers.end() ? "" : it->second;
}

Reply http(int port, const std::string& method, const std::string& target, const std::string& body,
           const std::map<std::string, std::string>& headers) {
  Reply reply;
  try {
    net::io_context ioc;
    beast::tcp_stream stream(ioc);
    stream.expires_after(std::chrono::seconds(60));
    stream.connect(net::ip::tcp::endpoint(net::ip::make_address("127.0.0.1"), static_cast<unsigned short>(port)));
    bhttp::request<bhttp::string_body> req(bhttp::string_to_verb(method), target, 11);
    req.set(bhttp::field::host, "127.0.0.1:" + std::to_string(port));
    if (!body.empty()) req.set(bhttp::field::content_type, "application/json");
    for (const auto& [k, v] : headers) req.set(k, v);
    req.body() = body;
    req.keep_alive(false);
    req.prepare_payload();
    bhttp::write(stream, req);
    beast::flat_buffer buffer;
    bhttp::response_parser<bhttp::string_body> parser;
    parser.body_limit(512u << 20);
    bhttp::read(stream, buffer, parser);
    auto& res = parser.get();
    reply.status = res.result_int();
    for (const auto& f : res) {
      std::string name(f.name_string());
      for (auto& c : name) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
      reply.headers[name] = std::string(f.value());
    }
    reply.body = std::move(res.body());
  } catch (const std::exception& e) {
    reply.status = 0;
    reply.error = e.what();
  }
  return reply;
}

RawConnection::RawConnection(int port) {
  fd_ = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::connect(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) close();
}

RawConnection::~RawConnection() { close(); }

void RawConnection::send(const std::string& bytes) {
  size_t sent = 0;
  while (fd_ >= 0 && sent < bytes.size()) {
    ssize_t n = ::send(fd_, bytes.data() + sent, bytes.size() - sent, MSG_NOSIGNAL);
    if (n <= 0) break;
    sent += static_cast<size_t>(n);
  }
}

void RawConnection::close() {
  if (fd_ >= 0) ::close(fd_);
  fd_ = -1;
}

std::string RawConnection::read_some(int timeout_ms) {
  std::string out;
  auto end = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
  while (fd_ >= 0) {
    int left = static_cast<int>(std::chrono::duration_cast<std::chrono::milliseconds>(end - std::chrono::steady_clock::now()).count());
    if (left <= 0) break;
    pollfd p{fd_, POLLIN, 0};
    if (::poll(&p, 1, left) <= 0) break;
    char buf[65536];
    ssize_t n = ::recv(fd_, buf, sizeof buf, 0);
    if (n <= 0) break;
    out.append(buf, static_cast<size_t>(n));
  }
  return out;
}

std::string raw_exchange(int port, const std::string& bytes, int timeout_ms) {
  RawConnection c(port);
  c.send(bytes);
  return c.read_some(timeout_ms);
}

TestServer::TestServer(serving::ServerOptions options, int n, int step_delay_ms) {
  options.host = "127.0.0.1";
  options.port = 0;
  options.log_requests = false;
  options.io_threads = options.io_threads ? options.io_threads : 4;
  for (int i = 0; i < n; ++i) {
    engines.push_back(std::make_unique<FakeEngine>(n == 1 ? "cpu" : "cuda:" + std::to_string(i)));
    engines.back()->step_delay_ms = step_delay_ms;
  }
  server = std::make_unique<serving::Server>(options);
  Status s = server->start();
  SD_ASSERT(s.ok(), s.to_string());
  std::vector<GenerationEngine*> raw;
  for (auto& e : engines) raw.push_back(e.get());
  server->attach_engines(raw);
}

TestServer::~TestServer() { server.reset(); }

double TestServer::metric(const std::string& metric_line) {
  Reply r = http(port(), "GET", "/metrics", "", {{"Authorization", "Bearer test-key"}});
  size_t pos = 0;
  while ((pos = r.body.find(metric_line + " ", pos)) != std::string::npos) {
    if (pos == 0 || r.body[pos - 1] == '\n') return std::stod(r.body.substr(pos + metric_line.size() + 1));
    pos += metric_line.size();
  }
  return -1;
}

std::string txt2img_body(const std::string& prompt, int64_t seed, int steps, int batch_size, int size) {
  return nlohmann::json{{"prompt", prompt}, {"seed", seed}, {"steps", steps}, {"batch_size", batch_size},
                        {"width", size},     {"height", size}}
      .dump();
}

std::string base64_decode(const std::string& text) {
  auto value = [](char c) -> int {
    if (c >= 'A' && c <= 'Z') return c - 'A';
    if (c >= 'a' && c <= 'z') return c - 'a' + 26;
    if (c >= '0' && c <= '9') return c - '0' + 52;
    if (c == '+') return 62;
    if (c == '/') return 63;
    return -1;
  };
  std::string out;
  uint32_t acc = 0;
  int bits = 0;
  for (char c : text) {
    int v = value(c);
    if (v < 0) continue;
    acc = (acc << 6) | static_cast<uint32_t>(v);
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out += static_cast<char>((acc >> bits) & 0xFF);
    }
  }
  return out;
}

}  // namespace sd::testing
