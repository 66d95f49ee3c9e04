// The `cache` policy's filter. On the request head it builds the key,
// looks it up (one shard lock) and answers a usable entry itself; a miss
// or an entry that needs revalidating goes upstream, coalesced with the
// other misses of the key (ResponseStore::BeginFill), with conditionals
// added for a stale entry that has validators. On the upstream's head it
// answers a 304 from the refreshed entry, a 5xx or failure from a stale
// entry (stale-if-error), and otherwise decides whether the response is
// stored; the body is copied as it streams to the client
// (OnResponseData) and the entry committed when it went out whole
// (OnResponseEnd).
//
// The store is the process-wide one (response_store.h), namespaced by the
// policy's identity (internal.h): config versions that keep the policy
// keep its entries.
#include "dataplane/http/filter.h"

#include <algorithm>
#include <array>
#include <charconv>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/string_view.h"
#include "dataplane/auth/consumers.h"
#include "dataplane/policy/auth_util.h"
#include "dataplane/policy/cache/cache_config.pb.h"
#include "dataplane/policy/cache/cache_control.h"
#include "dataplane/policy/cache/internal.h"
#include "dataplane/policy/cache/response_store.h"
#include "dataplane/policy/registry.h"

namespace sluice::policy::cache {
namespace {

// How long a stale-while-revalidate refresh of a key keeps others from
// starting another one (a refresh that never stores frees the key then).
constexpr int64_t kRefreshClaimNanos = 30 * kNanosPerSecond;
constexpr char kCacheStatusHeader[] = "X-Cache-Status";
// How long a key whose response could not be stored has its misses go
// upstream together instead of one at a time (ResponseStore::EndFill).
constexpr int64_t kPassNanos = 30 * kNanosPerSecond;

absl::string_view AV(std::string_view s) {
  return absl::string_view(s.data(), s.size());
}

bool EqualsIgnoreCase(std::string_view a, std::string_view b) {
  return absl::EqualsIgnoreCase(AV(a), AV(b));
}

int64_t DurationNanos(const google::protobuf::Duration& d) {
  return d.seconds() * kNanosPerSecond + d.nanos();
}

// A number as decimal digits, without allocating.
class Digits {
 public:
  explicit Digits(uint64_t value)
      : end_(std::to_chars(buf_, buf_ + sizeof(buf_), value).ptr) {}
  std::string_view view() const { return std::string_view(buf_, end_ - buf_); }

 private:
  char buf_[24];
  char* end_;
};

// A key piece: a tag, the value's length (varint), the value.
void AppendPiece(std::string* key, char tag, std::string_view value) {
  key->push_back(tag);
  size_t n = value.size();
  do {
    char byte = static_cast<char>(n & 0x7f);
    n >>= 7;
    key->push_back(n != 0 ? static_cast<char>(byte | 0x80) : byte);
  } while (n != 0);
  key->append(value.data(), value.size());
}

// Fields a cache never stores or serves as stored: hop-by-hop and framing
// (RFC 9110 7.6.1), Age (computed), Set-Cookie, our own status, and the
// exchange's x-request-id (each answer carries its own request's).
bool IsUnstoredField(std::string_view name) {
  static constexpr std::string_view kNames[] = {"connection",
                                                "keep-alive",
                                                "proxy-connection",
                                                "proxy-authenticate",
                                                "proxy-authentication-info",
                                                "te",
                                                "trailer",
                                                "transfer-encoding",
                                                "upgrade",
                                                "content-length",
                                                "age",
                                                "set-cookie",
                                                "set-cookie2",
                                                "x-cache-status",
                                                "x-request-id"};
  for (std::string_view n : kNames) {
    if (EqualsIgnoreCase(name, n)) return true;
  }
  return false;
}

struct Settings {
  bool get = true;
  bool head = true;
  std::array<bool, 600> statuses{};
  std::vector<std::string> content_types;  // lower case
  int64_t default_ttl_seconds = 0;
  uint64_t max_object_bytes = kDefaultMaxObjectBytes;
  std::vector<std::string> query_params;  // sorted
  // The same, for the entries (purges compare KeyedPath with it).
  std::shared_ptr<const std::vector<std::string>> entry_query_params;
  std::vector<std::string> key_headers;   // lower case, sorted
  bool key_consumer = true;
  bool cache_set_cookie = false;
  bool honor_request_cache_control = false;
  int64_t lock_timeout = kDefaultLockTimeoutSeconds * kNanosPerSecond;
  int64_t stale_while_revalidate = 0;
  int64_t stale_if_error = 0;
  std::shared_ptr<Namespace> ns;
  std::string ns_prefix;  // the 8 bytes keys begin with
  ResponseStore* store = nullptr;
  Clock clock;
};

bool ContentTypeAllowed(const Settings& s, const http::HeaderMap& headers) {
  if (s.content_types.empty()) return true;
  const std::string* ct = headers.Get("content-type");
  if (ct == nullptr) return false;
  std::string_view type = *ct;
  type = type.substr(0, type.find(';'));
  while (!type.empty() && (type.back() == ' ' || type.back() == '\t'))
    type.remove_suffix(1);
  while (!type.empty() && (type.front() == ' ' || type.front() == '\t'))
    type.remove_prefix(1);
  for (const std::string& allowed : s.content_types) {
    if (absl::EndsWith(allowed, "/*")) {
      if (absl::StartsWithIgnoreCase(
              AV(type), absl::string_view(allowed.data(), allowed.size() - 1)))
        return true;
    } else if (EqualsIgnoreCase(type, allowed)) {
      return true;
    }
  }
  return false;
}

class CacheFilter : public http::Filter {
 public:
  explicit CacheFilter(const Settings& settings) : s_(settings) {}

