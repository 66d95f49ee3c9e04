#include "tests/harness/upstream.h"

#include <signal.h>

#include <cstdlib>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "tests/harness/http_client.h"

namespace sluice::testing {

std::string UpstreamServerPath() {
  const char* override_path = std::getenv("SLUICE_UPSTREAM_SERVER");
  if (override_path != nullptr && *override_path != '\0') return override_path;
  return RunfilePath("tests/harness/upstream_server");
}

UpstreamServer::UpstreamServer(std::string name) : UpstreamServer(std::move(name), 0, "") {}

UpstreamServer::UpstreamServer(std::string name, int port, std::string defaults)
    : UpstreamServer(std::move(name), port, std::move(defaults), "127.0.0.1") {}

UpstreamServer::UpstreamServer(std::string name, int port, std::string defaults,
                               std::string address)
    : name_(std::move(name)), ip_(std::move(address)) {
  std::string log =
      absl::StrCat(MakeTempDir(absl::StrCat("upstream-", name_)), "/log");
  std::vector<std::string> args = {"--port", std::to_string(port), "--name", name_,
                                   "--address", ip_};
  if (!defaults.empty()) {
    args.push_back("--defaults");
    args.push_back(defaults);
  }
  process_ = std::make_unique<Process>(UpstreamServerPath(), args, log);
  const std::string prefix = absl::StrCat("listening on ", ip_, ":");
  const absl::string_view kPrefix = prefix;
  std::optional<std::string> line;
  WaitFor(
      [&] {
        line = process_->WaitForLogLine(std::string(kPrefix),
                                        absl::ZeroDuration());
        return line.has_value() || !process_->Running();
      },
      absl::Seconds(10));
  if (!line) return;
  absl::string_view tail = *line;
  tail = tail.substr(tail.find(kPrefix) + kPrefix.size());
  int bound = 0;
  if (absl::SimpleAtoi(tail, &bound)) port_ = bound;
}

std::string UpstreamServer::address() const {
  return absl::StrCat(ip_, ":", port_);
}

std::optional<int> UpstreamServer::RequestCount() const {
  HttpResponse response = HttpGet(address(), "/__stats");
  absl::string_view body = response.body;
  int count = 0;
  if (!response.ok() || response.status != 200 ||
      !absl::ConsumePrefix(&body, "requests=") ||
      !absl::SimpleAtoi(body, &count)) {
    return std::nullopt;
  }
  return count;
}

std::optional<int> UpstreamServer::Stop(absl::Duration timeout) {
  process_->Signal(SIGTERM);
  return process_->Wait(timeout);
}

}  // namespace sluice::testing
