#include "dataplane/policy/cache/cache_control.h"

#include <algorithm>
#include <charconv>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"

namespace sluice::policy::cache {
namespace {

constexpr int64_t kMaxDelta = int64_t{1} << 31;

absl::string_view AV(std::string_view s) {
  return absl::string_view(s.data(), s.size());
}

std::string_view Trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t'))
    s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t'))
    s.remove_suffix(1);
  return s;
}

bool Equals(std::string_view a, std::string_view b) {
  return absl::EqualsIgnoreCase(AV(a), AV(b));
}

// delta-seconds; quoted values are accepted (a common sender error).
int64_t DeltaSeconds(std::string_view v) {
  if (v.size() >= 2 && v.front() == '"' && v.back() == '"')
    v = v.substr(1, v.size() - 2);
  if (v.empty()) return 0;
  int64_t n = 0;
  for (char c : v) {
    if (c < '0' || c > '9') return 0;
    n = n * 10 + (c - '0');
    if (n > kMaxDelta) return kMaxDelta;
  }
  return n;
}

}  // namespace

void ParseCacheControlValue(std::string_view value, CacheControl* cc) {
  while (!value.empty()) {
    // One directive: up to a comma outside quotes.
    size_t end = 0;
    bool quoted = false;
    for (; end < value.size(); ++end) {
      char c = value[end];
      if (c == '"') quoted = !quoted;
      if (c == '\\' && quoted) ++end;
      if (c == ',' && !quoted) break;
    }
    std::string_view item = Trim(value.substr(0, std::min(end, value.size())));
    value.remove_prefix(std::min(end + 1, value.size()));
    if (item.empty()) continue;
    std::string_view name = item, arg;
    bool has_arg = false;
    if (size_t eq = item.find('='); eq != std::string_view::npos) {
      name = Trim(item.substr(0, eq));
      arg = Trim(item.substr(eq + 1));
      has_arg = true;
    }
    if (Equals(name, "no-store"))
      cc->no_store = true;
    else if (Equals(name, "no-cache"))
      cc->no_cache = true;
    else if (Equals(name, "private"))
      cc->is_private = true;
    else if (Equals(name, "public"))
      cc->is_public = true;
    else if (Equals(name, "must-revalidate"))
      cc->must_revalidate = true;
    else if (Equals(name, "proxy-revalidate"))
      cc->proxy_revalidate = true;
    else if (Equals(name, "only-if-cached"))
      cc->only_if_cached = true;
    // RFC 9111 4.2.1: of a directive given twice, the first counts.
    else if (Equals(name, "max-age") && cc->max_age < 0)
      cc->max_age = DeltaSeconds(arg);
    else if (Equals(name, "s-maxage") && cc->s_maxage < 0)
      cc->s_maxage = DeltaSeconds(arg);
    else if (Equals(name, "min-fresh"))
      cc->min_fresh = DeltaSeconds(arg);
    else if (Equals(name, "max-stale"))
      cc->max_stale = has_arg ? DeltaSeconds(arg) : kAnyStale;
    else if (Equals(name, "stale-while-revalidate"))
      cc->stale_while_revalidate = DeltaSeconds(arg);
    else if (Equals(name, "stale-if-error"))
      cc->stale_if_error = DeltaSeconds(arg);
  }
}

CacheControl ParseCacheControl(const http::HeaderMap& headers) {
  CacheControl cc;
  for (const auto& field : headers.fields()) {
    if (Equals(field.name, "cache-control"))
      ParseCacheControlValue(field.value, &cc);
  }
  return cc;
}

bool ParseHttpDate(std::string_view value, int64_t* unix_seconds) {
  static constexpr const char* kFormats[] = {
      "%a, %d %b %Y %H:%M:%S GMT",  // IMF-fixdate
      "%A, %d-%b-%y %H:%M:%S GMT",  // RFC 850
      "%a %b %e %H:%M:%S %Y",       // asctime
  };
  std::string text(Trim(value));
  for (const char* format : kFormats) {
    absl::Time t;
    std::string err;
    if (absl::ParseTime(format, text, absl::UTCTimeZone(), &t, &err)) {
      *unix_seconds = absl::ToUnixSeconds(t);
      return true;
    }
  }
  return false;
}

std::string FormatHttpDate(int64_t unix_seconds) {
  return absl::FormatTime("%a, %d %b %Y %H:%M:%S GMT",
                          absl::FromUnixSeconds(unix_seconds),
                          absl::UTCTimeZone());
}

