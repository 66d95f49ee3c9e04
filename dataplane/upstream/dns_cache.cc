#include "dataplane/upstream/dns_cache.h"

#include <ares.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/log.h"

namespace sluice::upstream {
namespace {

struct LookupState {
  bool done = false;
  int status = ARES_SUCCESS;
  std::vector<std::string> v4;
  std::vector<std::string> v6;
};

void OnAddrinfo(void* arg, int status, int /*timeouts*/, struct ares_addrinfo* info) {
  auto* state = static_cast<LookupState*>(arg);
  state->done = true;
  state->status = status;
  if (info == nullptr) return;
  if (status == ARES_SUCCESS) {
    char text[INET6_ADDRSTRLEN];
    for (const ares_addrinfo_node* node = info->nodes; node != nullptr; node = node->ai_next) {
      if (node->ai_family == AF_INET && node->ai_addr != nullptr) {
        const auto* in = reinterpret_cast<const sockaddr_in*>(node->ai_addr);
        if (inet_ntop(AF_INET, &in->sin_addr, text, sizeof(text)) != nullptr) {
          state->v4.emplace_back(text);
        }
      } else if (node->ai_family == AF_INET6 && node->ai_addr != nullptr) {
        const auto* in6 = reinterpret_cast<const sockaddr_in6*>(node->ai_addr);
        if (inet_ntop(AF_INET6, &in6->sin6_addr, text, sizeof(text)) != nullptr) {
          state->v6.emplace_back(text);
        }
      }
    }
  }
  ares_freeaddrinfo(info);
}

void SortUnique(std::vector<std::string>& v) {
  std::sort(v.begin(), v.end());
  v.erase(std::unique(v.begin(), v.end()), v.end());
}

std::string Addresses(const DnsAnswer& a) {
  if (a.v4.empty() && a.v6.empty()) return "no address";
  std::vector<std::string> all = a.v4;
  all.insert(all.end(), a.v6.begin(), a.v6.end());
  return absl::StrJoin(all, ", ");
}

}  // namespace

DnsLookupResult CaresLookup(const std::string& name, const std::vector<std::string>& servers,
                            absl::Duration timeout) {
  static const int library = ares_library_init(ARES_LIB_INIT_ALL);
  DnsLookupResult result;
  if (library != ARES_SUCCESS) {
    result.status = absl::UnavailableError(
        absl::StrCat("c-ares cannot start: ", ares_strerror(library)));
    return result;
  }
  ares_channel channel;
  ares_options options{};
  int mask = ARES_OPT_TIMEOUTMS | ARES_OPT_TRIES;
  options.timeout = 2000;  // per server and try, ms
  options.tries = 2;
  char dns_only[] = "b";
  if (!servers.empty()) {
    // The servers given, not the host's files.
    options.lookups = dns_only;
    mask |= ARES_OPT_LOOKUPS;
  }
  int rc = ares_init_options(&channel, &options, mask);
  if (rc != ARES_SUCCESS) {
    result.status = absl::UnavailableError(absl::StrCat("c-ares: ", ares_strerror(rc)));
    return result;
  }
  if (!servers.empty()) {
    const std::string csv = absl::StrJoin(servers, ",");
    rc = ares_set_servers_ports_csv(channel, csv.c_str());
    if (rc != ARES_SUCCESS) {
      ares_destroy(channel);
      result.status = absl::InvalidArgumentError(
          absl::StrCat("DNS servers '", csv, "': ", ares_strerror(rc)));
      return result;
    }
  }
  ares_addrinfo_hints hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;  // one entry per address
  LookupState state;
  ares_getaddrinfo(channel, name.c_str(), nullptr, &hints, OnAddrinfo, &state);
  const absl::Time deadline = absl::Now() + timeout;
  while (!state.done) {
    const absl::Duration left = deadline - absl::Now();
    if (left <= absl::ZeroDuration()) {
      ares_cancel(channel);  // the callback runs, with ARES_ECANCELLED
      break;
    }
    ares_socket_t sockets[ARES_GETSOCK_MAXNUM];
    const int bits = ares_getsock(channel, sockets, ARES_GETSOCK_MAXNUM);
    pollfd fds[ARES_GETSOCK_MAXNUM];
    nfds_t count = 0;
    for (int i = 0; i < ARES_GETSOCK_MAXNUM; ++i) {
      short events = 0;
      if (ARES_GETSOCK_READABLE(bits, i)) events |= POLLIN;
      if (ARES_GETSOCK_WRITABLE(bits, i)) events |= POLLOUT;
      if (events != 0) fds[count++] = {sockets[i], events, 0};
    }
    timeval max_wait = absl::ToTimeval(left);
    timeval wait_buffer;
    const timeval* wait = ares_timeout(channel, &max_wait, &wait_buffer);
    const int wait_ms = static_cast<int>(wait->tv_sec * 1000 + wait->tv_usec / 1000) + 1;
    const int ready = poll(fds, count, wait_ms);
    if (ready <= 0) {
      ares_process_fd(channel, ARES_SOCKET_BAD, ARES_SOCKET_BAD);  // timeouts
      continue;
    }
    for (nfds_t i = 0; i < count; ++i) {
      if (fds[i].revents == 0) continue;
      const bool readable = (fds[i].revents & (POLLIN | POLLERR | POLLHUP)) != 0;
      const bool writable = (fds[i].revents & POLLOUT) != 0;
      ares_process_fd(channel, readable ? fds[i].fd : ARES_SOCKET_BAD,
                      writable ? fds[i].fd : ARES_SOCKET_BAD);
    }
  }
  ares_destroy(channel);
  switch (state.status) {
    case ARES_SUCCESS:
    case ARES_ENOTFOUND:  // no such name
    case ARES_ENODATA:    // the name has no address
      result.v4 = std::move(state.v4);
      result.v6 = std::move(state.v6);
      SortUnique(result.v4);
      SortUnique(result.v6);
      break;
    case ARES_ETIMEOUT:
    case ARES_ECANCELLED:
      result.status = absl::DeadlineExceededError(absl::StrCat(
          "no answer within ", absl::FormatDuration(timeout),
          servers.empty() ? std::string(" (the host's DNS servers)")
                          : absl::StrCat(" from ", absl::StrJoin(servers, ", "))));
      break;
    default:
      result.status = absl::UnavailableError(ares_strerror(state.status));
      break;
  }
  return result;
}

std::string DnsQuery::Key() const {
  return servers.empty() ? name : absl::StrCat(name, "@", absl::StrJoin(servers, ","));
}

DnsCache::DnsCache(DnsLookupFn lookup, stats::StatsStore* stats) : lookup_(std::move(lookup)) {
  if (stats != nullptr) {
    stats->Describe("sluice_dns_lookups_total",
                    "Lookups of the host names cluster endpoints are given by, by result: "
                    "answer (addresses), no_address (no such name, or no A/AAAA record), "
                    "failure (no answer; the last addresses are kept).");
    lookups_answered_ = stats->GetCounter("sluice_dns_lookups_total", "result=\"answer\"");
    lookups_no_address_ =
        stats->GetCounter("sluice_dns_lookups_total", "result=\"no_address\"");
    lookups_failed_ = stats->GetCounter("sluice_dns_lookups_total", "result=\"failure\"");
  }
}

DnsCache::~DnsCache() { Stop(); }

void DnsCache::Start() {
  absl::MutexLock lock(&mu_);
  if (thread_.joinable() || stopping_) return;
  thread_ = std::thread([this] { Loop(); });
}

void DnsCache::Stop() {
  {
    absl::MutexLock lock(&mu_);
    stopping_ = true;
  }
  if (thread_.joinable()) thread_.join();
}

void DnsCache::Track(const std::vector<DnsQuery>& queries, absl::Duration wait) {
  const absl::Time now = absl::Now();
  absl::MutexLock lock(&mu_);
  std::map<std::string, Entry> kept;
  std::vector<std::string> fresh;
  for (const DnsQuery& query : queries) {
    const std::string key = query.Key();
    if (auto it = kept.find(key); it != kept.end()) {
      // Another cluster asks the same: the shorter interval.
      Entry& entry = it->second;
      if (query.refresh < entry.query.refresh) {
        entry.query.refresh = query.refresh;
        entry.next = std::min(entry.next, now + query.refresh);
      }
      continue;
    }
    if (auto it = entries_.find(key); it != entries_.end()) {
      Entry entry = std::move(it->second);
      if (query.refresh < entry.query.refresh) entry.next = std::min(entry.next, now + query.refresh);
      entry.query.refresh = query.refresh;
      kept.emplace(key, std::move(entry));
    } else {
      Entry entry;
      entry.query = query;
      entry.next = absl::InfinitePast();
      kept.emplace(key, std::move(entry));
      fresh.push_back(key);
    }
  }
  entries_ = std::move(kept);
  ++generation_;
  if (fresh.empty() || wait <= absl::ZeroDuration()) return;
  auto looked_up = [this, &fresh]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (stopping_) return true;
    for (const std::string& key : fresh) {
      auto it = entries_.find(key);
      if (it != entries_.end() && !it->second.looked_up) return false;
    }
    return true;
  };
  mu_.AwaitWithDeadline(absl::Condition(&looked_up), now + wait);
}

