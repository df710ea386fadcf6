// One generation request over Beast: connect (bounded by --connect-timeout), write, read the
// first byte (time to first byte), then the full reply or the SSE stream. Every operation
// runs under the request's absolute deadline; a reused keep-alive connection that turns out
// to be closed by the server is retried once on a fresh connection.
#include "loadtest/http_exchange.h"

#include <boost/beast/http.hpp>

namespace sd::loadtest {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using beast::error_code;

void Connection::close() {
  error_code ignored;
  stream.socket().shutdown(asio::ip::tcp::socket::shutdown_both, ignored);
  stream.close();
  buffer.clear();
  open = false;
}

namespace {

constexpr uint64_t kMaxReplyBytes = uint64_t{1} << 30;  // base64 images of big batches

double seconds_since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

Outcome classify(const error_code& ec, bool connecting) {
  if (ec == beast::error::timeout) return connecting ? Outcome::kConnectTimeout : Outcome::kTimeout;
  if (ec == asio::error::connection_refused) return Outcome::kRefused;
  if (ec == asio::error::host_unreachable || ec == asio::error::network_unreachable) return Outcome::kUnreachable;
  if (ec.category() == error_code(http::error::end_of_stream).category() && ec != http::error::end_of_stream &&
      ec != http::error::partial_message)
    return Outcome::kBadResponse;  // malformed HTTP
  return Outcome::kConnectionError;
}

bool stale_connection_error(const error_code& ec) {
  return ec == http::error::end_of_stream || ec == asio::error::eof || ec == asio::error::connection_reset ||
         ec == asio::error::broken_pipe || ec == asio::error::connection_aborted;
}

struct Step {
  Outcome failure = Outcome::kOk;
  std::string detail;
  bool ok() const { return failure == Outcome::kOk; }
};

Step fail(Connection& c, const error_code& ec, bool connecting, const std::string& what) {
  c.close();
  Outcome outcome = classify(ec, connecting);
  if (outcome == Outcome::kTimeout) return {outcome, "no complete answer within --timeout (" + what + ")"};
  if (outcome == Outcome::kConnectTimeout) return {outcome, what + ": no connection within --connect-timeout"};
  return {outcome, what + ": " + ec.message()};
}

// Connects if needed, writes the request and waits for the first response byte.
asio::awaitable<Step> send(const ExchangeContext& cx, Connection& c, const http::request<http::string_body>& request,
                           Clock::time_point deadline, double* first_byte_s) {
  for (int attempt = 0;; ++attempt) {
    bool reused = c.open;
    error_code ec;
    if (!c.open) {
      auto connect_deadline = std::min(deadline, Clock::now() + std::chrono::duration_cast<Clock::duration>(
                                                                   std::chrono::duration<double>(cx.options->connect_timeout_s)));
      c.buffer.clear();
      c.stream.expires_at(connect_deadline);
      co_await c.stream.async_connect(cx.endpoints, asio::redirect_error(asio::use_awaitable, ec));
      if (ec) co_return fail(c, ec, true, "connect to " + cx.options->url.host_header());
      c.open = true;
    }
    c.stream.expires_at(deadline);
    co_await http::async_write(c.stream, request, asio::redirect_error(asio::use_awaitable, ec));
    const char* phase = "sending the request";
    if (!ec && c.buffer.size() == 0) {
      phase = "waiting for the first byte of the answer";
      size_t n = co_await c.stream.async_read_some(c.buffer.prepare(64 * 1024), asio::redirect_error(asio::use_awaitable, ec));
      c.buffer.commit(n);
    }
    if (ec) {
      if (reused && attempt == 0 && stale_connection_error(ec)) {
        c.close();  // the server closed the idle keep-alive connection: retry on a new one
        continue;
      }
      co_return fail(c, ec, false, phase);
    }
    *first_byte_s = seconds_since(cx.stage_start);
    co_return Step{};
  }
}

http::request<http::string_body> make_request(const ClientOptions& o, http::verb verb, const std::string& route,
                                              std::string body) {
  http::request<http::string_body> req{verb, o.url.base_path + route, 11};
  req.set(http::field::host, o.url.host_header());
  req.set(http::field::user_agent, "sdserve-loadtest/0.1");
  if (!o.api_key.empty()) req.set(http::field::authorization, "Bearer " + o.api_key);
  if (verb == http::verb::post) req.set(http::field::content_type, "application/json");
  if (verb == http::verb::get && route.find("/events") != std::string::npos) req.set(http::field::accept, "text/event-stream");
  req.keep_alive(true);
  req.body() = std::move(body);
  req.prepare_payload();
  return req;
}

// A whole request/reply; the reply's status and body come back in *status / *body.
asio::awaitable<Step> round_trip(const ExchangeContext& cx, Connection& c, const http::request<http::string_body>& request,
                                 Clock::time_point deadline, double* first_byte_s, int* status, std::string* body) {
  Step step = co_await send(cx, c, request, deadline, first_byte_s);
  if (!step.ok()) co_return step;
  http::response_parser<http::string_body> parser;
  parser.body_limit(kMaxReplyBytes);
  error_code ec;
  co_await http::async_read(c.stream, c.buffer, parser, asio::redirect_error(asio::use_awaitable, ec));
  if (parser.is_header_done()) *status = static_cast<int>(parser.get().result_int());
  if (ec) co_return fail(c, ec, false, "reading the reply");
  if (!parser.get().keep_alive()) c.close();
  *body = std::move(parser.get().body());
  co_return Step{};
}

// Follows GET /v1/jobs/{id}/events until a done or error event.
asio::awaitable<Step> follow_job(const ExchangeContext& cx, Connection& c, const std::string& job_id,
                                 Clock::time_point deadline, Sample* sample) {
  auto request = make_request(*cx.options, http::verb::get, "/v1/jobs/" + job_id + "/events", "");
  double unused_first_byte = 0;
  Step step = co_await send(cx, c, request, deadline, &unused_first_byte);
  if (!step.ok()) co_return step;
  http::response_parser<http::string_body> parser;
  parser.body_limit(kMaxReplyBytes);
  error_code ec;
  co_await http::async_read_header(c.stream, c.buffer, parser, asio::redirect_error(asio::use_awaitable, ec));
  if (ec) co_return fail(c, ec, false, "reading the events header");
  int status = static_cast<int>(parser.get().result_int());
  if (status != 200) {
    co_await http::async_read(c.stream, c.buffer, parser, asio::redirect_error(asio::use_awaitable, ec));
    sample->http_status = status;
    std::string message = ec ? ec.message() : error_message(parser.get().body());
    c.close();
    co_return Step{Outcome::kHttpError, "events of job " + job_id + ": " + message};
  }
  SseParser sse;
  while (true) {
    for (const SseEvent& event : sse.feed(parser.get().body())) {
      JobEventResult r = interpret_job_event(event);
      if (!r.terminal) continue;
      if (!parser.is_done()) c.close();  // do not wait for the stream to end
      else if (!parser.get().keep_alive()) c.close();
      if (!r.ok) co_return Step{event.event == "error" ? Outcome::kJobError : Outcome::kBadResponse, r.error};
      sample->images = r.images;
      co_return Step{};
    }
    parser.get().body().clear();
    if (parser.is_done()) {
      c.close();
      co_return Step{Outcome::kBadResponse, "the events stream of job " + job_id + " ended without a done event"};
    }
    co_await http::async_read_some(c.stream, c.buffer, parser, asio::redirect_error(asio::use_awaitable, ec));
    if (ec) co_return fail(c, ec, false, "reading the events of job " + job_id);
  }
}

}  // namespace

asio::awaitable<RequestResult> perform_request(const ExchangeContext& cx, Connection& c, int64_t index, double start_s) {
  const ClientOptions& o = *cx.options;
  const std::vector<std::string>& prompts = o.prompts.empty() ? builtin_prompts() : o.prompts;
  const std::string& prompt = prompts[static_cast<size_t>(index) % prompts.size()];
  int64_t seed = o.seed < 0 ? -1 : o.seed + index;
  auto deadline = cx.stage_start + std::chrono::duration_cast<Clock::duration>(
                                       std::chrono::duration<double>(start_s + o.timeout_s));

  GenerationSettings g = o.generation;
  if (!o.sizes.empty()) {
    const ImageSize& size = o.sizes[static_cast<size_t>(index) % o.sizes.size()];
    g.width = size.width;
    g.height = size.height;
  }
  RequestResult result;
  Sample& s = result.sample;
  s.start_s = start_s;
  s.width = g.width;
  s.height = g.height;
  auto request = make_request(o, http::verb::post, submit_route(o.api), request_body(o.api, g, prompt, seed));
  double first_byte = -1;
  int status = 0;
  std::string body;
  Step step = co_await round_trip(cx, c, request, deadline, &first_byte, &status, &body);
  s.http_status = status;
  if (first_byte >= 0) s.ttfb_s = first_byte - start_s;
  if (step.ok()) {
    Reply reply = parse_submit_reply(o.api, status, body);
    bool success_status = o.api == Api::kJobs ? (status == 202 || status == 200) : (status >= 200 && status < 300);
    if (!reply.ok) {
      step = {success_status ? Outcome::kBadResponse : Outcome::kHttpError, reply.error};
    } else if (o.api == Api::kJobs) {
      step = co_await follow_job(cx, c, reply.job_id, deadline, &s);
    } else {
      s.images = reply.images;
    }
  }
  s.outcome = step.failure;
  result.detail = step.detail;
  s.end_s = seconds_since(cx.stage_start);
  co_return result;
}

}  // namespace sd::loadtest
