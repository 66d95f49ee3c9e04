// DiscoveryServiceImpl over a real gRPC stream (in process): the bounds on
// streams and on what a proxy sends, the stream's initial metadata, NACKed
// versions offered again, store ids, a stream that ends leaving nothing
// behind, route tables patched route by route, many streams without a thread
// each, the pushes, ACKs and NACKs counted for --metrics-listen, and cache
// purges sent and confirmed outside the ACK/NACK protocol.
#include "controlplane/server/discovery_service.h"

#include <cmath>
#include <gtest/gtest.h>

#include <atomic>

#include <algorithm>
#include <chrono>
#include <fstream>
#include <map>
#include <thread>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "api/discovery.h"
#include "controlplane/store/file_config_store.h"
#include "grpcpp/grpcpp.h"
#include "tests/harness/process.h"

namespace sluice::controlplane {
namespace {

using discovery::v1::DiscoveryRequest;
using discovery::v1::DiscoveryResponse;
using sluice::testing::WaitFor;

api::Resource Cluster(const std::string& name, uint32_t port = 9000) {
  api::Resource r;
  r.mutable_cluster()->set_name(name);
  auto* e = r.mutable_cluster()->add_endpoints();
  e->set_address("127.0.0.1");
  e->set_port(port);
  return r;
}

// A proxy's side of one stream, driven by hand; every call is bounded by the
// stream's deadline.
class Stream {
 public:
  Stream(discovery::v1::DiscoveryService::Stub& stub, DiscoveryRequest hello,
         absl::Duration deadline = absl::Seconds(10)) {
    context_.set_deadline(std::chrono::system_clock::now() +
                          absl::ToChronoMilliseconds(deadline));
    stream_ = stub.StreamConfig(&context_);
    stream_->Write(hello);
  }
  ~Stream() {
    context_.TryCancel();
    if (!finished_) End();
  }
  // Whether sluice-control said it accepted the stream.
  bool Accepted() {
    stream_->WaitForInitialMetadata();
    return context_.GetServerInitialMetadata().count(api::kStreamAcceptedKey) > 0;
  }
  bool Read(DiscoveryResponse* response) { return stream_->Read(response); }
  void Write(const DiscoveryRequest& request) { stream_->Write(request); }
  void Answer(const DiscoveryResponse& r, uint64_t version, const std::string& error = "") {
    DiscoveryRequest request;
    request.set_version_applied(version);
    request.set_response_nonce(r.nonce());
    request.set_error_detail(error);
    stream_->Write(request);
  }
  // Reads to the end; the status the stream ended with.
  grpc::Status End() {
    DiscoveryResponse ignored;
    while (stream_->Read(&ignored)) {
    }
    finished_ = true;
    return stream_->Finish();
  }

 private:
  grpc::ClientContext context_;
  bool finished_ = false;
  std::unique_ptr<grpc::ClientReaderWriter<DiscoveryRequest, DiscoveryResponse>> stream_;
};

DiscoveryRequest Hello(const std::string& node_id, uint64_t version = 0,
                       const std::string& store_id = "") {
  DiscoveryRequest hello;
  hello.mutable_node()->set_id(node_id);
  hello.mutable_node()->add_client_features(api::kFeatureRouteTablePatch);
  hello.set_version_applied(version);
  hello.set_store_id(store_id);
  return hello;
}

// A file store that says it is shared (as etcd is, by replicas), counting
// the Resync() hints it gets.
class SharedFileStore : public ConfigStore {
 public:
  SharedFileStore(std::unique_ptr<ConfigStore> inner, std::atomic<int>* resyncs)
      : inner_(std::move(inner)), resyncs_(resyncs) {}
  absl::StatusOr<StoredState> Load() override { return inner_->Load(); }
  absl::StatusOr<StoredHistory> LoadHistory() override { return inner_->LoadHistory(); }
  absl::Status RecordStoreId(const StoredState& state, bool* recorded) override {
    return inner_->RecordStoreId(state, recorded);
  }
  absl::Status Commit(uint64_t base_version, const StoredState& next,
                      const StoredHistory& history, std::string* warning) override {
    return inner_->Commit(base_version, next, history, warning);
  }
  bool shared() const override { return true; }
  std::string Describe() const override { return "a shared file store"; }
  void Watch(VersionCallback) override {}
  void Resync() override { ++*resyncs_; }

