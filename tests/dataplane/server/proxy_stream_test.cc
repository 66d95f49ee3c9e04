// ProxyStream driven directly, without sockets: a fake client side (the
// DownstreamSink) and a worker that is never started, whose loop the test
// runs itself. Covers the filter chain's pause and resume, the body held
// while paused or for a policy, a client that leaves mid-pause, and local
// replies -- on routes that answer without an upstream -- and, on the
// worker's simulated clock, the stream's timeouts that need no upstream: a
// policy that does not resume in time, a request body held for a policy
// that stalls. One test serves a real client connection (loopback) with the
// same worker, to see which of the connection's timers an answer leaves.
#include "dataplane/server/proxy_stream.h"

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <set>

#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/time/clock.h"
#include "api/credentials.h"
#include "api/validation.h"
#include "dataplane/auth/consumers.h"
#include "dataplane/event/dispatcher.h"
#include "dataplane/net/transport_socket.h"
#include "dataplane/policy/basic_auth/basic_auth_config.pb.h"
#include "dataplane/policy/chain.h"
#include "dataplane/policy/registry.h"
#include "dataplane/router/route_table.h"
#include "dataplane/server/worker.h"
#include "google/protobuf/text_format.h"

namespace sluice::server {
namespace {

// The client side as the stream sees it.
class FakeSink : public DownstreamSink {
 public:
  void EncodeHeaders(const ResponseHead& head) override {
    status = head.status;
    close_connection = head.close_connection;
    for (const auto& f : *head.headers) headers[std::string(f.name)] = std::string(f.value);
  }
  void EncodeData(std::string_view data) override { body.append(data); }
  void EncodeEnd(const std::vector<http::HeaderField>&) override { ended = true; }
  void EncodeContinue() override { ++continues; }
  void EncodeInformational(int, const std::vector<http::HeaderField>&) override {}
  void Abort() override { aborted = true; }
  size_t buffered_response_bytes() const override { return 0; }
  void SetRequestReadEnabled(bool enabled) override { read_enabled = enabled; }
  void OnStreamDone() override { done = true; }

  int status = 0;
  std::map<std::string, std::string> headers;
  std::string body;
  bool ended = false;
  bool aborted = false;
  bool done = false;
  bool read_enabled = true;
  bool close_connection = false;
  int continues = 0;
};

// Sees the whole request body (OnRequestBody) and records it.
class BodyRecorder : public http::Filter {
 public:
  explicit BodyRecorder(std::string* seen) : seen_(seen) {}
  http::FilterStatus OnRequestBody(std::string& body, http::FilterCallbacks&) override {
    *seen_ = body;
    return http::FilterStatus::kContinue;
  }

 private:
  std::string* seen_;
};

class BodyRecorderFactory : public http::FilterFactory {
 public:
  explicit BodyRecorderFactory(std::string* seen) : seen_(seen) {}
  std::unique_ptr<http::Filter> CreateFilter() const override {
    return std::make_unique<BodyRecorder>(seen_);
  }
  std::string_view policy_name() const override { return "body-recorder"; }
  uint64_t request_body_limit() const override { return 1000; }

 private:
  std::string* seen_;
};

// Asks for a background refresh of every request a client sent, and
// records what each exchange's filter saw.
struct Seen {
  bool background;
  std::string probe;
};

class Refresher : public http::Filter {
 public:
  explicit Refresher(std::vector<Seen>* seen) : seen_(seen) {}
  http::FilterStatus OnRequestHeaders(http::HeaderMap& headers,
                                      http::FilterCallbacks& callbacks) override {
    const std::string* probe = headers.Get("x-probe");
    seen_->push_back({callbacks.info().background, probe ? *probe : ""});
    callbacks.StartBackgroundRefresh();  // ignored in the background exchange
    return http::FilterStatus::kContinue;
  }

 private:
  std::vector<Seen>* seen_;
};

class RefresherFactory : public http::FilterFactory {
 public:
  explicit RefresherFactory(std::vector<Seen>* seen) : seen_(seen) {}
  std::unique_ptr<http::Filter> CreateFilter() const override {
    return std::make_unique<Refresher>(seen_);
  }
  std::string_view policy_name() const override { return "refresher"; }

 private:
  std::vector<Seen>* seen_;
};

// Answers every request itself with SendResponse: `content_type` as its
// content-type field, none when empty (a cache serving what it stored).
class Answerer : public http::Filter {
 public:
  explicit Answerer(std::string content_type) : content_type_(std::move(content_type)) {}
  http::FilterStatus OnRequestHeaders(http::HeaderMap&, http::FilterCallbacks& callbacks) override {
    http::HeaderMap reply;
    reply.Add("x-answer", "1");
    if (!content_type_.empty()) reply.Add("content-type", content_type_);
    callbacks.SendResponse(200, reply, "\x89PNG");
    return http::FilterStatus::kStopLocalReply;
  }

