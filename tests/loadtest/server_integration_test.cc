// End to end against the real server: starts `sdserve serve` with the tiny SD1 model on a
// free loopback port as a subprocess, runs a short closed-loop load on each API and checks
// every request succeeded. Skips (with the reason) when the binary or server is unavailable.
#include <fcntl.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <utility>

#include <boost/asio.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <sstream>
#include <thread>

#include "loadtest/load_test.h"
#include "stub_server.h"

namespace sd::loadtest {
namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;

std::string find_sdserve() {
  for (std::string path : {std::string(SD_BINARY_DIR) + "/sdserve", std::string(SD_SOURCE_DIR) + "/build/sdserve"})
    if (access(path.c_str(), X_OK) == 0) return path;
  return "";
}

std::string read_text(const std::string& path) {
  std::ifstream f(path);
  std::stringstream s;
  s << f.rdbuf();
  return s.str();
}

// GET /health/ready: its status, or 0 when nothing answered (2 s socket timeouts).
int ready_status(int port) {
  asio::io_context io;
  asio::ip::tcp::socket socket(io);
  beast::error_code ec;
  socket.connect({asio::ip::make_address("127.0.0.1"), static_cast<unsigned short>(port)}, ec);
  if (ec) return 0;
  timeval tv{2, 0};
  setsockopt(socket.native_handle(), SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  setsockopt(socket.native_handle(), SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
  http::request<http::empty_body> req{http::verb::get, "/health/ready", 11};
  req.set(http::field::host, "127.0.0.1");
  http::write(socket, req, ec);
  if (ec) return 0;
  beast::flat_buffer buffer;
  http::response<http::string_body> res;
  http::read(socket, buffer, res, ec);
  return ec ? 0 : static_cast<int>(res.result_int());
}

// The server subprocess; SIGTERM (then SIGKILL) on destruction.
struct ServerProcess {
  pid_t pid = -1;
  std::string log_path;
  ~ServerProcess() {
    if (pid <= 0) return;
    kill(pid, SIGTERM);
    for (int i = 0; i < 200; ++i) {
      if (waitpid(pid, nullptr, WNOHANG) == pid) return;
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    kill(pid, SIGKILL);
    waitpid(pid, nullptr, 0);
  }
  bool exited() {
    int status = 0;
    if (pid > 0 && waitpid(pid, &status, WNOHANG) == pid) {
      pid = -1;
      return true;
    }
    return false;
  }
};

TEST(RealServer, ClosedLoopAllSucceedOnEachApi) {
  std::string binary = find_sdserve();
  if (binary.empty()) GTEST_SKIP() << "no sdserve binary in " << SD_BINARY_DIR << " or build/";
  std::string model = std::string(SD_TEST_DATA_DIR) + "/tiny-sd1/model";
  int port = testing::closed_port();
  ServerProcess server;
  server.log_path = ::testing::TempDir() + "/loadtest_server_" + std::to_string(getpid()) + ".log";
  std::string port_text = std::to_string(port);
  server.pid = fork();
  ASSERT_GE(server.pid, 0);
  if (server.pid == 0) {
    int fd = open(server.log_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd >= 0) {
      dup2(fd, 1);
      dup2(fd, 2);
    }
    execl(binary.c_str(), binary.c_str(), "serve", "--model", model.c_str(), "--host", "127.0.0.1", "--port",
          port_text.c_str(), "--threads", "2", static_cast<char*>(nullptr));
    _exit(127);
  }
  auto t0 = std::chrono::steady_clock::now();
  int status = 0;
  while (status != 200) {
    if (server.exited())
      GTEST_SKIP() << "sdserve serve exited before becoming ready:\n" << read_text(server.log_path);
    if (std::chrono::steady_clock::now() - t0 > std::chrono::seconds(90))
      GTEST_SKIP() << "sdserve serve not ready after 90 s:\n" << read_text(server.log_path);
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    status = ready_status(port);
  }

  for (Api api : {Api::kSdapi, Api::kOpenai, Api::kJobs}) {
    LoadTestPlan plan;
    plan.client.url = *parse_url("http://127.0.0.1:" + port_text);
    plan.client.api = api;
    plan.client.generation.steps = 2;
    plan.client.generation.width = plan.client.generation.height = 64;
    plan.client.timeout_s = 120;
    std::string variable;
    plan.stages = *plan_stages(4, 0, 0, 8, "", &variable);
    FILE* out = std::tmpfile();
    FILE* log = std::tmpfile();
    LoadTestOutcome outcome = execute_load_test(plan, out, log);
    std::fclose(out);
    std::fclose(log);
    ASSERT_EQ(outcome.stages.size(), 1u);
    StageSummary s = summarize(outcome.stages[0]);
    std::string errors;
    for (const auto& [key, count] : s.errors)
      errors += key + " x" + std::to_string(count) + ": " + outcome.stages[0].error_examples[key] + "\n";
    EXPECT_EQ(outcome.exit_code, 0) << api_name(api);
    EXPECT_EQ(s.sent, 8) << api_name(api);
    EXPECT_EQ(s.succeeded, 8) << api_name(api) << "\n" << errors;
    EXPECT_EQ(s.images, 8) << api_name(api);
    EXPECT_LE(s.max_in_flight, 4);
  }
}

}  // namespace
}  // namespace sd::loadtest
