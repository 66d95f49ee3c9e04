// The `rate-limit` policy's filter: makes the caller's key from the request
// (route, then the configured parts), takes one request from the policy's
// limiter, and answers 429 when a limit refuses it. The decision is kept in
// the filter so that every response of the request (upstream or the
// gateway's own, the 429 included) carries the RateLimit headers.
//
// The limiter is the process-wide one of the policy's identity
// (limiter_registry.h): config versions that keep the policy's identity
// keep its counters. Scope LOCAL: GcraLimiter; scope FLEET: FleetLimiter,
// which the FleetBoard connects to the control plane's leases.
#include <algorithm>
#include <charconv>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "dataplane/auth/consumers.h"
#include "dataplane/http/filter.h"
#include "dataplane/policy/rate_limit/fleet_board.h"
#include "dataplane/policy/rate_limit/fleet_limiter_impl.h"
#include "dataplane/policy/rate_limit/gcra_limiter_impl.h"
#include "dataplane/policy/rate_limit/internal.h"
#include "dataplane/policy/rate_limit/limiter.h"
#include "dataplane/policy/rate_limit/limiter_registry.h"
#include "dataplane/policy/rate_limit/rate_limit_config.pb.h"
#include "dataplane/policy/registry.h"

namespace sluice::policy::rate_limit {
namespace {

constexpr int64_t kNanosPerSecond = 1000000000;

int64_t CeilSeconds(int64_t ns) {
  return ns <= 0 ? 0 : (ns + kNanosPerSecond - 1) / kNanosPerSecond;
}

// A number as decimal digits, without allocating (response headers are
// set on every response).
class Digits {
 public:
  explicit Digits(uint64_t value) : end_(std::to_chars(buf_, buf_ + sizeof(buf_), value).ptr) {}
  std::string_view view() const { return std::string_view(buf_, end_ - buf_); }

 private:
  char buf_[24];
  char* end_;
};

// A key piece: a tag, the value's length (varint), the value. Unambiguous
// whatever bytes the values hold.
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

// What the headers say about one limit, in the limiter's order.
struct LimitHeaders {
  std::string limit_name;      // X-RateLimit-Limit-Minute
  std::string remaining_name;  // X-RateLimit-Remaining-Minute
  std::string draft_id;        // "minute"
};

// The policy's limits, or an override's with whom it is for.
struct Tier {
  std::vector<std::string> consumers;  // an override's; empty for the policy's
  std::vector<std::string> groups;
  std::vector<LimitHeaders> limits;
  std::string draft_policy;  // the RateLimit-Policy value
  std::shared_ptr<RateLimiter> limiter;

  bool Takes(const auth::Consumer& consumer) const {
    if (std::find(consumers.begin(), consumers.end(), consumer.name) != consumers.end()) {
      return true;
    }
    for (const std::string& group : groups) {
      if (consumer.InGroup(group)) return true;
    }
    return false;
  }
};

struct Settings {
  std::vector<v1::RateLimitConfig::KeyPart> key;  // in enum order
  std::string header_name;
  std::string fallback;
  bool headers = true;
  bool draft_headers = false;
  std::vector<Tier> tiers;  // the policy's, then the overrides in order
  Clock clock;
};

class RateLimitFilter : public http::Filter {
 public:
  explicit RateLimitFilter(const Settings& settings) : settings_(settings) {}

  http::FilterStatus OnRequestHeaders(http::HeaderMap& headers,
                                      http::FilterCallbacks& callbacks) override {
    // The gateway's own refresh of a cached response (stale-while-
    // revalidate) is not the client's request: it takes nothing from the
    // client's budget and is never refused.
    if (callbacks.info().background) return http::FilterStatus::kContinue;
    if (const auth::Consumer* consumer = callbacks.info().consumer; consumer != nullptr) {
      for (size_t i = 1; i < settings_.tiers.size(); ++i) {
        if (settings_.tiers[i].Takes(*consumer)) {
          tier_ = &settings_.tiers[i];
          break;
        }
      }
    }
    std::string key = MakeKey(headers, callbacks.info());
    tier_->limiter->Take(key, settings_.clock(), &decision_);
    decided_ = true;
    if (decision_.allowed) return http::FilterStatus::kContinue;
    http::HeaderMap reply;
    reply.Add("Retry-After", Digits(CeilSeconds(decision_.retry_after_ns)).view());
    AddRateLimitHeaders(reply);
    callbacks.SendLocalReply(429, "API rate limit exceeded", reply);
    return http::FilterStatus::kStopLocalReply;
  }

  // Every response of the request, the 429 above included (Set: once).
  void OnResponseHeaders(int status, http::HeaderMap& headers,
                         http::FilterCallbacks& callbacks) override {
    if (decided_) AddRateLimitHeaders(headers);
  }

