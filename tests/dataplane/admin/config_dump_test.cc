// /config_dump shows the running config but never a private key.
#include "dataplane/admin/config_dump.h"

#include <gtest/gtest.h>

#include "google/protobuf/util/json_util.h"

namespace sluice::admin {
namespace {

constexpr char kKey[] =
    "-----BEGIN PRIVATE KEY-----\nMIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQg\n"
    "-----END PRIVATE KEY-----\n";

api::ResourceMap State() {
  api::ResourceMap state;
  api::Resource secret;
  secret.mutable_secret()->set_name("web");
  secret.mutable_secret()->mutable_tls_certificate()->set_certificate_chain("CHAIN");
  secret.mutable_secret()->mutable_tls_certificate()->set_private_key(kKey);
  state[api::IdOf(secret)] = secret;
  api::Resource cluster;
  cluster.mutable_cluster()->set_name("backends");
  state[api::IdOf(cluster)] = cluster;
  return state;
}

TEST(ConfigDumpTest, ShowsEveryResourceWithThePrivateKeyRedacted) {
  api::ResourceMap state = State();
  std::string page = RenderConfigDump(7, state);
  EXPECT_EQ(page,
            "{\"version\":7,\"resources\":[{\"cluster\":{\"name\":\"backends\"}},"
            "{\"secret\":{\"name\":\"web\",\"tls_certificate\":{\"certificate_chain\":\"CHAIN\","
            "\"private_key\":\"[redacted]\"}}}]}\n");
  EXPECT_EQ(page.find("PRIVATE KEY"), std::string::npos);
  EXPECT_EQ(page.find("MIGHAgEAMBMGByqGSM49"), std::string::npos);
  // The running config itself is untouched.
  EXPECT_EQ(state.at({config::v1::SECRET, "web"}).secret().tls_certificate().private_key(), kKey);
}

TEST(ConfigDumpTest, EmptyConfig) {
  EXPECT_EQ(RenderConfigDump(0, {}), "{\"version\":0,\"resources\":[]}\n");
}

}  // namespace
}  // namespace sluice::admin
