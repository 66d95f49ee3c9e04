#include "dataplane/admin/admin_server.h"

#include <openssl/crypto.h>

#include <fstream>
#include <optional>
#include <string_view>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/string_view.h"
#include "api/credentials.h"
#include "dataplane/net/socket.h"

namespace sluice::admin {

namespace {

// Whether the bearer token in `authorization` is the one whose SHA-256 is
// `want_hex`.
bool HasToken(absl::string_view authorization, const std::string& want_hex) {
  const std::optional<std::string_view> token =
      api::BearerToken(std::string_view(authorization.data(), authorization.size()));
  if (!token) return false;
  const std::string got_hex = api::Sha256Hex(*token);
  return got_hex.size() == want_hex.size() &&
         CRYPTO_memcmp(got_hex.data(), want_hex.data(), want_hex.size()) == 0;
}

}  // namespace

AdminServer::AdminServer(event::Dispatcher& dispatcher, AdminHandlers handlers)
    : handlers_(std::move(handlers)),
      server_(
          dispatcher.base(), "the admin endpoint",
          [this](const common::OpsRequest& request) { return Answer(request); },
          handlers_.release_memory) {}

absl::StatusOr<int> AdminServer::Listen(const std::string& host_port) {
  auto address = net::ParseHostPort(host_port);
  if (!address.ok()) return address.status();
  auto fd = net::Listen(*address, /*reuse_port=*/false, 128);
  if (!fd.ok()) return fd.status();
  const int port = net::BoundPort(*fd);
  if (absl::Status served = server_.Serve(*fd); !served.ok()) return served;
  return port;
}

void AdminServer::RequireToken(const std::string& token) {
  token_sha256_ = api::Sha256Hex(token);
}

absl::StatusOr<std::string> ReadTokenFile(const std::string& path) {
  std::ifstream in(path);
  std::string line;
  if (!in || !std::getline(in, line)) {
    return absl::InvalidArgumentError(absl::StrCat("cannot read a token from ", path));
  }
  std::string token(absl::StripAsciiWhitespace(line));
  if (token.size() < 16) {
    return absl::InvalidArgumentError(
        absl::StrCat(path, ": the token is ", token.size(), " characters; at least 16"));
  }
  if (std::string problem = api::TokenTextProblem(token); !problem.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": ", problem));
  }
  return token;
}

common::OpsReply AdminServer::Answer(const common::OpsRequest& request) {
  common::OpsReply reply;
  const absl::string_view path = request.path;
  const bool has_token =
      !token_sha256_.empty() && HasToken(request.authorization, token_sha256_);
  if (path != "/ready" && path != "/livez" && !token_sha256_.empty() && !has_token) {
    reply.status = 401;
    reply.body = "the admin endpoint needs 'Authorization: Bearer <token>' (--admin-token-file)\n";
    reply.extra_headers = "WWW-Authenticate: Bearer realm=\"sluice-proxy admin\"\r\n";
    return reply;
  }
  if (path == "/ready") {
    auto [ready, reason] = handlers_.ready();
    reply.status = ready ? 200 : 503;
    reply.body = absl::StrCat(reason, "\n");
  } else if (path == "/livez") {
    auto [alive, reason] = handlers_.live();
    reply.status = alive ? 200 : 503;
    reply.body = absl::StrCat(reason, "\n");
  } else if (path == "/metrics" || path == "/stats") {
    // /metrics is the Prometheus convention; /stats stays as an alias.
    reply.body = handlers_.stats();
    reply.content_type = "text/plain; version=0.0.4; charset=utf-8";
  } else if (path == "/config_dump") {
    reply.body = handlers_.config_dump();
    reply.content_type = "application/json";
  } else if (path == "/clusters") {
    bool json = false;
    for (absl::string_view parameter : absl::StrSplit(request.query, '&')) {
      json = json || parameter == "format=json";
    }
    reply.body = handlers_.clusters(json);
    if (json) reply.content_type = "application/json";
  } else {
    reply.status = 404;
    reply.body = "unknown admin path; try /ready, /livez, /metrics, /config_dump or /clusters\n";
  }
  return reply;
}

}  // namespace sluice::admin
