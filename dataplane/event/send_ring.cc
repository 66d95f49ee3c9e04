#include "dataplane/event/send_ring.h"

#include <errno.h>
#include <linux/io_uring.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <climits>
#include <vector>

#include "common/log.h"

namespace sluice::event {
namespace {

int RingSetup(unsigned entries, io_uring_params* params) {
  return static_cast<int>(syscall(__NR_io_uring_setup, entries, params));
}

int RingEnter(int fd, unsigned to_submit, unsigned min_complete, unsigned flags) {
  return static_cast<int>(
      syscall(__NR_io_uring_enter, fd, to_submit, min_complete, flags, nullptr, 0));
}

unsigned LoadAcquire(const unsigned* p) {
  return std::atomic_ref<const unsigned>(*p).load(std::memory_order_acquire);
}

void StoreRelease(unsigned* p, unsigned value) {
  std::atomic_ref<unsigned>(*p).store(value, std::memory_order_release);
}

// The behaviour the ring relies on, tried on a socket pair: a send that can
// go out and one that cannot (a full socket buffer) both complete within the
// io_uring_enter(2) that submits them, with the bytes sent and -EAGAIN; so
// do a read of what was sent and a read of an empty socket.
bool SelfTest(SendRing& ring, std::string* why) {
  int pair[2];
  if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, pair) != 0) {
    *why = std::string("socketpair: ") + strerror(errno);
    return false;
  }
  int small = 4096;
  setsockopt(pair[0], SOL_SOCKET, SO_SNDBUF, &small, sizeof(small));
  char chunk[4096] = {};
  bool ok = true;
  int results[4] = {0, 0, 0, 0};
  auto record = [&](uint64_t tag, int result) { results[tag] = result; };
  ring.Queue(pair[1], "x", 1, 0);
  if (!ring.Submit(record) || results[0] != 1) {
    *why = "a send did not complete in the call that made it (result " +
           std::to_string(results[0]) + ")";
    ok = false;
  }
  if (ok) {
    char got[8] = {};
    ring.QueueRecv(pair[0], got, sizeof(got), 2);
    if (!ring.Submit(record) || results[2] != 1 || got[0] != 'x') {
      *why = "a read did not complete in the call that made it (result " +
             std::to_string(results[2]) + ")";
      ok = false;
    }
  }
  if (ok) {
    char got[8];
    ring.QueueRecv(pair[0], got, sizeof(got), 3);
    if (!ring.Submit(record) || results[3] != -EAGAIN) {
      *why = "a read of an empty socket did not fail at once with EAGAIN (result " +
             std::to_string(results[3]) + ")";
      ok = false;
    }
  }
  if (ok) {
    while (send(pair[0], chunk, sizeof(chunk), MSG_DONTWAIT) > 0) {
    }
    ring.Queue(pair[0], chunk, sizeof(chunk), 1);
    if (!ring.Submit(record) || results[1] != -EAGAIN) {
      *why = "a send to a full socket did not fail at once with EAGAIN (result " +
             std::to_string(results[1]) + ")";
      ok = false;
    }
  }
  close(pair[0]);
  close(pair[1]);
  return ok;
}

}  // namespace

std::unique_ptr<SendRing> SendRing::Create(unsigned entries, std::string* why) {
  std::string ignored;
  if (why == nullptr) why = &ignored;
  std::unique_ptr<SendRing> ring(new SendRing());
  if (!ring->Map(entries)) {
    *why = std::string("io_uring_setup: ") + strerror(errno);
    return nullptr;
  }
  if (!SelfTest(*ring, why)) return nullptr;
  return ring;
}

