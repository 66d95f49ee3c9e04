// discovery_sim: many simulated proxies on sluice-control's config stream
// (sluice.discovery.v1.DiscoveryService/StreamConfig), to measure the control
// plane with 1,000 proxies connected without running 1,000 sluice-proxy
// processes.
//
//   discovery_sim --control-plane 127.0.0.1:18291 --streams 1000
//       [--node-prefix sim-] [--group G] [--channels N | --channel-per-stream]
//       [--threads 2] [--ack-delay-us 0] [--exit-after-version V] [--timeout
//       120]
//
// Each stream is one proxy: its first request carries node {id: <prefix><i>,
// group} and holds nothing (version 0). Every response with a nonce is ACKed
// (version_applied = its version, response_nonce = its nonce) as soon as it
// is read, or --ack-delay-us later to stand in for a proxy's apply time. The
// config is never parsed beyond `version` and `nonce`: the simulator costs
// the control plane what a proxy costs it, and almost nothing itself.
// Responses without a nonce (cache purges, rate-limit leases) are not
// answered (a purge therefore reports these proxies as not confirming).
//
// Streams are spread over --channels gRPC channels (default one per 100
// streams), each its own TCP connection; --channel-per-stream gives every
// stream its own, like real proxies. All streams are driven by --threads
// threads, each draining one completion queue.
//
// Output on stdout, one line per event, for scripts:
//   all N streams hold version V after X ms (M MiB of responses read)
//       once, when every stream has ACKed its first config (X counts from
//       the start of the simulator; M is what all streams read until then);
//   all N streams hold version V at unix_ms T (D ms after the first stream
//   received it)
//       for every later version: T is the wall clock when the last stream's
//       ACK was written, so a caller can subtract the time its own apply
//       began or returned. A stream that receives a later version before
//       ACKing V counts as holding V.
// Errors go to stderr. Exit status: 0 once every stream has ACKed
// --exit-after-version (or a later version); 1 when a stream is ended by the
// control plane or cannot connect (naming the node and the gRPC status), or
// when --timeout seconds pass before every stream ACKed --exit-after-version
// (the timeout counts only with it); 2 for bad flags. Without
// --exit-after-version it runs until a stream fails or it is killed
// (SIGTERM/SIGINT end it with their default action).
//
// Versions from a different store (a control plane whose data dir was reset)
// are taken as they come; the per-version lines assume one store.

#include <google/protobuf/io/coded_stream.h>
#include <google/protobuf/wire_format_lite.h>
#include <grpcpp/alarm.h>
#include <grpcpp/generic/generic_stub.h>
#include <grpcpp/grpcpp.h>
#include <grpcpp/support/proto_buffer_reader.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "api/discovery.h"
#include "common/flags.h"
#include "sluice/discovery/v1/discovery.pb.h"

