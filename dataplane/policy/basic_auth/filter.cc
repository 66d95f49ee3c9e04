// The `basic-auth` policy's filter (RFC 7617). A password is checked
// against the consumer's salted PBKDF2 hash, which takes tens of
// milliseconds on purpose: the check runs on a verifier thread while the
// request waits (the worker goes on serving others), and a success is
// remembered in a bounded cache keyed by a SHA-256 of the credentials, so
// the next request with them costs one hash and one probe; a failure is
// remembered for 10 s, so the same wrong credentials sent again cost no
// check either. A cache entry
// holds a fingerprint of the password hash it was checked against: a
// consumer whose password changes misses from the next request on.
#include <openssl/rand.h>

#include <algorithm>
#include <chrono>
#include <deque>
#include <limits>
#include <list>
#include <memory>
#include <string>
#include <thread>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/hash/hash.h"
#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "api/credentials.h"
#include "dataplane/auth/consumers.h"
#include "dataplane/http/filter.h"
#include "dataplane/policy/auth_util.h"
#include "dataplane/policy/basic_auth/basic_auth_config.pb.h"
#include "dataplane/policy/registry.h"

namespace sluice::policy::basic_auth {
namespace {

// Verifications waiting or running, proxy-wide; one more gets 503.
constexpr size_t kMaxPendingVerifications = 256;
// Remembered successes, proxy-wide (about 100 bytes each).
constexpr size_t kCacheShards = 16;
constexpr size_t kCacheEntriesPerShard = 1024;

using CredentialKey = std::array<unsigned char, 32>;

uint64_t Fingerprint(const std::string& password_hash) { return absl::HashOf(password_hash); }

// How long a failed check is remembered: the same wrong credentials sent
// again (a client retrying in a loop, a flood) are refused without another
// slow check, so they cannot fill the verifier's queue and turn every
// other login away with 503. A password tried for the first time is
// checked in full: guessing costs the same.
constexpr int64_t kFailedForNanos = 10'000'000'000;  // 10 s

int64_t SteadyNanos() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

// Verified (or failed) credentials, LRU per shard, each with the
// fingerprint of the hash it was checked against and when it expires.
// Thread-safe; lives as long as the process (kept across config versions).
class VerifiedCache {
 public:
  bool Contains(const CredentialKey& key, uint64_t fingerprint, int64_t now = 0) {
    Shard& s = shard(key);
    absl::MutexLock lock(&s.mu);
    auto it = s.map.find(key);
    if (it == s.map.end() || it->second->fingerprint != fingerprint ||
        it->second->expires <= now) {
      return false;
    }
    s.lru.splice(s.lru.begin(), s.lru, it->second);
    return true;
  }
  void Insert(const CredentialKey& key, uint64_t fingerprint,
              int64_t expires = std::numeric_limits<int64_t>::max()) {
    Shard& s = shard(key);
    absl::MutexLock lock(&s.mu);
    if (auto it = s.map.find(key); it != s.map.end()) {
      it->second->fingerprint = fingerprint;
      it->second->expires = expires;
      s.lru.splice(s.lru.begin(), s.lru, it->second);
      return;
    }
    if (s.map.size() >= kCacheEntriesPerShard) {
      s.map.erase(s.lru.back().key);
      s.lru.pop_back();
    }
    s.lru.push_front({key, fingerprint, expires});
    s.map.emplace(key, s.lru.begin());
  }

 private:
  struct KeyHasher {
    size_t operator()(const CredentialKey& k) const {
      size_t v;
      std::memcpy(&v, k.data(), sizeof(v));
      return v;
    }
  };
  struct Item {
    CredentialKey key;
    uint64_t fingerprint;
    int64_t expires;
  };
  struct Shard {
    absl::Mutex mu;
    std::list<Item> lru ABSL_GUARDED_BY(mu);
    absl::flat_hash_map<CredentialKey, std::list<Item>::iterator, KeyHasher> map
        ABSL_GUARDED_BY(mu);
  };
  Shard& shard(const CredentialKey& key) { return shards_[key[31] % kCacheShards]; }
  Shard shards_[kCacheShards];
};

// One thread checking passwords in arrival order, with a bounded queue.
// Process-lifetime (never destroyed, so never joined at exit).
class Verifier {
 public:
  struct Job {
    std::string password;
    std::string password_hash;
    CredentialKey key;
    std::shared_ptr<http::ResumeHandle> handle;
    std::function<void(bool)> done;  // runs on the request's worker
  };

