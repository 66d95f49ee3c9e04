// The etcd store's layout and commit transaction, without etcd: what a
// commit compares and writes, and that a read of what it wrote decodes to
// the same state and history.
#include <gtest/gtest.h>

#include <algorithm>
#include <fstream>
#include <map>

#include "absl/strings/match.h"
#include "controlplane/store/etcd_store.h"

namespace sluice::controlplane {
namespace {

using etcd_layout::CommitTxn;
using etcd_layout::Decode;
using etcd_layout::HistoryEntryKey;
using etcd_layout::PrefixEnd;

api::Resource Cluster(const std::string& name, int port) {
  api::Resource r;
  r.mutable_cluster()->set_name(name);
  auto* e = r.mutable_cluster()->add_endpoints();
  e->set_address("127.0.0.1");
  e->set_port(port);
  return r;
}

// What etcd would hold after applying the success branch of `txn` to `kvs`.
void ApplySuccess(const etcdserverpb::TxnRequest& txn,
                  std::map<std::string, std::string>* kvs) {
  for (const auto& op : txn.success()) {
    if (op.has_request_put()) {
      (*kvs)[op.request_put().key()] = op.request_put().value();
    } else if (op.has_request_delete_range()) {
      const auto& d = op.request_delete_range();
      for (auto it = kvs->lower_bound(d.key());
           it != kvs->end() && it->first < d.range_end();) {
        it = kvs->erase(it);
      }
    }
  }
}

etcdserverpb::RangeResponse Range(const std::map<std::string, std::string>& kvs,
                                  int64_t rev) {
  etcdserverpb::RangeResponse range;
  range.mutable_header()->set_revision(rev);
  for (const auto& [key, value] : kvs) {  // sorted by key, as etcd answers
    auto* kv = range.add_kvs();
    kv->set_key(key);
    kv->set_value(value);
    kv->set_mod_revision(rev);
  }
  return range;
}

TEST(EtcdLayoutTest, PrefixEndAndKeysThatSortByVersion) {
  EXPECT_EQ(PrefixEnd("/sluice/"), "/sluice0");
  EXPECT_EQ(PrefixEnd(std::string("a\xff", 2)), "b");
  EXPECT_EQ(HistoryEntryKey("/s/", 7), "/s/history/v/00000000000000000007");
  EXPECT_LT(HistoryEntryKey("/s/", 9), HistoryEntryKey("/s/", 10));
}

TEST(EtcdLayoutTest, FirstCommitRequiresNoVersionAndWritesEverything) {
  StoredState next{1, {}, "id1"};
  next.resources[{config::v1::CLUSTER, "a"}] = Cluster("a", 1);
  StoredHistory history;
  history.base = next.resources;
  HistoryEntry entry;
  entry.version = 1;
  entry.author = "ana";
  entry.added.push_back(Cluster("a", 1));
  history.entries.push_back(entry);
  etcdserverpb::TxnRequest txn =
      CommitTxn("/s/", 0, next, history, /*put_base=*/true);
  ASSERT_EQ(txn.compare_size(), 1);
  EXPECT_EQ(txn.compare(0).key(), "/s/version");
  EXPECT_EQ(txn.compare(0).target(), etcdserverpb::Compare::VERSION);
  EXPECT_EQ(txn.compare(0).version(), 0);  // absent
  ASSERT_EQ(txn.failure_size(), 1);
  EXPECT_EQ(txn.failure(0).request_range().key(), "/s/state");

  std::map<std::string, std::string> kvs = {{"/s/store_id", "id1"}};
  ApplySuccess(txn, &kvs);
  EXPECT_EQ(kvs.at("/s/version"), "1");
  EXPECT_TRUE(kvs.count("/s/history/base"));
  EXPECT_TRUE(kvs.count(HistoryEntryKey("/s/", 1)));
  absl::StatusOr<etcd_layout::Contents> read = Decode("/s/", Range(kvs, 12));
  ASSERT_TRUE(read.ok()) << read.status();
  EXPECT_EQ(read->revision, 12);
  EXPECT_EQ(read->store_id, "id1");
  EXPECT_EQ(read->state.version, 1u);
  EXPECT_EQ(read->state.store_id, "id1");
  EXPECT_EQ(read->state.resources.size(), 1u);
  ASSERT_EQ(read->history.entries.size(), 1u);
  EXPECT_EQ(read->history.entries[0].author, "ana");
  EXPECT_EQ(read->history.base.size(), 1u);
  EXPECT_FALSE(read->has_tokens);
}

TEST(EtcdLayoutTest,
     LaterCommitComparesTheVersionItWasBasedOnAndDropsUnkeptEntries) {
  std::map<std::string, std::string> kvs = {{"/s/store_id", "id1"}};
  StoredHistory history;
  StoredState state{0, {}, "id1"};
  // Versions 1..5, keeping 3: the base moves with the oldest kept version.
  for (uint64_t v = 1; v <= 5; ++v) {
    StoredState next{v, state.resources, "id1"};
    next.resources[{config::v1::CLUSTER, "a"}] =
        Cluster("a", static_cast<int>(v));
    HistoryEntry entry;
    entry.version = v;
    (v == 1 ? entry.added : entry.changed)
        .push_back(Cluster("a", static_cast<int>(v)));
    history.entries.push_back(entry);
    if (history.entries.size() > 3) {
      history.entries.erase(history.entries.begin());
    }
    // The base is the content of the oldest kept version.
    history.base.clear();
    history.base[{config::v1::CLUSTER, "a"}] =
        Cluster("a", static_cast<int>(history.entries.front().version));
    etcdserverpb::TxnRequest txn =
        CommitTxn("/s/", state.version, next, history,
                  /*put_base=*/v == 1 || v > 3);
    if (v > 1) {
      EXPECT_EQ(txn.compare(0).target(), etcdserverpb::Compare::VALUE);
      EXPECT_EQ(txn.compare(0).value(), std::to_string(v - 1));
    }
    ApplySuccess(txn, &kvs);
    state = next;
  }
  EXPECT_FALSE(kvs.count(HistoryEntryKey("/s/", 2)));
  absl::StatusOr<etcd_layout::Contents> read = Decode("/s/", Range(kvs, 20));
  ASSERT_TRUE(read.ok()) << read.status();
  EXPECT_EQ(read->state.version, 5u);
  ASSERT_EQ(read->history.entries.size(), 3u);
  EXPECT_EQ(read->history.entries.front().version, 3u);
  EXPECT_EQ(read->history.entries.back().version, 5u);
  EXPECT_EQ(read->history.base.begin()->second.cluster().endpoints(0).port(),
            3);
}

TEST(EtcdLayoutTest, TokensAndDamagedValues) {
  StoredToken token{"ci", "operator", std::string(64, 'a'),
                    absl::FromUnixSeconds(1), "ana"};
  std::map<std::string, std::string> kvs = {
      {"/s/tokens", TokenFile::Encode({token})}};
  absl::StatusOr<etcd_layout::Contents> read = Decode("/s/", Range(kvs, 3));
  ASSERT_TRUE(read.ok()) << read.status();
  EXPECT_TRUE(read->has_tokens);
  EXPECT_EQ(read->tokens_mod_revision, 3);
  ASSERT_EQ(read->tokens.size(), 1u);
  EXPECT_EQ(read->tokens[0].name, "ci");

  kvs["/s/state"] = "not a state";
  read = Decode("/s/", Range(kvs, 4));
  ASSERT_FALSE(read.ok());
  EXPECT_EQ(read.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_TRUE(absl::StrContains(read.status().message(), "etcd key /s/state"))
      << read.status();
}

TEST(EtcdLayoutTest, ParsesEndpoints) {
  auto endpoints = ParseEtcdEndpoints("127.0.0.1:2379, http://10.0.0.2:2379");
  ASSERT_TRUE(endpoints.ok()) << endpoints.status();
  EXPECT_EQ(endpoints->addresses,
            (std::vector<std::string>{"127.0.0.1:2379", "10.0.0.2:2379"}));
  EXPECT_EQ(endpoints->scheme, "http");
  EXPECT_FALSE(ParseEtcdEndpoints("").ok());
  EXPECT_FALSE(ParseEtcdEndpoints("10.0.0.1").ok());
  EXPECT_FALSE(ParseEtcdEndpoints("10.0.0.1:99999").ok());
  auto tls = ParseEtcdEndpoints("https://10.0.0.1:2379,10.0.0.2:2379");
  ASSERT_TRUE(tls.ok()) << tls.status();
  EXPECT_EQ(tls->scheme, "https");
  EXPECT_EQ(tls->addresses,
            (std::vector<std::string>{"10.0.0.1:2379", "10.0.0.2:2379"}));
  auto mixed = ParseEtcdEndpoints("https://10.0.0.1:2379,http://10.0.0.2:2379");
  ASSERT_FALSE(mixed.ok());
  EXPECT_TRUE(
      absl::StrContains(mixed.status().message(), "mixes http:// and https://"))
      << mixed.status();
}

EtcdTlsFlags Flags(std::string ca, std::string cert = "", std::string key = "",
                   std::string server_name = "") {
  return EtcdTlsFlags{std::move(ca), std::move(cert), std::move(key),
                      std::move(server_name)};
}

// The flag combinations MakeEtcdTls refuses, each naming the flag.
TEST(EtcdLayoutTest, ChecksTlsFlags) {
  const std::string dir = ::testing::TempDir();
  const std::string pem = dir + "/etcd-tls-test.pem";
  std::ofstream(pem) << "-----BEGIN CERTIFICATE-----\nAA==\n"
                        "-----END CERTIFICATE-----\n";
  const std::string key = dir + "/etcd-tls-test.key";
  std::ofstream(key) << "-----BEGIN EC PRIVATE KEY-----\nAA==\n"
                        "-----END EC PRIVATE KEY-----\n";
  const EtcdEndpoints https{{"10.0.0.1:2379"}, "https"};
  const EtcdEndpoints http{{"10.0.0.1:2379"}, "http"};
  const EtcdEndpoints bare{{"10.0.0.1:2379"}, ""};
  auto message = [](const absl::StatusOr<EtcdTls>& tls) {
    return tls.ok() ? std::string("ok") : std::string(tls.status().message());
  };

  auto plain = MakeEtcdTls(http, Flags(""));
  ASSERT_TRUE(plain.ok()) << plain.status();
  EXPECT_FALSE(plain->enabled());
  EXPECT_TRUE(absl::StrContains(message(MakeEtcdTls(https, Flags(""))),
                                "give --etcd-ca"));
  EXPECT_TRUE(absl::StrContains(message(MakeEtcdTls(http, Flags(pem))),
                                "write them https://"));
  EXPECT_TRUE(
      absl::StrContains(message(MakeEtcdTls(https, Flags(pem, pem, ""))),
                        "--etcd-cert and --etcd-key go together"));
  EXPECT_TRUE(
      absl::StrContains(message(MakeEtcdTls(https, Flags(pem, "", pem))),
                        "--etcd-cert and --etcd-key go together"));
  EXPECT_TRUE(absl::StrContains(message(MakeEtcdTls(bare, Flags("", pem, pem))),
                                "--etcd-cert needs TLS"));
  EXPECT_TRUE(
      absl::StrContains(message(MakeEtcdTls(bare, Flags("", "", "", "etcd"))),
                        "--etcd-server-name needs TLS"));
  const std::string missing = dir + "/no-such-ca.pem";
  EXPECT_TRUE(absl::StrContains(message(MakeEtcdTls(https, Flags(missing))),
                                "--etcd-ca " + missing + ": cannot read"));
  EXPECT_TRUE(
      absl::StrContains(message(MakeEtcdTls(https, Flags(pem, missing, pem))),
                        "--etcd-cert " + missing + ": cannot read"));

  // A certificate given as the key (or a key as the CA) names the flag.
  EXPECT_TRUE(absl::StrContains(message(MakeEtcdTls(https, Flags(pem, pem, pem))),
                                "--etcd-key " + pem + ": holds no private key"));
  EXPECT_TRUE(absl::StrContains(message(MakeEtcdTls(https, Flags(key))),
                                "--etcd-ca " + key + ": holds no certificate"));

  auto full = MakeEtcdTls(bare, Flags(pem, pem, key, "etcd.internal"));
  ASSERT_TRUE(full.ok()) << full.status();
  EXPECT_TRUE(full->enabled());
  EXPECT_FALSE(full->cert_pem.empty());
  EXPECT_EQ(full->server_name, "etcd.internal");
}

}  // namespace
}  // namespace sluice::controlplane