bool SendRing::Map(unsigned entries) {
  io_uring_params params;
  memset(&params, 0, sizeof(params));
  ring_fd_ = RingSetup(entries, &params);
  if (ring_fd_ < 0) return false;
  sq_ring_size_ = params.sq_off.array + params.sq_entries * sizeof(unsigned);
  cq_ring_size_ = params.cq_off.cqes + params.cq_entries * sizeof(io_uring_cqe);
  const bool single_mmap = (params.features & IORING_FEAT_SINGLE_MMAP) != 0;
  if (single_mmap) sq_ring_size_ = cq_ring_size_ = std::max(sq_ring_size_, cq_ring_size_);
  sq_ring_ = mmap(nullptr, sq_ring_size_, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE,
                  ring_fd_, IORING_OFF_SQ_RING);
  if (sq_ring_ == MAP_FAILED) {
    sq_ring_ = nullptr;
    return false;
  }
  if (single_mmap) {
    cq_ring_ = sq_ring_;
  } else {
    cq_ring_ = mmap(nullptr, cq_ring_size_, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE,
                    ring_fd_, IORING_OFF_CQ_RING);
    if (cq_ring_ == MAP_FAILED) {
      cq_ring_ = nullptr;
      return false;
    }
  }
  sqes_size_ = params.sq_entries * sizeof(io_uring_sqe);
  sqes_ = mmap(nullptr, sqes_size_, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, ring_fd_,
               IORING_OFF_SQES);
  if (sqes_ == MAP_FAILED) {
    sqes_ = nullptr;
    return false;
  }
  char* sq = static_cast<char*>(sq_ring_);
  char* cq = static_cast<char*>(cq_ring_);
  sq_head_ = reinterpret_cast<unsigned*>(sq + params.sq_off.head);
  sq_tail_ = reinterpret_cast<unsigned*>(sq + params.sq_off.tail);
  sq_mask_ = *reinterpret_cast<unsigned*>(sq + params.sq_off.ring_mask);
  sq_array_ = reinterpret_cast<unsigned*>(sq + params.sq_off.array);
  sq_entries_ = params.sq_entries;
  cq_head_ = reinterpret_cast<unsigned*>(cq + params.cq_off.head);
  cq_tail_ = reinterpret_cast<unsigned*>(cq + params.cq_off.tail);
  cq_mask_ = *reinterpret_cast<unsigned*>(cq + params.cq_off.ring_mask);
  cqes_ = cq + params.cq_off.cqes;
  // Completions of one batch must all fit: the kernel gives twice as many
  // completion entries as submission entries unless told otherwise.
  return params.cq_entries >= params.sq_entries;
}

SendRing::~SendRing() {
  if (sqes_ != nullptr) munmap(sqes_, sqes_size_);
  if (cq_ring_ != nullptr && cq_ring_ != sq_ring_) munmap(cq_ring_, cq_ring_size_);
  if (sq_ring_ != nullptr) munmap(sq_ring_, sq_ring_size_);
  if (ring_fd_ >= 0) close(ring_fd_);
}

bool SendRing::Queue(int fd, const char* data, size_t size, uint64_t tag) {
  return QueueOp(IORING_OP_SEND, fd, data, size, tag);
}

bool SendRing::QueueRecv(int fd, char* data, size_t size, uint64_t tag) {
  return QueueOp(IORING_OP_RECV, fd, data, size, tag);
}

bool SendRing::QueueOp(uint8_t opcode, int fd, const char* data, size_t size, uint64_t tag) {
  if (queued_ >= sq_entries_) return false;
  const unsigned tail = *sq_tail_ + static_cast<unsigned>(queued_);
  const unsigned index = tail & sq_mask_;
  io_uring_sqe* sqe = static_cast<io_uring_sqe*>(sqes_) + index;
  memset(sqe, 0, sizeof(*sqe));
  sqe->opcode = opcode;
  sqe->fd = fd;
  sqe->addr = reinterpret_cast<uint64_t>(data);
  // A completion's result is an int: a send takes at most 1 GiB at a time,
  // as the rest of a partial send goes on after it anyway.
  sqe->len = static_cast<uint32_t>(std::min<size_t>(size, 1u << 30));
  sqe->msg_flags = opcode == IORING_OP_SEND ? MSG_DONTWAIT | MSG_NOSIGNAL : MSG_DONTWAIT;
  sqe->user_data = tag;
  sq_array_[index] = index;
  ++queued_;
  return true;
}

bool SendRing::Submit(absl::FunctionRef<void(uint64_t tag, int result)> done) {
  if (queued_ == 0) return true;
  const unsigned count = static_cast<unsigned>(queued_);
  queued_ = 0;
  StoreRelease(sq_tail_, *sq_tail_ + count);
  unsigned submitted = 0;
  while (submitted < count) {
    const int n = RingEnter(ring_fd_, count - submitted, 0, 0);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      // The kernel took no more: the entries it did not take are taken back
      // (they would otherwise go with a later batch), and get no result.
      StoreRelease(sq_tail_, LoadAcquire(sq_head_));
      if (submitted == 0) return false;
      break;
    }
    submitted += static_cast<unsigned>(n);
  }
  // Each operation has completed (MSG_DONTWAIT: the self-test checked that
  // the kernel finishes such a send or read within the call). Should one
  // still be in flight, its bytes must stay put until it ends: wait for it.
  unsigned seen = 0;
  while (seen < submitted) {
    unsigned head = *cq_head_;
    const unsigned tail = LoadAcquire(cq_tail_);
    if (head == tail) {
      const int n = RingEnter(ring_fd_, 0, submitted - seen, IORING_ENTER_GETEVENTS);
      SLUICE_CHECK(n >= 0 || errno == EINTR || errno == EAGAIN || errno == EBUSY);
      continue;
    }
    for (; head != tail; ++head) {
      const io_uring_cqe* cqe = static_cast<const io_uring_cqe*>(cqes_) + (head & cq_mask_);
      done(cqe->user_data, cqe->res);
      ++seen;
    }
    StoreRelease(cq_head_, head);
  }
  return true;
}

}  // namespace sluice::event
