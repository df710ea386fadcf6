// Beast sessions: read header (413 before the body when Content-Length is too big,
// 100-continue), read body, dispatch, write or stream the answer, keep-alive. While a
// handler works, an async wait on the idle socket detects a client that disconnects.
#include "serving/http_server.h"

#include <sys/socket.h>

#include <algorithm>
#include <cerrno>
#include <cctype>
#include <chrono>
#include <deque>
#include <future>
#include <mutex>
#include <optional>
#include <thread>

#include <boost/asio.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>

namespace sd::serving {

namespace net = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = net::ip::tcp;
using Clock = std::chrono::steady_clock;
using boost::system::error_code;

std::string HttpRequest::header(std::string_view lower_name) const {
  for (const auto& [k, v] : headers)
    if (k == lower_name) return v;
  return {};
}

namespace {

struct Shared {
  HttpServerOptions options;
  std::function<void(const std::shared_ptr<Exchange>&)> dispatch;
  CompletionHook on_complete;
  std::atomic<int64_t> active{0}, connections{0};
};

std::chrono::steady_clock::duration seconds(double s) {
  return std::chrono::duration_cast<std::chrono::steady_clock::duration>(std::chrono::duration<double>(s));
}

std::string error_json(const char* code, const char* message) {
  return std::string("{\"error\":{\"code\":\"") + code + "\",\"message\":\"" + message +
         "\",\"type\":\"invalid_request_error\",\"param\":null}}";
}

class Session;

class ExchangeImpl : public Exchange {
 public:
  ExchangeImpl(std::shared_ptr<Session> session, HttpRequest request, uint64_t seq)
      : session_(std::move(session)), request_(std::move(request)), seq_(seq), started_(Clock::now()) {}
  const HttpRequest& request() const override { return request_; }
  void respond(HttpResponse response) override;
  void start_stream(HttpResponse head) override;
  void stream_write(std::string data) override;
  void stream_end() override;
  void on_close(std::function<void()> fn) override {
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (!closed_) {
        close_fns_.push_back(std::move(fn));
        return;
      }
    }
    fn();
  }
  bool closed() const override {
    std::lock_guard<std::mutex> lock(mu_);
    return closed_;
  }
  // Marks the exchange as over; fires the close callbacks if the client went away.
  void finish(bool client_gone) {
    std::vector<std::function<void()>> fns;
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (closed_) return;
      closed_ = true;
      if (client_gone) fns.swap(close_fns_);
      close_fns_.clear();
    }
    for (auto& fn : fns) fn();
  }

  std::shared_ptr<Session> session_;
  HttpRequest request_;
  const uint64_t seq_;
  const Clock::time_point started_;
  // Strand-only state:
  bool answered = false, completed = false;
  int status = 0;

 private:
  mutable std::mutex mu_;
  bool closed_ = false;
  std::vector<std::function<void()>> close_fns_;
};

class Session : public std::enable_shared_from_this<Session> {
 public:
  Session(tcp::socket socket, std::shared_ptr<Shared> shared)
      : stream_(std::move(socket)), shared_(std::move(shared)), ping_timer_(stream_.get_executor()) {
    ++shared_->connections;
  }
  ~Session() { --shared_->connections; }

  void start() { net::dispatch(stream_.get_executor(), [self = shared_from_this()] { self->read_header(); }); }
  template <typename F>
  void post(F&& fn) {
    net::post(stream_.get_executor(), std::forward<F>(fn));
  }

  void respond(uint64_t seq, HttpResponse r) {
    if (!current_ || current_->seq_ != seq || current_->answered || closing_) return;
    current_->answered = true;
    current_->status = r.status;
    auto res = std::make_shared<http::response<http::string_body>>(static_cast<http::status>(r.status), 11);
    res->set(http::field::server, "sdserve");
    res->set(http::field::content_type, r.content_type);
    for (const auto& [k, v] : current_->extra_headers) res->set(k, v);
    for (const auto& [k, v] : r.headers) res->set(k, v);
    res->body() = std::move(r.body);
    res->keep_alive(keep_alive_);
    res->prepare_payload();
    stream_.expires_after(seconds(shared_->options.write_timeout_s));
    http::async_write(stream_, *res, [self = shared_from_this(), res](error_code ec, size_t) {
      if (ec) return self->client_gone();
      self->complete(false);
      if (res->need_eof()) return self->close();
      self->read_header();
    });
  }

