// net::Connection over real loopback TCP sockets.
#include "dataplane/net/connection.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "dataplane/event/dispatcher.h"
#include "dataplane/net/tls.h"
#include "tests/api/test_certificates.h"

namespace sluice::net {
namespace {

// A connected pair of TCP sockets on 127.0.0.1: `ours` non-blocking.
struct TcpPair {
  TcpPair() {
    int listener = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in addr = {};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof(addr);
    EXPECT_EQ(bind(listener, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
    EXPECT_EQ(listen(listener, 1), 0);
    EXPECT_EQ(getsockname(listener, reinterpret_cast<sockaddr*>(&addr), &len), 0);
    ours = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    connect(ours, reinterpret_cast<sockaddr*>(&addr), sizeof(addr));  // EINPROGRESS
    peer = accept(listener, nullptr, nullptr);
    EXPECT_GE(peer, 0);
    close(listener);
  }
  int ours = -1;
  int peer = -1;
};

struct Recorder : ConnectionCallbacks {
  explicit Recorder(Connection* c) : connection(c) {}
  void OnReadable() override {
    events += "read:" + std::string(connection->input().view()) + ";";
    connection->input().Drain(connection->input().size());
  }
  void OnClosed(CloseReason reason, int) override {
    events += reason == CloseReason::kReset ? "reset;" : "closed;";
  }
  Connection* connection;
  std::string events;
};

// The peer sent its last words (an HTTP/2 GOAWAY naming the streams it did
// not process) and closed; a write fails before they were read. With
// ReadBeforeWriteFailure they are handed on first; without, they are lost.
TEST(ConnectionTest, LastWordsOfAPeerAreReadBeforeAFailedWriteCloses) {
  for (bool read_first : {true, false}) {
    event::Dispatcher dispatcher;
    dispatcher.UseSimulatedClock();
    TcpPair pair;
    // A byte the peer never reads: its close is a reset.
    ASSERT_EQ(send(pair.ours, "x", 1, MSG_NOSIGNAL), 1);
    Connection connection(dispatcher, pair.ours, /*connecting=*/true, nullptr);
    Recorder recorder(&connection);
    connection.SetCallbacks(&recorder);
    if (read_first) connection.ReadBeforeWriteFailure();
    for (int i = 0; i < 500 && connection.connecting(); ++i) {
      pollfd p = {pair.ours, POLLOUT, 0};
      poll(&p, 1, 10);
      dispatcher.AdvanceClock(absl::ZeroDuration());
    }
    ASSERT_FALSE(connection.connecting());
    ASSERT_EQ(send(pair.peer, "goaway", 6, MSG_NOSIGNAL), 6);
    close(pair.peer);
    // The reset is in (the socket reports an error) before the write.
    pollfd p = {pair.ours, POLLIN, 0};
    for (int i = 0; i < 500 && !(p.revents & (POLLERR | POLLHUP)); ++i) poll(&p, 1, 10);
    ASSERT_TRUE(p.revents & (POLLERR | POLLHUP)) << p.revents;
    // Written before the read event runs.
    connection.Write("y");
    connection.Flush();
    if (read_first) {
      EXPECT_EQ(recorder.events, "read:goaway;reset;");
    } else {
      EXPECT_EQ(recorder.events, "reset;");
    }
    EXPECT_FALSE(connection.open());
  }
}

// A connected pair whose connect has completed, ready for a Connection made
// with connecting=false.
TcpPair ConnectedPair() {
  TcpPair pair;
  pollfd p = {pair.ours, POLLOUT, 0};
  EXPECT_EQ(poll(&p, 1, 5000), 1);
  return pair;
}

// Reads what the peer got until it has `size` bytes or 5 s pass, running
// the dispatcher's ready work between reads.
std::string ReadAtPeer(event::Dispatcher& dispatcher, int peer, size_t size) {
  std::string got;
  char buffer[65536];
  const absl::Time deadline = absl::Now() + absl::Seconds(5);
  while (got.size() < size && absl::Now() < deadline) {
    dispatcher.AdvanceClock(absl::ZeroDuration());
    pollfd p = {peer, POLLIN, 0};
    if (poll(&p, 1, 10) != 1) continue;
    ssize_t n = recv(peer, buffer, sizeof(buffer), MSG_DONTWAIT);
    if (n > 0) got.append(buffer, n);
  }
  return got;
}

// Where the kernel allows io_uring, a dispatcher batches its sends; where it
// does not, there is nothing to test.
#define REQUIRE_BATCHED_SENDS(dispatcher)                                        \
  if (std::string why = event::Dispatcher::BatchSendsUnavailable(); !why.empty()) { \
    GTEST_SKIP() << why;                                                         \
  }                                                                              \
  ASSERT_TRUE(dispatcher.batches_sends())

struct DrainRecorder : Recorder {
  using Recorder::Recorder;
  void OnWriteDrained() override {
    events += "drained;";
    if (on_drained) on_drained();
  }
  std::function<void()> on_drained;
};

// `n` connected plain connections, each with a DrainRecorder, on
// `dispatcher`; the peers' sockets are closed at the end.
struct DrainedConnections {
  DrainedConnections(event::Dispatcher& dispatcher, int n) {
    for (int i = 0; i < n; ++i) {
      pairs.push_back(ConnectedPair());
      connections.push_back(std::make_unique<Connection>(dispatcher, pairs[i].ours, false));
      recorders.push_back(std::make_unique<DrainRecorder>(connections[i].get()));
      connections[i]->SetCallbacks(recorders[i].get());
    }
  }
  ~DrainedConnections() {
    connections.clear();
    for (const TcpPair& pair : pairs) close(pair.peer);
  }
  std::vector<TcpPair> pairs;
  std::vector<std::unique_ptr<Connection>> connections;
  std::vector<std::unique_ptr<DrainRecorder>> recorders;
};

// The sends of a loop pass go out together: one io_uring_enter(2) for the
// three connections' bytes (when the kernel allows io_uring).
TEST(ConnectionTest, TheSendsOfALoopPassGoOutInOneBatch) {
  event::Dispatcher dispatcher;
  dispatcher.UseSimulatedClock();
  REQUIRE_BATCHED_SENDS(dispatcher);
  DrainedConnections drained(dispatcher, 3);
  auto& [pairs, connections, recorders] = drained;
  connections[0]->Write("one");
  connections[1]->Write2("tw", "o");
  connections[2]->Write("three");
  dispatcher.AdvanceClock(absl::ZeroDuration());
  EXPECT_EQ(dispatcher.send_batches(), 1u);
  EXPECT_EQ(dispatcher.batched_sends(), 3u);
  EXPECT_EQ(ReadAtPeer(dispatcher, pairs[0].peer, 3), "one");
  EXPECT_EQ(ReadAtPeer(dispatcher, pairs[1].peer, 3), "two");
  EXPECT_EQ(ReadAtPeer(dispatcher, pairs[2].peer, 5), "three");
  for (auto& r : recorders) EXPECT_EQ(r->events, "drained;");
  for (auto& c : connections) EXPECT_EQ(c->output_size(), 0u);
}

// A pass that sends to a peer on this host ends with one yield of the CPU,
// however many such sends it made; a pass that sends only to other peers,
// or sends nothing, yields none. The same with sends batched or made one by
// one; a dispatcher made with SetYieldToLocalPeers(false) never yields.
TEST(ConnectionTest, APassThatSendsToAPeerOnThisHostYieldsOnce) {
  for (bool batched : {true, false}) {
    for (bool yield : {true, false}) {
      SCOPED_TRACE(std::string(batched ? "batched" : "one by one") +
                   (yield ? ", yielding" : ", not yielding"));
      event::Dispatcher::SetBatchSends(batched);
      event::Dispatcher::SetYieldToLocalPeers(yield);
      event::Dispatcher dispatcher;
      event::Dispatcher::SetBatchSends(true);  // the defaults, for the tests after
      event::Dispatcher::SetYieldToLocalPeers(true);
      dispatcher.UseSimulatedClock();
      DrainedConnections drained(dispatcher, 3);
      auto& [pairs, connections, recorders] = drained;
      // 0 and 1: local peers; 2: a peer elsewhere, as far as it knows.
      connections[0]->SetPeerIsLocal(true);
      connections[1]->SetPeerIsLocal(true);
      dispatcher.AdvanceClock(absl::ZeroDuration());
      EXPECT_EQ(dispatcher.yields(), 0u) << "nothing sent";

      connections[2]->Write("elsewhere");
      dispatcher.AdvanceClock(absl::ZeroDuration());
      EXPECT_EQ(ReadAtPeer(dispatcher, pairs[2].peer, 9), "elsewhere");
      EXPECT_EQ(dispatcher.yields(), 0u) << "sent to a peer not on this host";

      connections[0]->Write("one");
      connections[1]->Write("two");
      connections[2]->Write("three");
      dispatcher.AdvanceClock(absl::ZeroDuration());
      EXPECT_EQ(ReadAtPeer(dispatcher, pairs[0].peer, 3), "one");
      EXPECT_EQ(ReadAtPeer(dispatcher, pairs[1].peer, 3), "two");
      EXPECT_EQ(ReadAtPeer(dispatcher, pairs[2].peer, 5), "three");
      EXPECT_EQ(dispatcher.yields(), yield ? 1u : 0u) << "two local sends in one pass";

      dispatcher.AdvanceClock(absl::ZeroDuration());
      EXPECT_EQ(dispatcher.yields(), yield ? 1u : 0u) << "a pass that sent nothing";
    }
  }
}

// A pass with more sends than the ring has entries (128): the full ring is
// submitted, the send that did not fit starts the next batch, and every
// connection's bytes go out once, through the ring.
TEST(ConnectionTest, MoreSendsThanTheRingHoldsGoInTwoBatches) {
  event::Dispatcher dispatcher;
  dispatcher.UseSimulatedClock();
  REQUIRE_BATCHED_SENDS(dispatcher);
  constexpr int kConnections = 130;
  std::vector<TcpPair> pairs;
  std::vector<std::unique_ptr<Connection>> connections;
  std::vector<std::unique_ptr<DrainRecorder>> recorders;
  for (int i = 0; i < kConnections; ++i) {
    pairs.push_back(ConnectedPair());
    connections.push_back(std::make_unique<Connection>(dispatcher, pairs[i].ours, false));
    recorders.push_back(std::make_unique<DrainRecorder>(connections[i].get()));
    connections[i]->SetCallbacks(recorders[i].get());
  }
  for (int i = 0; i < kConnections; ++i) connections[i]->Write("c" + std::to_string(i) + ";");
  dispatcher.AdvanceClock(absl::ZeroDuration());
  EXPECT_EQ(dispatcher.send_batches(), 2u);
  EXPECT_EQ(dispatcher.batched_sends(), static_cast<uint64_t>(kConnections));
  for (int i = 0; i < kConnections; ++i) {
    const std::string want = "c" + std::to_string(i) + ";";
    EXPECT_EQ(ReadAtPeer(dispatcher, pairs[i].peer, want.size()), want) << i;
    EXPECT_EQ(recorders[i]->events, "drained;") << i;
    EXPECT_EQ(connections[i]->output_size(), 0u) << i;
  }
  for (auto& p : pairs) close(p.peer);
}

// A batched send the socket takes only in part: the rest waits for the
// peer to read, in order, and the drain is reported once, at the end.
TEST(ConnectionTest, ABatchedSendTakenInPartGoesOnWhenThePeerReads) {
  event::Dispatcher dispatcher;
  dispatcher.UseSimulatedClock();
  REQUIRE_BATCHED_SENDS(dispatcher);
  TcpPair pair = ConnectedPair();
  Connection connection(dispatcher, pair.ours, false);
  DrainRecorder recorder(&connection);
  connection.SetCallbacks(&recorder);
  std::string big(8 << 20, '\0');
  for (size_t i = 0; i < big.size(); ++i) big[i] = static_cast<char>('a' + i % 23);
  connection.Write(big);
  dispatcher.AdvanceClock(absl::ZeroDuration());
  EXPECT_EQ(dispatcher.batched_sends(), 1u);
  EXPECT_GT(connection.output_size(), 0u);  // more than a socket buffer
  EXPECT_EQ(recorder.events, "");
  const std::string got = ReadAtPeer(dispatcher, pair.peer, big.size());
  EXPECT_EQ(got.size(), big.size());
  EXPECT_TRUE(got == big);
  EXPECT_EQ(recorder.events, "drained;");
  close(pair.peer);
}

// A batched send to a peer that reset fails the connection as a send(2)
// would: closed with a reset, no callback after.
TEST(ConnectionTest, ABatchedSendToAResetPeerClosesTheConnection) {
  event::Dispatcher dispatcher;
  dispatcher.UseSimulatedClock();
  REQUIRE_BATCHED_SENDS(dispatcher);
  TcpPair pair = ConnectedPair();
  // A byte the peer never reads: its close is a reset.
  ASSERT_EQ(send(pair.ours, "x", 1, MSG_NOSIGNAL), 1);
  Connection connection(dispatcher, pair.ours, false);
  Recorder recorder(&connection);
  connection.SetCallbacks(&recorder);
  connection.SetReadEnabled(false);  // the failure comes from the send
  close(pair.peer);
  pollfd p = {pair.ours, POLLIN, 0};
  for (int i = 0; i < 500 && !(p.revents & (POLLERR | POLLHUP)); ++i) poll(&p, 1, 10);
  ASSERT_TRUE(p.revents & (POLLERR | POLLHUP)) << p.revents;
  connection.Write("y");
  dispatcher.AdvanceClock(absl::ZeroDuration());
  EXPECT_EQ(dispatcher.batched_sends(), 1u);
  EXPECT_EQ(recorder.events, "reset;");
  EXPECT_FALSE(connection.open());
}

// Two connections, each with a DrainRecorder, on one dispatcher (simulated
// clock) that batches sends.
struct BatchOfTwo {
  BatchOfTwo() {
    dispatcher.UseSimulatedClock();
    for (int i = 0; i < 2; ++i) {
      pollfd p = {pairs[i].ours, POLLOUT, 0};
      EXPECT_EQ(poll(&p, 1, 5000), 1);  // connected
      connections[i] = std::make_unique<Connection>(dispatcher, pairs[i].ours, false);
      recorders[i] = std::make_unique<DrainRecorder>(connections[i].get());
      connections[i]->SetCallbacks(recorders[i].get());
    }
  }
  ~BatchOfTwo() {
    for (const TcpPair& pair : pairs) close(pair.peer);
  }
  event::Dispatcher dispatcher;
  TcpPair pairs[2];
  std::unique_ptr<Connection> connections[2];
  std::unique_ptr<DrainRecorder> recorders[2];
};

// A connection of the batch that an earlier one's callback destroys gets no
// call after its send: its result is dropped with it.
TEST(ConnectionTest, AConnectionDestroyedByAnEarlierOneOfItsBatchGetsNoCall) {
  BatchOfTwo batch;
  REQUIRE_BATCHED_SENDS(batch.dispatcher);
  batch.recorders[0]->on_drained = [&] { batch.connections[1].reset(); };
  batch.connections[0]->Write("first");
  batch.connections[1]->Write("second");
  batch.dispatcher.AdvanceClock(absl::ZeroDuration());
  EXPECT_EQ(batch.dispatcher.batched_sends(), 2u);
  EXPECT_EQ(batch.connections[1], nullptr);
  EXPECT_EQ(batch.recorders[0]->events, "drained;");
  EXPECT_EQ(batch.recorders[1]->events, "");
  EXPECT_EQ(ReadAtPeer(batch.dispatcher, batch.pairs[0].peer, 5), "first");
}

// A connection of the batch that an earlier one's callback flushes directly
// (an owner flushing before it closes): its bytes, sent with the batch
// already, are not sent again.
TEST(ConnectionTest, ABatchedSendFlushedAgainBeforeItsTurnIsNotSentTwice) {
  BatchOfTwo batch;
  REQUIRE_BATCHED_SENDS(batch.dispatcher);
  Connection& second = *batch.connections[1];
  batch.recorders[0]->on_drained = [&] {
    second.Write("+more");
    second.Flush();
  };
  batch.connections[0]->Write("first");
  second.Write("second");
  batch.dispatcher.AdvanceClock(absl::ZeroDuration());
  EXPECT_EQ(batch.dispatcher.batched_sends(), 2u);
  EXPECT_EQ(ReadAtPeer(batch.dispatcher, batch.pairs[0].peer, 5), "first");
  EXPECT_EQ(ReadAtPeer(batch.dispatcher, batch.pairs[1].peer, 11), "second+more");
  // Nothing more comes.
  char extra[64];
  EXPECT_EQ(recv(batch.pairs[1].peer, extra, sizeof(extra), MSG_DONTWAIT), -1);
  EXPECT_EQ(batch.recorders[1]->events, "drained;");
}

// The client's end of a TLS connection whose server end is a Connection on
// `dispatcher`: the handshake and reads run the dispatcher between steps.
struct TlsPeer {
  TlsPeer(event::Dispatcher& dispatcher, int fd) : dispatcher(dispatcher), fd(fd) {
    testing::CertificateSpec spec;
    spec.common_name = "backend";
    const testing::TestCertificate certificate = testing::MakeCertificate(spec);
    TlsServerConfig server_config;
    server_config.certificates.push_back(
        {certificate.certificate_pem, certificate.key_pem, {}});
    server_config.alpn_protocols = {"http/1.1"};
    auto server = TlsServerContext::Create(server_config);
    EXPECT_TRUE(server.ok()) << server.status();
    server_context = *server;
    TlsClientConfig client_config;
    client_config.verify = false;
    auto client_context = TlsClientContext::Create(client_config);
    EXPECT_TRUE(client_context.ok()) << client_context.status();
    client = (*client_context)->Create();
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
    client->Attach(fd);
  }
  // Both ends' handshakes, and the session tickets that follow.
  bool Handshake(const Connection& server) {
    bool done = false;
    const absl::Time deadline = absl::Now() + absl::Seconds(5);
    while (!(done && server.handshake_complete()) && absl::Now() < deadline) {
      if (!done) {
        const TransportSocket::Progress p = client->Handshake();
        if (p == TransportSocket::Progress::kFailed) return false;
        done = p == TransportSocket::Progress::kDone;
      }
      dispatcher.AdvanceClock(absl::ZeroDuration());
      pollfd p = {fd, POLLIN, 0};
      poll(&p, 1, 1);
    }
    return done && server.handshake_complete();
  }
  // What the client decrypts until it has `size` bytes or 5 s pass.
  std::string Read(size_t size) {
    std::string got;
    char buffer[16384];
    const absl::Time deadline = absl::Now() + absl::Seconds(5);
    while (got.size() < size && absl::Now() < deadline) {
      dispatcher.AdvanceClock(absl::ZeroDuration());
      const ssize_t n = client->Read(buffer, sizeof(buffer));
      if (n > 0) {
        got.append(buffer, static_cast<size_t>(n));
      } else {
        pollfd p = {fd, POLLIN, 0};
        poll(&p, 1, 1);
      }
    }
    return got;
  }
  event::Dispatcher& dispatcher;
  int fd;
  std::shared_ptr<TlsServerContext> server_context;
  std::unique_ptr<TransportSocket> client;
};

// A TLS connection's writes are encrypted at the end of the pass and go with
// the batch: one batched send, and the peer decrypts them whole. A write
// larger than is encrypted for one batch goes on through the socket, in
// order, as the peer reads; each is reported drained once.
TEST(ConnectionTest, TlsRecordsGoOutWithTheBatch) {
  event::Dispatcher dispatcher;
  dispatcher.UseSimulatedClock();
  REQUIRE_BATCHED_SENDS(dispatcher);
  TcpPair pair = ConnectedPair();
  TlsPeer peer(dispatcher, pair.peer);
  Connection connection(dispatcher, pair.ours, false, peer.server_context->Create());
  DrainRecorder recorder(&connection);
  connection.SetCallbacks(&recorder);
  ASSERT_TRUE(peer.Handshake(connection));
  const uint64_t before = dispatcher.batched_sends();
  connection.Write("hello");
  dispatcher.AdvanceClock(absl::ZeroDuration());
  EXPECT_EQ(dispatcher.batched_sends(), before + 1);
  EXPECT_EQ(peer.Read(5), "hello");
  EXPECT_EQ(recorder.events, "drained;");
  EXPECT_EQ(connection.output_size(), 0u);

  std::string big(4 << 20, '\0');
  for (size_t i = 0; i < big.size(); ++i) big[i] = static_cast<char>('a' + i % 23);
  connection.Write(big);
  dispatcher.AdvanceClock(absl::ZeroDuration());
  EXPECT_EQ(dispatcher.batched_sends(), before + 2);
  EXPECT_GT(connection.output_size(), 0u);
  const std::string got = peer.Read(big.size());
  EXPECT_EQ(got.size(), big.size());
  EXPECT_TRUE(got == big);
  EXPECT_EQ(recorder.events, "drained;drained;");
  close(pair.peer);
}

// Where the kernel allows io_uring, a dispatcher batches the reads of the
// sockets a loop pass finds readable too.
#define REQUIRE_BATCHED_READS(dispatcher) \
  REQUIRE_BATCHED_SENDS(dispatcher);      \
  ASSERT_TRUE(dispatcher.batches_reads())

struct ReadRecorder : Recorder {
  using Recorder::Recorder;
  void OnReadable() override {
    Recorder::OnReadable();
    if (on_read) on_read();
  }
  std::function<void()> on_read;
};

// `n` connected plain connections, each with a ReadRecorder, on one
// dispatcher (simulated clock).
struct ReadBatch {
  explicit ReadBatch(int n) {
    dispatcher.UseSimulatedClock();
    for (int i = 0; i < n; ++i) {
      pairs.push_back(ConnectedPair());
      connections.push_back(std::make_unique<Connection>(dispatcher, pairs[i].ours, false));
      recorders.push_back(std::make_unique<ReadRecorder>(connections[i].get()));
      connections[i]->SetCallbacks(recorders[i].get());
    }
  }
  ~ReadBatch() {
    connections.clear();
    for (const TcpPair& pair : pairs) close(pair.peer);
  }
  // The peer of connection `i` sends `bytes`, and they are there to read.
  void PeerSends(int i, const std::string& bytes) {
    ASSERT_EQ(send(pairs[i].peer, bytes.data(), bytes.size(), MSG_NOSIGNAL),
              static_cast<ssize_t>(bytes.size()));
    pollfd p = {pairs[i].ours, POLLIN, 0};
    ASSERT_EQ(poll(&p, 1, 5000), 1);
  }
  event::Dispatcher dispatcher;
  std::vector<TcpPair> pairs;
  std::vector<std::unique_ptr<Connection>> connections;
  std::vector<std::unique_ptr<ReadRecorder>> recorders;
};

// The sockets a pass finds readable are read together: one io_uring_enter(2)
// for the three reads, each connection handed its own bytes; a peer's close
// is read the same way, as the end of the stream.
TEST(ConnectionTest, TheReadsOfALoopPassAreMadeInOneBatch) {
  ReadBatch batch(3);
  REQUIRE_BATCHED_READS(batch.dispatcher);
  batch.PeerSends(0, "one");
  batch.PeerSends(1, "two");
  batch.PeerSends(2, "three");
  batch.dispatcher.AdvanceClock(absl::ZeroDuration());
  EXPECT_EQ(batch.dispatcher.recv_batches(), 1u);
  EXPECT_EQ(batch.dispatcher.batched_recvs(), 3u);
  EXPECT_EQ(batch.recorders[0]->events, "read:one;");
  EXPECT_EQ(batch.recorders[1]->events, "read:two;");
  EXPECT_EQ(batch.recorders[2]->events, "read:three;");
  for (int i = 0; i < 3; ++i) EXPECT_EQ(batch.connections[i]->bytes_read(), i == 2 ? 5u : 3u);
  for (int i = 0; i < 3; ++i) shutdown(batch.pairs[i].peer, SHUT_WR);
  for (int i = 0; i < 3; ++i) {
    pollfd p = {batch.pairs[i].ours, POLLIN, 0};
    ASSERT_EQ(poll(&p, 1, 5000), 1);
  }
  batch.dispatcher.AdvanceClock(absl::ZeroDuration());
  EXPECT_EQ(batch.dispatcher.recv_batches(), 2u);
  EXPECT_EQ(batch.dispatcher.batched_recvs(), 6u);
  for (int i = 0; i < 3; ++i) {
    EXPECT_TRUE(absl::EndsWith(batch.recorders[i]->events, ";closed;")) << i;
    EXPECT_FALSE(batch.connections[i]->open()) << i;
  }
}

// More than one read's room (16 KiB) waiting: the batched read takes the
// first part, the rest is read on at once, and it is all handed on together.
TEST(ConnectionTest, WhatABatchedReadLeavesIsReadOnInTheSamePass) {
  ReadBatch batch(1);
  REQUIRE_BATCHED_READS(batch.dispatcher);
  std::string big(40000, 'b');
  for (size_t i = 0; i < big.size(); i += 1000) big[i] = static_cast<char>('0' + i / 1000 % 10);
  batch.PeerSends(0, big);
  batch.dispatcher.AdvanceClock(absl::ZeroDuration());
  EXPECT_EQ(batch.dispatcher.batched_recvs(), 1u);
  EXPECT_EQ(batch.recorders[0]->events, "read:" + big + ";");
}

// A connection of the read batch that an earlier one's callback destroys:
// its read was made with the batch, and it gets no call.
TEST(ConnectionTest, AConnectionDestroyedByAnEarlierOneOfItsReadBatchGetsNoCall) {
  ReadBatch batch(2);
  REQUIRE_BATCHED_READS(batch.dispatcher);
  // Whichever is handed its bytes first destroys the other.
  for (int i = 0; i < 2; ++i) {
    batch.recorders[i]->on_read = [&batch, other = 1 - i] { batch.connections[other].reset(); };
  }
  batch.PeerSends(0, "zero");
  batch.PeerSends(1, "one");
  batch.dispatcher.AdvanceClock(absl::ZeroDuration());
  EXPECT_EQ(batch.dispatcher.batched_recvs(), 2u);
  const int survivor = batch.connections[0] != nullptr ? 0 : 1;
  ASSERT_NE(batch.connections[survivor], nullptr);
  EXPECT_EQ(batch.connections[1 - survivor], nullptr);
  EXPECT_EQ(batch.recorders[survivor]->events, survivor == 0 ? "read:zero;" : "read:one;");
  EXPECT_EQ(batch.recorders[1 - survivor]->events, "");
}

// A connection whose reading an earlier one's callback stops (back-pressure):
// its read was made with the batch, but what it read is not handed on until
// reading resumes, and then without another read.
TEST(ConnectionTest, AConnectionWhoseReadingStopsBeforeItsBatchIsNotReadUntilItResumes) {
  ReadBatch batch(2);
  REQUIRE_BATCHED_READS(batch.dispatcher);
  for (int i = 0; i < 2; ++i) {
    batch.recorders[i]->on_read = [&batch, other = 1 - i] {
      batch.connections[other]->SetReadEnabled(false);
    };
  }
  batch.PeerSends(0, "zero");
  batch.PeerSends(1, "one");
  batch.dispatcher.AdvanceClock(absl::ZeroDuration());
  EXPECT_EQ(batch.dispatcher.batched_recvs(), 2u);
  const int first = batch.recorders[0]->events.empty() ? 1 : 0;
  const int second = 1 - first;
  EXPECT_EQ(batch.recorders[first]->events, first == 0 ? "read:zero;" : "read:one;");
  EXPECT_EQ(batch.recorders[second]->events, "");
  EXPECT_EQ(batch.connections[second]->bytes_read(), 0u);
  batch.recorders[second]->on_read = nullptr;
  batch.dispatcher.AdvanceClock(absl::ZeroDuration());  // still stopped: nothing
  EXPECT_EQ(batch.recorders[second]->events, "");
  batch.connections[second]->SetReadEnabled(true);
  batch.dispatcher.AdvanceClock(absl::ZeroDuration());
  EXPECT_EQ(batch.dispatcher.batched_recvs(), 2u);
  EXPECT_EQ(batch.recorders[second]->events, second == 0 ? "read:zero;" : "read:one;");
  EXPECT_EQ(batch.connections[second]->bytes_read(), second == 0 ? 4u : 3u);
  // Reading goes on as before: the next bytes come with a new read.
  batch.PeerSends(second, "more");
  batch.dispatcher.AdvanceClock(absl::ZeroDuration());
  EXPECT_EQ(batch.dispatcher.batched_recvs(), 3u);
  EXPECT_TRUE(absl::EndsWith(batch.recorders[second]->events, ";read:more;"));
}

// A TLS connection's socket is read with the batch too: the records the
// batched recv took are decrypted from the transport's buffer, whole, in
// order, also when a pass brings more than one read's room.
TEST(ConnectionTest, TlsRecordsAreReadWithTheBatch) {
  event::Dispatcher dispatcher;
  dispatcher.UseSimulatedClock();
  REQUIRE_BATCHED_READS(dispatcher);
  TcpPair pair = ConnectedPair();
  TlsPeer peer(dispatcher, pair.peer);
  Connection connection(dispatcher, pair.ours, false, peer.server_context->Create());
  std::string got;
  struct Collector : ConnectionCallbacks {
    void OnReadable() override {
      got->append(connection->input().view());
      connection->input().Drain(connection->input().size());
    }
    void OnClosed(CloseReason, int) override { closed = true; }
    Connection* connection;
    std::string* got;
    bool closed = false;
  } collector;
  collector.connection = &connection;
  collector.got = &got;
  connection.SetCallbacks(&collector);
  ASSERT_TRUE(peer.Handshake(connection));
  const uint64_t before = dispatcher.batched_recvs();
  ASSERT_EQ(peer.client->Write("ping", 4), 4);
  pollfd p = {pair.ours, POLLIN, 0};
  ASSERT_EQ(poll(&p, 1, 5000), 1);
  dispatcher.AdvanceClock(absl::ZeroDuration());
  EXPECT_EQ(dispatcher.batched_recvs(), before + 1);
  EXPECT_EQ(got, "ping");

  got.clear();
  std::string big(1 << 20, '\0');
  for (size_t i = 0; i < big.size(); ++i) big[i] = static_cast<char>('a' + i % 29);
  size_t sent = 0;
  const absl::Time deadline = absl::Now() + absl::Seconds(10);
  while (got.size() < big.size() && absl::Now() < deadline) {
    if (sent < big.size()) {
      const ssize_t n = peer.client->Write(big.data() + sent, big.size() - sent);
      if (n > 0) sent += static_cast<size_t>(n);
    }
    dispatcher.AdvanceClock(absl::ZeroDuration());
    if (got.size() < sent) {
      pollfd q = {pair.ours, POLLIN, 0};
      poll(&q, 1, 1);
    }
  }
  EXPECT_EQ(got.size(), big.size());
  EXPECT_TRUE(got == big);
  EXPECT_GT(dispatcher.batched_recvs(), before + 1);
  EXPECT_FALSE(collector.closed);
  // The peer's close_notify and FIN, read with the batch: the end.
  peer.client->Shutdown();
  shutdown(pair.peer, SHUT_WR);
  for (int i = 0; i < 500 && !collector.closed; ++i) {
    pollfd q = {pair.ours, POLLIN, 0};
    poll(&q, 1, 10);
    dispatcher.AdvanceClock(absl::ZeroDuration());
  }
  EXPECT_TRUE(collector.closed);
  close(pair.peer);
}

}  // namespace
}  // namespace sluice::net