 private:
  // The route (its table, virtual host and name: a route name is unique
  // only within its virtual host), then each part; a missing part is the
  // fallback name (a request lacking every part is in the route's fallback
  // bucket).
  std::string MakeKey(const http::HeaderMap& headers, const http::StreamInfo& info) const {
    std::string key;
    key.reserve(64);
    AppendPiece(&key, 't', info.route_table);
    AppendPiece(&key, 'v', info.virtual_host);
    AppendPiece(&key, 'r', info.route_name);
    for (v1::RateLimitConfig::KeyPart part : settings_.key) {
      std::string_view value;
      switch (part) {
        case v1::RateLimitConfig::CONSUMER:
          if (info.consumer != nullptr) value = info.consumer->name;
          break;
        case v1::RateLimitConfig::CLIENT_IP: value = info.client_ip; break;
        case v1::RateLimitConfig::HEADER:
          if (const std::string* v = headers.Get(settings_.header_name)) value = *v;
          break;
        case v1::RateLimitConfig::ROUTE:
          AppendPiece(&key, 'R', "");  // the route alone: every caller shares it
          continue;
        default: continue;
      }
      if (value.empty()) {
        // Only the missing part falls back: the parts that are there (the
        // consumer, the address) keep their callers apart.
        AppendPiece(&key, 'f', settings_.fallback);
        continue;
      }
      AppendPiece(&key, static_cast<char>('0' + part), value);
    }
    return key;
  }

  void AddRateLimitHeaders(http::HeaderMap& headers) const {
    if (!settings_.headers || decision_.count == 0) return;
    // The most restrictive limit: the fewest remaining, the longer window
    // on a tie (limits are in window order).
    size_t pick = 0;
    for (size_t i = 0; i < decision_.count; ++i) {
      if (decision_.usage[i].remaining <= decision_.usage[pick].remaining) pick = i;
    }
    const LimitUsage& most = decision_.usage[pick];
    headers.Set("RateLimit-Limit", Digits(most.limit).view());
    headers.Set("RateLimit-Remaining", Digits(most.remaining).view());
    headers.Set("RateLimit-Reset", Digits(CeilSeconds(most.reset_ns)).view());
    for (size_t i = 0; i < decision_.count; ++i) {
      headers.Set(tier_->limits[i].limit_name, Digits(decision_.usage[i].limit).view());
      headers.Set(tier_->limits[i].remaining_name, Digits(decision_.usage[i].remaining).view());
    }
    if (settings_.draft_headers) {
      headers.Set("RateLimit-Policy", tier_->draft_policy);
      std::string value;
      for (size_t i = 0; i < decision_.count; ++i) {
        absl::StrAppend(&value, i == 0 ? "" : ", ", "\"", tier_->limits[i].draft_id,
                        "\";r=", decision_.usage[i].remaining,
                        ";t=", CeilSeconds(decision_.usage[i].reset_ns));
      }
      headers.Set("RateLimit", value);
    }
  }

  const Settings& settings_;
  const Tier* tier_ = &settings_.tiers[0];  // the request's
  bool decided_ = false;
  Decision decision_;
};

class RateLimitFilterFactory : public http::FilterFactory {
 public:
  explicit RateLimitFilterFactory(Settings settings) : settings_(std::move(settings)) {}
  std::unique_ptr<http::Filter> CreateFilter() const override {
    return std::make_unique<RateLimitFilter>(settings_);
  }
  std::string_view policy_name() const override { return "rate-limit"; }
  http::FilterPhase phase() const override { return http::FilterPhase::kRateLimit; }
  // Its RateLimit-* fields are there for `headers` and
  // `response-transformer` to remove or rewrite.
  bool adds_response_fields_first() const override { return settings_.headers; }

