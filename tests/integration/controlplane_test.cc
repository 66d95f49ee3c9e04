// sluice-control and sluicectl as real processes, with a discovery client
// over the real gRPC stream.
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <fstream>
#include <thread>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "api/resource.h"
#include "grpcpp/grpcpp.h"
#include "sluice/discovery/v1/discovery.grpc.pb.h"
#include "tests/harness/process.h"
#include "tests/harness/proxy.h"

namespace sluice {
namespace {

using discovery::v1::DiscoveryRequest;
using discovery::v1::DiscoveryResponse;
using testing::ControlPlane;
using testing::MakeTempDir;
using testing::RunfilePath;
using testing::WaitFor;

std::string WriteFile(const std::string& text) {
  std::string path = MakeTempDir("yaml") + "/config.yaml";
  std::ofstream(path) << text;
  return path;
}

std::string ClusterYaml(const std::string& name, int port) {
  return absl::StrCat("kind: Cluster\nname: ", name,
                      "\nspec:\n  endpoints: [{address: 127.0.0.1, port: ", port, "}]\n");
}

// A proxy's side of the config stream, driven by hand.
class DiscoveryClient {
 public:
  DiscoveryClient(const std::string& address, const std::string& node_id,
                  uint64_t version = 0, std::vector<config::v1::ResourceKey> known = {}) {
    channel_ = grpc::CreateChannel(address, grpc::InsecureChannelCredentials());
    stub_ = discovery::v1::DiscoveryService::NewStub(channel_);
    stream_ = stub_->StreamConfig(&context_);
    DiscoveryRequest hello;
    hello.mutable_node()->set_id(node_id);
    hello.mutable_node()->set_group("test");
    hello.set_version_applied(version);
    for (auto& k : known) *hello.add_known_resources() = k;
    stream_->Write(hello);
  }
  ~DiscoveryClient() {
    context_.TryCancel();
    DiscoveryResponse ignored;
    while (stream_->Read(&ignored)) {
    }
    stream_->Finish();
  }
  bool Read(DiscoveryResponse* response) { return stream_->Read(response); }
  void Ack(const DiscoveryResponse& r) {
    DiscoveryRequest req;
    req.set_version_applied(r.version());
    req.set_response_nonce(r.nonce());
    stream_->Write(req);
  }
  void Nack(const DiscoveryResponse& r, uint64_t held, const std::string& error) {
    DiscoveryRequest req;
    req.set_version_applied(held);
    req.set_response_nonce(r.nonce());
    req.set_error_detail(error);
    stream_->Write(req);
  }

