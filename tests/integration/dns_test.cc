// Endpoints given by host name: each proxy looks the name up (c-ares) and
// keeps the cluster's endpoints in step with the answers, with real
// processes: a DNS server answering from a file (tests/harness/dns_peer.py),
// upstream servers on 127.0.0.2 and 127.0.0.3 behind one name, and the
// host's resolver for `localhost`.
#include <gtest/gtest.h>

#include <atomic>
#include <fstream>
#include <memory>
#include <set>
#include <string>
#include <thread>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "tests/harness/http_client.h"
#include "tests/harness/process.h"
#include "tests/harness/proxy.h"
#include "tests/harness/upstream.h"

namespace sluice::testing {
namespace {

class DnsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(cp_.ok()) << cp_.process().Log();
    dir_ = MakeTempDir("dns");
    listener_port_ = PickFreePort();
    ASSERT_NE(listener_port_, 0);
  }

  void StartDns(const std::string& records) {
    SetRecords(records);
    dns_ = std::make_unique<Process>(
        "/usr/bin/python3",
        std::vector<std::string>{RunfilePath("tests/harness/dns_peer.py"), dir_ + "/records.json"},
        dir_ + "/dns.log");
    auto line = dns_->WaitForLogLine("listening on ", absl::Seconds(20));
    ASSERT_TRUE(line.has_value()) << dns_->Log();
    ASSERT_TRUE(absl::SimpleAtoi(line->substr(line->find("on ") + 3), &dns_port_)) << *line;
  }
  // Rewritten whole, then renamed over the file: the server never reads
  // half a file.
  void SetRecords(const std::string& json) {
    WriteFile(dir_, "records.json.new", json);
    ASSERT_EQ(std::rename((dir_ + "/records.json.new").c_str(), (dir_ + "/records.json").c_str()),
              0);
  }

  // Applies one cluster `spec` (YAML lines, indented by 2) behind a catch-all
  // route; returns sluicectl's result.
  CommandResult Apply(const std::string& spec) {
    const std::string yaml = absl::StrCat(
        "kind: Cluster\nname: backend\nspec:\n", spec,
        "---\nkind: RouteTable\nname: main\nspec:\n  virtual_hosts:\n  - domains: ['*']\n"
        "    routes:\n    - match: {prefix: /}\n      route: {cluster: backend, retry_policy: "
        "{num_retries: 0}}\n---\nkind: Listener\nname: public\nspec: {address: 127.0.0.1, "
        "port: ",
        listener_port_, ", route_table: main}\n");
    return cp_.Ctl({"apply", "-f", WriteFile(dir_, "config.yaml", yaml)});
  }
  void StartProxy() {
    proxy_ = std::make_unique<Proxy>(cp_.address(), "dns-proxy");
    ASSERT_TRUE(proxy_->ok()) << proxy_->process().Log();
    ASSERT_TRUE(proxy_->WaitForVersion(1)) << proxy_->process().Log();
  }
  HttpResponse Get() { return HttpGet(absl::StrCat("127.0.0.1:", listener_port_), "/"); }
  // Waits until `n` requests in a row are answered by `names` only (each
  // of them at least once when `all`).
  bool WaitForUpstreams(const std::set<std::string>& names, absl::Duration timeout) {
    return WaitFor(
        [&] {
          std::set<std::string> seen;
          for (int i = 0; i < 8; ++i) {
            HttpResponse r = Get();
            if (r.status != 200 || !names.count(r.header("x-upstream"))) return false;
            seen.insert(r.header("x-upstream"));
          }
          return seen == names;
        },
        timeout);
  }

  ControlPlane cp_{"", "info"};
  std::string dir_;
  int listener_port_ = 0;
  int dns_port_ = 0;
  std::unique_ptr<Process> dns_;
  std::unique_ptr<Proxy> proxy_;
};

