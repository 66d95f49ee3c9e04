#include "dataplane/auth/consumers.h"

#include <cstring>

#include "absl/strings/str_join.h"
#include "api/credentials.h"

namespace sluice::auth {
namespace {

bool ParseHex(std::string_view hex, ConsumerIndex::KeyHash* out) {
  if (hex.size() != 64) return false;
  auto nibble = [](char c) -> int {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
  };
  for (size_t i = 0; i < 32; ++i) {
    int hi = nibble(hex[2 * i]), lo = nibble(hex[2 * i + 1]);
    if (hi < 0 || lo < 0) return false;
    (*out)[i] = static_cast<unsigned char>(hi << 4 | lo);
  }
  return true;
}

}  // namespace

bool Consumer::InGroup(std::string_view group) const {
  for (const std::string& g : groups) {
    if (g == group) return true;
  }
  return false;
}

size_t ConsumerIndex::KeyHashHasher::operator()(const KeyHash& h) const {
  size_t v;
  std::memcpy(&v, h.data(), sizeof(v));  // a SHA-256 is uniform already
  return v;
}

std::shared_ptr<const ConsumerIndex> ConsumerIndex::Build(const api::ResourceMap& resources) {
  auto index = std::make_shared<ConsumerIndex>();
  auto first = resources.lower_bound({config::v1::CONSUMER, std::string()});
  for (auto it = first; it != resources.end() && it->first.first == config::v1::CONSUMER; ++it) {
    const config::v1::Consumer& c = it->second.consumer();
    auto consumer = std::make_unique<Consumer>();
    consumer->name = c.name();
    consumer->groups.assign(c.groups().begin(), c.groups().end());
    consumer->groups_header = absl::StrJoin(consumer->groups, ", ");
    consumer->content_hash = api::ContentHash(it->second);
    if (c.has_basic_auth()) {
      consumer->username = c.basic_auth().username();
      // The control plane seals passwords; a plain one (a config written
      // straight to a proxy) is hashed here.
      consumer->password_hash = c.basic_auth().password_hash().empty()
                                    ? api::HashPassword(c.basic_auth().password())
                                    : c.basic_auth().password_hash();
    }
    const Consumer* p = consumer.get();
    index->consumers_.push_back(std::move(consumer));
    index->by_name_.emplace(p->name, p);
    if (!p->username.empty()) index->by_username_.emplace(p->username, p);
    for (const config::v1::ApiKey& k : c.keys()) {
      KeyHash hash;
      if (!k.key().empty()) {
        api::Sha256(k.key(), hash.data());
      } else if (!ParseHex(k.key_sha256(), &hash)) {
        continue;  // validation refuses it
      }
      index->by_key_.emplace(hash, p);
    }
  }
  return index;
}

const ConsumerIndex& ConsumerIndex::Empty() {
  static const ConsumerIndex* empty = new ConsumerIndex();
  return *empty;
}

const Consumer* ConsumerIndex::FindByName(std::string_view name) const {
  auto it = by_name_.find(name);
  return it == by_name_.end() ? nullptr : it->second;
}

const Consumer* ConsumerIndex::FindByKey(std::string_view key) const {
  if (by_key_.empty()) return nullptr;
  KeyHash hash;
  api::Sha256(key, hash.data());
  auto it = by_key_.find(hash);
  return it == by_key_.end() ? nullptr : it->second;
}

const Consumer* ConsumerIndex::FindByUsername(std::string_view username) const {
  auto it = by_username_.find(username);
  return it == by_username_.end() ? nullptr : it->second;
}

}  // namespace sluice::auth
