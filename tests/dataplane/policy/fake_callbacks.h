// A filter's view of its stream, in memory: records replies, the consumer
// set and path changes; work posted through a resume handle waits in a
// queue the test runs (from any thread's posts) with RunPosted().
#ifndef SLUICE_TESTS_DATAPLANE_POLICY_FAKE_CALLBACKS_H_
#define SLUICE_TESTS_DATAPLANE_POLICY_FAKE_CALLBACKS_H_

#include <atomic>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "dataplane/auth/consumers.h"
#include "dataplane/http/filter.h"

namespace sluice::testing {

class FakeCallbacks : public http::FilterCallbacks {
 public:
  const http::StreamInfo& info() const override { return info_; }
  void SendLocalReply(int status, std::string_view message,
                      const http::HeaderMap& headers) override {
    ++replies_;
    status_ = status;
    message_ = std::string(message);
    reply_headers_ = headers;
  }
  void SendResponse(int status, const http::HeaderMap& headers, std::string_view body) override {
    ++replies_;
    status_ = status;
    message_.clear();
    body_ = std::string(body);
    reply_headers_ = headers;
  }
  void ContinueRequest() override { ++continues_; }
  std::shared_ptr<http::ResumeHandle> MakeResumeHandle() override {
    return std::make_shared<Handle>(queue_);
  }
  const auth::ConsumerIndex& consumers() const override {
    return index_ ? *index_ : auth::ConsumerIndex::Empty();
  }
  void SetConsumer(const auth::Consumer* consumer, bool anonymous) override {
    if (!anonymous) info_.authenticated = true;
    if (consumer == nullptr) return;
    info_.consumer = consumer;
    info_.anonymous_consumer = anonymous;
  }
  void SetConsumerClaims(std::string claims) override { info_.consumer_claims = std::move(claims); }
  void SetPath(std::string path_and_query) override {
    path_ = std::move(path_and_query);
    info_.path = path_;
  }
  void StartBackgroundRefresh() override { ++background_refreshes_; }

  // The request is over: its handles' Alive() says false.
  void EndRequest() { queue_->alive.store(false); }

  // Waits (up to `deadline`) for `n` posted tasks, then runs them here.
  bool RunPosted(size_t n = 1, absl::Duration deadline = absl::Seconds(10)) {
    std::vector<std::function<void()>> tasks;
    {
      absl::MutexLock lock(&queue_->mu);
      auto ready = [q = queue_.get(), n]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(q->mu) {
        return q->tasks.size() >= n;
      };
      if (!queue_->mu.AwaitWithTimeout(absl::Condition(&ready), deadline)) return false;
      tasks.swap(queue_->tasks);
    }
    for (auto& t : tasks) t();
    return true;
  }

  http::StreamInfo info_;
  std::shared_ptr<const auth::ConsumerIndex> index_;
  std::string path_;
  int replies_ = 0;
  int status_ = 0;
  int continues_ = 0;
  std::string message_;
  std::string body_;  // SendResponse's
  http::HeaderMap reply_headers_;
  int background_refreshes_ = 0;

 private:
  struct Queue {
    absl::Mutex mu;
    std::vector<std::function<void()>> tasks ABSL_GUARDED_BY(mu);
    std::atomic<bool> alive{true};
  };
  class Handle : public http::ResumeHandle {
   public:
    explicit Handle(std::shared_ptr<Queue> queue) : queue_(std::move(queue)) {}
    void Post(std::function<void()> fn) override {
      absl::MutexLock lock(&queue_->mu);
      queue_->tasks.push_back(std::move(fn));
    }
    bool Alive() const override { return queue_->alive.load(); }

   private:
    std::shared_ptr<Queue> queue_;
  };
  std::shared_ptr<Queue> queue_ = std::make_shared<Queue>();
};

}  // namespace sluice::testing

#endif  // SLUICE_TESTS_DATAPLANE_POLICY_FAKE_CALLBACKS_H_
