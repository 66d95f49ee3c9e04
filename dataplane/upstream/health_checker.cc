#include "dataplane/upstream/health_checker.h"

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <iterator>
#include <optional>
#include <string_view>

#include "absl/status/statusor.h"
#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/log.h"
#include "dataplane/http/http1_parser.h"
#include "dataplane/http/http2_client_codec.h"
#include "dataplane/http/http_util.h"
#include "dataplane/net/connection.h"
#include "dataplane/net/socket.h"

namespace sluice::upstream {
namespace {

// Validation rejects zero durations; this only keeps a bad value from turning
// into a busy loop.
constexpr absl::Duration kMinDuration = absl::Milliseconds(1);

absl::Duration AtLeastMin(absl::Duration d) {
  return d < kMinDuration ? kMinDuration : d;
}

bool StatusExpected(int status, const std::vector<uint32_t>& expected) {
  if (expected.empty()) return status >= 200 && status <= 299;
  for (uint32_t code : expected) {
    if (static_cast<int>(code) == status) return true;
  }
  return false;
}

std::string ExpectedText(const std::vector<uint32_t>& expected) {
  if (expected.empty()) return "200-299";
  return absl::StrJoin(expected, ", ");
}

// ConnectNonBlocking() reports an immediate failure as
// "connect 127.0.0.1:9001: Connection refused"; the endpoint is already in
// the log line, so keep the same "connect: <error>" form as a late failure.
std::string ImmediateConnectFailure(const absl::Status& status) {
  std::string message(status.message());
  size_t colon = message.rfind(": ");
  if (absl::StartsWith(message, "connect ") && colon != std::string::npos) {
    return absl::StrCat("connect: ", message.substr(colon + 2));
  }
  return message;
}

}  // namespace

namespace grpc_health {

namespace {

// A protobuf varint at *in (at most 10 bytes); advances *in.
std::optional<uint64_t> ReadVarint(std::string_view* in) {
  uint64_t value = 0;
  for (int shift = 0; shift < 70 && !in->empty(); shift += 7) {
    const uint8_t byte = static_cast<uint8_t>(in->front());
    in->remove_prefix(1);
    value |= static_cast<uint64_t>(byte & 0x7f) << shift;
    if ((byte & 0x80) == 0) return value;
  }
  return std::nullopt;
}

// Field 1 of a HealthCheckResponse's bytes; nullopt for bytes that are no
// protobuf message.
std::optional<uint64_t> StatusField(std::string_view proto) {
  uint64_t status = 0;
  while (!proto.empty()) {
    std::optional<uint64_t> key = ReadVarint(&proto);
    if (!key || (*key >> 3) == 0) return std::nullopt;
    switch (*key & 7) {
      case 0: {  // varint
        std::optional<uint64_t> value = ReadVarint(&proto);
        if (!value) return std::nullopt;
        if ((*key >> 3) == 1) status = *value;
        break;
      }
      case 1:    // 64-bit
      case 5: {  // 32-bit
        const size_t size = (*key & 7) == 1 ? 8 : 4;
        if (proto.size() < size) return std::nullopt;
        proto.remove_prefix(size);
        break;
      }
      case 2: {  // length-delimited
        std::optional<uint64_t> size = ReadVarint(&proto);
        if (!size || *size > proto.size()) return std::nullopt;
        proto.remove_prefix(static_cast<size_t>(*size));
        break;
      }
      default:  // groups (3, 4) are not in this message; 6 and 7 do not exist
        return std::nullopt;
    }
  }
  return status;
}

}  // namespace

absl::StatusOr<int32_t> ServingStatus(std::string_view body) {
  if (body.size() < 5 || body[0] != 0) {
    return absl::InvalidArgumentError("no uncompressed HealthCheckResponse in the answer");
  }
  const uint32_t length = (static_cast<uint32_t>(static_cast<uint8_t>(body[1])) << 24) |
                          (static_cast<uint32_t>(static_cast<uint8_t>(body[2])) << 16) |
                          (static_cast<uint32_t>(static_cast<uint8_t>(body[3])) << 8) |
                          static_cast<uint32_t>(static_cast<uint8_t>(body[4]));
  if (body.size() != 5 + static_cast<size_t>(length)) {
    return absl::InvalidArgumentError(
        absl::StrCat("the answer is not one HealthCheckResponse (", body.size() - 5,
                     " bytes after the message prefix, which says ", length, ")"));
  }
  std::optional<uint64_t> status = StatusField(body.substr(5));
  if (!status) {
    return absl::InvalidArgumentError("the HealthCheckResponse is not a valid protobuf message");
  }
  return static_cast<int32_t>(*status);
}

}  // namespace grpc_health

// One check of one endpoint in flight. Reports its result to the
// EndpointCheck at most once; after that, or after Cancel(), nothing reaches
// the check again. It is freed through DeferredDelete(), because it usually
// finishes inside its own connection's callbacks.
class HealthChecker::Probe : public event::DeferredDeletable {
 public:
  explicit Probe(EndpointCheck* check) : check_(check) {}
  // Closes the socket; no report follows.
  virtual void Cancel() = 0;

