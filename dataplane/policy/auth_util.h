// What authentication policies share: the refusal or anonymous fallback,
// and reading or removing a credential in the query string.
#ifndef SLUICE_DATAPLANE_POLICY_AUTH_UTIL_H_
#define SLUICE_DATAPLANE_POLICY_AUTH_UTIL_H_

#include <optional>
#include <string>
#include <string_view>

#include "dataplane/http/filter.h"

namespace sluice::policy {

// No credential, or an unknown one. With an `anonymous` consumer name: the
// request goes on as that consumer (500 when no Consumer has the name);
// without: 401 with `message` and `WWW-Authenticate: <challenge>`.
http::FilterStatus RefuseOrAnonymous(http::FilterCallbacks& callbacks, std::string_view anonymous,
                                     std::string_view message, std::string_view challenge);

// A malformed credential (two of them; one after a ';' in the query):
// RejectRequest with `status` and `message`, and `WWW-Authenticate:
// <challenge>` unless empty; whatever any `anonymous` consumer says. With
// `drop_query`, the query leaves the path the access log records (it holds
// the credential, maybe where it is not found to be removed).
http::FilterStatus Reject(http::FilterCallbacks& callbacks, int status, std::string_view message,
                          std::string_view challenge, bool drop_query);

// `in` with %XX sequences decoded (a malformed one is kept as it is; '+'
// stays '+').
std::string PercentDecode(std::string_view in);

// Whether a query parameter name as sent is `name` as an upstream reads
// it: percent-decoded (`api%6Bey` is `apikey`), and as PHP keys $_GET
// (`api.key`, `api key`, `api[key` and `api_key[]` are `api_key`), so
// policies match what the upstream will read, not only the spelling.
bool SameParameterName(std::string_view sent, std::string_view name);

// How FindQueryParameter compares names: as SameParameterName (where a
// credential may hide), or the percent-decoded name alone (a value read
// for the upstream, which reads `q[a]` as no `q`).
enum class ParameterNames { kAnySpelling, kExact };

// The percent-decoded value of the first query parameter `name` (compared
// decoded) in `path_and_query`; nullopt when absent. A '+' stays '+' (a
// credential may hold one), or with `plus_is_space` is read as a space,
// as HTML forms send it (`%2B` is a '+'), in a name (with kExact) too.
std::optional<std::string> FindQueryParameter(
    std::string_view path_and_query, std::string_view name,
    ParameterNames names = ParameterNames::kAnySpelling, bool plus_is_space = false);

// How many query parameters are `name` (compared decoded), counting those
// that only a ';' separates (`x=1;apikey=k`), as some upstreams read them.
size_t CountQueryParameter(std::string_view path_and_query, std::string_view name);
// Whether a parameter `name` follows a ';' inside another parameter: an
// upstream that splits at ';' reads it, FindQueryParameter does not.
bool QueryParameterAfterSemicolon(std::string_view path_and_query, std::string_view name);

// `path_and_query` without any `name=` parameter, however its name is
// percent-encoded (and without a '?' that no longer has parameters).
std::string RemoveQueryParameter(std::string_view path_and_query, std::string_view name);

}  // namespace sluice::policy

#endif  // SLUICE_DATAPLANE_POLICY_AUTH_UTIL_H_