  ~CacheFilter() override {
    if (waiter_ != nullptr) waiter_->Cancel();
    // A filler cut short (client gone, upstream reset): the waiters go
    // upstream.
    if (fill_token_ != 0) s_.store->EndFill(key_, fill_token_);
    // A refresh that stored nothing (failed, 5xx, not storable) must not
    // hold off the next one for kRefreshClaimNanos.
    if (background_ && !key_.empty()) s_.store->EndRefresh(key_);
    if (!counted_)
      CountResponse(route_table_, virtual_host_, route_, background_ ? CacheStatus::kNone : status_);
  }

  http::FilterStatus OnRequestHeaders(
      http::HeaderMap& headers, http::FilterCallbacks& callbacks) override {
    const http::StreamInfo& info = callbacks.info();
    callbacks_ = &callbacks;
    background_ = info.background;
    if (background_) {
      // No client sees a refresh's answer: the triggering client's
      // conditionals would make it a 304 or 412 that refreshes nothing.
      for (const char* name :
           {"if-none-match", "if-modified-since", "if-match", "if-unmodified-since", "if-range"}) {
        headers.Remove(name);
      }
    }
    client_authorization_ = info.client_authorization;
    authenticated_ = info.authenticated;
    keyed_by_caller_ = s_.key_consumer && info.consumer != nullptr && !info.anonymous_consumer;
    request_time_ = s_.clock();
    if (info.method == "HEAD" && s_.head) {
      head_ = true;
    } else if (info.method != "GET" || !s_.get) {
      if (info.method != "GET" && info.method != "HEAD" &&
          info.method != "OPTIONS" && info.method != "TRACE") {
        // RFC 9111 4.4: an unsafe method's success invalidates the URI's
        // entries.
        key_ = BuildKey(headers, info);
        invalidate_ = true;
      }
      return Bypass(headers, info);
    }
    if (headers.Get("range") != nullptr)
      return Bypass(headers, info);  // whole responses only
    // A GET with a body (as Envoy's cache, never stored or served): a hit
    // came before the body was held and checked (request-validation's 400
    // turned into a hit once the cache was warm), and a body still
    // trickling in held the fill, every other caller of the key waiting.
    if (info.request_content_length != 0) return Bypass(headers, info);
    // A WebSocket handshake is answered by the upstream's 101, never by a
    // stored response of the URI (nor made to wait on another's miss).
    if (info.upgrade) return Bypass(headers, info);
    if (QueryReadsOtherwise(info.path)) return Bypass(headers, info);
    if (s_.honor_request_cache_control && !background_) {
      request_cc_ = ParseCacheControl(headers);
      if (request_cc_.no_store) return Bypass(headers, info);
    }
    std::string& key = BuildKey(headers, info);
    for (int attempt = 0; attempt < 4; ++attempt) {
      std::shared_ptr<const Entry> entry = s_.store->Lookup(key, headers);
      int64_t now = s_.clock();
      if (entry != nullptr && !background_) {
        switch (Classify(*entry, now)) {
          case Use::kFresh:
            return Serve(entry, headers, CacheStatus::kHit);
          case Use::kStale:
            return Serve(entry, headers, CacheStatus::kStale);
          case Use::kStaleRefresh:
            if (s_.store->ClaimRefresh(key, now, now + kRefreshClaimNanos)) {
              callbacks.StartBackgroundRefresh();
            }
            return Serve(entry, headers, CacheStatus::kStale);
          case Use::kUpstream:
            break;
        }
      }
      status_ = entry != nullptr ? CacheStatus::kExpired : CacheStatus::kMiss;
      if (request_cc_.only_if_cached && !background_) {
        // RFC 9111 5.2.1.7: the client wants a stored response or none.
        NoteRoute(info);
        callbacks.SendLocalReply(504, "only-if-cached: no stored response may be used",
                                 http::HeaderMap());
        return http::FilterStatus::kStopLocalReply;
      }
      key_ = key;
      Remember(headers, info);
      if (head_)
        return GoUpstream(headers,
                          std::move(entry));  // a HEAD response fills nothing
      // Made only when the request is to wait (most misses fill).
      auto make_waiter = [&]() -> std::shared_ptr<Waiter> {
        if (background_ || s_.lock_timeout <= 0) return nullptr;
        return std::make_shared<Waiter>(
            callbacks.MakeResumeHandle(),
            [this](std::shared_ptr<const Entry> stored, bool stale_on_error) {
              OnWaitOver(std::move(stored), stale_on_error);
            });
      };
      std::shared_ptr<Waiter> waiter;
      uint64_t token = 0;
      switch (s_.store->BeginFill(key_, headers, entry.get(), make_waiter, now, &token,
                                  &waiter)) {
        case ResponseStore::FillRole::kChanged:
          continue;  // stored meanwhile: look again
        case ResponseStore::FillRole::kWaiter:
          waiter_ = std::move(waiter);
          request_ = &headers;
          waited_on_ = std::move(entry);  // a stale one may still answer an error
          AddDeadline(now + s_.lock_timeout, waiter_);
          // lock_timeout bounds the wait, not the route timeout (which
          // starts when the waiter goes upstream, as nginx's does).
          callbacks.SetPauseLimit(absl::Nanoseconds(s_.lock_timeout));
          return http::FilterStatus::kStopIteration;
        case ResponseStore::FillRole::kFiller:
          fill_token_ = token;
          break;
        case ResponseStore::FillRole::kUncoalesced:
          break;
      }
      return GoUpstream(headers, std::move(entry));
    }
    key_ = key;
    Remember(headers, info);
    return GoUpstream(headers, nullptr);
  }