// The answers change under steady traffic: an address added, one taken
// away, the server silent (the last addresses are kept), the name gone
// (503 naming it). No request fails while the addresses change.
TEST_F(DnsTest, EndpointsFollowTheAnswersWithoutFailedRequests) {
  UpstreamServer a("a", 0, "", "127.0.0.2");
  ASSERT_TRUE(a.ok()) << a.process().Log();
  UpstreamServer b("b", a.port(), "", "127.0.0.3");
  ASSERT_TRUE(b.ok()) << b.process().Log();
  ASSERT_NO_FATAL_FAILURE(StartDns(R"({"backend.test": {"A": ["127.0.0.2"]}})"));
  CommandResult r = Apply(absl::StrCat(
      "  endpoints: [{address: Backend.Test., port: ", a.port(), "}]\n",
      "  dns_resolvers: ['127.0.0.1:", dns_port_, "']\n  dns_refresh_interval: 1s\n"));
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  ASSERT_NO_FATAL_FAILURE(StartProxy());
  // Looked up before the version was taken: served at once.
  HttpResponse first = Get();
  EXPECT_EQ(first.status, 200) << first.body << proxy_->process().Log();
  EXPECT_EQ(first.header("x-upstream"), "a");
  auto [status, clusters] = proxy_->Admin("/clusters");
  EXPECT_TRUE(absl::StrContains(clusters, absl::StrCat("127.0.0.2:", a.port(),
                                                       " (backend.test)")))
      << clusters;

  // Steady traffic meanwhile: every request must succeed.
  std::atomic<bool> stop{false};
  std::atomic<int> sent{0}, failed{0};
  std::string last_failure;
  std::thread traffic([&] {
    while (!stop.load()) {
      HttpResponse t = Get();
      ++sent;
      if (t.status != 200) {
        ++failed;
        last_failure = absl::StrCat(t.status, " ", t.error, " ", t.body);
      }
    }
  });
  SetRecords(R"({"backend.test": {"A": ["127.0.0.2", "127.0.0.3"]}})");
  EXPECT_TRUE(WaitForUpstreams({"a", "b"}, absl::Seconds(15))) << proxy_->process().Log();
  SetRecords(R"({"backend.test": {"A": ["127.0.0.3"]}})");
  EXPECT_TRUE(WaitForUpstreams({"b"}, absl::Seconds(15))) << proxy_->process().Log();
  stop = true;
  traffic.join();
  EXPECT_GT(sent.load(), 20);
  EXPECT_EQ(failed.load(), 0) << last_failure;
  EXPECT_TRUE(proxy_->process().WaitForLogLine("resolves to 127.0.0.3 (was 127.0.0.2, 127.0.0.3)",
                                               absl::Seconds(1)))
      << proxy_->process().Log();

  // The server stops answering: the last addresses stay.
  SetRecords(R"({"backend.test": "drop"})");
  EXPECT_TRUE(WaitFor([&] { return proxy_->Stat("sluice_dns_lookups_total{result=\"failure\"}") > 0; },
                      absl::Seconds(20)))
      << proxy_->process().Log();
  HttpResponse kept = Get();
  EXPECT_EQ(kept.status, 200);
  EXPECT_EQ(kept.header("x-upstream"), "b");
  EXPECT_TRUE(proxy_->process().WaitForLogLine("keeping its last addresses (127.0.0.3)",
                                               absl::Seconds(1)))
      << proxy_->process().Log();

  // The name is gone: no endpoint, and the 503 says why.
  SetRecords(R"({})");
  HttpResponse gone;
  EXPECT_TRUE(WaitFor(
      [&] {
        gone = Get();
        return gone.status == 503;
      },
      absl::Seconds(20)))
      << proxy_->process().Log();
  EXPECT_TRUE(absl::StrContains(gone.body, "no endpoint in cluster backend (backend.test: no address)"))
      << gone.body;
  // The admin page's view of the cluster follows the workers' (a fresh
  // CI run read it just before: waited for, not read once).
  EXPECT_TRUE(WaitFor(
      [&] {
        std::tie(status, clusters) = proxy_->Admin("/clusters");
        return absl::StrContains(clusters, "dns: backend.test: no address");
      },
      absl::Seconds(5)))
      << clusters;
  // It comes back.
  SetRecords(R"({"backend.test": {"A": ["127.0.0.2"]}})");
  EXPECT_TRUE(WaitForUpstreams({"a"}, absl::Seconds(15))) << proxy_->process().Log();
  // DNS answers are not config versions.
  EXPECT_EQ(proxy_->Stat("sluice_configs_applied_total"), 1);
}