 private:
  std::string content_type_;
};

class AnswererFactory : public http::FilterFactory {
 public:
  explicit AnswererFactory(std::string content_type) : content_type_(std::move(content_type)) {}
  std::unique_ptr<http::Filter> CreateFilter() const override {
    return std::make_unique<Answerer>(content_type_);
  }
  std::string_view policy_name() const override { return "answerer"; }

 private:
  std::string content_type_;
};

// Pauses every request (kStopIteration) and leaves the resuming to the
// test, through the handle it keeps.
struct Pauses {
  std::shared_ptr<http::ResumeHandle> handle;
  http::FilterCallbacks* callbacks = nullptr;
};

class Pauser : public http::Filter {
 public:
  explicit Pauser(Pauses* pauses) : pauses_(pauses) {}
  http::FilterStatus OnRequestHeaders(http::HeaderMap&, http::FilterCallbacks& callbacks) override {
    pauses_->handle = callbacks.MakeResumeHandle();
    pauses_->callbacks = &callbacks;
    return http::FilterStatus::kStopIteration;
  }

 private:
  Pauses* pauses_;
};

class PauserFactory : public http::FilterFactory {
 public:
  explicit PauserFactory(Pauses* pauses) : pauses_(pauses) {}
  std::unique_ptr<http::Filter> CreateFilter() const override {
    return std::make_unique<Pauser>(pauses_);
  }
  std::string_view policy_name() const override { return "pauser"; }

