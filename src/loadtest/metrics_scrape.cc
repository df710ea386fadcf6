// scrape_device_energy_j: a synchronous Beast GET with socket timeouts (the load runner's own
// connections are untouched), then a line scan of the Prometheus text format.
#include "loadtest/metrics_scrape.h"

#include "loadtest/prometheus_text.h"

#include <utility>  // before Boost.Asio: its awaitable.hpp uses std::exchange

#include <boost/asio.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <chrono>

namespace sd::loadtest {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;

std::optional<double> scrape_device_energy_j(const ClientOptions& options) {
  try {
    asio::io_context io;
    asio::ip::tcp::resolver resolver(io);
    beast::tcp_stream stream(io);
    stream.expires_after(std::chrono::seconds(2));
    beast::error_code ec;
    auto endpoints = resolver.resolve(options.url.host, options.url.port, ec);
    if (ec) return std::nullopt;
    stream.async_connect(endpoints, [&](beast::error_code e, const auto&) { ec = e; });
    io.run();
    if (ec) return std::nullopt;
    http::request<http::empty_body> req{http::verb::get, options.url.base_path + "/metrics", 11};
    req.set(http::field::host, options.url.host_header());
    if (!options.api_key.empty()) req.set(http::field::authorization, "Bearer " + options.api_key);
    http::response<http::string_body> res;
    beast::flat_buffer buffer;
    io.restart();
    http::async_write(stream, req, [&](beast::error_code e, size_t) {
      ec = e;
      if (!ec) http::async_read(stream, buffer, res, [&](beast::error_code e2, size_t) { ec = e2; });
    });
    io.run();
    if (ec || res.result_int() != 200) return std::nullopt;
    return sum_metric(res.body(), "sd_device_energy_joules_total");
  } catch (const std::exception&) {
    return std::nullopt;
  }
}

}  // namespace sd::loadtest