// dns_resolvers changed to servers that do not answer: the name keeps the
// addresses it had (as a failed refresh keeps them), and the servers'
// first answer replaces them, logged. Before: the apply looked both
// versions' queries up, took the old servers for still asked, and the
// cluster had no endpoint (every request 503) until the new servers
// answered (probe).
TEST_F(DnsTest, NewServersThatDoNotAnswerKeepTheAddresses) {
  UpstreamServer a("a", 0, "", "127.0.0.2");
  ASSERT_TRUE(a.ok()) << a.process().Log();
  UpstreamServer b("b", a.port(), "", "127.0.0.3");
  ASSERT_TRUE(b.ok()) << b.process().Log();
  ASSERT_NO_FATAL_FAILURE(StartDns(R"({"backend.test": {"A": ["127.0.0.2"]}})"));
  auto spec = [&](int dns_port) {
    return absl::StrCat("  endpoints: [{address: backend.test, port: ", a.port(), "}]\n",
                        "  dns_resolvers: ['127.0.0.1:", dns_port,
                        "']\n  dns_refresh_interval: 1s\n");
  };
  CommandResult r = Apply(spec(dns_port_));
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  ASSERT_NO_FATAL_FAILURE(StartProxy());
  ASSERT_TRUE(WaitForUpstreams({"a"}, absl::Seconds(10))) << proxy_->process().Log();

  const int silent = PickFreePort();  // no DNS server there
  ASSERT_NE(silent, 0);
  r = Apply(spec(silent));
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  ASSERT_TRUE(proxy_->WaitForVersion(2)) << proxy_->process().Log();
  EXPECT_TRUE(proxy_->process().WaitForLogLine(
      absl::StrCat("dns: backend.test@127.0.0.1:", silent,
                   " starts from the addresses backend.test had (127.0.0.2)"),
      absl::Seconds(1)))
      << proxy_->process().Log();
  EXPECT_TRUE(
      WaitFor([&] { return proxy_->Stat("sluice_dns_lookups_total{result=\"failure\"}") > 0; },
              absl::Seconds(20)))
      << proxy_->process().Log();
  for (int i = 0; i < 5; ++i) {
    HttpResponse kept = Get();
    EXPECT_EQ(kept.status, 200) << kept.body << proxy_->process().Log();
    EXPECT_EQ(kept.header("x-upstream"), "a");
  }

  // Back to servers that answer, with another address: it replaces them.
  SetRecords(R"({"backend.test": {"A": ["127.0.0.3"]}})");
  r = Apply(spec(dns_port_));
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  EXPECT_TRUE(WaitForUpstreams({"b"}, absl::Seconds(15))) << proxy_->process().Log();
  EXPECT_TRUE(proxy_->process().WaitForLogLine(
      absl::StrCat("dns: backend.test@127.0.0.1:", dns_port_,
                   " resolves to 127.0.0.3 (was 127.0.0.2)"),
      absl::Seconds(5)))
      << proxy_->process().Log();
}