namespace sluice::tools {
namespace {

constexpr char kStreamConfigMethod[] =
    "/sluice.discovery.v1.DiscoveryService/StreamConfig";
// Streams per channel when --channels is not given.
constexpr int kDefaultStreamsPerChannel = 100;
constexpr int kMaxStreams = 100000;
constexpr int kMaxThreads = 64;
// How long the exit path waits for cancelled streams to wind down before it
// leaves without them.
constexpr absl::Duration kDrainLimit = absl::Seconds(10);

struct Options {
  std::string control_plane;
  int streams = 0;
  std::string node_prefix = "sim-";
  std::string group;
  int channels = 0;  // 0: one per kDefaultStreamsPerChannel streams
  int threads = 2;
  absl::Duration ack_delay;
  std::optional<uint64_t> exit_after_version;
  absl::Duration timeout = absl::Seconds(120);
};

constexpr char kUsage[] =
    "usage: discovery_sim --control-plane HOST:PORT --streams N [--node-prefix "
    "sim-]\n"
    "                     [--group G] [--channels N | --channel-per-stream] "
    "[--threads 2]\n"
    "                     [--ack-delay-us 0] [--exit-after-version V] "
    "[--timeout 120]\n";

absl::StatusOr<Options> ParseOptions(int argc, char** argv) {
  absl::StatusOr<ParsedFlags> flags = ParseFlags(
      argc, argv,
      {"control-plane", "streams", "node-prefix", "group", "channels",
       "threads", "ack-delay-us", "exit-after-version", "timeout"},
      {"channel-per-stream"});
  if (!flags.ok()) return flags.status();
  Options options;
  auto& values = flags->values;
  if (!flags->positional.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat("unexpected argument \"", flags->positional[0], "\""));
  }
  if (!values.count("control-plane") || values["control-plane"].empty()) {
    return absl::InvalidArgumentError("--control-plane HOST:PORT is required");
  }
  options.control_plane = values["control-plane"];
  // Reads an integer flag in [low, high], naming the flag in the error.
  auto integer = [&](const std::string& name, int64_t low, int64_t high,
                     int64_t* out) -> absl::Status {
    if (!values.count(name)) return absl::OkStatus();
    if (!absl::SimpleAtoi(values[name], out) || *out < low || *out > high) {
      return absl::InvalidArgumentError(
          absl::StrCat("--", name, " must be an integer in ", low, "..", high,
                       ", not \"", values[name], "\""));
    }
    return absl::OkStatus();
  };
  int64_t streams = 0, channels = 0, threads = options.threads, delay_us = 0,
          version = 0, timeout_s = absl::ToInt64Seconds(options.timeout);
  if (!values.count("streams"))
    return absl::InvalidArgumentError("--streams N is required");
  for (absl::Status status :
       {integer("streams", 1, kMaxStreams, &streams),
        integer("channels", 1, kMaxStreams, &channels),
        integer("threads", 1, kMaxThreads, &threads),
        integer("ack-delay-us", 0, 60'000'000, &delay_us),
        integer("exit-after-version", 1, INT64_MAX, &version),
        integer("timeout", 1, 86400, &timeout_s)}) {
    if (!status.ok()) return status;
  }
  options.streams = static_cast<int>(streams);
  options.threads = static_cast<int>(threads);
  options.ack_delay = absl::Microseconds(delay_us);
  options.timeout = absl::Seconds(timeout_s);
  if (values.count("exit-after-version")) options.exit_after_version = version;
  if (values.count("node-prefix")) options.node_prefix = values["node-prefix"];
  if (values.count("group")) options.group = values["group"];
  if (flags->switches.count("channel-per-stream")) {
    if (values.count("channels")) {
      return absl::InvalidArgumentError(
          "--channels and --channel-per-stream exclude each other");
    }
    channels = streams;
  } else if (!values.count("channels")) {
    channels =
        (streams + kDefaultStreamsPerChannel - 1) / kDefaultStreamsPerChannel;
  }
  options.channels = static_cast<int>(std::min(channels, streams));
  return options;
}

// Which versions every stream holds, and when they got there. Called from
// the completion-queue threads (any of them); the lines it prints and the
// outcome main() waits on are under one mutex.
class VersionTracker {
 public:
  enum class Outcome { kRunning, kReached, kFailed };

  VersionTracker(int streams, std::optional<uint64_t> exit_after_version)
      : streams_(streams),
        exit_after_version_(exit_after_version),
        acked_(streams, 0) {}

  // A stream read a response of `bytes` (any kind).
  void CountBytes(size_t bytes) {
    bytes_received_.fetch_add(bytes, std::memory_order_relaxed);
  }

  // A stream read a config response of `version`.
  void Received(uint64_t version) {
    absl::Time now = absl::Now();
    absl::MutexLock lock(&mu_);
    if (version <= all_hold_ || pending_.count(version)) return;
    // Streams that skipped ahead (versions coalesced) already hold it.
    int holding = static_cast<int>(
        std::count_if(acked_.begin(), acked_.end(),
                      [&](uint64_t v) { return v >= version; }));
    pending_[version] = Pending{now, holding};
  }