 protected:
  void Report(bool pass, std::string why);
  // The reason for a connection that closed before the check completed.
  static std::string ClosedReason(net::CloseReason reason, int error,
                                  const net::Connection& connection, bool mid_response);

  EndpointCheck* check_;
};

std::string HealthChecker::Probe::ClosedReason(net::CloseReason reason, int error,
                                               const net::Connection& connection,
                                               bool mid_response) {
  switch (reason) {
    case net::CloseReason::kConnectFailed:
      return absl::StrCat("connect: ", std::strerror(error));
    case net::CloseReason::kReset:
      // A TLS alert the upstream sent ("tlsv1 alert unknown ca") before
      // errno's words, as traffic's reason says it.
      return absl::StrCat("connection error: ", net::ResetReason(connection.transport(), error));
    case net::CloseReason::kRemoteClosed:
      return mid_response ? "connection closed in the middle of the response head"
                          : "connection closed before a response";
    case net::CloseReason::kLocal:
      return "connection closed";
    case net::CloseReason::kHandshakeFailed:
      // "TLS handshake: certificate verify failed: ..."
      return absl::StrCat("TLS ", connection.transport().failure_reason());
  }
  return "connection closed";
}

// An HTTP/2 probe's codec limits: small windows (a probe reads little), and
// the data path's header-list limit (a head traffic takes passes).
namespace {

http::Http2ClientLimits ProbeHttp2Limits() {
  http::Http2ClientLimits limits;
  limits.initial_window_size = 65535;
  limits.connection_window_size = 65535;
  return limits;
}

// Its first frame is not the SETTINGS a server's preface starts with (RFC
// 9113 3.4; the type is the frame header's fourth byte): an HTTP/1 server
// answering the client preface with a 400. Named as the request path names
// it, not as the codec's "SETTINGS expected".
bool NotHttp2(const http::Http2ClientCodec& codec, std::string_view bytes) {
  return !codec.peer_settings_received() && bytes.size() >= 4 &&
         static_cast<uint8_t>(bytes[3]) != 0x04;
}
constexpr char kNotHttp2[] =
    "the endpoint does not speak HTTP/2 (its first bytes are not a SETTINGS frame); the "
    "cluster's protocol is HTTP2";

}  // namespace

// TCP connect (with `request` empty), or an HTTP GET and its status: over
// HTTP/1.1, or over HTTP/2 in the cluster's protocol (HTTP2; AUTO when the
// endpoint chose h2 by ALPN), since an h2 endpoint takes no HTTP/1.1 text.
class HealthChecker::HttpProbe : public Probe,
                                 public net::ConnectionCallbacks,
                                 public http::Http1Callbacks,
                                 public http::Http2ClientCallbacks {
 public:
  // `request` empty: a TCP check (pass once connected, and for TLS once the
  // handshake is done). `transport`: the cluster's TLS socket, or nullptr.
  // `request` is the HTTP/1.1 GET; over HTTP/2 the GET is of `path` with
  // :authority `authority`.
  HttpProbe(event::Dispatcher& dispatcher, int fd, std::unique_ptr<net::TransportSocket> transport,
            EndpointCheck* check, std::string request, std::vector<uint32_t> expected,
            UpstreamProtocol protocol = UpstreamProtocol::kHttp1, std::string path = "",
            std::string authority = "")
      : Probe(check),
        connection_(dispatcher, fd, /*connecting=*/true, std::move(transport)),
        parser_(http::Http1Parser::Mode::kResponse, this),
        request_(std::move(request)),
        expected_(std::move(expected)),
        protocol_(protocol),
        path_(std::move(path)),
        authority_(std::move(authority)) {
    connection_.SetCallbacks(this);
  }

  void Cancel() override {
    check_ = nullptr;
    connection_.Close();
  }

  // net::ConnectionCallbacks
  void OnConnected() override {
    if (request_.empty()) {
      Report(true, "");
      return;
    }
    bool h2 = protocol_ == UpstreamProtocol::kHttp2;
    if (protocol_ == UpstreamProtocol::kAuto) {
      const net::TlsInfo* tls = connection_.transport().tls_info();
      h2 = tls != nullptr && tls->alpn == "h2";
    }
    if (!h2) {
      connection_.Write(request_);
      return;
    }
    h2_ = std::make_unique<http::Http2ClientCodec>(this, ProbeHttp2Limits());
    static constexpr http::HeaderField kFields[] = {{"user-agent", "sluice-health-check"}};
    http::Http2Request request;
    request.method = "GET";
    request.scheme = connection_.transport().secure() ? "https" : "http";
    request.authority = authority_;
    request.path = path_;
    request.fields = kFields;
    request.field_count = std::size(kFields);
    h2_->SubmitRequest(request, true);
    SendH2();
  }

  void OnWriteDrained() override {
    if (h2_ != nullptr) SendH2();
  }

  void OnReadable() override {
    if (check_ == nullptr || request_.empty()) return;
    if (h2_ != nullptr) {
      net::Buffer& input = connection_.input();
      const size_t n = input.view().size();
      if (NotHttp2(*h2_, input.view())) {
        Report(false, kNotHttp2);
        return;
      }
      const bool ok = h2_->Receive(input.view());
      if (check_ == nullptr) return;
      input.Drain(n);
      if (!ok) {
        Report(false, absl::StrCat("HTTP/2 error: ", h2_->error()));
        return;
      }
      SendH2();
      return;
    }
    net::Buffer& input = connection_.input();
    http::Http1Parser::Result result = parser_.Feed(input.view());
    input.Drain(result.consumed);
    if (result.error != http::ParseError::kNone) {
      Report(false, absl::StrCat("bad response: ", parser_.error_detail()));
      return;
    }
    if (status_ == 0) return;  // the head is not complete yet
    if (StatusExpected(status_, expected_)) {
      Report(true, "");
    } else {
      Report(false, absl::StrCat("unexpected status ", status_, " (expected ",
                                 ExpectedText(expected_), ")"));
    }
  }

  void OnClosed(net::CloseReason reason, int error) override {
    Report(false, ClosedReason(reason, error, connection_,
                               h2_ != nullptr ? status_ != 0 : parser_.in_message()));
  }

  // http::Http2ClientCallbacks
  void OnResponseHeaders(int32_t, int status, const http::HeaderMap&, bool) override {
    status_ = status;
    if (StatusExpected(status_, expected_)) {
      Report(true, "");
    } else {
      Report(false, absl::StrCat("unexpected status ", status_, " (expected ",
                                 ExpectedText(expected_), ")"));
    }
  }
  void OnResponseData(int32_t stream_id, std::string_view data, bool) override {
    h2_->ConsumeResponseData(stream_id, data.size());
  }
  void OnResponseTrailers(int32_t, const http::HeaderMap&) override {}
  void OnStreamReset(int32_t, uint32_t error_code, bool, bool, std::string_view reason) override {
    Report(false, absl::StrCat("stream reset (HTTP/2 error ", error_code, "): ", std::string(reason)));
  }

  // http::Http1Callbacks
  void OnHead(const http::MessageHead& head) override {
    if (status_ != 0) return;
    // Interim responses (100 Continue, 103 Early Hints) precede the real one.
    if (head.status >= 100 && head.status < 200 && head.status != 101) return;
    status_ = head.status;
    parser_.Pause();  // the body is of no interest
  }
  void OnBody(std::string_view) override {}
  void OnMessageComplete() override {}

 private:
  void SendH2() {
    std::string out;
    h2_->TakeOutput(&out);
    if (!out.empty()) connection_.Write(out);
  }

  net::Connection connection_;
  http::Http1Parser parser_;
  const std::string request_;
  const std::vector<uint32_t> expected_;
  const UpstreamProtocol protocol_;
  const std::string path_;
  const std::string authority_;
  std::unique_ptr<http::Http2ClientCodec> h2_;  // once HTTP/2 is spoken
  int status_ = 0;  // of the final response head, once parsed
};

// The gRPC health checking protocol: grpc.health.v1.Health/Check over
// HTTP/2 (h2c, or h2 over the cluster's TLS); passes on grpc-status 0 with
// status SERVING in the HealthCheckResponse.
class HealthChecker::GrpcProbe : public Probe,
                                 public net::ConnectionCallbacks,
                                 public http::Http2ClientCallbacks {
 public:
  GrpcProbe(event::Dispatcher& dispatcher, int fd, std::unique_ptr<net::TransportSocket> transport,
            EndpointCheck* check, std::string authority, std::string body)
      : Probe(check),
        connection_(dispatcher, fd, /*connecting=*/true, std::move(transport)),
        codec_(this, ProbeHttp2Limits()),
        authority_(std::move(authority)),
        body_(std::move(body)) {
    connection_.SetCallbacks(this);
  }

  void Cancel() override {
    check_ = nullptr;
    connection_.Close();
  }

  // net::ConnectionCallbacks
  void OnConnected() override {
    static constexpr http::HeaderField kFields[] = {{"content-type", "application/grpc"},
                                                    {"te", "trailers"},
                                                    {"user-agent", "sluice-health-check"}};
    http::Http2Request request;
    request.method = "POST";
    request.scheme = connection_.transport().secure() ? "https" : "http";
    request.authority = authority_;
    request.path = "/grpc.health.v1.Health/Check";
    request.fields = kFields;
    request.field_count = std::size(kFields);
    stream_ = codec_.SubmitRequest(request, false);
    codec_.SubmitData(stream_, body_, true);
    Send();
  }
  void OnReadable() override {
    net::Buffer& input = connection_.input();
    std::string_view bytes = input.view();
    size_t n = bytes.size();
    if (NotHttp2(codec_, bytes)) {
      Report(false, kNotHttp2);
      return;
    }
    bool ok = codec_.Receive(bytes);
    if (check_ == nullptr) return;
    input.Drain(n);
    if (!ok) {
      Report(false, absl::StrCat("HTTP/2 error: ", codec_.error()));
      return;
    }
    Send();
  }
  void OnWriteDrained() override { Send(); }
  void OnClosed(net::CloseReason reason, int error) override {
    Report(false, ClosedReason(reason, error, connection_, status_ != 0));
  }

  // http::Http2ClientCallbacks
  void OnResponseHeaders(int32_t, int status, const http::HeaderMap& headers,
                         bool end_stream) override {
    status_ = status;
    if (status != 200) {
      Report(false, absl::StrCat("unexpected HTTP status ", status, " (expected 200)"));
      return;
    }
    // A gRPC answer (gRPC's PROTOCOL-HTTP2: content-type application/grpc,
    // optionally +proto or ;params): anything else is not a health service.
    const std::string* type = headers.Get("content-type");
    if (type == nullptr || http::ClassifyGrpcContentType(*type) != http::GrpcContentType::kGrpc) {
      Report(false, absl::StrCat("content-type ",
                                 type ? "'" + absl::CHexEscape(*type) + "'" : std::string("none"),
                                 " is not application/grpc"));
      return;
    }
    if (end_stream) Finish(headers);  // trailers-only: the status is in the head
  }
  void OnResponseData(int32_t stream_id, std::string_view data, bool end_stream) override {
    if (message_.size() + data.size() <= kMaxMessage) message_.append(data);
    codec_.ConsumeResponseData(stream_id, data.size());
    if (end_stream) Finish(http::HeaderMap());
  }
  void OnResponseTrailers(int32_t, const http::HeaderMap& trailers) override { Finish(trailers); }
  void OnStreamReset(int32_t, uint32_t error_code, bool, bool, std::string_view reason) override {
    Report(false, absl::StrCat("stream reset (HTTP/2 error ", error_code, "): ", std::string(reason)));
  }

 private:
  static constexpr size_t kMaxMessage = 1024;


  void Send() {
    std::string out;
    codec_.TakeOutput(&out);
    if (!out.empty()) connection_.Write(out);
  }

  // The call ended with these trailers (or trailers-only head).
  void Finish(const http::HeaderMap& trailers) {
    const std::string* grpc_status = trailers.Get("grpc-status");
    if (grpc_status == nullptr) {
      Report(false, "no grpc-status in the answer");
      return;
    }
    if (*grpc_status != "0") {
      const std::string* message = trailers.Get("grpc-message");
      Report(false, absl::StrCat("grpc-status ", *grpc_status,
                                 message ? absl::StrCat(" (", *message, ")") : std::string()));
      return;
    }
    absl::StatusOr<int32_t> serving_status = grpc_health::ServingStatus(message_);
    if (!serving_status.ok()) {
      Report(false, std::string(serving_status.status().message()));
      return;
    }
    const int32_t status = *serving_status;
    if (status == 1) {
      Report(true, "");
      return;
    }
    static constexpr const char* kNames[] = {"UNKNOWN", "SERVING", "NOT_SERVING",
                                             "SERVICE_UNKNOWN"};
    Report(false, absl::StrCat("health status ",
                               status >= 0 && status < 4 ? kNames[status]
                                                         : std::to_string(status).c_str(),
                               " (expected SERVING)"));
  }

  net::Connection connection_;
  http::Http2ClientCodec codec_;
  const std::string authority_;
  const std::string body_;
  int32_t stream_ = -1;
  int status_ = 0;
  std::string message_;
};

// The periodic check of one (cluster, endpoint) pair and its consecutive
// pass / failure counts.
class HealthChecker::EndpointCheck {
 public:
  EndpointCheck(HealthChecker& checker, const ClusterInfo& cluster,
                const EndpointInfo& endpoint)
      : checker_(checker),
        cluster_name_(cluster.name),
        endpoint_key_(endpoint.key),
        interval_timer_(checker.dispatcher_, [this] { StartProbe(); }),
        timeout_timer_(checker.dispatcher_, [this] { OnTimeout(); }) {
    Configure(cluster, endpoint);
    interval_timer_.Enable(
        checker_.RandomDelay(std::min(config_.jitter, Interval())));
  }

