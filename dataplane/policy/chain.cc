#include "dataplane/policy/chain.h"

#include <algorithm>
#include <string>

#include "absl/strings/match.h"
#include "dataplane/http/header_map.h"

namespace sluice::policy {
namespace {

// Runs its authentication filters in turn with itself as their callbacks,
// so that a refusal is noted rather than sent while another may still
// identify the caller. A filter that lets the request through without
// refusing it and without falling back to its anonymous consumer has
// authenticated it (with a consumer, or -- jwt without consumer_claim --
// without one). A filter may pause (kStopIteration): the group then pauses
// the chain and carries on when that filter resumes. A filter's
// RejectRequest (a malformed credential) is the answer at once. Let through,
// the request is cleaned by every policy but the one that identified it:
// one that refused or was never asked may not pass on its credential.
class AnyOfAuthenticationFilter : public http::Filter, private http::FilterCallbacks {
 public:
  explicit AnyOfAuthenticationFilter(const FactoryList& factories) {
    filters_.reserve(factories.size());
    names_.reserve(factories.size());
    for (const auto& f : factories) {
      filters_.push_back(f->CreateFilter());
      names_.push_back(f->policy_name());
    }
  }

  http::FilterStatus OnRequestHeaders(http::HeaderMap& headers,
                                      http::FilterCallbacks& callbacks) override {
    outer_ = &callbacks;
    headers_ = &headers;
    return Run();
  }

  void OnResponseHeaders(int status, http::HeaderMap& headers,
                         http::FilterCallbacks& callbacks) override {
    for (size_t i = 0; i < entered_; ++i) filters_[i]->OnResponseHeaders(status, headers, callbacks);
  }

 private:
  // Tries the filters from next_ on. Returns what the group's own hook
  // returns; when resuming after a pause (paused_), delivers the outcome
  // to the outer callbacks instead.
  http::FilterStatus Run() {
    while (next_ < filters_.size() && !identified_ && !rejected_) {
      size_t i = next_++;
      entered_ = std::max(entered_, next_);
      // Each policy reads the request as the client sent it: what the one
      // before took out as it refused (key-auth's `Authorization`, jwt's
      // claim fields, a query key) may be this one's credential.
      if (i > 0) {
        *headers_ = saved_headers_;
        if (outer_->info().path != saved_path_) outer_->SetPath(saved_path_);
      }
      if (i == 0 && filters_.size() > 1) {
        saved_headers_ = *headers_;
        saved_path_.assign(outer_->info().path.data(), outer_->info().path.size());
      }
      refused_ = false;
      anonymous_now_ = false;
      http::FilterStatus status = filters_[i]->OnRequestHeaders(*headers_, *this);
      if (status == http::FilterStatus::kStopIteration && !refused_ && !identified_ &&
          !rejected_) {
        waiting_ = true;
        paused_ = true;
        return http::FilterStatus::kStopIteration;
      }
      // Let through without a refusal and not as the anonymous consumer:
      // authenticated, with or without a consumer (jwt without a
      // consumer_claim).
      if (status == http::FilterStatus::kContinue && !refused_ && !anonymous_now_) {
        identified_ = true;
      }
    }
    return Finish();
  }

  http::FilterStatus Finish() {
    http::FilterStatus status;
    if (rejected_) {
      // A malformed credential: refused whatever the others say, and still
      // no credential of theirs in the access log's path.
      for (const auto& filter : filters_) filter->OnSkippedInGroup(*headers_, *this);
      outer_->SetAnsweringPolicy(reply_policy_);
      outer_->SendLocalReply(reply_status_, reply_message_, reply_headers_);
      status = http::FilterStatus::kStopLocalReply;
    } else if (identified_) {
      status = http::FilterStatus::kContinue;
    } else if (anonymous_ != nullptr) {
      outer_->SetConsumer(anonymous_, true);
      status = http::FilterStatus::kContinue;
    } else {
      // Refused: still no credential in the access log's path.
      for (const auto& filter : filters_) filter->OnSkippedInGroup(*headers_, *this);
      if (!reply_policy_.empty()) outer_->SetAnsweringPolicy(reply_policy_);
      outer_->SendLocalReply(reply_status_ ? reply_status_ : 401,
                             reply_message_.empty() ? "authentication failed" : reply_message_,
                             reply_headers_);
      status = http::FilterStatus::kStopLocalReply;
    }
    if (status == http::FilterStatus::kContinue) {
      // The policies that refused, offered their anonymous consumer or were
      // never asked still clean the request: the credentials they did not
      // accept do not go upstream.
      const size_t winner = identified_ ? next_ - 1 : filters_.size();
      for (size_t i = 0; i < filters_.size(); ++i) {
        if (i != winner) filters_[i]->OnSkippedInGroup(*headers_, *this);
      }
    }
    if (paused_) {
      if (status == http::FilterStatus::kContinue) outer_->ContinueRequest();
      return status;  // ignored: the group's hook returned long ago
    }
    return status;
  }

  // A paused filter finished one way or the other: go on with the next.
  void Resume() {
    if (!waiting_) return;
    waiting_ = false;
    Run();
  }