  // Stream `index`'s ACK of `version` has been written.
  void Acked(int index, uint64_t version) {
    absl::Time now = absl::Now();
    absl::MutexLock lock(&mu_);
    uint64_t before = acked_[index];
    acked_[index] = version;
    if (version <= before) return;  // another store's numbering: not tracked
    for (auto it = pending_.upper_bound(before);
         it != pending_.end() && it->first <= version;) {
      if (++it->second.holding < streams_) {
        ++it;
        continue;
      }
      Report(it->first, it->second.first_received, now);
      all_hold_ = it->first;
      it = pending_.erase(it);
    }
    if (exit_after_version_.has_value() && all_hold_ >= *exit_after_version_ &&
        outcome_ == Outcome::kRunning) {
      outcome_ = Outcome::kReached;
    }
  }

  // A stream ended while the simulator still ran.
  void Failed(const std::string& node_id, const grpc::Status& status) {
    std::fprintf(
        stderr, "discovery_sim: stream of node %s ended: %s (gRPC code %d)\n",
        node_id.c_str(),
        status.error_message().empty() ? "no message"
                                       : status.error_message().c_str(),
        static_cast<int>(status.error_code()));
    absl::MutexLock lock(&mu_);
    if (outcome_ == Outcome::kRunning) outcome_ = Outcome::kFailed;
  }

  // Waits until the run is decided or `deadline` passes (then kRunning).
  Outcome Await(absl::Time deadline) {
    absl::MutexLock lock(&mu_);
    mu_.AwaitWithDeadline(absl::Condition(this, &VersionTracker::Decided),
                          deadline);
    return outcome_;
  }

  uint64_t all_hold() {
    absl::MutexLock lock(&mu_);
    return all_hold_;
  }

 private:
  struct Pending {
    absl::Time first_received;
    int holding = 0;  // streams that have ACKed it or a later version
  };

  bool Decided() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return outcome_ != Outcome::kRunning;
  }

  void Report(uint64_t version, absl::Time first_received, absl::Time now)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (!reported_first_) {
      reported_first_ = true;
      std::printf(
          "all %d streams hold version %llu after %lld ms (%.1f MiB of "
          "responses read)\n",
          streams_, static_cast<unsigned long long>(version),
          static_cast<long long>(absl::ToInt64Milliseconds(now - started_)),
          static_cast<double>(bytes_received_.load()) / (1 << 20));
    } else {
      std::printf(
          "all %d streams hold version %llu at unix_ms %lld (%lld ms after the "
          "first "
          "stream received it)\n",
          streams_, static_cast<unsigned long long>(version),
          static_cast<long long>(absl::ToUnixMillis(now)),
          static_cast<long long>(
              absl::ToInt64Milliseconds(now - first_received)));
    }
    std::fflush(stdout);
  }

  const int streams_;
  const std::optional<uint64_t> exit_after_version_;
  const absl::Time started_ = absl::Now();
  std::atomic<uint64_t> bytes_received_{0};
  absl::Mutex mu_;
  std::vector<uint64_t> acked_ ABSL_GUARDED_BY(mu_);  // per stream
  std::map<uint64_t, Pending> pending_ ABSL_GUARDED_BY(mu_);
  uint64_t all_hold_ ABSL_GUARDED_BY(mu_) = 0;
  bool reported_first_ ABSL_GUARDED_BY(mu_) = false;
  Outcome outcome_ ABSL_GUARDED_BY(mu_) = Outcome::kRunning;
};

// What the simulator reads of a DiscoveryResponse: its version and nonce,
// scanned from the wire without parsing the resources.
struct ResponseHeader {
  uint64_t version = 0;
  std::string nonce;
};

