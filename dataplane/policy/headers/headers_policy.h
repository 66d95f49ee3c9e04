// The `headers` policy: adds, sets and removes request and response header
// fields, with per-request values (request id, client address, TLS facts).
//
// Validation (HeadersValidator) runs in every binary that checks config; the
// filter runs on the proxy's workers. See headers_config.proto.
//
// ValueTemplate, CheckHeaderName and CheckTemplateValue are shared with the
// request-transformer and response-transformer policies.
#ifndef SLUICE_DATAPLANE_POLICY_HEADERS_HEADERS_POLICY_H_
#define SLUICE_DATAPLANE_POLICY_HEADERS_HEADERS_POLICY_H_

#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "dataplane/http/filter.h"
#include "dataplane/http/header_map.h"
#include "headers_config.pb.h"

namespace sluice::policy::headers {

inline constexpr size_t kMaxEntriesPerList = 64;
inline constexpr size_t kMaxValueBytes = 4096;

// A byte RFC 9110 5.5 keeps out of a field value: a control character other
// than HTAB (NUL, CR, LF, DEL...). Parsers refuse them in what clients send;
// a value the gateway writes holds none either.
inline bool IsFieldValueControl(char c) {
  const unsigned char u = static_cast<unsigned char>(c);
  return (u < 0x20 && u != '\t') || u == 0x7f;
}

// The message for a configured value holding one, with its position.
inline std::string FieldValueControlError(std::string_view value) {
  for (size_t i = 0; i < value.size(); ++i) {
    if (IsFieldValueControl(value[i])) {
      return "has a control character at byte " + std::to_string(i + 1) +
             ": only HTAB is allowed";
    }
  }
  return "";
}

// What a template may refer to beyond the stream's facts (StreamInfo and
// the consumer). The headers policy uses the default scope.
struct TemplateScope {
  // %HEADER(name)% and %QUERY(name)%: fields of the request being changed
  // (request-transformer's request values).
  bool request_fields = false;
  // %CAPTURE(n)%, 0 <= n <= captures: groups of request-transformer's
  // path.regex (at most 9).
  int captures = -1;  // -1: none at all
};

// What a template is rendered from. Views; valid during Render().
struct TemplateContext {
  const http::StreamInfo* info = nullptr;
  // The request's header fields, for %HEADER(name)% (empty when nullptr).
  const http::HeaderMap* request_headers = nullptr;
  // Path captures, for %CAPTURE(n)% (empty when absent or out of range).
  const std::vector<std::string>* captures = nullptr;
};

// A header value with variables, compiled. Immutable; thread-safe.
class ValueTemplate {
 public:
  // INVALID_ARGUMENT naming an unknown variable, a lone '%', or a variable
  // `scope` does not allow.
  static absl::StatusOr<ValueTemplate> Parse(std::string_view text,
                                             const TemplateScope& scope = {});
  // For a header field value: control characters but HTAB in the result
  // (from a client certificate subject, a percent-decoded query value...)
  // become spaces.
  std::string Render(const http::StreamInfo& info) const;
  std::string Render(const TemplateContext& context) const;
  // The bytes as they are, for a value its user encodes (a query value is
  // percent-encoded, a JSON string escaped).
  std::string RenderRaw(const TemplateContext& context) const;
  // Whether it has no variable (Render gives the same text every time).
  bool literal() const;

 private:
  enum class Variable {
    kNone,  // a literal piece
    kRequestId,
    kClientIp,
    kScheme,
    kMethod,
    kRoute,
    kTlsVersion,
    kTlsCipher,
    kTlsSni,
    kTlsClientSubject,
    kConsumer,  // the consumer's name; empty when none
    kHeader,    // argument: the field name
    kQuery,     // argument: the parameter name
    kCapture,   // index: the group
  };
  struct Piece {
    Variable variable = Variable::kNone;
    std::string literal;  // kNone: the text; kHeader, kQuery: the name
    int index = 0;        // kCapture
  };
  std::vector<Piece> pieces_;
};

// Config rules other policies that change header fields share, appending
// (field, message) pairs.
//
// `name` is a field name a config changes: a token, not a connection or
// framing field (connection, keep-alive, proxy-connection, te,
// transfer-encoding, upgrade, trailer, content-length); `host` only when
// `host_rule` is empty, else `host_rule` is the error.
void CheckHeaderName(const std::string& name, const std::string& field,
                     std::string_view host_rule,
                     std::vector<std::pair<std::string, std::string>>* errors);
// `name`, a request field a config writes (sets, adds, renames to), is not
// one authentication policies set for the upstream to trust (x-consumer-*,
// x-anonymous-consumer): a value from the request would pass as the consumer.
void CheckNotConsumerField(const std::string& name, const std::string& field,
                           std::vector<std::pair<std::string, std::string>>* errors);
// Apply-only (a stored config an older build took still loads): `name`, a
// request field a config writes, is neither a CGI spelling of a connection
// or framing field (`content_length`, `Transfer_Encoding`: CGI, WSGI, Rack
// and PHP read them as Content-Length and Transfer-Encoding, and the
// gateway drops a client's such spellings for that reason) nor one the
// gateway takes off requests before policies and answers itself (`expect`,
// `http2-settings`, in any spelling).
void CheckNewRequestFieldName(const std::string& name, const std::string& field,
                              std::vector<std::pair<std::string, std::string>>* errors);
// Apply-only: `name` is a response field a config edits. `grpc-status` is
// a gRPC call's outcome, which a policy may not edit at all (set in the
// head next to the upstream's trailer, or removed with it, it failed every
// call: "No status received"); `grpc-message` and `grpc-status-details-bin`
// travel with it, and may only be removed (a policy's removal of a
// response field takes it out of trailers too: Filter::
// removed_response_fields).
enum class ResponseEdit { kWrite, kRemove };
void CheckNewResponseFieldName(const std::string& name, const std::string& field,
                               ResponseEdit edit,
                               std::vector<std::pair<std::string, std::string>>* errors);
// A Host value (a request's `host` set or replaced) that has no variable
// must be a valid host[:port] (port 0..65535): else every request on the
// route would get 400. One with variables is checked per request.
void CheckHostValue(const std::string& value, const std::string& field,
                    std::vector<std::pair<std::string, std::string>>* errors);
// `value` is a template value: at most kMaxValueBytes, no CR, LF or NUL,
// and it parses in `scope`.
void CheckTemplateValue(const std::string& value, const std::string& field,
                        const TemplateScope& scope,
                        std::vector<std::pair<std::string, std::string>>* errors);

// Checks a HeadersConfig; appends (field, message) pairs.
void ValidateHeadersConfig(const v1::HeadersConfig& config,
                           std::vector<std::pair<std::string, std::string>>* errors);

}  // namespace sluice::policy::headers

#endif  // SLUICE_DATAPLANE_POLICY_HEADERS_HEADERS_POLICY_H_
