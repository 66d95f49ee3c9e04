#include "dataplane/server/proxy_stream.h"

#include <arpa/inet.h>
#include <openssl/sha.h>

#include <algorithm>
#include <limits>
#include <optional>
#include <cstring>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "api/validation.h"
#include "common/log.h"
#include "dataplane/http/http_util.h"
#include "dataplane/http/http1_parser.h"
#include "dataplane/http/path_normalizer.h"
#include "dataplane/policy/auth_util.h"
#include "dataplane/router/route_table.h"
#include "dataplane/server/worker.h"
#include "dataplane/upstream/endpoint_picker.h"

namespace sluice::server {
namespace {

using http::AppendHeader;

// Whether the target going upstream (`request.path_and_query`), read each
// way liberal upstreams read a path (http::kAmbiguousReadings: %2F and %5C
// decoded, '\\' as '/', ";parameters" dropped, "//" as '/' before or after
// dot segments), routes where `match` did: else an upstream that reads it
// so would serve a path whose route (and policies) the gateway did not
// apply.
// A path that begins with two slashes ('\\' counting as one) is a
// network-path reference to the WHATWG URL parser (Node's
// `new URL(req.url, base)`) and to java.net.URI: "//x/admin" is host "x",
// path "/admin". WHATWG skips every further slash before the host
// ("///x/admin", "/\\/x/admin" are host "x" too). The path such an
// upstream serves, or nullopt.
std::optional<std::string> PathAfterAuthority(std::string_view target) {
  auto slash = [](char c) { return c == '/' || c == '\\'; };
  if (target.size() < 2 || !slash(target[0]) || !slash(target[1])) return std::nullopt;
  size_t host = 2;
  while (host < target.size() && slash(target[host])) ++host;
  const size_t end = target.find_first_of("/\\?", host);
  if (end == std::string_view::npos) return "/";
  std::string path(target.substr(end));
  if (path[0] == '?') path.insert(0, 1, '/');
  path[0] = '/';
  return path;
}

bool ReadsAsSameRoute(router::RouteRequest request, const router::MatchResult& match,
                      const router::RouteTable& table) {
  const std::string_view forwarded = request.path_and_query;
  auto routes_alike = [&](std::string_view target, const http::PathNormalizeOptions& reading) {
    auto liberal = http::NormalizePath(target, reading);
    if (!liberal.ok()) return false;
    request.path_and_query = liberal->target;
    const router::MatchResult other = table.Match(request);
    return other.kind == match.kind && other.route == match.route;
  };
  for (const http::PathNormalizeOptions& reading : http::kAmbiguousReadings) {
    if (!routes_alike(forwarded, reading)) return false;
  }
  if (std::optional<std::string> after = PathAfterAuthority(forwarded)) {
    if (!routes_alike(*after, http::PathNormalizeOptions{})) return false;
    for (const http::PathNormalizeOptions& reading : http::kAmbiguousReadings) {
      if (!routes_alike(*after, reading)) return false;
    }
  }
  return true;
}

// x-consumer-* and x-anonymous-consumer: what authentication policies tell
// the upstream. A client's own are never forwarded.
bool IsConsumerField(std::string_view name) {
  if (name.size() < 12 || (name[0] | 0x20) != 'x' || name[1] != '-') return false;
  return http::EqualsIgnoreCase(name.substr(0, 11), "x-consumer-") ||
         http::EqualsIgnoreCase(name, "x-anonymous-consumer");
}

// A client's field spelled with '_' for '-' that names one the gateway sets
// (x_consumer_name, x-forwarded_for, x_request_id...). CGI, WSGI, Rack and
// PHP turn both spellings into one variable (HTTP_X_CONSUMER_NAME), so an
// upstream would read the client's copy next to, or instead of, the
// gateway's. Never forwarded (nginx drops every '_' name by default;
// other '_' names go through).
// The same goes for the framing fields (content_length, transfer_encoding):
// WSGI's HTTP_TRANSFER_ENCODING made Werkzeug read a body of a length the
// gateway never framed (gunicorn 22 drops such names for that reason).
bool IsUnderscoreSpellingOfGatewayField(std::string_view name) {
  if (name.size() == 14 || name.size() == 17) {
    if ((name[0] | 0x20) == 'c' && http::EqualsIgnoreCase(name, "content_length")) return true;
    if ((name[0] | 0x20) == 't' && http::EqualsIgnoreCase(name, "transfer_encoding")) return true;
  }
  if (name.size() < 9 || name.size() > 32 || (name[0] | 0x20) != 'x' ||
      (name[1] != '_' && name[1] != '-') || name.find('_') == std::string_view::npos) {
    return false;
  }
  char buffer[32];
  for (size_t i = 0; i < name.size(); ++i) {
    buffer[i] = name[i] == '_' ? '-' : static_cast<char>(name[i] | 0x20);
  }
  const std::string_view dashed(buffer, name.size());
  if (IsConsumerField(dashed)) return true;
  for (std::string_view field : {"x-forwarded-for", "x-forwarded-proto", "x-forwarded-host",
                                 "x-forwarded-port", "x-forwarded-prefix", "x-request-id",
                                 "x-real-ip", "x-forwarded-client-cert"}) {
    if (dashed == field) return true;
  }
  return false;
}

// A field other than X-Forwarded-Proto that frameworks read the client's
// scheme from, in any case or CGI spelling.
bool IsAlternateSchemeField(std::string_view name) {
  for (std::string_view field : {"x-forwarded-ssl", "x-forwarded-scheme", "front-end-https",
                                 "x-url-scheme", "x-forwarded-protocol"}) {
    if (http::SameCgiName(name, field)) return true;
  }
  return false;
}

// With `hops` trusted proxies in front, each appending the address it got
// the request from to X-Forwarded-For: the hops-th address from the right
// is the client's, into `client` in its one spelling. false (the peer is
// the client) when the field has fewer, or that one is not an IP literal.
bool ClientFromForwardedFor(const std::vector<http::HeaderField>& headers, uint32_t hops,
                            std::string* client) {
  // From the right, stopping at the hops-th item: a client's list of
  // thousands of items costs no more than the few a proxy reads. The items
  // are the fields' values joined in order and split at commas, a comma
  // ending a value adding no empty item.
  std::string_view candidate;
  uint32_t seen = 0;
  for (auto it = headers.rbegin(); it != headers.rend() && seen < hops; ++it) {
    if (!http::EqualsIgnoreCase(it->name, "x-forwarded-for") || it->value.empty()) continue;
    std::string_view rest = it->value;
    if (rest.back() == ',') rest.remove_suffix(1);
    while (seen < hops) {
      size_t comma = rest.rfind(',');
      std::string_view item = comma == std::string_view::npos ? rest : rest.substr(comma + 1);
      while (!item.empty() && (item.front() == ' ' || item.front() == '\t')) item.remove_prefix(1);
      while (!item.empty() && (item.back() == ' ' || item.back() == '\t')) item.remove_suffix(1);
      if (++seen == hops) candidate = item;
      if (comma == std::string_view::npos) break;
      rest = rest.substr(0, comma);
    }
  }
  if (seen < hops) return false;
  if (candidate.empty() || candidate.size() > INET6_ADDRSTRLEN) return false;
  char buf[INET6_ADDRSTRLEN + 1];
  std::memcpy(buf, candidate.data(), candidate.size());
  buf[candidate.size()] = '\0';
  // One spelling per address (rate-limit keys, ip-restriction, logs):
  // "2001:DB8::7" is "2001:db8::7", and "::ffff:7.7.7.7" is "7.7.7.7".
  in6_addr v6;
  in_addr v4;
  char text[INET6_ADDRSTRLEN];
  if (inet_pton(AF_INET, buf, &v4) == 1) {
    if (inet_ntop(AF_INET, &v4, text, sizeof(text)) == nullptr) return false;
  } else if (inet_pton(AF_INET6, buf, &v6) == 1) {
    if (IN6_IS_ADDR_V4MAPPED(&v6)) {
      std::memcpy(&v4, v6.s6_addr + 12, sizeof(v4));
      if (inet_ntop(AF_INET, &v4, text, sizeof(text)) == nullptr) return false;
    } else if (inet_ntop(AF_INET6, &v6, text, sizeof(text)) == nullptr) {
      return false;
    }
  } else {
    return false;
  }
  client->assign(text);
  return true;
}

// Behind trusted proxies, the scheme the client used is the one they say in
// X-Forwarded-Proto, as Envoy and Kong (trusted_ips) take it: one field,
// `http` or `https` (any case); another value, or none, leaves the
// connection's own.
void SchemeFromForwardedProto(const std::vector<http::HeaderField>& headers, bool* https) {
  const http::HeaderField* found = nullptr;
  for (const http::HeaderField& h : headers) {
    if (!http::EqualsIgnoreCase(h.name, "x-forwarded-proto")) continue;
    if (found != nullptr) return;
    found = &h;
  }
  if (found == nullptr) return;
  std::string_view value = found->value;
  while (!value.empty() && (value.front() == ' ' || value.front() == '\t')) value.remove_prefix(1);
  while (!value.empty() && (value.back() == ' ' || value.back() == '\t')) value.remove_suffix(1);
  if (http::EqualsIgnoreCase(value, "https")) {
    *https = true;
  } else if (http::EqualsIgnoreCase(value, "http")) {
    *https = false;
  }
}

bool ValidRequestId(std::string_view id) {
  if (id.empty() || id.size() > 128) return false;
  for (char c : id) {
    bool ok = (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
              c == '-' || c == '_' || c == '.';
    if (!ok) return false;
  }
  return true;
}

bool IsIdempotent(std::string_view method) {
  return method == "GET" || method == "HEAD" || method == "OPTIONS" || method == "PUT" ||
         method == "DELETE" || method == "TRACE";
}

// An Upgrade field that lists "websocket" (RFC 6455 4.1; any case).
bool IsWebSocketUpgrade(const std::vector<http::HeaderField>& headers) {
  for (const http::HeaderField& h : headers) {
    if (http::EqualsIgnoreCase(h.name, "upgrade") && http::HasToken(h.value, "websocket")) {
      return true;
    }
  }
  return false;
}

// RFC 6455 4.1: a Sec-WebSocket-Key is the base64 of 16 bytes.
bool IsWebSocketKey(std::string_view value) {
  std::string nonce;
  return value.size() == 24 &&
         absl::Base64Unescape(absl::string_view(value.data(), value.size()), &nonce) &&
         nonce.size() == 16;
}

// RFC 6455 4.2.2: the base64 of the SHA-1 of the key and the protocol's GUID.
std::string WebSocketAccept(absl::string_view key) {
  const std::string keyed = absl::StrCat(key, "258EAFA5-E914-47DA-95CA-C5AB0DC85B11");
  unsigned char digest[SHA_DIGEST_LENGTH];
  SHA1(reinterpret_cast<const unsigned char*>(keyed.data()), keyed.size(), digest);
  return absl::Base64Escape(
      absl::string_view(reinterpret_cast<const char*>(digest), sizeof(digest)));
}

// How long past a policy's own bound on its pause (SetPauseLimit) the
// route timer waits: the policy's timer fires first.
constexpr absl::Duration kPauseLimitMargin = absl::Seconds(1);

// What the gateway itself answers to (OPTIONS *, Max-Forwards: 0).
constexpr char kGatewayMethods[] = "GET, HEAD, POST, PUT, DELETE, PATCH, OPTIONS";

// Trailer fields that may be forwarded: none that frame, route or
// authenticate a message may come after its body (RFC 9110 6.5.1), nor
// hop-by-hop ones, nor those the gateway itself tells the upstream (the
// consumer, the client's address, the request id): an upstream that merges
// trailers into the header section must not find a client's copy there.
bool ForwardableTrailer(std::string_view name) {
  static const http::ConnectionTokens kNoTokens;
  if (http::IsHopByHop(name, kNoTokens) || IsConsumerField(name) ||
      IsUnderscoreSpellingOfGatewayField(name)) {
    return false;
  }
  for (std::string_view forbidden :
       {"content-length", "host", "content-type", "content-encoding", "content-range",
        "authorization", "set-cookie", "cookie", "expect", "max-forwards", "cache-control", "te",
        "x-forwarded-for", "x-forwarded-proto", "x-forwarded-host", "x-forwarded-port",
        "forwarded", "x-forwarded-client-cert", "x-real-ip", "x-request-id", "traceparent",
        "proxy-authorization", "via",
        // Request modifiers (RFC 9110 6.5.1, 13.1): they bind to the head.
        "if-match", "if-none-match", "if-modified-since", "if-unmodified-since", "if-range",
        "range",
        // Response control data and authentication challenges (RFC 9110
        // 6.5.1, 15, 11.6): a client or cache that merges trailers into the
        // head would follow or store them.
        "location", "content-location", "retry-after", "age", "expires", "date", "vary",
        "warning", "www-authenticate", "proxy-authenticate", "authentication-info",
        "proxy-authentication-info", "strict-transport-security", "trailer", "refresh",
        "alt-svc", "etag", "last-modified", "link", "content-disposition", "pragma",
        "content-security-policy", "clear-site-data", "access-control-allow-origin",
        "access-control-allow-credentials", "access-control-allow-headers",
        "access-control-allow-methods", "access-control-expose-headers",
        "access-control-max-age"}) {
    if (http::EqualsIgnoreCase(name, forbidden)) return false;
  }
  return true;
}

// The gRPC status for an HTTP status the gateway answers with (gRPC's
// "HTTP to gRPC status code mapping", with the gateway's own meanings: a
// timeout is DEADLINE_EXCEEDED, a rate limit RESOURCE_EXHAUSTED, a media
// type request-validation refuses INVALID_ARGUMENT, not UNKNOWN).
int GrpcStatusFor(int http_status) {
  switch (http_status) {
    case 400: return 13;  // Internal
    case 415: return 3;   // InvalidArgument
    case 401: return 16;  // Unauthenticated
    case 403: return 7;   // PermissionDenied
    case 404:
    case 405: return 12;  // Unimplemented
    case 408:
    case 504: return 4;   // DeadlineExceeded
    case 413:
    case 429:
    case 431: return 8;   // ResourceExhausted
    case 502:
    case 503: return 14;  // Unavailable
    default: return http_status >= 200 && http_status < 300 ? 0 : 2;  // Ok / Unknown
  }
}

// The gRPC status a client reads from a response without grpc-status, by
// its HTTP status (gRPC's http-grpc-status-mapping.md): unlike
// GrpcStatusFor, which words the gateway's own answers, a 504 or 429 from
// an upstream is UNAVAILABLE to the client, a 405 or 413 UNKNOWN.
int GrpcStatusAClientReads(int http_status) {
  switch (http_status) {
    case 400: return 13;  // Internal
    case 401: return 16;  // Unauthenticated
    case 403: return 7;   // PermissionDenied
    case 404: return 12;  // Unimplemented
    case 429:
    case 502:
    case 503:
    case 504: return 14;  // Unavailable
    default: return 2;    // Unknown
  }
}

// The gRPC status a client reads from an HTTP/2 RST_STREAM code (gRPC's
// PROTOCOL-HTTP2.md, "Errors"): what the gateway answers when an upstream
// resets a gRPC stream.
int GrpcStatusForReset(uint32_t error_code) {
  switch (error_code) {
    case 0x7: return 14;  // REFUSED_STREAM: Unavailable
    case 0x8: return 1;   // CANCEL: Cancelled
    case 0xb: return 8;   // ENHANCE_YOUR_CALM: ResourceExhausted
    case 0xc: return 7;   // INADEQUATE_SECURITY: PermissionDenied
    default: return 13;   // Internal
  }
}

// grpc-message is percent-encoded (outside printable ASCII, and '%').
std::string GrpcMessage(std::string_view text) {
  static constexpr char kHex[] = "0123456789ABCDEF";
  std::string out;
  for (unsigned char c : text) {
    if (c < 0x20 || c > 0x7e || c == '%') {
      out.push_back('%');
      out.push_back(kHex[c >> 4]);
      out.push_back(kHex[c & 15]);
    } else {
      out.push_back(static_cast<char>(c));
    }
  }
  return out;
}

// "grpc-timeout: 1S", "250m", "100u": at most 8 digits and a unit
// (https://github.com/grpc/grpc/blob/master/doc/PROTOCOL-HTTP2.md).
bool ParseGrpcTimeout(std::string_view text, absl::Duration* out) {
  if (text.size() < 2 || text.size() > 9) return false;
  int64_t n = 0;
  for (char c : text.substr(0, text.size() - 1)) {
    if (c < '0' || c > '9') return false;
    n = n * 10 + (c - '0');
  }
  switch (text.back()) {
    case 'H': *out = absl::Hours(n); return true;
    case 'M': *out = absl::Minutes(n); return true;
    case 'S': *out = absl::Seconds(n); return true;
    case 'm': *out = absl::Milliseconds(n); return true;
    case 'u': *out = absl::Microseconds(n); return true;
    case 'n': *out = absl::Nanoseconds(n); return true;
    default: return false;
  }
}

}  // namespace

namespace {

// A grpc-status value (RFC-less, gRPC's PROTOCOL-HTTP2: a decimal code):
// 0..99, else -1.
int ParseGrpcStatus(std::string_view value) {
  if (value.empty() || value.size() > 2) return -1;
  int code = 0;
  for (char c : value) {
    if (c < '0' || c > '9') return -1;
    code = code * 10 + (c - '0');
  }
  return code;
}

// Whether an HTTP/2 request's Host field names another host or port than
// its :authority (a port left out is the scheme's default).
bool HostDiffersFromAuthority(const RequestHead& head) {
  const http::HeaderField* host = http::FindHeader(*head.headers, "host");
  if (host == nullptr || http::EqualsIgnoreCase(host->value, head.authority)) return false;
  const std::string_view default_port = http::EqualsIgnoreCase(head.scheme, "https") ? "443" : "80";
  auto port_of = [&](std::string_view authority) {
    const std::string_view port = authority.substr(http::StripPort(authority).size());
    return port.empty() ? default_port : port.substr(1);  // after the ':'
  };
  return !http::EqualsIgnoreCase(http::StripPort(head.authority), http::StripPort(host->value)) ||
         port_of(head.authority) != port_of(host->value);
}

int FindGrpcStatus(const std::vector<http::HeaderField>& fields) {
  for (const http::HeaderField& f : fields) {
    if (f.name.size() == 11 && http::EqualsIgnoreCase(f.name, "grpc-status")) {
      return ParseGrpcStatus(f.value);
    }
  }
  return -1;
}

}  // namespace

ProxyStream::ProxyStream(Worker& worker, DownstreamSink& sink, const std::string& listener,
                         const std::string& peer_ip, const net::TransportSocket& transport)
    : worker_(worker),
      sink_(&sink),
      listener_(&listener),
      peer_ip_(&peer_ip),
      transport_(&transport),
      route_timer_(worker.dispatcher(), [this] { OnRouteTimeout(); }),
      retry_timer_(worker.dispatcher(), [this] { OnRetryTimer(); }),
      per_try_timer_(worker.dispatcher(), [this] { OnPerTryTimeout(); }),
      idle_timer_(worker.dispatcher(), [this] { OnIdleTimer(); }) {}

ProxyStream::~ProxyStream() {
  OnDownstreamGone();
  ReleaseHeldBytes();
}

void ProxyStream::Reset() {
  active_ = false;
  ReleaseHeldBytes();
  answering_policy_ = cache_status_ = {};
  hidden_from_log_.clear();
  snapshot_.reset();
  route_ = nullptr;
  route_table_ = {};
  route_stats_ = nullptr;
  cluster_ = nullptr;
  endpoint_key_.clear();
  upstream_.reset();
  upstream2_.reset();
  method_.clear();
  upstream_head_.clear();
  normalized_target_.clear();
  h2_storage_.clear();
  h2_fields_.clear();
  te_trailers_ = trust_forwarded_ = https_ = false;
  resends_ = 0;
  fresh_connection_ = false;
  resent_after_loss_ = false;
  same_endpoint_ = -1;
  body_gone_ = held_for_alpn_ = replay_past_limit_ = false;
  body_limit_ = request_body_bytes_ = 0;
  request_id_.clear();
  has_body_ = request_chunked_ = request_complete_ = head_request_ = false;
  upgrade_ = tunnel_ = response_started_ = upstream_paused_reading_ = upstream_no_body_ = false;
  extended_connect_ = tunnel_client_ended_ = false;
  websocket_key_.clear();
  response_streamed_ = false;
  grpc_ = false;
  grpc_reply_type_ = "application/grpc";
  grpc_timeout_ = absl::InfiniteDuration();
  grpc_reset_status_ = -1;
  pending_outcome_ = 0;
  outcome_reported_ = false;
  grpc_status_ = -1;
  status_ = attempts_ = 0;
  endpoint_active_ = nullptr;
  endpoint_index_ = -1;
  tried_.clear();
  hash_ = 0;
  counted_request_ = pending_ = counted_retry_ = false;
  retries_ = 0;
  informational_sent_ = 0;
  replayable_ = retries_any_method_ = false;
  if (replay_.capacity() > 64 * 1024) {
    std::string().swap(replay_);  // a held body's: not kept by an idle connection
  } else {
    replay_.clear();
  }
  request_trailers_.Clear();
  response_trailers_.clear();
  trailer_storage_.clear();
  filters_.clear();
  filters_entered_ = 0;
  paused_ = in_hook_ = continued_in_hook_ = paused_end_ = buffering_body_ = false;
  pause_limit_ = absl::ZeroDuration();
  body_buffer_limit_ = 0;
  body_wanted_.clear();
  response_wanted_.clear();
  upstream_sent_ = first_byte_ = upstream_end_ = absl::InfinitePast();
  bytes_in_ = bytes_out_ = 0;
  drop_underscored_trailers_ = false;
  replaying_ = recorded_ = counted_response_ = false;
  response_flag_.clear();
  upstream_failure_.clear();
  chain_ = nullptr;
  current_filter_ = 0;
  listener_stats_ = nullptr;
  access_log_ = nullptr;
  log_authority_.clear();
  log_path_.clear();
  log_user_agent_.clear();
  response_hold_limit_ = 0;
  holding_response_ = false;
  observes_upstream_ = edits_every_answer_ = fields_first_ = in_upstream_error_ = false;
  hook_head_ = nullptr;
  background_request_.reset();
  resume_token_.reset();
  deferred_.reset();  // what a pause or a hold kept goes (an idle connection keeps none)
  max_body_bytes_ = 0;
  filtered_headers_.Clear();
  reply_headers_.Clear();
  path_.clear();
  path_set_ = false;
  info_ = http::StreamInfo();
}

void ProxyStream::Start(const RequestHead& request) {
  RequestHead head = request;  // its target becomes the normalised one
  active_ = true;
  start_time_ = absl::Now();
  client_ip_ = *peer_ip_;
  protocol_ = head.http2 ? "HTTP/2" : head.http10 ? "HTTP/1.0" : "HTTP/1.1";
  worker_.stats().downstream_requests_total->Inc();
  snapshot_ = worker_.snapshot();
  method_.assign(head.method);
  head_request_ = head.method == "HEAD";
  has_body_ = head.body == RequestHead::Body::kStream ||
              (head.body == RequestHead::Body::kLength && head.content_length > 0);
  request_chunked_ = head.body == RequestHead::Body::kStream;
  request_complete_ = head.body == RequestHead::Body::kNone;
  extended_connect_ = head.extended_connect;
  // One pass over the fields for what the stream itself reads.
  const http::HeaderField* id_header = nullptr;
  const http::HeaderField* traceparent = nullptr;
  bool traceparent_repeated = false;
  for (const http::HeaderField& h : *head.headers) {
    if (id_header == nullptr && http::EqualsIgnoreCase(h.name, "x-request-id")) {
      id_header = &h;
    } else if (http::EqualsIgnoreCase(h.name, "traceparent")) {
      traceparent_repeated = traceparent != nullptr;
      if (!traceparent_repeated) traceparent = &h;
    } else if (http::EqualsIgnoreCase(h.name, "content-type")) {
      const http::GrpcContentType type = http::ClassifyGrpcContentType(h.value);
      grpc_ = type != http::GrpcContentType::kNone;
      // A gRPC-Web client reads the gateway's errors in a reply of its own
      // type (application/grpc would be a protocol error to it).
      if (type == http::GrpcContentType::kNone || type == http::GrpcContentType::kGrpc) {
        grpc_reply_type_ = "application/grpc";
      } else {
        // In the request's message format (PROTOCOL-WEB.md: `+json` is
        // answered `+json`); `+proto` when it names none.
        const bool text = type == http::GrpcContentType::kGrpcWebText;
        std::string_view format = h.value.substr(text ? 25 : 20);
        format = format.substr(0, format.find_first_of("; \t"));
        if (format.size() < 2 || format.size() > 32 || format[0] != '+' ||
            !http::IsToken(format.substr(1))) {
          format = "+proto";
        }
        grpc_reply_storage_ = text ? "application/grpc-web-text" : "application/grpc-web";
        grpc_reply_storage_.append(format);
        grpc_reply_type_ = grpc_reply_storage_;
      }
    } else if (http::EqualsIgnoreCase(h.name, "grpc-timeout")) {
      if (!ParseGrpcTimeout(h.value, &grpc_timeout_)) grpc_timeout_ = absl::InfiniteDuration();
    } else if (http::EqualsIgnoreCase(h.name, "te")) {
      te_trailers_ = te_trailers_ || http::HasToken(h.value, "trailers");
    }
  }
  if (id_header && ValidRequestId(id_header->value)) {
    request_id_.assign(id_header->value);
  } else {
    worker_.NewRequestId(&request_id_);
  }
  // Two traceparent fields are none (W3C Trace Context 3.2: a new trace).
  SetUpTraceContext(traceparent_repeated ? nullptr : traceparent);

  auto listener_it = snapshot_->listeners.find(*listener_);
  if (listener_it == snapshot_->listeners.end() && sink_->listener_snapshot() != nullptr) {
    // A newer config removed the listener while this connection drains:
    // the last config that had it serves what still comes.
    snapshot_ = sink_->listener_snapshot();
    listener_it = snapshot_->listeners.find(*listener_);
  }
  if (listener_it == snapshot_->listeners.end()) {
    response_flag_ = "listener_removed";
    SendLocalResponse(503, "listener removed; the gateway is draining this connection", {}, {},
                      "application/json", /*close_connection=*/true);
    return;
  }
  const config::ListenerRuntime& listener = listener_it->second;
  listener_stats_ = listener.by_class;
  trust_forwarded_ = listener.trusted_proxy_hops > 0;
  https_ = transport_->secure();
  if (listener.trusted_proxy_hops > 0) {
    SchemeFromForwardedProto(*head.headers, &https_);
    if (ClientFromForwardedFor(*head.headers, listener.trusted_proxy_hops,
                               &client_ip_storage_)) {
      client_ip_ = client_ip_storage_;
    }
  }
  if (listener.access_log != nullptr &&
      listener.access_log->Samples([this] { return worker_.picker().Random(); })) {
    access_log_ = listener.access_log.get();
    query_credentials_ = listener.query_credentials;
    log_authority_.assign(head.authority);
    log_path_.assign(head.target);
    if (const http::HeaderField* ua = http::FindHeader(*head.headers, "user-agent")) {
      log_user_agent_.assign(ua->value);
    }
  }
  if (Overload::active()) {
    worker_.stats().overload_requests_rejected->Inc();
    response_flag_ = "overload";
    SendLocalResponse(503, "the gateway is overloaded (memory); try again", {{"retry-after", "1"}},
                      {}, "application/json", /*close_connection=*/true);
    return;
  }
  if (std::string problem = http::MethodCaseProblem(head.method); !problem.empty()) {
    // As nginx: `post` or `purge` past a route's `methods: [POST, PURGE]`
    // (and its policies) would reach an upstream that upper-cases it.
    response_flag_ = "bad_request";
    SendLocalResponse(400, problem);
    return;
  }
  if (head.method == "CONNECT") {
    response_flag_ = "bad_request";
    SendLocalResponse(405, "CONNECT is not supported",
                      {{"allow", "GET, HEAD, POST, PUT, DELETE, PATCH, OPTIONS"}}, {},
                      "application/json", /*close_connection=*/true);
    return;
  }
  if (head.http2 && !head.background) {
    // nghttp2 checks less than the HTTP/1 parser does for the same parts of
    // a request: an upstream gets nothing an HTTP/1 client could not send.
    const char* error = nullptr;
    if (!http::IsValidRequestTarget(head.target)) {
      error = "invalid :path (only visible ASCII and no fragment: percent-encode the rest)";
    } else if ((head.authority_from_target || !head.authority.empty()) &&
               !http::IsValidHostValue(head.authority)) {
      error = head.authority_from_target
                  ? "invalid :authority (an empty host, userinfo, or characters a host cannot "
                    "have)"
                  : "invalid host header";
    } else if (!head.scheme.empty() &&  // nghttp2 requires :scheme but for CONNECT
               !http::EqualsIgnoreCase(head.scheme, "https") &&
               !http::EqualsIgnoreCase(head.scheme, "http")) {
      error = "invalid :scheme (http or https)";
    } else if (head.authority_from_target && HostDiffersFromAuthority(head)) {
      // RFC 9113 8.3.1 (a SHOULD; nginx answers 400 too): which one names
      // the resource would be a guess, and a cache or policy keyed on one
      // while the upstream reads the other can be led astray.
      error = "host header names another host than :authority";
    }
    if (error != nullptr) {
      response_flag_ = "bad_request";
      SendLocalResponse(400, error);
      return;
    }
  }
  if (head.target.size() > listener.max_uri_bytes) {
    response_flag_ = "bad_request";
    SendLocalResponse(414, absl::StrCat("request target longer than ", listener.max_uri_bytes,
                                        " bytes (the listener's http.max_uri_bytes)"));
    return;
  }
  // HTTP/2's :authority counts as the Host field it stands for, so the
  // same request is under the limit or over it in either protocol (an h2
  // request reached the upstream with one field more than HTTP/1 allows).
  const size_t fields =
      head.headers->size() +
      (head.http2 && !head.authority.empty() && http::FindHeader(*head.headers, "host") == nullptr
           ? 1
           : 0);
  if (fields > listener.max_request_headers) {
    response_flag_ = "bad_request";
    SendLocalResponse(431, absl::StrCat("more than ", listener.max_request_headers,
                                        " header fields (the listener's http.max_request_headers)"));
    return;
  }
  drop_underscored_trailers_ =
      listener.headers_with_underscores != config::v1::HttpOptions::ALLOW;
  if (drop_underscored_trailers_) {
    // A `_` spelling that CGI-style upstreams read as a `-` one, which route
    // header matchers and policies take as another field: refused, or gone
    // before anything reads the request.
    auto underscored = [](const http::HeaderField& f) {
      return f.name.find('_') != std::string_view::npos;
    };
    auto first = std::find_if(head.headers->begin(), head.headers->end(), underscored);
    if (first != head.headers->end()) {
      if (listener.headers_with_underscores == config::v1::HttpOptions::REJECT_REQUEST) {
        response_flag_ = "bad_request";
        const absl::string_view name(first->name.data(), first->name.size());
        SendLocalResponse(400, absl::StrCat("header field ", name,
                                            " has '_' in its name (the listener's "
                                            "http.headers_with_underscores is REJECT_REQUEST)"));
        return;
      }
      underscore_free_headers_.clear();
      for (const http::HeaderField& f : *head.headers) {
        if (!underscored(f)) underscore_free_headers_.push_back(f);
      }
      head.headers = &underscore_free_headers_;
    }
  }
  // One path for routing, policies and the upstream: normalised (dot
  // segments, percent-encoding, the listener's slash options).
  auto normalized = http::NormalizePath(head.target, listener.path_normalization);
  if (!normalized.ok()) {
    response_flag_ = "bad_request";
    SendLocalResponse(400, absl::StrCat("invalid request path: ", normalized.status().message()));
    return;
  }
  if (normalized->changed) {
    normalized_target_ = std::move(normalized->target);
    head.target = normalized_target_;
    // The log names the path routing saw (a route with policies logs what
    // they left), not the one the client spelled.
    if (access_log_ != nullptr) log_path_.assign(head.target);
    if (normalized->redirect) {
      // Absolute, so a path that now starts "//evil.example" cannot be read
      // as another host (RFC 3986 4.2); a backslash, which browsers read as
      // a slash and a URI cannot hold, goes percent-encoded.
      std::string location;
      if (!head.authority.empty()) {
        location.append(https_ ? "https://" : "http://");
        location.append(head.authority);
      }
      if (location.empty() && normalized_target_.size() >= 2 && normalized_target_[1] == '/') {
        // No Host to name (HTTP/1.0): a relative "//a" would name another
        // host; "/.//a" is the same path on this one (not "/a", another
        // resource without merge_slashes).
        location.append("/.");
      }
      http::AppendLocationPath(normalized_target_, &location);
      SendLocalResponse(307, "", {{"location", location}}, {}, "text/plain");
      return;
    }
  }
  if (head.target == "*") {
    // "OPTIONS *" asks about the server itself (RFC 9110 9.3.7): the
    // gateway answers it.
    SendLocalResponse(200, "", {{"allow", kGatewayMethods}}, {}, "text/plain");
    return;
  }
  if (MaxForwardsIsZero(head)) {
    // RFC 9110 7.6.2: an OPTIONS or TRACE with Max-Forwards 0 is for this
    // hop. OPTIONS gets the gateway's methods; TRACE, which would echo the
    // request (cookies and credentials included), is not one of them.
    if (head.method == "OPTIONS") {
      SendLocalResponse(200, "", {{"allow", kGatewayMethods}}, {}, "text/plain");
    } else {
      SendLocalResponse(405, "TRACE is not answered by the gateway", {{"allow", kGatewayMethods}});
    }
    return;
  }
  router::RouteRequest route_request;
  route_request.method = head.method;
  route_request.host = head.authority;
  route_request.path_and_query = head.target;
  route_request.headers = head.headers;
  router::MatchResult match = listener.route_table->Match(route_request);
  if (match.kind == router::MatchResult::Kind::kNoRoute) {
    response_flag_ = "no_route";
    SendLocalResponse(404, "no route matches the request");
    return;
  }
  if (match.kind == router::MatchResult::Kind::kMethodNotAllowed) {
    response_flag_ = "method_not_allowed";
    SendLocalResponse(405, absl::StrCat("method ", method_, " is not allowed on this route"),
                      {{"allow", match.allowed_methods}});
    return;
  }
  if (normalized->ambiguous) {
    // A dot segment only some upstreams see resolves there past the route
    // chosen here, whatever the route table: refused outright. Without one,
    // the liberal readings must route where this one did.
    if (http::HasHiddenDotSegment(route_request.path_and_query)) {
      response_flag_ = "bad_request";
      SendLocalResponse(400,
                        "the request path has a dot segment some upstreams see where %2F, %5C, "
                        "a backslash or ;parameters end a segment (..;x, ..%2F); send the path "
                        "plainly");
      return;
    }
    if (!ReadsAsSameRoute(route_request, match, *listener.route_table)) {
      response_flag_ = "bad_request";
      SendLocalResponse(
          400,
          "the request path reads as another route's path where %2F, %5C, a backslash or "
          "// is taken as a slash, or a leading // as a host, as some upstreams take them; send "
          "the path plainly");
      return;
    }
  }
  route_ = match.route;
  route_table_ = listener.route_table->name();
  route_stats_ = &(*listener.route_stats)[route_->id];
  max_body_bytes_ = listener.max_request_body_bytes;
  if (listener.route_filters != nullptr && !(*listener.route_filters)[route_->id].empty()) {
    switch (RunRequestFilters((*listener.route_filters)[route_->id], head)) {
      case ChainResult::kAnswered:
        return;
      case ChainResult::kPaused:
        // A policy waits for asynchronous work: keep what the head's views
        // point to; the route timeout bounds the wait.
        SaveHead(head);
        StartPauseTimer();
        return;
      case ChainResult::kDone:
        FiltersDone(head);
        return;
    }
  }
  Route(head);
}

void ProxyStream::FiltersDone(const RequestHead& head) {
  if (body_buffer_limit_ > 0 && has_body_ && !request_complete_) {
    // Only the filters that want this request's body hold it.
    body_buffer_limit_ = 0;
    body_wanted_.assign(filters_entered_, false);
    for (size_t i = 0; i < filters_entered_; ++i) {
      uint64_t limit = (*chain_)[i]->request_body_limit();
      if (limit == 0 || !filters_[i]->WantsRequestBody(filtered_headers_)) continue;
      body_wanted_[i] = true;
      if (body_buffer_limit_ == 0 || limit < body_buffer_limit_) body_buffer_limit_ = limit;
    }
  }
  if (body_buffer_limit_ == 0 || !has_body_ || request_complete_) {
    Route(head);
    return;
  }
  // The listener's and the route's limit, and request-size-limit's, bound
  // what is held: a declared length over one is refused before anything is
  // held (or a 100 Continue sent), and a streamed body is held no further
  // (before, a 100-byte limit let 16 MiB be held, then answered 413).
  hold_overflow_.clear();
  const uint64_t body_max = BodyLimit();
  if (body_max > 0 && head.body == RequestHead::Body::kLength && head.content_length > body_max) {
    response_flag_ = "request_too_large";
    SendLocalResponse(413, absl::StrCat("request body of ", head.content_length,
                                        " bytes is over the limit of ", body_max),
                      {}, {}, "application/json", /*close_connection=*/true);
    return;
  }
  if (body_max > 0 && body_max < body_buffer_limit_) {
    body_buffer_limit_ = body_max;
    hold_overflow_ = absl::StrCat("request body over the limit of ", body_max, " bytes");
  }
  for (size_t i = 0; i < filters_entered_; ++i) {
    const uint64_t max = (*chain_)[i]->request_body_max();
    if (max > 0 && max < body_buffer_limit_) {
      body_buffer_limit_ = max;
      hold_overflow_ = absl::StrCat("request body over this route's limit of ", max, " bytes");
    }
  }
  if (head.body == RequestHead::Body::kLength && head.content_length > body_buffer_limit_) {
    response_flag_ = "request_too_large";
    SendLocalResponse(413, absl::StrCat("request body of ", head.content_length,
                                        " bytes is over the ", body_buffer_limit_,
                                        " bytes a policy of this route can hold"),
                      {}, {}, "application/json", /*close_connection=*/true);
    return;
  }
  if (head.body == RequestHead::Body::kLength &&
      static_cast<int64_t>(head.content_length) > HeldBodies::max()) {
    response_flag_ = "request_too_large";
    SendLocalResponse(413, absl::StrCat("request body of ", head.content_length,
                                        " bytes is over the ", HeldBodies::max() >> 20,
                                        " MiB the gateway holds for policies"),
                      {}, {}, "application/json", /*close_connection=*/true);
    return;
  }
  // The body is held whole before anything goes upstream. The route
  // timeout starts when it goes (the upload is not the upstream's time);
  // meanwhile the route's idle_timeout bounds a body that stalls. A route
  // that answers itself (redirect, direct response) has no idle_timeout of
  // its own: the default bounds it. A gRPC call's deadline (the route
  // timeout, or its grpc-timeout) runs on: it bounds the whole call.
  // Before, a held call ran past it for as long as its client sent.
  if (&head != &deferred().saved_head) SaveHead(head);
  buffering_body_ = true;
  if (deferred().saved_head.expect_continue) {
    sink_->EncodeContinue();
    deferred().saved_head.expect_continue = false;
  }
  if (grpc_) {
    StartRouteTimer();
  } else {
    route_timer_.Clear();
  }
  StartIdleTimer(UploadIdleLimit());
}

uint64_t ProxyStream::BodyLimit() const {
  return route_->max_request_body_bytes ? route_->max_request_body_bytes : max_body_bytes_;
}

void ProxyStream::RefuseHeldBody() {
  response_flag_ = "request_too_large";
  SendLocalResponse(413,
                    hold_overflow_.empty()
                        ? absl::StrCat("request body over the ", body_buffer_limit_,
                                       " bytes a policy of this route can hold")
                        : hold_overflow_,
                    {}, {}, "application/json", /*close_connection=*/true);
}

// Room kept past a held body for a parser's padding (simdjson reads up to 64
// bytes past the end): a body_schema parses the held body in place.
constexpr size_t kHeldBodyPadding = 64;

bool ProxyStream::HoldBodyChunk(std::string_view chunk) {
  std::string& held = deferred().paused_body;
  const size_t needed = held.size() + chunk.size();
  const size_t bound = static_cast<size_t>(HeldBodies::max());
  if (needed > bound) {
    // This body alone is more than the gateway holds: never, so not 503.
    response_flag_ = "request_too_large";
    SendLocalResponse(413,
                      absl::StrCat("request body over the ", bound >> 20,
                                   " MiB the gateway holds for policies"),
                      {}, {}, "application/json", /*close_connection=*/true);
    return false;
  }
  if (needed + kHeldBodyPadding > held.capacity()) {
    // The buffer grows by what this call decides, charged first: doubling
    // (so a client must send half of what it is charged for: a declared
    // length reserved at the first byte let one HTTP/2 connection take the
    // whole bound with a byte per stream), but not past a declared length
    // or the hold's limit, with the parser's padding, and never past the
    // proxy-wide bound (a body that fits is never refused for the doubling
    // or the padding; one of the bound's whole size is parsed from a copy).
    const RequestHead& head = deferred().saved_head;
    size_t target = std::max(needed, 2 * held.capacity());
    if (head.body == RequestHead::Body::kLength && head.content_length >= needed) {
      target = std::min<size_t>(target, head.content_length);
    }
    target = std::min<uint64_t>(target, body_buffer_limit_ + 1) + kHeldBodyPadding;
    target = std::max(needed, std::min(target, bound));
    if (static_cast<int64_t>(target) > held_bytes_ &&
        !TakeHeldBytes(target - static_cast<size_t>(held_bytes_))) {
      return false;
    }
    held.reserve(target);
  }
  held.append(chunk);
  return true;
}

bool ProxyStream::TakeHeldBytes(size_t bytes) {
  const bool overload = Overload::active();
  if (overload || !HeldBodies::TryTake(static_cast<int64_t>(bytes))) {
    worker_.stats().held_bodies_refused->Inc();
    if (overload) worker_.stats().overload_requests_rejected->Inc();
    response_flag_ = overload ? "overload" : "held_body_limit";
    SendLocalResponse(503,
                      overload ? "the gateway is overloaded (memory); try again"
                               : absl::StrCat("the gateway holds its limit of ", HeldBodies::max() >> 20,
                                              " MiB of request bodies for policies; try again"),
                      {{"retry-after", "1"}}, {}, "application/json", /*close_connection=*/true);
    return false;
  }
  held_bytes_ += static_cast<int64_t>(bytes);
  worker_.stats().request_bodies_held_bytes->Add(static_cast<int64_t>(bytes));
  return true;
}

void ProxyStream::ReleaseHeldBytes() {
  if (held_bytes_ == 0) return;
  HeldBodies::Give(held_bytes_);
  worker_.stats().request_bodies_held_bytes->Add(-held_bytes_);
  held_bytes_ = 0;
}

absl::Duration ProxyStream::UploadIdleLimit() const {
  // A route that answers itself has no idle_timeout of its own; one whose
  // idle_timeout is 0s (a streamed response without limit) has its
  // timeout; a body held in memory is bounded all the same.
  if (route_->action != router::RouteEntry::Action::kCluster) return api::kDefaultStreamIdleTimeout;
  if (route_->idle_timeout > absl::ZeroDuration()) return route_->idle_timeout;
  if (route_->timeout > absl::ZeroDuration()) return route_->timeout;
  return buffering_body_ ? api::kDefaultStreamIdleTimeout : absl::ZeroDuration();
}

void ProxyStream::FinishBodyBuffering() {
  buffering_body_ = false;
  for (size_t i = 0; i < filters_entered_; ++i) {
    if (i >= body_wanted_.size() || !body_wanted_[i]) continue;
    current_filter_ = i;
    http::FilterStatus status = filters_[i]->OnRequestBody(deferred().paused_body, *this);
    if (!active_ || response_started_) return;
    if (status != http::FilterStatus::kContinue) {
      SendLocalResponse(500, "a policy stopped the request without answering");
      return;
    }
  }
  RequestHead head = deferred().saved_head;
  // With its length now known, unless trailers came with it: then it goes
  // on chunked (HTTP/1) so that they can follow.
  if (deferred().paused_trailers.empty()) {
    head.body = RequestHead::Body::kLength;
    head.content_length = deferred().paused_body.size();
  } else {
    head.body = RequestHead::Body::kStream;
  }
  std::string body = std::move(deferred().paused_body);
  std::string().swap(deferred().paused_body);
  idle_timer_.Clear();
  idle_limit_ = absl::ZeroDuration();
  Route(head);
  if (!active_) return;
  replaying_ = replaying_held_ = true;
  if (!body.empty() && replayable_ && replay_.empty()) {
    // Kept for a retry as it is, not copied (a held body may be 16 MiB).
    replay_ = std::move(body);
    body_in_replay_ = true;
    OnRequestData(replay_);
    body_in_replay_ = false;
  } else if (!body.empty()) {
    OnRequestData(body);
  }
  replaying_ = replaying_held_ = false;
  if (!active_) return;
  std::vector<http::HeaderField> trailers;
  for (const http::HeaderMap::Field& f : deferred().paused_trailers.fields()) {
    trailers.push_back({f.name, f.value});
  }
  paused_end_ = false;
  OnRequestEnd(trailers);
}

void ProxyStream::SaveHead(const RequestHead& head) {
  deferred().saved_head = head;
  deferred().saved_authority.assign(head.authority);
  deferred().saved_head.authority = deferred().saved_authority;
  deferred().saved_fields.Clear();
  for (const http::HeaderField& h : *head.headers) deferred().saved_fields.Add(h.name, h.value);
  deferred().saved_views.clear();
  deferred().saved_views.reserve(deferred().saved_fields.size());
  for (const http::HeaderMap::Field& f : deferred().saved_fields.fields()) {
    deferred().saved_views.push_back({f.name, f.value});
  }
  deferred().saved_head.headers = &deferred().saved_views;
  deferred().saved_head.method = method_;
  deferred().saved_head.target = path_;
}

void ProxyStream::Route(const RequestHead& request) {
  RequestHead head = request;
  // The path the policies leave (SetPath) is the one that goes upstream.
  if (!filters_.empty()) head.target = path_;
  // A body held for the policies goes upstream with its (new) length.
  has_body_ = head.body == RequestHead::Body::kStream ||
              (head.body == RequestHead::Body::kLength && head.content_length > 0);
  request_chunked_ = head.body == RequestHead::Body::kStream;
  // A declared length over the limit is refused whatever the route does
  // with the request (a direct response or redirect too, as nginx's
  // client_max_body_size is checked before its return).
  body_limit_ = BodyLimit();
  if (body_limit_ > 0 && head.body == RequestHead::Body::kLength &&
      head.content_length > body_limit_) {
    response_flag_ = "request_too_large";
    SendLocalResponse(413, absl::StrCat("request body of ", head.content_length,
                                        " bytes is over the limit of ", body_limit_));
    return;
  }
  if (head.extended_connect &&
      (!route_->websocket || route_->action != router::RouteEntry::Action::kCluster)) {
    // An HTTP/2 WebSocket (RFC 8441) takes any 2xx for an open tunnel: it
    // cannot go upstream as a plain GET (the HTTP/1.1 upgrade's fallback),
    // nor get a direct response's 200. Envoy's 403 for an upgrade the route
    // does not allow.
    response_flag_ = "upgrade_refused";
    SendLocalResponse(403, "this route does not allow WebSocket (its route.websocket is false)");
    return;
  }
  switch (route_->action) {
    case router::RouteEntry::Action::kDirectResponse:
      response_flag_ = "direct_response";
      SendLocalResponse(static_cast<int>(route_->direct_status), "", {}, route_->direct_body,
                        route_->direct_content_type);
      return;
    case router::RouteEntry::Action::kRedirect: {
      std::string location = route_->RedirectLocation(https_ ? "https" : "http",
                                                      head.authority, head.target);
      if (location.empty()) {  // to another scheme, and no Host to name
        response_flag_ = "bad_request";
        SendLocalResponse(400, "the request has no Host, which a redirect to another scheme needs");
        return;
      }
      response_flag_ = "redirect";
      SendLocalResponse(static_cast<int>(route_->redirect_code), "", {{"location", location}}, {},
                        "text/plain");
      return;
    }
    case router::RouteEntry::Action::kCluster:
      break;
  }
  const std::string& cluster_name = route_->clusters.size() == 1
                                        ? route_->clusters[0].name
                                        : route_->PickCluster(worker_.picker().Random());
  auto cluster_it = snapshot_->clusters.find(cluster_name);
  if (cluster_it == snapshot_->clusters.end()) {
    response_flag_ = "no_cluster";
    SendLocalResponse(503, absl::StrCat("cluster ", cluster_name, " is not configured"));
    return;
  }
  cluster_ = cluster_it->second.get();
  // The request's path had no dot segments (normalisation removed them);
  // one a policy's rewrite made (request-transformer's `path` with "/dd../x"
  // matched by "/dd([^/]*)(.*)" and rewritten to "/api/\1\2") would reach a
  // path the upstream resolves but no route matched.
  if (path_set_ && http::HasDotSegment(head.target)) {
    response_flag_ = "bad_request";
    SendLocalResponse(400, "the path after a policy's rewrite has a dot segment");
    return;
  }
  std::string rewritten;
  if (!route_->prefix_rewrite.empty()) {
    rewritten = route_->RewritePath(head.target);
    // The request's path had no dot segments; one the rewrite made ("/api../x"
    // with prefix /api and rewrite / gives "/../x") would reach a path the
    // upstream resolves but no route matched (nginx's off-by-slash).
    if (http::HasDotSegment(rewritten)) {
      response_flag_ = "bad_request";
      SendLocalResponse(400, "the path after the route's prefix_rewrite has a dot segment");
      return;
    }
  }
  // A WebSocket goes to an HTTP/1.1 upstream as the HTTP/1.1 handshake (an
  // AUTO cluster's endpoints are reached over HTTP/1.1 for it:
  // ConnectUpstream), to an HTTP2 cluster's as an extended CONNECT (RFC
  // 8441), Envoy's translation.
  upgrade_ = route_->websocket && head.upgrade && head.method == "GET" && !head.http10 &&
             (head.extended_connect || IsWebSocketUpgrade(*head.headers));
  if (upgrade_ && !head.extended_connect &&
      cluster_->protocol == upstream::UpstreamProtocol::kHttp2) {
    // The gateway answers the HTTP/1.1 handshake itself (Sec-WebSocket-Accept
    // from the key): the upstream never sees the key.
    const http::HeaderField* key = http::FindHeader(*head.headers, "sec-websocket-key");
    if (key == nullptr || !IsWebSocketKey(key->value)) {
      response_flag_ = "bad_request";
      SendLocalResponse(400, "the WebSocket handshake has no valid Sec-WebSocket-Key "
                             "(RFC 6455 4.1: the base64 of 16 bytes)");
      return;
    }
    websocket_key_.assign(key->value);
  }
  if (cluster_->hash_table) hash_ = HashKeyFor(*cluster_, head);
  const upstream::ClusterInfo& cluster = *cluster_;
  if (cluster.state->active_requests.load(std::memory_order_relaxed) >=
      cluster.breakers.max_requests) {
    cluster.stats.breaker_overflow_requests->Inc();
    response_flag_ = "breaker_open";
    SendLocalResponse(503, absl::StrCat("circuit breaker max_requests is open for cluster ",
                                        cluster.name));
    return;
  }
  cluster.state->active_requests.fetch_add(1, std::memory_order_relaxed);
  counted_request_ = true;
  const router::RouteEntry::Retry& retry = route_->retry;
  // Any method may be sent again after a connect failure (it reached no
  // upstream, as nginx's proxy_next_upstream holds); other failures retry
  // only idempotent ones unless retry_non_idempotent (see MayRetry).
  retries_any_method_ = IsIdempotent(method_) || retry.retry_non_idempotent;
  // The body is kept (up to max_replay_bytes, 64 KiB without a retry
  // policy) until the response begins, for a retry and for a resend the
  // upstream allows without one: a stale pooled connection, a refused
  // HTTP/2 stream.
  replayable_ = true;

  std::string_view path = route_->prefix_rewrite.empty() ? head.target : rewritten;
  // The forwarded fields: the policies' map, or straight from the request.
  auto for_each_field = [&](auto emit) {
    if (!filters_.empty()) {
      for (const http::HeaderMap::Field& f : filtered_headers_.fields()) emit(f.name, f.value);
    } else {
      ForEachForwardedHeader(head, emit);
    }
  };
  if (cluster_->protocol != upstream::UpstreamProtocol::kHttp1) {
    BuildHttp2Head(head, path, for_each_field);
  }
  if (cluster_->protocol == upstream::UpstreamProtocol::kHttp2) {
    if (head.expect_continue && has_body_) sink_->EncodeContinue();
    StartRequestTimers();
    ConnectUpstream();
    return;
  }
  // The request head for an HTTP/1.1 upstream.
  std::string& out = upstream_head_;
  out.reserve(head.target.size() + 512);
  out.append(head.method);
  out.push_back(' ');
  out.append(path);
  out.append(" HTTP/1.1\r\n");
  for_each_field([&out](std::string_view name, std::string_view value) {
    AppendHeader(&out, name, value);
  });
  if (upgrade_) {
    AppendHeader(&out, "connection", "upgrade");
    AppendHeader(&out, "upgrade", "websocket");
    if (head.extended_connect) AppendHttp1WebSocketFields(*head.headers, &out);
  }
  if (head.body == RequestHead::Body::kLength) {
    out.append("content-length: ");
    absl::StrAppend(&out, head.content_length);
    out.append("\r\n");
  } else if (request_chunked_) {
    AppendHeader(&out, "transfer-encoding", "chunked");
  }
  out.append("\r\n");
  if (head.expect_continue && has_body_) sink_->EncodeContinue();
  StartRequestTimers();
  ConnectUpstream();
}

bool ProxyStream::ResetIsPremature(absl::Time now) const {
  const absl::Duration lived = now - start_time_;
  if (lived >= kPrematureResetLifetime) return false;
  return !grpc_ || grpc_timeout_ == absl::InfiniteDuration() ||
         lived < std::max(grpc_timeout_ / 2, kMinDeadlineLifetime);
}

bool ProxyStream::QueryMayHoldCredential() const {
  // Unrouted (refused before routing, or no route): any route's policy
  // might have read a key from this query.
  if (route_ == nullptr) return query_credentials_;
  if (chain_ == nullptr) return false;  // a route without policies
  for (size_t i = filters_entered_; i < chain_->size(); ++i) {
    if ((*chain_)[i]->reads_query_credential()) return true;  // it never ran
  }
  return false;
}

bool ProxyStream::GrpcTimeoutBinds() const {
  // A gRPC request's only: Envoy's reading (grpc-timeout on a plain HTTP
  // request is an application's own field).
  return grpc_ && grpc_timeout_ < absl::InfiniteDuration() &&
         (route_->timeout == absl::ZeroDuration() || grpc_timeout_ < route_->timeout);
}

void ProxyStream::StartRequestTimers() {
  // The route timeout is the upstream's time to answer: it starts once the
  // whole request is in (Envoy's), not while a client still uploads, and a
  // slow or stalled upload never counts against the endpoint. Until then
  // the route's idle_timeout bounds a body that stalls (408). A gRPC
  // call's timeout is a deadline on the whole call.
  if (grpc_ || request_complete_) {
    StartRouteTimer();
    return;
  }
  // A policy's pause was bounded by the route timer; the upload is not.
  route_timer_.Clear();
  // With idle_timeout 0s (streamed responses without limit) the route's
  // timeout bounds a stalled upload instead; both 0s: none.
  StartIdleTimer(UploadIdleLimit());
}

void ProxyStream::StartPauseTimer() {
  StartRouteTimer();
  // A policy that bounds its own pause (a cache waiter's lock_timeout)
  // ends it itself, not the route timeout (as nginx's proxy_cache_lock_timeout
  // is apart from its proxy_read_timeout); the margin lets it.
  if (pause_limit_ > absl::ZeroDuration() && route_timer_.set() && !GrpcTimeoutBinds() &&
      pause_limit_ + kPauseLimitMargin > route_->timeout) {
    route_timer_.Set(pause_limit_ + kPauseLimitMargin);
  }
}

void ProxyStream::StartRouteTimer() {
  if (route_timer_.set()) return;  // since a policy paused the request
  // The client's grpc-timeout bounds the route's deadline.
  if (GrpcTimeoutBinds()) {
    route_timer_.Set(std::max(grpc_timeout_, absl::Milliseconds(1)));
  } else if (route_->timeout > absl::ZeroDuration()) {
    route_timer_.Set(route_->timeout, /*shared_duration=*/true);
  }
}

template <typename ForEach>
void ProxyStream::BuildHttp2Head(const RequestHead& head, std::string_view path,
                                 ForEach for_each) {
  // Regular fields as name\0value\0 pairs, then the four pseudo-header
  // values (\0-terminated); views are taken once the string stops growing.
  std::string& st = h2_storage_;
  st.reserve(path.size() + 512);
  auto put = [&st](std::string_view name, std::string_view value) {
    st.append(name);
    st.push_back('\0');
    st.append(value);
    st.push_back('\0');
  };
  std::string authority(head.authority.empty() ? std::string_view("localhost") : head.authority);
  // A WebSocket to an HTTP2 cluster: an extended CONNECT (RFC 8441 4),
  // whose handshake has no key (the gateway answers an HTTP/1.1 client's).
  const bool websocket = upgrade_ && cluster_->protocol == upstream::UpstreamProtocol::kHttp2;
  for_each([&](std::string_view name, std::string_view value) {
    // The (forwarded, perhaps rewritten by a policy) Host is :authority.
    if (http::EqualsIgnoreCase(name, "host")) {
      authority.assign(value);
      return;
    }
    if (websocket && http::EqualsIgnoreCase(name, "sec-websocket-key")) return;
    put(name, value);
  });
  // gRPC servers require it; HTTP/2 allows no other TE value (RFC 9113
  // 8.2.2). An HTTP/1.1 upstream gets no TE (a hop-by-hop field).
  if (te_trailers_) put("te", "trailers");
  if (head.body == RequestHead::Body::kLength) {
    put("content-length", std::to_string(head.content_length));
  }
  size_t regular_end = st.size();
  const std::string_view method = websocket ? std::string_view("CONNECT") : head.method;
  for (std::string_view v : {method,
                             std::string_view(cluster_->transport != nullptr ? "https" : "http"),
                             std::string_view(authority), path}) {
    st.append(v);
    st.push_back('\0');
  }
  h2_fields_.clear();
  std::string_view all = st;
  size_t at = 0;
  while (at < regular_end) {
    size_t a = all.find('\0', at);
    size_t b = all.find('\0', a + 1);
    h2_fields_.push_back({all.substr(at, a - at), all.substr(a + 1, b - a - 1)});
    at = b + 1;
  }
  std::string_view pseudo[4];
  for (std::string_view& v : pseudo) {
    size_t a = all.find('\0', at);
    v = all.substr(at, a - at);
    at = a + 1;
  }
  h2_request_.method = pseudo[0];
  h2_request_.scheme = pseudo[1];
  h2_request_.authority = pseudo[2];
  h2_request_.path = pseudo[3];
  h2_request_.protocol = websocket ? "websocket" : "";
  h2_request_.fields = h2_fields_.data();
  h2_request_.field_count = h2_fields_.size();
}

namespace {

// A Max-Forwards value (RFC 9110 7.6.2: 1*DIGIT): false when it is not one.
// A count past what 64 bits hold is the largest they do (the forwarded
// value is the lesser of the received one less one and what the recipient
// supports).
bool ParseMaxForwards(std::string_view value, uint64_t* hops) {
  if (value.empty() || !std::all_of(value.begin(), value.end(), absl::ascii_isdigit)) {
    return false;
  }
  if (!absl::SimpleAtoi(absl::string_view(value.data(), value.size()), hops)) {
    *hops = std::numeric_limits<uint64_t>::max();
  }
  return true;
}

}  // namespace

bool ProxyStream::MaxForwardsIsZero(const RequestHead& head) {
  if (head.method != "OPTIONS" && head.method != "TRACE") return false;
  const http::HeaderField* max_forwards = http::FindHeader(*head.headers, "max-forwards");
  uint64_t hops = 0;
  return max_forwards != nullptr && ParseMaxForwards(max_forwards->value, &hops) && hops == 0;
}

template <typename Emit>
void ProxyStream::ForEachForwardedHeader(const RequestHead& head, Emit emit) {
  const std::vector<http::HeaderField>& headers = *head.headers;
  const http::ConnectionTokens tokens =
      head.connection_names ? http::ConnectionTokens(headers) : http::ConnectionTokens();
  std::string forwarded_for;
  bool has_forwarded_for = false;
  std::string via;  // the hops before, then this one (RFC 9110 7.6.3)
  bool has_host = false;
  // OPTIONS and TRACE count their hops (RFC 9110 7.6.2): one less goes on.
  const bool counts_hops = head.method == "OPTIONS" || head.method == "TRACE";
  std::string hops_left;
  bool hops_counted = false;
  for (const http::HeaderField& h : headers) {
    if (counts_hops && http::EqualsIgnoreCase(h.name, "max-forwards")) {
      // One field (RFC 9110 7.6.2): the first decided (MaxForwardsIsZero);
      // a second would let the upstream read another count.
      if (hops_counted) continue;
      hops_counted = true;
      uint64_t hops = 0;
      if (!ParseMaxForwards(h.value, &hops)) {
        continue;  // not 1*DIGIT: no count to pass on (the gateway read none)
      }
      if (hops > 0) {
        hops_left = std::to_string(hops - 1);
        emit(h.name, hops_left);
        continue;
      }
    }
    if (IsConsumerField(h.name)) continue;  // only authentication policies set them
    if (IsUnderscoreSpellingOfGatewayField(h.name)) continue;
    // Where the client claims it reached: upstreams build URLs (redirects,
    // links) from it, and a cache does not key on it, so one client's
    // value could be served to all. Only trusted proxies may say, in
    // X-Forwarded-Host/-Port or in RFC 7239's Forwarded (host=, proto=).
    // X-Forwarded-Prefix likewise: the path prefix a proxy in front
    // removed, which Spring's ForwardedHeaderFilter and ASP.NET Core put
    // in front of the links and redirects they build.
    if (!trust_forwarded_ &&
        ((h.name.size() == 16 && (http::EqualsIgnoreCase(h.name, "x-forwarded-host") ||
                                  http::EqualsIgnoreCase(h.name, "x-forwarded-port"))) ||
         http::EqualsIgnoreCase(h.name, "forwarded") ||
         http::SameCgiName(h.name, "x-forwarded-prefix"))) {
      continue;
    }
    // Envoy's (and Istio's) client-certificate details, which applications
    // behind them trust: the gateway never sets it, and only a trusted
    // proxy in front may (Envoy's default, SANITIZE, drops a client's), in
    // any CGI spelling.
    if (!trust_forwarded_ && http::SameCgiName(h.name, "x-forwarded-client-cert")) continue;
    // The other spellings of "the client used HTTPS" that frameworks read
    // (Rack's X-Forwarded-Ssl and -Scheme, Microsoft's Front-End-Https,
    // WSGI's X-Url-Scheme, X-Forwarded-Protocol): only a trusted proxy in
    // front may say, as for X-Forwarded-Proto, which the gateway sets.
    if (!trust_forwarded_ && IsAlternateSchemeField(h.name)) continue;
    if (http::EqualsIgnoreCase(h.name, "traceparent")) continue;  // this hop's goes instead
    // A new trace starts with no state (W3C Trace Context 3.3: tracestate
    // is not read without a valid traceparent).
    if (!trace_continued_ && http::EqualsIgnoreCase(h.name, "tracestate")) continue;
    if (http::IsHopByHop(h.name, tokens) || http::EqualsIgnoreCase(h.name, "content-length") ||
        http::EqualsIgnoreCase(h.name, "expect") ||
        http::EqualsIgnoreCase(h.name, "x-request-id") ||
        http::EqualsIgnoreCase(h.name, "x-forwarded-proto") ||
        http::EqualsIgnoreCase(h.name, "x-real-ip")) {
      continue;  // the gateway sets them (below)
    }
    if (http::EqualsIgnoreCase(h.name, "x-forwarded-for")) {
      // As ClientFromForwardedFor reads the list: an empty field adds no
      // item, nor does a comma ending a field (`a,` is `a`: sent on as
      // `a, peer`, not `a,, peer`, whose empty item a next hop would count).
      // (A lone comma is one empty item, sent on as one.)
      std::string_view value = h.value;
      if (value.empty()) continue;
      if (value.back() == ',') {
        value.remove_suffix(1);
        while (!value.empty() && (value.back() == ' ' || value.back() == '\t')) {
          value.remove_suffix(1);
        }
      }
      if (has_forwarded_for) forwarded_for.append(", ");
      forwarded_for.append(value);
      has_forwarded_for = true;
      continue;
    }
    if (h.name.size() == 3 && http::EqualsIgnoreCase(h.name, "via")) {
      if (!via.empty()) via.append(", ");
      via.append(h.value);
      continue;
    }
    if (http::EqualsIgnoreCase(h.name, "host")) {
      has_host = true;
      if (head.authority_from_target) {
        emit("host", head.authority);
        continue;
      }
    }
    emit(h.name, h.value);
  }
  if (!has_host) {
    emit("host", head.authority.empty() ? std::string_view("localhost") : head.authority);
  }
  if (has_forwarded_for) forwarded_for.append(", ");
  forwarded_for.append(*peer_ip_);
  emit("x-forwarded-for", forwarded_for);
  // An HTTP-to-HTTP gateway MUST send Via in the requests it forwards (RFC
  // 9110 7.6.3): the protocol the client spoke and the gateway's pseudonym.
  if (!via.empty()) via.append(", ");
  via.append(head.http2 ? "2 sluice" : head.http10 ? "1.0 sluice" : "1.1 sluice");
  emit("via", via);
  // The client address policies use (trusted_proxy_hops), as Kong sends it:
  // a client's own X-Real-IP never reaches the upstream.
  emit("x-real-ip", client_ip_);
  emit("x-forwarded-proto", https_ ? "https" : "http");
  emit("x-request-id", request_id_);
  emit("traceparent", std::string_view(traceparent_, sizeof(traceparent_)));
}

bool ParseTraceparent(std::string_view v, std::string_view* trace, std::string_view* parent_id,
                      bool* sampled) {
  // version "00": 00-<32 hex trace id>-<16 hex parent id>-<2 hex flags>;
  // a later version may append fields after a '-' (W3C Trace Context 4.3).
  auto hex = [](std::string_view v) {
    for (char c : v) {
      if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) return false;
    }
    return true;
  };
  std::string_view version = v.substr(0, 2);
  bool ok = v.size() >= 55 && hex(version) && version != "ff" && v[2] == '-' && v[35] == '-' &&
            v[52] == '-' && (version != "00" ? v.size() == 55 || v[55] == '-' : v.size() == 55);
  if (!ok) return false;
  std::string_view parent = v.substr(36, 16);
  if (!hex(v.substr(3, 32)) || !hex(parent) || !hex(v.substr(53, 2)) ||
      v.substr(3, 32) == "00000000000000000000000000000000" || parent == "0000000000000000") {
    return false;
  }
  *trace = v.substr(3, 32);
  *parent_id = parent;
  // Only the sampled bit (W3C Trace Context 3.2.2.5: the others are
  // reserved, and vendors must send them as zero).
  const char low = v[54];
  *sampled = ((low >= 'a' ? low - 'a' + 10 : low - '0') & 1) != 0;
  return true;
}

void ProxyStream::SetUpTraceContext(const http::HeaderField* traceparent) {
  bool sampled = false;  // made here: not sampled (the gateway records no spans)
  std::string_view trace, parent_id;
  const bool have_trace = traceparent != nullptr &&
                          ParseTraceparent(traceparent->value, &trace, &parent_id, &sampled);
  trace_continued_ = have_trace;
  // In a fixed buffer, hex by hand: this runs for every request (and an
  // HTTP/2 stream would otherwise allocate for it).
  std::memcpy(traceparent_, "00-", 3);
  traceparent_[35] = '-';
  if (have_trace) {
    // The client's parent id goes on: the gateway records no span, and a
    // parent id of its own would be one no tracer has, leaving the
    // upstream's spans without their parent (Envoy and nginx without a
    // tracer pass traceparent on as it came).
    std::memcpy(traceparent_ + 3, trace.data(), 32);
    std::memcpy(traceparent_ + 36, parent_id.data(), 16);
  } else {
    Worker::WriteHex64(traceparent_ + 3, worker_.picker().Random());
    Worker::WriteHex64(traceparent_ + 19, worker_.picker().Random() | 1);
    Worker::WriteHex64(traceparent_ + 36, worker_.picker().Random() | 1);
  }
  traceparent_[52] = '-';
  traceparent_[53] = '0';
  traceparent_[54] = sampled ? '1' : '0';
}

ProxyStream::ChainResult ProxyStream::RunRequestFilters(const config::FilterChain& chain, const RequestHead& head) {
  path_.assign(head.target);
  path_set_ = false;
  info_.request_id = request_id_;
  info_.client_ip = client_ip_;
  info_.scheme = https_ ? "https" : "http";
  info_.method = method_;
  info_.path = path_;
  info_.route_name = route_->name;
  info_.route_table = route_table_;
  info_.virtual_host = route_->virtual_host;
  info_.background = head.background;
  info_.upgrade = route_->websocket && head.upgrade &&
                  (head.extended_connect || IsWebSocketUpgrade(*head.headers));
  info_.request_content_length = head.body == RequestHead::Body::kLength
                                     ? static_cast<int64_t>(head.content_length)
                                     : head.body == RequestHead::Body::kNone ? 0 : -1;
  if (const net::TlsInfo* tls = transport_->tls_info()) {
    info_.tls_version = tls->version;
    info_.tls_cipher = tls->cipher;
    info_.tls_sni = tls->sni;
    info_.tls_peer_subject = tls->peer_subject;
  }
  filtered_headers_.Clear();
  ForEachForwardedHeader(head, [this](std::string_view name, std::string_view value) {
    filtered_headers_.Add(name, value);
  });
  info_.client_authorization = filtered_headers_.Get("authorization") != nullptr;
  // A body that may end in trailers: keep the names of the head's fields
  // (policies remove some, such as key-auth's key), which no trailer may
  // repeat (OnRequestEnd).
  head_field_names_.clear();
  if (head.body == RequestHead::Body::kStream) {
    for (const http::HeaderMap::Field& f : filtered_headers_.fields()) {
      head_field_names_.emplace_back(f.name);
    }
  }
  chain_ = &chain;
  filters_.reserve(chain.size());
  for (const auto& factory : chain) {
    filters_.push_back(factory->CreateFilter());
    uint64_t limit = factory->request_body_limit();
    if (limit > 0 && (body_buffer_limit_ == 0 || limit < body_buffer_limit_)) {
      body_buffer_limit_ = limit;
    }
    limit = factory->response_body_limit();
    if (limit > 0 && (response_hold_limit_ == 0 || limit < response_hold_limit_)) {
      response_hold_limit_ = limit;
    }
    observes_upstream_ = observes_upstream_ || factory->observes_upstream();
    edits_every_answer_ = edits_every_answer_ || factory->edits_every_answer();
    fields_first_ = fields_first_ || factory->adds_response_fields_first();
  }
  hook_head_ = &head;
  ChainResult result = RunFiltersFrom(0);
  hook_head_ = nullptr;
  return result;
}

ProxyStream::ChainResult ProxyStream::RunFiltersFrom(size_t first) {
  for (size_t i = first; i < filters_.size(); ++i) {
    filters_entered_ = i + 1;
    current_filter_ = i;
    in_hook_ = true;
    continued_in_hook_ = false;
    http::FilterStatus status = filters_[i]->OnRequestHeaders(filtered_headers_, *this);
    in_hook_ = false;
    if (!active_ || response_started_) return ChainResult::kAnswered;
    if (status == http::FilterStatus::kStopIteration && !continued_in_hook_) {
      paused_ = true;
      return ChainResult::kPaused;
    }
    if (status == http::FilterStatus::kStopLocalReply) {
      // A filter that stops must have answered; answer for it rather than hang.
      SendLocalResponse(500, "a policy stopped the request without answering");
      return ChainResult::kAnswered;
    }
  }
  // A policy may have rendered Host from the request's own values (an
  // absent field gives ""): the upstream gets one valid host, as a client
  // would have had to send it.
  const std::string* host = nullptr;
  int hosts = 0;
  for (const http::HeaderMap::Field& f : filtered_headers_.fields()) {
    if (http::EqualsIgnoreCase(f.name, "host")) {
      host = &f.value;
      ++hosts;
    }
  }
  if (hosts != 1 || host->empty() || !http::IsValidHostValue(*host)) {
    SendLocalResponse(400, "a policy made the Host field from this request invalid (empty, "
                           "repeated, or with characters a host cannot have)");
    return ChainResult::kAnswered;
  }
  return ChainResult::kDone;
}

void ProxyStream::ContinueRequest() {
  if (in_hook_) {
    continued_in_hook_ = true;  // finished before it returned
    return;
  }
  if (!active_ || !paused_ || response_started_) return;
  paused_ = false;
  resume_token_.reset();  // handles of this pause are spent
  hook_head_ = &deferred().saved_head;
  pause_limit_ = absl::ZeroDuration();  // the next pause sets its own
  ChainResult result = RunFiltersFrom(filters_entered_);
  hook_head_ = nullptr;
  // The pause is over: the route timeout, the upstream's time to answer,
  // starts anew (a cache waiter that waited 2 s of a 3 s timeout for an
  // uncacheable answer got 504 a second after going upstream), and a later
  // policy's pause is bounded as the first one was (a cache wait after a
  // basic-auth check was cut by the timer of the check). A gRPC call's is
  // a deadline on the whole call.
  if (result == ChainResult::kAnswered) return;
  if (!grpc_) route_timer_.Clear();
  if (result == ChainResult::kPaused) {
    StartPauseTimer();
    return;
  }
  FiltersDone(deferred().saved_head);
  if (!active_) return;
  sink_->SetRequestReadEnabled(true);
  if (buffering_body_) {
    // What came during the pause is the start of the held body.
    if (!TakeHeldBytes(deferred().paused_body.capacity())) return;
    if (deferred().paused_body.size() > body_buffer_limit_) {
      RefuseHeldBody();
    } else if (paused_end_) {
      FinishBodyBuffering();
    }
    return;
  }
  // The body that came while the policy worked, then its end.
  if (!deferred().paused_body.empty()) {
    std::string body = std::move(deferred().paused_body);
    deferred().paused_body.clear();
    replaying_ = true;
    OnRequestData(body);
    replaying_ = false;
    if (!active_) return;
  }
  if (paused_end_) {
    paused_end_ = false;
    std::vector<http::HeaderField> trailers;
    for (const http::HeaderMap::Field& f : deferred().paused_trailers.fields()) {
      trailers.push_back({f.name, f.value});
    }
    OnRequestEnd(trailers);
  }
}

namespace {

// A pause's handle: posts through the worker's gate, and runs the work
// only while the pause's token lives (the stream drops it when the request
// ends or resumes).
class StreamResumeHandle : public http::ResumeHandle {
 public:
  StreamResumeHandle(std::shared_ptr<PostGate> gate, std::weak_ptr<const char> token)
      : gate_(std::move(gate)), token_(std::move(token)) {}
  void Post(std::function<void()> fn) override {
    gate_->Post([token = token_, fn = std::move(fn)] {
      if (token.lock()) fn();
    });
  }
  bool Alive() const override { return !token_.expired(); }