 private:
  std::unique_ptr<ConfigStore> inner_;
  std::atomic<int>* resyncs_;
};

class DiscoveryServiceTest : public ::testing::Test {
 protected:
  void Start(DiscoveryOptions options = {}, bool shared = false) {
    auto file_store = FileStore::Open(sluice::testing::MakeTempDir("discovery"));
    ASSERT_TRUE(file_store.ok()) << file_store.status();
    std::unique_ptr<ConfigStore> store = std::make_unique<FileConfigStore>(std::move(*file_store));
    if (shared) store = std::make_unique<SharedFileStore>(std::move(store), &resyncs_);
    auto state = ConfigState::Create(std::move(store));
    ASSERT_TRUE(state.ok()) << state.status();
    state_ = std::move(*state);
    service_ = std::make_unique<DiscoveryServiceImpl>(
        state_.get(), &registry_, options, &metrics_, &purges_);
    grpc::ServerBuilder builder;
    builder.RegisterService(service_.get());
    server_ = builder.BuildAndStart();
    ASSERT_NE(server_, nullptr);
    stub_ = discovery::v1::DiscoveryService::NewStub(server_->InProcessChannel({}));
  }
  void TearDown() override {
    if (state_) state_->Shutdown();
    if (server_) server_->Shutdown(std::chrono::system_clock::now());
  }

