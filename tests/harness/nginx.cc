#include "tests/harness/nginx.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <fstream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "absl/time/time.h"

namespace sluice::testing {
namespace {

constexpr char kNginx[] = "/usr/sbin/nginx";

constexpr char kConfig[] = R"(daemon off;
master_process off;
worker_processes 1;
pid {DIR}/nginx.pid;
error_log {DIR}/nginx-error.log info;
events { worker_connections 256; }
http {
  access_log off;
  default_type text/plain;
  client_body_temp_path {DIR}/body;
  proxy_temp_path {DIR}/proxy;
  fastcgi_temp_path {DIR}/fastcgi;
  uwsgi_temp_path {DIR}/uwsgi;
  scgi_temp_path {DIR}/scgi;
{SERVERS}
}
)";

}  // namespace

bool AcceptingConnections(int port) {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = htons(static_cast<uint16_t>(port));
  bool ok = connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0;
  close(fd);
  return ok;
}

Nginx::Nginx(const std::string& dir, const std::string& servers, const std::vector<int>& ports)
    : error_log_(dir + "/nginx-error.log") {
  std::string path = dir + "/nginx.conf";
  std::ofstream(path) << absl::StrReplaceAll(kConfig, {{"{DIR}", dir}, {"{SERVERS}", servers}});
  process_ = std::make_unique<Process>(
      kNginx, std::vector<std::string>{"-p", dir, "-e", error_log_, "-c", path},
      dir + "/nginx.log");
  ok_ = WaitFor(
            [&] {
              if (!process_->Running()) return true;
              for (int port : ports) {
                if (!AcceptingConnections(port)) return false;
              }
              return true;
            },
            absl::Seconds(10)) &&
        process_->Running();
}

std::string Nginx::Log() const { return ReadFile(error_log_) + process_->Log(); }

}  // namespace sluice::testing
