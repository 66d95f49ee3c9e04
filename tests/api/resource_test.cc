#include "api/resource.h"

#include <gtest/gtest.h>

#include "google/protobuf/text_format.h"

namespace sluice::api {
namespace {

Resource Cluster(const std::string& name, int port) {
  Resource r;
  r.mutable_cluster()->set_name(name);
  auto* e = r.mutable_cluster()->add_endpoints();
  e->set_address("127.0.0.1");
  e->set_port(port);
  return r;
}

TEST(ResourceTest, KindsParseInEveryCommonSpelling) {
  for (const char* text : {"Cluster", "clusters", "CLUSTER"}) {
    EXPECT_EQ(*ParseKind(text), config::v1::CLUSTER) << text;
  }
  for (const char* text : {"RouteTable", "route_table", "route-tables", "rt"}) {
    EXPECT_EQ(*ParseKind(text), config::v1::ROUTE_TABLE) << text;
  }
  EXPECT_EQ(*ParseKind("listeners"), config::v1::LISTENER);
  for (const char* text : {"Secret", "secrets", "SECRET"}) {
    EXPECT_EQ(*ParseKind(text), config::v1::SECRET) << text;
  }
  for (const char* text : {"Consumer", "consumers", "CONSUMER", "consumer"}) {
    EXPECT_EQ(*ParseKind(text), config::v1::CONSUMER) << text;
  }
  EXPECT_EQ(ParseKind("pods").status().message(),
            "unknown kind 'pods' (expected Listener, RouteTable, Cluster, Secret or Consumer)");
  // A typo of a kind: the kind meant.
  EXPECT_EQ(api::ParseKind("Clustr").status().message(),
            "unknown kind 'Clustr' (expected Listener, RouteTable, Cluster, Secret or Consumer); "
            "did you mean 'Cluster'?");
  EXPECT_EQ(api::ParseKind("RoutTable").status().message(),
            "unknown kind 'RoutTable' (expected Listener, RouteTable, Cluster, Secret or "
            "Consumer); did you mean 'RouteTable'?");
}

TEST(ResourceTest, ContentHashIsStableAndSensitive) {
  EXPECT_EQ(ContentHash(Cluster("a", 1)), ContentHash(Cluster("a", 1)));
  EXPECT_NE(ContentHash(Cluster("a", 1)), ContentHash(Cluster("a", 2)));
  // A fixed value: the hash must not change between builds or machines,
  // since proxies and the control plane compare hashes across processes.
  EXPECT_EQ(ContentHash(Resource()), 14695981039346656037ull);
}

TEST(ResourceTest, DiffFindsAddedChangedRemovedUnchanged) {
  ResourceMap from, to;
  for (auto r : {Cluster("keep", 1), Cluster("change", 1), Cluster("drop", 1)}) {
    from[IdOf(r)] = r;
  }
  for (auto r : {Cluster("keep", 1), Cluster("change", 2), Cluster("new", 1)}) {
    to[IdOf(r)] = r;
  }
  StateDiff diff = ComputeDiff(from, to);
  ASSERT_EQ(diff.added.size(), 1u);
  EXPECT_EQ(diff.added[0].second, "new");
  ASSERT_EQ(diff.changed.size(), 1u);
  EXPECT_EQ(diff.changed[0].second, "change");
  ASSERT_EQ(diff.removed.size(), 1u);
  EXPECT_EQ(diff.removed[0].second, "drop");
  EXPECT_EQ(diff.unchanged, 1);
  EXPECT_TRUE(ComputeDiff(to, to).empty());
}

TEST(ResourceTest, SecretKindAndName) {
  Resource r;
  r.mutable_secret()->set_name("web");
  EXPECT_EQ(KindOf(r), config::v1::SECRET);
  EXPECT_EQ(NameOf(r), "web");
  EXPECT_EQ(Describe(IdOf(r)), "Secret \"web\"");
}

TEST(ResourceTest, RedactSecretsReplacesOnlyThePrivateKey) {
  Resource secret;
  secret.mutable_secret()->set_name("web");
  auto* certificate = secret.mutable_secret()->mutable_tls_certificate();
  certificate->set_certificate_chain("-----BEGIN CERTIFICATE-----\n...");
  certificate->set_private_key("-----BEGIN PRIVATE KEY-----\nsecret\n-----END PRIVATE KEY-----\n");
  Resource redacted = secret;
  RedactSecrets(&redacted);
  EXPECT_EQ(redacted.secret().tls_certificate().private_key(), "[redacted]");
  EXPECT_EQ(redacted.secret().tls_certificate().certificate_chain(),
            certificate->certificate_chain());
  EXPECT_EQ(redacted.secret().name(), "web");

  // Nothing to hide: left as it is (an empty key stays empty, so "required"
  // errors stay true to what was stored).
  Resource no_key = secret;
  no_key.mutable_secret()->mutable_tls_certificate()->clear_private_key();
  Resource copy = no_key;
  RedactSecrets(&copy);
  EXPECT_EQ(copy.SerializeAsString(), no_key.SerializeAsString());
  Resource ca;
  ca.mutable_secret()->set_name("ca");
  ca.mutable_secret()->mutable_trusted_ca()->set_ca_certificates("pem");
  copy = ca;
  RedactSecrets(&copy);
  EXPECT_EQ(copy.SerializeAsString(), ca.SerializeAsString());
  Resource cluster = Cluster("users", 80);
  copy = cluster;
  RedactSecrets(&copy);
  EXPECT_EQ(copy.SerializeAsString(), cluster.SerializeAsString());

  ResourceMap state{{IdOf(secret), secret}, {IdOf(cluster), cluster}};
  RedactSecrets(&state);
  EXPECT_EQ(state.at(IdOf(secret)).secret().tls_certificate().private_key(), "[redacted]");
  EXPECT_EQ(state.at(IdOf(cluster)).SerializeAsString(), cluster.SerializeAsString());
}

TEST(ResourceTest, ConsumerKindAndName) {
  Resource r;
  r.mutable_consumer()->set_name("alice@example.com");
  EXPECT_EQ(KindOf(r), config::v1::CONSUMER);
  EXPECT_EQ(NameOf(r), "alice@example.com");
  EXPECT_EQ(KindName(config::v1::CONSUMER), "Consumer");
  EXPECT_EQ(Describe(IdOf(r)), "Consumer \"alice@example.com\"");
}

TEST(ResourceTest, RedactSecretsHidesPlainConsumerCredentialsOnly) {
  Resource consumer;
  ASSERT_TRUE(google::protobuf::TextFormat::ParseFromString(R"(consumer {
    name: "alice" groups: ["admins"]
    keys { key: "alice-plain-key" }
    keys { key_sha256: "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad" }
    basic_auth { username: "alice" password: "alice-plain-password" } })", &consumer));
  Resource redacted = consumer;
  RedactSecrets(&redacted);
  EXPECT_EQ(redacted.consumer().keys(0).key(), "[redacted]");
  EXPECT_EQ(redacted.consumer().keys(1).key_sha256(), consumer.consumer().keys(1).key_sha256());
  EXPECT_EQ(redacted.consumer().basic_auth().password(), "[redacted]");
  EXPECT_EQ(redacted.consumer().basic_auth().username(), "alice");
  EXPECT_EQ(redacted.consumer().groups(0), "admins");
  EXPECT_EQ(redacted.DebugString().find("plain"), std::string::npos) << redacted.DebugString();

  // Hashes are what is stored; they stay visible.
  Resource hashed;
  ASSERT_TRUE(google::protobuf::TextFormat::ParseFromString(R"(consumer {
    name: "bob"
    keys { key_sha256: "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad" }
    basic_auth { username: "bob" password_hash: "pbkdf2-sha256$10000$c2FsdA==$aGFzaA==" } })",
                                                            &hashed));
  Resource copy = hashed;
  RedactSecrets(&copy);
  EXPECT_EQ(copy.SerializeAsString(), hashed.SerializeAsString());
}

}  // namespace
}  // namespace sluice::api