 private:
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<discovery::v1::DiscoveryService::Stub> stub_;
  grpc::ClientContext context_;
  std::unique_ptr<grpc::ClientReaderWriter<DiscoveryRequest, DiscoveryResponse>> stream_;
};

std::set<std::string> Names(const DiscoveryResponse& r) {
  std::set<std::string> names;
  for (const auto& res : r.resources()) names.insert(std::string(api::NameOf(res)));
  return names;
}

TEST(ControlPlaneTest, ApplyGetDeleteDryRun) {
  ControlPlane cp;
  ASSERT_TRUE(cp.ok()) << cp.process().Log();
  std::string quickstart = RunfilePath("examples/quickstart.yaml");

  auto dry = cp.Ctl({"apply", "-f", quickstart, "--dry-run"});
  EXPECT_EQ(dry.exit_code, 0) << dry.err;
  EXPECT_NE(dry.out.find("+ Cluster \"users\""), std::string::npos) << dry.out;
  EXPECT_NE(dry.out.find("dry run: nothing stored (current version 0)"), std::string::npos);
  EXPECT_NE(cp.Ctl({"get"}).out.find("version 0"), std::string::npos);

  auto applied = cp.Ctl({"apply", "-f", quickstart});
  EXPECT_EQ(applied.exit_code, 0) << applied.err;
  EXPECT_NE(applied.out.find("4 added, 0 changed, 0 removed"), std::string::npos) << applied.out;
  EXPECT_NE(applied.out.find("applied: version 1"), std::string::npos);

  auto again = cp.Ctl({"apply", "-f", quickstart});
  EXPECT_NE(again.out.find("no change; version 1"), std::string::npos) << again.out;

  auto get = cp.Ctl({"get", "cluster", "users", "-o", "yaml"});
  EXPECT_EQ(get.exit_code, 0);
  EXPECT_NE(get.out.find("name: users"), std::string::npos) << get.out;
  EXPECT_NE(get.out.find("port: 9001"), std::string::npos) << get.out;
  auto json = cp.Ctl({"get", "clusters", "-o", "json"});
  EXPECT_NE(json.out.find("{\"version\":1,\"items\":["), std::string::npos) << json.out;
  // One resource carries its version too.
  auto one_json = cp.Ctl({"get", "cluster", "users", "-o", "json"});
  EXPECT_TRUE(absl::StartsWith(one_json.out, "{\"version\":1,\"kind\":\"Cluster\",\"name\":\"users\""))
      << one_json.out;

  auto missing = cp.Ctl({"get", "cluster", "nope"});
  EXPECT_EQ(missing.exit_code, 1);
  EXPECT_NE(missing.err.find("Cluster \"nope\" does not exist"), std::string::npos);

  // Deleting something still referenced is refused with the reason.
  auto refused = cp.Ctl({"delete", "cluster", "users"});
  EXPECT_EQ(refused.exit_code, 1);
  EXPECT_NE(refused.err.find("refers to Cluster \"users\""), std::string::npos) << refused.err;

  auto changed = cp.Ctl({"apply", "-f", WriteFile(ClusterYaml("spare", 9100))});
  EXPECT_NE(changed.out.find("applied: version 2"), std::string::npos) << changed.out;
  // A dry run of a change shows its lines (it named the resource only).
  auto dry_change = cp.Ctl({"apply", "-f", WriteFile(ClusterYaml("spare", 9101)), "--dry-run"});
  EXPECT_EQ(dry_change.exit_code, 0) << dry_change.err;
  EXPECT_TRUE(absl::StrContains(dry_change.out, "~ Cluster \"spare\"\n")) << dry_change.out;
  EXPECT_TRUE(absl::StrContains(dry_change.out, "-       port: 9100\n")) << dry_change.out;
  EXPECT_TRUE(absl::StrContains(dry_change.out, "+       port: 9101\n")) << dry_change.out;
  // The YAML's final newline makes no blank context line after the last.
  EXPECT_FALSE(absl::StrContains(dry_change.out, "\n      \n")) << dry_change.out;
  auto dry_delete = cp.Ctl({"delete", "cluster", "spare", "--dry-run"});
  EXPECT_NE(dry_delete.out.find("- Cluster \"spare\""), std::string::npos);
  EXPECT_NE(dry_delete.out.find("dry run"), std::string::npos);
  auto deleted = cp.Ctl({"delete", "cluster", "spare"});
  EXPECT_EQ(deleted.exit_code, 0) << deleted.err;
  EXPECT_NE(deleted.out.find("applied: version 3"), std::string::npos) << deleted.out;
  EXPECT_EQ(cp.Ctl({"get", "cluster", "spare"}).exit_code, 1);

  // The `get -o json` export of version 1, applied back after a change,
  // does not undo that change (it did, silently): as with --if-version 1.
  const std::string exported = WriteFile(json.out);
  auto moved = cp.Ctl({"apply", "-f", WriteFile(ClusterYaml("users", 9555))});
  ASSERT_NE(moved.out.find("applied: version 4"), std::string::npos) << moved.out << moved.err;
  auto stale = cp.Ctl({"apply", "-f", exported});
  EXPECT_EQ(stale.exit_code, 1);
  EXPECT_TRUE(absl::StrContains(stale.err, "export of version 1")) << stale.err;
  EXPECT_TRUE(absl::StrContains(stale.out, "changes since version 1")) << stale.out;
  EXPECT_NE(cp.Ctl({"get", "cluster", "users", "-o", "yaml"}).out.find("port: 9555"),
            std::string::npos);
  // So is the export of that one resource (it had no version: it undid
  // the change, exit 0).
  auto stale_one = cp.Ctl({"apply", "-f", WriteFile(one_json.out)});
  EXPECT_EQ(stale_one.exit_code, 1) << stale_one.out << stale_one.err;
  EXPECT_TRUE(absl::StrContains(stale_one.err, "export of version 1")) << stale_one.err;
  auto bad_version = cp.Ctl(
      {"apply", "-f", WriteFile("{\"version\":\"x\",\"kind\":\"Cluster\",\"name\":\"users\","
                                "\"spec\":{\"endpoints\":[{\"address\":\"127.0.0.1\",\"port\":1}]}}")});
  EXPECT_EQ(bad_version.exit_code, 1) << bad_version.out;
  EXPECT_TRUE(absl::StrContains(bad_version.err, "version must be a number")) << bad_version.err;
  // Asked for with the current version, it is applied.
  auto forced = cp.Ctl({"apply", "-f", exported, "--if-version", "4"});
  EXPECT_EQ(forced.exit_code, 0) << forced.err;
  EXPECT_NE(cp.Ctl({"get", "cluster", "users", "-o", "yaml"}).out.find("port: 9001"),
            std::string::npos);
  // An export whose resources no version since touched undoes nothing: it
  // is applied at the current version, as kubectl's resourceVersion is
  // each object's. Before: refused for the change to another resource.
  auto users_json = cp.Ctl({"get", "cluster", "users", "-o", "json"});
  ASSERT_EQ(users_json.exit_code, 0) << users_json.err;
  std::string edited = users_json.out;
  ASSERT_TRUE(absl::StrContains(edited, "9001")) << edited;
  edited.replace(edited.find("9001"), 4, "9077");
  const std::string users_file = WriteFile(edited);
  auto other = cp.Ctl({"apply", "-f", WriteFile(ClusterYaml("spare2", 9200))});
  ASSERT_EQ(other.exit_code, 0) << other.err;
  auto untouched = cp.Ctl({"apply", "-f", users_file});
  EXPECT_EQ(untouched.exit_code, 0) << untouched.out << untouched.err;
  EXPECT_TRUE(absl::StrContains(untouched.err, "changed none of its resources")) << untouched.err;
  EXPECT_NE(cp.Ctl({"get", "cluster", "users", "-o", "yaml"}).out.find("port: 9077"),
            std::string::npos);
  // Once a version since changed one of them, it is refused again.
  ASSERT_EQ(cp.Ctl({"apply", "-f", WriteFile(ClusterYaml("users", 9003))}).exit_code, 0);
  auto touched = cp.Ctl({"apply", "-f", users_file});
  EXPECT_EQ(touched.exit_code, 1) << touched.out << touched.err;
  EXPECT_TRUE(absl::StrContains(touched.err, "changed resources it holds")) << touched.err;
  EXPECT_NE(cp.Ctl({"get", "cluster", "users", "-o", "yaml"}).out.find("port: 9003"),
            std::string::npos);
  ASSERT_EQ(cp.Ctl({"apply", "-f", WriteFile(ClusterYaml("users", 9001))}).exit_code, 0);
  // A version whose change the history does not know (made before it was
  // kept: here, the history moved away) may have touched the file's
  // resources: refused. Before: taken as changing none, and the export
  // undid it.
  {
    ControlPlane other;
    ASSERT_EQ(other.Ctl({"apply", "-f", WriteFile(ClusterYaml("x", 9301))}).exit_code, 0);
    auto x_json = other.Ctl({"get", "cluster", "x", "-o", "json"});
    ASSERT_EQ(x_json.exit_code, 0) << x_json.err;
    ASSERT_EQ(other.Ctl({"apply", "-f", WriteFile(ClusterYaml("x", 9302))}).exit_code, 0);
    other.Kill();
    ASSERT_EQ(std::remove((other.data_dir() + "/history.db").c_str()), 0);
    std::remove((other.data_dir() + "/history.log").c_str());  // there or not
    ASSERT_TRUE(other.Restart()) << other.process().Log();
    auto unknown = other.Ctl({"apply", "-f", WriteFile(x_json.out)});
    EXPECT_EQ(unknown.exit_code, 1) << unknown.out << unknown.err;
    EXPECT_NE(other.Ctl({"get", "cluster", "x", "-o", "yaml"}).out.find("port: 9302"),
              std::string::npos);
  }

  // Restored into another store, whose versions are behind the export's:
  // nothing there can be undone, so it is applied (before: a conflict
  // whose advice, --if-version 0, sluicectl refused).
  auto full = cp.Ctl({"get", "-o", "json"});
  ASSERT_EQ(full.exit_code, 0) << full.err;
  ControlPlane fresh;
  auto restored = fresh.Ctl({"apply", "-f", WriteFile(full.out)});
  EXPECT_EQ(restored.exit_code, 0) << restored.out << restored.err;
  EXPECT_TRUE(absl::StrContains(restored.err, "comes from another store")) << restored.err;
  EXPECT_TRUE(absl::StrContains(restored.out, "applied: version 1")) << restored.out;
  EXPECT_NE(fresh.Ctl({"get", "cluster", "users", "-o", "yaml"}).out.find("port: 9001"),
            std::string::npos);
}

// A dry run of routes changed in a table of 3,000 (some 18,000 lines of
// YAML) shows their lines (they were "too large to compare").
TEST(ControlPlaneTest, DryRunOfABigTableShowsTheChangedLines) {
  ControlPlane cp;
  auto table = [](const std::string& body_1500) {
    std::string yaml = "kind: RouteTable\nname: big\nspec:\n  virtual_hosts:\n  - domains: [\"*\"]\n"
                       "    routes:\n";
    for (int i = 0; i < 3000; ++i) {
      // Routes 10 and 2900 change with 1500: changes 17,000 lines apart.
      absl::StrAppend(&yaml, "    - name: r", i, "\n      match: {prefix: /s", i,
                      "/}\n      direct_response: {status: 200, body: ",
                      i == 1500                ? body_1500
                      : i == 10 || i == 2900 ? absl::StrCat("b", i, body_1500)
                                               : absl::StrCat("b", i),
                      "}\n");
    }
    return yaml;
  };
  auto applied = cp.Ctl({"apply", "-f", WriteFile(table("before"))});
  ASSERT_EQ(applied.exit_code, 0) << applied.err;
  auto dry = cp.Ctl({"apply", "-f", WriteFile(table("after")), "--dry-run"});
  EXPECT_EQ(dry.exit_code, 0) << dry.err;
  EXPECT_TRUE(absl::StrContains(dry.out, "~ RouteTable \"big\"\n")) << dry.out;
  EXPECT_TRUE(absl::StrContains(dry.out, "    -             body: before\n")) << dry.out;
  EXPECT_TRUE(absl::StrContains(dry.out, "    +             body: after\n")) << dry.out;
  EXPECT_TRUE(absl::StrContains(dry.out, "prefix: /s1500/\n")) << dry.out;  // context
  EXPECT_TRUE(absl::StrContains(dry.out, "    -             body: b10before\n"
                                         "    +             body: b10after\n"))
      << dry.out;
  EXPECT_TRUE(absl::StrContains(dry.out, "    -             body: b2900before\n"
                                         "    +             body: b2900after\n"))
      << dry.out;
  EXPECT_FALSE(absl::StrContains(dry.out, "too large")) << dry.out;
  EXPECT_FALSE(absl::StrContains(dry.out, "prefix: /s1400/\n")) << dry.out;  // far away
  // Each hunk says where it is: the lines above it that enclose its change
  // (a route deep in a table of many virtual hosts could not be placed).
  const std::string where = "    ... in spec: > virtual_hosts: > - domains:";
  size_t placed = 0;
  for (size_t at = dry.out.find(where); at != std::string::npos; at = dry.out.find(where, at + 1)) {
    ++placed;
  }
  EXPECT_EQ(placed, 3u) << dry.out;  // routes 10, 1500 and 2900

  // An error the control plane finds names the route's line, not the
  // table's first (route i's action is on line 9 + 3i).
  std::string dangling = table("x");
  const std::string r2000 = "      direct_response: {status: 200, body: b2000}\n";
  ASSERT_TRUE(absl::StrContains(dangling, r2000));
  dangling.replace(dangling.find(r2000), r2000.size(), "      route: {cluster: ghost}\n");
  const std::string path = WriteFile(dangling);
  auto refused = cp.Ctl({"apply", "-f", path});
  EXPECT_EQ(refused.exit_code, 1);
  EXPECT_TRUE(absl::StrContains(refused.err,
                                path + ", document 1, line 6009: RouteTable \"big\": "
                                       "virtual_hosts[0].routes[2000].route.cluster: refers to"))
      << refused.err;
}

// `delete KIND NAME NAME...` and `delete -f FILE` remove several resources
// in one version, all or none; they may refer to one another.
// Valid config that cannot do what it says is applied with a warning: a
// WebSocket route to an HTTP2 cluster (its upgrades go as plain requests).
// Told when the route table or the cluster changes, not on other applies.
TEST(ControlPlaneTest, AWebSocketRouteToAnHttp2ClusterIsAppliedWithAWarning) {
  ControlPlane cp;
  const std::string table =
      "kind: RouteTable\nname: main\nspec:\n  virtual_hosts:\n    - domains: ['*']\n"
      "      routes:\n        - match: {prefix: /ws}\n"
      "          route: {cluster: grpc, websocket: true}\n";
  auto cluster = [](const char* protocol) {
    return absl::StrCat("kind: Cluster\nname: grpc\nspec:\n  protocol: ", protocol,
                        "\n  endpoints: [{address: 127.0.0.1, port: 9000}]\n");
  };
  auto applied = cp.Ctl({"apply", "-f", WriteFile(cluster("HTTP2") + "---\n" + table)});
  EXPECT_EQ(applied.exit_code, 0) << applied.err;
  EXPECT_TRUE(absl::StrContains(applied.out, "applied: version 1")) << applied.out;
  EXPECT_TRUE(absl::StrContains(
      applied.err,
      "warning: RouteTable \"main\": virtual_hosts[0].routes[0].route.websocket: Cluster "
      "\"grpc\" speaks HTTP2: its WebSockets go upstream as extended CONNECT (RFC 8441), "
      "which its endpoints must allow"))
      << applied.err;
  auto other = cp.Ctl({"apply", "-f", WriteFile(ClusterYaml("spare", 9100))});
  EXPECT_EQ(other.exit_code, 0) << other.err;
  EXPECT_FALSE(absl::StrContains(other.err, "warning")) << other.err;
  auto fixed = cp.Ctl({"apply", "-f", WriteFile(cluster("HTTP1"))});
  EXPECT_EQ(fixed.exit_code, 0) << fixed.err;
  EXPECT_FALSE(absl::StrContains(fixed.err, "warning")) << fixed.err;
  // A cluster that does not verify its upstream's certificate.
  auto unverified = cp.Ctl({"apply", "-f",
                            WriteFile(cluster("HTTP1") + "  tls: {insecure_skip_verify: true}\n")});
  EXPECT_EQ(unverified.exit_code, 0) << unverified.err;
  EXPECT_TRUE(absl::StrContains(unverified.err,
                                "warning: Cluster \"grpc\": tls.insecure_skip_verify: the "
                                "upstream's certificate is not verified"))
      << unverified.err;
}

TEST(ControlPlaneTest, DeleteSeveralInOneVersion) {
  ControlPlane cp;
  const std::string table =
      "kind: RouteTable\nname: main\nspec:\n  virtual_hosts:\n  - domains: ['*']\n"
      "    routes: [{match: {prefix: /}, route: {cluster: a}}]\n";
  const std::string dir = MakeTempDir("delete-several");
  std::ofstream(dir + "/all.yaml") << ClusterYaml("a", 9001) << "---\n"
                                   << ClusterYaml("b", 9002) << "---\n"
                                   << ClusterYaml("c", 9003) << "---\n" << table;
  std::ofstream(dir + "/used.yaml") << table << "---\n" << ClusterYaml("a", 9001);
  ASSERT_EQ(cp.Ctl({"apply", "-f", dir + "/all.yaml"}).exit_code, 0);

  auto two = cp.Ctl({"delete", "cluster", "b", "c", "-m", "unused"});
  EXPECT_EQ(two.exit_code, 0) << two.err;
  EXPECT_TRUE(absl::StrContains(two.out, "- Cluster \"b\"\n- Cluster \"c\"\n")) << two.out;
  EXPECT_TRUE(absl::StrContains(two.out, "0 added, 0 changed, 2 removed")) << two.out;
  EXPECT_TRUE(absl::StrContains(two.out, "applied: version 2")) << two.out;
  // The dry run sluicectl makes first (does this control plane read every
  // name?) is no operator's: one audit line, no dry run in it (probe: two).
  {
    const std::string audit = testing::ReadFile(cp.data_dir() + "/audit.log");
    size_t deletes = 0;
    for (size_t at = audit.find(R"("method":"Delete")"); at != std::string::npos;
         at = audit.find(R"("method":"Delete")", at + 1)) {
      ++deletes;
    }
    EXPECT_EQ(deletes, 1u) << audit;
    EXPECT_FALSE(absl::StrContains(audit, R"("dry_run":true)")) << audit;
  }

  // All or none: one absent name keeps the other.
  auto absent = cp.Ctl({"delete", "cluster", "a", "ghost", "ghost2"});
  EXPECT_EQ(absent.exit_code, 1);
  EXPECT_TRUE(absl::StrContains(
      absent.err, "Cluster \"ghost\", Cluster \"ghost2\" do not exist; nothing deleted"))
      << absent.err;
  EXPECT_EQ(cp.Ctl({"get", "cluster", "a"}).exit_code, 0);
  // What remains may not refer to what goes; what goes may.
  auto needed = cp.Ctl({"delete", "cluster", "a"});
  EXPECT_EQ(needed.exit_code, 1);
  EXPECT_TRUE(absl::StrContains(needed.err, "cannot delete Cluster \"a\"")) << needed.err;
  auto dry = cp.Ctl({"delete", "-f", dir + "/used.yaml", "--dry-run"});
  EXPECT_EQ(dry.exit_code, 0) << dry.err;
  EXPECT_TRUE(absl::StrContains(dry.out, "dry run")) << dry.out;
  auto both = cp.Ctl({"delete", "-f", dir + "/used.yaml"});
  EXPECT_EQ(both.exit_code, 0) << both.err;
  EXPECT_TRUE(absl::StrContains(both.out, "- RouteTable \"main\"")) << both.out;
  EXPECT_TRUE(absl::StrContains(both.out, "- Cluster \"a\"")) << both.out;
  EXPECT_TRUE(absl::StrContains(both.out, "applied: version 3")) << both.out;
  EXPECT_EQ(cp.Ctl({"get", "cluster", "a"}).exit_code, 1);

  auto mixed = cp.Ctl({"delete", "cluster", "x", "-f", dir + "/used.yaml"});
  EXPECT_EQ(mixed.exit_code, 2);
  EXPECT_TRUE(absl::StrContains(mixed.err, "not both")) << mixed.err;

  // Specs are not read: fields of another release do not stop a delete.
  std::ofstream(dir + "/future.yaml")
      << "kind: Cluster\nname: c9\nspec: {field_of_a_later_release: 1, endpoints: 5}\n";
  auto future = cp.Ctl({"delete", "-f", dir + "/future.yaml"});
  EXPECT_EQ(future.exit_code, 1);
  EXPECT_TRUE(absl::StrContains(future.err, "Cluster \"c9\" does not exist; nothing deleted"))
      << future.err;

  // What `get -o yaml` printed deletes too, though a Secret's key in it is
  // redacted (an apply of it is refused).
  auto made = testing::RunCommand(
      {"/usr/bin/openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
       "-nodes", "-days", "2", "-subj", "/CN=localhost", "-keyout", dir + "/key.pem", "-out",
       dir + "/cert.pem"});
  ASSERT_EQ(made.exit_code, 0) << made.err;
  auto indent = [&](const std::string& file) {
    std::ifstream in(dir + "/" + file);
    std::string out, line;
    while (std::getline(in, line)) absl::StrAppend(&out, "      ", line, "\n");
    return out;
  };
  std::ofstream(dir + "/secret.yaml")
      << "kind: Secret\nname: web\nspec:\n  tls_certificate:\n    certificate_chain: |\n"
      << indent("cert.pem") << "    private_key: |\n" << indent("key.pem");
  auto secret = cp.Ctl({"apply", "-f", dir + "/secret.yaml"});
  ASSERT_EQ(secret.exit_code, 0) << secret.err;
  auto printed = cp.Ctl({"get", "secret", "web", "-o", "yaml"});
  ASSERT_EQ(printed.exit_code, 0) << printed.err;
  std::ofstream(dir + "/printed.yaml") << printed.out;
  EXPECT_NE(cp.Ctl({"apply", "-f", dir + "/printed.yaml"}).exit_code, 0);
  auto gone = cp.Ctl({"delete", "-f", dir + "/printed.yaml"});
  EXPECT_EQ(gone.exit_code, 0) << gone.err;
  EXPECT_TRUE(absl::StrContains(gone.out, "- Secret \"web\"")) << gone.out;
}

// The first config deploy/README.md tells a Kubernetes user to apply.
TEST(ControlPlaneTest, TheKubernetesExampleIsValid) {
  ControlPlane cp;
  ASSERT_TRUE(cp.ok());
  auto r = cp.Ctl({"apply", "--dry-run", "-f", RunfilePath("examples/kubernetes.yaml")});
  EXPECT_EQ(r.exit_code, 0) << r.out << r.err;
}

TEST(ControlPlaneTest, InvalidApplyChangesNothing) {
  ControlPlane cp;
  ASSERT_TRUE(cp.ok());
  ASSERT_EQ(cp.Ctl({"apply", "-f", RunfilePath("examples/quickstart.yaml")}).exit_code, 0);
  // Locally detectable: named with file, document, line and field.
  std::string bad = WriteFile(ClusterYaml("users", 9001) + "---\n" +
                              "kind: Cluster\nname: other\nspec:\n  endpoints: [{address: 127.0.0.1, port: 70000}]\n");
  auto r = cp.Ctl({"apply", "-f", bad});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find(bad + ", document 2, line 9: Cluster \"other\": endpoints[0].port: must be 1..65535, got 70000"),
            std::string::npos)
      << r.err;
  // Detectable only against the stored state: the server says why.
  std::string dangling = WriteFile(
      "kind: RouteTable\nname: main\nspec:\n  virtual_hosts:\n  - domains: ['*']\n"
      "    routes: [{match: {prefix: /}, route: {cluster: ghost}}]\n");
  r = cp.Ctl({"apply", "-f", dangling});
  EXPECT_EQ(r.exit_code, 1);
  // ... with the file, document and line of the field it names.
  EXPECT_NE(r.err.find(dangling + ", document 1, line 6: RouteTable \"main\": "
                       "virtual_hosts[0].routes[0].route.cluster: refers to "
                       "Cluster \"ghost\", which does not exist"),
            std::string::npos)
      << r.err;
  EXPECT_NE(cp.Ctl({"get"}).out.find("version 1"), std::string::npos);
}

// An authentication policy's `anonymous` names a Consumer: an apply that
// names none, or a delete that takes it away, is refused with the route's
// field (it answered 500 to every caller without credentials).
TEST(ControlPlaneTest, AnAnonymousConsumerIsAReference) {
  ControlPlane cp;
  ASSERT_TRUE(cp.ok());
  auto table = [](const std::string& policy, const std::string& anonymous) {
    return "kind: RouteTable\nname: main\nspec:\n  virtual_hosts:\n  - domains: ['*']\n"
           "    routes:\n    - match: {prefix: /}\n      direct_response: {status: 200}\n"
           "      policies:\n      - name: " + policy + "\n        typed_config: {anonymous: " +
           anonymous + "}\n";
  };
  const std::string guest = "kind: Consumer\nname: guest\nspec: {}\n";
  for (const std::string policy : {"key-auth", "basic-auth"}) {
    auto r = cp.Ctl({"apply", "--dry-run", "-f", WriteFile(table(policy, "nosuch"))});
    EXPECT_EQ(r.exit_code, 1) << r.out;
    EXPECT_TRUE(absl::StrContains(r.err, "RouteTable \"main\": virtual_hosts[0].routes[0]."
                                         "policies[0].typed_config.anonymous: refers to "
                                         "Consumer \"nosuch\", which does not exist"))
        << r.err;
  }
  ASSERT_EQ(cp.Ctl({"apply", "-f", WriteFile(guest + "---\n" + table("key-auth", "guest"))})
                .exit_code, 0);
  auto r = cp.Ctl({"delete", "consumer", "guest"});
  EXPECT_EQ(r.exit_code, 1) << r.out;
  EXPECT_TRUE(absl::StrContains(r.err, "typed_config.anonymous: refers to Consumer \"guest\""))
      << r.err;
  EXPECT_EQ(cp.Ctl({"get", "consumer", "guest"}).exit_code, 0);
  // Once no policy names it, it goes.
  ASSERT_EQ(cp.Ctl({"apply", "-f", WriteFile(table("key-auth", "''"))}).exit_code, 0);
  EXPECT_EQ(cp.Ctl({"delete", "consumer", "guest"}).exit_code, 0);
}

// The rollout's flags without --canary are refused, not ignored; a resource
// defined twice is reported at its second document.
TEST(ControlPlaneTest, ApplyFlagsAndErrorOrigins) {
  ControlPlane cp;
  ASSERT_TRUE(cp.ok());
  ASSERT_EQ(cp.Ctl({"apply", "-f", RunfilePath("examples/quickstart.yaml")}).exit_code, 0);
  std::string good = WriteFile(ClusterYaml("users", 9001));
  for (std::vector<std::string> flags :
       {std::vector<std::string>{"--max-5xx-rate", "0.5"}, {"--min-requests", "3"}}) {
    std::vector<std::string> args = {"apply", "-f", good};
    args.insert(args.end(), flags.begin(), flags.end());
    auto r = cp.Ctl(args);
    EXPECT_EQ(r.exit_code, 2) << flags[0] << ": " << r.out << r.err;
    EXPECT_TRUE(absl::StrContains(r.err, "apply " + flags[0] + " goes with --canary")) << r.err;
  }
  // The table writes an IPv6 address in brackets (it wrote ::1:9).
  ASSERT_EQ(cp.Ctl({"apply", "-f", WriteFile("kind: Cluster\nname: six\nspec:\n  endpoints: "
                                             "[{address: '::1', port: 9}]\n")})
                .exit_code,
            0);
  auto six = cp.Ctl({"get", "cluster"});
  EXPECT_TRUE(absl::StrContains(six.out, "ROUND_ROBIN [::1]:9")) << six.out;
  // --wait with --dry-run: refused, not ignored (it exited 0).
  for (std::vector<std::string> args :
       {std::vector<std::string>{"apply", "-f", good}, {"delete", "cluster", "users"},
        {"rollback", "1"}}) {
    args.push_back("--dry-run");
    args.push_back("--wait");
    auto r = cp.Ctl(args);
    EXPECT_EQ(r.exit_code, 2) << args[0] << ": " << r.out << r.err;
    EXPECT_TRUE(absl::StrContains(r.err, args[0] + " --wait and --dry-run do not go together"))
        << r.err;
  }
  std::string twice = WriteFile(ClusterYaml("users", 9001) + "---\n" + ClusterYaml("users", 9003));
  auto r = cp.Ctl({"apply", "-f", twice});
  EXPECT_EQ(r.exit_code, 1) << r.out << r.err;
  EXPECT_TRUE(absl::StrContains(r.err, twice + ", document 2 (line 6): Cluster \"users\": appears twice"))
      << r.err;
  // And where the first one is.
  EXPECT_TRUE(absl::StrContains(r.err, "appears twice in one apply (first in " + twice +
                                           ", document 1 (line 1))"))
      << r.err;
  // A third copy is named by its own document (it was document 2's line,
  // twice).
  std::string thrice = WriteFile(ClusterYaml("users", 9001) + "---\n" +
                                 ClusterYaml("users", 9003) + "---\n" + ClusterYaml("users", 9004));
  r = cp.Ctl({"apply", "-f", thrice});
  EXPECT_EQ(r.exit_code, 1) << r.out << r.err;
  EXPECT_TRUE(absl::StrContains(r.err, thrice + ", document 2 (line 6): Cluster \"users\": appears twice"))
      << r.err;
  EXPECT_TRUE(absl::StrContains(r.err, thrice + ", document 3 (line 11): Cluster \"users\": appears twice"))
      << r.err;

  // A second file (a shell glob, `-f *.yaml`) or a second -f was dropped
  // without a word, exit 0; stray arguments to proxies and top likewise.
  std::string other = WriteFile(ClusterYaml("stray", 9002));
  for (std::vector<std::string> args :
       {std::vector<std::string>{"apply", "-f", good, other},
        {"apply", "-f", good, "-f", other},
        {"apply", "--filename=" + good, "-f", other},
        {"cache", "purge", "--path", "/a", "--path", "/b"},
        // A bad --wait timeout is refused before anything changes.
        {"delete", "cluster", "users", "--wait", "--timeout", "abc"},
        {"delete", "cluster", "users", "--timeout", "5s"},
        {"rollback", "1", "--wait", "--timeout", "0s"},
        {"proxies", "extra"},
        {"top", "--once", "extra"}}) {
    auto bad = cp.Ctl(args);
    EXPECT_EQ(bad.exit_code, 2) << absl::StrJoin(args, " ") << ": " << bad.out << bad.err;
  }
  EXPECT_NE(cp.Ctl({"get", "cluster", "stray"}).exit_code, 0);  // nothing applied
  EXPECT_EQ(cp.Ctl({"get", "cluster", "users"}).exit_code, 0);   // nothing deleted
  // A flag's value that looks like a flag is a value.
  auto message = cp.Ctl({"apply", "-f", good, "-m", "-f"});
  EXPECT_EQ(message.exit_code, 0) << message.err;
  auto usage = cp.Ctl({"apply", "-f"});
  EXPECT_TRUE(absl::StrContains(usage.err, "flag -f needs a value")) << usage.err;  // as typed
  usage = cp.Ctl({"delete", "cluster"});
  EXPECT_TRUE(absl::StrContains(
      usage.err, "delete takes KIND and NAME (or more names), or -f FILE|DIR; got 1 argument"))
      << usage.err;
}

// `sluicectl COMMAND --help` prints that command's usage, not the whole list.
TEST(ControlPlaneTest, CommandHelpIsTheCommandsOwn) {
  const std::string ctl = RunfilePath("controlplane/cli/sluicectl");
  auto hash = testing::RunCommand({ctl, "hash-password", "--help"});
  EXPECT_EQ(hash.exit_code, 0) << hash.err;
  EXPECT_TRUE(absl::StrContains(hash.out, "hash-password [--iterations N]")) << hash.out;
  EXPECT_FALSE(absl::StrContains(hash.out, "rollback V")) << hash.out;
  auto del = testing::RunCommand({ctl, "delete", "-h"});
  EXPECT_EQ(del.exit_code, 0) << del.err;
  EXPECT_TRUE(absl::StrContains(del.out, "delete KIND NAME")) << del.out;
  EXPECT_TRUE(absl::StrContains(del.out, "--if-version N")) << del.out;
  EXPECT_TRUE(absl::StrContains(del.out, "KIND is Listener")) << del.out;
  EXPECT_FALSE(absl::StrContains(del.out, "apply -f FILE|DIR")) << del.out;
  EXPECT_FALSE(absl::StrContains(hash.out, "--server")) << hash.out;  // no server needed
  EXPECT_FALSE(absl::StrContains(del.out, "The server is")) << del.out;  // told once, in --help
  auto help = testing::RunCommand({ctl, "help", "help"});
  EXPECT_EQ(help.exit_code, 0) << help.err;
  EXPECT_TRUE(absl::StrContains(help.out, "rollback V")) << help.out;
  auto get = testing::RunCommand({ctl, "get", "--help"});
  EXPECT_TRUE(absl::StrContains(get.out, "never print a private key")) << get.out;
  auto help_get = testing::RunCommand({ctl, "help", "get"});
  EXPECT_EQ(help_get.exit_code, 0) << help_get.err;
  EXPECT_EQ(help_get.out, get.out);
  auto bogus = testing::RunCommand({ctl, "bogus", "--help"});
  EXPECT_EQ(bogus.exit_code, 2);
  EXPECT_TRUE(absl::StrContains(bogus.err, "unknown command 'bogus'")) << bogus.err;
  // A typo: one line with the name meant, not the whole usage after it.
  auto typo = testing::RunCommand({ctl, "--server", "127.0.0.1:1", "apyl"});
  EXPECT_EQ(typo.exit_code, 2);
  EXPECT_TRUE(absl::StrContains(typo.err, "unknown command 'apyl'; did you mean 'apply'?"))
      << typo.err;
  EXPECT_FALSE(absl::StrContains(typo.err, "rollback V")) << typo.err;
  auto flag = testing::RunCommand({ctl, "apply", "-f", "x.yaml", "--dryrun"});
  EXPECT_EQ(flag.exit_code, 2);
  EXPECT_TRUE(absl::StrContains(flag.err, "unknown flag --dryrun; did you mean --dry-run?"))
      << flag.err;
  EXPECT_FALSE(absl::StrContains(flag.err, "rollback V")) << flag.err;
  auto all = testing::RunCommand({ctl, "--help"});
  EXPECT_EQ(all.exit_code, 0);
  EXPECT_TRUE(absl::StrContains(all.out, "rollback V")) << all.out;
}

// A server that speaks just enough HTTP/2 (its SETTINGS) for a gRPC call to
// be sent, then closes each connection once a request's HEADERS came.
class CutAfterTheRequest {
 public:
  CutAfterTheRequest() {
    fd_ = socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof(addr);
    if (bind(fd_, reinterpret_cast<sockaddr*>(&addr), len) != 0 || listen(fd_, 8) != 0 ||
        getsockname(fd_, reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
      return;
    }
    port_ = ntohs(addr.sin_port);
    thread_ = std::thread([this] {
      while (true) {
        const int c = accept(fd_, nullptr, nullptr);
        if (c < 0) return;
        static const char kSettings[] = {0, 0, 0, 4, 0, 0, 0, 0, 0};
        (void)send(c, kSettings, sizeof(kSettings), MSG_NOSIGNAL);
        std::string in;
        char buffer[4096];
        bool headers = false;
        while (!headers) {
          const ssize_t n = recv(c, buffer, sizeof(buffer), 0);
          if (n <= 0) break;
          in.append(buffer, static_cast<size_t>(n));
          for (size_t p = 24; p + 9 <= in.size();) {  // frames after the preface
            if (in[p + 3] == 1) headers = true;
            p += 9 + ((static_cast<size_t>(static_cast<uint8_t>(in[p])) << 16) |
                      (static_cast<size_t>(static_cast<uint8_t>(in[p + 1])) << 8) |
                      static_cast<uint8_t>(in[p + 2]));
          }
        }
        close(c);
      }
    });
  }
  ~CutAfterTheRequest() {
    shutdown(fd_, SHUT_RDWR);
    close(fd_);
    if (thread_.joinable()) thread_.join();
  }
  int port() const { return port_; }

 private:
  int fd_ = -1;
  int port_ = 0;
  std::thread thread_;
};

// A change whose connection is lost after it was sent may have been made:
// sluicectl says so instead of "cannot reach" (before: operators read that
// as "not applied" and retried). A read says it could not reach, and a
// refused connection gets no TLS hint.
TEST(ControlPlaneTest, AChangeWithoutAnAnswerMayHaveBeenApplied) {
  CutAfterTheRequest server;
  ASSERT_GT(server.port(), 0);
  const std::string address = absl::StrCat("127.0.0.1:", server.port());
  const std::string dir = MakeTempDir("cut");
  const std::string file = dir + "/cluster.yaml";
  std::ofstream(file) << "kind: Cluster\nname: x\nspec: {endpoints: [{address: 127.0.0.1, "
                         "port: 9}]}\n";
  const std::string ctl = RunfilePath("controlplane/cli/sluicectl");
  auto apply = testing::RunCommand({ctl, "--server", address, "apply", "-f", file});
  EXPECT_EQ(apply.exit_code, 1);
  EXPECT_TRUE(absl::StrContains(apply.err, "after the change was sent")) << apply.err;
  EXPECT_TRUE(absl::StrContains(apply.err, "it may have been applied; check with `sluicectl "
                                           "history`")) << apply.err;
  auto get = testing::RunCommand({ctl, "--server", address, "get"});
  EXPECT_EQ(get.exit_code, 1);
  EXPECT_TRUE(absl::StrContains(get.err, "cannot reach sluice-control") ||
              absl::StrContains(get.err, "is unavailable"))
      << get.err;
  EXPECT_FALSE(absl::StrContains(get.err, "may have been applied")) << get.err;
  auto refused = testing::RunCommand({ctl, "--server", "127.0.0.1:1", "apply", "-f", file});
  EXPECT_EQ(refused.exit_code, 1);
  EXPECT_TRUE(absl::StrContains(refused.err, "cannot reach sluice-control at 127.0.0.1:1"))
      << refused.err;
  EXPECT_FALSE(absl::StrContains(refused.err, "--ca")) << refused.err;
  EXPECT_FALSE(absl::StrContains(refused.err, "default address")) << refused.err;
  // Without --server or $SLUICE_SERVER the error says how to name one.
  // The default port is held bound, not listening, so the connection is
  // refused (skipped when another program has the port).
  {
    const int held = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    addr.sin_port = htons(18000);
    if (held >= 0 && bind(held, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0) {
      auto defaulted = testing::RunCommand({ctl, "get"}, {"SLUICE_SERVER="});
      EXPECT_EQ(defaulted.exit_code, 1);
      EXPECT_TRUE(absl::StrContains(defaulted.err,
                                    "cannot reach sluice-control at 127.0.0.1:18000: "))
          << defaulted.err;
      EXPECT_TRUE(absl::StrContains(defaulted.err, "(the default address: give --server "
                                                   "HOST:PORT or set $SLUICE_SERVER)"))
          << defaulted.err;
    }
    if (held >= 0) close(held);
  }
  // A peer that accepts and never speaks: the command fails within the
  // 5 s connect timeout (it waited gRPC's 20 s).
  int silent_port = 0;
  const int silent = testing::SilentListener(&silent_port);
  ASSERT_GE(silent, 0);
  const absl::Time start = absl::Now();
  auto stuck = testing::RunCommand(
      {ctl, "--server", absl::StrCat("127.0.0.1:", silent_port), "get"});
  EXPECT_EQ(stuck.exit_code, 1);
  EXPECT_LT(absl::Now() - start, absl::Seconds(15));
  EXPECT_TRUE(absl::StrContains(stuck.err, "cannot reach sluice-control")) << stuck.err;
  close(silent);
}

// Several servers, comma-separated (replicas of one store): the command goes
// to the first that takes the connection, saying which it passed over
// (before: one address only, and an operator whose replica was down
// retried by hand against another).
TEST(ControlPlaneTest, SeveralServersTakeTheFirstThatConnects) {
  testing::ControlPlane cp("", "info");
  ASSERT_TRUE(cp.ok()) << cp.process().Log();
  int silent_port = 0;
  const int silent = testing::SilentListener(&silent_port);
  ASSERT_GE(silent, 0);
  const std::string silent_address = absl::StrCat("127.0.0.1:", silent_port);
  const std::string ctl = RunfilePath("controlplane/cli/sluicectl");
  // Refused, then one that never speaks (passed over at the 5 s connect
  // timeout), then the control plane.
  auto get = testing::RunCommand(
      {ctl, "--server", absl::StrCat("127.0.0.1:1,", silent_address, ",", cp.address()), "get"});
  EXPECT_EQ(get.exit_code, 0) << get.err;
  EXPECT_TRUE(absl::StrContains(get.err, absl::StrCat("note: sluice-control at 127.0.0.1:1 cannot "
                                                      "be reached, trying ", silent_address)))
      << get.err;
  EXPECT_TRUE(absl::StrContains(get.err, absl::StrCat("note: sluice-control at ", silent_address,
                                                      " cannot be reached, trying ",
                                                      cp.address())))
      << get.err;
  close(silent);
  // None reachable: the first's error.
  auto none = testing::RunCommand({ctl, "--server", "127.0.0.1:1,127.0.0.1:2", "get"});
  EXPECT_EQ(none.exit_code, 1);
  EXPECT_TRUE(absl::StrContains(none.err, "cannot reach sluice-control at 127.0.0.1:1:"))
      << none.err;
  // One that is no HOST:PORT: a usage error naming it.
  auto bad = testing::RunCommand({ctl, "--server", absl::StrCat(cp.address(), ",cp2"), "get"});
  EXPECT_EQ(bad.exit_code, 2);
  EXPECT_TRUE(absl::StrContains(bad.err, "--server cp2: expected HOST:PORT")) << bad.err;
}

// An apply-only rule (checked by the control plane on changed content)
// names the line of the field, as the rules sluicectl checks itself do, and
// with another error in the file both come in one round. Before: "document
// 1 (line 1)", and the apply-only error only once the other was fixed.
TEST(ControlPlaneTest, ApplyOnlyRulesNameTheirLineAndComeWithTheOthers) {
  ControlPlane cp;
  ASSERT_TRUE(cp.ok()) << cp.process().Log();
  const std::string dir = MakeTempDir("apply-only");
  const std::string head =
      "kind: Cluster\nname: web\nspec: {endpoints: [{address: 127.0.0.1, port: 9000}]}\n---\n"
      "kind: RouteTable\nname: main\nspec:\n  virtual_hosts:\n    - domains: ['*']\n"
      "      routes:\n"
      "        - match: {prefix: /a}\n          route: {cluster: web}\n";
  std::ofstream(dir + "/one.yaml")
      << head << "        - match: {prefix: /b, methods: [GET, GET]}\n          route: {cluster: web}\n";
  auto r = cp.Ctl({"apply", "-f", dir + "/one.yaml"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_TRUE(absl::StrContains(r.err, "one.yaml, document 2, line 13: RouteTable \"main\": "
                                       "virtual_hosts[0].routes[1].match.methods[1]: 'GET' is "
                                       "listed twice"))
      << r.err;
  std::ofstream(dir + "/two.yaml")
      << head << "        - match: {prefix: /b, methods: [GET, GET]}\n          route: {cluster: web}\n"
      << "        - match: {prefix: c}\n          route: {cluster: web}\n";
  r = cp.Ctl({"apply", "-f", dir + "/two.yaml"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_TRUE(absl::StrContains(r.err, "'GET' is listed twice")) << r.err;
  EXPECT_TRUE(absl::StrContains(r.err, "must start with '/'")) << r.err;
}

TEST(ControlPlaneTest, ServerFlagAndEnvironment) {
  ControlPlane cp;
  ASSERT_TRUE(cp.ok());
  auto via_env = testing::RunCommand({RunfilePath("controlplane/cli/sluicectl"), "get"},
                                     {"SLUICE_SERVER=" + cp.address()});
  EXPECT_EQ(via_env.exit_code, 0) << via_env.err;
  auto unreachable = testing::RunCommand(
      {RunfilePath("controlplane/cli/sluicectl"), "--server", "127.0.0.1:1", "get"});
  EXPECT_EQ(unreachable.exit_code, 1);
  EXPECT_NE(unreachable.err.find("cannot reach sluice-control at 127.0.0.1:1"), std::string::npos)
      << unreachable.err;
  // A port out of range is a usage error (gRPC took 89636 as 24100 and an
  // empty port as 443).
  for (const char* server : {"127.0.0.1:89636", "127.0.0.1:", "127.0.0.1", "::1:80"}) {
    auto bad = testing::RunCommand(
        {RunfilePath("controlplane/cli/sluicectl"), "--server", server, "get"});
    EXPECT_EQ(bad.exit_code, 2) << server << ": " << bad.err;
    EXPECT_NE(bad.err.find(absl::StrCat("--server ", server, ": ")), std::string::npos) << bad.err;
  }
  auto listen = testing::RunCommand(
      {RunfilePath("controlplane/server/sluice-control"), "--listen", "127.0.0.1:70000"});
  EXPECT_EQ(listen.exit_code, 2) << listen.err;
  EXPECT_NE(listen.err.find("--listen 127.0.0.1:70000: the port must be 0..65535"),
            std::string::npos)
      << listen.err;
}

TEST(ControlPlaneTest, DiscoveryStreamSnapshotAckPushNack) {
  ControlPlane cp;
  ASSERT_TRUE(cp.ok());
  ASSERT_EQ(cp.Ctl({"apply", "-f", RunfilePath("examples/quickstart.yaml")}).exit_code, 0);

  DiscoveryClient client(cp.address(), "proxy-a");
  DiscoveryResponse r;
  ASSERT_TRUE(client.Read(&r));
  EXPECT_EQ(r.version(), 1u);
  EXPECT_EQ(Names(r), (std::set<std::string>{"public", "main", "users", "orders"}));
  client.Ack(r);
  ASSERT_TRUE(WaitFor([&] {
    auto p = cp.Ctl({"proxies"});
    return p.out.find("proxy-a") != std::string::npos &&
           p.out.find("test       1 ") != std::string::npos;
  }, absl::Seconds(10))) << cp.Ctl({"proxies"}).out;

  // The next version carries only what changed.
  ASSERT_EQ(cp.Ctl({"apply", "-f", WriteFile(ClusterYaml("users", 9009))}).exit_code, 0);
  ASSERT_TRUE(client.Read(&r));
  EXPECT_EQ(r.version(), 2u);
  EXPECT_EQ(Names(r), (std::set<std::string>{"users"}));
  // NACK it: the control plane records the error and the proxy keeps version 1.
  client.Nack(r, 1, "Cluster \"users\": refused by test");
  ASSERT_TRUE(WaitFor([&] {
    return cp.Ctl({"proxies"}).out.find("v2: Cluster \"users\": refused by test") != std::string::npos;
  }, absl::Seconds(10))) << cp.Ctl({"proxies"}).out;
  EXPECT_NE(cp.Ctl({"proxies"}).out.find("test       1 "), std::string::npos);

  // A later version is computed against what the proxy really holds (v1).
  ASSERT_EQ(cp.Ctl({"apply", "-f", WriteFile(ClusterYaml("extra", 9010))}).exit_code, 0);
  ASSERT_TRUE(client.Read(&r));
  EXPECT_EQ(r.version(), 3u);
  EXPECT_EQ(Names(r), (std::set<std::string>{"users", "extra"}));
  client.Ack(r);
  ASSERT_TRUE(WaitFor([&] {
    return cp.Ctl({"proxies"}).out.find("test       3 ") != std::string::npos;
  }, absl::Seconds(10)));

  // Removals are pushed as names.
  ASSERT_EQ(cp.Ctl({"delete", "cluster", "extra"}).exit_code, 0);
  ASSERT_TRUE(client.Read(&r));
  EXPECT_EQ(r.version(), 4u);
  EXPECT_EQ(r.resources_size(), 0);
  ASSERT_EQ(r.removed_size(), 1);
  EXPECT_EQ(r.removed(0).name(), "extra");
}

TEST(ControlPlaneTest, ReconnectSendsOnlyWhatDiffers) {
  ControlPlane cp;
  ASSERT_TRUE(cp.ok());
  ASSERT_EQ(cp.Ctl({"apply", "-f", RunfilePath("examples/quickstart.yaml")}).exit_code, 0);
  std::vector<config::v1::ResourceKey> known;
  {
    DiscoveryClient first(cp.address(), "proxy-b");
    DiscoveryResponse r;
    ASSERT_TRUE(first.Read(&r));
    for (const auto& res : r.resources()) known.push_back(api::KeyOf(res));
    first.Ack(r);
  }
  ASSERT_EQ(cp.Ctl({"apply", "-f", WriteFile(ClusterYaml("users", 9555))}).exit_code, 0);
  DiscoveryClient again(cp.address(), "proxy-b", 1, known);
  DiscoveryResponse r;
  ASSERT_TRUE(again.Read(&r));
  EXPECT_EQ(r.version(), 2u);
  EXPECT_EQ(Names(r), (std::set<std::string>{"users"}));
  EXPECT_EQ(r.removed_size(), 0);
}

TEST(ControlPlaneTest, KillDashNineLosesNoAcknowledgedApply) {
  ControlPlane cp;
  ASSERT_TRUE(cp.ok());
  ASSERT_EQ(cp.Ctl({"apply", "-f", RunfilePath("examples/quickstart.yaml")}).exit_code, 0);
  for (int i = 0; i < 5; ++i) {
    auto r = cp.Ctl({"apply", "-f", WriteFile(ClusterYaml("c" + std::to_string(i), 9100 + i))});
    ASSERT_EQ(r.exit_code, 0) << r.err;
  }
  // The apply returned: it must survive an immediate kill -9.
  cp.Kill();
  ASSERT_TRUE(cp.Restart()) << cp.process().Log();
  auto get = cp.Ctl({"get"});
  EXPECT_NE(get.out.find("version 6"), std::string::npos) << get.out;
  EXPECT_NE(get.out.find("c4"), std::string::npos) << get.out;
  auto next = cp.Ctl({"apply", "-f", WriteFile(ClusterYaml("after", 9200))});
  EXPECT_NE(next.out.find("applied: version 7"), std::string::npos) << next.out;
}

TEST(ControlPlaneTest, KillDuringApplyStreamNeverCorruptsTheStore) {
  ControlPlane cp;
  ASSERT_TRUE(cp.ok());
  std::string files[3];
  for (int i = 0; i < 3; ++i) files[i] = WriteFile(ClusterYaml("k" + std::to_string(i), 9300 + i));
  // Kill at varying moments while applies are in flight.
  for (int round = 0; round < 5; ++round) {
    pid_t child = fork();
    if (child == 0) {
      for (int i = 0; i < 30; ++i) (void)cp.Ctl({"apply", "-f", files[i % 3]});
      _exit(0);
    }
    absl::SleepFor(absl::Milliseconds(50 + 40 * round));  // vary the kill instant
    cp.Kill();
    kill(child, SIGKILL);
    waitpid(child, nullptr, 0);
    ASSERT_TRUE(cp.Restart()) << cp.process().Log();
    auto get = cp.Ctl({"get"});
    ASSERT_EQ(get.exit_code, 0) << get.err << cp.process().Log();
  }
}

TEST(ControlPlaneTest, CorruptStoreIsRefusedWithTheFileNamed) {
  std::string dir = MakeTempDir("corrupt");
  {
    ControlPlane cp(dir);
    ASSERT_TRUE(cp.ok());
    ASSERT_EQ(cp.Ctl({"apply", "-f", RunfilePath("examples/quickstart.yaml")}).exit_code, 0);
    cp.Kill();
  }
  std::string bytes = testing::ReadFile(dir + "/state.db");
  std::ofstream(dir + "/state.db", std::ios::trunc | std::ios::binary) << bytes.substr(0, bytes.size() / 2);
  testing::Process p(RunfilePath("controlplane/server/sluice-control"),
                     {"--listen", "127.0.0.1:0", "--data-dir", dir}, dir + ".corrupt.log");
  auto status = p.Wait(absl::Seconds(20));
  ASSERT_TRUE(status.has_value());
  EXPECT_NE(*status, 0);
  EXPECT_NE(p.Log().find(dir + "/state.db is damaged"), std::string::npos) << p.Log();
}

TEST(ControlPlaneTest, SigtermEndsCleanly) {
  ControlPlane cp;
  ASSERT_TRUE(cp.ok());
  DiscoveryClient client(cp.address(), "proxy-c");
  cp.process().Signal(SIGTERM);
  auto status = cp.process().Wait(absl::Seconds(15));
  ASSERT_TRUE(status.has_value()) << cp.process().Log();
  EXPECT_TRUE(WIFEXITED(*status) && WEXITSTATUS(*status) == 0) << cp.process().Log();
}

}  // namespace
}  // namespace sluice
