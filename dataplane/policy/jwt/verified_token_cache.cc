#include "dataplane/policy/jwt/verified_token_cache.h"

#include <openssl/evp.h>

#include <cstdlib>
#include <cstring>

namespace sluice::policy::jwt {

size_t AcceptedToken::ByteSize() const {
  size_t bytes = sizeof(AcceptedToken) + consumer.size() + claims.size();
  for (const auto& [name, value] : headers) bytes += sizeof(headers[0]) + name.size() + value.size();
  return bytes;
}

VerifiedTokenCache& VerifiedTokenCache::Get() {
  static auto* const cache = new VerifiedTokenCache();
  return *cache;
}

VerifiedTokenCache::Key VerifiedTokenCache::KeyOf(const Key& config_digest,
                                                  std::string_view token) {
  Key key;
  unsigned int size = 0;
  EVP_MD_CTX* ctx = EVP_MD_CTX_new();
  bool ok = ctx != nullptr && EVP_DigestInit_ex(ctx, EVP_sha256(), nullptr) == 1 &&
            EVP_DigestUpdate(ctx, config_digest.data(), config_digest.size()) == 1 &&
            EVP_DigestUpdate(ctx, token.data(), token.size()) == 1 &&
            EVP_DigestFinal_ex(ctx, key.data(), &size) == 1 && size == key.size();
  EVP_MD_CTX_free(ctx);
  if (!ok) abort();  // SHA-256 does not fail short of memory exhaustion
  return key;
}

size_t VerifiedTokenCache::KeyHasher::operator()(const Key& k) const {
  size_t v;
  std::memcpy(&v, k.data() + 8, sizeof(v));  // k[0] picked the shard
  return v;
}

void VerifiedTokenCache::EraseLocked(Shard& s, std::list<Entry>::iterator it) {
  s.bytes -= it->second->ByteSize();
  s.map.erase(it->first);
  s.lru.erase(it);
}

std::shared_ptr<const AcceptedToken> VerifiedTokenCache::Find(const Key& key, int64_t now) {
  Shard& s = shard(key);
  {
    absl::MutexLock lock(&s.mu);
    auto it = s.map.find(key);
    if (it != s.map.end()) {
      const AcceptedToken& token = *it->second->second;
      if (now >= token.expires) {
        EraseLocked(s, it->second);
      } else if (now >= token.not_before) {
        s.lru.splice(s.lru.begin(), s.lru, it->second);
        hits_.fetch_add(1, std::memory_order_relaxed);
        return it->second->second;
      }
    }
  }
  misses_.fetch_add(1, std::memory_order_relaxed);
  return nullptr;
}

void VerifiedTokenCache::Insert(const Key& key, std::shared_ptr<const AcceptedToken> token) {
  size_t bytes = token->ByteSize();
  if (bytes > kCacheBytesPerShard) return;
  Shard& s = shard(key);
  absl::MutexLock lock(&s.mu);
  if (auto it = s.map.find(key); it != s.map.end()) EraseLocked(s, it->second);
  while (!s.lru.empty() &&
         (s.map.size() >= kCacheEntriesPerShard || s.bytes + bytes > kCacheBytesPerShard)) {
    EraseLocked(s, std::prev(s.lru.end()));
  }
  s.lru.emplace_front(key, std::move(token));
  s.map.emplace(key, s.lru.begin());
  s.bytes += bytes;
}

VerifiedTokenCache::Stats VerifiedTokenCache::stats() {
  Stats out;
  out.hits = hits_.load(std::memory_order_relaxed);
  out.misses = misses_.load(std::memory_order_relaxed);
  for (Shard& s : shards_) {
    absl::MutexLock lock(&s.mu);
    out.entries += s.map.size();
  }
  return out;
}

}  // namespace sluice::policy::jwt
