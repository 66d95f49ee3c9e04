#include "tests/harness/proxy.h"

#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <mutex>
#include <random>
#include <set>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "tests/harness/http_client.h"

namespace sluice::testing {

Proxy::Proxy(const std::string& control_plane, const std::string& node_id, int workers,
             std::string state_dir, std::vector<std::string> extra_args)
    : control_plane_(control_plane),
      node_id_(node_id),
      workers_(workers),
      state_dir_(state_dir.empty() ? MakeTempDir("proxy-state-" + node_id) : std::move(state_dir)),
      extra_args_(std::move(extra_args)) {
  Start();
}

std::string Proxy::admin_address() const { return absl::StrCat("127.0.0.1:", admin_port_); }

bool Proxy::Start() {
  admin_port_ = 0;
  std::string log = absl::StrCat(state_dir_, ".log.", starts_++);
  std::vector<std::string> args = {"--control-plane", control_plane_, "--node-id", node_id_,
                                   "--group", "test", "--admin", "127.0.0.1:0",
                                   "--state-dir", state_dir_, "--drain-timeout", "20s",
                                   "--log-level", "debug"};
  if (workers_ > 0) args.insert(args.end(), {"--workers", std::to_string(workers_)});
  args.insert(args.end(), extra_args_.begin(), extra_args_.end());
  process_ = std::make_unique<Process>(RunfilePath("dataplane/server/sluice-proxy"), args, log);
  std::optional<std::string> line;
  WaitFor(
      [&] {
        line = process_->WaitForLogLine("admin on 127.0.0.1:", absl::ZeroDuration());
        return line.has_value() || !process_->Running();
      },
      absl::Seconds(30));
  if (!line) return false;
  std::string tail = line->substr(line->find("admin on 127.0.0.1:") + 19);
  int port = 0;
  if (!absl::SimpleAtoi(tail.substr(0, tail.find(',')), &port)) return false;
  admin_port_ = port;
  return true;
}

std::pair<int, std::string> Proxy::Admin(const std::string& path) const {
  HttpResponse r = HttpGet(admin_address(), path, {}, absl::Seconds(5));
  return {r.status, r.body};
}

uint64_t Proxy::ReadyVersion() const {
  auto [status, body] = Admin("/ready");
  if (status != 200) return 0;
  uint64_t version = 0;
  size_t at = body.find("version ");
  if (at == std::string::npos) return 0;
  std::string digits = body.substr(at + 8);
  digits = digits.substr(0, digits.find_first_not_of("0123456789"));
  return absl::SimpleAtoi(digits, &version) ? version : 0;
}

bool Proxy::WaitForVersion(uint64_t version, absl::Duration timeout) const {
  return WaitFor([&] { return ReadyVersion() == version; }, timeout);
}

int64_t Proxy::Stat(const std::string& series) const {
  auto [status, body] = Admin("/stats");
  for (absl::string_view line : absl::StrSplit(body, '\n')) {
    if (absl::StartsWith(line, series + " ")) {
      int64_t v = 0;
      if (absl::SimpleAtoi(line.substr(series.size() + 1), &v)) return v;
    }
  }
  return -1;
}

std::optional<int> Proxy::Stop(absl::Duration timeout) {
  process_->Signal(SIGTERM);
  return process_->Wait(timeout);
}

bool Proxy::Restart() {
  if (process_->Running()) {
    process_->Signal(SIGKILL);
    process_->Wait(absl::Seconds(10));
  }
  return Start();
}

int PickFreePort() {
  static std::mt19937 rng(std::random_device{}());
  // Never the same port twice in one process: a fixture picks several
  // before binding any, and two alike made its config refuse itself
  // ("conflicts with Listener ...") about once in 2,000 runs.
  static std::set<int> given;
  static std::mutex mu;
  std::lock_guard<std::mutex> lock(mu);
  for (int attempt = 0; attempt < 200; ++attempt) {
    int port = 20000 + static_cast<int>(rng() % 10000);
    if (given.count(port)) continue;
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    addr.sin_port = htons(static_cast<uint16_t>(port));
    bool free = bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0;
    close(fd);
    if (free) {
      given.insert(port);
      return port;
    }
  }
  return 0;
}

int SilentListener(int* port, int backlog) {
  const int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return -1;
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t length = sizeof(addr);
  if (bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0 || listen(fd, backlog) != 0 ||
      getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &length) != 0) {
    close(fd);
    return -1;
  }
  *port = ntohs(addr.sin_port);
  return fd;
}

}  // namespace sluice::testing
