// The filter chain's interface: what a policy (dataplane/policy/<name>/)
// implements to see and change an exchange. Protocol-neutral: the same
// filters run for every codec.
//
// A route's chain is compiled once per config version into FilterFactory
// objects (immutable, shared by the workers); each request gets fresh Filter
// instances from them. The request-head hook runs in chain order before the
// request is routed to its action (upstream, redirect or direct response);
// request-body hooks run in chain order on each piece of the body before it
// goes upstream; response hooks run in reverse order on every response of
// the route, upstream or made by the gateway.
//
// Not offered yet: pausing the chain for asynchronous work and resuming it
// later, buffering a whole body for a filter, and response-body hooks.
//
// Worker thread only (a Filter lives on its request's worker).
#ifndef SLUICE_DATAPLANE_HTTP_FILTER_H_
#define SLUICE_DATAPLANE_HTTP_FILTER_H_

#include <memory>
#include <string>
#include <string_view>

#include "dataplane/http/header_map.h"

namespace sluice::http {

// What a filter may read about the exchange. Valid during the hook.
struct StreamInfo {
  std::string_view request_id;
  std::string_view client_ip;
  std::string_view scheme;  // "http" or "https"
  std::string_view method;
  std::string_view path;  // path and query as the client sent it
  std::string_view route_name;
  // TLS; empty over plain connections.
  std::string_view tls_version;
  std::string_view tls_cipher;
  std::string_view tls_sni;
  std::string_view tls_peer_subject;
  // The request body's declared length (Content-Length), -1 when it has
  // none (chunked, or HTTP/2 without content-length); 0 for no body.
  int64_t request_content_length = -1;
};

enum class FilterStatus {
  kContinue,  // the next filter runs
  // The filter answered with SendLocalReply(): nothing after it runs.
  kStopLocalReply,
};

class FilterCallbacks {
 public:
  virtual ~FilterCallbacks() = default;
  virtual const StreamInfo& info() const = 0;
  // Answers the request with a gateway-made response: `status` and a JSON
  // error body {"error": message, "request_id": ...}; `headers` are added to
  // it (e.g. WWW-Authenticate). The hook then returns kStopLocalReply.
  virtual void SendLocalReply(int status, std::string_view message,
                              const HeaderMap& headers) = 0;
};

class Filter {
 public:
  virtual ~Filter() = default;
  // The request head: `headers` as they will go upstream (hop-by-hop and
  // framing fields removed; x-forwarded-* and x-request-id set).
  virtual FilterStatus OnRequestHeaders(HeaderMap& headers, FilterCallbacks& callbacks) {
    return FilterStatus::kContinue;
  }
  // A piece of the request body (framing removed), before it goes upstream;
  // `end_stream` on the last call, which may carry no bytes. Called only
  // for filters whose OnRequestHeaders let the request through.
  // kStopLocalReply: the filter answered with SendLocalReply(); the request
  // is cut (what went upstream is abandoned) and, the rest of the body being
  // unread, an HTTP/1 connection closes after the answer (HTTP/2: the
  // stream ends).
  virtual FilterStatus OnRequestData(std::string_view data, bool end_stream,
                                     FilterCallbacks& callbacks) {
    return FilterStatus::kContinue;
  }
  // The response head, upstream or gateway-made, before it goes to the
  // client (hop-by-hop and framing fields removed). Filters may change
  // headers here, not answer instead.
  virtual void OnResponseHeaders(int status, HeaderMap& headers, FilterCallbacks& callbacks) {}
};

// One policy instance in a compiled route chain. Thread-safe (immutable).
class FilterFactory {
 public:
  virtual ~FilterFactory() = default;
  virtual std::unique_ptr<Filter> CreateFilter() const = 0;
  virtual std::string_view policy_name() const = 0;
};

}  // namespace sluice::http

#endif  // SLUICE_DATAPLANE_HTTP_FILTER_H_