namespace {

// Whether an entity-tag list (RFC 9110 8.8.3; "*" is any tag) holds `etag`:
// weakly (both taken without W/) or strongly (neither weak, RFC 9110 8.8.3.2).
bool TagListMatches(std::string_view list, std::string_view etag, bool strong) {
  etag = Trim(etag);
  if (etag.empty()) return false;
  auto weak = [](std::string_view tag) {
    return tag.size() >= 2 && (tag[0] == 'W' || tag[0] == 'w') && tag[1] == '/';
  };
  auto opaque = [&](std::string_view tag) {
    tag = Trim(tag);
    if (weak(tag)) tag.remove_prefix(2);
    return tag;
  };
  if (strong && weak(etag)) return false;
  std::string_view stored = opaque(etag);
  list = Trim(list);
  if (list == "*") return true;
  while (!list.empty()) {
    // Entity-tags hold no commas outside quotes; split on commas between tags.
    size_t end = 0;
    bool quoted = false;
    for (; end < list.size(); ++end) {
      if (list[end] == '"') quoted = !quoted;
      if (list[end] == ',' && !quoted) break;
    }
    std::string_view tag = Trim(list.substr(0, end));
    list.remove_prefix(std::min(end + 1, list.size()));
    if (tag.empty() || (strong && weak(tag))) continue;
    if (opaque(tag) == stored) return true;
  }
  return false;
}

}  // namespace

bool IfNoneMatchMatches(std::string_view if_none_match, std::string_view etag) {
  return TagListMatches(if_none_match, etag, /*strong=*/false);
}

bool IfMatchMatches(std::string_view if_match, std::string_view etag) {
  return TagListMatches(if_match, etag, /*strong=*/true);
}

std::string JoinedValues(const http::HeaderMap& headers, std::string_view name,
                         bool* present) {
  std::string joined;
  *present = false;
  for (const auto& field : headers.fields()) {
    if (!Equals(field.name, name)) continue;
    // Cookie lines are one list of cookies (RFC 9113 8.2.3, RFC 6265 5.4).
    if (*present) joined.append(Equals(name, "cookie") ? "; " : ", ");
    joined.append(std::string(Trim(field.value)));
    *present = true;
  }
  return joined;
}

int64_t FreshnessLifetime(const CacheControl& cc,
                          const http::HeaderMap& headers,
                          int64_t response_time_seconds,
                          int64_t default_ttl_seconds) {
  if (cc.s_maxage >= 0) return cc.s_maxage;
  if (cc.max_age >= 0) return cc.max_age;
  if (const std::string* expires = headers.Get("expires")) {
    int64_t expires_at = 0;
    if (!ParseHttpDate(*expires, &expires_at))
      return 0;  // e.g. "0": already expired
    int64_t date = response_time_seconds;
    if (const std::string* d = headers.Get("date")) {
      int64_t parsed = 0;
      if (ParseHttpDate(*d, &parsed)) date = parsed;
    }
    // Bounded as delta-seconds are (RFC 9111 1.2.2): a far Expires (year
    // 3000) must not overflow the nanosecond arithmetic into "expired".
    return std::clamp<int64_t>(expires_at - date, 0, kMaxDelta);
  }
  return default_ttl_seconds > 0 ? default_ttl_seconds : -1;
}

int64_t CorrectedInitialAge(const http::HeaderMap& headers,
                            int64_t request_time_ns, int64_t response_time_ns) {
  int64_t apparent = 0;
  if (const std::string* d = headers.Get("date")) {
    int64_t date = 0;
    if (ParseHttpDate(*d, &date)) {
      // Date has whole seconds: compared at that resolution, a response
      // made and received within one second is not made older by the
      // fraction.
      int64_t received = response_time_ns / kNanosPerSecond;
      apparent = std::max<int64_t>(0, received - date) * kNanosPerSecond;
    }
  }
  int64_t age_value = 0;
  if (const std::string* a = headers.Get("age")) {
    // A list (several Age fields, or a comma in one): the first member
    // (RFC 9111 5.1).
    std::string_view v = *a;
    v = Trim(v.substr(0, v.find(',')));
    int64_t n = 0;
    auto [p, ec] = std::from_chars(v.data(), v.data() + v.size(), n);
    if (ec == std::errc() && p == v.data() + v.size() && n > 0) {
      age_value = std::min(n, kMaxDelta) * kNanosPerSecond;
    } else if (ec == std::errc::result_out_of_range && p == v.data() + v.size()) {
      age_value = kMaxDelta * kNanosPerSecond;  // RFC 9111 1.2.2: overflow is 2^31
    }
  }
  int64_t corrected_age =
      age_value + std::max<int64_t>(0, response_time_ns - request_time_ns);
  return std::max(apparent, corrected_age);
}

}  // namespace sluice::policy::cache