  void start_stream(uint64_t seq, HttpResponse head) {
    if (!current_ || current_->seq_ != seq || current_->answered || closing_) return;
    current_->answered = true;
    current_->status = head.status;
    head_ = std::make_shared<http::response<http::empty_body>>(static_cast<http::status>(head.status), 11);
    head_->set(http::field::server, "sdserve");
    head_->set(http::field::content_type, head.content_type);
    head_->set(http::field::cache_control, "no-cache");
    for (const auto& [k, v] : current_->extra_headers) head_->set(k, v);
    for (const auto& [k, v] : head.headers) head_->set(k, v);
    head_->keep_alive(keep_alive_);
    head_->chunked(true);
    serializer_ = std::make_shared<http::response_serializer<http::empty_body>>(*head_);
    streaming_ = true;
    writing_ = true;
    stream_.expires_after(seconds(shared_->options.write_timeout_s));
    http::async_write_header(stream_, *serializer_, [self = shared_from_this()](error_code ec, size_t) {
      self->writing_ = false;
      if (ec) return self->client_gone();
      self->head_sent_ = true;
      self->flush();
    });
    schedule_ping();
  }

  void stream_write(uint64_t seq, std::string data) {
    if (!current_ || current_->seq_ != seq || !streaming_ || end_requested_) return;
    chunks_.push_back(std::move(data));
    flush();
  }

  void stream_end(uint64_t seq) {
    if (!current_ || current_->seq_ != seq || !streaming_) return;
    end_requested_ = true;
    flush();
  }

 private:
  void read_header() {
    current_.reset();
    streaming_ = head_sent_ = writing_ = end_requested_ = end_sent_ = false;
    chunks_.clear();
    parser_.emplace();
    parser_->header_limit(static_cast<uint32_t>(shared_->options.max_header_bytes));
    parser_->body_limit(shared_->options.max_body_bytes);
    stream_.expires_after(seconds(shared_->options.read_timeout_s));
    http::async_read_header(stream_, buffer_, *parser_, [self = shared_from_this()](error_code ec, size_t) {
      self->on_header(ec);
    });
  }

  void on_header(error_code ec) {
    if (ec) return on_read_error(ec);
    auto length = parser_->content_length();
    if (length && *length > shared_->options.max_body_bytes) return reject(413, "body_too_large", "the request body is larger than the limit");
    auto expect = parser_->get()[http::field::expect];
    if (beast::iequals(expect, "100-continue") && !parser_->is_done()) {
      static const std::string kContinue = "HTTP/1.1 100 Continue\r\n\r\n";
      net::async_write(stream_, net::buffer(kContinue), [self = shared_from_this()](error_code ec, size_t) {
        if (ec) return self->close();
        self->read_body();
      });
      return;
    }
    read_body();
  }

  void read_body() {
    if (parser_->is_done()) return on_request();
    http::async_read(stream_, buffer_, *parser_, [self = shared_from_this()](error_code ec, size_t) {
      if (ec) return self->on_read_error(ec);
      self->on_request();
    });
  }

  void on_read_error(error_code ec) {
    if (ec == http::error::body_limit) return reject(413, "body_too_large", "the request body is larger than the limit");
    if (ec == http::error::header_limit) return reject(431, "headers_too_large", "the request headers are too large");
    if (ec == http::error::end_of_stream || ec == net::error::eof || ec == beast::error::timeout ||
        ec == net::error::operation_aborted || ec.category() != http::make_error_code(http::error::bad_target).category())
      return close();
    reject(400, "bad_request", "malformed HTTP request");
  }