// Several new names in one apply are looked up side by side, each cluster
// starting with its endpoints (before, the change of the first name waited
// for the apply's lock, the apply took 5 s and the others had none); a name
// that never answers says why on /clusters once its lookup has failed.
TEST_F(DnsTest, NewNamesAreLookedUpTogetherAndAFailureIsSaid) {
  UpstreamServer a("a", 0, "", "127.0.0.2");
  ASSERT_TRUE(a.ok()) << a.process().Log();
  ASSERT_NO_FATAL_FAILURE(StartDns(
      R"({"one.test": {"A": ["127.0.0.2"]}, "two.test": {"A": ["127.0.0.2"]},
          "three.test": {"A": ["127.0.0.2"]}, "mute.test": "drop"})"));
  std::string yaml;
  for (const char* name : {"one", "two", "three", "mute"}) {
    absl::StrAppend(&yaml, "kind: Cluster\nname: ", name, "\nspec:\n  endpoints: [{address: ",
                    name, ".test, port: ", a.port(), "}]\n  dns_resolvers: ['127.0.0.1:",
                    dns_port_, "']\n---\n");
  }
  absl::StrAppend(&yaml,
                  "kind: RouteTable\nname: main\nspec:\n  virtual_hosts:\n  - domains: ['*']\n"
                  "    routes:\n    - match: {prefix: /}\n      route: {cluster: one}\n---\n"
                  "kind: Listener\nname: public\nspec: {address: 127.0.0.1, port: ",
                  listener_port_, ", route_table: main}\n");
  CommandResult r = cp_.Ctl({"apply", "-f", WriteFile(dir_, "many.yaml", yaml)});
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  ASSERT_NO_FATAL_FAILURE(StartProxy());
  auto [status, clusters] = proxy_->Admin("/clusters");
  for (const char* name : {"one", "two", "three"}) {
    EXPECT_TRUE(absl::StrContains(clusters, absl::StrCat("127.0.0.2:", a.port(), " (", name,
                                                         ".test)")))
        << name << "\n" << clusters << proxy_->process().Log();
  }
  EXPECT_TRUE(WaitFor(
      [&] {
        std::tie(status, clusters) = proxy_->Admin("/clusters");
        return absl::StrContains(clusters, "dns: mute.test: A: no answer within 5s");
      },
      absl::Seconds(20)))
      << clusters;
}

// The host's resolver (/etc/hosts) for `localhost`, and the lookup family:
// V4_ONLY takes 127.0.0.1 only, V6_ONLY ::1 only.
TEST_F(DnsTest, TheHostResolverAndTheLookupFamily) {
  UpstreamServer a("a");
  ASSERT_TRUE(a.ok()) << a.process().Log();
  CommandResult r = Apply(absl::StrCat("  endpoints: [{address: localhost, port: ", a.port(),
                                       "}]\n  dns_lookup_family: V4_ONLY\n"));
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  ASSERT_NO_FATAL_FAILURE(StartProxy());
  HttpResponse ok = Get();
  EXPECT_EQ(ok.status, 200) << ok.body << proxy_->process().Log();
  EXPECT_EQ(ok.header("x-upstream"), "a");
  auto [status, clusters] = proxy_->Admin("/clusters?format=json");
  EXPECT_TRUE(absl::StrContains(clusters, absl::StrCat("\"address\":\"127.0.0.1:", a.port(),
                                                       "\",\"host_name\":\"localhost\"")))
      << clusters;
  r = Apply(absl::StrCat("  endpoints: [{address: localhost, port: ", a.port(),
                         "}]\n  dns_lookup_family: V6_ONLY\n"));
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  ASSERT_TRUE(proxy_->WaitForVersion(2)) << proxy_->process().Log();
  std::tie(status, clusters) = proxy_->Admin("/clusters");
  // ::1 when the hosts file names it for localhost; else none, said so.
  EXPECT_TRUE(absl::StrContains(clusters, absl::StrCat("[::1]:", a.port(), " (localhost)")) ||
              absl::StrContains(clusters, "dns: localhost: no address of dns_lookup_family V6_ONLY"))
      << clusters;
  EXPECT_FALSE(absl::StrContains(clusters, absl::StrCat("127.0.0.1:", a.port()))) << clusters;
}