 private:
  Pauses* pauses_;
};

class ProxyStreamTest : public ::testing::Test {
 protected:
  void SetUp() override {
    // Routes: /basic (basic-auth), /held (the body recorder), both answering
    // directly; no cluster, so nothing goes upstream.
    config::v1::RouteTable table;
    ASSERT_TRUE(google::protobuf::TextFormat::ParseFromString(R"pb(
      name: "main"
      virtual_hosts {
        domains: "*"
        routes { name: "basic" match { prefix: "/basic" }
                 direct_response { status: 200 body: "behind basic-auth" } }
        routes { name: "held" match { prefix: "/held" }
                 direct_response { status: 200 body: "held" } }
        routes { name: "refresh" match { prefix: "/refresh" }
                 direct_response { status: 200 body: "fresh" } }
        routes { name: "paused" match { prefix: "/paused" }
                 route { cluster: "nowhere" timeout { seconds: 3 } } }
        routes { name: "upload" match { prefix: "/upload" }
                 route { cluster: "nowhere" timeout { seconds: 3 }
                         idle_timeout { seconds: 5 } } }
        routes { name: "untyped" match { prefix: "/untyped" }
                 direct_response { status: 200 body: "never" } }
        routes { name: "typed" match { prefix: "/typed" }
                 direct_response { status: 200 body: "never" } }
      })pb", &table));
    auto compiled = router::RouteTable::Compile(table);
    ASSERT_TRUE(compiled.ok()) << compiled.status();
    auto snapshot = std::make_shared<config::ConfigSnapshot>();
    snapshot->version = 1;
    snapshot->route_tables["main"] = *compiled;
    auto route_stats_list = std::make_shared<config::RouteStatsList>((*compiled)->route_count());
    config::RouteStatsList& route_stats = *route_stats_list;
    snapshot->route_stats["main"] = route_stats_list;
    for (auto& rs : route_stats) {
      for (int c = 1; c <= 5; ++c) {
        rs.by_class[c] = store_.GetCounter("test_route_total", absl::StrCat("c=\"", c, "\""));
      }
    }
    auto chains_list = std::make_shared<config::FilterChainList>((*compiled)->route_count());
    config::FilterChainList& chains = *chains_list;
    snapshot->route_filters["main"] = chains_list;
    policy::basic_auth::v1::BasicAuthConfig basic;
    auto basic_factory = policy::FindPolicyFactory("basic-auth")->Compile(basic);
    ASSERT_TRUE(basic_factory.ok());
    chains[0] = {*basic_factory};
    chains[1] = {std::make_shared<BodyRecorderFactory>(&seen_body_)};
    chains[2] = {std::make_shared<RefresherFactory>(&seen_)};
    chains[3] = {std::make_shared<PauserFactory>(&pauses_)};
    chains[4] = {std::make_shared<BodyRecorderFactory>(&seen_body_)};
    chains[5] = {std::make_shared<AnswererFactory>("")};
    chains[6] = {std::make_shared<AnswererFactory>("image/png")};
    api::ResourceMap consumers;
    config::v1::Resource alice;
    alice.mutable_consumer()->set_name("alice");
    alice.mutable_consumer()->mutable_basic_auth()->set_username("alice");
    alice.mutable_consumer()->mutable_basic_auth()->set_password_hash(
        api::HashPassword("wonderland", 10000));
    consumers[api::IdOf(alice)] = alice;
    snapshot->consumers = auth::ConsumerIndex::Build(consumers);
    config::ListenerRuntime& l = snapshot->listeners["public"];
    l.name = "public";
    l.route_table = *compiled;
    l.route_stats = &route_stats;
    l.route_filters = &chains;
    l.max_request_headers_bytes = 60 * 1024;
    l.request_headers_timeout = absl::Seconds(10);
    l.idle_timeout = absl::Seconds(60);
    l.http2_max_concurrent_streams = 100;
    l.http2_initial_stream_window = 1 << 20;
    l.max_uri_bytes = 16384;
    l.max_request_headers = 100;
    l.sockets = std::make_shared<config::ListenSockets>();  // counts the one test's connection
    worker_.UseSnapshotForTesting(snapshot);
  }

  void TearDown() override {
    worker_.UseSnapshotForTesting(nullptr);
  }

  // Runs the worker's loop until `done` or the deadline (the loop is
  // stopped every 5 ms to look; it runs the posted work meanwhile).
  bool RunUntil(const std::function<bool()>& done, absl::Duration deadline = absl::Seconds(10)) {
    absl::Time end = absl::Now() + deadline;
    event::Timer stop(worker_.dispatcher(), [this] { worker_.dispatcher().Exit(); });
    while (!done()) {
      if (absl::Now() > end) return false;
      stop.Enable(absl::Milliseconds(5));
      worker_.dispatcher().Run();
    }
    return true;
  }

  RequestHead Head(std::string_view method, std::string_view target,  // literals: they outlive the head
                   std::vector<http::HeaderField>* fields) {
    RequestHead head;
    head.method = method;
    head.target = target;
    head.authority = "gateway.test";
    head.headers = fields;
    return head;
  }

  static std::string Basic(const std::string& user_pass) {
    return "Basic " + absl::Base64Escape(user_pass);
  }

  stats::StatsStore store_;
  ProxyStats proxy_stats_{store_};
  Worker worker_{0, proxy_stats_};
  net::PlainTransportSocket transport_;
  std::string listener_ = "public";
  std::string peer_ = "127.0.0.1";
  std::string seen_body_;
  std::vector<Seen> seen_;
  Pauses pauses_;
};

TEST_F(ProxyStreamTest, APausedRequestResumesAndItsBodyIsKept) {
  FakeSink sink;
  ProxyStream stream(worker_, sink, listener_, peer_, transport_);
  std::string credentials = Basic("alice:wonderland");
  std::vector<http::HeaderField> fields = {{"authorization", credentials}};
  RequestHead head = Head("POST", "/basic", &fields);
  head.body = RequestHead::Body::kLength;
  head.content_length = 6;
  stream.Start(head);
  // basic-auth checks the password on its own thread: nothing answered yet.
  EXPECT_EQ(sink.status, 0);
  EXPECT_TRUE(stream.active());
  stream.OnRequestData("abc");  // held while paused
  stream.OnRequestData("def");
  stream.OnRequestEnd({});
  ASSERT_TRUE(RunUntil([&] { return sink.done; }));
  EXPECT_EQ(sink.status, 200);
  EXPECT_EQ(sink.body, "behind basic-auth");
  EXPECT_TRUE(sink.read_enabled);
}

// A policy's whole response goes out with the content-type it gave, and
// with none when it gave none (a cache replaying a response that had none
// must not relabel it text/plain).
TEST_F(ProxyStreamTest, APolicysResponseHasTheContentTypeItGaveOrNone) {
  for (const auto& [target, expected] :
       std::vector<std::pair<std::string_view, std::string>>{{"/untyped", "<none>"},
                                                             {"/typed", "image/png"}}) {
    FakeSink sink;
    ProxyStream stream(worker_, sink, listener_, peer_, transport_);
    std::vector<http::HeaderField> fields;
    stream.Start(Head("GET", target, &fields));
    ASSERT_TRUE(RunUntil([&] { return sink.done; }));
    EXPECT_EQ(sink.status, 200);
    EXPECT_EQ(sink.body, "\x89PNG");
    EXPECT_EQ(sink.headers["x-answer"], "1");
    auto type = sink.headers.find("content-type");
    EXPECT_EQ(type == sink.headers.end() ? "<none>" : type->second, expected) << target;
  }
}

TEST_F(ProxyStreamTest, AWrongPasswordIsAnsweredAfterTheCheck) {
  FakeSink sink;
  ProxyStream stream(worker_, sink, listener_, peer_, transport_);
  std::string credentials = Basic("alice:nope");
  std::vector<http::HeaderField> fields = {{"authorization", credentials}};
  stream.Start(Head("GET", "/basic", &fields));
  EXPECT_EQ(sink.status, 0);
  ASSERT_TRUE(RunUntil([&] { return sink.done; }));
  EXPECT_EQ(sink.status, 401);
  EXPECT_TRUE(absl::StrContains(sink.body, "invalid credentials")) << sink.body;
  EXPECT_EQ(sink.headers["www-authenticate"], "Basic realm=\"sluice\", charset=\"UTF-8\"");
}

TEST_F(ProxyStreamTest, AClientThatLeavesMidPauseIsNeverAnswered) {
  FakeSink gone_sink;
  auto gone = std::make_unique<ProxyStream>(worker_, gone_sink, listener_, peer_, transport_);
  std::string wrong = Basic("alice:still-wrong");
  std::vector<http::HeaderField> gone_fields = {{"authorization", wrong}};
  gone->Start(Head("GET", "/basic", &gone_fields));
  gone->OnDownstreamGone();
  gone.reset();  // the stream is freed before the check ends
  // A second check, queued after the first on the one verifier thread: once
  // it is answered, the first one's result has been posted (and dropped).
  FakeSink sink;
  ProxyStream stream(worker_, sink, listener_, peer_, transport_);
  std::string also_wrong = Basic("alice:wrong-again");
  std::vector<http::HeaderField> fields = {{"authorization", also_wrong}};
  stream.Start(Head("GET", "/basic", &fields));
  ASSERT_TRUE(RunUntil([&] { return sink.done; }));
  EXPECT_EQ(sink.status, 401);
  EXPECT_EQ(gone_sink.status, 0);
  EXPECT_FALSE(gone_sink.done);
}

TEST_F(ProxyStreamTest, APolicyGetsTheWholeBodyAndContinueIsSent) {
  FakeSink sink;
  ProxyStream stream(worker_, sink, listener_, peer_, transport_);
  std::vector<http::HeaderField> fields;
  RequestHead head = Head("POST", "/held", &fields);
  head.body = RequestHead::Body::kStream;  // chunked: length unknown
  head.expect_continue = true;
  stream.Start(head);
  EXPECT_EQ(sink.continues, 1);  // the client may send the body now
  EXPECT_EQ(sink.status, 0);
  stream.OnRequestData("hello ");
  stream.OnRequestData("world");
  EXPECT_EQ(seen_body_, "");  // not before the end
  stream.OnRequestEnd({});
  EXPECT_EQ(seen_body_, "hello world");
  EXPECT_EQ(sink.status, 200);
  EXPECT_TRUE(sink.done);
}

TEST_F(ProxyStreamTest, ABodyOverThePolicysLimitIs413) {
  FakeSink declared_sink;
  ProxyStream declared(worker_, declared_sink, listener_, peer_, transport_);
  std::vector<http::HeaderField> fields;
  RequestHead head = Head("POST", "/held", &fields);
  head.body = RequestHead::Body::kLength;
  head.content_length = 1001;
  declared.Start(head);
  EXPECT_EQ(declared_sink.status, 413);
  FakeSink streamed_sink;
  ProxyStream streamed(worker_, streamed_sink, listener_, peer_, transport_);
  head.body = RequestHead::Body::kStream;
  streamed.Start(head);
  streamed.OnRequestData(std::string(600, 'a'));
  EXPECT_EQ(streamed_sink.status, 0);
  streamed.OnRequestData(std::string(600, 'b'));
  EXPECT_EQ(streamed_sink.status, 413);
  EXPECT_TRUE(absl::StrContains(streamed_sink.body, "1000 bytes a policy of this route can hold"))
      << streamed_sink.body;
  EXPECT_EQ(seen_body_, "");
}

// An HTTP/1 connection holds its exchange only while a request is in
// flight: the worker keeps the finished ones as spares, binds a spare to the
// next session that needs one, and frees spares that went unused for a
// whole trim period.
TEST_F(ProxyStreamTest, AStreamGivenBackServesTheNextSessionAndUnusedSparesAreFreed) {
  FakeSink first_sink;
  std::unique_ptr<ProxyStream> stream = worker_.TakeStream(first_sink, listener_, peer_, transport_);
  ProxyStream* first = stream.get();
  std::vector<http::HeaderField> fields;
  stream->Start(Head("GET", "/typed", &fields));
  ASSERT_TRUE(RunUntil([&] { return first_sink.done; }));
  EXPECT_EQ(first_sink.status, 200);
  worker_.ReturnStream(std::move(stream));
  EXPECT_EQ(worker_.spare_streams(), 1u);

  FakeSink second_sink;
  std::string other_peer = "10.1.2.3";
  stream = worker_.TakeStream(second_sink, listener_, other_peer, transport_);
  EXPECT_EQ(stream.get(), first);  // the spare, not a new one
  EXPECT_EQ(worker_.spare_streams(), 0u);
  std::vector<http::HeaderField> again;
  stream->Start(Head("GET", "/typed", &again));
  ASSERT_TRUE(RunUntil([&] { return second_sink.done; }));
  EXPECT_EQ(second_sink.status, 200);
  EXPECT_EQ(second_sink.body, "\x89PNG");
  EXPECT_EQ(stream->info().client_ip, other_peer);  // bound to the second session
  EXPECT_EQ(first_sink.body, "\x89PNG");            // the first heard nothing more

  // Given back mid-exchange (the client left): ended, then kept.
  stream->Reset();  // as a connection does for its next (pipelined) request
  std::string credentials = Basic("alice:wonderland");
  std::vector<http::HeaderField> paused = {{"authorization", credentials}};
  stream->Start(Head("GET", "/basic", &paused));  // basic-auth pauses it
  EXPECT_TRUE(stream->active());
  worker_.ReturnStream(std::move(stream));
  EXPECT_EQ(worker_.spare_streams(), 1u);
  // Unused for a whole period: freed by the trim.
  ASSERT_TRUE(RunUntil([&] { return worker_.spare_streams() == 0; },
                       Worker::kSpareTrimPeriod * 3));
  EXPECT_EQ(second_sink.body, "\x89PNG");  // the ended exchange was never answered
}

TEST_F(ProxyStreamTest, ABackgroundRefreshRunsTheRequestAgainDetached) {
  FakeSink sink;
  ProxyStream stream(worker_, sink, listener_, peer_, transport_);
  std::vector<http::HeaderField> fields = {{"x-probe", "42"}};
  stream.Start(Head("GET", "/refresh", &fields));
  // The client's answer comes first, untouched by the refresh.
  EXPECT_TRUE(sink.done);
  EXPECT_EQ(sink.body, "fresh");
  EXPECT_EQ(worker_.background_exchanges(), 1u);
  ASSERT_TRUE(RunUntil([&] { return seen_.size() == 2 && worker_.background_exchanges() == 0; }));
  EXPECT_FALSE(seen_[0].background);
  EXPECT_TRUE(seen_[1].background);
  EXPECT_EQ(seen_[1].probe, "42");  // the client's fields, as it sent them
  // The background exchange asks for no refresh of its own.
  ASSERT_FALSE(RunUntil([&] { return seen_.size() > 2; }, absl::Milliseconds(50)));
}

TEST_F(ProxyStreamTest, ARequestWithABodyIsNotRefreshedInTheBackground) {
  FakeSink sink;
  ProxyStream stream(worker_, sink, listener_, peer_, transport_);
  std::vector<http::HeaderField> fields;
  RequestHead head = Head("POST", "/refresh", &fields);
  head.body = RequestHead::Body::kLength;
  head.content_length = 2;
  stream.Start(head);
  stream.OnRequestData("hi");
  stream.OnRequestEnd({});
  EXPECT_TRUE(sink.done);
  EXPECT_EQ(worker_.background_exchanges(), 0u);
}

// The same worker on a simulated clock: the test moves time, so a timeout
// is checked just before its deadline (nothing happens) and at it.
class ProxyStreamTimeoutTest : public ProxyStreamTest {
 protected:
  ProxyStreamTimeoutTest() { worker_.dispatcher().UseSimulatedClock(); }