  // Error response for a request we could not read, then a lingering close.
  void reject(int status, const char* code, const char* message) {
    auto res = std::make_shared<http::response<http::string_body>>(static_cast<http::status>(status), 11);
    res->set(http::field::server, "sdserve");
    res->set(http::field::content_type, "application/json");
    res->body() = error_json(code, message);
    res->keep_alive(false);
    res->prepare_payload();
    HttpRequest request;
    if (parser_) {
      request.method = std::string(parser_->get().method_string());
      request.target = std::string(parser_->get().target());
      request.path = request.target.substr(0, request.target.find('?'));
    }
    auto started = Clock::now();
    stream_.expires_after(seconds(shared_->options.write_timeout_s));
    http::async_write(stream_, *res, [self = shared_from_this(), res, request, status, started](error_code, size_t) {
      if (self->shared_->on_complete)
        self->shared_->on_complete(request, "other", status,
                                   std::chrono::duration<double>(Clock::now() - started).count());
      self->linger();
    });
  }

  // Half-close and discard what the client still sends (so it reads our error instead
  // of a connection reset), for at most a second.
  void linger() {
    error_code ec;
    stream_.socket().shutdown(tcp::socket::shutdown_send, ec);
    stream_.expires_after(std::chrono::seconds(1));
    auto scratch = std::make_shared<std::array<char, 4096>>();
    stream_.async_read_some(net::buffer(*scratch), [self = shared_from_this(), scratch](error_code ec, size_t) {
      if (ec) return self->close();
      self->linger();
    });
  }

  void on_request() {
    auto& req = parser_->get();
    HttpRequest r;
    r.method = std::string(req.method_string());
    r.target = std::string(req.target());
    size_t q = r.target.find('?');
    r.path = r.target.substr(0, q);
    if (q != std::string::npos) r.query = r.target.substr(q + 1);
    for (const auto& field : req) {
      std::string name(field.name_string());
      std::transform(name.begin(), name.end(), name.begin(), [](unsigned char c) { return std::tolower(c); });
      r.headers.emplace_back(std::move(name), std::string(field.value()));
    }
    r.body = std::move(req.body());
    keep_alive_ = req.keep_alive();
    current_ = std::make_shared<ExchangeImpl>(shared_from_this(), std::move(r), ++seq_);
    ++shared_->active;
    stream_.expires_never();
    watch_disconnect(seq_);
    auto exchange = current_;
    shared_->dispatch(exchange);
  }