// Answers that name no endpoint are left out: the unspecified addresses
// (a DNS sinkhole's 0.0.0.0; a connect to :: reached a service on this
// host's loopback), multicast and broadcast; an IPv4-mapped AAAA is its
// IPv4 address, one endpoint with the A answer. What was left out is said
// (before, a sinkhole's answer read as "no address").
TEST_F(DnsTest, AnswersThatNameNoEndpointAreLeftOut) {
  UpstreamServer a("a", 0, "", "127.0.0.2");
  ASSERT_TRUE(a.ok()) << a.process().Log();
  ASSERT_NO_FATAL_FAILURE(StartDns(
      R"({"odd.test": {"A": ["0.0.0.0", "127.0.0.2", "224.0.0.1", "255.255.255.255"],)"
      R"( "AAAA": ["::", "::ffff:127.0.0.2", "ff02::1"]}})"));
  CommandResult r = Apply(absl::StrCat("  endpoints: [{address: odd.test, port: ", a.port(),
                                       "}]\n  dns_resolvers: ['127.0.0.1:", dns_port_,
                                       "']\n  dns_lookup_family: ALL\n"
                                       "  dns_refresh_interval: 1s\n"));
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  ASSERT_NO_FATAL_FAILURE(StartProxy());
  auto [status, clusters] = proxy_->Admin("/clusters");
  EXPECT_TRUE(absl::StrContains(clusters, "cluster backend (ROUND_ROBIN, 1 endpoints)")) << clusters;
  EXPECT_TRUE(absl::StrContains(clusters, absl::StrCat("127.0.0.2:", a.port(), " (odd.test)")))
      << clusters;
  for (int i = 0; i < 4; ++i) EXPECT_EQ(Get().status, 200);
  EXPECT_TRUE(proxy_->process().WaitForLogLine(
      "resolves to 127.0.0.2 (left out, naming no endpoint: 0.0.0.0, 224.0.0.1, "
      "255.255.255.255, ::, ff02::1)",
      absl::Seconds(1)))
      << proxy_->process().Log();

  // A sinkhole's answer alone: no endpoint, and the 503 says what came.
  SetRecords(R"({"odd.test": {"A": ["0.0.0.0"]}})");
  const std::string why = "odd.test: no address (answered 0.0.0.0, which names no endpoint)";
  HttpResponse none;
  EXPECT_TRUE(WaitFor(
      [&] {
        none = Get();
        return none.status == 503 && absl::StrContains(none.body, why);
      },
      absl::Seconds(20)))
      << none.status << " " << none.body << proxy_->process().Log();
  EXPECT_TRUE(WaitFor([&] { return absl::StrContains(proxy_->Admin("/clusters").second, why); },
                      absl::Seconds(5)))
      << proxy_->Admin("/clusters").second;
}

// What is refused at apply, with the field named; nothing changes.
TEST_F(DnsTest, BadNamesAndSettingsAreRefused) {
  struct Case {
    std::string spec;
    std::string error;
  };
  const Case cases[] = {
      {"  endpoints: [{address: 'bad_name-', port: 80}]\n",
       "endpoints[0].address: 'bad_name-' is neither an IPv4 or IPv6 address nor a host name"},
      {"  endpoints: [{address: 10.0.0.256, port: 80}]\n",
       "endpoints[0].address: '10.0.0.256' is neither"},
      {"  endpoints: [{address: a.example, port: 80}, {address: A.Example., port: 80}]\n",
       "is the same endpoint as endpoints[0]"},
      {"  endpoints: [{address: 127.0.0.1, port: 80}]\n  dns_refresh_interval: 5s\n",
       "dns_refresh_interval: applies only to endpoints given by host name"},
      {"  endpoints: [{address: a.example, port: 80}]\n  dns_refresh_interval: 0.5s\n",
       "dns_refresh_interval"},
      {"  endpoints: [{address: a.example, port: 80}]\n  dns_resolvers: ['dns.example:53']\n",
       "dns_resolvers[0]: 'dns.example:53' is not a DNS server address"},
  };
  for (const Case& c : cases) {
    CommandResult r = Apply(c.spec);
    EXPECT_NE(r.exit_code, 0) << c.spec;
    EXPECT_TRUE(absl::StrContains(r.err, c.error)) << c.spec << "\n" << r.err;
  }
  CommandResult got = cp_.Ctl({"get", "-o", "yaml"});
  EXPECT_FALSE(absl::StrContains(got.out, "backend")) << got.out;
}

}  // namespace
}  // namespace sluice::testing
