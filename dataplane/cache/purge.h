// Purging this proxy's response cache on an operator's request
// (`sluicectl cache purge`, relayed by the control plane on the config
// stream). The cache store (dataplane/policy/cache) installs the handler
// when the proxy starts; the config client calls Purge().
//
// Thread-safe.
#ifndef SLUICE_DATAPLANE_CACHE_PURGE_H_
#define SLUICE_DATAPLANE_CACHE_PURGE_H_

#include <cstdint>
#include <functional>
#include <string>

namespace sluice::cache {

// Which stored responses go. Empty fields match everything; all empty:
// the whole cache.
struct PurgeSelector {
  std::string route;   // the route's name
  std::string host;    // the request's host (without port), case-insensitive
  std::string path;    // one key: the exact path and query the entry was stored for
  std::string prefix;  // every path that starts with it (ignored when `path` is set)
};

using PurgeHandler = std::function<uint64_t(const PurgeSelector&)>;

// Installs the store's handler (once, at start; a later call replaces it).
void SetPurgeHandler(PurgeHandler handler);

// Removes the matching entries; returns how many went (0 without a cache).
uint64_t Purge(const PurgeSelector& selector);

}  // namespace sluice::cache

#endif  // SLUICE_DATAPLANE_CACHE_PURGE_H_