  // Completes when the client sends more bytes or closes. The wait may wake spuriously,
  // so a non-blocking peek decides: 0 bytes = orderly close, an error = reset, EAGAIN =
  // nothing happened (wait again), data = a pipelined request (stop watching).
  void watch_disconnect(uint64_t seq) {
    stream_.socket().async_wait(tcp::socket::wait_read, [self = shared_from_this(), seq](error_code ec) {
      if (ec || !self->current_ || self->current_->seq_ != seq || self->current_->completed) return;
      char byte;
      ssize_t n = ::recv(self->stream_.socket().native_handle(), &byte, 1, MSG_PEEK | MSG_DONTWAIT);
      if (n > 0) return;
      if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) return self->watch_disconnect(seq);
      self->client_gone();
    });
  }

  void flush() {
    if (writing_ || !head_sent_ || closing_) return;
    if (!chunks_.empty()) {
      auto data = std::make_shared<std::string>(std::move(chunks_.front()));
      chunks_.pop_front();
      writing_ = true;
      stream_.expires_after(seconds(shared_->options.write_timeout_s));
      net::async_write(stream_, http::make_chunk(net::buffer(*data)), [self = shared_from_this(), data](error_code ec, size_t) {
        self->writing_ = false;
        if (ec) return self->client_gone();
        self->flush();
      });
      return;
    }
    if (end_requested_ && !end_sent_) {
      end_sent_ = true;
      writing_ = true;
      stream_.expires_after(seconds(shared_->options.write_timeout_s));
      net::async_write(stream_, http::make_chunk_last(), [self = shared_from_this()](error_code ec, size_t) {
        self->writing_ = false;
        self->ping_timer_.cancel();
        if (ec) return self->client_gone();
        self->complete(false);
        if (!self->keep_alive_) return self->close();
        self->read_header();
      });
    }
  }

  void schedule_ping() {
    if (shared_->options.sse_ping_s <= 0) return;
    ping_timer_.expires_after(seconds(shared_->options.sse_ping_s));
    ping_timer_.async_wait([self = shared_from_this(), seq = seq_](error_code ec) {
      if (ec || !self->streaming_ || self->end_requested_ || !self->current_ || self->current_->seq_ != seq) return;
      if (!self->writing_ && self->chunks_.empty()) {
        self->chunks_.push_back(": ping\n\n");
        self->flush();
      }
      self->schedule_ping();
    });
  }

  // The exchange is over: hook for logs/metrics, close callbacks if the client left.
  void complete(bool client_gone) {
    if (!current_ || current_->completed) return;
    current_->completed = true;
    --shared_->active;
    int status = client_gone && !current_->answered ? 499 : current_->status;
    if (shared_->on_complete)
      shared_->on_complete(current_->request_, current_->api, status,
                           std::chrono::duration<double>(Clock::now() - current_->started_).count());
    current_->finish(client_gone);
  }

  void client_gone() {
    complete(true);
    close();
  }

  void close() {
    if (closing_) return;
    closing_ = true;
    ping_timer_.cancel();
    error_code ec;
    stream_.socket().shutdown(tcp::socket::shutdown_both, ec);
    stream_.close();
    if (current_) complete(true);
    current_.reset();  // breaks the exchange <-> session cycle
  }

  beast::tcp_stream stream_;
  beast::flat_buffer buffer_;
  std::optional<http::request_parser<http::string_body>> parser_;
  std::shared_ptr<Shared> shared_;
  net::steady_timer ping_timer_;
  std::shared_ptr<ExchangeImpl> current_;
  uint64_t seq_ = 0;
  bool keep_alive_ = false, closing_ = false;
  // Streaming state.
  std::shared_ptr<http::response<http::empty_body>> head_;
  std::shared_ptr<http::response_serializer<http::empty_body>> serializer_;
  std::deque<std::string> chunks_;
  bool streaming_ = false, head_sent_ = false, writing_ = false, end_requested_ = false, end_sent_ = false;
};

void ExchangeImpl::respond(HttpResponse response) {
  auto s = session_;
  s->post([s, seq = seq_, r = std::move(response)]() mutable { s->respond(seq, std::move(r)); });
}
void ExchangeImpl::start_stream(HttpResponse head) {
  auto s = session_;
  s->post([s, seq = seq_, h = std::move(head)]() mutable { s->start_stream(seq, std::move(h)); });
}
void ExchangeImpl::stream_write(std::string data) {
  auto s = session_;
  s->post([s, seq = seq_, d = std::move(data)]() mutable { s->stream_write(seq, std::move(d)); });
}
void ExchangeImpl::stream_end() {
  auto s = session_;
  s->post([s, seq = seq_] { s->stream_end(seq); });
}

}  // namespace

struct HttpServer::Impl {
  std::shared_ptr<Shared> shared = std::make_shared<Shared>();
  net::io_context ioc;
  std::optional<net::executor_work_guard<net::io_context::executor_type>> work;
  tcp::acceptor acceptor{ioc};
  net::steady_timer accept_retry{ioc};
  std::optional<net::signal_set> signals;
  std::vector<std::thread> threads;
  std::function<void(int)> signal_fn;
  std::mutex mu;
  bool stopped = false;

  void wait_signal() {
    signals->async_wait([this](error_code ec, int signal) {
      if (ec) return;
      signal_fn(signal);
      wait_signal();
    });
  }