  http::FilterStatus OnUpstreamHeaders(
      int status, const http::HeaderMap& headers,
      http::FilterCallbacks& callbacks) override {
    if (invalidate_ && status >= 200 && status < 400)
      s_.store->Invalidate(key_);
    if (!upstream_) return http::FilterStatus::kContinue;
    int64_t now = s_.clock();
    if (status == 304 && added_conditionals_ && stale_ != nullptr) {
      // A Set-Cookie in the 304 is this client's: it gets it, and as a
      // response carrying one on a miss, the refreshed entry is not stored
      // unless cache_set_cookie (it was stored, and the cookie lost).
      const bool cookie = headers.Get("set-cookie") != nullptr;
      if (!SelectsEntry(headers, *stale_)) {
        // RFC 9111 4.3.4: a 304 naming another entity-tag than the
        // entry's does not select it, and must not update it. This client
        // gets the entry as it is (as Envoy answers), and the entry goes:
        // the next request fetches the representation the origin now has
        // rather than revalidating the old one again and again.
        s_.store->Invalidate(key_);
        s_.store->EndFill(key_, fill_token_);
        fill_token_ = 0;
        // Not confirmed: Expired, as a stale entry the upstream did not
        // confirm (it was Revalidated).
        return Serve(stale_, *request_, CacheStatus::kExpired, cookie ? &headers : nullptr);
      }
      bool storable = false;
      std::shared_ptr<const Entry> refreshed =
          Refresh(*stale_, headers, now, &storable);
      if (cookie && !s_.cache_set_cookie) storable = false;
      if (storable) {
        s_.store->Insert(key_, refreshed, fill_token_);
      } else {
        // A 304 that says no-store or private: the origin wants the
        // response kept no longer (the old entry would answer stale-if-
        // error, and be revalidated on every request).
        const CacheControl said = ParseCacheControl(headers);
        if (said.no_store || said.is_private) s_.store->Invalidate(key_);
        s_.store->EndFill(key_, fill_token_);
      }
      fill_token_ = 0;
      return Serve(refreshed, *request_, CacheStatus::kRevalidated, cookie ? &headers : nullptr);
    }
    if (status >= 500 && StaleIfError(now)) return ServeStaleOnError();
    std::unique_ptr<Entry> entry =
        status == 304 || head_ ? nullptr : MakeEntry(status, headers, now);
    if (entry == nullptr) {
      // Not storable: the key's next misses need not wait for each other.
      // (A 304 to the client's own conditional says nothing of the
      // resource's next response: coalescing stays.)
      s_.store->EndFill(key_, fill_token_, status == 304 ? 0 : now + kPassNanos);
      fill_token_ = 0;
      return http::FilterStatus::kContinue;
    }
    // A declared length too large to store: not buffered at all.
    uint64_t declared = 0;
    if (const std::string* length = headers.Get("content-length");
        length != nullptr && absl::SimpleAtoi(*length, &declared) && declared > StorableBytes()) {
      s_.store->EndFill(key_, fill_token_, now + kPassNanos);
      fill_token_ = 0;
      return http::FilterStatus::kContinue;
    }
    pending_ = std::move(entry);
    return http::FilterStatus::kContinue;
  }

  // The largest body a miss buffers to store.
  uint64_t StorableBytes() const {
    return std::min<uint64_t>(s_.max_object_bytes, s_.store->budget());
  }

  http::FilterStatus OnUpstreamError(
      int status, http::FilterCallbacks& callbacks) override {
    if (!upstream_) return http::FilterStatus::kContinue;
    if (StaleIfError(s_.clock())) return ServeStaleOnError();
    s_.store->EndFill(key_, fill_token_);
    fill_token_ = 0;
    return http::FilterStatus::kContinue;
  }

  void OnResponseData(std::string_view data,
                      http::FilterCallbacks& callbacks) override {
    if (pending_ == nullptr) return;
    // Over max_object_bytes, or more than the whole cache holds (it could
    // not be stored): it passes through, and is buffered no further.
    if (pending_->body.size() + data.size() > StorableBytes()) {
      pending_.reset();  // too large: it passes through
      s_.store->EndFill(key_, fill_token_, s_.clock() + kPassNanos);
      fill_token_ = 0;
      return;
    }
    pending_->body.append(data.data(), data.size());
  }

  void OnResponseEnd(http::FilterCallbacks& callbacks) override {
    if (pending_ == nullptr) return;
    pending_->Account(key_.size());
    s_.store->Insert(key_, std::shared_ptr<const Entry>(std::move(pending_)),
                     fill_token_);
    fill_token_ = 0;
  }

  void OnResponseHeaders(int status, http::HeaderMap& headers,
                         http::FilterCallbacks& callbacks) override {
    if (status_ == CacheStatus::kNone) return;
    headers.Set(kCacheStatusHeader, CacheStatusName(status_));
    callbacks.SetCacheStatus(CacheStatusName(status_));
    if (!counted_) {
      counted_ = true;
      CountResponse(route_table_, virtual_host_, route_, background_ ? CacheStatus::kNone : status_);
    }
  }

 private:
  enum class Use { kFresh, kStale, kStaleRefresh, kUpstream };