std::optional<ResponseHeader> ScanResponse(grpc::ByteBuffer* buffer) {
  using google::protobuf::internal::WireFormatLite;
  grpc::ProtoBufferReader reader(buffer);
  google::protobuf::io::CodedInputStream input(&reader);
  ResponseHeader header;
  while (uint32_t tag = input.ReadTag()) {
    const int field = WireFormatLite::GetTagFieldNumber(tag);
    const auto type = WireFormatLite::GetTagWireType(tag);
    if (field == discovery::v1::DiscoveryResponse::kVersionFieldNumber &&
        type == WireFormatLite::WIRETYPE_VARINT) {
      if (!input.ReadVarint64(&header.version)) return std::nullopt;
    } else if (field == discovery::v1::DiscoveryResponse::kNonceFieldNumber &&
               type == WireFormatLite::WIRETYPE_LENGTH_DELIMITED) {
      if (!WireFormatLite::ReadString(&input, &header.nonce))
        return std::nullopt;
    } else if (!WireFormatLite::SkipField(&input, tag)) {
      return std::nullopt;
    }
  }
  if (!input.ConsumedEntireMessage()) return std::nullopt;
  return header;
}

grpc::ByteBuffer Encode(const discovery::v1::DiscoveryRequest& request) {
  grpc::Slice slice(request.SerializeAsString());
  return grpc::ByteBuffer(&slice, 1);
}

// One simulated proxy: one StreamConfig call driven by the events of one
// completion queue, so only that queue's thread touches it (Cancel() is the
// exception, and thread-safe). Every operation in flight holds one of the
// tags below; the stream is finished once Finish() has completed and no
// operation is in flight.
class SimulatedStream {
 public:
  enum class Op { kStart, kRead, kWrite, kAlarm, kFinish };
  struct Tag {
    SimulatedStream* stream;
    Op op;
  };

  SimulatedStream(int index, std::string node_id, VersionTracker* tracker,
                  absl::Duration ack_delay, std::atomic<int>* finished)
      : index_(index),
        node_id_(std::move(node_id)),
        tracker_(tracker),
        ack_delay_(ack_delay),
        finished_(finished) {}

  void Begin(grpc::GenericStub* stub, grpc::CompletionQueue* cq,
             const std::string& group) {
    cq_ = cq;
    // Waits for the control plane to come up instead of failing at once.
    context_.set_wait_for_ready(true);
    call_ = stub->PrepareCall(&context_, kStreamConfigMethod, cq);
    discovery::v1::DiscoveryRequest hello;
    hello.mutable_node()->set_id(node_id_);
    hello.mutable_node()->set_group(group);
    hello.mutable_node()->set_build_version("discovery_sim");
    // Like sluice-proxy: a one-route change comes as a RouteTablePatch.
    hello.mutable_node()->add_client_features(sluice::api::kFeatureRouteTablePatch);
    pending_write_ = Encode(hello);
    ++in_flight_;
    call_->StartCall(&start_tag_);
  }

  void Cancel() { context_.TryCancel(); }

  // One completion-queue event for this stream.
  void Handle(Op op, bool ok) {
    --in_flight_;
    switch (op) {
      case Op::kStart:
        if (!ok) {
          StartFinish();
          break;
        }
        WriteNext();
        ReadNext();
        break;
      case Op::kRead:
        if (!ok) {
          StartFinish();
          break;
        }
        OnResponse();
        ReadNext();
        break;
      case Op::kWrite:
        writing_ = false;
        if (!ok) break;  // the call is over; the read fails too and finishes it
        if (writing_version_ != 0) tracker_->Acked(index_, writing_version_);
        WriteNext();
        break;
      case Op::kAlarm:
        alarm_pending_ = false;
        if (ok && !finishing_) QueueAck(delayed_version_, delayed_nonce_);
        break;
      case Op::kFinish:
        finish_done_ = true;
        if (!stopping_.load() && !failure_reported_)
          tracker_->Failed(node_id_, status_);
        break;
    }
    if (finish_done_ && in_flight_ == 0 && !counted_) {
      counted_ = true;
      finished_->fetch_add(1);
    }
  }