  void Advance(absl::Duration d) { worker_.dispatcher().AdvanceClock(d); }
  size_t TimersArmed() { return worker_.dispatcher().simulated_timers_armed(); }

  static constexpr absl::Duration kTick = absl::Microseconds(1);
};

TEST_F(ProxyStreamTimeoutTest, APolicyThatDoesNotResumeIsAnswered504AtTheRouteTimeout) {
  FakeSink sink;
  ProxyStream stream(worker_, sink, listener_, peer_, transport_);
  std::vector<http::HeaderField> fields;
  stream.Start(Head("GET", "/paused", &fields));
  ASSERT_NE(pauses_.handle, nullptr);
  EXPECT_EQ(TimersArmed(), 1u);  // the route timeout bounds the pause
  Advance(absl::Seconds(3) - kTick);
  EXPECT_EQ(sink.status, 0);
  EXPECT_TRUE(stream.active());
  Advance(kTick);
  EXPECT_EQ(sink.status, 504);
  EXPECT_TRUE(absl::StrContains(sink.body, "a policy did not finish within the route timeout"))
      << sink.body;
  EXPECT_TRUE(sink.close_connection);
  EXPECT_TRUE(sink.done);
  EXPECT_EQ(TimersArmed(), 0u);
  // The policy's late result is dropped: the handle runs nothing now.
  bool resumed = false;
  pauses_.handle->Post([&] { resumed = true; });
  Advance(absl::ZeroDuration());
  EXPECT_FALSE(resumed);
}

TEST_F(ProxyStreamTimeoutTest, TheClientsGrpcTimeoutBoundsThePause) {
  FakeSink sink;
  ProxyStream stream(worker_, sink, listener_, peer_, transport_);
  std::vector<http::HeaderField> fields = {{"content-type", "application/grpc"},
                                           {"grpc-timeout", "250m"}};
  RequestHead head = Head("POST", "/paused", &fields);
  head.http2 = true;
  stream.Start(head);
  Advance(absl::Milliseconds(250) - kTick);
  EXPECT_EQ(sink.status, 0);
  Advance(kTick);  // well before the route's 3 s
  // A gRPC client gets a trailers-only answer: DEADLINE_EXCEEDED.
  EXPECT_EQ(sink.status, 200);
  EXPECT_EQ(sink.headers["grpc-status"], "4");
  EXPECT_TRUE(absl::StrContains(sink.headers["grpc-message"], "a policy did not finish"))
      << sink.headers["grpc-message"];
  EXPECT_TRUE(sink.done);
}

TEST_F(ProxyStreamTimeoutTest, ATypeThatOnlyStartsLikeGrpcGetsAnHttpAnswer) {
  // application/grpcx is not gRPC (nor does it take a grpc-timeout): the
  // route's timeout answers 504 as HTTP, not a gRPC status in a 200.
  FakeSink sink;
  ProxyStream stream(worker_, sink, listener_, peer_, transport_);
  std::vector<http::HeaderField> fields = {{"content-type", "application/grpcx"},
                                           {"grpc-timeout", "250m"}};
  RequestHead head = Head("POST", "/paused", &fields);
  head.http2 = true;
  stream.Start(head);
  Advance(absl::Seconds(3) - kTick);
  EXPECT_EQ(sink.status, 0);
  Advance(kTick);
  EXPECT_EQ(sink.status, 504);
  EXPECT_EQ(sink.headers.count("grpc-status"), 0u);
  EXPECT_TRUE(sink.done);
}

TEST_F(ProxyStreamTimeoutTest, APolicyThatResumesInTimeStopsTheRouteTimeout) {
  FakeSink sink;
  ProxyStream stream(worker_, sink, listener_, peer_, transport_);
  std::vector<http::HeaderField> fields;
  stream.Start(Head("GET", "/paused", &fields));
  Advance(absl::Seconds(2));
  pauses_.handle->Post([this] { pauses_.callbacks->ContinueRequest(); });
  Advance(absl::ZeroDuration());  // the posted resume runs
  // The route goes on: its cluster is not in the snapshot (nothing goes
  // upstream in this test), which is answered at once.
  EXPECT_EQ(sink.status, 503);
  EXPECT_TRUE(absl::StrContains(sink.body, "cluster nowhere is not configured")) << sink.body;
  EXPECT_EQ(TimersArmed(), 0u);
  sink.status = 0;
  Advance(absl::Seconds(10));
  EXPECT_EQ(sink.status, 0);  // no 504 after the answer
}

TEST_F(ProxyStreamTimeoutTest, AClientThatLeavesMidPauseGetsNoTimeout) {
  FakeSink sink;
  auto stream = std::make_unique<ProxyStream>(worker_, sink, listener_, peer_, transport_);
  std::vector<http::HeaderField> fields;
  stream->Start(Head("GET", "/paused", &fields));
  Advance(absl::Seconds(3) - kTick);
  EXPECT_EQ(TimersArmed(), 1u);
  stream->OnDownstreamGone();
  EXPECT_EQ(TimersArmed(), 0u);  // the route timeout went with the client
  Advance(absl::Seconds(10));
  EXPECT_EQ(sink.status, 0);
  EXPECT_FALSE(sink.done);
  // Nor does the policy's late resume reach the stream, alive or freed.
  bool resumed = false;
  pauses_.handle->Post([&] { resumed = true; });
  stream.reset();
  Advance(absl::ZeroDuration());
  EXPECT_FALSE(resumed);
}

// A body held whole for a policy (the body recorder) is bounded by the
// Requests the gateway answers while their heads are parsed (direct
// responses here; a policy's 401 or 429, a cache hit) leave their client
// connection with its idle timer armed and nothing else, and a request
// pipelined behind one is answered in the same pass. Before, each such
// answer armed the connection's resume timer too: a wakeup for nothing, and
// a libevent event that every idle connection then kept (128 bytes).
TEST_F(ProxyStreamTimeoutTest, AnAnswerMadeWhileTheHeadIsParsedArmsNoOtherTimer) {
  const int listen_fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  ASSERT_GE(listen_fd, 0);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t size = sizeof(address);
  ASSERT_EQ(bind(listen_fd, reinterpret_cast<sockaddr*>(&address), sizeof(address)), 0);
  ASSERT_EQ(listen(listen_fd, 4), 0);
  ASSERT_EQ(getsockname(listen_fd, reinterpret_cast<sockaddr*>(&address), &size), 0);
  const int client = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  ASSERT_EQ(connect(client, reinterpret_cast<sockaddr*>(&address), sizeof(address)), 0);
  worker_.AcceptForTesting(listener_, listen_fd);
  ASSERT_EQ(worker_.active_connections(), 1);
  const size_t idle_only = TimersArmed();  // the new connection's idle timer
  const std::string two = "GET /held/1 HTTP/1.1\r\nhost: a\r\n\r\n"
                          "GET /held/2 HTTP/1.1\r\nhost: a\r\n\r\n";
  ASSERT_EQ(send(client, two.data(), two.size(), 0), static_cast<ssize_t>(two.size()));
  std::string got;
  const absl::Time deadline = absl::Now() + absl::Seconds(10);
  auto answers = [&got] {
    size_t n = 0;
    for (size_t at = got.find("HTTP/1.1 200"); at != std::string::npos;
         at = got.find("HTTP/1.1 200", at + 1)) {
      ++n;
    }
    return n;
  };
  while (answers() < 2 && absl::Now() < deadline) {
    Advance(absl::ZeroDuration());  // a pass of the loop: I/O, no time
    char buffer[4096];
    const ssize_t n = recv(client, buffer, sizeof(buffer), MSG_DONTWAIT);
    if (n > 0) got.append(buffer, static_cast<size_t>(n));
  }
  EXPECT_EQ(answers(), 2u) << got;
  // The idle timer, and the worker's trim of spare exchange objects (the
  // connection, idle, gave its own back).
  EXPECT_EQ(TimersArmed(), idle_only + 1);
  close(client);
  while (worker_.active_connections() > 0 && absl::Now() < deadline) Advance(absl::ZeroDuration());
  EXPECT_EQ(worker_.active_connections(), 0);
  close(listen_fd);
}

// route's idle_timeout (5 s here), not its timeout (3 s), which starts only
// when the request goes upstream.
TEST_F(ProxyStreamTimeoutTest, AHeldBodyThatStallsIsAnswered408AtTheIdleTimeout) {
  FakeSink sink;
  ProxyStream stream(worker_, sink, listener_, peer_, transport_);
  std::vector<http::HeaderField> fields;
  RequestHead head = Head("POST", "/upload", &fields);
  head.body = RequestHead::Body::kStream;
  stream.Start(head);
  stream.OnRequestData("abc");
  Advance(absl::Seconds(5) - kTick);
  EXPECT_EQ(sink.status, 0);
  Advance(kTick);
  EXPECT_EQ(sink.status, 408);
  EXPECT_TRUE(absl::StrContains(sink.body,
                                "the request body stalled for 5s (the route's idle_timeout)"))
      << sink.body;
  EXPECT_TRUE(sink.close_connection);
  EXPECT_TRUE(sink.done);
  EXPECT_EQ(seen_body_, "");  // the policy never saw a partial body
  EXPECT_EQ(TimersArmed(), 0u);
}

// A route that answers itself (/held: a direct response) has no
// idle_timeout of its own; a body held there for a policy is bounded by the
// default stream idle timeout all the same.
TEST_F(ProxyStreamTimeoutTest, AHeldBodyOnARouteThatAnswersItselfIsBoundedToo) {
  FakeSink sink;
  ProxyStream stream(worker_, sink, listener_, peer_, transport_);
  std::vector<http::HeaderField> fields;
  RequestHead head = Head("POST", "/held", &fields);
  head.body = RequestHead::Body::kStream;
  stream.Start(head);
  stream.OnRequestData("abc");
  Advance(api::kDefaultStreamIdleTimeout - kTick);
  EXPECT_EQ(sink.status, 0);
  Advance(kTick);
  EXPECT_EQ(sink.status, 408);
  EXPECT_TRUE(sink.done);
  EXPECT_EQ(TimersArmed(), 0u);
}

TEST_F(ProxyStreamTimeoutTest, EachPieceOfAHeldBodyRestartsTheIdleTimeout) {
  FakeSink sink;
  ProxyStream stream(worker_, sink, listener_, peer_, transport_);
  std::vector<http::HeaderField> fields;
  RequestHead head = Head("POST", "/upload", &fields);
  head.body = RequestHead::Body::kStream;
  stream.Start(head);
  stream.OnRequestData("abc");
  Advance(absl::Seconds(3));
  stream.OnRequestData("def");  // the deadline moves to 3 s + 5 s
  Advance(absl::Seconds(5) - kTick);  // past the first deadline and the route timeout
  EXPECT_EQ(sink.status, 0);
  Advance(kTick);
  EXPECT_EQ(sink.status, 408);
}

TEST_F(ProxyStreamTimeoutTest, AHeldBodyThatEndsInTimeGoesOnToTheRoute) {
  FakeSink sink;
  ProxyStream stream(worker_, sink, listener_, peer_, transport_);
  std::vector<http::HeaderField> fields;
  RequestHead head = Head("POST", "/upload", &fields);
  head.body = RequestHead::Body::kStream;
  stream.Start(head);
  stream.OnRequestData("abc");
  Advance(absl::Seconds(5) - kTick);
  stream.OnRequestEnd({});
  EXPECT_EQ(seen_body_, "abc");
  EXPECT_EQ(sink.status, 503);  // no cluster "nowhere": nothing goes upstream here
  EXPECT_EQ(TimersArmed(), 0u);
  sink.status = 0;
  Advance(absl::Seconds(60));
  EXPECT_EQ(sink.status, 0);
}

}  // namespace
}  // namespace sluice::server

namespace sluice::server {
namespace {

// Request ids are version-4 UUIDs in lower-case hex, and every one differs;
// WriteHex64 writes a 64-bit value as 16 digits, most significant first.
// At most kMaxConsumers consumers get their own series; the rest share one
// whose label no Consumer name can be, so a consumer named "other" keeps
// its own.
TEST(ConsumerMetricsTest, PastTheLimitConsumersShareALabelNoConsumerCanHave) {
  stats::StatsStore store;
  ConsumerMetrics metrics(store);
  const ConsumerMetrics::Counters* other = metrics.Get("other");
  for (size_t i = 1; i < ConsumerMetrics::kMaxConsumers; ++i) {
    metrics.Get(absl::StrCat("c", i));
  }
  const ConsumerMetrics::Counters* late = metrics.Get("late-1");
  EXPECT_EQ(metrics.Get("late-2"), late);
  EXPECT_NE(late, other);
  EXPECT_EQ(metrics.Get("other"), other);
  (*late)[2]->Inc();
  (*other)[2]->Inc();
  std::string text = store.RenderPrometheus();
  EXPECT_TRUE(absl::StrContains(
      text, "sluice_consumer_requests_total{consumer=\"(other)\",status_class=\"2xx\"} 1\n"))
      << text.substr(0, 400);
  EXPECT_TRUE(absl::StrContains(
      text, "sluice_consumer_requests_total{consumer=\"other\",status_class=\"2xx\"} 1\n"));
}

TEST(WorkerIdsTest, RequestIdsAreRandomVersion4Uuids) {
  char digits[17] = {};
  Worker::WriteHex64(digits, 0x0123456789abcdefull);
  EXPECT_STREQ(digits, "0123456789abcdef");
  Worker::WriteHex64(digits, 0xfedcba9876543210ull);
  EXPECT_STREQ(digits, "fedcba9876543210");
  Worker::WriteHex64(digits, 0);
  EXPECT_STREQ(digits, "0000000000000000");

  stats::StatsStore store;
  ProxyStats proxy_stats(store);
  Worker worker(0, proxy_stats);
  std::set<std::string> seen;
  std::string id = "reused storage, longer than an id: it is replaced whole";
  for (int i = 0; i < 1000; ++i) {
    worker.NewRequestId(&id);
    ASSERT_EQ(id.size(), 36u) << id;
    for (size_t j = 0; j < id.size(); ++j) {
      if (j == 8 || j == 13 || j == 18 || j == 23) {
        ASSERT_EQ(id[j], '-') << id;
      } else {
        ASSERT_TRUE((id[j] >= '0' && id[j] <= '9') || (id[j] >= 'a' && id[j] <= 'f')) << id;
      }
    }
    EXPECT_EQ(id[14], '4') << id;                              // version 4
    EXPECT_NE(std::string_view("89ab").find(id[19]), std::string_view::npos) << id;  // variant
    seen.insert(id);
  }
  EXPECT_EQ(seen.size(), 1000u);
}

}  // namespace
}  // namespace sluice::server