  // The key into a per-thread buffer (no allocation once it has grown):
  // namespace, route, method, host, path, query, key headers, consumer.
  std::string& BuildKey(const http::HeaderMap& headers,
                        const http::StreamInfo& info) {
    thread_local std::string key;
    key.clear();
    key.append(s_.ns_prefix);
    // The route where it is (names are unique only within a virtual host,
    // and two route tables may both have one), and the scheme: an http
    // answer (a redirect to https) is not one for https (RFC 9111 2).
    AppendPiece(&key, 't', info.route_table);
    AppendPiece(&key, 'v', info.virtual_host);
    AppendPiece(&key, 'r', info.route_name);
    AppendPiece(&key, 's', info.scheme);
    AppendPiece(&key, 'm', "GET");  // HEAD looks up GET's entry
    AppendPiece(&key, 'h', HostOf(headers));
    for (size_t i = key.size() - HostOf(headers).size(); i < key.size(); ++i) {
      key[i] = absl::ascii_tolower(static_cast<unsigned char>(key[i]));
    }
    // The Host's port goes upstream as sent, and an upstream that builds
    // links or redirects from Host answers per port: keyed, unless it is
    // the scheme's own (then the links work alike).
    if (const uint32_t port = PortOf(headers);
        port != 0 && port != (info.scheme == "https" ? 443u : 80u)) {
      AppendPiece(&key, 'o', absl::StrCat(port));
    }
    std::string_view path = info.path;
    size_t q = path.find('?');
    std::string_view query =
        q == std::string_view::npos ? "" : path.substr(q + 1);
    AppendPiece(&key, 'p', path.substr(0, q));
    if (s_.query_params.empty()) {
      AppendPiece(&key, 'q', query);
    } else {
      // The named parameters, by name (the config's list is sorted; equal
      // names keep their order).
      for (const std::string& name : s_.query_params) {
        for (absl::string_view pair : absl::StrSplit(AV(query), '&')) {
          const size_t eq = pair.find('=');
          absl::string_view pname = pair.substr(0, eq);
          if (!QueryNameIs(std::string_view(pname.data(), pname.size()), name)) continue;
          // The name as configured, the value as sent.
          AppendPiece(&key, 'a', name);
          absl::string_view value = eq == absl::string_view::npos ? "" : pair.substr(eq);
          AppendPiece(&key, '=', std::string_view(value.data(), value.size()));
        }
      }
    }
    for (const std::string& name : s_.key_headers) {
      bool present = false;
      std::string value = JoinedValues(headers, name, &present);
      AppendPiece(&key, present ? 'H' : 'N', value);
    }
    // The forwarded host and port a listener with trusted_proxy_hops
    // passes on (at 0 hops they are removed, and absent here): an upstream
    // that builds links or redirects from them answers per value, so an
    // unkeyed one would let a client poison the entry for everyone.
    for (std::string_view name :
         {"x-forwarded-host", "x-forwarded-port", "forwarded", "x-forwarded-prefix"}) {
      bool present = false;
      std::string value = JoinedValues(headers, name, &present);
      if (present) {
        AppendPiece(&key, 'F', name);
        AppendPiece(&key, '=', value);
      }
    }
    if (s_.key_consumer) {
      AppendPiece(&key, 'c',
                  info.consumer != nullptr ? info.consumer->name : "");
      if (info.consumer != nullptr) {
        // Which consumer of that name: one made again with other
        // credentials or groups starts with no entries.
        const uint64_t hash = info.consumer->content_hash;
        AppendPiece(&key, 'v',
                    std::string_view(reinterpret_cast<const char*>(&hash), sizeof(hash)));
      }
      // What the upstream is told about the caller besides its name (jwt
      // claims: one consumer's tokens may carry other roles).
      if (!info.consumer_claims.empty()) AppendPiece(&key, 'j', info.consumer_claims);
    }
    return key;
  }

  // With query_params the key holds those parameters as the gateway reads
  // them. A query that also holds a spelling an upstream reads as one of
  // them (PHP's `page[]` and `pag%65[x]`, ASP.NET's `PAGE`, one after a
  // ';' for Rack 2, Python before 3.9.2, Go before 1.17) may have been
  // answered for a value the key does not hold: not cached.
  bool QueryReadsOtherwise(std::string_view path) const {
    if (s_.query_params.empty()) return false;
    const size_t q = path.find('?');
    if (q == std::string_view::npos) return false;
    const absl::string_view query = AV(path.substr(q + 1));
    for (const std::string& name : s_.query_params) {
      if (QueryParameterAfterSemicolon(path, name)) return true;
      for (absl::string_view pair : absl::StrSplit(query, '&')) {
        const absl::string_view pname = pair.substr(0, pair.find('='));
        const std::string_view sent(pname.data(), pname.size());
        if (QueryNameIs(sent, name)) continue;
        if (SameParameterName(sent, name) || absl::EqualsIgnoreCase(PercentDecode(sent), name)) {
          return true;
        }
      }
    }
    return false;
  }

  // The port of the request's Host (`api.test:8080`, `[::1]:8080`), or 0
  // when it names none (or an empty one).
  static uint32_t PortOf(const http::HeaderMap& headers) {
    const std::string* h = headers.Get("host");
    if (h == nullptr) return 0;
    std::string_view host = *h;
    const size_t bracket = host.rfind(']');
    const size_t colon = host.rfind(':');
    if (colon == std::string_view::npos || (bracket != std::string_view::npos && colon < bracket)) {
      return 0;
    }
    uint32_t port = 0;
    for (char c : host.substr(colon + 1)) {
      if (c < '0' || c > '9' || port > 65535) return 0;
      port = port * 10 + static_cast<uint32_t>(c - '0');
    }
    return port;
  }

  // The request's host without its port.
  static std::string_view HostOf(const http::HeaderMap& headers) {
    std::string_view host;
    if (const std::string* h = headers.Get("host")) host = *h;
    if (!host.empty() && host.front() == '[')
      return host.substr(0, host.find(']') + 1);
    host = host.substr(0, host.find(':'));
    // `example.com.` is the host `example.com` is (routing reads it so).
    if (!host.empty() && host.back() == '.') host.remove_suffix(1);
    return host;
  }

  // What outlives the head hook on the paths that do not answer at once
  // (the hit path copies nothing).
  // Where the route is, for the metric (its name also for purges).
  void NoteRoute(const http::StreamInfo& info) {
    route_.assign(info.route_name.data(), info.route_name.size());
    route_table_.assign(info.route_table.data(), info.route_table.size());
    virtual_host_.assign(info.virtual_host.data(), info.virtual_host.size());
  }
  // What an entry made from this request records (for purges). The path
  // is the stream's (it lives, unchanged, as long as the exchange) and is
  // copied only when a response is stored.
  void Remember(const http::HeaderMap& headers, const http::StreamInfo& info) {
    NoteRoute(info);
    host_ = absl::AsciiStrToLower(AV(HostOf(headers)));
    path_view_ = info.path;
  }

  http::FilterStatus Bypass(const http::HeaderMap& headers,
                            const http::StreamInfo& info) {
    status_ = CacheStatus::kBypass;
    NoteRoute(info);
    return http::FilterStatus::kContinue;
  }