  ~EndpointCheck() {
    // Never called from the probe's callbacks: delete it right away.
    if (probe_ != nullptr) probe_->Cancel();
  }

  EndpointCheck(const EndpointCheck&) = delete;
  EndpointCheck& operator=(const EndpointCheck&) = delete;

  // A new config version keeps this pair: takes its settings. A probe in
  // flight finishes with the old ones; a changed interval or jitter re-arms
  // the wait for the next probe at once.
  void Reconfigure(const ClusterInfo& cluster, const EndpointInfo& endpoint) {
    bool timing_changed = cluster.health_check.interval != config_.interval ||
                          cluster.health_check.jitter != config_.jitter;
    Configure(cluster, endpoint);
    if (timing_changed && probe_ == nullptr) ScheduleNext();
  }

  // From Probe::Report(), inside the probe's callbacks.
  void OnProbeDone(bool pass, std::string why) { Finish(pass, std::move(why)); }

 private:
  void Configure(const ClusterInfo& cluster, const EndpointInfo& endpoint) {
    SLUICE_CHECK(endpoint.state != nullptr);
    config_ = cluster.health_check;
    protocol_ = cluster.protocol;
    uneject_on_pass_ = cluster.outlier.uneject_on_health_check_pass;
    transport_ = cluster.transport;
    state_ = endpoint.state;
    address_ = endpoint.address;
    // The Host (HTTP) or :authority (gRPC, HTTP/2) without one configured:
    // the name the endpoint was resolved from, else its address.
    default_host_ = endpoint.host_name.empty()
                        ? address_.ToString()
                        : absl::StrCat(endpoint.host_name, ":", endpoint.port);
    passes_ = cluster.stats.health_check_passes;
    failures_ = cluster.stats.health_check_failures;
    if (config_.kind == HealthCheckConfig::Kind::kHttp) {
      std::string_view path =
          config_.path.empty() ? std::string_view("/") : config_.path;
      request_ = absl::StrCat(
          "GET ", std::string(path), " HTTP/1.1\r\nHost: ",
          config_.host.empty() ? default_host_ : config_.host,
          "\r\nUser-Agent: sluice-health-check\r\nConnection: close\r\n\r\n");
    } else if (config_.kind == HealthCheckConfig::Kind::kGrpc) {
      // HealthCheckRequest { string service = 1; } in one uncompressed
      // length-prefixed gRPC message.
      std::string proto;
      if (!config_.grpc_service.empty()) {
        proto.push_back(0x0a);
        size_t n = config_.grpc_service.size();
        while (n >= 0x80) {
          proto.push_back(static_cast<char>((n & 0x7f) | 0x80));
          n >>= 7;
        }
        proto.push_back(static_cast<char>(n));
        proto.append(config_.grpc_service);
      }
      request_.assign(1, '\0');
      for (int shift = 24; shift >= 0; shift -= 8) {
        request_.push_back(static_cast<char>((proto.size() >> shift) & 0xff));
      }
      request_.append(proto);
    } else {
      request_.clear();
    }
  }