  static Verifier& Get() {
    static Verifier* verifier = new Verifier();
    return *verifier;
  }
  VerifiedCache& cache() { return cache_; }
  VerifiedCache& failed() { return failed_; }

  // False when kMaxPendingVerifications are pending. Jobs of requests
  // already over (a client that reset its streams) do not count: they are
  // dropped first.
  bool Submit(Job job) {
    absl::MutexLock lock(&mu_);
    if (queue_.size() + running_ >= kMaxPendingVerifications) {
      queue_.erase(std::remove_if(queue_.begin(), queue_.end(),
                                  [](const Job& queued) { return !queued.handle->Alive(); }),
                   queue_.end());
    }
    if (queue_.size() + running_ >= kMaxPendingVerifications) return false;
    queue_.push_back(std::move(job));
    return true;
  }

 private:
  Verifier() {
    std::thread([this] { Run(); }).detach();
  }
  void Run() {
    for (;;) {
      Job job;
      {
        absl::MutexLock lock(&mu_);
        mu_.Await(absl::Condition(
            +[](std::deque<Job>* q) { return !q->empty(); }, &queue_));
        job = std::move(queue_.front());
        queue_.pop_front();
        // Its request is over (the client reset the stream or left): no
        // check, which would cost the clients still waiting ~20 ms each.
        if (!job.handle->Alive()) continue;
        ++running_;
      }
      // The same credentials may have been checked while this job waited
      // (a burst of one client's requests): their answer, at no cost.
      const uint64_t fingerprint = Fingerprint(job.password_hash);
      bool ok;
      if (cache_.Contains(job.key, fingerprint)) {
        ok = true;
      } else if (failed_.Contains(job.key, fingerprint, SteadyNanos())) {
        ok = false;
      } else {
        ok = api::VerifyPassword(job.password, job.password_hash);
        if (ok) {
          cache_.Insert(job.key, fingerprint);
        } else {
          failed_.Insert(job.key, fingerprint, SteadyNanos() + kFailedForNanos);
        }
      }
      job.handle->Post([done = std::move(job.done), ok] { done(ok); });
      absl::MutexLock lock(&mu_);
      --running_;
    }
  }

  absl::Mutex mu_;
  std::deque<Job> queue_ ABSL_GUARDED_BY(mu_);
  size_t running_ ABSL_GUARDED_BY(mu_) = 0;
  VerifiedCache cache_;
  VerifiedCache failed_;  // failed checks, for kFailedForNanos
};

struct Settings {
  bool keep_credentials = false;
  std::string anonymous;
  std::string challenge;  // WWW-Authenticate value
  const std::string* decoy_hash = nullptr;  // DecoyHash()
};

// A password hash (default iterations) of random bytes no one knows: what an
// unknown username's password is checked against. Made once, on the config
// thread (the first compile of a basic-auth policy; about as long as one
// check).
const std::string& DecoyHash() {
  static const std::string* hash = [] {
    unsigned char secret[32];
    if (RAND_bytes(secret, sizeof(secret)) != 1) abort();  // no randomness: nothing is safe
    return new std::string(
        api::HashPassword(std::string_view(reinterpret_cast<char*>(secret), sizeof(secret))));
  }();
  return *hash;
}

class BasicAuthFilter : public http::Filter {
 public:
  explicit BasicAuthFilter(const Settings& settings) : settings_(settings) {}