  Use Classify(const Entry& entry, int64_t now) const {
    int64_t age = entry.Age(now);
    int64_t lifetime = entry.lifetime;
    bool revalidate = entry.no_cache;
    int64_t max_stale = 0;
    if (s_.honor_request_cache_control) {
      const CacheControl& cc = request_cc_;
      if (cc.no_cache || cc.max_age == 0) revalidate = true;
      if (cc.max_age > 0 && age > cc.max_age * kNanosPerSecond)
        revalidate = true;
      if (cc.min_fresh >= 0) lifetime -= cc.min_fresh * kNanosPerSecond;
      if (cc.max_stale >= 0) max_stale = cc.max_stale * kNanosPerSecond;
    }
    if (revalidate) return Use::kUpstream;
    if (age < lifetime) return Use::kFresh;
    if (entry.must_revalidate) return Use::kUpstream;
    if (max_stale > 0 && age < entry.lifetime + max_stale) return Use::kStale;
    if (entry.stale_while_revalidate > 0 &&
        age < entry.lifetime + entry.stale_while_revalidate) {
      return Use::kStaleRefresh;
    }
    return Use::kUpstream;
  }

  // Whether the stale entry may answer instead of an upstream failure.
  bool StaleIfError(int64_t now) const {
    if (stale_ == nullptr || background_) return false;
    const Entry& e = *stale_;
    return !e.must_revalidate && !e.no_cache && e.stale_if_error > 0 &&
           e.Age(now) < e.lifetime + e.stale_if_error;
  }

  http::FilterStatus ServeStaleOnError() {
    s_.store->EndFill(key_, fill_token_, 0, stale_);
    fill_token_ = 0;
    pending_.reset();
    return Serve(stale_, *request_, CacheStatus::kStale);
  }

  // The request goes upstream; `stale` (maybe nullptr) is the entry it
  // revalidates, or serves on error.
  http::FilterStatus GoUpstream(http::HeaderMap& headers,
                                std::shared_ptr<const Entry> stale) {
    upstream_ = true;
    request_ = &headers;
    stale_ = std::move(stale);
    // A stale entry is revalidated with its own validators, in place of a
    // client's If-None-Match / If-Modified-Since (RFC 9111 4.3.2): a 304
    // then refreshes the entry, and the client's conditional is answered
    // from it (else a browser revalidating a URL never refreshed it). A
    // client's If-Match / If-Unmodified-Since goes as it is.
    const bool precondition = headers.Get("if-match") != nullptr ||
                              headers.Get("if-unmodified-since") != nullptr;
    if (stale_ != nullptr && !precondition && !head_ &&
        (!stale_->etag.empty() || !stale_->last_modified.empty())) {
      request_copy_ = headers;  // as the client sent it
      request_ = &request_copy_;
      headers.Remove("if-none-match");
      headers.Remove("if-modified-since");
      if (!stale_->etag.empty()) headers.Set("If-None-Match", stale_->etag);
      if (!stale_->last_modified.empty())
        headers.Set("If-Modified-Since", stale_->last_modified);
      added_conditionals_ = true;
    }
    return http::FilterStatus::kContinue;
  }

  // A waiter's turn (on the worker): the filler's entry, or nullptr (it
  // gave up, or the lock timed out): upstream, uncoalesced.
  void OnWaitOver(std::shared_ptr<const Entry> stored, bool stale_on_error) {
    waiter_.reset();
    if (stale_on_error) {
      // The filler's upstream failed and it served this stale entry: so
      // does the waiter it may answer (stale-if-error, RFC 5861 4), rather
      // than each trying the failing upstream again (Varnish's grace).
      std::shared_ptr<const Entry> stale = std::move(stored);
      if (stale->Matches(*request_)) {
        stale_ = stale;
        if (StaleIfError(s_.clock())) {
          Serve(stale_, *request_, CacheStatus::kStale);
          return;
        }
      }
      stored = nullptr;
    }
    if (stored != nullptr && stored->Matches(*request_) &&
        Classify(*stored, s_.clock()) == Use::kFresh) {
      // Just stored (or just revalidated) for the same key, and fresh: a
      // hit. One that must be validated before each use (no-cache, stale
      // on arrival) may not answer a request it was not the answer to
      // (RFC 9111 4): the waiter goes upstream.
      Serve(stored, *request_, CacheStatus::kHit);
      return;
    }
    upstream_ = true;
    // RFC 9111 4.2.3: request_time is when the request that gets the
    // response goes upstream, not when this one began to wait (the wait
    // would count in the stored entry's Age).
    request_time_ = s_.clock();
    // The request goes as it is (no conditionals added); the stale entry it
    // found stays, to answer an upstream failure (stale-if-error) as it
    // would have for the filler.
    stale_ = std::move(waited_on_);
    callbacks_->ContinueRequest();
  }

