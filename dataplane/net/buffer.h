// Buffer: a contiguous byte queue for socket I/O. Bytes are appended at the
// back and drained from the front; the parser sees them as one string_view.
//
// Not thread-safe: owned by one connection on one worker.
#ifndef SLUICE_DATAPLANE_NET_BUFFER_H_
#define SLUICE_DATAPLANE_NET_BUFFER_H_

#include <cstddef>
#include <cstring>
#include <memory>
#include <string_view>

namespace sluice::net {

class Buffer {
 public:
  Buffer() = default;
  Buffer(const Buffer&) = delete;
  Buffer& operator=(const Buffer&) = delete;

  std::string_view view() const { return {data_.get() + begin_, end_ - begin_}; }
  size_t size() const { return end_ - begin_; }
  bool empty() const { return begin_ == end_; }

  void Append(std::string_view bytes) {
    Reserve(bytes.size());
    std::memcpy(data_.get() + end_, bytes.data(), bytes.size());
    end_ += bytes.size();
  }
  void Drain(size_t n) {
    begin_ += n;
    if (begin_ >= end_) begin_ = end_ = 0;
  }
  void Clear() { begin_ = end_ = 0; }

  // Makes room for `n` more bytes at the back and returns where they go;
  // Commit() then adds what was written.
  char* Reserve(size_t n) {
    if (capacity_ - end_ >= n) return data_.get() + end_;
    size_t used = end_ - begin_;
    if (begin_ > 0 && capacity_ - used >= n && used <= capacity_ / 2) {
      std::memmove(data_.get(), data_.get() + begin_, used);
    } else {
      size_t cap = capacity_ ? capacity_ : 4096;
      while (cap - used < n) cap *= 2;
      std::unique_ptr<char[]> fresh(new char[cap]);
      if (used) std::memcpy(fresh.get(), data_.get() + begin_, used);
      data_ = std::move(fresh);
      capacity_ = cap;
    }
    begin_ = 0;
    end_ = used;
    return data_.get() + end_;
  }
  void Commit(size_t n) { end_ += n; }

  // Frees the storage when empty, whatever its size (a connection going idle).
  void Release() {
    if (empty()) {
      data_.reset();
      capacity_ = 0;
      begin_ = end_ = 0;
    }
  }

  // Frees the storage when empty and large (idle keep-alive connections).
  void ShrinkIfEmpty() {
    if (empty() && capacity_ > 65536) {
      data_.reset();
      capacity_ = 0;
      begin_ = end_ = 0;
    }
  }

 private:
  std::unique_ptr<char[]> data_;
  size_t capacity_ = 0;
  size_t begin_ = 0;
  size_t end_ = 0;
};

}  // namespace sluice::net

#endif  // SLUICE_DATAPLANE_NET_BUFFER_H_