  void accept() {
    acceptor.async_accept(net::make_strand(ioc), [this](error_code ec, tcp::socket socket) {
      if (ec == net::error::operation_aborted || !acceptor.is_open()) return;
      if (ec) {  // e.g. out of file descriptors: back off instead of spinning
        accept_retry.expires_after(std::chrono::milliseconds(50));
        accept_retry.async_wait([this](error_code e) {
          if (!e) accept();
        });
        return;
      }
      if (shared->connections.load() >= shared->options.max_connections) {
        error_code ignored;
        socket.close(ignored);
      } else {
        error_code ignored;
        socket.set_option(tcp::no_delay(true), ignored);
        std::make_shared<Session>(std::move(socket), shared)->start();
      }
      accept();
    });
  }
};

HttpServer::HttpServer(HttpServerOptions options, std::function<void(const std::shared_ptr<Exchange>&)> dispatch,
                       CompletionHook on_complete)
    : impl_(std::make_unique<Impl>()) {
  impl_->shared->options = std::move(options);
  impl_->shared->dispatch = std::move(dispatch);
  impl_->shared->on_complete = std::move(on_complete);
}

HttpServer::~HttpServer() { stop(); }

Status HttpServer::start() {
  const auto& o = impl_->shared->options;
  error_code ec;
  tcp::resolver resolver(impl_->ioc);
  auto results = resolver.resolve(o.host, std::to_string(o.port), tcp::resolver::passive | tcp::resolver::numeric_service, ec);
  if (ec || results.empty()) return InvalidArgument("cannot resolve --host '" + o.host + "': " + ec.message());
  tcp::endpoint endpoint = results.begin()->endpoint();
  auto& acc = impl_->acceptor;
  if (acc.open(endpoint.protocol(), ec); ec) return Unavailable("cannot open a socket: " + ec.message());
  acc.set_option(net::socket_base::reuse_address(true), ec);
  if (acc.bind(endpoint, ec); ec)
    return Unavailable("cannot bind " + o.host + ":" + std::to_string(o.port) + ": " + ec.message());
  if (acc.listen(net::socket_base::max_listen_connections, ec); ec) return Unavailable("cannot listen: " + ec.message());
  port_ = acc.local_endpoint().port();
  impl_->work.emplace(impl_->ioc.get_executor());
  impl_->accept();
  int n = o.threads > 0 ? o.threads : std::max(2, static_cast<int>(std::thread::hardware_concurrency()));
  for (int i = 0; i < n; ++i) impl_->threads.emplace_back([this] { impl_->ioc.run(); });
  return Status::Ok();
}

void HttpServer::stop() {
  {
    std::lock_guard<std::mutex> lock(impl_->mu);
    if (impl_->stopped) return;
    impl_->stopped = true;
  }
  // Close the acceptor on an I/O thread (it is not thread-safe) and wait for that.
  auto closed = std::make_shared<std::promise<void>>();
  auto done = closed->get_future();
  net::post(impl_->ioc, [impl = impl_.get(), closed] {
    error_code ec;
    impl->acceptor.close(ec);
    impl->accept_retry.cancel();
    if (impl->signals) impl->signals->cancel(ec);
    closed->set_value();
  });
  if (!impl_->threads.empty()) done.wait_for(std::chrono::seconds(2));
  impl_->work.reset();
  impl_->ioc.stop();
  for (auto& t : impl_->threads)
    if (t.joinable()) t.join();
}

int64_t HttpServer::active_exchanges() const { return impl_->shared->active.load(); }
int64_t HttpServer::open_connections() const { return impl_->shared->connections.load(); }

void HttpServer::handle_signals(std::function<void(int)> fn) {
  // Installed synchronously, so a signal raised right after this call is handled.
  impl_->signal_fn = std::move(fn);
  impl_->signals.emplace(impl_->ioc, SIGINT, SIGTERM);
  impl_->wait_signal();
}

}  // namespace sd::serving