  http::FilterStatus OnRequestHeaders(http::HeaderMap& headers,
                                      http::FilterCallbacks& callbacks) override {
    // Authorization is one field (RFC 9110 11.6.2): with two, the
    // credentials checked (the first) need not be the ones an upstream reads.
    // Refused whatever the anonymous consumer, as by jwt.
    if (headers.Count("authorization") > 1) {
      return Reject(callbacks, 400, "more than one authorization field", "", false);
    }
    const std::string* authorization = headers.Get("authorization");
    if (authorization == nullptr || !IsBasic(*authorization)) {
      return Unaccepted(headers, callbacks, "no basic credentials found");
    }
    std::string_view encoded = std::string_view(*authorization).substr(6);
    while (!encoded.empty() && encoded.front() == ' ') encoded.remove_prefix(1);
    std::string decoded;
    size_t colon;
    // RFC 7617 2: neither user-id nor password holds a control character.
    // (PBKDF2 pads a short password with NULs: "pw" and "pw\0" would match.)
    auto has_control = [](std::string_view s) {
      for (char c : s) {
        if (static_cast<unsigned char>(c) < 0x20 || c == 0x7f) return true;
      }
      return false;
    };
    if (!IsPaddedBase64(encoded) ||
        !absl::Base64Unescape(absl::string_view(encoded.data(), encoded.size()), &decoded) ||
        (colon = decoded.find(':')) == std::string::npos || has_control(decoded)) {
      // Taken as the anonymous consumer, the request must not carry them on.
      if (!settings_.keep_credentials) headers.Remove("authorization");
      return Unaccepted(headers, callbacks, "malformed basic credentials");
    }
    if (!settings_.keep_credentials) headers.Remove("authorization");
    std::string_view username = std::string_view(decoded).substr(0, colon);
    const auth::Consumer* consumer = callbacks.consumers().FindByUsername(username);
    CredentialKey key;
    api::Sha256(decoded, key.data());
    if (consumer != nullptr &&
        Verifier::Get().cache().Contains(key, Fingerprint(consumer->password_hash))) {
      callbacks.SetConsumer(consumer, /*anonymous=*/false);
      return http::FilterStatus::kContinue;
    }
    // The same wrong credentials again: refused without a check (an
    // unknown username's too, against the decoy, so the answer's time
    // still does not tell which usernames exist).
    const std::string& checked_hash =
        consumer != nullptr ? consumer->password_hash : *settings_.decoy_hash;
    if (Verifier::Get().failed().Contains(key, Fingerprint(checked_hash), SteadyNanos())) {
      return Unaccepted(headers, callbacks, "invalid credentials");
    }
    // The slow check, off the worker. The request is resumed from the
    // worker; the handle drops the result if the request has ended. An
    // unknown username is checked too, against a hash no password matches,
    // so that the time of the answer does not tell which usernames exist.
    Verifier::Job job;
    job.password = decoded.substr(colon + 1);
    job.password_hash = checked_hash;
    job.key = key;
    job.handle = callbacks.MakeResumeHandle();
    // The request's headers live as long as its callbacks.
    job.done = [this, &headers, &callbacks, consumer](bool ok) {
      if (ok && consumer != nullptr) {
        callbacks.SetConsumer(consumer, /*anonymous=*/false);
        callbacks.ContinueRequest();
      } else if (Unaccepted(headers, callbacks, "invalid credentials") ==
                 http::FilterStatus::kContinue) {
        callbacks.ContinueRequest();
      }
    };
    if (!Verifier::Get().Submit(std::move(job))) {
      http::HeaderMap retry;
      retry.Add("retry-after", "1");
      callbacks.SendLocalReply(503, "too many password checks in progress; try again", retry);
      return http::FilterStatus::kStopLocalReply;
    }
    return http::FilterStatus::kStopIteration;
  }

  // Another policy identified the caller (or none did): every Basic
  // credential goes, whatever keep_credentials says (it keeps what this
  // policy accepted, and it accepted nothing), in any field: a refused one in
  // a second field reached the upstream beside the winner's identity. Other
  // schemes (a Bearer token) are other policies'.
  void OnSkippedInGroup(http::HeaderMap& headers, http::FilterCallbacks&) override {
    RemoveBasicCredentials(headers);
  }

