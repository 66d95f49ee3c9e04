// HeaderMap: an owning, ordered list of header fields that filters can read
// and change. Names compare case-insensitively and are stored as given
// (HTTP/1 forwards them so; HTTP/2 lower-cases them on encoding).
//
// Not thread-safe: owned by one stream on one worker.
#ifndef SLUICE_DATAPLANE_HTTP_HEADER_MAP_H_
#define SLUICE_DATAPLANE_HTTP_HEADER_MAP_H_

#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "dataplane/http/http1_parser.h"

namespace sluice::http {

// Whether two field names are one variable to CGI, WSGI, Rack and PHP,
// which read '-' and '_' alike and ignore case (`X_Tenant-Id` is
// `x-tenant-id`): a field a policy checks or sets must reach an upstream in
// no other spelling.
inline bool SameCgiName(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i) {
    char x = (a[i] >= 'A' && a[i] <= 'Z') ? static_cast<char>(a[i] + 32) : a[i];
    char y = (b[i] >= 'A' && b[i] <= 'Z') ? static_cast<char>(b[i] + 32) : b[i];
    if (x == '_') x = '-';
    if (y == '_') y = '-';
    if (x != y) return false;
  }
  return true;
}

// Whether `name`, in any spelling (case, '_' for '-'), is a field the
// gateway's authentication policies set for the upstream to trust
// (x-consumer-*, x-anonymous-consumer): no config may write one, or a value
// from the request would pass as the consumer.
inline bool IsConsumerField(std::string_view name) {
  constexpr std::string_view kPrefix = "x-consumer-";
  if (name.size() > kPrefix.size() && SameCgiName(name.substr(0, kPrefix.size()), kPrefix)) {
    return true;
  }
  return SameCgiName(name, "x-anonymous-consumer");
}

// Whether `name`, in any spelling (SameCgiName), frames the message or is
// set by the gateway for the upstream (forwarding, request id, trace
// context, the consumer fields): a value from a claim must not pass as one,
// and a credential in one is never what the client sent.
inline bool IsGatewayOrFramingField(std::string_view name) {
  constexpr std::string_view kFields[] = {
      "host",          "content-length",    "transfer-encoding", "connection",
      "keep-alive",    "proxy-connection",  "te",                "upgrade",
      "trailer",       "x-forwarded-for",   "x-forwarded-proto", "x-forwarded-host",
      "x-forwarded-port", "x-real-ip",      "forwarded",         "x-request-id",
      "via",           "traceparent",       "tracestate",
  };
  for (std::string_view f : kFields) {
    if (SameCgiName(name, f)) return true;
  }
  return IsConsumerField(name);
}

class HeaderMap {
 public:
  struct Field {
    std::string name;
    std::string value;
  };

  // The first field with this name, or nullptr.
  const std::string* Get(std::string_view name) const;
  // How many fields have this name.
  size_t Count(std::string_view name) const;
  // Appends a field (an existing one of that name stays).
  void Add(std::string_view name, std::string_view value);
  // Replaces every field of that name with one (at the first one's place, or
  // appended).
  void Set(std::string_view name, std::string_view value);
  // Removes every field of that name; returns how many.
  size_t Remove(std::string_view name);
  // Removes every field that is `name` to CGI (SameCgiName) under another
  // spelling (`x_tenant-id` for `x-tenant-id`); returns how many.
  size_t RemoveOtherCgiSpellings(std::string_view name);
  // The same, keeping the spellings in `keep` too (names other rules check).
  size_t RemoveOtherCgiSpellings(std::string_view name, const std::vector<std::string>& keep);

  const std::vector<Field>& fields() const { return fields_; }
  // The fields as views (valid while the map is unchanged), for the
  // interfaces that take HeaderField lists.
  std::vector<HeaderField> Views() const;
  size_t size() const { return fields_.size(); }
  bool empty() const { return fields_.empty(); }
  void Clear() { fields_.clear(); }
  void Reserve(size_t n) { fields_.reserve(n); }
  // Bytes of names and values, for limits.
  size_t ByteSize() const;

 private:
  std::vector<Field> fields_;
};

}  // namespace sluice::http

#endif  // SLUICE_DATAPLANE_HTTP_HEADER_MAP_H_
