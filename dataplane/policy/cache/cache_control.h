// RFC 9111 (HTTP caching) and RFC 9110 pieces the `cache` policy needs, as
// pure functions: Cache-Control directives, HTTP-dates, entity-tag
// comparison, freshness lifetime and age.
//
// Pure and thread-safe.
#ifndef SLUICE_DATAPLANE_POLICY_CACHE_CACHE_CONTROL_H_
#define SLUICE_DATAPLANE_POLICY_CACHE_CACHE_CONTROL_H_

#include <cstdint>
#include <string>
#include <string_view>

#include "dataplane/http/header_map.h"

namespace sluice::policy::cache {

inline constexpr int64_t kNanosPerSecond = 1000000000;

// The directives of every Cache-Control field of a message. Durations are
// delta-seconds; -1: absent. A value that is not a number counts as 0 (the
// response is then stale at once; RFC 9111 4.2.1), one over 2^31 as 2^31
// (1.2.2). The qualified forms no-cache="f" and private="f" count as their
// unqualified forms (stricter than required: the named fields are not
// tracked).
struct CacheControl {
  bool no_store = false;
  bool no_cache = false;
  bool is_private = false;
  bool is_public = false;
  bool must_revalidate = false;
  bool proxy_revalidate = false;
  bool only_if_cached = false;
  int64_t max_age = -1;
  int64_t s_maxage = -1;
  int64_t min_fresh = -1;
  // max-stale without a value: any staleness (kAnyStale).
  int64_t max_stale = -1;
  int64_t stale_while_revalidate = -1;
  int64_t stale_if_error = -1;
};
inline constexpr int64_t kAnyStale = int64_t{1} << 31;

CacheControl ParseCacheControl(const http::HeaderMap& headers);
// One field value (appending to `cc`).
void ParseCacheControlValue(std::string_view value, CacheControl* cc);

// An HTTP-date (IMF-fixdate, or the obsolete RFC 850 and asctime forms) as
// seconds since the Unix epoch.
bool ParseHttpDate(std::string_view value, int64_t* unix_seconds);
// IMF-fixdate: "Sun, 06 Nov 1994 08:49:37 GMT".
std::string FormatHttpDate(int64_t unix_seconds);

// If-None-Match against a stored ETag with the weak comparison (RFC 9110
// 13.1.2): "*" matches any stored ETag; otherwise any listed tag whose
// opaque part equals the stored one's, W/ or not.
bool IfNoneMatchMatches(std::string_view if_none_match, std::string_view etag);
// If-Match against a stored ETag with the strong comparison (RFC 9110
// 13.1.1): a listed tag equal to the stored one, neither weak ("*" is
// left to the caller: it matches any stored representation).
bool IfMatchMatches(std::string_view if_match, std::string_view etag);

// Every field of that name, joined with ", " (cookie: "; "; what Vary
// compares); empty and `present` false when the message has none. `name`
// is lower case.
std::string JoinedValues(const http::HeaderMap& headers, std::string_view name,
                         bool* present);

// The freshness lifetime a shared cache gives a response (RFC 9111
// 4.2.1), in seconds: s-maxage, else max-age, else Expires minus Date (an
// invalid Expires: 0), else `default_ttl_seconds` when above 0; -1: the
// response has no freshness (not storable for this policy).
// `response_time` stands in for a missing Date.
int64_t FreshnessLifetime(const CacheControl& cc,
                          const http::HeaderMap& headers,
                          int64_t response_time_seconds,
                          int64_t default_ttl_seconds);

// The corrected initial age (RFC 9111 4.2.3), nanoseconds: the larger of
// the apparent age (response_time - Date, in the whole seconds Date has)
// and the upstream's Age plus the response delay.
int64_t CorrectedInitialAge(const http::HeaderMap& headers,
                            int64_t request_time_ns, int64_t response_time_ns);

}  // namespace sluice::policy::cache

#endif  // SLUICE_DATAPLANE_POLICY_CACHE_CACHE_CONTROL_H_
