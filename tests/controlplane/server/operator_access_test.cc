// Operator tokens, roles and the audit log through the admin API on a real
// in-process gRPC server: the bearer token in the call's metadata decides
// UNAUTHENTICATED / PERMISSION_DENIED / allowed, the history records the
// token's name, and each change and refusal is one audit.log line.
#include <gtest/gtest.h>
#include <sys/stat.h>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "api/credentials.h"
#include "controlplane/server/admin_service.h"
#include "controlplane/server/control_plane_metrics.h"
#include "google/protobuf/struct.pb.h"
#include "google/protobuf/util/json_util.h"
#include "grpcpp/grpcpp.h"
#include "grpcpp/impl/client_unary_call.h"
#include "tests/harness/process.h"

namespace sluice::controlplane {
namespace {

using sluice::testing::MakeTempDir;
using sluice::testing::ReadFile;

constexpr char kBootstrap[] = "bootstrap-token-0123456789";

// Deterministic "random" bytes: a counter, so each token differs.
OperatorTokens::RandomBytes CountingRandom() {
  auto counter = std::make_shared<int>(0);
  return [counter](size_t n) {
    return std::string(n, static_cast<char>('a' + (*counter)++));
  };
}

TEST(OperatorTokensTest, KeepsOnlyDigestsDurablyAndVerifiesRoles) {
  const std::string dir = MakeTempDir("tokens");
  auto store = FileStore::Open(dir);  // holds the data dir's lock
  ASSERT_TRUE(store.ok());
  std::string viewer_token;
  {
    auto tokens = OperatorTokens::Open(dir, &absl::Now, CountingRandom());
    ASSERT_TRUE(tokens.ok()) << tokens.status();
    EXPECT_TRUE((*tokens)->empty());
    // With no admin token anywhere, the first token is an admin one: once a
    // token is stored every call needs one, and a viewer or operator token
    // alone locked every caller out of making or revoking tokens (probe).
    for (Role role : {Role::kViewer, Role::kOperator}) {
      auto refused = (*tokens)->Create("ci", role, "anonymous");
      EXPECT_EQ(refused.status().code(), absl::StatusCode::kFailedPrecondition);
      EXPECT_TRUE(absl::StrContains(refused.status().message(),
                                    "the first token must have the admin role"))
          << refused.status();
      EXPECT_FALSE((*tokens)->HasStored());
    }
    ASSERT_TRUE((*tokens)->Create("root", Role::kAdmin, "anonymous").ok());
    auto made = (*tokens)->Create("ci", Role::kViewer, "alice");
    ASSERT_TRUE(made.ok()) << made.status();
    viewer_token = *made;
    // Nor is the last admin token revoked while others stay (the same lock
    // out, reached by a revoke: regression probe).
    absl::Status last = (*tokens)->Revoke("root");
    EXPECT_EQ(last.code(), absl::StatusCode::kFailedPrecondition);
    EXPECT_TRUE(absl::StrContains(last.message(), "'root' is the last admin token")) << last;
    EXPECT_TRUE(absl::StartsWith(viewer_token, "slc_"));
    EXPECT_EQ(viewer_token.size(), 4u + 43u);  // 32 bytes, base64url unpadded
    EXPECT_EQ((*tokens)->Create("ci", Role::kAdmin, "alice").status().code(),
              absl::StatusCode::kAlreadyExists);
    EXPECT_EQ(
        (*tokens)->Create("bad name", Role::kAdmin, "alice").status().code(),
        absl::StatusCode::kInvalidArgument);
    // A name starts with a letter or digit: `--admin-token-file` is how
    // `token list` shows the bootstrap token's origin.
    for (const char* odd : {"--admin-token-file", "-x", ".hidden", "_x"}) {
      auto refused = (*tokens)->Create(odd, Role::kViewer, "alice");
      EXPECT_EQ(refused.status().code(), absl::StatusCode::kInvalidArgument) << odd;
      EXPECT_TRUE(absl::StrContains(refused.status().message(), "the first a letter or digit"))
          << refused.status();
    }
    EXPECT_TRUE((*tokens)->Create("9-lives.x_y", Role::kViewer, "alice").ok());
    EXPECT_TRUE((*tokens)->Revoke("9-lives.x_y").ok());
    // Names the history gives to others, in any case.
    for (const char* reserved : {"sluice-control", "Sluice-Control", "anonymous",
                                 "bootstrap-admin", "BOOTSTRAP-admin"}) {
      auto refused = (*tokens)->Create(reserved, Role::kOperator, "alice");
      EXPECT_EQ(refused.status().code(), absl::StatusCode::kInvalidArgument) << reserved;
      EXPECT_TRUE(absl::StrContains(refused.status().message(), "is reserved")) << refused.status();
    }
  }
  const std::string file = ReadFile(dir + "/tokens.db");
  ASSERT_FALSE(file.empty());
  EXPECT_EQ(file.find(viewer_token), std::string::npos);
  EXPECT_NE(file.find(api::Sha256Hex(viewer_token)), std::string::npos);
  struct stat st;
  ASSERT_EQ(::stat((dir + "/tokens.db").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);

  auto reopened = OperatorTokens::Open(dir);
  ASSERT_TRUE(reopened.ok()) << reopened.status();
  auto who = (*reopened)->Verify(viewer_token);
  ASSERT_TRUE(who.has_value());
  EXPECT_EQ(who->name, "ci");
  EXPECT_EQ(who->role, Role::kViewer);
  EXPECT_FALSE((*reopened)->Verify(viewer_token + "x").has_value());
  EXPECT_FALSE((*reopened)->Verify("").has_value());
  ASSERT_EQ((*reopened)->List().size(), 2u);
  EXPECT_EQ((*reopened)->List()[1].name, "ci");
  EXPECT_EQ((*reopened)->List()[1].created_by, "alice");
  // An admin token is there: so the first one's rule holds no more.
  ASSERT_TRUE((*reopened)->Create("ro", Role::kViewer, "root").ok());
  ASSERT_TRUE((*reopened)->Revoke("ro").ok());

  ASSERT_TRUE(
      (*reopened)->AddBootstrapToken(std::string(kBootstrap) + "\n").ok());
  EXPECT_EQ((*reopened)->Verify(kBootstrap)->role, Role::kAdmin);
  EXPECT_EQ((*reopened)->Revoke(kBootstrapTokenName).code(),
            absl::StatusCode::kFailedPrecondition);
  EXPECT_FALSE((*reopened)->AddBootstrapToken("short").ok());
  // No gRPC client could send it: refused at start, not silently useless.
  absl::Status accented = (*reopened)->AddBootstrapToken("0123456789abcdef\xc3\xa9");
  EXPECT_EQ(accented.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(absl::StrContains(accented.message(), "character 17 is byte 0xc3")) << accented;

  ASSERT_TRUE((*reopened)->Revoke("ci").ok());
  EXPECT_FALSE((*reopened)->Verify(viewer_token).has_value());
  EXPECT_EQ((*reopened)->Revoke("ci").code(), absl::StatusCode::kNotFound);
  auto after = OperatorTokens::Open(dir);
  ASSERT_TRUE(after.ok());
  EXPECT_FALSE((*after)->Verify(viewer_token).has_value());
}

// A replica with --require-tokens records, in the store the replicas
// share, that every call needs a token: before, one started without the flag
// let anyone in while only the bootstrap token (held in memory) was used.
TEST(OperatorTokensTest, TheTokensRequiredMarkerIsStoredButIsNoToken) {
  const std::string dir = MakeTempDir("tokens_marker");
  auto store = FileStore::Open(dir);  // holds the data dir's lock
  ASSERT_TRUE(store.ok());
  {
    auto tokens = OperatorTokens::Open(dir);
    ASSERT_TRUE(tokens.ok()) << tokens.status();
    EXPECT_FALSE((*tokens)->HasStored());
    ASSERT_TRUE((*tokens)->RecordTokensRequired().ok());
    ASSERT_TRUE((*tokens)->RecordTokensRequired().ok());  // once
    EXPECT_TRUE((*tokens)->HasStored());
    EXPECT_TRUE((*tokens)->OnlyMarkerStored());
    EXPECT_TRUE((*tokens)->List().empty());
    EXPECT_TRUE((*tokens)->empty());  // --require-tokens needs a real token still
    // The marker is no admin token.
    EXPECT_EQ((*tokens)->Create("ci", Role::kOperator, "x").status().code(),
              absl::StatusCode::kFailedPrecondition);
  }
  // Another process of the store sees it (as another replica would).
  auto reopened = OperatorTokens::Open(dir);
  ASSERT_TRUE(reopened.ok()) << reopened.status();
  EXPECT_TRUE((*reopened)->HasStored());
  EXPECT_FALSE((*reopened)->Verify(std::string(64, '0')).has_value());
  EXPECT_FALSE((*reopened)->Verify("").has_value());
  // With a token made, it is one token among others; the last one revoked
  // leaves it (a replica with the flag may still run: revoking the last
  // token opened the others to anyone). An admin revokes it by its name.
  auto made = (*reopened)->Create("ci", Role::kAdmin, "bootstrap-admin");
  ASSERT_TRUE(made.ok()) << made.status();
  EXPECT_FALSE((*reopened)->OnlyMarkerStored());
  ASSERT_EQ((*reopened)->List().size(), 1u);
  ASSERT_TRUE((*reopened)->Revoke("ci").ok());
  EXPECT_TRUE((*reopened)->HasStored());
  EXPECT_TRUE((*reopened)->OnlyMarkerStored());
  ASSERT_TRUE((*reopened)->Revoke(kTokensRequiredMarker).ok());
  EXPECT_FALSE((*reopened)->HasStored());
  EXPECT_EQ((*reopened)->Revoke(kTokensRequiredMarker).code(), absl::StatusCode::kNotFound);
  auto after = OperatorTokens::Open(dir);
  ASSERT_TRUE(after.ok());
  EXPECT_FALSE((*after)->HasStored());
}

TEST(OperatorTokensTest, RefusesADamagedFile) {
  const std::string dir = MakeTempDir("tokens_damaged");
  sluice::testing::WriteFile(dir, "tokens.db", "SLUICETK garbage");
  auto tokens = OperatorTokens::Open(dir);
  ASSERT_FALSE(tokens.ok());
  EXPECT_EQ(tokens.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_TRUE(absl::StrContains(tokens.status().message(), "tokens.db"));
}

TEST(AuditLogTest, OneJsonLinePerRecordInAFixedOrder) {
  AuditRecord record{"ci",    "ipv4:127.0.0.1:5",
                     "Apply", {"Cluster/web", "Secret/\"x\""},
                     7,       true,
                     "OK"};
  EXPECT_EQ(
      AuditLog::Format(record, absl::FromUnixMicros(1'900'000'000'000'001)),
      R"({"time":"2030-03-17T17:46:40.000001Z","identity":"ci","peer":"ipv4:127.0.0.1:5",)"
      R"("method":"Apply","resources":["Cluster/web","Secret/\"x\""],"version":7,)"
      R"("dry_run":true,"result":"OK"})");
}

// Names are quoted without protobuf's JSON printer when they hold only
// characters it leaves alone: the same text either way.
// At max_bytes the log moves to <path>.1 (one kept) and a new one starts:
// refused calls from whoever reaches the port (10 lines a second) filled the
// data dir's volume in days.
TEST(AuditLogTest, RotatesAtItsSizeKeepingOnePreviousFile) {
  const std::string dir = MakeTempDir("audit_rotation");
  const std::string path = dir + "/audit.log";
  auto log = AuditLog::Open(path, &absl::Now, /*max_bytes=*/1000);
  ASSERT_TRUE(log.ok()) << log.status();
  AuditRecord record{"anonymous", "ipv4:127.0.0.1:5", "Apply", {}, 0, false,
                     "UNAUTHENTICATED: the token is not valid (unknown or revoked)"};
  const size_t line = AuditLog::Format(record, absl::Now()).size() + 1;
  const int lines = static_cast<int>(3 * 1000 / line) + 1;  // three rotations' worth
  for (int i = 0; i < lines; ++i) (*log)->Append(record);
  struct stat st;
  ASSERT_EQ(::stat(path.c_str(), &st), 0);
  EXPECT_LT(static_cast<size_t>(st.st_size), 1000u);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  ASSERT_EQ(::stat((path + ".1").c_str(), &st), 0);
  EXPECT_GE(static_cast<size_t>(st.st_size), 1000u);
  EXPECT_LT(static_cast<size_t>(st.st_size), 1000u + line);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  EXPECT_NE(::stat((path + ".2").c_str(), &st), 0);  // one previous file only
  // A reopened log counts what the file holds already.
  const size_t before = ReadFile(path).size();
  log->reset();
  auto again = AuditLog::Open(path, &absl::Now, /*max_bytes=*/before + line);
  ASSERT_TRUE(again.ok());
  const std::string previous = ReadFile(path + ".1");
  (*again)->Append(record);
  EXPECT_NE(ReadFile(path + ".1"), previous);  // rotated at once
  EXPECT_TRUE(ReadFile(path).empty());
}

TEST(AuditLogTest, NamesAreQuotedAsProtobufsJsonPrinterQuotesThem) {
  for (const std::string name :
       {std::string("Cluster/c-1_a.b c:d@e"), std::string("Route/<x>&'y'"),
        std::string("Secret/t\tab\\"), std::string("Consumer/\xc3\xa9")}) {
    google::protobuf::Value value;
    value.set_string_value(name);
    std::string quoted;
    ASSERT_TRUE(google::protobuf::util::MessageToJsonString(value, &quoted).ok());
    AuditRecord record{"ci", "p", "Apply", {name}, 0, false, "OK"};
    EXPECT_TRUE(absl::StrContains(AuditLog::Format(record, absl::UnixEpoch()),
                                  absl::StrCat("\"resources\":[", quoted, "]")))
        << name;
  }
}

class OperatorAccessTest : public ::testing::Test {
 protected:
  void Start(bool require_tokens) {
    dir_ = MakeTempDir("operator_access");
    auto store = FileStore::Open(dir_);
    ASSERT_TRUE(store.ok()) << store.status();
    auto state = ConfigState::Create(std::move(*store));
    ASSERT_TRUE(state.ok()) << state.status();
    state_ = std::move(*state);
    auto tokens = OperatorTokens::Open(dir_);
    ASSERT_TRUE(tokens.ok()) << tokens.status();
    tokens_ = std::move(*tokens);
    ASSERT_TRUE(tokens_->AddBootstrapToken(kBootstrap).ok());
    auto audit = AuditLog::Open(dir_ + "/audit.log");
    ASSERT_TRUE(audit.ok()) << audit.status();
    audit_ = std::move(*audit);
    rollouts_ = std::make_unique<RolloutManager>(state_.get(), &registry_,
                                                 dir_ + "/rollout.db");
    service_ = std::make_unique<AdminServiceImpl>(
        state_.get(), &registry_, rollouts_.get(), &metrics_,
        AdminAccess{require_tokens, tokens_.get(), audit_.get()});
    grpc::ServerBuilder builder;
    int port = 0;
    builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(),
                             &port);
    builder.RegisterService(service_.get());
    server_ = builder.BuildAndStart();
    ASSERT_GT(port, 0);
    channel_ = grpc::CreateChannel(absl::StrCat("127.0.0.1:", port),
                                   grpc::InsecureChannelCredentials());
    stub_ = admin::v1::AdminService::NewStub(channel_);
  }
  void TearDown() override {
    if (server_) server_->Shutdown();
  }

  std::unique_ptr<grpc::ClientContext> As(const std::string& token) {
    auto context = std::make_unique<grpc::ClientContext>();
    if (!token.empty())
      context->AddMetadata("authorization", "Bearer " + token);
    return context;
  }

  std::string MakeToken(const std::string& name, const std::string& role) {
    admin::v1::CreateTokenRequest request;
    request.set_name(name);
    request.set_role(role);
    admin::v1::CreateTokenResponse response;
    grpc::Status status =
        stub_->CreateToken(As(kBootstrap).get(), request, &response);
    EXPECT_TRUE(status.ok()) << status.error_message();
    return response.token();
  }

  grpc::Status ApplyCluster(const std::string& token,
                            const std::string& author = "claimed") {
    admin::v1::ApplyRequest request;
    auto* cluster = request.add_resources()->mutable_cluster();
    cluster->set_name("web");
    cluster->add_endpoints()->set_address("127.0.0.1");
    cluster->mutable_endpoints(0)->set_port(9000);
    request.set_author(author);
    admin::v1::ApplyResponse response;
    return stub_->Apply(As(token).get(), request, &response);
  }

  std::vector<std::string> AuditLines() {
    std::vector<std::string> lines =
        absl::StrSplit(ReadFile(dir_ + "/audit.log"), '\n', absl::SkipEmpty());
    return lines;
  }

  // The applies_total series of `result`, as a scrape shows it.
  std::string AppliesLine(const std::string& result) const {
    for (absl::string_view line : absl::StrSplit(metrics_.Render({}), '\n')) {
      if (absl::StartsWith(line, "sluice_control_applies_total{result=\"" + result + "\"}")) {
        return std::string(line);
      }
    }
    return "";
  }

  std::string dir_;
  ControlPlaneMetrics metrics_;
  ProxyRegistry registry_;
  std::unique_ptr<ConfigState> state_;
  std::unique_ptr<OperatorTokens> tokens_;
  std::unique_ptr<AuditLog> audit_;
  std::unique_ptr<RolloutManager> rollouts_;
  std::unique_ptr<AdminServiceImpl> service_;
  std::unique_ptr<grpc::Server> server_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<admin::v1::AdminService::Stub> stub_;
};

TEST_F(OperatorAccessTest, NoOrBadTokenIsUnauthenticated) {
  Start(/*require_tokens=*/true);
  admin::v1::ListResponse list;
  grpc::Status status =
      stub_->List(As("").get(), admin::v1::ListRequest(), &list);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::UNAUTHENTICATED);
  // RFC 6750 2.1 and RFC 9110 11.1: the scheme in any case, 1*SP after it.
  for (const char* spelled : {"bearer ", "BEARER  "}) {
    grpc::ClientContext context;
    context.AddMetadata("authorization", spelled + std::string(kBootstrap));
    EXPECT_TRUE(stub_->List(&context, admin::v1::ListRequest(), &list).ok()) << spelled;
  }
  status =
      stub_->List(As("slc_not-a-token").get(), admin::v1::ListRequest(), &list);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_EQ(ApplyCluster("").error_code(), grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_EQ(state_->Current()->version, 0u);
  // Counted for alerts too (the audit log writes at most 10 a second).
  const std::string scraped = metrics_.Render({});
  EXPECT_TRUE(absl::StrContains(
      scraped, "sluice_control_admin_refusals_total{code=\"unauthenticated\"} 3\n"))
      << scraped;
  EXPECT_TRUE(absl::StrContains(
      scraped, "sluice_control_admin_refusals_total{code=\"permission_denied\"} 0\n"))
      << scraped;
  auto lines = AuditLines();
  ASSERT_EQ(lines.size(), 3u);
  EXPECT_TRUE(absl::StrContains(lines[2], R"("method":"Apply")")) << lines[2];
  EXPECT_TRUE(absl::StrContains(lines[2], R"("identity":"anonymous")"))
      << lines[2];
  EXPECT_TRUE(absl::StrContains(lines[2], "UNAUTHENTICATED")) << lines[2];
  EXPECT_TRUE(absl::StrContains(lines[2], R"("peer":"ipv4:127.0.0.1:)"))
      << lines[2];
}

// An Apply's token is checked before its bytes are parsed: a caller without
// one costs the bytes it sent, not the objects they would parse into
// (before: a 45 MB Apply took some 600 MB of the control plane's memory,
// refused or not). Bytes that are no ApplyRequest show the order.
TEST_F(OperatorAccessTest, AnApplysTokenIsCheckedBeforeItsBytesAreParsed) {
  Start(/*require_tokens=*/true);
  const std::string op = MakeToken("deployer", "operator");
  auto send = [&](const std::string& token, const std::string& bytes) {
    grpc::Slice slice(bytes);
    grpc::ByteBuffer request(&slice, 1);
    grpc::ByteBuffer response;
    return grpc::internal::BlockingUnaryCall<grpc::ByteBuffer, grpc::ByteBuffer>(
        channel_.get(),
        grpc::internal::RpcMethod("/sluice.admin.v1.AdminService/Apply",
                                  grpc::internal::RpcMethod::NORMAL_RPC),
        As(token).get(), request, &response);
  };
  // Field 1, length-delimited, claiming far more bytes than follow.
  const std::string not_a_request("\x0a\xff\xff\xff\x0f", 5);
  grpc::Status refused = send("", not_a_request);
  EXPECT_EQ(refused.error_code(), grpc::StatusCode::UNAUTHENTICATED) << refused.error_message();
  grpc::Status unparsed = send(op, not_a_request);
  EXPECT_NE(unparsed.error_code(), grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_FALSE(unparsed.ok());
  // A whole request from the same caller goes through the raw path.
  admin::v1::ApplyRequest apply;
  auto* cluster = apply.add_resources()->mutable_cluster();
  cluster->set_name("web");
  cluster->add_endpoints()->set_address("127.0.0.1");
  cluster->mutable_endpoints(0)->set_port(9000);
  grpc::Status applied = send(op, apply.SerializeAsString());
  EXPECT_TRUE(applied.ok()) << applied.error_message();
  EXPECT_EQ(state_->Current()->version, 1u);
}

// Refused calls are audited at most 100 at once, then 10 a second; the
// line after a gap says how many were not written (before: one line per
// refusal, so a caller without a token wrote ~4,000 lines a second).
TEST_F(OperatorAccessTest, RefusalsFillTheAuditLogAtABoundedRate) {
  Start(/*require_tokens=*/true);
  admin::v1::ListResponse list;
  for (int i = 0; i < 300; ++i) {
    EXPECT_EQ(stub_->List(As("").get(), admin::v1::ListRequest(), &list).error_code(),
              grpc::StatusCode::UNAUTHENTICATED);
  }
  const size_t written = AuditLines().size();
  EXPECT_GE(written, 100u);
  EXPECT_LT(written, 200u);
  // Once credit comes back, the next refusal written names the gap.
  ASSERT_TRUE(sluice::testing::WaitFor(
      [&] {
        stub_->List(As("").get(), admin::v1::ListRequest(), &list);
        return absl::StrContains(AuditLines().back(), "more refused calls not written");
      },
      absl::Seconds(5)))
      << AuditLines().back();
  // Changes are always written.
  EXPECT_TRUE(ApplyCluster(kBootstrap).ok());
  EXPECT_TRUE(absl::StrContains(AuditLines().back(), R"("result":"OK")")) << AuditLines().back();
}

TEST_F(OperatorAccessTest, TwoAuthorizationEntriesAreUnauthenticated) {
  Start(/*require_tokens=*/true);
  const std::string viewer = MakeToken("dash", "viewer");
  admin::v1::ListResponse list;
  // Two authorization entries: neither counts (the first did), whichever
  // is the good one.
  for (const auto& [first, second] : {std::pair<std::string, std::string>{viewer, "junk"},
                                      {"junk", viewer}}) {
    auto context = As(first);
    context->AddMetadata("authorization", "Bearer " + second);
    grpc::Status two = stub_->List(context.get(), admin::v1::ListRequest(), &list);
    EXPECT_EQ(two.error_code(), grpc::StatusCode::UNAUTHENTICATED);
    EXPECT_EQ(two.error_message(),
              "more than one 'authorization' metadata entry; send one token");
  }
}

TEST_F(OperatorAccessTest, RolesDecideWhatATokenMayDo) {
  Start(/*require_tokens=*/true);
  const std::string viewer = MakeToken("dash", "viewer");
  const std::string op = MakeToken("deployer", "operator");

  admin::v1::ListResponse list;
  EXPECT_TRUE(
      stub_->List(As(viewer).get(), admin::v1::ListRequest(), &list).ok());
  grpc::Status refused = ApplyCluster(viewer);
  EXPECT_EQ(refused.error_code(), grpc::StatusCode::PERMISSION_DENIED);
  EXPECT_EQ(refused.error_message(),
            "Apply needs the operator role; your token 'dash' is a viewer");
  EXPECT_EQ(state_->Current()->version, 0u);

  grpc::Status applied = ApplyCluster(op, "mallory@laptop");
  ASSERT_TRUE(applied.ok()) << applied.error_message();
  admin::v1::HistoryResponse history;
  ASSERT_TRUE(
      stub_->History(As(viewer).get(), admin::v1::HistoryRequest(), &history)
          .ok());
  ASSERT_EQ(history.entries_size(), 1);
  EXPECT_EQ(history.entries(0).author(),
            "deployer");  // not what the client claimed

  admin::v1::CreateTokenResponse created;
  admin::v1::CreateTokenRequest create;
  create.set_name("sneaky");
  create.set_role("admin");
  refused = stub_->CreateToken(As(op).get(), create, &created);
  EXPECT_EQ(refused.error_code(), grpc::StatusCode::PERMISSION_DENIED);
  EXPECT_TRUE(
      absl::StrContains(refused.error_message(), "needs the admin role"));

  admin::v1::ListTokensResponse listed;
  ASSERT_TRUE(stub_
                  ->ListTokens(As(kBootstrap).get(),
                               admin::v1::ListTokensRequest(), &listed)
                  .ok());
  ASSERT_EQ(listed.tokens_size(), 3);
  EXPECT_EQ(listed.tokens(1).name(), "dash");
  EXPECT_EQ(listed.tokens(1).role(), "viewer");
  EXPECT_EQ(listed.tokens(1).created_by(), kBootstrapTokenName);
  EXPECT_EQ(listed.DebugString().find(api::Sha256Hex(viewer)),
            std::string::npos);

  admin::v1::RevokeTokenRequest revoke;
  revoke.set_name("deployer");
  admin::v1::RevokeTokenResponse revoked;
  ASSERT_TRUE(stub_->RevokeToken(As(kBootstrap).get(), revoke, &revoked).ok());
  EXPECT_EQ(ApplyCluster(op).error_code(), grpc::StatusCode::UNAUTHENTICATED);

  auto lines = AuditLines();
  // create dash, create deployer, refused apply, apply, refused create,
  // revoke, refused apply.
  ASSERT_EQ(lines.size(), 7u) << ReadFile(dir_ + "/audit.log");
  EXPECT_TRUE(absl::StrContains(lines[0], R"("identity":"bootstrap-admin")"))
      << lines[0];
  EXPECT_TRUE(absl::StrContains(lines[0], R"("resources":["token/dash","role/viewer"])"))
      << lines[0];
  EXPECT_TRUE(absl::StrContains(lines[2], R"("identity":"dash")")) << lines[2];
  EXPECT_TRUE(absl::StrContains(lines[2], "PERMISSION_DENIED")) << lines[2];
  EXPECT_TRUE(absl::StrContains(lines[3], R"("identity":"deployer")"))
      << lines[3];
  EXPECT_TRUE(absl::StrContains(lines[3], R"("resources":["Cluster/web"])"))
      << lines[3];
  EXPECT_TRUE(absl::StrContains(lines[3], R"("version":1)")) << lines[3];
  EXPECT_TRUE(absl::StrContains(lines[3], R"("result":"OK")")) << lines[3];
  EXPECT_TRUE(absl::StrContains(lines[5], R"("method":"RevokeToken")"))
      << lines[5];
  for (const auto& line : lines) {
    EXPECT_EQ(line.find(viewer), std::string::npos);
    EXPECT_EQ(line.find(op), std::string::npos);
  }
}

TEST_F(OperatorAccessTest,
       WithoutRequireTokensEveryoneIsAnonymousAndAuthorIsAsClaimed) {
  Start(/*require_tokens=*/false);
  grpc::Status applied = ApplyCluster("", "alice@laptop");
  ASSERT_TRUE(applied.ok()) << applied.error_message();
  EXPECT_EQ(state_->History()->stored().entries.back().author, "alice@laptop");
  auto lines = AuditLines();
  ASSERT_EQ(lines.size(), 1u);
  EXPECT_TRUE(absl::StrContains(lines[0], R"("identity":"anonymous")"))
      << lines[0];
  EXPECT_TRUE(absl::StrContains(lines[0], R"("method":"Apply")")) << lines[0];
}

// A stored token is required by every replica, --require-tokens or not:
// with --store etcd a replica started without the flag was a way around
// the other replicas' tokens (and could mint an admin token they accept).
TEST_F(OperatorAccessTest, AStoredTokenIsRequiredWithoutRequireTokens) {
  Start(/*require_tokens=*/false);
  const std::string op = MakeToken("deployer", "operator");
  grpc::Status refused = ApplyCluster("");
  EXPECT_EQ(refused.error_code(), grpc::StatusCode::UNAUTHENTICATED) << refused.error_message();
  admin::v1::CreateTokenRequest create;
  create.set_name("evil");
  create.set_role("admin");
  admin::v1::CreateTokenResponse created;
  EXPECT_EQ(stub_->CreateToken(As("").get(), create, &created).error_code(),
            grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_EQ(state_->Current()->version, 0u);
  grpc::Status applied = ApplyCluster(op, "mallory@laptop");
  ASSERT_TRUE(applied.ok()) << applied.error_message();
  EXPECT_EQ(state_->History()->stored().entries.back().author, "deployer");
  // With every stored token revoked, the API is open again.
  admin::v1::RevokeTokenRequest revoke;
  revoke.set_name("deployer");
  admin::v1::RevokeTokenResponse revoked;
  ASSERT_TRUE(stub_->RevokeToken(As(kBootstrap).get(), revoke, &revoked).ok());
  EXPECT_TRUE(ApplyCluster("").ok());
}

TEST_F(OperatorAccessTest, RolloutsNeedTheOperatorRoleAndAreAudited) {
  Start(/*require_tokens=*/true);
  const std::string viewer = MakeToken("dash", "viewer");
  const std::string op = MakeToken("deployer", "operator");
  ASSERT_TRUE(ApplyCluster(op).ok());  // version 1
  for (const char* group : {"canary", "main"}) {
    discovery::v1::Node node;
    node.set_id(absl::StrCat(group, "-1"));
    node.set_group(group);
    registry_.Connect(node, 1);
  }
  admin::v1::GetRolloutResponse got;
  EXPECT_EQ(stub_->GetRollout(As(viewer).get(), {}, &got).error_code(),
            grpc::StatusCode::NOT_FOUND);

  admin::v1::StartRolloutRequest start;
  auto* cluster = start.add_resources()->mutable_cluster();
  cluster->set_name("web");
  cluster->add_endpoints()->set_address("127.0.0.1");
  cluster->mutable_endpoints(0)->set_port(9001);
  start.set_canary_group("canary");
  start.set_verify_ms(60000);
  admin::v1::StartRolloutResponse started;
  grpc::Status refused = stub_->StartRollout(As(viewer).get(), start, &started);
  EXPECT_EQ(refused.error_code(), grpc::StatusCode::PERMISSION_DENIED);
  EXPECT_EQ(refused.error_message(),
            "StartRollout needs the operator role; your token 'dash' is a viewer");
  EXPECT_EQ(AppliesLine("ok"), "sluice_control_applies_total{result=\"ok\"} 1");
  // A canary of what is current changes nothing: counted so, not as a conflict.
  admin::v1::StartRolloutRequest same = start;
  same.mutable_resources(0)->mutable_cluster()->mutable_endpoints(0)->set_port(9000);
  EXPECT_EQ(stub_->StartRollout(As(op).get(), same, &started).error_code(),
            grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_EQ(AppliesLine("unchanged"), "sluice_control_applies_total{result=\"unchanged\"} 1");
  EXPECT_EQ(AppliesLine("conflict"), "sluice_control_applies_total{result=\"conflict\"} 0");
  grpc::Status status = stub_->StartRollout(As(op).get(), start, &started);
  ASSERT_TRUE(status.ok()) << status.error_message();
  // A canary apply is counted as an apply (before: not at all).
  EXPECT_EQ(AppliesLine("ok"), "sluice_control_applies_total{result=\"ok\"} 2");
  EXPECT_EQ(started.rollout().id(), "r2");
  EXPECT_EQ(started.rollout().author(), "deployer");

  ASSERT_TRUE(stub_->GetRollout(As(viewer).get(), {}, &got).ok());
  EXPECT_TRUE(got.running());
  EXPECT_EQ(got.rollout().candidate_version(), 2u);
  EXPECT_EQ(ApplyCluster(op).error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  admin::v1::AbortRolloutResponse aborted;
  EXPECT_EQ(stub_->AbortRollout(As(viewer).get(), {}, &aborted).error_code(),
            grpc::StatusCode::PERMISSION_DENIED);
  status = stub_->AbortRollout(As(op).get(), {}, &aborted);
  ASSERT_TRUE(status.ok()) << status.error_message();
  EXPECT_EQ(aborted.rollout().state(), admin::v1::Rollout::ROLLED_BACK);
  EXPECT_EQ(aborted.rollout().decision_version(), 3u);
  const HistoryEntry* decision = state_->History()->Find(3);
  ASSERT_NE(decision, nullptr);
  EXPECT_EQ(decision->author, "deployer");
  EXPECT_TRUE(absl::StrContains(decision->message, "rollout r2 rolled back: aborted by deployer"))
      << decision->message;
  admin::v1::PromoteRolloutResponse promoted;
  EXPECT_EQ(stub_->PromoteRollout(As(op).get(), {}, &promoted).error_code(),
            grpc::StatusCode::FAILED_PRECONDITION);

  const std::string audit = ReadFile(dir_ + "/audit.log");
  EXPECT_TRUE(absl::StrContains(
      audit, R"("method":"StartRollout","resources":["rollout/r2","Cluster/web"],"version":2)"))
      << audit;
  EXPECT_TRUE(absl::StrContains(
      audit, R"("method":"AbortRollout","resources":["rollout/r2"],"version":3)"))
      << audit;
}

}  // namespace
}  // namespace sluice::controlplane