  void set_stopping() { stopping_.store(true); }

 private:
  void ReadNext() {
    ++in_flight_;
    call_->Read(&read_buffer_, &read_tag_);
  }

  void OnResponse() {
    tracker_->CountBytes(read_buffer_.Length());
    std::optional<ResponseHeader> header = ScanResponse(&read_buffer_);
    read_buffer_.Clear();
    if (!header.has_value()) {
      tracker_->Failed(
          node_id_,
          grpc::Status(grpc::StatusCode::INTERNAL,
                       "the control plane sent an unparsable response"));
      failure_reported_ = true;
      Cancel();
      return;
    }
    // Purges and leases carry no nonce and are not answered.
    if (header->nonce.empty()) return;
    tracker_->Received(header->version);
    if (ack_delay_ == absl::ZeroDuration()) {
      QueueAck(header->version, std::move(header->nonce));
      return;
    }
    // The control plane sends one unanswered config response at a time, so
    // at most one ACK waits here.
    delayed_version_ = header->version;
    delayed_nonce_ = std::move(header->nonce);
    ++in_flight_;
    alarm_pending_ = true;
    // A fresh alarm each time: the previous one has fired.
    alarm_ = std::make_unique<grpc::Alarm>();
    alarm_->Set(cq_, absl::ToChronoTime(absl::Now() + ack_delay_), &alarm_tag_);
  }

  void QueueAck(uint64_t version, std::string nonce) {
    discovery::v1::DiscoveryRequest ack;
    ack.set_version_applied(version);
    ack.set_response_nonce(std::move(nonce));
    pending_write_ = Encode(ack);
    pending_version_ = version;
    WriteNext();
  }

  // Writes the waiting request unless a write is in flight (then its
  // completion calls this again).
  void WriteNext() {
    if (writing_ || !pending_write_.has_value() || finishing_) return;
    writing_ = true;
    writing_version_ = pending_version_;
    ++in_flight_;
    call_->Write(*pending_write_, &write_tag_);
    pending_write_.reset();
  }

  void StartFinish() {
    if (finishing_) return;
    finishing_ = true;
    if (alarm_pending_) alarm_->Cancel();
    ++in_flight_;
    call_->Finish(&status_, &finish_tag_);
  }

  const int index_;
  const std::string node_id_;
  VersionTracker* const tracker_;
  const absl::Duration ack_delay_;
  std::atomic<int>* const finished_;
  std::atomic<bool> stopping_{false};
  grpc::CompletionQueue* cq_ = nullptr;
  grpc::ClientContext context_;
  std::unique_ptr<grpc::GenericClientAsyncReaderWriter> call_;
  Tag start_tag_{this, Op::kStart};
  Tag read_tag_{this, Op::kRead};
  Tag write_tag_{this, Op::kWrite};
  Tag alarm_tag_{this, Op::kAlarm};
  Tag finish_tag_{this, Op::kFinish};
  grpc::ByteBuffer read_buffer_;
  std::optional<grpc::ByteBuffer> pending_write_;
  uint64_t pending_version_ = 0;  // 0: the first request, not an ACK
  uint64_t writing_version_ = 0;
  bool writing_ = false;
  std::unique_ptr<grpc::Alarm> alarm_;
  bool alarm_pending_ = false;
  uint64_t delayed_version_ = 0;
  std::string delayed_nonce_;
  bool finishing_ = false;
  bool failure_reported_ = false;
  bool finish_done_ = false;
  bool counted_ = false;
  int in_flight_ = 0;
  grpc::Status status_;
};

void DrainQueue(grpc::CompletionQueue* cq) {
  void* raw = nullptr;
  bool ok = false;
  while (cq->Next(&raw, &ok)) {
    auto* tag = static_cast<SimulatedStream::Tag*>(raw);
    tag->stream->Handle(tag->op, ok);
  }
}