  // http::FilterCallbacks, as the grouped filters see them.
  const http::StreamInfo& info() const override { return outer_->info(); }
  void SendLocalReply(int status, std::string_view message,
                      const http::HeaderMap& headers) override {
    refused_ = true;
    bool first = reply_status_ == 0;
    if (first) {
      reply_status_ = status;
      reply_message_.assign(message);
      reply_policy_ = names_[next_ - 1];  // the filter asked last
    }
    // Every policy's challenge goes out (RFC 9110 11.6.1 allows several).
    for (const http::HeaderMap::Field& f : headers.fields()) {
      if (first || absl::EqualsIgnoreCase(absl::string_view(f.name.data(), f.name.size()), "www-authenticate")) {
        reply_headers_.Add(f.name, f.value);
      }
    }
    Resume();
  }
  void RejectRequest(int status, std::string_view message,
                     const http::HeaderMap& headers) override {
    // Recorded as the first refusal (whatever came before), and final.
    rejected_ = true;
    reply_status_ = 0;
    reply_headers_.Clear();
    SendLocalReply(status, message, headers);
  }
  void SendResponse(int status, const http::HeaderMap& headers, std::string_view body) override {
    // Not a refusal: an authentication policy answering for itself.
    identified_ = true;
    outer_->SetAnsweringPolicy(names_[next_ - 1]);
    outer_->SendResponse(status, headers, body);
  }
  void ContinueRequest() override {
    if (waiting_ && !refused_ && !anonymous_now_) identified_ = true;
    Resume();
  }
  std::shared_ptr<http::ResumeHandle> MakeResumeHandle() override {
    return outer_->MakeResumeHandle();
  }
  const auth::ConsumerIndex& consumers() const override { return outer_->consumers(); }
  void SetConsumer(const auth::Consumer* consumer, bool anonymous) override {
    if (anonymous) {
      if (anonymous_ == nullptr) anonymous_ = consumer;
      anonymous_now_ = true;
      return;
    }
    identified_ = true;
    outer_->SetConsumer(consumer, false);
  }
  void SetConsumerClaims(std::string claims) override {
    outer_->SetConsumerClaims(std::move(claims));
  }
  void SetPath(std::string path_and_query) override { outer_->SetPath(std::move(path_and_query)); }
  void StartBackgroundRefresh() override { outer_->StartBackgroundRefresh(); }

  std::vector<std::unique_ptr<http::Filter>> filters_;
  // Their policies' names (views into the factories, which the exchange's
  // chain holds).
  std::vector<std::string_view> names_;
  http::FilterCallbacks* outer_ = nullptr;
  http::HeaderMap* headers_ = nullptr;
  // The request as the first policy got it, for the next ones.
  http::HeaderMap saved_headers_;
  std::string saved_path_;
  size_t next_ = 0;
  size_t entered_ = 0;
  bool identified_ = false;
  bool refused_ = false;  // the current filter refused
  bool rejected_ = false;  // a filter's RejectRequest: the group's answer
  bool waiting_ = false;  // for the current filter to resume
  bool paused_ = false;   // the group returned kStopIteration
  bool anonymous_now_ = false;  // the current filter offered its anonymous consumer
  const auth::Consumer* anonymous_ = nullptr;
  int reply_status_ = 0;
  std::string reply_message_;
  std::string_view reply_policy_;  // whose refusal reply_status_ is
  http::HeaderMap reply_headers_;
};

class AnyOfAuthenticationFactory : public http::FilterFactory {
 public:
  explicit AnyOfAuthenticationFactory(FactoryList factories) : factories_(std::move(factories)) {
    for (const auto& f : factories_) {
      const std::vector<std::string>& more = f->removed_request_fields();
      removed_.insert(removed_.end(), more.begin(), more.end());
    }
  }
  std::unique_ptr<http::Filter> CreateFilter() const override {
    return std::make_unique<AnyOfAuthenticationFilter>(factories_);
  }
  std::string_view policy_name() const override { return "authentication"; }
  http::FilterPhase phase() const override { return http::FilterPhase::kAuthentication; }
  std::vector<std::string> trusted_request_fields() const override {
    std::vector<std::string> names;
    for (const auto& f : factories_) {
      std::vector<std::string> more = f->trusted_request_fields();
      names.insert(names.end(), more.begin(), more.end());
    }
    return names;
  }
  const std::vector<std::string>& removed_request_fields() const override { return removed_; }

 private:
  const FactoryList factories_;
  std::vector<std::string> removed_;
};

}  // namespace

FactoryList OrderChain(FactoryList chain) {
  std::stable_sort(chain.begin(), chain.end(), [](const auto& a, const auto& b) {
    return a->phase() < b->phase();
  });
  FactoryList auth;
  for (const auto& f : chain) {
    if (f->phase() == http::FilterPhase::kAuthentication) auth.push_back(f);
  }
  if (auth.size() < 2) return chain;
  FactoryList out;
  out.reserve(chain.size() - auth.size() + 1);
  bool placed = false;
  for (auto& f : chain) {
    if (f->phase() != http::FilterPhase::kAuthentication) {
      out.push_back(std::move(f));
    } else if (!placed) {
      out.push_back(std::make_shared<AnyOfAuthenticationFactory>(auth));
      placed = true;
    }
  }
  return out;
}

}  // namespace sluice::policy
