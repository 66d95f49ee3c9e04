// sluice-control --store etcd with real processes: three etcd members on
// loopback, two control-plane replicas sharing one store, a proxy on each.
// A version applied on one replica is served by the other's proxy; two
// conditional applies race and exactly one wins; tokens made on one replica
// work on the other; with one etcd member killed applies still succeed; with
// the quorum gone they fail within the deadline with a clear error while the
// proxies keep serving; versions only grow.
#include <gtest/gtest.h>

#include <csignal>

#include <atomic>
#include <thread>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "common/log.h"
#include "tests/harness/etcd_cluster.h"
#include "tests/harness/http_client.h"
#include "tests/harness/process.h"
#include "tests/harness/proxy.h"

namespace sluice::testing {
namespace {

class EtcdStoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(etcd_.ok()) << etcd_.Logs();
    for (int i = 0; i < 2; ++i) {
      replicas_[i] = std::make_unique<ControlPlane>(
          "", "info",
          std::vector<std::string>{"--store", "etcd", "--etcd-endpoints",
                                   etcd_.endpoints(), "--etcd-prefix",
                                   "/sluice-test/", "--etcd-timeout", "5s"});
      ASSERT_TRUE(replicas_[i]->ok()) << replicas_[i]->process().Log();
      ports_[i] = PickFreePort();
    }
  }

  // Two listeners answering `body` themselves, one per proxy (node groups
  // g1 and g2).
  std::string Config(const std::string& body) {
    std::string yaml = absl::StrCat(
        "kind: RouteTable\nname: main\nspec:\n  virtual_hosts:\n"
        "    - domains: ['*']\n      routes:\n"
        "        - match: {prefix: /}\n          direct_response: {status: "
        "200, body: ",
        body, "}\n");
    for (int i = 0; i < 2; ++i) {
      absl::StrAppend(&yaml, "---\nkind: Listener\nname: l", i + 1,
                      "\nspec: {address: 127.0.0.1, port: ", ports_[i],
                      ", route_table: main, node_groups: [g", i + 1, "]}\n");
    }
    return yaml;
  }

  CommandResult Apply(int replica, const std::string& body,
                      std::vector<std::string> extra = {}) {
    std::vector<std::string> args = {
        "apply", "-f",
        WriteFile(MakeTempDir("etcd-apply"), "config.yaml", Config(body))};
    args.insert(args.end(), extra.begin(), extra.end());
    return replicas_[replica]->Ctl(args);
  }

  // The version an apply's output names ("applied: version N"), 0 if none.
  static uint64_t AppliedVersion(const CommandResult& r) {
    size_t at = r.out.find("applied: version ");
    if (at == std::string::npos) return 0;
    std::string tail = r.out.substr(at + 17);
    uint64_t version = 0;
    absl::SimpleAtoi(tail.substr(0, tail.find_first_not_of("0123456789")),
                     &version);
    return version;
  }

  // The store id a replica's start line names.
  std::string StoreId(int replica) {
    auto line = replicas_[replica]->process().WaitForLogLine(", store ",
                                                             absl::Seconds(1));
    if (!line) return "";
    std::string tail = line->substr(line->find(", store ") + 8);
    return tail.substr(0, tail.find(','));
  }

  void StartProxies() {
    for (int i = 0; i < 2; ++i) {
      proxies_[i] = std::make_unique<Proxy>(
          replicas_[i]->address(), absl::StrCat("proxy-", i + 1), 1, "",
          std::vector<std::string>{"--group", absl::StrCat("g", i + 1),
                                   "--log-level", "info"});
      ASSERT_TRUE(proxies_[i]->ok()) << proxies_[i]->process().Log();
    }
  }

  std::string Body(int proxy) {
    HttpResponse r = HttpGet(absl::StrCat("127.0.0.1:", ports_[proxy]), "/");
    return r.ok() ? r.body : "(error: " + r.error + ")";
  }

  EtcdCluster etcd_{3};
  std::unique_ptr<ControlPlane> replicas_[2];
  std::unique_ptr<Proxy> proxies_[2];
  int ports_[2] = {0, 0};
};