int Run(const Options& options) {
  VersionTracker tracker(options.streams, options.exit_after_version);
  std::vector<std::unique_ptr<grpc::CompletionQueue>> queues;
  for (int i = 0; i < options.threads; ++i) {
    queues.push_back(std::make_unique<grpc::CompletionQueue>());
  }
  std::vector<std::unique_ptr<grpc::GenericStub>> stubs;
  for (int i = 0; i < options.channels; ++i) {
    grpc::ChannelArguments args;
    // Its own subchannel, hence its own TCP connection: channels with equal
    // arguments would otherwise share one.
    args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
    args.SetMaxReceiveMessageSize(api::kMaxMessageBytes);
    args.SetMaxSendMessageSize(api::kMaxMessageBytes);
    stubs.push_back(
        std::make_unique<grpc::GenericStub>(grpc::CreateCustomChannel(
            options.control_plane, grpc::InsecureChannelCredentials(), args)));
  }
  std::atomic<int> finished{0};
  std::vector<std::unique_ptr<SimulatedStream>> streams;
  for (int i = 0; i < options.streams; ++i) {
    streams.push_back(std::make_unique<SimulatedStream>(
        i, absl::StrCat(options.node_prefix, i + 1), &tracker,
        options.ack_delay, &finished));
  }
  // Begun before the threads drain the queues, so each stream's first event
  // comes after Begin() returned.
  for (int i = 0; i < options.streams; ++i) {
    streams[i]->Begin(stubs[i % options.channels].get(),
                      queues[i % options.threads].get(), options.group);
  }
  std::vector<std::thread> threads;
  for (auto& queue : queues) threads.emplace_back(DrainQueue, queue.get());

  VersionTracker::Outcome outcome = tracker.Await(
      options.exit_after_version.has_value() ? absl::Now() + options.timeout
                                             : absl::InfiniteFuture());
  int code = 0;
  if (outcome == VersionTracker::Outcome::kRunning) {
    std::fprintf(stderr,
                 "discovery_sim: not every stream ACKed version %llu within "
                 "--timeout %lld s "
                 "(all %d hold version %llu)\n",
                 static_cast<unsigned long long>(*options.exit_after_version),
                 static_cast<long long>(absl::ToInt64Seconds(options.timeout)),
                 options.streams,
                 static_cast<unsigned long long>(tracker.all_hold()));
    code = 1;
  } else if (outcome == VersionTracker::Outcome::kFailed) {
    code = 1;
  }

  // Cancel every call and wait for the queues to hand back their operations
  // before the queues go.
  for (auto& stream : streams) stream->set_stopping();
  for (auto& stream : streams) stream->Cancel();
  const absl::Time drain_deadline = absl::Now() + kDrainLimit;
  while (finished.load() < options.streams && absl::Now() < drain_deadline) {
    absl::SleepFor(absl::Milliseconds(10));
  }
  if (finished.load() < options.streams) {
    std::fprintf(
        stderr,
        "discovery_sim: %d streams did not end within %lld s; leaving\n",
        options.streams - finished.load(),
        static_cast<long long>(absl::ToInt64Seconds(kDrainLimit)));
    std::fflush(stdout);
    std::_Exit(code);
  }
  for (auto& queue : queues) queue->Shutdown();
  for (auto& thread : threads) thread.join();
  return code;
}

}  // namespace
}  // namespace sluice::tools

int main(int argc, char** argv) {
  absl::StatusOr<sluice::tools::Options> options =
      sluice::tools::ParseOptions(argc, argv);
  if (!options.ok()) {
    std::fprintf(stderr, "discovery_sim: %s\n%s",
                 std::string(options.status().message()).c_str(),
                 sluice::tools::kUsage);
    return 2;
  }
  return sluice::tools::Run(*options);
}