 private:
  const Settings settings_;
};

// The FLEET options, with the fallback limits in `limits`' (unit) order.
FleetLimiterOptions FleetOptionsOf(const v1::RateLimitConfig& config,
                                   const std::vector<v1::Limit>& limits) {
  FleetLimiterOptions options;
  const v1::FleetOptions& fleet = config.fleet();
  options.keep_share_for_ns =
      fleet.has_keep_share_for()
          ? fleet.keep_share_for().seconds() * kNanosPerSecond + fleet.keep_share_for().nanos()
          : kDefaultKeepShareForSeconds * kNanosPerSecond;
  for (const v1::Limit& limit : limits) {
    uint64_t requests = 0;  // 0: the limit / fleet size
    for (const v1::Limit& fallback : fleet.fallback_limits()) {
      if (fallback.per() == limit.per()) requests = fallback.requests();
    }
    options.fallback_requests.push_back(requests);
  }
  return options;
}

// The limiter and headers of `limits` under `config`'s key, scope and
// options; `suffix` sets an override's identity apart from the policy's.
Tier MakeTier(const v1::RateLimitConfig& config,
              const google::protobuf::RepeatedPtrField<v1::Limit>& configured,
              const std::string& suffix) {
  Tier tier;
  std::vector<v1::Limit> limits(configured.begin(), configured.end());
  std::sort(limits.begin(), limits.end(), [](const v1::Limit& a, const v1::Limit& b) {
    return UnitSeconds(a.per()) < UnitSeconds(b.per());
  });
  std::vector<LimitSpec> specs;
  std::vector<std::string> policy_items;
  for (const v1::Limit& limit : limits) {
    int64_t seconds = UnitSeconds(limit.per());
    specs.push_back({limit.requests(), seconds * kNanosPerSecond});
    std::string unit(UnitName(limit.per()));
    std::string id = absl::AsciiStrToLower(unit);
    policy_items.push_back(absl::StrCat("\"", id, "\";q=", limit.requests(), ";w=", seconds));
    tier.limits.push_back({absl::StrCat("X-RateLimit-Limit-", unit),
                           absl::StrCat("X-RateLimit-Remaining-", unit), std::move(id)});
  }
  tier.draft_policy = absl::StrJoin(policy_items, ", ");
  size_t max_keys = config.has_max_keys() ? config.max_keys() : kDefaultMaxKeys;
  v1::RateLimitConfig with_limits = config;
  *with_limits.mutable_limits() = configured;
  const std::string identity = StateIdentity(with_limits) + suffix;
  if (config.scope() == v1::RateLimitConfig::FLEET) {
    FleetLimiterOptions fleet = FleetOptionsOf(config, limits);
    tier.limiter = LimiterRegistry::Get().FindOrCreate(identity, [&] {
      return std::make_unique<FleetLimiter>(identity, specs, max_keys, fleet,
                                            &FleetBoard::Get());
    });
  } else {
    // The same policy with other limits (a limit raised or lowered): its
    // callers' counts carry over to the new limits.
    v1::RateLimitConfig without_limits = config;
    without_limits.clear_limits();
    const Clock clock = CurrentClock();
    tier.limiter = LimiterRegistry::Get().FindOrCreate(
        identity, StateIdentity(without_limits) + suffix,
        [&](const std::vector<std::shared_ptr<RateLimiter>>& family_live) {
          auto limiter = std::make_unique<GcraLimiter>(specs, max_keys);
          const int64_t now = family_live.empty() ? 0 : clock();
          // Only LOCAL limiters, GcraLimiters, are registered with a family.
          for (const auto& previous : family_live) {
            limiter->CarryOver(static_cast<const GcraLimiter&>(*previous), now);
          }
          return limiter;
        });
  }
  return tier;
}

class RateLimitPolicyFactory : public PolicyFactory {
 public:
  std::string name() const override { return "rate-limit"; }
  absl::StatusOr<std::shared_ptr<const http::FilterFactory>> Compile(
      const google::protobuf::Message& message) const override {
    const auto& config = static_cast<const v1::RateLimitConfig&>(message);
    if (config.scope() != v1::RateLimitConfig::LOCAL &&
        config.scope() != v1::RateLimitConfig::FLEET) {
      return absl::InvalidArgumentError(absl::StrCat("unknown scope ", config.scope()));
    }
    Settings s;
    for (int part : config.key()) s.key.push_back(static_cast<v1::RateLimitConfig::KeyPart>(part));
    if (s.key.empty()) s.key.push_back(v1::RateLimitConfig::CONSUMER);
    std::sort(s.key.begin(), s.key.end());
    s.header_name = config.header_name();
    s.fallback = config.fallback().empty() ? kDefaultFallback : config.fallback();
    s.headers = !config.has_headers() || config.headers();
    s.draft_headers = config.draft_headers();

    s.tiers.push_back(MakeTier(config, config.limits(), ""));
    for (const v1::Override& entry : config.overrides()) {
      // Counted apart: its own identity (the policy's with these limits,
      // and whom it is for) and, under FLEET, its own leases, with each
      // proxy admitting limit / fleet size before the first.
      v1::RateLimitConfig own = config;
      own.clear_overrides();
      own.mutable_fleet()->clear_fallback_limits();
      if (own.scope() == v1::RateLimitConfig::LOCAL) own.clear_fleet();
      std::vector<std::string> consumers(entry.consumers().begin(), entry.consumers().end());
      std::vector<std::string> groups(entry.groups().begin(), entry.groups().end());
      std::sort(consumers.begin(), consumers.end());
      std::sort(groups.begin(), groups.end());
      std::string whom = ";override=";
      for (const std::string& c : consumers) absl::StrAppend(&whom, "c", c.size(), ":", c, ",");
      for (const std::string& g : groups) absl::StrAppend(&whom, "g", g.size(), ":", g, ",");
      Tier tier = MakeTier(own, entry.limits(), whom);
      tier.consumers = std::move(consumers);
      tier.groups = std::move(groups);
      s.tiers.push_back(std::move(tier));
    }
    s.clock = CurrentClock();
    return std::shared_ptr<const http::FilterFactory>(
        std::make_shared<RateLimitFilterFactory>(std::move(s)));
  }
};

const bool registered = RegisterPolicyFactory(std::make_unique<RateLimitPolicyFactory>());

}  // namespace
}  // namespace sluice::policy::rate_limit
