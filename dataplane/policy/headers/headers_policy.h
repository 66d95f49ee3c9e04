// The `headers` policy: adds, sets and removes request and response header
// fields, with per-request values (request id, client address, TLS facts).
//
// Validation (HeadersValidator) runs in every binary that checks config; the
// filter runs on the proxy's workers. See headers_config.proto.
#ifndef SLUICE_DATAPLANE_POLICY_HEADERS_HEADERS_POLICY_H_
#define SLUICE_DATAPLANE_POLICY_HEADERS_HEADERS_POLICY_H_

#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "dataplane/http/filter.h"
#include "headers_config.pb.h"

namespace sluice::policy::headers {

inline constexpr size_t kMaxEntriesPerList = 64;
inline constexpr size_t kMaxValueBytes = 4096;

// A header value with variables, compiled. Immutable; thread-safe.
class ValueTemplate {
 public:
  // INVALID_ARGUMENT naming an unknown variable or a lone '%'.
  static absl::StatusOr<ValueTemplate> Parse(std::string_view text);
  std::string Render(const http::StreamInfo& info) const;

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
  };
  struct Piece {
    Variable variable = Variable::kNone;
    std::string literal;
  };
  std::vector<Piece> pieces_;
};

// Checks a HeadersConfig; appends (field, message) pairs.
void ValidateHeadersConfig(const v1::HeadersConfig& config,
                           std::vector<std::pair<std::string, std::string>>* errors);

}  // namespace sluice::policy::headers

#endif  // SLUICE_DATAPLANE_POLICY_HEADERS_HEADERS_POLICY_H_