  // Answers from `entry`: a 304 when the client's conditional matches it.
  // `upstream`: the upstream's 304 that refreshed `entry`, whose Set-Cookie
  // fields this answer carries (never stored).
  http::FilterStatus Serve(const std::shared_ptr<const Entry>& entry,
                           const http::HeaderMap& request, CacheStatus status,
                           const http::HeaderMap* upstream = nullptr) {
    status_ = status;
    served_ = entry;  // kept alive while the response is sent
    callbacks_->SetCacheStatus(CacheStatusName(status));
    if (!counted_) {
      counted_ = true;
      const http::StreamInfo& info = callbacks_->info();
      CountResponse(info.route_table, info.virtual_host, info.route_name,
                    background_ ? CacheStatus::kNone : status);
    }
    const Entry& e = *entry;
    Digits age(static_cast<uint64_t>(e.Age(s_.clock()) / kNanosPerSecond));
    http::HeaderMap headers;
    if (PreconditionFailed(e, request)) {
      // What the origin would answer (RFC 9110 13.2.2), as nginx answers
      // from its cache: the client's If-Match or If-Unmodified-Since is
      // not for the stored representation.
      headers.Set(kCacheStatusHeader, CacheStatusName(status));
      AddSetCookies(upstream, headers);
      callbacks_->SendResponse(412, headers, "");
      return http::FilterStatus::kStopLocalReply;
    }
    if (NotModified(e, request)) {
      static constexpr std::string_view kKept[] = {
          "etag", "last-modified", "cache-control",   "expires",
          "vary", "date",          "content-location"};
      for (const auto& f : e.headers) {
        for (std::string_view k : kKept) {
          if (EqualsIgnoreCase(f.name, k)) headers.Add(f.name, f.value);
        }
      }
      headers.Set("Age", age.view());
      headers.Set(kCacheStatusHeader, CacheStatusName(status));
      AddSetCookies(upstream, headers);
      callbacks_->SendResponse(304, headers, "");
      return http::FilterStatus::kStopLocalReply;
    }
    for (const auto& f : e.headers) headers.Add(f.name, f.value);
    AddSetCookies(upstream, headers);
    headers.Set("Age", age.view());
    headers.Set(kCacheStatusHeader, CacheStatusName(status));
    callbacks_->SendResponse(e.status, headers, e.body);
    return http::FilterStatus::kStopLocalReply;
  }

  static void AddSetCookies(const http::HeaderMap* from, http::HeaderMap& to) {
    if (from == nullptr) return;
    for (const auto& f : from->fields()) {
      if (EqualsIgnoreCase(f.name, "set-cookie")) to.Add(f.name, f.value);
    }
  }

  // RFC 9110 13.2.2, steps 1 and 2, on a stored 2xx (a server ignores the
  // preconditions of a request it would not answer 2xx): If-Match (strong;
  // "*" holds, a representation is stored), else If-Unmodified-Since
  // against Last-Modified (ignored without one, or with an invalid date).
  static bool PreconditionFailed(const Entry& e, const http::HeaderMap& request) {
    if (e.status < 200 || e.status > 299) return false;
    bool present = false;
    std::string if_match = JoinedValues(request, "if-match", &present);
    if (present) {
      return absl::StripAsciiWhitespace(if_match) != "*" && !IfMatchMatches(if_match, e.etag);
    }
    const std::string* ius = request.Get("if-unmodified-since");
    int64_t since = 0, modified = 0;
    if (ius == nullptr || e.last_modified.empty() || !ParseHttpDate(*ius, &since) ||
        !ParseHttpDate(e.last_modified, &modified)) {
      return false;
    }
    return modified > since;
  }

  // RFC 9110 13.1.2/13.1.3 for a GET or HEAD: If-None-Match (weak), else
  // If-Modified-Since against Last-Modified (or Date).
  static bool NotModified(const Entry& e, const http::HeaderMap& request) {
    if (e.status != 200) return false;
    // Every field line of it: RFC 9110 5.3 makes them one list.
    bool present = false;
    std::string inm = JoinedValues(request, "if-none-match", &present);
    if (present) {
      return IfNoneMatchMatches(inm, e.etag) || absl::StripAsciiWhitespace(inm) == "*";
    }
    const std::string* ims = request.Get("if-modified-since");
    if (ims == nullptr) return false;
    int64_t since = 0, modified = 0;
    if (!ParseHttpDate(*ims, &since)) return false;
    std::string_view lm = e.last_modified;
    if (lm.empty()) {
      for (const auto& f : e.headers) {
        if (EqualsIgnoreCase(f.name, "date")) lm = f.value;
      }
    }
    return !lm.empty() && ParseHttpDate(lm, &modified) && modified <= since;
  }

  // The response as an entry, or nullptr when it may not be stored.
  std::unique_ptr<Entry> MakeEntry(int status, const http::HeaderMap& headers,
                                   int64_t now) {
    if (status < 0 || status >= 600 || !s_.statuses[status]) return nullptr;
    CacheControl cc = ParseCacheControl(headers);
    if (cc.no_store || cc.is_private) return nullptr;
    if (!SharedMayKeep(cc)) return nullptr;
    if ((headers.Get("set-cookie") != nullptr || headers.Get("set-cookie2") != nullptr) &&
        !s_.cache_set_cookie)
      return nullptr;
    if (!ContentTypeAllowed(s_, headers)) return nullptr;
    // No freshness at all (FreshnessLifetime < 0) and nothing to revalidate
    // with every time: not stored; known before anything is copied.
    if (cc.s_maxage < 0 && cc.max_age < 0 && s_.default_ttl_seconds <= 0 && !cc.no_cache &&
        headers.Get("expires") == nullptr) {
      return nullptr;
    }
    auto entry = std::make_unique<Entry>();
    for (const auto& f : headers.fields()) {
      if (!EqualsIgnoreCase(f.name, "vary")) continue;
      for (absl::string_view name :
           absl::StrSplit(f.value, ',', absl::SkipWhitespace())) {
        std::string lower =
            absl::AsciiStrToLower(absl::StripAsciiWhitespace(name));
        if (lower.empty()) continue;
        if (lower == "*") return nullptr;  // never matches
        Entry::VaryField field;
        field.value = JoinedValues(*request_, lower, &field.present);
        field.name = std::move(lower);
        entry->vary.push_back(std::move(field));
      }
    }
    entry->status = status;
    for (const auto& f : headers.fields()) {
      if (!IsUnstoredField(f.name)) entry->headers.push_back(f);
    }
    if (headers.Get("date") == nullptr) {
      entry->headers.push_back({"Date", FormatHttpDate(now / kNanosPerSecond)});
    }
    if (!Time(*entry, cc, headers, now)) return nullptr;
    entry->route = route_;
    entry->host = host_;
    entry->path.assign(path_view_.data(), path_view_.size());
    entry->query_params = s_.entry_query_params;
    return entry;
  }