  absl::Duration Interval() const { return AtLeastMin(config_.interval); }

  void ScheduleNext() {
    interval_timer_.Enable(Interval() + checker_.RandomDelay(config_.jitter));
  }

  void StartProbe() {
    SLUICE_CHECK(probe_ == nullptr);
    std::unique_ptr<net::TransportSocket> transport;
    if (transport_ != nullptr) {
      transport = transport_->Create();
      if (transport == nullptr) {
        Finish(false, "TLS: cannot start a session");
        return;
      }
    }
    absl::StatusOr<int> fd = net::ConnectNonBlocking(address_);
    if (!fd.ok()) {
      Finish(false, ImmediateConnectFailure(fd.status()));
      return;
    }
    if (config_.kind == HealthCheckConfig::Kind::kGrpc) {
      probe_ = std::make_unique<GrpcProbe>(
          checker_.dispatcher_, *fd, std::move(transport), this,
          config_.host.empty() ? default_host_ : config_.host, request_);
    } else {
      probe_ = std::make_unique<HttpProbe>(
          checker_.dispatcher_, *fd, std::move(transport), this, request_, config_.expected,
          protocol_, config_.path.empty() ? std::string("/") : config_.path,
          config_.host.empty() ? default_host_ : config_.host);
    }
    probe_timeout_ = AtLeastMin(config_.timeout);
    timeout_timer_.Enable(probe_timeout_);
  }

