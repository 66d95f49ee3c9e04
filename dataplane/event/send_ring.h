// SendRing: many send(2)s, or many recv(2)s, in one system call, through an
// io_uring.
//
// The gateway gathers the sends of a loop iteration (Dispatcher::RunFlushes)
// and makes them together: one io_uring_enter(2) for the batch instead of one
// send(2) per connection. The reads of the sockets the loop's wait found
// readable are gathered the same way (Dispatcher::ScheduleRead). On a
// virtual machine, where entering the kernel costs about a microsecond, that
// is most of what a small send or read costs (docs/architecture.md, "Sends
// and reads, batched").
//
// Every operation is non-blocking (MSG_DONTWAIT): the kernel makes it during
// the io_uring_enter(2) that submits it, and its result (bytes sent or read,
// 0 at a read's end of stream, or -EAGAIN, -EPIPE, ...) is there when the
// call returns. Create() checks exactly that
// on the running kernel before anything relies on it, and gives no ring when
// the kernel has no io_uring, refuses it (a seccomp profile, the
// kernel.io_uring_disabled sysctl) or behaves otherwise: the caller then sends
// with send(2) as before.
//
// One per dispatcher; its thread only.
#ifndef SLUICE_DATAPLANE_EVENT_SEND_RING_H_
#define SLUICE_DATAPLANE_EVENT_SEND_RING_H_

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

#include "absl/functional/function_ref.h"

namespace sluice::event {

class SendRing {
 public:
  // Up to `entries` sends per system call (rounded up to a power of two).
  // nullptr when the kernel cannot do it; `why` (if given) says why.
  static std::unique_ptr<SendRing> Create(unsigned entries, std::string* why = nullptr);
  ~SendRing();
  SendRing(const SendRing&) = delete;
  SendRing& operator=(const SendRing&) = delete;

  // Queues a non-blocking send of `size` bytes at `data` on socket `fd`. The
  // bytes must stay where they are until Submit() returns. `tag` comes back
  // with the result. false: the batch is full; Submit() first.
  bool Queue(int fd, const char* data, size_t size, uint64_t tag);
  // Queues a non-blocking recv of at most `size` bytes from socket `fd` into
  // `data`, which must stay where it is until Submit() returns. A batch holds
  // sends or reads, not both (their results are not told apart).
  bool QueueRecv(int fd, char* data, size_t size, uint64_t tag);
  size_t queued() const { return queued_; }
  // Makes the queued operations (one system call) and hands each one's
  // result to `done(tag, result)`, in no set order: the bytes sent or read
  // (0: the peer's end of stream), or -errno. An operation that gets no
  // result was not made (the kernel took part of the batch only): its caller
  // makes it with send(2) or recv(2). false: the kernel took none of the
  // batch; the ring should not be used again.
  bool Submit(absl::FunctionRef<void(uint64_t tag, int result)> done);

 private:
  SendRing() = default;
  bool Map(unsigned entries);
  bool QueueOp(uint8_t opcode, int fd, const char* data, size_t size, uint64_t tag);

  int ring_fd_ = -1;
  // The kernel's shared rings (mmap'd).
  void* sq_ring_ = nullptr;
  size_t sq_ring_size_ = 0;
  void* cq_ring_ = nullptr;  // == sq_ring_ when the kernel maps one region
  size_t cq_ring_size_ = 0;
  void* sqes_ = nullptr;
  size_t sqes_size_ = 0;
  unsigned* sq_head_ = nullptr;
  unsigned* sq_tail_ = nullptr;
  unsigned sq_mask_ = 0;
  unsigned sq_entries_ = 0;
  unsigned* sq_array_ = nullptr;
  unsigned* cq_head_ = nullptr;
  unsigned* cq_tail_ = nullptr;
  unsigned cq_mask_ = 0;
  void* cqes_ = nullptr;
  size_t queued_ = 0;
};

}  // namespace sluice::event

#endif  // SLUICE_DATAPLANE_EVENT_SEND_RING_H_