  // Fills the entry's times and validators from the response; false when
  // it has no freshness and nothing makes it worth keeping.
  bool Time(Entry& e, const CacheControl& cc, const http::HeaderMap& response,
            int64_t now) {
    http::HeaderMap stored;
    for (const auto& f : e.headers) stored.Add(f.name, f.value);
    int64_t lifetime = FreshnessLifetime(cc, stored, now / kNanosPerSecond,
                                         s_.default_ttl_seconds);
    if (const std::string* etag = stored.Get("etag")) e.etag = *etag;
    if (const std::string* lm = stored.Get("last-modified"))
      e.last_modified = *lm;
    bool validator = !e.etag.empty() || !e.last_modified.empty();
    e.no_cache = cc.no_cache;
    e.must_revalidate =
        cc.must_revalidate || cc.proxy_revalidate || cc.s_maxage >= 0;
    e.stale_while_revalidate = cc.stale_while_revalidate >= 0
                                   ? cc.stale_while_revalidate * kNanosPerSecond
                                   : s_.stale_while_revalidate;
    e.stale_if_error = cc.stale_if_error >= 0
                           ? cc.stale_if_error * kNanosPerSecond
                           : s_.stale_if_error;
    if (lifetime < 0) {
      if (!(cc.no_cache && validator)) return false;  // no freshness at all
      lifetime = 0;
    }
    // Validated before every use, with nothing to validate it by: never
    // usable.
    if (cc.no_cache && !validator) return false;
    bool stale_use = !e.must_revalidate &&
                     (e.stale_while_revalidate > 0 || e.stale_if_error > 0);
    if (lifetime == 0 && !validator && !stale_use)
      return false;  // never usable
    e.lifetime = lifetime * kNanosPerSecond;
    e.request_time = request_time_;
    e.response_time = now;
    e.corrected_initial_age = CorrectedInitialAge(response, request_time_, now);
    // Stale on arrival (Age at least its lifetime), with no validator and
    // no stale use: never usable either.
    if (!validator && !stale_use && e.corrected_initial_age >= e.lifetime) return false;
    return true;
  }

  // RFC 9111 3.5: an authenticated request's response, only when the
  // upstream says a shared cache may keep it, or when the entry is the
  // caller's own: keyed by the consumer the gateway identified, with no
  // Authorization going upstream (the answer may be made for a field the
  // key does not hold). Decided on the request as the client sent it: an
  // Authorization a policy removed still counts; so does, with
  // key_consumer, a credential a policy accepted that names no consumer
  // (a jwt cookie: else every token holder shared one entry). A 304 that
  // refreshes an entry is such a response too.
  bool SharedMayKeep(const CacheControl& cc) const {
    return cc.is_public || cc.s_maxage >= 0 || cc.must_revalidate ||
           !(request_->Get("authorization") != nullptr ||
             (client_authorization_ && !keyed_by_caller_) ||
             (authenticated_ && s_.key_consumer && !keyed_by_caller_));
  }

  // RFC 9111 4.3.4: whether the upstream's 304 selects `entry` for update.
  // A 304 with an entity-tag selects an entry with the same one: strongly
  // compared when the 304's is strong (both strong, same opaque tag),
  // weakly when it is weak. One with none (no ETag is sent with it, or the
  // origin validated by date) selects the entry this request revalidated.
  // An ETag field that is no one entity-tag (`*`, a list, on one line or
  // several, no quotes) selects nothing: stored, `*` would go back as If-None-Match: *, which
  // any representation matches.
  static bool SelectsEntry(const http::HeaderMap& fresh, const Entry& entry) {
    const std::string* field = fresh.Get("etag");
    if (field == nullptr) {
      // Only a Last-Modified, a weak validator: it must be the entry's
      // (the same instant). Before: a 304 naming a later one refreshed the
      // entry, whose old body then went out under the new date.
      const std::string* modified = fresh.Get("last-modified");
      if (modified == nullptr) return true;
      int64_t fresh_time = 0, entry_time = 0;
      return !entry.last_modified.empty() && ParseHttpDate(*modified, &fresh_time) &&
             ParseHttpDate(entry.last_modified, &entry_time) && fresh_time == entry_time;
    }
    // Two ETag field lines are a list too (RFC 9110 5.3), and ETag is one
    // tag: before, the first line was matched and the others stored.
    size_t lines = 0;
    for (const auto& f : fresh.fields()) lines += EqualsIgnoreCase(f.name, "etag") ? 1 : 0;
    if (lines > 1) return false;
    auto parse = [](std::string_view tag, bool* weak, std::string_view* opaque) {
      auto blank = [](char c) { return c == ' ' || c == '\t'; };
      while (!tag.empty() && blank(tag.front())) tag.remove_prefix(1);
      while (!tag.empty() && blank(tag.back())) tag.remove_suffix(1);
      *weak = tag.size() >= 2 && tag[0] == 'W' && tag[1] == '/';
      if (*weak) tag.remove_prefix(2);
      // entity-tag = [ W/ ] DQUOTE *etagc DQUOTE (RFC 9110 8.8.3)
      if (tag.size() < 2 || tag.front() != '"' || tag.back() != '"') return false;
      *opaque = tag.substr(1, tag.size() - 2);
      return opaque->find('"') == std::string_view::npos;
    };
    bool fresh_weak = false, entry_weak = false;
    std::string_view fresh_tag, entry_tag;
    if (!parse(*field, &fresh_weak, &fresh_tag)) return false;
    if (!parse(entry.etag, &entry_weak, &entry_tag)) return false;
    if (fresh_tag != entry_tag) return false;
    return fresh_weak || !entry_weak;
  }