 private:
  std::shared_ptr<PostGate> gate_;
  std::weak_ptr<const char> token_;
};

}  // namespace

std::shared_ptr<http::ResumeHandle> ProxyStream::MakeResumeHandle() {
  if (resume_token_ == nullptr) resume_token_ = std::make_shared<const char>(0);
  return std::make_shared<StreamResumeHandle>(worker_.post_gate(), resume_token_);
}

const auth::ConsumerIndex& ProxyStream::consumers() const {
  return snapshot_ != nullptr && snapshot_->consumers != nullptr ? *snapshot_->consumers
                                                                 : auth::ConsumerIndex::Empty();
}

void ProxyStream::SetConsumer(const auth::Consumer* consumer, bool anonymous) {
  if (!anonymous) info_.authenticated = true;
  if (consumer == nullptr) return;
  info_.consumer = consumer;
  info_.anonymous_consumer = anonymous;
  filtered_headers_.Set("x-consumer-name", consumer->name);
  if (consumer->groups_header.empty()) {
    filtered_headers_.Remove("x-consumer-groups");
  } else {
    filtered_headers_.Set("x-consumer-groups", consumer->groups_header);
  }
  if (anonymous) {
    filtered_headers_.Set("x-anonymous-consumer", "true");
  } else {
    filtered_headers_.Remove("x-anonymous-consumer");
  }
}

void ProxyStream::SetPath(std::string path_and_query) {
  path_ = std::move(path_and_query);
  path_set_ = true;
  info_.path = path_;
}

bool ProxyStream::BodyWouldBeEdited(int status) {
  if (response_hold_limit_ == 0) return false;  // no policy holds a response body
  http::HeaderMap fields;
  bool built = false;
  for (size_t i = 0; i < filters_entered_; ++i) {
    if (!(*chain_)[i]->edits_response_body()) continue;
    if (!built) {
      for (const http::HeaderField& f : response_fields_) fields.Add(f.name, f.value);
      built = true;
    }
    if (filters_[i]->WantsResponseBody(status, fields)) return true;
  }
  return false;
}

void ProxyStream::RunResponseFilters(int status, http::HeaderMap& headers) {
  // The filters the request reached, and those that edit every answer even
  // when an earlier policy answered before them.
  const size_t end = edits_every_answer_ ? filters_.size() : filters_entered_;
  if (fields_first_) {
    for (size_t i = 0; i < filters_entered_; ++i) {
      if ((*chain_)[i]->adds_response_fields_first()) {
        filters_[i]->OnResponseHeaders(status, headers, *this);
      }
    }
  }
  for (size_t i = end; i > 0; --i) {
    if (i > filters_entered_ && !(*chain_)[i - 1]->edits_every_answer()) continue;
    if (fields_first_ && (*chain_)[i - 1]->adds_response_fields_first()) continue;
    filters_[i - 1]->OnResponseHeaders(status, headers, *this);
  }
}

bool ProxyStream::RunUpstreamHeadersFilters(int status) {
  http::HeaderMap fields;
  fields.Reserve(response_fields_.size());
  for (const http::HeaderField& f : response_fields_) fields.Add(f.name, f.value);
  for (size_t i = filters_entered_; i > 0; --i) {
    if (!(*chain_)[i - 1]->observes_upstream()) continue;
    current_filter_ = i - 1;
    http::FilterStatus result = filters_[i - 1]->OnUpstreamHeaders(status, fields, *this);
    if (!active_ || response_started_) return true;
    if (result == http::FilterStatus::kStopLocalReply) {
      SendLocalResponse(500, "a policy stopped the response without answering");
      return true;
    }
  }
  return false;
}

bool ProxyStream::RunUpstreamErrorFilters(int status) {
  in_upstream_error_ = true;
  for (size_t i = filters_entered_; i > 0; --i) {
    if (!(*chain_)[i - 1]->observes_upstream()) continue;
    current_filter_ = i - 1;
    http::FilterStatus result = filters_[i - 1]->OnUpstreamError(status, *this);
    if (!active_ || response_started_) return true;
    if (result == http::FilterStatus::kStopLocalReply) break;  // answered nothing: ours goes
  }
  in_upstream_error_ = false;
  current_filter_ = filters_.size();  // the gateway's own answer, not a policy's
  return false;
}

void ProxyStream::RunResponseDataFilters(std::string_view data) {
  for (size_t i = filters_entered_; i > 0; --i) {
    if ((*chain_)[i - 1]->observes_upstream()) filters_[i - 1]->OnResponseData(data, *this);
  }
}

void ProxyStream::RunResponseEndFilters() {
  for (size_t i = filters_entered_; i > 0; --i) {
    if ((*chain_)[i - 1]->observes_upstream()) filters_[i - 1]->OnResponseEnd(*this);
  }
}

void ProxyStream::StartBackgroundRefresh() {
  // Only from a request-head hook, for a request without a body, once.
  if (hook_head_ == nullptr || info_.background || has_body_ || background_request_ != nullptr) {
    return;
  }
  const RequestHead& head = *hook_head_;
  auto request = std::make_unique<BackgroundRequest>();
  request->listener = *listener_;
  request->peer_ip.assign(*peer_ip_);
  request->secure = transport_->secure();
  request->method.assign(head.method);
  request->target.assign(head.target);
  request->authority.assign(head.authority);
  request->authority_from_target = head.authority_from_target;
  request->http2 = head.http2;
  for (const http::HeaderField& h : *head.headers) request->fields.Add(h.name, h.value);
  background_request_ = std::move(request);
}

void ProxyStream::NotePolicyAnswer() {
  if (chain_ != nullptr && current_filter_ < chain_->size()) {
    response_flag_ = std::string("policy:").append(
        answering_policy_.empty() ? (*chain_)[current_filter_]->policy_name() : answering_policy_);
  }
  answering_policy_ = {};
}

void ProxyStream::SendLocalReply(int status, std::string_view message,
                                 const http::HeaderMap& headers) {
  NotePolicyAnswer();
  reply_headers_ = headers;  // the filter's map may not outlive the call
  std::vector<http::HeaderField> extra;
  extra.reserve(reply_headers_.size());
  for (const http::HeaderMap::Field& f : reply_headers_.fields()) extra.push_back({f.name, f.value});
  SendLocalResponse(status, message, extra.data(), extra.size(), {}, "application/json", false);
}

void ProxyStream::SendResponse(int status, const http::HeaderMap& headers, std::string_view body) {
  NotePolicyAnswer();
  // The filter's map lives through the call, and the response is encoded
  // (copied out) before SendLocalResponse returns: views suffice.
  // No content-type unless the filter gave one: a cache serves the stored
  // fields as they were (RFC 9111 4), and none lets the client decide
  // (RFC 9110 8.3).
  // The policies before the answering one in the chain see its body as they
  // see an upstream's: a cache hit is edited per answer (a
  // response-transformer's %CONSUMER% is this caller's), as its miss was.
  const http::HeaderMap* out_headers = &headers;
  std::string edited_body;
  http::HeaderMap edited_headers;
  if (chain_ != nullptr && !body.empty() && status != 204 && status != 304) {
    for (size_t i = std::min(current_filter_, filters_.size()); i > 0; --i) {
      const uint64_t limit = (*chain_)[i - 1]->response_body_limit();
      if (limit == 0 || body.size() > limit) continue;
      if (!filters_[i - 1]->WantsResponseBody(status, *out_headers)) continue;
      if (out_headers == &headers) {
        edited_headers = headers;
        out_headers = &edited_headers;
        edited_body.assign(body.data(), body.size());
      }
      filters_[i - 1]->OnResponseBody(status, edited_headers, edited_body, *this);
      body = edited_body;
    }
  }
  std::string_view content_type;
  std::vector<http::HeaderField>& extra = reply_views_;
  extra.clear();
  extra.reserve(out_headers->size());
  for (const http::HeaderMap::Field& f : out_headers->fields()) {
    if (http::EqualsIgnoreCase(f.name, "content-type")) {
      content_type = f.value;
    } else {
      extra.push_back({f.name, f.value});
    }
  }
  SendLocalResponse(status, "", extra.data(), extra.size(), body, content_type, false);
}

void ProxyStream::AddDateUnlessGiven(const http::HeaderField* extra, size_t extra_count) {
  for (size_t i = 0; i < extra_count; ++i) {
    if (http::EqualsIgnoreCase(extra[i].name, "date")) return;
  }
  response_fields_.push_back({"date", worker_.HttpDate()});
}

void ProxyStream::EncodeResponseHead(ResponseHead& head, std::vector<http::HeaderField>& fields) {
  if (filters_entered_ == 0 && !edits_every_answer_) {
    head.headers = &fields;
    sink_->EncodeHeaders(head);
    return;
  }
  // The route's policies see every response head, the gateway's own too,
  // and may add or rewrite any field.
  head.syntax_checked = 0;
  http::HeaderMap map;
  map.Reserve(fields.size() + 2);
  for (const http::HeaderField& f : fields) map.Add(f.name, f.value);
  RunResponseFilters(head.status, map);
  // A policy may remove Date, but a proxy with a clock sends one (RFC 9110
  // 6.6.1): it comes back.
  if (map.Get("date") == nullptr) map.Add("date", worker_.HttpDate());
  std::vector<http::HeaderField> filtered;
  filtered.reserve(map.size());
  for (const http::HeaderMap::Field& f : map.fields()) filtered.push_back({f.name, f.value});
  head.headers = &filtered;
  sink_->EncodeHeaders(head);
}

bool ProxyStream::ConnectUpstream() {
  grpc_reset_status_ = -1;  // a new try: an earlier try's reset is not its answer
  pending_outcome_ = 0;
  outcome_reported_ = false;
  const upstream::ClusterInfo& cluster = *cluster_;
  // A retry avoids every endpoint the request tried while another one is
  // usable (with two down of three, A then B then A failed every retry),
  // and once all were tried, the most recent ones (tried_ is ordered by
  // each endpoint's last try: A, B, then A and B by turns, not B again).
  int index = std::exchange(same_endpoint_, -1);
  if (index >= static_cast<int>(cluster.endpoints.size())) index = -1;
  if (index < 0 && attempts_ > 0 && endpoint_index_ >= 0) {
    auto it = std::find(tried_.begin(), tried_.end(), endpoint_index_);
    if (it != tried_.end()) tried_.erase(it);
    tried_.push_back(endpoint_index_);
  }
  if (index < 0) index = worker_.picker().Pick(cluster, hash_, &tried_);
  if (index < 0) {
    cluster.stats.no_healthy_endpoint->Inc();
    response_flag_ = "no_healthy_endpoint";
    SendLocalResponse(503, cluster.endpoints.empty() && !cluster.dns_problems.empty()
                               ? absl::StrCat("no endpoint in cluster ", cluster.name, " (",
                                              absl::StrJoin(cluster.dns_problems, "; "), ")")
                               : "no healthy endpoint in cluster " + cluster.name);
    return false;
  }
  const upstream::EndpointInfo& endpoint = cluster.endpoints[index];
  // A WebSocket handshake to an AUTO endpoint goes over HTTP/1.1 (the pool
  // offers only http/1.1 by ALPN) even where the endpoint speaks h2: its
  // Upgrade has no meaning in an HTTP/2 request.
  bool h2 = cluster.protocol == upstream::UpstreamProtocol::kHttp2 ||
            (cluster.protocol == upstream::UpstreamProtocol::kAuto && !upgrade_ &&
             !worker_.h2_pool().SpeaksHttp1(endpoint.pool_key));
  absl::Status acquire_status;
  bool connecting = false;
  // With max_pending_requests full, only a connection already open will
  // do: none is opened for a request that would be refused.
  const bool may_wait = cluster.state->pending_requests.load(std::memory_order_relaxed) <
                        cluster.breakers.max_pending_requests;
  if (h2) {
    auto stream = worker_.h2_pool().Acquire(cluster, endpoint, this, may_wait);
    if (stream.ok()) {
      connecting = (*stream)->connecting();
      upstream2_ = std::move(*stream);
    } else {
      acquire_status = stream.status();
    }
  } else {
    auto connection = worker_.pool().Acquire(cluster, endpoint, fresh_connection_, may_wait);
    fresh_connection_ = false;
    if (connection.ok()) {
      connecting = (*connection)->connection().connecting();
      upstream_ = std::move(*connection);
    } else {
      acquire_status = connection.status();
    }
  }
  if (!acquire_status.ok()) {
    if (absl::IsFailedPrecondition(acquire_status)) {
      RefusePending();
    } else if (absl::IsResourceExhausted(acquire_status)) {
      cluster.stats.breaker_overflow_connections->Inc();
      response_flag_ = "breaker_open";
      SendLocalResponse(503, absl::StrCat("circuit breaker max_connections is open for cluster ",
                                          cluster.name));
    } else {
      // A connect that failed at once (ENETUNREACH, EHOSTUNREACH: a pod
      // network gone) is this endpoint's try, failed as a refused connect
      // fails later: counted toward its ejection, retried on another
      // endpoint, and worded the same (the reason, not the address).
      absl::string_view reason = acquire_status.message();
      if (const size_t colon = reason.rfind(": "); colon != absl::string_view::npos) {
        reason.remove_prefix(colon + 2);
      }
      endpoint_index_ = index;
      ++attempts_;
      FailUpstream(/*connect_failed=*/true, /*timed_out=*/false,
                   absl::StrCat("connect failed: ", reason), /*lost=*/false);
    }
    return false;
  }
  if (connecting) {
    if (cluster.state->pending_requests.load(std::memory_order_relaxed) >=
        cluster.breakers.max_pending_requests) {
      if (upstream_) worker_.pool().Discard(std::move(upstream_));
      upstream2_.reset();
      RefusePending();
      return false;
    }
    cluster.state->pending_requests.fetch_add(1, std::memory_order_relaxed);
    pending_ = true;
  } else {
    ResumeHeldForAlpn();  // a connection already up: the client may be read again
  }
  if (upstream_) upstream_->Attach(this, head_request_, upgrade_);
  endpoint_index_ = index;
  endpoint_key_ = endpoint.pool_key;
  endpoint_active_ = worker_.picker().ActiveCounter(endpoint_key_);
  ++*endpoint_active_;
  endpoint.state->active_requests.fetch_add(1, std::memory_order_relaxed);
  ++attempts_;
  upstream_sent_ = absl::Now();
  first_byte_ = upstream_end_ = absl::InfinitePast();
  cluster.stats.upstream_requests->Inc();
  // A try's time starts once the whole request is in (OnRequestEnd): a
  // slow upload is not the endpoint's slowness.
  if (route_->retry.per_try_timeout > absl::ZeroDuration() && request_complete_) {
    per_try_timer_.Enable(route_->retry.per_try_timeout);
  }
  if (upstream_) {
    SendRequestHttp1();
  } else {
    SendRequestHttp2();  // may be refused at once (and try again)
  }
  if (active_) DropReplayPastLimit();
  return true;
}

void ProxyStream::RefusePending() {
  cluster_->stats.breaker_overflow_pending->Inc();
  response_flag_ = "breaker_open";
  SendLocalResponse(503, absl::StrCat("circuit breaker max_pending_requests is open for cluster ",
                                      cluster_->name));
}

void ProxyStream::SendRequestHttp1() {
  net::Connection& up = upstream_->connection();
  if (replay_.empty()) {
    up.Write(upstream_head_);
  } else if (!request_chunked_) {
    up.Write2(upstream_head_, replay_);
  } else {
    // What was received so far, as one chunk.
    std::string chunk_header;
    http::AppendChunkHeader(&chunk_header, replay_.size());
    up.Write2(upstream_head_, chunk_header);
    up.Write2(replay_, "\r\n");
  }
  // Sent again (a retry or a resend): the whole body so far went above.
  if (request_complete_ && request_chunked_ && (attempts_ > 1 || resends_ > 0)) SendRequestEnd();
}

void ProxyStream::SendRequestHttp2() {
  upstream::Http2UpstreamStream* stream = upstream2_.get();
  if (upgrade_) {
    // The extended CONNECT waits for the upstream's SETTINGS, which must
    // allow it (RFC 8441 3): OnUpstreamSettled.
    if (!stream->connection_settled()) return;
    if (!stream->peer_allows_extended_connect()) {
      // The endpoint is well (it answers HTTP/2), the config asks what it
      // does not do: no try is reported against it, none is retried.
      ReleaseUpstream(false);
      upstream_failure_ = "does not take WebSocket over HTTP/2: its SETTINGS have no "
                          "SETTINGS_ENABLE_CONNECT_PROTOCOL (RFC 8441)";
      response_flag_ = "upstream_protocol_error";
      SendLocalResponse(502, absl::StrCat("upstream ", upstream_failure_));
      return;
    }
    stream->SendHeaders(h2_request_, false);  // the tunnel's end is the client's
    return;
  }
  bool end_with_head = request_complete_ && replay_.empty() && request_trailers_.empty();
  stream->SendHeaders(h2_request_, end_with_head);
  if (upstream2_.get() != stream || end_with_head) return;  // refused, or nothing more
  if (!replay_.empty()) stream->SendData(replay_, false);
  if (request_complete_) SendRequestEnd();
}

void ProxyStream::SendRequestEnd() {
  if (upstream2_) {
    if (upgrade_) return;  // the handshake's end is no END_STREAM: OnTunnelClientEnd
    if (request_trailers_.empty()) {
      upstream2_->SendData({}, true);
      return;
    }
    std::vector<http::HeaderField> fields;
    fields.reserve(request_trailers_.size());
    for (const http::HeaderMap::Field& f : request_trailers_.fields()) {
      fields.push_back({f.name, f.value});
    }
    upstream2_->SendTrailers(fields.data(), fields.size());
    return;
  }
  if (!upstream_ || !request_chunked_) return;
  std::string last = "0\r\n";
  for (const http::HeaderMap::Field& f : request_trailers_.fields()) {
    AppendHeader(&last, f.name, f.value);
  }
  last.append("\r\n");
  upstream_->connection().Write(last);
}

void ProxyStream::SetUpstreamReadEnabled(bool enabled) {
  if (upstream_) upstream_->connection().SetReadEnabled(enabled);
  if (upstream2_) upstream2_->SetReadEnabled(enabled);
}

uint64_t ProxyStream::HashKeyFor(const upstream::ClusterInfo& cluster, const RequestHead& head) {
  const config::v1::HashPolicy& policy = cluster.hash_policy;
  std::string_view key;
  std::string joined;  // a field sent on several lines
  if (policy.has_header()) {
    if (http::EqualsIgnoreCase(policy.header(), "host")) {
      // Host over HTTP/1, :authority over HTTP/2 (which has no host field:
      // every HTTP/2 request was placed at random), as route matching and
      // Envoy read it.
      key = head.authority;
    } else {
      // Every line of the field, joined as RFC 9110 5.3 combines them
      // (Cookie with "; ", RFC 9113 8.2.3): an HTTP/1 client's two Cookie
      // lines and an HTTP/2 client's crumbs place the request alike.
      const bool cookie = http::EqualsIgnoreCase(policy.header(), "cookie");
      int lines = 0;
      for (const http::HeaderField& h : *head.headers) {
        if (!http::EqualsIgnoreCase(h.name, policy.header())) continue;
        if (++lines == 1) {
          key = h.value;
          continue;
        }
        if (lines == 2) joined.assign(key);
        joined.append(cookie ? "; " : ", ").append(h.value);
        key = joined;
      }
    }
  } else if (policy.has_cookie()) {
    for (const http::HeaderField& h : *head.headers) {
      if (!http::EqualsIgnoreCase(h.name, "cookie")) continue;
      std::string_view rest = h.value;
      while (!rest.empty() && key.empty()) {
        size_t semi = rest.find(';');
        std::string_view pair = rest.substr(0, semi);
        while (!pair.empty() && pair.front() == ' ') pair.remove_prefix(1);
        size_t eq = pair.find('=');
        if (eq != std::string_view::npos && pair.substr(0, eq) == policy.cookie()) {
          key = pair.substr(eq + 1);
          while (!key.empty() && (key.back() == ' ' || key.back() == '\t')) key.remove_suffix(1);
          // RFC 6265 4.1.1: a value may be DQUOTE-wrapped; "u" is u.
          if (key.size() >= 2 && key.front() == '"' && key.back() == '"') {
            key = key.substr(1, key.size() - 2);
          }
        }
        if (semi == std::string_view::npos) break;
        rest.remove_prefix(semi + 1);
      }
    }
  } else if (policy.source_ip()) {
    key = client_ip_;
  } else if (policy.path()) {
    key = head.target.substr(0, head.target.find('?'));
  }
  // No key (the header or cookie is absent): spread such requests randomly.
  if (key.empty()) return worker_.picker().Random();
  return upstream::HashKey(key);
}

bool ProxyStream::MayRetry(RetryReason reason, int status) {
  const router::RouteEntry::Retry& retry = route_->retry;
  if (response_started_ || !replayable_ || retry.num_retries == 0 ||
      retries_ >= static_cast<int>(retry.num_retries)) {
    return false;
  }
  bool wanted = false;
  switch (reason) {
    case RetryReason::kConnectFailure: wanted = retry.on_connect_failure; break;
    case RetryReason::kReset: wanted = retry.on_reset && retries_any_method_; break;
    case RetryReason::kStatus: wanted = retry.RetriesStatus(status) && retries_any_method_; break;
    // Listing a gRPC status is the opt-in: every gRPC call is a POST.
    case RetryReason::kGrpcStatus: wanted = retry.RetriesGrpcStatus(status); break;
  }
  if (!wanted) return false;
  const upstream::ClusterInfo& cluster = *cluster_;
  if (retry.implicit) {
    // Only to another endpoint that can take it (the picker would go back to
    // the one that failed when no other is usable).
    const int64_t now = upstream::NowNanos();
    bool other = false;
    for (int i = 0; i < static_cast<int>(cluster.endpoints.size()) && !other; ++i) {
      other = i != endpoint_index_ && std::find(tried_.begin(), tried_.end(), i) == tried_.end() &&
              cluster.endpoints[i].state->usable(now);
    }
    if (!other) return false;
  }
  // A connect failure's retry is not held to the retry budget: the request
  // reached no upstream, so sending it to another adds no load to any (the
  // budget keeps retry storms off struggling upstreams). num_retries still
  // bounds it.
  if (reason != RetryReason::kConnectFailure && !counted_retry_ &&
      cluster.state->active_retries.load(std::memory_order_relaxed) >=
          cluster.breakers.RetryLimit(cluster.state->active_requests.load(std::memory_order_relaxed))) {
    cluster.stats.breaker_overflow_retries->Inc();
    return false;
  }
  return true;
}

void ProxyStream::ScheduleRetry(bool at_once) {
  grpc_reset_status_ = -1;  // the failed try is not answered
  ++retries_;
  cluster_->stats.retries->Inc();
  if (!counted_retry_ && !at_once) {
    cluster_->state->active_retries.fetch_add(1, std::memory_order_relaxed);
    counted_retry_ = true;
  }
  if (at_once) {
    // A connect failure: the request reached no upstream and the next try
    // goes to another endpoint, so waiting would only add latency.
    retry_timer_.Enable(absl::ZeroDuration());
    return;
  }
  // Full jitter: a random wait in [0, min(max, base * 2^(n-1))].
  const router::RouteEntry::Retry& retry = route_->retry;
  absl::Duration cap = retry.base_interval * (1 << std::min(retries_ - 1, 10));
  if (cap > retry.max_interval) cap = retry.max_interval;
  int64_t cap_us = std::max<int64_t>(1, absl::ToInt64Microseconds(cap));
  retry_timer_.Enable(absl::Microseconds(worker_.picker().Random() % (cap_us + 1)));
}

void ProxyStream::OnRetryTimer() {
  if (!active_) return;
  if (!replayable_) {
    response_flag_ = "upstream_reset";
    SendLocalResponse(502, "upstream failed and the request body was too large to send again");
    return;
  }
  ConnectUpstream();
}

void ProxyStream::OnPerTryTimeout() {
  if (!active_ || !HasUpstream()) return;
  // For the access log, also when a retry then succeeds.
  upstream_failure_ = "no answer within the per-try timeout";
  ReportTry(0);
  cluster_->stats.upstream_timeouts->Inc();
  if (upstream2_) upstream2_->TimedOut();
  ReleaseUpstream(false);
  if (MayRetry(RetryReason::kReset, 0)) {
    ScheduleRetry();
    return;
  }
  if (response_started_) {
    if (!EndGrpcResponse(504, "upstream did not answer within the per-try timeout",
                         "upstream_timeout")) {
      Fail();
    }
    return;
  }
  response_flag_ = "upstream_timeout";
  SendLocalResponse(504, "upstream did not answer within the per-try timeout");
}

bool ProxyStream::RunRequestDataFilters(std::string_view data, bool end_stream) {
  for (size_t i = 0; i < filters_entered_ && active_; ++i) {
    current_filter_ = i;
    if (filters_[i]->OnRequestData(data, end_stream, *this) == http::FilterStatus::kStopLocalReply) {
      if (active_ && !response_started_) {
        SendLocalResponse(500, "a policy stopped the request without answering");
      }
      return false;
    }
  }
  return active_;
}

void ProxyStream::RefuseStreamedBody() {
  // Not all of it went upstream: that request is cut; the client gets 413
  // if nothing was answered yet (and its connection or stream ends).
  ReleaseUpstream(false);
  response_flag_ = "request_too_large";
  SendLocalResponse(413, absl::StrCat("request body over the limit of ", body_limit_, " bytes"),
                    {}, {}, "application/json", /*close_connection=*/true);
}

void ProxyStream::RefuseBrokenRequest(int status, const std::string& message) {
  if (!active_) return;
  ReleaseUpstream(false);
  response_flag_ = "bad_request";
  SendLocalResponse(status, message, {}, {}, "application/json", /*close_connection=*/true);
}

void ProxyStream::OnRequestChunkDeclared(uint64_t size) {
  // A client that declares a chunk of exabytes and sends a few bytes held
  // its connection (and a hold's reservation) until the idle timeout, for
  // a 408; nginx answers 413 at the chunk-size line too.
  if (!active_ || replaying_ || tunnel_) return;
  if (buffering_body_) {
    if (size > body_buffer_limit_ - std::min<uint64_t>(deferred().paused_body.size(),
                                                        body_buffer_limit_)) {
      RefuseHeldBody();
    }
    return;
  }
  if (paused_) return;  // the bytes are counted on resuming
  if (body_limit_ > 0 && size > body_limit_ - std::min(request_body_bytes_, body_limit_)) {
    RefuseStreamedBody();
    return;
  }
  // A policy's own bound on a streamed body (request-size-limit), answered
  // as the policy answers once the bytes come.
  for (size_t i = 0; chain_ != nullptr && i < filters_entered_; ++i) {
    const uint64_t max = (*chain_)[i]->request_body_max();
    if (max > 0 && size > max - std::min(bytes_in_, max)) {
      ReleaseUpstream(false);
      response_flag_ = std::string("policy:").append((*chain_)[i]->policy_name());
      SendLocalResponse(413,
                        absl::StrCat("request body over this route's limit of ", max, " bytes"),
                        {}, {}, "application/json", /*close_connection=*/true);
      return;
    }
  }
}

void ProxyStream::OnRequestData(std::string_view chunk) {
  if (!active_ || chunk.empty()) return;
  if (!replaying_) bytes_in_ += chunk.size();
  if (extended_connect_ && !tunnel_) {
    // An HTTP/2 WebSocket's frames before its tunnel opened (a client
    // should wait for the 200): held for the upstream's 101, the client
    // not read past the bound.
    deferred().tunnel_early.append(chunk);
    if (deferred().tunnel_early.size() >= kPausedBodyBytes) sink_->SetRequestReadEnabled(false);
    return;
  }
  if (buffering_body_) {
    NoteActivity();
    if (!HoldBodyChunk(chunk)) return;
    if (deferred().paused_body.size() > body_buffer_limit_) RefuseHeldBody();
    return;
  }
  if (paused_) {
    // Held until the policy resumes the request; past the bound the
    // client is not read (back-pressure), not refused.
    deferred().paused_body.append(chunk);
    if (deferred().paused_body.size() >= kPausedBodyBytes) sink_->SetRequestReadEnabled(false);
    return;
  }
  NoteActivity();
  if (filters_entered_ > 0 && !tunnel_ && !RunRequestDataFilters(chunk, false)) return;
  if (body_limit_ > 0 && !tunnel_) {
    request_body_bytes_ += chunk.size();
    if (request_body_bytes_ > body_limit_) {
      RefuseStreamedBody();
      return;
    }
  }
  if (tunnel_) {
    if (upstream2_) {
      SendUpstream2Data(chunk);
      return;
    }
    if (!upstream_) return;
    net::Connection& up = upstream_->connection();
    up.Write(chunk);
    if (up.output_size() > sink_->buffer_limit()) sink_->SetRequestReadEnabled(false);
    return;
  }
  if (body_in_replay_) {
    // A held body, moved into replay_ by FinishBodyBuffering.
  } else if (replayable_) {
    // Keep what is sent, to send it again on a retry (bounded).
    // A body held whole for a policy is already in memory: it is kept for
    // a retry whatever max_replay_bytes says.
    if (replay_.size() + chunk.size() > route_->retry.max_replay_bytes && !replaying_held_) {
      if (pending_ || !HasUpstream() || (upstream2_ && !upstream2_->settled())) {
        // No connection is up yet (it is connecting, or a retry waits for
        // its turn): nothing was sent, so a connect failure may still send
        // the request elsewhere whatever its size. Keep this piece too, and
        // read no more until a connection is up (OnUpstreamConnected,
        // ConnectUpstream; HTTP/2: until its SETTINGS, OnUpstreamSettled);
        // an AUTO endpoint may yet choose HTTP/1.1. Before,
        // the body read meanwhile went past the buffer and a connect
        // failure was a 502, as chance had it.
        replay_.append(chunk);
        held_for_alpn_ = replay_past_limit_ = true;
        sink_->SetRequestReadEnabled(false);
      } else {
        replayable_ = false;
        std::string().swap(replay_);
      }
    } else {
      replay_.append(chunk);
    }
  }
  if (!replayable_) body_gone_ = true;  // forwarded below, or dropped between tries
  if (upstream2_) {
    SendUpstream2Data(chunk);
    return;
  }
  if (!upstream_) return;  // between tries: kept in the replay buffer
  net::Connection& up = upstream_->connection();
  if (request_chunked_) {
    std::string header;
    http::AppendChunkHeader(&header, chunk.size());
    up.Write2(header, chunk);
    up.Write("\r\n");
  } else {
    up.Write(chunk);
  }
  if (up.output_size() > sink_->buffer_limit()) sink_->SetRequestReadEnabled(false);
}

void ProxyStream::SendUpstream2Data(std::string_view chunk) {
  upstream2_->SendData(chunk, false);
  // Back-pressure: the client is read again once the stream's queue drains
  // (OnUpstreamWriteDrained). The send may have failed the stream.
  if (upstream2_ && upstream2_->queued_bytes() > sink_->buffer_limit()) {
    sink_->SetRequestReadEnabled(false);
  }
}

bool ProxyStream::RepeatsAHeadField(std::string_view name) const {
  // On a route with policies, a trailer may not carry a field of the head:
  // the policies read, checked, set or removed the head's (a jwt claim's
  // header, key-auth's key, a validated field), and an upstream that merges
  // trailers into the header section would find the client's copy there.
  // In any spelling CGI-style upstreams read as the same (x_tenant).
  if (filters_.empty()) return false;
  for (const http::HeaderMap::Field& f : filtered_headers_.fields()) {
    if (http::SameCgiName(f.name, name)) return true;
  }
  for (const std::string& seen : head_field_names_) {
    if (http::SameCgiName(seen, name)) return true;
  }
  // And what a policy sets for the upstream to trust, sent or not, or
  // removes.
  for (const auto& factory : *chain_) {
    for (const std::string& trusted : factory->trusted_request_fields()) {
      if (http::SameCgiName(trusted, name)) return true;  // in any spelling
    }
    for (const std::string& removed : factory->removed_request_fields()) {
      if (http::SameCgiName(removed, name)) return true;
    }
  }
  return false;
}

void ProxyStream::OnRequestEnd(const std::vector<http::HeaderField>& trailers) {
  if (!active_) return;
  if (paused_ || buffering_body_) {
    paused_end_ = true;
    for (const http::HeaderField& t : trailers) deferred().paused_trailers.Add(t.name, t.value);
    if (buffering_body_) FinishBodyBuffering();
    return;
  }
  if (filters_entered_ > 0 && !tunnel_ && !RunRequestDataFilters({}, true)) return;
  request_complete_ = true;
  if (!tunnel_ && !response_started_ && cluster_ != nullptr) {
    // The upload is done: the upstream's time to answer begins, for the
    // route and for the try (Envoy's), and the idle timer that watched the
    // body stops (the response head starts it again).
    idle_limit_ = absl::ZeroDuration();
    idle_timer_.Clear();
    if (!grpc_) StartRouteTimer();
    if (HasUpstream() && route_->retry.per_try_timeout > absl::ZeroDuration() &&
        !per_try_timer_.enabled()) {
      per_try_timer_.Enable(route_->retry.per_try_timeout);
    }
  }
  for (const http::HeaderField& t : trailers) {
    // A listener that refuses or drops '_' names in heads drops them in
    // trailers (which come after the request went upstream: not refused).
    if (ForwardableTrailer(t.name) && !RepeatsAHeadField(t.name) &&
        !(drop_underscored_trailers_ && t.name.find('_') != std::string_view::npos)) {
      request_trailers_.Add(t.name, t.value);
    }
  }
  SendRequestEnd();
}

void ProxyStream::OnUpstreamConnected() {
  if (pending_) {
    pending_ = false;
    cluster_->state->pending_requests.fetch_sub(1, std::memory_order_relaxed);
  }
  DropReplayPastLimit();
  ResumeHeldForAlpn();
}

void ProxyStream::OnUpstreamSettled() {
  if (!active_) return;
  if (upgrade_ && upstream2_ && !upstream2_->headers_sent()) {
    SendRequestHttp2();  // the extended CONNECT that waited for the SETTINGS
    if (!active_) return;
  }
  DropReplayPastLimit();
  ResumeHeldForAlpn();
}

void ProxyStream::DropReplayPastLimit() {
  // The connection has the body (HTTP/1: in its output; HTTP/2: the
  // stream's queue, once its SETTINGS came: until then a failure is a
  // connect failure, retried whatever the body's size). Before, it stayed
  // kept: a body past the limit was sent again when its connection had
  // been a new one, and not when a pooled one (max_replay_bytes 1000: 5000
  // bytes retried, or not, as the pool had it).
  if (!replay_past_limit_ || pending_ || !HasUpstream() || !replayable_) return;
  if (upstream2_ && !upstream2_->settled()) return;  // OnUpstreamSettled
  replay_past_limit_ = false;
  replayable_ = false;
  body_gone_ = true;
  std::string().swap(replay_);
}

void ProxyStream::ResumeHeldForAlpn() {
  if (!held_for_alpn_) return;
  held_for_alpn_ = false;
  if (active_) sink_->SetRequestReadEnabled(true);
}

void ProxyStream::OnUpstreamWriteDrained() {
  // The upstream took the bytes it was behind on: read the client again.
  if (active_) sink_->SetRequestReadEnabled(true);
}

void ProxyStream::OnDownstreamDrained() {
  NoteActivity();  // the client took what was queued for it
  if (active_ && HasUpstream() && upstream_paused_reading_) {
    upstream_paused_reading_ = false;
    SetUpstreamReadEnabled(true);
  }
}

void ProxyStream::OnUpstreamHead(const http::MessageHead& head) {
  per_try_timer_.Disable();
  // A server that times idle connections out with a 408 and a close
  // (Node's, Apache's) as the gateway reused the connection: the 408
  // answers no request the server read (RFC 9110 15.5.9: the client may
  // repeat it), so an idempotent request goes again on a new connection,
  // as on a pooled one found closed (OnUpstreamFailed). Before: a GET got
  // the 408 (probe: 3 in 100 at the race). Others get the 408.
  if (head.status == 408 && !head.keep_alive && upstream_ != nullptr && upstream_->reused() &&
      !response_started_ && IsIdempotent(method_) && (replayable_ || !body_gone_) &&
      resends_ < kMaxResends) {
    ++resends_;
    ReleaseUpstream(false);
    --attempts_;  // not the endpoint's fault, not a retry
    fresh_connection_ = true;
    ConnectUpstream();
    return;
  }
  if (upgrade_ && upstream2_ && head.status >= 200 && head.status < 300) {
    // An HTTP/2 upstream's 2xx to the extended CONNECT: the tunnel is open
    // (RFC 8441 5).
    first_byte_ = absl::Now();
    StartTunnel(head);
    return;
  }
  if (extended_connect_ && head.status >= 200 && head.status < 300) {
    // The HTTP/2 client would take it for the tunnel open (RFC 8441 5).
    OnUpstreamInvalidResponse(absl::StrCat("answered ", head.status,
                                           " to a WebSocket upgrade, not 101 Switching Protocols"));
    return;
  }
  if (extended_connect_ && head.status == 101 && !AcceptsWebSocketKey(head.headers)) {
    // The gateway is the handshake's client here, and RFC 6455 4.1 has a
    // client fail a 101 whose Accept does not answer its key: a server
    // that did not read the handshake as a WebSocket's (its HTTP/1.1
    // client reads the Accept itself; it passes on unchecked).
    OnUpstreamInvalidResponse(
        "answered 101 without the Sec-WebSocket-Accept that answers the handshake's key "
        "(RFC 6455 4.1)");
    return;
  }
  first_byte_ = absl::Now();
  if (head.status == 101) {
    StartTunnel(head);
    return;
  }
  if (head.status >= 500) {
    ReportTry(head.status);
  } else {
    pending_outcome_ = head.status;  // reported when the response ends whole
  }
  // A gRPC call's trailers-only answer (grpc-status in the head: nothing of
  // the response reached the client yet), as Envoy's retry_on: unavailable.
  const int head_grpc_status = grpc_ ? FindGrpcStatus(head.headers) : -1;
  if (head.status == 200 && head_grpc_status >= 0 &&
      MayRetry(RetryReason::kGrpcStatus, head_grpc_status)) {
    CreditPending();  // the endpoint answered
    ReleaseUpstream(false);  // an HTTP/1 upstream's connection is closed, not drained
    ScheduleRetry();
    return;
  }
  if (MayRetry(RetryReason::kStatus, head.status)) {
    CreditPending();  // a retried 4xx (retriable-4xx) is an answer, not a failure
    // Discard this response: the connection is closed, not drained.
    if (head.status >= 500) cluster_->stats.upstream_responses_5xx->Inc();
    ReleaseUpstream(false);
    ScheduleRetry();
    return;
  }
  status_ = head.status;
  if (head.status >= 500) cluster_->stats.upstream_responses_5xx->Inc();
  upstream_no_body_ = head_request_ || head.status == 204 || head.status == 304;
  if (grpc_) grpc_status_ = head_grpc_status;  // trailers-only

  ResponseHead out;
  out.status = head.status;
  out.reason = head.reason;
  const size_t from_head = CollectResponseFields(head);
  // A policy may answer instead (a cache's revalidated or stale entry).
  if (observes_upstream_ && !grpc_) {
    // A policy that answers from this head (a cache's revalidation) ends the
    // upstream's part with it: set before, since the answer is logged at once.
    upstream_end_ = first_byte_;
    if (RunUpstreamHeadersFilters(head.status)) {
      CreditPending();  // the upstream answered (a cache's revalidation: its 304)
      return;
    }
    upstream_end_ = absl::InfinitePast();
  }
  if (upstream_no_body_) {
    out.body = ResponseHead::Body::kNone;
    // A HEAD's (or a 304's) length is the GET's (RFC 9110 8.6); a 204 must
    // not declare one.
    if (head.has_content_length && head.status != 204 && !BodyWouldBeEdited(head.status)) {
      out.declared_length = static_cast<int64_t>(head.content_length);
    }
  } else if (head.framing == http::BodyFraming::kContentLength) {
    out.body = ResponseHead::Body::kLength;
    out.content_length = head.content_length;
  } else if (head.framing == http::BodyFraming::kNone) {
    out.body = ResponseHead::Body::kLength;
    out.content_length = 0;
    out.length_implied = true;
  } else {
    out.body = ResponseHead::Body::kStream;  // chunked or delimited by close
  }
  response_streamed_ = out.body == ResponseHead::Body::kStream;
  response_started_ = true;
  // Nothing is sent again once the response began.
  replayable_ = false;
  std::string().swap(replay_);
  // The route timeout covered the wait for this head; the body streams
  // under idle_timeout. A gRPC call is bounded as a whole (a deadline, like
  // the client's grpc-timeout).
  if (!grpc_) route_timer_.Clear();
  if (!upstream_no_body_) StartIdleTimer(route_->idle_timeout);
  if (response_hold_limit_ > 0 && !upstream_no_body_ && !grpc_) {
    // Only the filters that want this response hold it.
    http::HeaderMap fields;
    for (const http::HeaderField& f : response_fields_) fields.Add(f.name, f.value);
    response_hold_limit_ = 0;
    response_wanted_.assign(filters_entered_, false);
    for (size_t i = 0; i < filters_entered_; ++i) {
      uint64_t limit = (*chain_)[i]->response_body_limit();
      if (limit == 0 || !filters_[i]->WantsResponseBody(head.status, fields)) continue;
      response_wanted_[i] = true;
      if (response_hold_limit_ == 0 || limit < response_hold_limit_) response_hold_limit_ = limit;
    }
  }
  if (response_hold_limit_ > 0 && !upstream_no_body_ && !grpc_ &&
      (out.body != ResponseHead::Body::kLength || out.content_length <= response_hold_limit_)) {
    // Held for the policies' OnResponseBody: the head's views die with
    // this call, so it is copied.
    holding_response_ = true;
    deferred().held_head = out;
    deferred().held_reason.assign(out.reason);
    deferred().held_head.reason = deferred().held_reason;
    deferred().held_fields.Clear();
    for (const http::HeaderField& f : response_fields_) deferred().held_fields.Add(f.name, f.value);
    deferred().held_body.clear();
    // Its declared length at once (within the hold limit): grown by
    // doubling, the buffer took up to twice the body.
    if (out.body == ResponseHead::Body::kLength) deferred().held_body.reserve(out.content_length);
    return;
  }
  if (upstream_ != nullptr) out.syntax_checked = from_head;  // HTTP/1: parsed
  EncodeResponseHead(out, response_fields_);
}

void ProxyStream::ReleaseHeldResponse() {
  holding_response_ = false;
  std::vector<http::HeaderField> fields = deferred().held_fields.Views();
  EncodeResponseHead(deferred().held_head, fields);
  if (!active_) return;
  std::string body = std::move(deferred().held_body);
  deferred().held_body.clear();
  bytes_out_ += body.size();
  if (observes_upstream_) RunResponseDataFilters(body);
  sink_->EncodeData(body);
}

void ProxyStream::CompleteHeldResponse() {
  holding_response_ = false;
  // In response order (the chain's reverse): a policy that observes the
  // body (a cache) sees it as the policies after it in the chain left it,
  // before the ones before it edit it, so a cache stores the upstream's body
  // and a response-transformer edits each answer, a hit's too.
  std::string& body = deferred().held_body;
  for (size_t i = filters_entered_; i > 0; --i) {
    if (observes_upstream_ && (*chain_)[i - 1]->observes_upstream() && !body.empty()) {
      filters_[i - 1]->OnResponseData(body, *this);
    }
    if (i - 1 >= response_wanted_.size() || !response_wanted_[i - 1]) continue;
    filters_[i - 1]->OnResponseBody(deferred().held_head.status, deferred().held_fields, body,
                                    *this);
  }
  std::vector<http::HeaderField> fields;
  fields.reserve(deferred().held_fields.size());
  for (const http::HeaderMap::Field& f : deferred().held_fields.fields()) {
    // The length is the new body's; framing is the sink's.
    if (http::EqualsIgnoreCase(f.name, "content-length") ||
        http::EqualsIgnoreCase(f.name, "transfer-encoding")) {
      continue;
    }
    fields.push_back({f.name, f.value});
  }
  // With its new length, unless trailers came with it: then it goes on
  // streamed (chunked to an HTTP/1 client) so that they follow.
  if (response_trailers_.empty()) {
    deferred().held_head.body = ResponseHead::Body::kLength;
    deferred().held_head.content_length = deferred().held_body.size();
  } else {
    deferred().held_head.body = ResponseHead::Body::kStream;
  }
  EncodeResponseHead(deferred().held_head, fields);
  if (!active_) return;
  bytes_out_ += deferred().held_body.size();
  if (!deferred().held_body.empty()) sink_->EncodeData(deferred().held_body);
}

void ProxyStream::DropHeldResponse() {
  holding_response_ = false;
  deferred().held_body.clear();
  deferred().held_fields.Clear();
  response_started_ = false;  // nothing reached the client: it gets an answer
}

size_t ProxyStream::CollectResponseFields(const http::MessageHead& head) {
  if (head.connection_names) {
    response_hop_names_ = http::ConnectionTokens(head.headers);
  } else if (!response_hop_names_.empty()) {
    response_hop_names_ = http::ConnectionTokens();
  }
  const http::ConnectionTokens& tokens = response_hop_names_;
  response_fields_.clear();
  response_fields_.reserve(head.headers.size() + 2);
  bool has_date = false;
  for (const http::HeaderField& h : head.headers) {
    // The client gets this exchange's id, the one it sent or was given and
    // the one the access log has, never the upstream's (Envoy's
    // always_set_request_id_in_response).
    if (http::IsHopByHop(h.name, tokens) || http::EqualsIgnoreCase(h.name, "content-length") ||
        http::EqualsIgnoreCase(h.name, "x-request-id")) {
      continue;
    }
    // (A Date that `Connection` names is not forwarded: one is added.)
    has_date = has_date || (h.name.size() == 4 && http::EqualsIgnoreCase(h.name, "date"));
    response_fields_.push_back(h);
  }
  const size_t from_head = response_fields_.size();
  response_fields_.push_back({"x-request-id", request_id_});
  // RFC 9110 6.6.1: a recipient with a clock forwarding a response that
  // has no Date adds one.
  if (!has_date) response_fields_.push_back({"date", worker_.HttpDate()});
  return from_head;
}

void ProxyStream::StartTunnel(const http::MessageHead& head) {
  ReportTry(head.status);
  status_ = extended_connect_ ? 200 : 101;  // what the client got (HTTP/2: 200)
  tunnel_ = true;
  response_started_ = true;
  worker_.stats().websockets_active->Add(1);
  counted_tunnel_ = true;
  route_timer_.Clear();  // the route timeout covered the handshake only
  CollectResponseFields(head);
  if (upstream2_ && !extended_connect_) {
    // An HTTP/1.1 client's handshake, opened by an HTTP/2 upstream's 2xx:
    // the 101 answers the client's key (the key's storage now holds the
    // answer, which the head views).
    websocket_key_ = WebSocketAccept(websocket_key_);
    response_fields_.push_back({"sec-websocket-accept", websocket_key_});
  }
  ResponseHead out;
  out.status = 101;
  out.reason = "Switching Protocols";
  out.body = ResponseHead::Body::kTunnel;
  EncodeResponseHead(out, response_fields_);
  StartIdleTimer(route_->websocket_idle_timeout);
  if (!extended_connect_ || !active_ || !HasUpstream()) return;
  // An HTTP/2 WebSocket: what its client sent early goes first.
  if (deferred_ != nullptr && !deferred_->tunnel_early.empty()) {
    if (upstream2_) {
      upstream2_->SendData(deferred_->tunnel_early, false);
    } else {
      upstream_->connection().Write(deferred_->tunnel_early);
    }
    std::string().swap(deferred_->tunnel_early);
    sink_->SetRequestReadEnabled(true);
  }
  if (tunnel_client_ended_) EndTunnelUpstreamWrites();
}

void ProxyStream::EndTunnelUpstreamWrites() {
  if (upstream2_) {
    upstream2_->SendData({}, true);  // END_STREAM: RFC 8441's half-close
  } else if (upstream_) {
    upstream_->connection().ShutdownWriteAfterFlush();
  }
}

// RFC 8441 5: the HTTP/2 request has no Sec-WebSocket-Key (the nonce of
// HTTP/1.1's handshake, whose Accept answer nothing checks over HTTP/2), and
// an HTTP/1.1 server refuses a handshake without one: the upstream gets a
// fresh key, and the version (13) if the client left it out.
void ProxyStream::AppendHttp1WebSocketFields(const std::vector<http::HeaderField>& fields,
                                             std::string* out) {
  bool has_key = false;
  bool has_version = false;
  for (const http::HeaderField& f : fields) {
    if (http::EqualsIgnoreCase(f.name, "sec-websocket-key")) {
      has_key = true;
      websocket_key_.assign(f.value);
    }
    has_version = has_version || http::EqualsIgnoreCase(f.name, "sec-websocket-version");
  }
  if (!has_key) {
    char nonce[16];
    const uint64_t halves[2] = {worker_.picker().Random(), worker_.picker().Random()};
    std::memcpy(nonce, halves, sizeof(nonce));
    websocket_key_ = absl::Base64Escape(absl::string_view(nonce, sizeof(nonce)));
    AppendHeader(out, "sec-websocket-key", websocket_key_);
  }
  if (!has_version) AppendHeader(out, "sec-websocket-version", "13");
}

void ProxyStream::EndTunnel(std::string_view flag) {
  if (!active_ || !tunnel_) return;
  if (!flag.empty()) SetResponseFlagIfUnset(flag);
  ReleaseUpstream(false);
  sink_->EncodeEnd({});
  Finish();
}

bool ProxyStream::AcceptsWebSocketKey(const std::vector<http::HeaderField>& fields) const {
  const http::HeaderField* accept = http::FindHeader(fields, "sec-websocket-accept");
  // The parser took the optional white space off the value.
  return accept != nullptr && accept->value == WebSocketAccept(websocket_key_);
}

void ProxyStream::OnTunnelClientEnd() {
  if (!active_) return;
  if (!tunnel_) {
    tunnel_client_ended_ = true;  // after the 101 (StartTunnel)
    return;
  }
  // A half-close, as Envoy and HAProxy carry it: the upstream may still
  // answer (its Close frame), and its close ends the tunnel.
  EndTunnelUpstreamWrites();
}

// The idle deadline is read on the dispatcher's clock (simulated in unit
// tests), as its timer waits on it.
void ProxyStream::NoteActivity() {
  if (idle_limit_ > absl::ZeroDuration()) last_activity_ = worker_.dispatcher().Now();
}

void ProxyStream::StartIdleTimer(absl::Duration limit) {
  idle_limit_ = limit;
  if (limit <= absl::ZeroDuration()) {
    idle_timer_.Clear();  // an upload's bound does not carry into the response
    return;
  }
  last_activity_ = worker_.dispatcher().Now();
  idle_timer_.Set(limit, /*shared_duration=*/true);
}

void ProxyStream::OnIdleTimer() {
  if (!active_) return;
  absl::Duration idle = worker_.dispatcher().Now() - last_activity_;
  if (idle < idle_limit_) {
    idle_timer_.Set(idle_limit_ - idle);
    return;
  }
  if (!buffering_body_ && !request_complete_ && !response_started_ && !tunnel_ &&
      ((upstream_ != nullptr && upstream_->connection().output_size() > 0) ||
       (upstream2_ != nullptr && upstream2_->queued_bytes() > 0))) {
    // The body stalled because the upstream stopped taking it (the client
    // is not read while it is behind): the upstream's doing.
    cluster_->stats.upstream_timeouts->Inc();
    ReportTry(0);
    ReleaseUpstream(false);
    response_flag_ = "upstream_timeout";
    upstream_failure_ = absl::StrCat("the upstream took no request body bytes for ",
                                     absl::FormatDuration(idle_limit_));
    SendLocalResponse(504, upstream_failure_, {}, {}, "application/json",
                      /*close_connection=*/true);
    return;
  }
  if (buffering_body_ || (!request_complete_ && !response_started_ && !tunnel_)) {
    // The client's body stalled before any answer: its doing, not the
    // upstream's (Envoy's 408); the endpoint is not charged.
    response_flag_ = "request_timeout";
    if (HasUpstream()) ReleaseUpstream(false);
    const bool own = route_->action == router::RouteEntry::Action::kCluster;
    SendLocalResponse(408, absl::StrCat("the request body stalled for ",
                                        absl::FormatDuration(idle_limit_),
                                        !own || route_->idle_timeout > absl::ZeroDuration()
                                            ? " (the route's idle_timeout)"
                                        : idle_limit_ == route_->timeout
                                            ? " (the route's timeout; its idle_timeout is 0s)"
                                            : " (the default; the route's idle_timeout and "
                                              "timeout are 0s)"),
                      {}, {}, "application/json", /*close_connection=*/true);
    return;
  }
  SLUICE_LOG(kDebug, tunnel_ ? "WebSocket" : "response", " to ", *peer_ip_, " idle for ",
             absl::FormatDuration(idle_limit_), ": cut");
  if (tunnel_) {
    // Neither side sent a byte for websocket_idle_timeout: the gateway
    // ends it (not an upstream's cut, nor an upstream timeout: a quiet chat
    // client must not raise its cluster's error counts).
    if (response_flag_.empty()) response_flag_ = "idle_timeout";
    Fail();
    return;
  }
  // The client stopped taking the response (its window, its socket): its
  // doing. The endpoint answered, as far as it could; the log and the
  // cluster's timeouts do not blame it (they did: upstream_cut, "no bytes
  // moved", an upstream timeout counted, for a client that read nothing).
  const bool client_stalled = upstream_paused_reading_ || sink_->buffered_response_bytes() > 0;
  if (cluster_ && !client_stalled) cluster_->stats.upstream_timeouts->Inc();
  if (HasUpstream()) {
    if (client_stalled) {
      CreditPending();
    } else {
      // The upstream stalled its response: a failure of the endpoint's, as
      // a reset is (its head's status was held back for the response's end).
      ReportTry(0);
    }
  }
  ReleaseUpstream(false);
  if (holding_response_) {
    DropHeldResponse();
    response_flag_ = "upstream_timeout";
    SendLocalResponse(504, absl::StrCat("the upstream's response stalled for ",
                                        absl::FormatDuration(idle_limit_),
                                        " (the route's idle_timeout)"));
    return;
  }
  if (client_stalled) {
    if (response_flag_.empty()) response_flag_ = "client_stalled";
    Fail(/*unsent=*/true);
    return;
  }
  // The access log's reason for the cut (it was empty: upstream_cut alone
  // does not tell a stalled upstream from a reset one).
  upstream_failure_ = absl::StrCat("no bytes moved for ", absl::FormatDuration(idle_limit_),
                                   " (the route's idle_timeout)");
  if (!EndGrpcResponse(504, upstream_failure_, "upstream_timeout")) Fail();
}

void ProxyStream::OnUpstreamBody(std::string_view bytes) {
  NoteActivity();
  if (holding_response_) {
    deferred().held_body.append(bytes);
    if (deferred().held_body.size() > response_hold_limit_) ReleaseHeldResponse();  // too big: streams on
    return;
  }
  bytes_out_ += bytes.size();
  if (observes_upstream_ && !tunnel_) RunResponseDataFilters(bytes);
  sink_->EncodeData(bytes);
  if (!active_ || !HasUpstream()) return;
  if (sink_->buffered_response_bytes() > sink_->buffer_limit() && !upstream_paused_reading_) {
    upstream_paused_reading_ = true;
    SetUpstreamReadEnabled(false);
  }
}

void ProxyStream::OnUpstreamInformational(int status,
                                          const std::vector<http::HeaderField>& fields) {
  // Forwarded as RFC 9110 15.2 asks (HAProxy does; nginx drops them), a few
  // per exchange: an upstream cannot flood the client with them.
  constexpr int kMaxInformational = 8;
  if (!active_ || response_started_ || tunnel_ || ++informational_sent_ > kMaxInformational) {
    return;
  }
  const http::ConnectionTokens tokens(fields);  // what its own Connection names goes too
  std::vector<http::HeaderField> forwarded;
  forwarded.reserve(fields.size());
  for (const http::HeaderField& f : fields) {
    if (http::IsHopByHop(f.name, tokens) || http::EqualsIgnoreCase(f.name, "content-length")) {
      continue;
    }
    forwarded.push_back(f);
  }
  sink_->EncodeInformational(status, forwarded);
}

bool ProxyStream::RemovedFromResponses(std::string_view name) const {
  if (chain_ == nullptr) return false;
  for (const auto& factory : *chain_) {
    for (const std::string& removed : factory->removed_response_fields()) {
      if (http::EqualsIgnoreCase(removed, name)) return true;
    }
  }
  return false;
}

void ProxyStream::OnUpstreamTrailers(const std::vector<http::HeaderField>& trailers) {
  trailer_storage_.clear();
  for (const http::HeaderField& t : trailers) {
    // A trailer field the head's Connection named is this hop's too (RFC
    // 9110 7.6.1); before, the head's were dropped and the trailer's sent.
    if (!ForwardableTrailer(t.name) || RemovedFromResponses(t.name) ||
        (!response_hop_names_.empty() && response_hop_names_.Contains(t.name))) {
      continue;
    }
    trailer_storage_.append(t.name);
    trailer_storage_.push_back('\0');
    trailer_storage_.append(t.value);
    trailer_storage_.push_back('\0');
  }
}

void ProxyStream::OnUpstreamComplete() {
  // Trailers were kept as name\0value\0 pairs (the parser's views are gone).
  response_trailers_.clear();
  std::string_view rest = trailer_storage_;
  while (!rest.empty()) {
    size_t a = rest.find('\0');
    size_t b = rest.find('\0', a + 1);
    response_trailers_.push_back({rest.substr(0, a), rest.substr(a + 1, b - a - 1)});
    rest.remove_prefix(b + 1);
  }
  if (grpc_) {
    if (int code = FindGrpcStatus(response_trailers_); code >= 0) grpc_status_ = code;
  }
  upstream_end_ = absl::Now();
  CreditPending();
  bool reusable = upstream_ != nullptr && upstream_->reusable() && request_complete_;
  ReleaseUpstream(reusable);
  if (holding_response_) {
    CompleteHeldResponse();
    if (!active_) return;
  }
  if (observes_upstream_) RunResponseEndFilters();
  sink_->EncodeEnd(response_trailers_);
  Finish();
}

void ProxyStream::ReportTry(int status) {
  pending_outcome_ = 0;
  if (outcome_reported_ || endpoint_index_ < 0 || cluster_ == nullptr) return;
  outcome_reported_ = true;
  upstream::ReportOutcome(*cluster_, cluster_->endpoints[endpoint_index_], status);
}

void ProxyStream::OnUpstreamFailed(bool connect_failed, bool timed_out, const std::string& why) {
  FailUpstream(connect_failed, timed_out, why, /*lost=*/false);
}

void ProxyStream::OnUpstreamInvalidResponse(const std::string& why) {
  if (!active_) return;
  invalid_response_ = true;  // read by FailUpstream, for the access log's flag
  // Over HTTP/2 a protocol error is gRPC's INTERNAL, as when the upstream
  // resets the stream itself (read only if the failure is answered).
  grpc_reset_status_ = grpc_ && upstream2_ != nullptr ? 13 : -1;
  FailUpstream(false, false, why, /*lost=*/false);
}

void ProxyStream::OnUpstreamLost(const std::string& why) {
  FailUpstream(false, false, why, /*lost=*/true);
}

void ProxyStream::FailUpstream(bool connect_failed, bool timed_out, const std::string& why,
                               bool lost) {
  if (!active_) return;
  if (tunnel_) {
    // The upstream ended the WebSocket: what it sent reaches the client, then
    // the exchange ends (and the client connection with it). A reset is
    // logged and counted as one; a close is the tunnel's normal end.
    if (why != upstream::kTunnelClosed) {
      upstream_failure_ = why;
      if (response_flag_.empty()) response_flag_ = "upstream_reset";
      cluster_->stats.upstream_resets->Inc();
    }
    EndTunnel("");
    return;
  }
  upstream_failure_ = why;  // for the access log (the client may be told less)
  const bool invalid_response = std::exchange(invalid_response_, false);
  const char* const failed_flag = invalid_response ? "upstream_protocol_error" : "upstream_reset";
  const upstream::ClusterStats& stats = cluster_->stats;
  if (holding_response_) {
    // Cut while held for the policies: nothing reached the client yet.
    stats.upstream_resets->Inc();
    ReportTry(0);
    ReleaseUpstream(false);
    DropHeldResponse();
    response_flag_ = timed_out ? "upstream_timeout" : failed_flag;
    SendLocalResponse(timed_out ? 504 : 502,
                      absl::StrCat("upstream ", why, " (the response was cut short)"));
    return;
  }
  // A pooled HTTP/1 connection the upstream had already closed: resend on
  // another. Likewise an HTTP/2 connection the upstream closed or reset
  // under the request (an upstream killed while it had requests in flight),
  // once. (HTTP/2 says what it did not process: OnUpstreamRefused. A stream
  // it reset, or answered malformed, may have been acted on.) Idempotent
  // requests only (RFC 9112 9.3.1, RFC 9110 9.2.2): the upstream may have
  // read the request before it closed.
  const bool stale = (upstream_ && upstream_->reused() && !upstream_->response_started()) ||
                     (lost && !resent_after_loss_);
  if (!response_started_ && stale && IsIdempotent(method_) && (replayable_ || !body_gone_) &&
      resends_ < kMaxResends) {
    ++resends_;
    if (lost) resent_after_loss_ = true;
    ReleaseUpstream(false);
    --attempts_;  // not the endpoint's fault, not a retry
    // On a new connection: the other idle ones may be as stale (an upstream
    // that closed its idle connections at its keep-alive timeout closed them
    // all), and a new one fails only if the upstream really refuses it.
    fresh_connection_ = true;
    ConnectUpstream();
    return;
  }
  if (connect_failed) {
    stats.upstream_connect_failures->Inc();
  } else {
    stats.upstream_resets->Inc();
  }
  if (timed_out) stats.upstream_timeouts->Inc();
  ReportTry(0);
  ReleaseUpstream(false);
  if (MayRetry(connect_failed ? RetryReason::kConnectFailure : RetryReason::kReset, 0)) {
    ScheduleRetry(/*at_once=*/connect_failed);
    return;
  }
  if (response_started_) {
    // Cut off mid-response: the client must see the cut, not a made-up
    // status (gRPC: an error status in trailers).
    if (!EndGrpcResponse(timed_out ? 504 : 502, absl::StrCat("upstream ", why),
                         timed_out ? "upstream_timeout" : "upstream_cut")) {
      Fail();
    }
    return;
  }
  response_flag_ = timed_out          ? "upstream_timeout"
                   : connect_failed ? "upstream_connect_failure"
                                    : failed_flag;
  // A connect timeout is an endpoint out of reach, not the call's deadline:
  // UNAVAILABLE, which gRPC clients may retry (as a refused connect; Envoy
  // answers it 503). Before: DEADLINE_EXCEEDED with time left.
  if (grpc_ && connect_failed && timed_out) grpc_reset_status_ = 14;
  SendLocalResponse(timed_out ? 504 : 502, absl::StrCat("upstream ", why));
}

void ProxyStream::OnUpstreamRefused(const std::string& why) {
  if (!active_) return;
  // Not processed upstream: send it again (a GOAWAY's connection takes no
  // new stream; over HTTP/1.1 when an AUTO endpoint chose it), without
  // counting a try, while the whole request is still at hand.
  if (!response_started_ && resends_ < kMaxResends && (replayable_ || !body_gone_)) {
    ++resends_;
    // An AUTO endpoint that just chose HTTP/1.1 by ALPN takes the request
    // again over HTTP/1.1 (before, the picker chose again, and after a
    // first try that failed elsewhere it went back to the failed one).
    if (cluster_->protocol == upstream::UpstreamProtocol::kAuto && endpoint_index_ >= 0 &&
        worker_.h2_pool().SpeaksHttp1(endpoint_key_)) {
      same_endpoint_ = endpoint_index_;
    }
    ReleaseUpstream(false);
    --attempts_;
    ConnectUpstream();
    return;
  }
  OnUpstreamFailed(false, false, why);
}

void ProxyStream::OnUpstreamReset(uint32_t error_code, const std::string& why) {
  if (!active_) return;
  // Read only if the reset is answered: a retry (ConnectUpstream) clears it.
  grpc_reset_status_ = grpc_ ? GrpcStatusForReset(error_code) : -1;
  OnUpstreamFailed(false, false, why);
}

void ProxyStream::OnRouteTimeout() {
  if (!active_) return;
  if (buffering_body_) {
    response_flag_ = "request_timeout";
    SendLocalResponse(408,
                      GrpcTimeoutBinds()
                          ? "the request body did not arrive within the client's grpc-timeout"
                          : "the request body did not arrive within the route timeout",
                      {}, {}, "application/json", /*close_connection=*/true);
    return;
  }
  if (paused_) {
    response_flag_ = "policy_timeout";
    SendLocalResponse(504, "a policy did not finish within the route timeout", {}, {},
                      "application/json", /*close_connection=*/true);
    return;
  }
  if (cluster_) cluster_->stats.upstream_timeouts->Inc();
  // An endpoint still waiting for the client's body (a gRPC client stream
  // at its deadline) is not the one that was slow, nor one whose response
  // began (a stream that outlived the route timeout, as Envoy does not
  // count a timeout after the response headers): it answered.
  if (HasUpstream() && response_started_) {
    CreditPending();
  } else if (HasUpstream() && request_complete_) {
    ReportTry(0);
  }
  if (upstream2_) upstream2_->TimedOut();
  ReleaseUpstream(false);
  if (response_started_) {  // the upstream answered; the exchange ran out of time
    upstream_failure_ = GrpcTimeoutBinds()
                            ? "the call did not end within the client's grpc-timeout"
                            : "the response did not end within the route timeout";
    if (!EndGrpcResponse(504, upstream_failure_, "upstream_timeout")) Fail();
    return;
  }
  const char* why = GrpcTimeoutBinds()
                        ? "upstream did not answer within the client's grpc-timeout"
                        : "upstream did not answer within the route timeout";
  response_flag_ = "upstream_timeout";
  // The access log's upstream_failure says it as the body does (as the
  // per-try timeout's does).
  upstream_failure_ = GrpcTimeoutBinds() ? "no answer within the client's grpc-timeout"
                                         : "no answer within the route timeout";
  // A whole request leaves the connection in step: kept, as nginx and Envoy
  // keep it.
  SendLocalResponse(504, why, {}, {}, "application/json",
                    /*close_connection=*/!request_complete_);
}

void ProxyStream::ReleaseUpstream(bool reusable) {
  per_try_timer_.Disable();
  if (pending_) {
    pending_ = false;
    cluster_->state->pending_requests.fetch_sub(1, std::memory_order_relaxed);
  }
  ResumeHeldForAlpn();
  if (!HasUpstream()) return;
  if (endpoint_active_) --*endpoint_active_;
  endpoint_active_ = nullptr;
  cluster_->endpoints[endpoint_index_].state->active_requests.fetch_sub(1,
                                                                        std::memory_order_relaxed);
  if (upstream2_) {
    upstream2_.reset();  // resets the HTTP/2 stream unless its response completed
    return;
  }
  if (!reusable) upstream_->connection().Close();
  worker_.pool().Release(std::move(upstream_), cluster_->max_idle_per_endpoint,
                         cluster_->idle_connection_sweeps);
}

void ProxyStream::SendLocalResponse(int status, std::string_view error,
                                    std::initializer_list<http::HeaderField> extra,
                                    std::string_view body_override,
                                    std::string_view content_type, bool close_connection) {
  SendLocalResponse(status, error, extra.begin(), extra.size(), body_override, content_type,
                    close_connection);
}

void ProxyStream::SendLocalResponse(int status, std::string_view error,
                                    const http::HeaderField* extra, size_t extra_count,
                                    std::string_view body_override,
                                    std::string_view content_type, bool close_connection) {
  if (!active_) return;
  if (response_started_) {
    // A gRPC response under way ends with the status in its trailers (a
    // request body over a limit in a bidirectional call, say).
    if (!error.empty() && grpc_) {
      if (response_flag_.empty()) response_flag_ = "local_reply";
      if (EndGrpcResponse(status, error, "local_reply")) return;
    }
    Fail();
    return;
  }
  // The route's upstream failed before its response began: a policy may
  // answer instead (a cache's stale entry).
  if (observes_upstream_ && cluster_ != nullptr && !grpc_ && !in_upstream_error_ &&
      (status == 502 || status == 503 || status == 504)) {
    if (HasUpstream()) ReleaseUpstream(false);
    if (RunUpstreamErrorFilters(status)) return;
  }
  if (response_flag_.empty()) response_flag_ = "local_reply";
  if (HasUpstream()) ReleaseUpstream(false);
  if (grpc_ && !error.empty()) {
    // A gRPC client understands gRPC statuses, not HTTP ones: a
    // "trailers-only" answer (HTTP 200, the status in the head, no body).
    scratch_ = GrpcMessage(error);
    grpc_status_ = grpc_reset_status_ >= 0 ? grpc_reset_status_ : GrpcStatusFor(status);
    std::string grpc_status = std::to_string(grpc_status_);
    response_fields_.clear();
    response_fields_.push_back({"content-type", grpc_reply_type_});
    response_fields_.push_back({"grpc-status", grpc_status});
    response_fields_.push_back({"grpc-message", scratch_});
    response_fields_.push_back({"x-request-id", request_id_});
    for (size_t i = 0; i < extra_count; ++i) response_fields_.push_back(extra[i]);
    AddDateUnlessGiven(extra, extra_count);
    ResponseHead head;
    head.status = 200;
    head.body = ResponseHead::Body::kNone;
    // Framed as empty: an HTTP/1.1 client (gRPC over HTTP/1, grpc-web)
    // would otherwise read the body to the connection's close (RFC 9112 6.3).
    // HTTP/2 ends the stream with the head: no content-length, as a gRPC
    // server's trailers-only answer has none.
    head.declared_length = 0;
    head.length_implied = true;
    head.close_connection = close_connection;
    status_ = status;  // counted under the gateway's own status
    response_started_ = true;
    EncodeResponseHead(head, response_fields_);
    sink_->EncodeEnd({});
    Finish();
    return;
  }
  scratch_ = error.empty() ? std::string(body_override) : http::ErrorBody(error, request_id_);
  const bool no_content = status == 204 || status == 304;  // no body, no length
  // A 205 has no content either (RFC 9110 15.3.6), but a length: 0.
  if (no_content || status == 205) scratch_.clear();
  response_fields_.clear();
  if (!no_content && !content_type.empty()) {
    response_fields_.push_back({"content-type", content_type});
  }
  response_fields_.push_back({"x-request-id", request_id_});
  for (size_t i = 0; i < extra_count; ++i) response_fields_.push_back(extra[i]);
  AddDateUnlessGiven(extra, extra_count);
  ResponseHead head;
  head.status = status;
  head.close_connection = close_connection;
  if (no_content) {
    head.body = ResponseHead::Body::kNone;
  } else if (head_request_) {
    head.body = ResponseHead::Body::kNone;
    head.declared_length = static_cast<int64_t>(scratch_.size());
  } else {
    head.body = ResponseHead::Body::kLength;
    head.content_length = scratch_.size();
  }
  status_ = status;
  response_started_ = true;
  EncodeResponseHead(head, response_fields_);
  if (!head_request_ && !scratch_.empty()) {
    bytes_out_ += scratch_.size();
    sink_->EncodeData(scratch_);
  }
  sink_->EncodeEnd({});
  Finish();
}

void ProxyStream::EndAtDrainDeadline(std::string_view why, std::string_view flag) {
  if (!active_) return;
  if (tunnel_) {
    // A WebSocket is cut at the deadline (before: when the process left,
    // the 200 ms grace later), as the log line at the deadline says.
    response_flag_ = flag;
    Fail();
    return;
  }
  // A gRPC call whose response began ends with a status in its trailers;
  // gRPC-Web reads its status from the body, which the gateway does not
  // write: such a call, and any other response that began, is cut.
  if (grpc_ && grpc_reply_type_ == "application/grpc" && EndGrpcResponse(503, why, flag)) {
    return;
  }
  response_flag_ = flag;
  if (!response_started_) {
    // Answered, not cut: the client can tell a drain from a crash.
    ReleaseUpstream(false);
    SendLocalResponse(503, std::string(why), {}, {}, "application/json",
                      /*close_connection=*/true);
    return;
  }
  // Cut as an upstream cut is: an HTTP/2 stream with RST_STREAM before the
  // connection closes (before: only the close, after a GOAWAY that named
  // the stream as taken), an HTTP/1 response with the connection.
  Fail();
}

bool ProxyStream::EndGrpcResponse(int http_status, std::string_view error,
                                  std::string_view flag) {
  if (!grpc_ || !response_started_ || !response_streamed_ || tunnel_ || !active_) return false;
  if (response_flag_.empty()) response_flag_ = flag;
  if (grpc_reply_type_ != "application/grpc") {
    // gRPC-Web reads its status from a frame in the body, which the gateway
    // does not write (the body is the upstream's, passed as it came): HTTP
    // trailers would end the response cleanly with no status a browser
    // client can read, a failed call looking whole. Cut, as any response.
    return false;
  }
  ReleaseUpstream(false);
  scratch_ = GrpcMessage(error);
  grpc_status_ = grpc_reset_status_ >= 0 ? grpc_reset_status_ : GrpcStatusFor(http_status);
  grpc_status_text_ = std::to_string(grpc_status_);
  response_trailers_.clear();
  response_trailers_.push_back({"grpc-status", grpc_status_text_});
  response_trailers_.push_back({"grpc-message", scratch_});
  status_ = http_status;  // counted as the gateway's error
  sink_->EncodeEnd(response_trailers_);
  Finish();
  return true;
}

void ProxyStream::Finish() {
  CountResponse();
  if (cluster_ && retries_ > 0) {
    (status_ > 0 && status_ < 500 ? cluster_->stats.retry_successes
                                  : cluster_->stats.retries_exhausted)
        ->Inc();
  }
  EndAccounting();
  active_ = false;
  snapshot_.reset();
  upstream_.reset();
  upstream2_.reset();
  if (background_request_ != nullptr) worker_.StartBackground(std::move(background_request_));
  sink_->OnStreamDone();  // may destroy this stream: nothing after it
}

void ProxyStream::CountResponse() {
  const int status_class = status_ / 100;
  if (counted_response_ || status_class < 1 || status_class > 5) return;
  counted_response_ = true;
  worker_.stats().downstream_responses_by_class[status_class]->Inc();
  if (route_stats_) {
    route_stats_->by_class[status_class]->Inc();
    if (grpc_) {
      // What the client reads: a code gRPC does not define, or an unreadable
      // one, is UNKNOWN; none at all is UNKNOWN for a 2xx and gRPC's mapping
      // of the HTTP status otherwise. A gRPC-Web response carries its status
      // in the body, unread here: none in the head says nothing about it.
      int code = grpc_status_;
      if (code < 0 && grpc_reply_type_ == "application/grpc") {
        code = status_class == 2 ? 2 : GrpcStatusAClientReads(status_);
      }
      if (code > 16) code = 2;
      if (code >= 0) {
        if (stats::Counter* c = route_stats_->GrpcStatus(code)) c->Inc();
      }
    }
  }
  if (listener_stats_ != nullptr && listener_stats_[status_class] != nullptr) {
    listener_stats_[status_class]->Inc();
  }
}

void ProxyStream::Fail(bool unsent) {
  if (!active_) return;
  if (response_flag_.empty()) response_flag_ = "upstream_cut";
  // A WebSocket's answer was its 101, whole: counted however the tunnel
  // ends (here: its idle timeout), as OnDownstreamGone and Finish do.
  if (tunnel_) CountResponse();
  // The log says what the client gets: an HTTP/2 reset may drop a head
  // and bytes not yet sent (its window could not take them at once).
  bool head_lost = false;
  size_t bytes_lost = 0;
  sink_->AbortLoss(&head_lost, &bytes_lost);
  if (unsent) bytes_lost = std::max(bytes_lost, sink_->buffered_response_bytes());
  if (head_lost) status_ = 0;
  bytes_out_ -= std::min<uint64_t>(bytes_out_, bytes_lost);
  ReleaseUpstream(false);
  EndAccounting();
  active_ = false;
  snapshot_.reset();
  // May destroy this stream: nothing after it.
  if (unsent) {
    sink_->AbortUnsent();
  } else {
    sink_->Abort();
  }
}

void ProxyStream::RecordExchange() {
  if (recorded_) return;
  recorded_ = true;
  absl::Time now = absl::Now();
  const int shard = worker_.index();
  // Only exchanges the route's request counter counts (answered whole): a
  // request the client abandoned, or a response cut short, shows no latency.
  if (route_stats_ != nullptr && route_stats_->duration != nullptr && counted_response_) {
    // A WebSocket's latency is its handshake's (to the upstream's 101), not
    // how long the tunnel stayed open: a p99 alert must not fire on them.
    const absl::Time end = tunnel_ && first_byte_ != absl::InfinitePast() ? first_byte_ : now;
    route_stats_->duration->Observe(shard, absl::ToInt64Microseconds(end - start_time_));
  }
  if (route_stats_ != nullptr && route_stats_->bytes_in != nullptr) {
    route_stats_->bytes_in->Inc(bytes_in_);
    route_stats_->bytes_out->Inc(bytes_out_);
  }
  absl::Duration upstream = absl::InfiniteDuration();
  if (cluster_ != nullptr && upstream_sent_ != absl::InfinitePast()) {
    if (first_byte_ != absl::InfinitePast()) {
      cluster_->stats.upstream_first_byte->Observe(
          shard, absl::ToInt64Microseconds(first_byte_ - upstream_sent_));
    }
    if (upstream_end_ != absl::InfinitePast()) {
      upstream = upstream_end_ - upstream_sent_;
      cluster_->stats.upstream_duration->Observe(shard, absl::ToInt64Microseconds(upstream));
    }
  }
  if (info_.consumer != nullptr) {
    // As the route counter: a response cut short or abandoned by its
    // client is "none" (no whole response went out), so a consumer's 2xx
    // add up with the route's.
    const int status_class = counted_response_ ? status_ / 100 : 0;
    worker_.ConsumerCounters(info_.consumer->name)[status_class >= 1 && status_class <= 5
                                                       ? status_class
                                                       : 0]
        ->Inc();
  }
  if (response_flag_.size() > 7 && response_flag_.compare(0, 7, "policy:") == 0) {
    worker_.PolicyCounter(std::string_view(response_flag_).substr(7), status_)->Inc();
  }
  if (access_log_ != nullptr) {
    accesslog::Entry e;
    e.start = start_time_;
    e.request_id = request_id_;
    e.trace_id = std::string_view(traceparent_ + 3, 32);
    e.client_ip = client_ip_;
    // The TCP peer: on a proxy_protocol listener the balancer, whose header
    // named the client (client_ip and *peer_ip_).
    e.peer_ip = net::DirectPeer(*transport_);
    if (e.peer_ip.empty()) e.peer_ip = *peer_ip_;
    e.method = method_;
    e.authority = log_authority_;
    // As the policies left it: a credential they removed from the query
    // (key-auth) is not written to the log.
    e.path = filters_.empty() ? std::string_view(log_path_) : std::string_view(path_);
    if (QueryMayHoldCredential()) e.path = e.path.substr(0, e.path.find('?'));
    if (!hidden_from_log_.empty()) {
      // A credential a policy let through to the upstream.
      scrubbed_path_.assign(e.path);
      for (const std::string& name : hidden_from_log_) {
        scrubbed_path_ = policy::RemoveQueryParameter(scrubbed_path_, name);
      }
      e.path = scrubbed_path_;
    }
    e.protocol = protocol_;
    e.status = status_;
    e.bytes_in = bytes_in_;
    e.bytes_out = bytes_out_;
    e.duration = now - start_time_;
    e.upstream_duration = upstream;
    // A WebSocket's upstream exchange lasts as long as its tunnel, and a
    // response cut after it began, to the cut (both kept out of the upstream
    // duration histogram, which is for whole responses).
    if ((tunnel_ || first_byte_ != absl::InfinitePast()) &&
        upstream_sent_ != absl::InfinitePast() && upstream == absl::InfiniteDuration()) {
      e.upstream_duration = now - upstream_sent_;
    }
    if (route_ != nullptr) e.route = route_->name;
    if (cluster_ != nullptr) {
      e.cluster = cluster_->name;
    } else if (route_ != nullptr && route_->action == router::RouteEntry::Action::kCluster &&
               route_->clusters.size() == 1) {
      // Answered before the router (a policy's 401 or 429): the route's
      // cluster all the same, as Envoy's %UPSTREAM_CLUSTER%.
      e.cluster = route_->clusters[0].name;
    }
    if (endpoint_index_ >= 0 && cluster_ != nullptr) {
      e.endpoint = cluster_->endpoints[endpoint_index_].key;
    }
    e.attempts = attempts_;
    if (info_.consumer != nullptr) e.consumer = info_.consumer->name;
    if (const net::TlsInfo* tls = transport_->tls_info()) {
      e.tls_version = tls->version;
      e.sni = tls->sni;
      e.tls_cipher = tls->cipher;
      e.tls_client_subject = tls->peer_subject;
    }
    e.user_agent = log_user_agent_;
    e.response_flag = response_flag_;
    e.upstream_failure = upstream_failure_;
    e.grpc_status = grpc_status_;
    e.cache_status = cache_status_;
    access_log_->Log(shard, e);
  }
}

void ProxyStream::EndAccounting() {
  if (active_) RecordExchange();
  ReleaseHeldBytes();
  paused_ = buffering_body_ = false;
  resume_token_.reset();  // work a policy started for this request is dropped
  route_timer_.Clear();
  retry_timer_.Disable();
  per_try_timer_.Disable();
  idle_timer_.Clear();
  idle_limit_ = absl::ZeroDuration();
  if (counted_request_) cluster_->state->active_requests.fetch_sub(1, std::memory_order_relaxed);
  if (counted_retry_) cluster_->state->active_retries.fetch_sub(1, std::memory_order_relaxed);
  counted_request_ = counted_retry_ = false;
  if (counted_tunnel_) worker_.stats().websockets_active->Add(-1);
  counted_tunnel_ = false;
}

void ProxyStream::OnDownstreamGone() {
  if (!active_) {
    // defensive: nothing should be held between requests
    if (upstream_) worker_.pool().Discard(std::move(upstream_));
    upstream2_.reset();
    return;
  }
  if (HasUpstream() || pending_) ReleaseUpstream(false);
  // At exit with the connection still open (the --drain-timeout passed),
  // the gateway is the one closing it.
  if (response_flag_.empty()) response_flag_ = worker_.stopping() ? "drain_timeout" : "client_closed";
  // A WebSocket's answer was its 101, whole: counted (with its handshake's
  // latency) however the tunnel ends; the client usually ends it.
  if (tunnel_) CountResponse();
  EndAccounting();
  active_ = false;
  snapshot_.reset();
}

}  // namespace sluice::server