 private:
  // No credentials accepted: 401, or the anonymous consumer, for whom every
  // Basic credential goes first, as when another policy identified the
  // caller (a `Basic<TAB>...` field this policy never checks; refused ones
  // that keep_credentials would keep).
  http::FilterStatus Unaccepted(http::HeaderMap& headers, http::FilterCallbacks& callbacks,
                                std::string_view message) {
    if (!settings_.anonymous.empty()) RemoveBasicCredentials(headers);
    return RefuseOrAnonymous(callbacks, settings_.anonymous, message, settings_.challenge);
  }

  static void RemoveBasicCredentials(http::HeaderMap& headers) {
    if (headers.Count("authorization") == 0) return;
    std::vector<std::string> kept;
    bool removed = false;
    for (const http::HeaderMap::Field& f : headers.fields()) {
      if (!absl::EqualsIgnoreCase(f.name, "authorization")) continue;
      if (NamesBasic(f.value)) {
        removed = true;
      } else {
        kept.push_back(f.value);
      }
    }
    if (!removed) return;
    headers.Remove("authorization");
    for (std::string& value : kept) headers.Add("authorization", std::move(value));
  }

  // RFC 7617 2: the credentials are base64 (RFC 4648 4: padded), one
  // token68; absl's decoder would also take white space inside and no
  // padding, which an upstream given them (keep_credentials) may read
  // otherwise.
  static bool IsPaddedBase64(std::string_view s) {
    if (s.empty() || s.size() % 4 != 0) return false;
    size_t pad = 0;
    while (pad < 2 && s[s.size() - 1 - pad] == '=') ++pad;
    for (size_t i = 0; i + pad < s.size(); ++i) {
      const char c = s[i];
      if (!absl::ascii_isalnum(static_cast<unsigned char>(c)) && c != '+' && c != '/') {
        return false;
      }
    }
    return true;
  }
  static bool IsBasic(std::string_view authorization) {
    return authorization.size() >= 6 &&
           absl::EqualsIgnoreCase(absl::string_view(authorization.data(), 6), "basic ");
  }
  // The Basic scheme however it is set apart (a tab, as Werkzeug reads it),
  // or alone: what an upstream might read as Basic credentials.
  static bool NamesBasic(std::string_view authorization) {
    return authorization.size() >= 5 &&
           absl::EqualsIgnoreCase(absl::string_view(authorization.data(), 5), "basic") &&
           (authorization.size() == 5 || authorization[5] == ' ' || authorization[5] == '\t');
  }

  const Settings& settings_;
};

class BasicAuthFilterFactory : public http::FilterFactory {
 public:
  explicit BasicAuthFilterFactory(Settings settings) : settings_(std::move(settings)) {}
  std::unique_ptr<http::Filter> CreateFilter() const override {
    return std::make_unique<BasicAuthFilter>(settings_);
  }
  std::string_view policy_name() const override { return "basic-auth"; }
  http::FilterPhase phase() const override { return http::FilterPhase::kAuthentication; }

 private:
  const Settings settings_;
};

class BasicAuthPolicyFactory : public PolicyFactory {
 public:
  std::string name() const override { return "basic-auth"; }
  absl::StatusOr<std::shared_ptr<const http::FilterFactory>> Compile(
      const google::protobuf::Message& message) const override {
    const auto& config = static_cast<const v1::BasicAuthConfig&>(message);
    Settings s;
    s.keep_credentials = config.keep_credentials();
    s.anonymous = config.anonymous();
    s.decoy_hash = &DecoyHash();
    s.challenge = absl::StrCat("Basic realm=\"", config.realm().empty() ? "sluice" : config.realm(),
                               "\", charset=\"UTF-8\"");
    return std::shared_ptr<const http::FilterFactory>(
        std::make_shared<BasicAuthFilterFactory>(std::move(s)));
  }
};

const bool registered = RegisterPolicyFactory(std::make_unique<BasicAuthPolicyFactory>());

}  // namespace
}  // namespace sluice::policy::basic_auth