DnsAnswer DnsCache::Get(const std::string& key) const {
  absl::MutexLock lock(&mu_);
  auto it = entries_.find(key);
  return it == entries_.end() ? DnsAnswer() : it->second.answer;
}

void DnsCache::Loop() {
  absl::MutexLock lock(&mu_);
  while (!stopping_) {
    Entry* due = nullptr;
    for (auto& [key, entry] : entries_) {
      if (due == nullptr || entry.next < due->next) due = &entry;
    }
    if (due == nullptr || due->next > absl::Now()) {
      const uint64_t generation = generation_;
      auto woken = [this, generation]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
        return stopping_ || generation_ != generation;
      };
      mu_.AwaitWithDeadline(absl::Condition(&woken),
                            due == nullptr ? absl::InfiniteFuture() : due->next);
      continue;
    }
    const DnsQuery query = due->query;
    const std::string key = query.Key();
    mu_.Unlock();
    DnsLookupResult result = lookup_(query.name, query.servers, kLookupTimeout);
    mu_.Lock();
    auto it = entries_.find(key);
    if (it == entries_.end()) continue;  // forgotten meanwhile
    Entry& entry = it->second;
    entry.looked_up = true;
    entry.next = absl::Now() + entry.query.refresh;
    bool changed = false;
    if (result.status.ok()) {
      stats::Counter* counter =
          result.v4.empty() && result.v6.empty() ? lookups_no_address_ : lookups_answered_;
      if (counter != nullptr) counter->Inc();
      changed = !entry.answer.answered || entry.answer.v4 != result.v4 ||
                entry.answer.v6 != result.v6;
      DnsAnswer answer;
      answer.answered = true;
      answer.v4 = std::move(result.v4);
      answer.v6 = std::move(result.v6);
      if (changed && entry.answer.answered) {
        SLUICE_LOG(kInfo, "dns: ", key, " resolves to ", Addresses(answer), " (was ",
                   Addresses(entry.answer), ")");
      } else if (changed) {
        SLUICE_LOG(kDebug, "dns: ", key, " resolves to ", Addresses(answer));
      } else if (!entry.logged_problem.empty()) {
        SLUICE_LOG(kInfo, "dns: ", key, " answers again (", Addresses(answer), ")");
      }
      entry.answer = std::move(answer);
      entry.logged_problem.clear();
    } else {
      if (lookups_failed_ != nullptr) lookups_failed_->Inc();
      entry.answer.problem = std::string(result.status.message());
      if (entry.answer.problem != entry.logged_problem) {
        SLUICE_LOG(kWarning, "dns: looking up ", key, " failed: ", entry.answer.problem,
                   entry.answer.answered
                       ? absl::StrCat("; keeping its last addresses (", Addresses(entry.answer),
                                      ")")
                       : std::string("; its endpoints wait for an answer"),
                   "; trying again every ", absl::FormatDuration(entry.query.refresh));
        entry.logged_problem = entry.answer.problem;
      }
    }
    if (changed && on_change_) {
      mu_.Unlock();
      on_change_({key});
      mu_.Lock();
    }
  }
}

}  // namespace sluice::upstream
