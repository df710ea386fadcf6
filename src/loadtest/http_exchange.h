// Internal to sd_loadtest: one virtual user's keep-alive connection and the coroutine that
// performs one generation request on it (sdapi / openai: one POST; jobs: POST then follow
// the SSE events to done), with a single absolute deadline so a stalled server cannot hang.
#pragma once

#include <utility>  // before Boost.Asio: its awaitable.hpp uses std::exchange

#include <boost/asio.hpp>
#include <boost/beast/core.hpp>
#include <chrono>
#include <string>

#include "loadtest/load_runner.h"

namespace sd::loadtest {

using Clock = std::chrono::steady_clock;

struct Connection {
  explicit Connection(const boost::asio::any_io_executor& executor) : stream(executor) {}
  boost::beast::tcp_stream stream;
  boost::beast::flat_buffer buffer;
  bool open = false;
  void close();
};

struct ExchangeContext {
  const ClientOptions* options;
  boost::asio::ip::tcp::resolver::results_type endpoints;
  Clock::time_point stage_start;
};

struct RequestResult {
  Sample sample;
  std::string detail;  // failure explanation (server message, socket error)
};

// Performs generation request `index` on `connection` (connecting or reconnecting as
// needed). start_s is the request's start relative to the stage (open loop: its scheduled
// arrival). Never throws for network or protocol failures; they come back in the sample.
boost::asio::awaitable<RequestResult> perform_request(const ExchangeContext& context, Connection& connection,
                                                       int64_t index, double start_s);

}  // namespace sd::loadtest