  // RFC 9111 4.3.4: the stored response with the 304's fields replacing
  // its fields of the same names, timed from now; `storable` false when
  // the merged response may no longer be stored (it still answers this
  // request).
  std::shared_ptr<const Entry> Refresh(const Entry& old,
                                       const http::HeaderMap& fresh,
                                       int64_t now, bool* storable) {
    auto e = std::make_shared<Entry>(old);
    for (const auto& f : fresh.fields()) {
      if (IsUnstoredField(f.name)) continue;
      e->headers.erase(std::remove_if(e->headers.begin(), e->headers.end(),
                                      [&](const http::HeaderMap::Field& g) {
                                        return EqualsIgnoreCase(g.name, f.name);
                                      }),
                       e->headers.end());
    }
    for (const auto& f : fresh.fields()) {
      if (!IsUnstoredField(f.name)) e->headers.push_back(f);
    }
    if (fresh.Get("date") == nullptr) {
      for (auto& f : e->headers) {
        if (EqualsIgnoreCase(f.name, "date"))
          f.value = FormatHttpDate(now / kNanosPerSecond);
      }
    }
    http::HeaderMap merged;
    for (const auto& f : e->headers) merged.Add(f.name, f.value);
    CacheControl cc = ParseCacheControl(merged);
    // An authenticated request's 304 refreshes the entry only as its 200
    // would have been stored (its fields, a user's, reached every later
    // client, and its lifetime was theirs).
    *storable = !cc.no_store && !cc.is_private && SharedMayKeep(cc) && Time(*e, cc, fresh, now);
    if (!*storable) {
      e->response_time = now;
      e->corrected_initial_age = CorrectedInitialAge(fresh, request_time_, now);
    }
    e->Account(key_.size());
    return e;
  }

  const Settings& s_;
  http::FilterCallbacks* callbacks_ = nullptr;
  CacheStatus status_ = CacheStatus::kNone;
  bool counted_ = false;
  bool background_ = false;
  bool head_ = false;
  bool client_authorization_ = false;  // it came with Authorization
  bool authenticated_ = false;         // a policy accepted a credential
  bool keyed_by_caller_ = false;  // the key holds its own consumer
  bool upstream_ = false;  // the request went (or goes) upstream through us
  bool added_conditionals_ = false;
  bool invalidate_ =
      false;  // an unsafe method: a success removes the key's entries
  int64_t request_time_ = 0;
  CacheControl request_cc_;
  std::string route_;
  std::string route_table_;
  std::string virtual_host_;
  std::string host_;
  std::string_view path_view_;
  std::string key_;
  // The request's fields, for Vary and conditionals once past the head
  // hook: the stream's own map (it lives as long as the exchange), or
  // request_copy_ when conditionals were added to the stream's for the
  // upstream (the client's must stay as it sent them).
  const http::HeaderMap* request_ = nullptr;
  http::HeaderMap request_copy_;
  std::shared_ptr<const Entry> stale_;
  // The stale entry a waiter found (kept for stale_ once the wait is over).
  std::shared_ptr<const Entry> waited_on_;
  std::shared_ptr<const Entry> served_;
  std::shared_ptr<Waiter> waiter_;
  uint64_t fill_token_ = 0;
  std::unique_ptr<Entry> pending_;
};

class CacheFilterFactory : public http::FilterFactory {
 public:
  explicit CacheFilterFactory(Settings settings)
      : settings_(std::move(settings)) {}
  std::unique_ptr<http::Filter> CreateFilter() const override {
    return std::make_unique<CacheFilter>(settings_);
  }
  std::string_view policy_name() const override { return kPolicyName; }
  http::FilterPhase phase() const override { return http::FilterPhase::kCache; }
  bool observes_upstream() const override { return true; }

 private:
  const Settings settings_;
};

class CachePolicyFactory : public PolicyFactory {
 public:
  std::string name() const override { return kPolicyName; }
  absl::StatusOr<std::shared_ptr<const http::FilterFactory>> Compile(
      const google::protobuf::Message& message) const override {
    const auto& config = static_cast<const v1::CacheConfig&>(message);
    Settings s;
    if (!config.methods().empty()) {
      s.get = s.head = false;
      for (const std::string& m : config.methods()) {
        if (EqualsIgnoreCase(m, "GET")) s.get = true;
        if (EqualsIgnoreCase(m, "HEAD")) s.head = true;
      }
    }
    if (config.statuses().empty()) {
      for (int status : kDefaultStatuses) s.statuses[status] = true;
    } else {
      for (uint32_t status : config.statuses()) {
        if (status < s.statuses.size()) s.statuses[status] = true;
      }
    }
    for (const std::string& t : config.content_types()) {
      s.content_types.push_back(absl::AsciiStrToLower(t));
    }
    s.default_ttl_seconds =
        (DurationNanos(config.default_ttl()) + kNanosPerSecond - 1) /
        kNanosPerSecond;
    if (config.has_max_object_bytes())
      s.max_object_bytes = config.max_object_bytes();
    s.query_params.assign(config.query_params().begin(),
                          config.query_params().end());
    std::sort(s.query_params.begin(), s.query_params.end());
    s.entry_query_params = std::make_shared<const std::vector<std::string>>(s.query_params);
    for (const std::string& h : config.key_headers()) {
      s.key_headers.push_back(absl::AsciiStrToLower(h));
    }
    std::sort(s.key_headers.begin(), s.key_headers.end());
    s.key_consumer = !config.has_key_consumer() || config.key_consumer();
    s.cache_set_cookie = config.cache_set_cookie();
    s.honor_request_cache_control = config.honor_request_cache_control();
    if (config.has_lock_timeout())
      s.lock_timeout = DurationNanos(config.lock_timeout());
    s.stale_while_revalidate = DurationNanos(config.stale_while_revalidate());
    s.stale_if_error = DurationNanos(config.stale_if_error());
    s.store = &ResponseStore::Global();
    s.ns = s.store->Acquire(StateIdentity(config));
    s.ns_prefix = s.ns->prefix();
    s.clock = CurrentClock();
    return std::shared_ptr<const http::FilterFactory>(
        std::make_shared<CacheFilterFactory>(std::move(s)));
  }
};

const bool registered =
    RegisterPolicyFactory(std::make_unique<CachePolicyFactory>());

}  // namespace
}  // namespace sluice::policy::cache