  void OnTimeout() {
    Finish(false, absl::StrCat("timeout after ",
                               absl::FormatDuration(probe_timeout_)));
  }

  void Finish(bool pass, std::string why) {
    timeout_timer_.Disable();
    if (probe_ != nullptr) {
      probe_->Cancel();
      checker_.dispatcher_.DeferredDelete(std::move(probe_));
    }
    Record(pass, std::move(why));
    ScheduleNext();
  }

  void Record(bool pass, std::string why) {
    Health health = state_->health.load(std::memory_order_relaxed);
    if (pass) {
      if (passes_ != nullptr) passes_->Inc();
      ++consecutive_passes_;
      consecutive_failures_ = 0;
      // A passing check ends an outlier ejection (Envoy's default,
      // successful_active_health_check_uneject_host): the endpoint answers
      // again. It ends now, so the times-ejected count decays from here.
      const int64_t now = NowNanos();
      int64_t until = state_->ejected_until_ns.load();
      if (uneject_on_pass_ && until > now &&
          state_->ejected_until_ns.compare_exchange_strong(until, now)) {
        SLUICE_LOG(kInfo, "cluster ", cluster_name_, " endpoint ", endpoint_key_,
                   " is back before its ejection ended: it passed an active health check");
      }
      if (health == Health::kUnknown) {
        Transition(Health::kHealthy, "first check passed");
      } else if (health == Health::kUnhealthy &&
                 consecutive_passes_ >=
                     std::max<uint32_t>(config_.healthy_threshold, 1)) {
        Transition(Health::kHealthy,
                   absl::StrCat(consecutive_passes_, " consecutive ",
                                consecutive_passes_ == 1 ? "pass" : "passes"));
      }
      return;
    }
    if (failures_ != nullptr) failures_->Inc();
    ++consecutive_failures_;
    consecutive_passes_ = 0;
    SLUICE_LOG(kDebug, "cluster ", cluster_name_, " endpoint ", endpoint_key_,
               " failed a health check: ", why);
    if (health != Health::kUnhealthy &&
        consecutive_failures_ >=
            std::max<uint32_t>(config_.unhealthy_threshold, 1)) {
      Transition(
          Health::kUnhealthy,
          absl::StrCat(consecutive_failures_, " consecutive ",
                       consecutive_failures_ == 1 ? "failure" : "failures",
                       ": ", why));
    }
    state_->SetLastCheckFailure(std::move(why));
  }