  std::atomic<int> resyncs_{0};
  ControlPlaneMetrics metrics_;
  ProxyRegistry registry_;
  PurgeRelay purges_;
  std::unique_ptr<ConfigState> state_;
  std::unique_ptr<DiscoveryServiceImpl> service_;
  std::unique_ptr<grpc::Server> server_;
  std::unique_ptr<discovery::v1::DiscoveryService::Stub> stub_;
};

// Before: a proxy learned that its stream was up only from a first
// response, which never comes while it holds the current version.
TEST_F(DiscoveryServiceTest, AcceptedStreamIsSignalledBeforeAnyResponse) {
  Start();
  Stream stream(*stub_, Hello("p1"), absl::Seconds(5));
  EXPECT_TRUE(stream.Accepted());
  EXPECT_EQ(registry_.List().size(), 1u);
}

// With replicas, a proxy that holds a newer version of the store than this
// replica has seen (another replica stored it; this one's watch may be on a
// hung etcd member) makes the replica read the store again, and is offered
// nothing older meanwhile. Before: it was offered this replica's older
// version, refused it (a NACK every retry) and the log blamed a restored
// backup.
TEST_F(DiscoveryServiceTest, AProxyAheadOfThisReplicaWaitsForItToCatchUp) {
  DiscoveryOptions options;
  options.catch_up_wait = absl::Seconds(2);
  Start(options, /*shared=*/true);
  ASSERT_TRUE(state_->Apply({Cluster("users")}, false).ok());
  {
    Stream ahead(*stub_, Hello("ahead", 5, state_->store_id()), absl::Milliseconds(800));
    ASSERT_TRUE(ahead.Accepted());
    DiscoveryResponse response;
    EXPECT_FALSE(ahead.Read(&response)) << response.version();  // nothing until the deadline
  }
  EXPECT_EQ(resyncs_.load(), 1);
  // A proxy behind it is served as ever.
  Stream behind(*stub_, Hello("behind", 0, state_->store_id()));
  DiscoveryResponse response;
  ASSERT_TRUE(behind.Read(&response));
  EXPECT_EQ(response.version(), 1u);
  EXPECT_EQ(resyncs_.load(), 1);
  // The store stays behind past the wait (a restored backup): the proxy is
  // offered its version, as with one control plane (it refuses it), not
  // held for ever.
  Stream restored(*stub_, Hello("restored", 5, state_->store_id()));
  const absl::Time start = absl::Now();
  ASSERT_TRUE(restored.Read(&response));
  EXPECT_EQ(response.version(), 1u);
  EXPECT_GE(absl::Now() - start, absl::Milliseconds(1500));
}

TEST_F(DiscoveryServiceTest, StreamsOverTheLimitAreRefused) {
  DiscoveryOptions options;
  options.max_streams = 2;
  Start(options);
  auto a = std::make_unique<Stream>(*stub_, Hello("a"));
  Stream b(*stub_, Hello("b"));
  ASSERT_TRUE(a->Accepted());
  ASSERT_TRUE(b.Accepted());
  {
    Stream c(*stub_, Hello("c"));
    EXPECT_FALSE(c.Accepted());
    grpc::Status status = c.End();
    EXPECT_EQ(status.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
    EXPECT_EQ(status.error_message(),
              "sluice-control already serves 2 discovery streams, its limit "
              "(--max-discovery-streams)");
  }
  EXPECT_EQ(registry_.List().size(), 2u);
  a.reset();
  ASSERT_TRUE(WaitFor([&] { return service_->active_streams() == 1; }, absl::Seconds(10)));
  Stream d(*stub_, Hello("d"));
  EXPECT_TRUE(d.Accepted());
}

// A client that opens streams and never sends a first request cannot keep
// the slots: each ends at first_request_timeout. Before, 1000 silent
// streams locked every proxy out for as long as they stayed.
TEST_F(DiscoveryServiceTest, AStreamWithoutAFirstRequestEndsAndFreesItsSlot) {
  DiscoveryOptions options;
  options.max_streams = 1;
  options.first_request_timeout = absl::Milliseconds(300);
  Start(options);
  grpc::ClientContext silent_context;
  silent_context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
  auto silent = stub_->StreamConfig(&silent_context);
  DiscoveryResponse ignored;
  while (silent->Read(&ignored)) {
  }
  grpc::Status status = silent->Finish();
  EXPECT_EQ(status.error_code(), grpc::StatusCode::DEADLINE_EXCEEDED) << status.error_message();
  EXPECT_EQ(status.error_message(), "no DiscoveryRequest within 300ms of opening the stream");
  ASSERT_TRUE(WaitFor([&] { return service_->active_streams() == 0; }, absl::Seconds(10)));
  Stream proxy(*stub_, Hello("p"));
  EXPECT_TRUE(proxy.Accepted());
}

TEST_F(DiscoveryServiceTest, NodeFieldsOverTheirBoundsEndTheStream) {
  Start();
  struct Case {
    DiscoveryRequest hello;
    std::string error;
  };
  std::vector<Case> cases;
  cases.push_back({Hello(std::string(257, 'n')), "node.id is 257 bytes; at most 256 are accepted"});
  // Logged as it is: a newline would forge a log line.
  cases.push_back({Hello("a\nb"), "node.id has a control character"});
  {
    DiscoveryRequest hello = Hello("p");
    hello.mutable_node()->set_group(std::string(300, 'g'));
    cases.push_back({hello, "node.group is 300 bytes; at most 256 are accepted"});
  }
  {
    DiscoveryRequest hello = Hello("p");
    for (int i = 0; i < 65; ++i) (*hello.mutable_node()->mutable_labels())[absl::StrCat(i)] = "v";
    cases.push_back({hello, "node.labels has 65 entries; at most 64 are accepted"});
  }
  {
    DiscoveryRequest hello = Hello("p");
    (*hello.mutable_node()->mutable_labels())["zone"] = std::string(1025, 'z');
    cases.push_back({hello, "node.labels[\"zone\"] is 1025 bytes; at most 1024 are accepted"});
  }
  {
    DiscoveryRequest hello = Hello("p");
    (*hello.mutable_node()->mutable_labels())[std::string(257, 'k')] = "v";
    cases.push_back({hello, "a node.labels key is 257 bytes; at most 256 are accepted"});
  }
  {
    DiscoveryRequest hello = Hello("p");
    for (int i = 0; i < 64; ++i) hello.mutable_node()->add_client_features("f");
    cases.push_back({hello, "node.client_features has 65 entries; at most 64 are accepted"});
  }
  {
    DiscoveryRequest hello = Hello("p");
    hello.mutable_node()->add_client_features(std::string(257, 'f'));
    cases.push_back(
        {hello, "a node.client_features entry is 257 bytes; at most 256 are accepted"});
  }
  for (const Case& c : cases) {
    Stream stream(*stub_, c.hello);
    grpc::Status status = stream.End();
    EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << c.error;
    EXPECT_EQ(status.error_message(), c.error);
  }
  EXPECT_TRUE(registry_.List().empty());
}

TEST_F(DiscoveryServiceTest, NackReasonOverItsBoundEndsTheStream) {
  Start();
  ASSERT_TRUE(state_->Apply({Cluster("users")}, false).ok());
  Stream stream(*stub_, Hello("p1"));
  DiscoveryResponse r;
  ASSERT_TRUE(stream.Read(&r));
  stream.Answer(r, 0, std::string(api::kMaxNackErrorBytes + 1, 'x'));
  grpc::Status status = stream.End();
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(status.error_message(),
            absl::StrCat("error_detail is ", api::kMaxNackErrorBytes + 1, " bytes; at most ",
                         api::kMaxNackErrorBytes, " are accepted"));
  ASSERT_TRUE(WaitFor([&] { return registry_.List().empty(); }, absl::Seconds(10)));
}

// Before: a NACKed version was never sent again, so a proxy that failed for
// a passing reason (a port busy for a moment) stayed behind until the next
// change.
TEST_F(DiscoveryServiceTest, NackedVersionIsOfferedAgainAfterTheBackoff) {
  DiscoveryOptions options;
  options.nack_retry = absl::Milliseconds(200);
  Start(options);
  ASSERT_TRUE(state_->Apply({Cluster("users")}, false).ok());
  Stream stream(*stub_, Hello("p1"));
  DiscoveryResponse first;
  ASSERT_TRUE(stream.Read(&first));
  ASSERT_EQ(first.version(), 1u);
  absl::Time nacked = absl::Now();
  stream.Answer(first, 0, "port 8080 is busy");
  DiscoveryResponse again;
  ASSERT_TRUE(stream.Read(&again));
  EXPECT_GE(absl::Now() - nacked, absl::Milliseconds(200));
  EXPECT_EQ(again.version(), 1u);
  EXPECT_NE(again.nonce(), first.nonce());
  EXPECT_EQ(again.resources_size(), 1);
  // NACKed again: the wait doubles.
  nacked = absl::Now();
  stream.Answer(again, 0, "port 8080 is still busy");
  ASSERT_TRUE(stream.Read(&again));
  EXPECT_GE(absl::Now() - nacked, absl::Milliseconds(400));
  stream.Answer(again, 1);
  ASSERT_TRUE(WaitFor([&] { return registry_.List()[0].version_applied() == 1; },
                      absl::Seconds(10)));
  // The last NACK stays visible after the version is taken.
  admin::v1::ProxyStatus status = registry_.List()[0];
  EXPECT_EQ(status.last_nack_version(), 1u);
  EXPECT_EQ(status.last_nack_error(), "port 8080 is still busy");
  EXPECT_EQ(status.version_pending(), 0u);
}

// The value of the sample `series` in the control plane's /metrics text.
double Sample(const ControlPlaneMetrics& metrics, const std::string& series) {
  for (absl::string_view line : absl::StrSplit(metrics.Render({}), '\n')) {
    double value = 0;
    if (absl::StartsWith(line, series + " ") &&
        absl::SimpleAtod(line.substr(series.size() + 1), &value)) {
      return value;
    }
  }
  return -1;
}

TEST_F(DiscoveryServiceTest, PushesAcksNacksAndAckLatencyAreCounted) {
  DiscoveryOptions options;
  options.nack_retry = absl::Hours(1);
  Start(options);
  const absl::Time start = absl::Now();
  ASSERT_TRUE(state_->Apply({Cluster("users")}, false).ok());
  Stream stream(*stub_, Hello("p1"));
  DiscoveryResponse r;
  ASSERT_TRUE(stream.Read(&r));
  stream.Answer(r, 0, "port 8080 is busy");
  ASSERT_TRUE(WaitFor([&] { return Sample(metrics_, "sluice_control_nacks_total") == 1; },
                      absl::Seconds(10)));
  ASSERT_TRUE(state_->Apply({Cluster("users", 9001)}, false).ok());
  ASSERT_TRUE(stream.Read(&r));
  ASSERT_EQ(r.version(), 2u);
  stream.Answer(r, 2);
  ASSERT_TRUE(WaitFor([&] { return Sample(metrics_, "sluice_control_acks_total") == 1; },
                      absl::Seconds(10)));
  const absl::Duration elapsed = absl::Now() - start;
  EXPECT_EQ(Sample(metrics_, "sluice_control_pushes_total"), 2);
  EXPECT_EQ(Sample(metrics_, "sluice_control_nacks_total"), 1);
  // Only the ACK is timed: from its response's write, so within this test.
  EXPECT_EQ(Sample(metrics_, "sluice_control_ack_latency_seconds_count"), 1);
  double seconds = Sample(metrics_, "sluice_control_ack_latency_seconds_sum");
  EXPECT_GE(seconds, 0);
  EXPECT_LE(seconds, absl::ToDoubleSeconds(elapsed));
}

TEST_F(DiscoveryServiceTest, ANewerVersionIsSentWithoutWaitingForTheBackoff) {
  DiscoveryOptions options;
  options.nack_retry = absl::Hours(1);
  Start(options);
  ASSERT_TRUE(state_->Apply({Cluster("users")}, false).ok());
  Stream stream(*stub_, Hello("p1"));
  DiscoveryResponse r;
  ASSERT_TRUE(stream.Read(&r));
  stream.Answer(r, 0, "refused");
  ASSERT_TRUE(WaitFor([&] { return registry_.List()[0].last_nack_version() == 1; },
                      absl::Seconds(10)));
  ASSERT_TRUE(state_->Apply({Cluster("orders")}, false).ok());
  ASSERT_TRUE(stream.Read(&r));
  EXPECT_EQ(r.version(), 2u);
  EXPECT_EQ(r.resources_size(), 2);
}

TEST_F(DiscoveryServiceTest, ResponsesCarryTheStoreId) {
  Start();
  ASSERT_TRUE(state_->Apply({Cluster("users")}, false).ok());
  Stream stream(*stub_, Hello("p1"));
  DiscoveryResponse r;
  ASSERT_TRUE(stream.Read(&r));
  EXPECT_EQ(r.store_id(), state_->store_id());
}

// A proxy that holds the same version and content, but from another store,
// is told the current version (with this store's id); one from this store
// is not.
TEST_F(DiscoveryServiceTest, SameVersionFromAnotherStoreIsSentAgain) {
  Start();
  ASSERT_TRUE(state_->Apply({Cluster("users")}, false).ok());
  auto known = [&] {
    DiscoveryRequest hello = Hello("p1", 1);
    *hello.add_known_resources() = api::KeyOf(Cluster("users"));
    return hello;
  };
  {
    DiscoveryRequest hello = known();
    hello.set_store_id("another-store");
    Stream stream(*stub_, hello);
    DiscoveryResponse r;
    ASSERT_TRUE(stream.Read(&r));
    EXPECT_EQ(r.version(), 1u);
    EXPECT_EQ(r.resources_size(), 0);
    EXPECT_EQ(r.store_id(), state_->store_id());
  }
  DiscoveryRequest hello = known();
  hello.set_store_id(state_->store_id());
  Stream stream(*stub_, hello);
  ASSERT_TRUE(stream.Accepted());
  ASSERT_TRUE(state_->Apply({Cluster("orders")}, false).ok());
  DiscoveryResponse r;
  ASSERT_TRUE(stream.Read(&r));
  EXPECT_EQ(r.version(), 2u);  // not version 1 first
}

// A stream that ends leaves nothing behind: no subscription (a callback into
// a finished stream), no ghost in `sluicectl proxies`, no count.
TEST_F(DiscoveryServiceTest, AStreamThatEndsLeavesNothingBehind) {
  Start();
  ASSERT_TRUE(state_->Apply({Cluster("users")}, false).ok());
  {
    Stream stream(*stub_, Hello("p1"));
    DiscoveryResponse r;
    ASSERT_TRUE(stream.Read(&r));
    EXPECT_EQ(state_->subscriber_count(), 1u);
    EXPECT_EQ(registry_.List().size(), 1u);
  }
  ASSERT_TRUE(WaitFor(
      [&] {
        return state_->subscriber_count() == 0 && registry_.List().empty() &&
               service_->active_streams() == 0;
      },
      absl::Seconds(10)));
  // Changes notify no one that is gone.
  EXPECT_TRUE(state_->Apply({Cluster("orders")}, false).ok());
}

// A traffic report with figures no proxy measures (a NaN p99, more 5xx
// than requests) is ignored; a sound one is kept. Before: a NaN p99 was
// stored, shown and weighed in a canary verdict, where it compares false
// with every limit.
TEST_F(DiscoveryServiceTest, ImpossibleTrafficReportsAreIgnored) {
  Start();
  ASSERT_TRUE(state_->Apply({Cluster("users")}, false).ok());
  Stream stream(*stub_, Hello("p1"));
  DiscoveryResponse r;
  ASSERT_TRUE(stream.Read(&r));
  auto report_of = [](double p99, uint64_t requests, uint64_t errors) {
    DiscoveryRequest request;
    request.mutable_report()->set_requests(requests);
    request.mutable_report()->set_responses_5xx(errors);
    request.mutable_report()->set_p99_ms(p99);
    return request;
  };
  auto last_p99 = [&]() -> double {
    std::vector<admin::v1::ProxyStatus> list = registry_.List();
    return list.empty() || !list[0].has_last_report() ? -1 : list[0].last_report().p99_ms();
  };
  stream.Write(report_of(12.5, 100, 3));
  ASSERT_TRUE(WaitFor([&] { return last_p99() == 12.5; }, absl::Seconds(10)));
  stream.Write(report_of(std::nan(""), 100, 3));
  stream.Write(report_of(-5, 100, 3));
  stream.Write(report_of(30, 100, 101));
  // The ACK after them: once it shows, they were read (a stream is read
  // in order).
  stream.Answer(r, r.version());
  ASSERT_TRUE(WaitFor(
      [&] {
        std::vector<admin::v1::ProxyStatus> list = registry_.List();
        return !list.empty() && list[0].version_applied() == r.version();
      },
      absl::Seconds(10)));
  EXPECT_EQ(last_p99(), 12.5);
  stream.Write(report_of(40, 100, 0));  // sound: kept
  ASSERT_TRUE(WaitFor([&] { return last_p99() == 40; }, absl::Seconds(10))) << last_p99();
}

// A purge goes while a config response is unanswered, in a response of its
// own without a nonce; its result (without a nonce) confirms it and is not
// taken for an ACK; the config response is still the outstanding one.
TEST_F(DiscoveryServiceTest, PurgeTravelsOutsideTheNonceProtocol) {
  Start();
  ASSERT_TRUE(state_->Apply({Cluster("users")}, false).ok());
  Stream stream(*stub_, Hello("p1"));
  DiscoveryResponse config;
  ASSERT_TRUE(stream.Read(&config));
  ASSERT_EQ(config.version(), 1u);
  ASSERT_FALSE(config.nonce().empty());

  PurgeOutcome outcome;
  std::thread operator_call([&] {
    discovery::v1::PurgeSelector selector;
    selector.set_prefix("/a");
    outcome = purges_.Purge(selector, "", absl::Seconds(10));
  });
  DiscoveryResponse purge;
  ASSERT_TRUE(stream.Read(&purge));
  ASSERT_TRUE(purge.has_purge());
  EXPECT_EQ(purge.purge().selector().prefix(), "/a");
  EXPECT_TRUE(purge.nonce().empty());
  EXPECT_EQ(purge.version(), 0u);
  EXPECT_EQ(purge.store_id(), state_->store_id());
  EXPECT_EQ(purge.resources_size(), 0);

  // A newer version waits for the answer to the outstanding one.
  ASSERT_TRUE(state_->Apply({Cluster("orders")}, false).ok());
  DiscoveryRequest result;
  result.mutable_purge_result()->set_id(purge.purge().id());
  result.mutable_purge_result()->set_entries_removed(5);
  result.set_version_applied(7);  // ignored in a purge result
  stream.Write(result);
  operator_call.join();
  EXPECT_EQ(outcome.targeted, 1);
  EXPECT_EQ(outcome.confirmed, 1);
  EXPECT_EQ(outcome.entries_removed, 5u);
  EXPECT_EQ(registry_.List()[0].version_applied(), 0u);  // not an ACK
  EXPECT_EQ(registry_.List()[0].version_pending(), 1u);

  stream.Answer(config, 1);
  DiscoveryResponse next;
  ASSERT_TRUE(stream.Read(&next));
  EXPECT_EQ(next.version(), 2u);
  EXPECT_FALSE(next.has_purge());
  EXPECT_EQ(registry_.List()[0].version_applied(), 1u);
}

// During a canary rollout each stream is sent the version meant for its
// proxy: the canaries the candidate, the rest nothing until the decision,
// which then reaches them as a version with no resource change.
TEST_F(DiscoveryServiceTest, CanariesAreSentTheCandidateAndTheRestStayStable) {
  Start();
  ASSERT_TRUE(state_->Apply({Cluster("users")}, false).ok());  // version 1
  DiscoveryRequest canary_hello = Hello("c1");
  canary_hello.mutable_node()->set_group("canary");
  DiscoveryRequest main_hello = Hello("m1");
  main_hello.mutable_node()->set_group("main");
  Stream canary(*stub_, canary_hello);
  Stream rest(*stub_, main_hello);
  DiscoveryResponse r;
  ASSERT_TRUE(canary.Read(&r));
  canary.Answer(r, 1);
  ASSERT_TRUE(rest.Read(&r));
  rest.Answer(r, 1);
  ASSERT_TRUE(WaitFor(
      [&] {
        auto proxies = registry_.List();
        return proxies.size() == 2 && proxies[0].version_applied() == 1 &&
               proxies[1].version_applied() == 1;
      },
      absl::Seconds(10)));
  CanarySplit split;
  split.group = "canary";
  ASSERT_TRUE(state_->ApplyCanary({Cluster("users", 9001)}, split, {}, nullptr).ok());  // 2
  ASSERT_TRUE(canary.Read(&r));
  EXPECT_EQ(r.version(), 2u);
  ASSERT_EQ(r.resources_size(), 1);
  EXPECT_EQ(r.resources(0).cluster().endpoints(0).port(), 9001u);
  canary.Answer(r, 2);
  ASSERT_TRUE(WaitFor([&] { return registry_.List()[0].version_applied() == 2; },
                      absl::Seconds(10)));
  // Rolled back: version 3 has version 1's content.
  ASSERT_TRUE(state_->EndCanary("r2", false, {}).ok());
  ASSERT_TRUE(rest.Read(&r));  // the first response since version 1
  EXPECT_EQ(r.version(), 3u);
  EXPECT_EQ(r.resources_size(), 0);
  EXPECT_EQ(r.removed_size(), 0);
  ASSERT_TRUE(canary.Read(&r));
  EXPECT_EQ(r.version(), 3u);
  ASSERT_EQ(r.resources_size(), 1);
  EXPECT_EQ(r.resources(0).cluster().endpoints(0).port(), 9000u);
}

// A route table "main" of `routes` routes ("/r<i>" to cluster "users") in
// one virtual host; route `changed`, if any, goes to "orders" instead.
api::Resource Routes(int routes, int changed = -1) {
  api::Resource r;
  r.mutable_route_table()->set_name("main");
  auto* vhost = r.mutable_route_table()->add_virtual_hosts();
  vhost->set_name("all");
  vhost->add_domains("*");
  for (int i = 0; i < routes; ++i) {
    auto* route = vhost->add_routes();
    route->mutable_match()->set_prefix(absl::StrCat("/r", i));
    route->mutable_route()->set_cluster(i == changed ? "orders" : "users");
  }
  return r;
}

uint64_t TableHash(const ConfigState& state) {
  return state.Current()->hashes.at({config::v1::ROUTE_TABLE, "main"});
}

// A proxy that holds (ACKed) version 1 of a route table and the table with
// one route changed (version 2).
class RoutePatchTest : public DiscoveryServiceTest {
 protected:
  void SetUp() override {
    DiscoveryOptions options;
    options.nack_retry = absl::Milliseconds(100);
    Start(options);
    ASSERT_TRUE(
        state_->Apply({Cluster("users"), Cluster("orders"), Routes(50)}, false).ok());
    base_hash_ = TableHash(*state_);
    base_hashes_ = state_->Current()->hashes;
    stream_ = std::make_unique<Stream>(*stub_, Hello("p1"));
    DiscoveryResponse r;
    ASSERT_TRUE(stream_->Read(&r));
    ASSERT_EQ(r.resources_size(), 3);
    stream_->Answer(r, 1);
    ASSERT_TRUE(WaitFor([&] { return registry_.List()[0].version_applied() == 1; },
                        absl::Seconds(10)));
    ASSERT_TRUE(state_->Apply({Routes(50, 7)}, false).ok());
    next_hash_ = TableHash(*state_);
  }
  void TearDown() override {
    stream_.reset();
    DiscoveryServiceTest::TearDown();
  }

  // The first request of a proxy that reconnects holding version 1.
  DiscoveryRequest HelloHoldingVersion1(const std::string& node_id) {
    DiscoveryRequest hello = Hello(node_id, 1, state_->store_id());
    for (const auto& [id, hash] : base_hashes_) {
      auto* key = hello.add_known_resources();
      key->set_kind(id.first);
      key->set_name(id.second);
      key->set_hash(hash);
    }
    return hello;
  }

  uint64_t base_hash_ = 0;
  uint64_t next_hash_ = 0;
  std::map<api::ResourceId, uint64_t> base_hashes_;  // version 1
  std::unique_ptr<Stream> stream_;
};

// Before: a one-route change sent the whole table (all 50 routes).
TEST_F(RoutePatchTest, AOneRouteChangeTravelsAsAPatch) {
  DiscoveryResponse r;
  ASSERT_TRUE(stream_->Read(&r));
  EXPECT_EQ(r.version(), 2u);
  EXPECT_EQ(r.resources_size(), 0);
  EXPECT_EQ(r.removed_size(), 0);
  ASSERT_EQ(r.route_table_patches_size(), 1);
  const discovery::v1::RouteTablePatch& patch = r.route_table_patches(0);
  EXPECT_EQ(patch.name(), "main");
  EXPECT_EQ(patch.base_hash(), base_hash_);
  EXPECT_EQ(patch.hash(), next_hash_);
  ASSERT_EQ(patch.routes_size(), 1);
  EXPECT_EQ(patch.routes(0).virtual_host(), 0u);
  EXPECT_EQ(patch.routes(0).index(), 7u);
  EXPECT_EQ(patch.routes(0).route().route().cluster(), "orders");
  stream_->Answer(r, 2);
  ASSERT_TRUE(WaitFor([&] { return registry_.List()[0].version_applied() == 2; },
                      absl::Seconds(10)));
}

// A proxy that NACKs a patch (it may not hold the base) gets the table whole
// when the version is offered again.
TEST_F(RoutePatchTest, ANackedPatchIsFollowedByTheWholeTable) {
  DiscoveryResponse r;
  ASSERT_TRUE(stream_->Read(&r));
  ASSERT_EQ(r.route_table_patches_size(), 1);
  stream_->Answer(r, 1, "route table main: patch base 1234 is not held");
  DiscoveryResponse again;
  ASSERT_TRUE(stream_->Read(&again));
  EXPECT_EQ(again.version(), 2u);
  EXPECT_NE(again.nonce(), r.nonce());
  EXPECT_EQ(again.route_table_patches_size(), 0);
  ASSERT_EQ(again.resources_size(), 1);
  ASSERT_TRUE(again.resources(0).has_route_table());
  EXPECT_EQ(again.resources(0).route_table().virtual_hosts(0).routes_size(), 50);
  EXPECT_EQ(again.resources(0).route_table().virtual_hosts(0).routes(7).route().cluster(),
            "orders");
  stream_->Answer(again, 2);
  ASSERT_TRUE(WaitFor([&] { return registry_.List()[0].version_applied() == 2; },
                      absl::Seconds(10)));
}

// A proxy that reconnects holding version 1 (its known_resources) is diffed
// on its own, and still gets the changed table as a patch: the control plane
// keeps the content of the tables it sent last.
TEST_F(RoutePatchTest, AReconnectingProxyGetsOnlyThePatch) {
  DiscoveryRequest hello = HelloHoldingVersion1("p2");
  Stream stream(*stub_, hello);
  DiscoveryResponse r;
  ASSERT_TRUE(stream.Read(&r));
  EXPECT_EQ(r.version(), 2u);
  EXPECT_EQ(r.resources_size(), 0);
  EXPECT_EQ(r.removed_size(), 0);
  ASSERT_EQ(r.route_table_patches_size(), 1);
  EXPECT_EQ(r.route_table_patches(0).base_hash(), base_hash_);
  EXPECT_EQ(r.route_table_patches(0).hash(), next_hash_);
  ASSERT_EQ(r.route_table_patches(0).routes_size(), 1);
  EXPECT_EQ(r.route_table_patches(0).routes(0).index(), 7u);
}

// A proxy that does not list api::kFeatureRouteTablePatch (it predates
// patches and would ACK one it ignored) gets the changed table whole.
TEST_F(RoutePatchTest, AProxyThatDoesNotTakePatchesGetsTheWholeTable) {
  DiscoveryRequest hello = HelloHoldingVersion1("old");
  hello.mutable_node()->clear_client_features();
  Stream stream(*stub_, hello);
  DiscoveryResponse r;
  ASSERT_TRUE(stream.Read(&r));
  EXPECT_EQ(r.version(), 2u);
  EXPECT_EQ(r.route_table_patches_size(), 0);
  ASSERT_EQ(r.resources_size(), 1);
  ASSERT_TRUE(r.resources(0).has_route_table());
  EXPECT_EQ(r.resources(0).route_table().virtual_hosts(0).routes(7).route().cluster(), "orders");
  // The proxy beside it that takes patches still gets one.
  DiscoveryResponse patched;
  ASSERT_TRUE(stream_->Read(&patched));
  EXPECT_EQ(patched.route_table_patches_size(), 1);
}

// This process's thread count (/proc/self/status).
int Threads() {
  std::ifstream status("/proc/self/status");
  std::string line;
  while (std::getline(status, line)) {
    int threads = 0;
    if (absl::StartsWith(line, "Threads:") &&
        absl::SimpleAtoi(absl::StripAsciiWhitespace(line.substr(8)), &threads)) {
      return threads;
    }
  }
  return -1;
}

// Before: each stream held two threads (400 for 200 proxies). Streams now
// hold none: the server's threads do not grow with them, and every stream
// still receives each change.
TEST_F(DiscoveryServiceTest, ManyStreamsAllReceiveAChangeWithoutAThreadEach) {
  constexpr int kStreams = 200;
  DiscoveryOptions options;
  options.max_streams = kStreams;
  Start(options);
  ASSERT_TRUE(state_->Apply({Cluster("users")}, false).ok());
  std::vector<std::unique_ptr<Stream>> streams;
  auto connect = [&](int i) {
    streams.push_back(
        std::make_unique<Stream>(*stub_, Hello(absl::StrCat("p", i)), absl::Seconds(60)));
    DiscoveryResponse r;
    ASSERT_TRUE(streams.back()->Read(&r));
    ASSERT_EQ(r.version(), 1u);
    streams.back()->Answer(r, 1);
  };
  // A few first, so that gRPC's own threads have started.
  for (int i = 0; i < 4; ++i) connect(i);
  const int threads_before = Threads();
  ASSERT_GT(threads_before, 0);
  for (int i = 4; i < kStreams; ++i) connect(i);
  ASSERT_TRUE(WaitFor(
      [&] {
        auto proxies = registry_.List();
        return proxies.size() == static_cast<size_t>(kStreams) &&
               std::all_of(proxies.begin(), proxies.end(),
                           [](const auto& p) { return p.version_applied() == 1; });
      },
      absl::Seconds(30)));
  ASSERT_TRUE(state_->Apply({Cluster("users", 9001)}, false).ok());
  for (auto& stream : streams) {
    DiscoveryResponse r;
    ASSERT_TRUE(stream->Read(&r));
    EXPECT_EQ(r.version(), 2u);
    ASSERT_EQ(r.resources_size(), 1);
    EXPECT_EQ(r.resources(0).cluster().endpoints(0).port(), 9001u);
    stream->Answer(r, 2);
  }
  ASSERT_TRUE(WaitFor(
      [&] {
        auto proxies = registry_.List();
        return std::all_of(proxies.begin(), proxies.end(),
                           [](const auto& p) { return p.version_applied() == 2; });
      },
      absl::Seconds(30)));
  // gRPC's pollers and executor may add a few; a thread per stream would
  // add 196 or more.
  EXPECT_LE(Threads(), threads_before + 24)
      << "threads with 4 streams: " << threads_before;
  EXPECT_EQ(service_->active_streams(), kStreams);
}

}  // namespace
}  // namespace sluice::controlplane
