#include "dataplane/upstream/dns_cache.h"

#include <ares.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>

#include <algorithm>
#include <cstring>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/log.h"

namespace sluice::upstream {
namespace {

// One family's query.
struct FamilyQuery {
  bool done = false;
  int status = ARES_SUCCESS;
  std::vector<std::string> addresses;
  std::vector<std::string> left_out;  // answers that name no endpoint
};

// Whether an IPv4 address (network order) can be an endpoint: not "this
// network" (0.0.0.0/8: a connect to 0.0.0.0 reaches this host, which apply
// refuses), multicast (224.0.0.0/4) or the limited broadcast. A DNS
// sinkhole answers 0.0.0.0.
bool UsableV4(const in_addr& address) {
  const uint32_t a = ntohl(address.s_addr);
  return (a >> 24) != 0 && (a >> 28) != 0xe && a != 0xffffffffu;
}

void OnAddrinfo(void* arg, int status, int /*timeouts*/, struct ares_addrinfo* info) {
  auto* query = static_cast<FamilyQuery*>(arg);
  query->done = true;
  query->status = status;
  if (info == nullptr) return;
  if (status == ARES_SUCCESS) {
    char text[INET6_ADDRSTRLEN];
    for (const ares_addrinfo_node* node = info->nodes; node != nullptr; node = node->ai_next) {
      if (node->ai_family == AF_INET && node->ai_addr != nullptr) {
        const auto* in = reinterpret_cast<const sockaddr_in*>(node->ai_addr);
        if (inet_ntop(AF_INET, &in->sin_addr, text, sizeof(text)) != nullptr) {
          (UsableV4(in->sin_addr) ? query->addresses : query->left_out).emplace_back(text);
        }
      } else if (node->ai_family == AF_INET6 && node->ai_addr != nullptr) {
        const in6_addr& a6 = reinterpret_cast<const sockaddr_in6*>(node->ai_addr)->sin6_addr;
        if (IN6_IS_ADDR_V4MAPPED(&a6)) {
          // ::ffff:a.b.c.d is a.b.c.d: one endpoint with an A answer of it
          // (apply refuses the pair among literal endpoints).
          in_addr v4{};
          std::memcpy(&v4, &a6.s6_addr[12], sizeof(v4));
          if (inet_ntop(AF_INET, &v4, text, sizeof(text)) != nullptr) {
            (UsableV4(v4) ? query->addresses : query->left_out).emplace_back(text);
          }
        } else if (inet_ntop(AF_INET6, &a6, text, sizeof(text)) != nullptr) {
          const bool usable = !IN6_IS_ADDR_UNSPECIFIED(&a6) && !IN6_IS_ADDR_MULTICAST(&a6);
          (usable ? query->addresses : query->left_out).emplace_back(text);
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

std::string Addresses(const std::vector<std::string>& v4, const std::vector<std::string>& v6) {
  if (v4.empty() && v6.empty()) return "no address";
  std::vector<std::string> all = v4;
  // A mapped AAAA taken as its IPv4 address may repeat an A answer's.
  for (const std::string& a : v6) {
    if (std::find(v4.begin(), v4.end(), a) == v4.end()) all.push_back(a);
  }
  return absl::StrJoin(all, ", ");
}

// A family's query's outcome: OK (addresses, or none: no such record or
// name), or why it failed.
absl::Status FamilyStatus(const FamilyQuery& query, const char* family,
                          const std::vector<std::string>& servers, absl::Duration timeout) {
  switch (query.status) {
    case ARES_SUCCESS:
    case ARES_ENOTFOUND:  // no such name
    case ARES_ENODATA:    // no record of this family
      return absl::OkStatus();
    case ARES_ETIMEOUT:
    case ARES_ECANCELLED:
    case ARES_EDESTRUCTION:
      return absl::DeadlineExceededError(absl::StrCat(
          family, ": no answer within ", absl::FormatDuration(timeout),
          servers.empty() ? std::string(" (the host's DNS servers)")
                          : absl::StrCat(" from ", absl::StrJoin(servers, ", "))));
    case ARES_ESERVFAIL:
      return absl::UnavailableError(absl::StrCat(family, ": the server failed (SERVFAIL)"));
    case ARES_EREFUSED:
      return absl::UnavailableError(absl::StrCat(family, ": the server refused (REFUSED)"));
    case ARES_ECONNREFUSED:
      // What c-ares says once every server failed: unreachable, SERVFAIL
      // or REFUSED alike.
      return absl::UnavailableError(absl::StrCat(
          family, ": no server gave an answer (unreachable, SERVFAIL or REFUSED: ",
          servers.empty() ? std::string("the host's DNS servers") : absl::StrJoin(servers, ", "),
          ")"));
    default:
      return absl::UnavailableError(absl::StrCat(family, ": ", ares_strerror(query.status)));
  }
}

}  // namespace

DnsLookupResult CaresLookup(const std::string& name, const std::vector<std::string>& servers,
                            absl::Duration timeout, const std::atomic<bool>& cancelled) {
  static const int library = ares_library_init(ARES_LIB_INIT_ALL);
  DnsLookupResult result;
  auto fail_both = [&](absl::Status status) {
    result.v4_status = status;
    result.v6_status = std::move(status);
    return result;
  };
  if (library != ARES_SUCCESS) {
    return fail_both(
        absl::UnavailableError(absl::StrCat("c-ares cannot start: ", ares_strerror(library))));
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
    return fail_both(absl::UnavailableError(absl::StrCat("c-ares: ", ares_strerror(rc))));
  }
  if (!servers.empty()) {
    const std::string csv = absl::StrJoin(servers, ",");
    rc = ares_set_servers_ports_csv(channel, csv.c_str());
    if (rc != ARES_SUCCESS) {
      ares_destroy(channel);
      return fail_both(absl::InvalidArgumentError(
          absl::StrCat("DNS servers '", csv, "': ", ares_strerror(rc))));
    }
  }
  // A and AAAA each on its own: a family whose query fails keeps its last
  // addresses, whatever the other's answer (getaddrinfo over both said
  // success when either answered).
  FamilyQuery v4, v6;
  ares_addrinfo_hints hints{};
  hints.ai_socktype = SOCK_STREAM;  // one entry per address
  hints.ai_family = AF_INET;
  ares_getaddrinfo(channel, name.c_str(), nullptr, &hints, OnAddrinfo, &v4);
  hints.ai_family = AF_INET6;
  ares_getaddrinfo(channel, name.c_str(), nullptr, &hints, OnAddrinfo, &v6);
  const absl::Time deadline = absl::Now() + timeout;
  while (!v4.done || !v6.done) {
    const absl::Duration left = deadline - absl::Now();
    if (left <= absl::ZeroDuration() || cancelled.load()) {
      ares_cancel(channel);  // the callbacks run, with ARES_ECANCELLED
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
    // At most 100 ms a wait: a Stop() is noticed soon.
    timeval max_wait = absl::ToTimeval(std::min(left, absl::Milliseconds(100)));
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
  result.v4_status = FamilyStatus(v4, "A", servers, timeout);
  result.v6_status = FamilyStatus(v6, "AAAA", servers, timeout);
  result.v4 = std::move(v4.addresses);
  result.v6 = std::move(v6.addresses);
  result.left_out = std::move(v4.left_out);
  result.left_out.insert(result.left_out.end(), v6.left_out.begin(), v6.left_out.end());
  SortUnique(result.v4);
  SortUnique(result.v6);
  SortUnique(result.left_out);
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
                    "failure (a family's query failed; its last addresses are kept).");
    lookups_answered_ = stats->GetCounter("sluice_dns_lookups_total", "result=\"answer\"");
    lookups_no_address_ =
        stats->GetCounter("sluice_dns_lookups_total", "result=\"no_address\"");
    lookups_failed_ = stats->GetCounter("sluice_dns_lookups_total", "result=\"failure\"");
  }
}

DnsCache::~DnsCache() { Stop(); }

void DnsCache::Start() {
  absl::MutexLock lock(&mu_);
  if (started_ || stopping_) return;
  started_ = true;
  for (int i = 0; i < kLookupThreads; ++i) threads_.emplace_back([this] { LookupLoop(); });
  threads_.emplace_back([this] { NotifyLoop(); });
}

void DnsCache::Stop() {
  {
    absl::MutexLock lock(&mu_);
    stopping_ = true;
  }
  cancelled_.store(true);
  for (std::thread& t : threads_) {
    if (t.joinable()) t.join();
  }
  threads_.clear();
}

void DnsCache::Track(const std::vector<DnsQuery>& queries, absl::Duration wait,
                     const std::vector<DnsQuery>* next) {
  const absl::Time now = absl::Now();
  absl::MutexLock lock(&mu_);
  // A name asked of other servers (a changed dns_resolvers) starts from
  // the addresses it had from the servers it no longer asks: new servers
  // that cannot be reached keep them, as a failed refresh does, instead of
  // emptying the cluster. (Not from servers still asked for another
  // cluster: those may answer otherwise.) The servers the running version
  // asks count as no longer asked when the coming one does not ask them:
  // before, an apply tracked both versions' queries, found the old servers
  // still asked, and a name moved to servers that did not answer had no
  // address (every request 503).
  std::set<std::string> asked;
  for (const DnsQuery& query : next != nullptr ? *next : queries) asked.insert(query.Key());
  std::map<std::string, DnsAnswer> known;
  for (const auto& [key, entry] : entries_) {
    if (entry.answer.answered && asked.count(key) == 0) {
      known.emplace(entry.query.name, entry.answer);
    }
  }
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
      if (auto was = known.find(query.name); was != known.end()) {
        entry.answer = was->second;
        entry.answer.problem.clear();
        SLUICE_LOG(kInfo, "dns: ", key, " starts from the addresses ", query.name,
                   " had (", Addresses(entry.answer.v4, entry.answer.v6),
                   ") until its servers answer");
      } else {
        fresh.push_back(key);  // nothing to start from: worth waiting for
      }
      kept.emplace(key, std::move(entry));
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

void DnsCache::LookupLoop() {
  absl::MutexLock lock(&mu_);
  while (!stopping_) {
    // The query due first that no other thread looks up now.
    Entry* due = nullptr;
    for (auto& [key, entry] : entries_) {
      if (!entry.in_flight && (due == nullptr || entry.next < due->next)) due = &entry;
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
    due->in_flight = true;
    const DnsQuery query = due->query;
    const std::string key = query.Key();
    mu_.Unlock();
    DnsLookupResult result = lookup_(query.name, query.servers, kLookupTimeout, cancelled_);
    mu_.Lock();
    if (stopping_) break;
    if (TakeResult(key, std::move(result))) changed_.insert(key);
    ++generation_;  // the others' view of what is due changed
  }
}

bool DnsCache::TakeResult(const std::string& key, DnsLookupResult result) {
  auto it = entries_.find(key);
  if (it == entries_.end()) return false;  // forgotten meanwhile
  Entry& entry = it->second;
  entry.in_flight = false;
  entry.looked_up = true;
  entry.next = absl::Now() + entry.query.refresh;
  const bool v4_ok = result.v4_status.ok();
  const bool v6_ok = result.v6_status.ok();
  DnsAnswer answer = entry.answer;
  if (v4_ok) answer.v4 = std::move(result.v4);
  if (v6_ok) answer.v6 = std::move(result.v6);
  if (v4_ok || v6_ok) answer.left_out = std::move(result.left_out);
  answer.answered = answer.answered || v4_ok || v6_ok;
  std::vector<std::string> problems;
  if (!v4_ok) problems.emplace_back(result.v4_status.message());
  if (!v6_ok) problems.emplace_back(result.v6_status.message());
  answer.problem = absl::StrJoin(problems, "; ");
  stats::Counter* counter = !problems.empty()                          ? lookups_failed_
                            : answer.v4.empty() && answer.v6.empty() ? lookups_no_address_
                                                                     : lookups_answered_;
  if (counter != nullptr) counter->Inc();
  const bool addresses_changed = !entry.answer.answered ||
                                 entry.answer.v4 != answer.v4 || entry.answer.v6 != answer.v6;
  const bool problem_changed =
      entry.answer.problem != answer.problem || entry.answer.left_out != answer.left_out;
  // A sinkhole's 0.0.0.0, left out, is said: "no address" alone hid it.
  const std::string left_out =
      answer.left_out.empty() ? std::string()
                              : absl::StrCat(" (left out, naming no endpoint: ",
                                             absl::StrJoin(answer.left_out, ", "), ")");
  if (addresses_changed && entry.answer.answered) {
    SLUICE_LOG(kInfo, "dns: ", key, " resolves to ", Addresses(answer.v4, answer.v6), left_out,
               " (was ", Addresses(entry.answer.v4, entry.answer.v6), ")");
  } else if (addresses_changed && answer.answered) {
    SLUICE_LOG(kInfo, "dns: ", key, " resolves to ", Addresses(answer.v4, answer.v6), left_out);
  }
  if (!answer.problem.empty() && answer.problem != entry.logged_problem) {
    SLUICE_LOG(kWarning, "dns: looking up ", key, " failed: ", answer.problem,
               answer.answered
                   ? absl::StrCat("; keeping its last addresses (",
                                  Addresses(answer.v4, answer.v6), ")")
                   : std::string("; its endpoints wait for an answer"),
               "; trying again every ", absl::FormatDuration(entry.query.refresh));
    entry.logged_problem = answer.problem;
  } else if (answer.problem.empty() && !entry.logged_problem.empty()) {
    SLUICE_LOG(kInfo, "dns: ", key, " answers again (", Addresses(answer.v4, answer.v6), ")");
    entry.logged_problem.clear();
  }
  entry.answer = std::move(answer);
  // A problem that changed changes what /clusters and a 503 say.
  return addresses_changed || problem_changed;
}

void DnsCache::NotifyLoop() {
  absl::MutexLock lock(&mu_);
  while (true) {
    auto ready = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
      return stopping_ || !changed_.empty();
    };
    mu_.Await(absl::Condition(&ready));
    if (stopping_) return;
    std::set<std::string> keys;
    keys.swap(changed_);
    if (!on_change_) continue;
    mu_.Unlock();
    on_change_(keys);
    mu_.Lock();
  }
}

}  // namespace sluice::upstream