  void Transition(Health health, const std::string& why) {
    if (health == Health::kHealthy) state_->Rejoined(state_->health.load());
    state_->health.store(health, std::memory_order_relaxed);
    SLUICE_LOG(kInfo, "cluster ", cluster_name_, " endpoint ", endpoint_key_,
               " is now ", health == Health::kHealthy ? "healthy" : "unhealthy",
               " (", why, ")");
  }

  HealthChecker& checker_;
  const std::string cluster_name_;
  const std::string endpoint_key_;
  HealthCheckConfig config_;
  UpstreamProtocol protocol_ = UpstreamProtocol::kHttp1;  // the cluster's: HTTP checks speak it
  // The cluster's TLS (probes go over it as requests do); nullptr: plain.
  std::shared_ptr<const net::TransportSocketFactory> transport_;
  std::shared_ptr<EndpointState> state_;
  net::Address address_;
  std::string default_host_;
  std::string request_;  // HTTP: the request; gRPC: the request message; TCP: empty
  stats::Counter* passes_ = nullptr;
  bool uneject_on_pass_ = true;
  stats::Counter* failures_ = nullptr;
  uint32_t consecutive_passes_ = 0;
  uint32_t consecutive_failures_ = 0;
  absl::Duration probe_timeout_;
  event::Timer interval_timer_;
  event::Timer timeout_timer_;
  std::unique_ptr<Probe> probe_;
};

void HealthChecker::Probe::Report(bool pass, std::string why) {
  EndpointCheck* check = check_;
  if (check == nullptr) return;
  check_ = nullptr;
  check->OnProbeDone(pass,
                     std::move(why));  // cancels and defers deletion of this
}

HealthChecker::HealthChecker(event::Dispatcher& dispatcher)
    : dispatcher_(dispatcher), rng_(std::random_device{}()) {}

HealthChecker::~HealthChecker() = default;

absl::Duration HealthChecker::RandomDelay(absl::Duration max) {
  int64_t max_ns = absl::ToInt64Nanoseconds(max);
  if (max_ns <= 0) return absl::ZeroDuration();
  std::uniform_int_distribution<int64_t> dist(0, max_ns);
  return absl::Nanoseconds(dist(rng_));
}

void HealthChecker::Update(
    const std::vector<std::shared_ptr<const ClusterInfo>>& clusters) {
  std::map<std::pair<std::string, std::string>, std::unique_ptr<EndpointCheck>>
      next;
  for (const auto& cluster : clusters) {
    if (!cluster->health_check.enabled) {
      for (const EndpointInfo& endpoint : cluster->endpoints) {
        if (endpoint.state == nullptr) continue;
        Health was = endpoint.state->health.exchange(Health::kHealthy);
        if (was != Health::kHealthy) {
          endpoint.state->Rejoined(was);
          endpoint.state->SetLastCheckFailure("");
          SLUICE_LOG(kInfo, "cluster ", cluster->name, " endpoint ",
                     endpoint.key, " is now healthy (health check removed)");
        }
      }
      continue;
    }
    for (const EndpointInfo& endpoint : cluster->endpoints) {
      auto key = std::make_pair(cluster->name, endpoint.key);
      if (next.count(key) != 0) continue;  // the same endpoint listed twice
      auto running = checks_.find(key);
      if (running != checks_.end()) {
        running->second->Reconfigure(*cluster, endpoint);
        next.emplace(key, std::move(running->second));
        checks_.erase(running);
      } else {
        next.emplace(
            key, std::make_unique<EndpointCheck>(*this, *cluster, endpoint));
      }
    }
  }
  // What is left in checks_ is no longer configured: stopped here.
  checks_.swap(next);
  next.clear();
  active_checks_.store(checks_.size(), std::memory_order_relaxed);
}

}  // namespace sluice::upstream
