// Small pure helpers for HTTP/1 message handling in the proxy: header name
// comparison, hop-by-hop headers, reason phrases, the gateway's own error
// bodies. No sockets, no timers; thread-safe.
#ifndef SLUICE_DATAPLANE_HTTP_HTTP_UTIL_H_
#define SLUICE_DATAPLANE_HTTP_HTTP_UTIL_H_

#include <string>
#include <string_view>
#include <vector>

#include "dataplane/http/http1_parser.h"

namespace sluice::http {

// ASCII case-insensitive equality; inline, as most calls (header names
// against a known name) end at the size check.
inline bool EqualsIgnoreCase(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i) {
    const char x = (a[i] >= 'A' && a[i] <= 'Z') ? static_cast<char>(a[i] + 32) : a[i];
    const char y = (b[i] >= 'A' && b[i] <= 'Z') ? static_cast<char>(b[i] + 32) : b[i];
    if (x != y) return false;
  }
  return true;
}

// Why `method` is refused for its case, or "" when it has no lowercase
// letter. Methods are case-sensitive (RFC 9110 9.1), so "post" or "purge"
// matches no route's `methods: [POST, PURGE]` (nor its policies), while
// frameworks that upper-case the method (Django, Werkzeug) act on it as
// the route's. nginx refuses every method with a lowercase letter too.
std::string MethodCaseProblem(std::string_view method);

// The field names a message's Connection headers list (RFC 9110 7.6.1),
// lower-cased and sorted: a lookup costs O(log tokens), so a header section
// with many fields and a Connection field with many tokens costs linear
// time, not fields x tokens. "close" and "keep-alive" are options, not
// names; Host, Content-Length and Transfer-Encoding are never taken as
// names (a client must not remove what the message is routed and framed
// by).
class ConnectionTokens {
 public:
  ConnectionTokens() = default;
  explicit ConnectionTokens(const std::vector<HeaderField>& headers);
  bool Contains(std::string_view name) const;
  bool empty() const { return tokens_.empty(); }

 private:
  std::vector<std::string> tokens_;
};

// Headers that describe one connection and are never forwarded (RFC 9110
// 7.6.1): Connection, Keep-Alive, Proxy-Connection, TE, Transfer-Encoding,
// Upgrade, HTTP2-Settings (RFC 7540 3.2.1); plus every name listed in the
// message's Connection header (`connection_tokens`). Not Trailer: it names
// the trailer fields to come end to end (RFC 9110 6.6.2; RFC 2616's list
// had "Trailers", the TE token).
bool IsHopByHop(std::string_view name, const ConnectionTokens& connection_tokens);

// Whether `s` is an RFC 9110 5.6.2 token (a method, a field name): one or
// more of ALPHA, DIGIT and !#$%&'*+-.^_`|~.
bool IsToken(std::string_view s);

// Whether a comma-separated list value (TE, Connection...) holds `token`
// (case-insensitive; parameters after ';' ignored).
bool HasToken(std::string_view list, std::string_view token);

// What a content-type value says of gRPC: application/grpc, or
// application/grpc-web or -web-text, each ending there or followed by '+'
// (the message format: +proto, +json) or ';' (parameters); type and subtype
// compared case-insensitively (RFC 9110 8.3.1). Anything else, such as
// application/grpcx or application/grpc-foo, is kNone: not gRPC.
enum class GrpcContentType { kNone, kGrpc, kGrpcWeb, kGrpcWebText };
GrpcContentType ClassifyGrpcContentType(std::string_view value);

// The first header with this name, or nullptr.
const HeaderField* FindHeader(const std::vector<HeaderField>& headers, std::string_view name);

std::string_view ReasonPhrase(int status);

// {"error":"...","request_id":"..."} with JSON escaping.
std::string ErrorBody(std::string_view error, std::string_view request_id);

// Appends "<hex size>\r\n" to `out`.
void AppendChunkHeader(std::string* out, size_t size);

// Appends "name: value\r\n" to `out`.
void AppendHeader(std::string* out, std::string_view name, std::string_view value);

}  // namespace sluice::http

#endif  // SLUICE_DATAPLANE_HTTP_HTTP_UTIL_H_
