// DownstreamSession: one client connection as its worker sees it, whatever
// protocol it speaks (DownstreamConnection for HTTP/1, Http2Session for
// HTTP/2). The worker keeps its sessions to drain them and to tell them of a
// new config.
//
// Worker thread only.
#ifndef SLUICE_DATAPLANE_SERVER_DOWNSTREAM_SESSION_H_
#define SLUICE_DATAPLANE_SERVER_DOWNSTREAM_SESSION_H_

#include "dataplane/event/dispatcher.h"

namespace sluice::server {

class DownstreamSession : public event::DeferredDeletable {
 public:
  // Finish what is in flight, take nothing new, then close.
  virtual void StartDrain() = 0;
  // A new config version: close if the session's listener is gone.
  virtual void OnSnapshotChanged() = 0;
};

}  // namespace sluice::server

#endif  // SLUICE_DATAPLANE_SERVER_DOWNSTREAM_SESSION_H_
