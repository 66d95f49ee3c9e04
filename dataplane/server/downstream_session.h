// DownstreamSession: one client connection as its worker sees it, whatever
// protocol it speaks (DownstreamConnection for HTTP/1, Http2Session for
// HTTP/2). The worker keeps its sessions to drain them and to tell them of a
// new config.
//
// Worker thread only.
#ifndef SLUICE_DATAPLANE_SERVER_DOWNSTREAM_SESSION_H_
#define SLUICE_DATAPLANE_SERVER_DOWNSTREAM_SESSION_H_

#include <memory>

#include <string>

#include "dataplane/accesslog/access_log.h"
#include "dataplane/config/snapshot.h"
#include "dataplane/event/dispatcher.h"
#include "dataplane/net/transport_socket.h"

namespace sluice::server {

class DownstreamSession : public event::DeferredDeletable {
 public:
  // Finish what is in flight, take nothing new, then close.
  virtual void StartDrain() = 0;
  // A new config version (`previous` was the one before): drain if the
  // session's listener is gone, serving what comes meanwhile with the last
  // config that had it.
  virtual void OnSnapshotChanged(
      const std::shared_ptr<const config::ConfigSnapshot>& previous) = 0;
  // The drain's deadline came with the session still open: end the streams
  // that a close would cut without a word to their client (a gRPC call gets
  // UNAVAILABLE in trailers); others are cut with the connection.
  virtual void EndStreamsAtDrainDeadline() {}
  // Bytes of response the session holds for its client and has not
  // written (queued in its streams and its socket's output).
  virtual size_t HeldResponseBytes() const { return 0; }
  // The overload guard sheds the session: its exchanges end (logged with
  // response_flag `overload`) and the connection closes at once.
  virtual void ShedForOverload() {}
};

class Worker;

// A request the session answered itself before any stream had it (HTTP/1:
// a malformed head, 408, 414, 431, 505; HTTP/2: a header block over the
// limit): counted under its listener's status class and access-logged
// (sampled) like a stream's. `entry` holds what is known of the request,
// its status and body bytes (and its start and duration when it did not
// end as it began: a 408); this fills in the rest: the trace id is the
// client's `traceparent`'s when valid, else one made here.
void RecordPreStreamAnswer(Worker& worker, const std::string& listener_name,
                           const net::TlsInfo* tls, accesslog::Entry& entry,
                           std::string_view traceparent = {});

}  // namespace sluice::server

#endif  // SLUICE_DATAPLANE_SERVER_DOWNSTREAM_SESSION_H_