TEST_F(EtcdStoreTest, ReplicasShareVersionsHistoryAndTokens) {
  // One store: the second replica took the id the first one made.
  const std::string id = StoreId(0);
  EXPECT_EQ(id.size(), 32u) << replicas_[0]->process().Log();
  EXPECT_EQ(StoreId(1), id) << replicas_[1]->process().Log();

  CommandResult r = Apply(0, "one", {"-m", "first"});
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  EXPECT_EQ(AppliedVersion(r), 1u) << r.out;
  StartProxies();
  // The proxy of replica B serves what was applied on replica A.
  ASSERT_TRUE(proxies_[1]->WaitForVersion(1))
      << proxies_[1]->process().Log() << replicas_[1]->process().Log();
  ASSERT_TRUE(proxies_[0]->WaitForVersion(1)) << proxies_[0]->process().Log();
  EXPECT_EQ(Body(1), "one");
  EXPECT_EQ(replicas_[1]->Ctl({"get", "-o", "yaml"}).out,
            replicas_[0]->Ctl({"get", "-o", "yaml"}).out);

  // And the other way round; the history (with the message) is shared.
  const absl::Time applied_at = absl::Now();
  r = Apply(1, "two", {"-m", "from b"});
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  EXPECT_EQ(AppliedVersion(r), 2u) << r.out;
  ASSERT_TRUE(proxies_[0]->WaitForVersion(2))
      << proxies_[0]->process().Log() << replicas_[0]->process().Log();
  SLUICE_LOG(kInfo, "apply on B to proxy of A serving it: ",
             absl::FormatDuration(absl::Now() - applied_at));
  EXPECT_EQ(Body(0), "two");
  r = replicas_[0]->Ctl({"history"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_TRUE(absl::StrContains(r.out, "from b")) << r.out;
  EXPECT_TRUE(absl::StrContains(r.out, "first")) << r.out;
  EXPECT_TRUE(replicas_[0]->process().WaitForLogLine(
      "version 2 from another replica", absl::Seconds(1)));

  // Two changes based on version 2, one on each replica at once: exactly
  // one is applied (version 3); the other is refused as a conflict.
  CommandResult results[2];
  {
    std::thread a([&] {
      results[0] = Apply(0, "three-a", {"--if-version", "2"});
    });
    std::thread b([&] {
      results[1] = Apply(1, "three-b", {"--if-version", "2"});
    });
    a.join();
    b.join();
  }
  const int winners = (results[0].exit_code == 0) + (results[1].exit_code == 0);
  EXPECT_EQ(winners, 1) << results[0].out << results[0].err << results[1].out
                        << results[1].err;
  const int winner = results[0].exit_code == 0 ? 0 : 1;
  const int loser = 1 - winner;
  EXPECT_EQ(AppliedVersion(results[winner]), 3u) << results[winner].out;
  EXPECT_EQ(results[loser].exit_code, 1)
      << results[loser].out << results[loser].err << replicas_[loser]->process().Log();
  EXPECT_TRUE(absl::StrContains(results[loser].err, "conflict"))
      << results[loser].err;
  const std::string won = winner == 0 ? "three-a" : "three-b";
  for (int i = 0; i < 2; ++i) {
    ASSERT_TRUE(proxies_[i]->WaitForVersion(3)) << proxies_[i]->process().Log();
    EXPECT_EQ(Body(i), won);
  }
  // The loser's replica caught up: a change without a condition goes on
  // from version 3.
  r = Apply(loser, "four");
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  EXPECT_EQ(AppliedVersion(r), 4u) << r.out;

  // A token made on one replica is known to the other, and, stored, it is
  // required there too, although neither replica has --require-tokens (a
  // replica without the flag let anyone in, and mint admin tokens).
  r = replicas_[0]->Ctl({"token", "create", "ci-bot", "--role", "admin"});
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  const std::string token(absl::StripAsciiWhitespace(r.out));
  ASSERT_TRUE(absl::StartsWith(token, "slc_")) << r.out;
  EXPECT_TRUE(WaitFor(
      [&] {
        return absl::StrContains(replicas_[1]->Ctl({"--token", token, "token", "list"}).out,
                                 "ci-bot");
      },
      absl::Seconds(10)));
  r = replicas_[1]->Ctl({"token", "list"});
  EXPECT_EQ(r.exit_code, 1) << r.out;
  EXPECT_TRUE(absl::StrContains(r.err, "requires a token")) << r.err;
  r = replicas_[1]->Ctl({"--token", token, "token", "revoke", "ci-bot"});
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  EXPECT_TRUE(WaitFor(
      [&] {
        return !absl::StrContains(replicas_[0]->Ctl({"token", "list"}).out,
                                  "ci-bot");
      },
      absl::Seconds(10)));

  // A change bigger than etcd takes in one request (here: a replica told
  // etcd takes 4 KiB) is refused with the reason; nothing changes.
  ControlPlane small(
      "", "info",
      {"--store", "etcd", "--etcd-endpoints", etcd_.endpoints(),
       "--etcd-prefix", "/sluice-test/", "--etcd-max-request-bytes", "4096"});
  ASSERT_TRUE(small.ok()) << small.process().Log();
  r = small.Ctl({"apply", "-f",
                 WriteFile(MakeTempDir("etcd-apply"), "config.yaml",
                           Config(std::string(5000, 'x')))});
  EXPECT_NE(r.exit_code, 0) << r.out;
  EXPECT_TRUE(absl::StrContains(r.err, "--etcd-max-request-bytes")) << r.err;
  EXPECT_EQ(Body(0), "four");

  // Canary rollouts need one replica's memory: refused, with the reason.
  r = Apply(0, "canary", {"--canary", "g1", "--verify", "10s"});
  EXPECT_NE(r.exit_code, 0) << r.out;
  EXPECT_TRUE(absl::StrContains(r.err, "not supported")) << r.err;

  // A replica started with --require-tokens and only the bootstrap token
  // (held in its memory) makes the replicas without the flag require tokens
  // too. Before, they let anyone apply, and mint an admin token it accepts.
  const std::string bootstrap = "bootstrap-token-0123456789abcdef";
  ControlPlane guard("", "info",
                     {"--store", "etcd", "--etcd-endpoints", etcd_.endpoints(), "--etcd-prefix",
                      "/sluice-test/", "--require-tokens", "--admin-token-file",
                      WriteFile(MakeTempDir("etcd-guard"), "token", bootstrap + "\n")});
  ASSERT_TRUE(guard.ok()) << guard.process().Log();
  EXPECT_TRUE(WaitFor(
      [&] {
        CommandResult anonymous = replicas_[1]->Ctl({"get"});
        return anonymous.exit_code != 0 && absl::StrContains(anonymous.err, "requires a token");
      },
      absl::Seconds(10)))
      << replicas_[1]->Ctl({"get"}).out;
  r = replicas_[1]->Ctl({"token", "create", "intruder", "--role", "admin"});
  EXPECT_NE(r.exit_code, 0) << r.out;
  r = replicas_[1]->Ctl({"token", "list"});
  EXPECT_NE(r.exit_code, 0) << r.out;
  r = guard.Ctl({"--token", bootstrap, "token", "list"});
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  EXPECT_FALSE(absl::StrContains(r.out, "tokens-required")) << r.out;  // not a token
  // Revoking the last token leaves it: the guard still runs with the flag.
  r = guard.Ctl({"--token", bootstrap, "token", "create", "ci", "--role", "operator"});
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  r = guard.Ctl({"--token", bootstrap, "token", "revoke", "ci"});
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  ASSERT_FALSE(WaitFor([&] { return replicas_[1]->Ctl({"get"}).exit_code == 0; },
                       absl::Seconds(2)));
  r = replicas_[1]->Ctl({"token", "create", "intruder", "--role", "admin"});
  EXPECT_NE(r.exit_code, 0) << r.out;
  // An admin opens the API by revoking it by name.
  r = guard.Ctl({"--token", bootstrap, "token", "revoke", "*tokens-required*"});
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  EXPECT_TRUE(WaitFor([&] { return replicas_[1]->Ctl({"get"}).exit_code == 0; },
                      absl::Seconds(10)));
}

TEST_F(EtcdStoreTest, OneMemberDownAppliesQuorumLostRefusesAndProxiesServe) {
  CommandResult r = Apply(0, "one");
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  StartProxies();
  for (int i = 0; i < 2; ++i) ASSERT_TRUE(proxies_[i]->WaitForVersion(1));

  // Steady load on both proxies for the whole drill.
  std::atomic<bool> stop{false};
  std::atomic<int> requests{0};
  std::atomic<int> failures{0};
  // Stopped and joined however the test ends.
  struct Joiner {
    std::atomic<bool>* stop;
    std::thread* thread;
    ~Joiner() {
      *stop = true;
      if (thread->joinable()) thread->join();
    }
  };
  std::thread load;
  Joiner joiner{&stop, &load};
  load = std::thread([&] {
    while (!stop.load()) {
      for (int i = 0; i < 2; ++i) {
        HttpResponse response =
            HttpGet(absl::StrCat("127.0.0.1:", ports_[i]), "/");
        ++requests;
        if (!response.ok() || response.status != 200) ++failures;
      }
    }
  });

  // With etcd in reach, reads carry no note.
  r = replicas_[0]->Ctl({"get"});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_FALSE(absl::StrContains(r.err, "note:")) << r.err;

  uint64_t last_version = 1;
  // One member killed: the other two are a quorum; applies go on.
  etcd_.Kill(0);
  absl::Time start = absl::Now();
  r = Apply(0, "two");
  const absl::Duration one_down = absl::Now() - start;
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err << replicas_[0]->process().Log();
  EXPECT_GT(AppliedVersion(r), last_version);
  last_version = AppliedVersion(r);
  start = absl::Now();
  r = Apply(1, "three");
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err << replicas_[1]->process().Log();
  EXPECT_GT(AppliedVersion(r), last_version);
  last_version = AppliedVersion(r);
  SLUICE_LOG(kInfo, "apply with one etcd member down: ",
             absl::FormatDuration(one_down), " (first), ",
             absl::FormatDuration(absl::Now() - start), " (second)");
  for (int i = 0; i < 2; ++i) {
    ASSERT_TRUE(proxies_[i]->WaitForVersion(last_version))
        << proxies_[i]->process().Log();
    EXPECT_EQ(Body(i), "three");
  }

  // A second member killed: no quorum. The apply fails within the etcd
  // timeout (5 s, plus sluicectl's own start) with the reason, and nothing
  // changes anywhere. (If the surviving member was the leader and took the
  // request before stepping down, etcd may commit it once the quorum is
  // back: the error says so, and the versions below only need to grow.)
  etcd_.Kill(1);
  start = absl::Now();
  r = Apply(1, "four");
  const absl::Duration refused = absl::Now() - start;
  SLUICE_LOG(kInfo, "apply without quorum refused after ",
             absl::FormatDuration(refused));
  EXPECT_NE(r.exit_code, 0) << r.out;
  EXPECT_TRUE(absl::StrContains(
      r.err, "is unavailable: etcd: no quorum or unreachable"))
      << r.err;
  EXPECT_LT(refused, absl::Seconds(9));
  // It says once what to do, and nothing contrary ("nothing applied" was
  // followed by "check with sluicectl history before trying again").
  const bool nothing_applied = absl::StrContains(r.err, "nothing applied");
  EXPECT_EQ(nothing_applied, !absl::StrContains(r.err, "sluicectl history")) << r.err;
  EXPECT_EQ(r.err.find("sluicectl history"), r.err.rfind("sluicectl history")) << r.err;
  // `proxies` says that other replicas' proxies are missing from its list
  // (etcd unread for the apply's 5 s); it used to list them silently as 0.
  r = replicas_[1]->Ctl({"proxies"});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_TRUE(absl::StrContains(r.err, "has not read the other replicas' proxies for "))
      << r.err;
  // The replicas still answer reads with the last version; the proxies serve
  // it;
  // they say it is what they last read (another replica, cut off from
  // this one but not from etcd, may have applied since).
  r = replicas_[1]->Ctl({"get", "-o", "yaml"});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_TRUE(absl::StrContains(r.out, "three")) << r.out;
  EXPECT_TRUE(absl::StrContains(r.err, "note: this sluice-control has not read etcd for "))
      << r.err;
  r = replicas_[1]->Ctl({"history"});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_TRUE(absl::StrContains(r.err, "this is the version it last read")) << r.err;
  r = replicas_[1]->Ctl({"diff", "1"});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.err.find("note: this sluice-control"), r.err.rfind("note: this sluice-control"))
      << r.err;
  EXPECT_TRUE(absl::StrContains(r.err, "this is the version it last read")) << r.err;
  for (int i = 0; i < 2; ++i) {
    EXPECT_EQ(Body(i), "three");
    EXPECT_EQ(proxies_[i]->ReadyVersion(), last_version);
  }

  // The quorum back: applies go on from the last version.
  ASSERT_TRUE(etcd_.Restart(1)) << etcd_.Logs();
  start = absl::Now();
  EXPECT_TRUE(WaitFor(
      [&] {
        r = Apply(0, "five");
        return r.exit_code == 0;
      },
      absl::Seconds(30)))
      << r.out << r.err;
  SLUICE_LOG(kInfo, "applies work again ",
             absl::FormatDuration(absl::Now() - start),
             " after the quorum is back");
  EXPECT_GT(AppliedVersion(r), last_version) << r.out;
  last_version = AppliedVersion(r);
  for (int i = 0; i < 2; ++i) {
    ASSERT_TRUE(proxies_[i]->WaitForVersion(last_version))
        << proxies_[i]->process().Log();
    EXPECT_EQ(Body(i), "five");
  }
  stop = true;
  load.join();
  EXPECT_GT(requests.load(), 0);
  EXPECT_EQ(failures.load(), 0) << "of " << requests.load();
}

// A replica started while etcd has no quorum waits (logging why), serves
// nothing meanwhile, and starts with the store's version once the quorum is
// back.
// Each replica lists every replica's proxies: `sluicectl proxies` and
// `apply --wait` on one replica see the proxy connected to the other. Before,
// --wait said "no proxy is connected" (or counted its own) while the other
// replica's proxy might have refused the version.
TEST_F(EtcdStoreTest, EveryReplicaSeesTheWholeFleet) {
  StartProxies();
  for (int replica = 0; replica < 2; ++replica) {
    CommandResult listed;
    EXPECT_TRUE(WaitFor(
        [&] {
          listed = replicas_[replica]->Ctl({"proxies", "-o", "json"});
          return absl::StrContains(listed.out, "\"proxy-1\"") &&
                 absl::StrContains(listed.out, "\"proxy-2\"");
        },
        absl::Seconds(15)))
        << replica << ": " << listed.out << listed.err;
    EXPECT_TRUE(absl::StrContains(listed.out, "\"replica\"")) << listed.out;
  }
  // Each replica logs its id, the `replica` its proxies are listed under.
  for (int replica = 0; replica < 2; ++replica) {
    const std::string log = replicas_[replica]->process().Log();
    const size_t at = log.find("replica id ");
    ASSERT_NE(at, std::string::npos) << log;
    const std::string id = log.substr(at + 11, log.find(' ', at + 11) - (at + 11));
    CommandResult listed = replicas_[replica]->Ctl({"proxies", "-o", "json"});
    EXPECT_TRUE(absl::StrContains(listed.out, absl::StrCat("\"replica\":\"", id, "\"")))
        << id << ": " << listed.out;
  }
  CommandResult waited = Apply(0, "fleet-wide", {"--wait"});
  EXPECT_EQ(waited.exit_code, 0) << waited.out << waited.err;
  EXPECT_TRUE(absl::StrContains(waited.out, "taken by 2 of 2 proxies")) << waited.out;
  EXPECT_EQ(Body(1), "fleet-wide");
}

// A replica that hangs (SIGSTOP: a frozen VM) keeps its proxies until their
// keepalive gives up (40 s). The other replica lists them as silent, and
// `apply --wait` there does not end with success. Before: their statuses
// were dropped 3 s into the silence, and --wait said "no proxy is
// connected" (exit 0) while they still served the version before.
TEST_F(EtcdStoreTest, ApplyWaitDoesNotForgetTheProxiesOfAHungReplica) {
  StartProxies();
  CommandResult listed;
  ASSERT_TRUE(WaitFor(
      [&] {
        listed = replicas_[1]->Ctl({"proxies", "-o", "json"});
        return absl::StrContains(listed.out, "\"proxy-1\"");
      },
      absl::Seconds(15)))
      << listed.out << listed.err;
  replicas_[0]->process().Signal(SIGSTOP);
  ASSERT_TRUE(WaitFor(
      [&] {
        listed = replicas_[1]->Ctl({"proxies"});
        return absl::StrContains(listed.err, "has not reported for");
      },
      absl::Seconds(15)))
      << listed.out << listed.err;
  EXPECT_TRUE(absl::StrContains(listed.out, "proxy-1")) << listed.out;
  CommandResult waited = Apply(1, "while-hung", {"--wait", "--timeout", "3s"});
  replicas_[0]->process().Signal(SIGCONT);
  EXPECT_EQ(waited.exit_code, 1) << waited.out << waited.err;
  EXPECT_TRUE(absl::StrContains(waited.out, "taken by 1 of 2 proxies")) << waited.out;
  EXPECT_TRUE(absl::StrContains(waited.err, "proxy proxy-1 is connected to control-plane replica"))
      << waited.err;
  EXPECT_EQ(Body(1), "while-hung");
  // Thawed, the replica catches up and its proxy takes the version.
  ASSERT_TRUE(proxies_[0]->WaitForVersion(AppliedVersion(waited), absl::Seconds(30)))
      << proxies_[0]->process().Log();
  EXPECT_EQ(Body(0), "while-hung");
}

// etcd keeps every revision until compacted: each replica's leases/ entry
// (every 500 ms) and each version piled up in its database until its space
// quota filled and etcd refused every write (no change could be applied).
// A replica compacts the history to the revision of one interval before.
TEST_F(EtcdStoreTest, TheHistoryIsCompactedSoEtcdDoesNotFillUp) {
  ControlPlane compacting(
      "", "info",
      std::vector<std::string>{"--store", "etcd", "--etcd-endpoints", etcd_.endpoints(),
                               "--etcd-prefix", "/sluice-test/",
                               "--etcd-compaction-interval", "1s"});
  ASSERT_TRUE(compacting.ok()) << compacting.process().Log();
  for (int i = 0; i < 3; ++i) {
    CommandResult r = Apply(0, absl::StrCat("v", i));
    ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  }
  // The first versions' revisions are gone from etcd's history.
  CommandResult old;
  EXPECT_TRUE(WaitFor(
      [&] {
        old = RunCommand({"/usr/bin/etcdctl", "--endpoints", etcd_.endpoint(0), "get",
                          "/sluice-test/version", "--rev=2"},
                         {"ETCDCTL_API=3"});
        return absl::StrContains(old.err, "compacted");
      },
      absl::Seconds(20)))
      << old.out << old.err << compacting.process().Log();
  // And the store still works: a new version is applied and read back.
  CommandResult r = Apply(1, "after-compaction");
  EXPECT_EQ(r.exit_code, 0) << r.out << r.err;
  CommandResult get = compacting.Ctl({"get", "routetable", "main", "-o", "yaml"});
  EXPECT_TRUE(WaitFor(
      [&] {
        get = compacting.Ctl({"get", "routetable", "main", "-o", "yaml"});
        return absl::StrContains(get.out, "after-compaction");
      },
      absl::Seconds(10)))
      << get.out << get.err;
  // A value out of bounds is refused.
  CommandResult bad = RunCommand({RunfilePath("controlplane/server/sluice-control"), "--store",
                                  "etcd", "--etcd-endpoints", etcd_.endpoints(),
                                  "--etcd-compaction-interval", "500ms"});
  EXPECT_EQ(bad.exit_code, 2);
  EXPECT_TRUE(absl::StrContains(bad.err, "--etcd-compaction-interval must be 0 (off) or 1s..24h"))
      << bad.err;
}

TEST_F(EtcdStoreTest, ReplicaStartedWithoutQuorumWaitsThenServes) {
  CommandResult r = Apply(0, "one");
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  etcd_.Kill(0);
  etcd_.Kill(1);
  const std::string data_dir = MakeTempDir("cp-late");
  // ControlPlane waits for the listening line: bring the quorum back once
  // the replica says it is waiting for etcd.
  std::thread heal([&] {
    WaitFor(
        [&] {
          return absl::StrContains(ReadFile(data_dir + ".log.0"),
                                   "retrying in");
        },
        absl::Seconds(20));
    etcd_.Restart(1);
  });
  const absl::Time started = absl::Now();
  ControlPlane late(data_dir, "info",
                    {"--store", "etcd", "--etcd-endpoints", etcd_.endpoints(),
                     "--etcd-prefix", "/sluice-test/", "--etcd-timeout", "1s"});
  heal.join();
  ASSERT_TRUE(late.ok()) << late.process().Log() << etcd_.Logs();
  SLUICE_LOG(kInfo, "replica started without quorum served ",
             absl::FormatDuration(absl::Now() - started), " after its start");
  EXPECT_TRUE(absl::StrContains(late.process().Log(),
                                "cannot load the state from etcd"))
      << late.process().Log();
  r = late.Ctl({"get", "-o", "yaml"});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_TRUE(absl::StrContains(r.out, "one")) << r.out;
  EXPECT_TRUE(absl::StrContains(late.process().Log(), ", version 1,"))
      << late.process().Log();
}

// kill -9 of the replica a proxy is connected to: the proxy (given both
// replicas) moves to the other one and takes the next version from it, with
// no NACK: both serve one store.
TEST_F(EtcdStoreTest, ProxyMovesToTheOtherReplicaWhenItsReplicaIsKilled) {
  CommandResult r = Apply(0, "one");
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  const std::string both =
      absl::StrCat(replicas_[0]->address(), ",", replicas_[1]->address());
  Proxy proxy(both, "proxy-1", 1, "",
              std::vector<std::string>{"--group", "g1", "--log-level", "info"});
  ASSERT_TRUE(proxy.ok()) << proxy.process().Log();
  ASSERT_TRUE(proxy.WaitForVersion(1)) << proxy.process().Log();
  // Which replica it chose: /ready names it.
  int connected = -1;
  ASSERT_TRUE(WaitFor(
      [&] {
        std::string ready = proxy.Admin("/ready").second;
        for (int i = 0; i < 2; ++i) {
          if (absl::StrContains(ready, absl::StrCat(replicas_[i]->address(),
                                                    " (connected)"))) {
            connected = i;
          }
        }
        return connected >= 0;
      },
      absl::Seconds(10)))
      << proxy.Admin("/ready").second;
  const int other = 1 - connected;

  replicas_[connected]->Kill();
  const absl::Time killed = absl::Now();
  r = Apply(other, "two");
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  ASSERT_TRUE(proxy.WaitForVersion(AppliedVersion(r), absl::Seconds(30)))
      << proxy.process().Log();
  SLUICE_LOG(kInfo, "proxy on the other replica with the new version ",
             absl::FormatDuration(absl::Now() - killed), " after the kill");
  EXPECT_EQ(Body(0), "two");
  EXPECT_FALSE(
      absl::StrContains(proxy.process().Log(), "rejected config version"))
      << proxy.process().Log();
}

}  // namespace
}  // namespace sluice::testing
