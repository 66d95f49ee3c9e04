// Consumers compiled for the request path: who a credential belongs to,
// found with one hash probe. Built once per config version from the
// Consumer resources (taken over unchanged when no consumer changed) and
// read by every worker.
//
// Immutable once built; thread-safe to read.
#ifndef SLUICE_DATAPLANE_AUTH_CONSUMERS_H_
#define SLUICE_DATAPLANE_AUTH_CONSUMERS_H_

#include <array>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "api/resource.h"

namespace sluice::auth {

struct Consumer {
  std::string name;
  std::vector<std::string> groups;
  std::string groups_header;  // the groups joined with ", " (x-consumer-groups)
  // basic-auth; both empty when the consumer has none.
  std::string username;
  std::string password_hash;
  // ContentHash of its resource. The response cache keys a consumer by
  // name and this: a consumer deleted and made again under the same name
  // with other keys, password or groups is another caller, who must not be
  // served the answers stored for the first (Kong keys consumer.id).
  uint64_t content_hash = 0;
  bool InGroup(std::string_view group) const;
};

class ConsumerIndex {
 public:
  using KeyHash = std::array<unsigned char, 32>;  // SHA-256 of an API key

  // From the Consumer resources of `resources`, which passed validation
  // (names, keys and usernames are unique).
  static std::shared_ptr<const ConsumerIndex> Build(const api::ResourceMap& resources);
  static const ConsumerIndex& Empty();

  const Consumer* FindByName(std::string_view name) const;
  // The consumer holding this API key (hashed here: SHA-256, ~1 us).
  const Consumer* FindByKey(std::string_view key) const;
  const Consumer* FindByUsername(std::string_view username) const;
  size_t size() const { return consumers_.size(); }

 private:
  struct KeyHashHasher {
    size_t operator()(const KeyHash& h) const;
  };
  std::vector<std::unique_ptr<Consumer>> consumers_;
  absl::flat_hash_map<std::string_view, const Consumer*> by_name_;
  absl::flat_hash_map<std::string_view, const Consumer*> by_username_;
  absl::flat_hash_map<KeyHash, const Consumer*, KeyHashHasher> by_key_;
};

}  // namespace sluice::auth

#endif  // SLUICE_DATAPLANE_AUTH_CONSUMERS_H_
