// The `request-transformer` policy's filter: on the request head, edits the
// header fields and the query and rewrites the path; when the policy has
// body edits, the stream holds the whole body for OnRequestBody, which
// edits a JSON object body.
#include "dataplane/http/filter.h"

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "dataplane/policy/registry.h"
#include "dataplane/policy/request_transformer/path_rewrite.h"
#include "dataplane/policy/request_transformer/request_transformer_config.pb.h"
#include "dataplane/policy/request_transformer/transform.h"

namespace sluice::policy::request_transformer {
namespace {

struct Settings {
  transformer::HeaderEdits headers;
  transformer::QueryEdits query;
  std::unique_ptr<PathRewrite> path;  // nullptr: the path stays
  transformer::JsonBodyEdits body;
  uint64_t max_body_bytes = transformer::kDefaultMaxBodyBytes;
};

// One per request, on its worker; reads the factory's settings.
class RequestTransformerFilter : public http::Filter {
 public:
  explicit RequestTransformerFilter(const Settings& settings)
      : settings_(settings) {}

  http::FilterStatus OnRequestHeaders(
      http::HeaderMap& headers, http::FilterCallbacks& callbacks) override {
    const http::StreamInfo& info = callbacks.info();
    const std::string_view target = info.path;
    const size_t q = target.find('?');
    const std::string_view path = target.substr(0, q);
    const std::string_view query =
        q == std::string_view::npos ? std::string_view() : target.substr(q + 1);

    std::vector<std::string> captures;
    std::string new_path;
    const bool rewritten = settings_.path != nullptr &&
                           settings_.path->Apply(path, &new_path, &captures);

    // Every value is rendered from the request as it reached this policy.
    transformer::TemplateContext context;
    context.info = &info;
    context.request_headers = &headers;
    context.captures = &captures;
    // A request without a body (declared length 0) gets no OnRequestBody.
    const bool edit_body =
        !settings_.body.empty() && info.request_content_length != 0;
    if (edit_body) {
      // Which body this is depends on a singleton field (RFC 9110 8.3): with
      // two, the edit would follow one and the upstream perhaps the other.
      if (headers.Count("content-type") > 1) {
        callbacks.SendLocalReply(400, "content-type is given more than once", http::HeaderMap());
        return http::FilterStatus::kStopLocalReply;
      }
      body_values_ = settings_.body.Render(context);
    }
    std::optional<std::string> new_query =
        settings_.query.Apply(query, context);
    settings_.headers.Apply(headers, context);

    if (rewritten || new_query.has_value()) {
      std::string out = rewritten ? std::move(new_path) : std::string(path);
      if (new_query.has_value()) {
        if (!new_query->empty()) out.append("?").append(*new_query);
      } else if (q != std::string_view::npos) {
        out.append(target.substr(q));
      }
      callbacks.SetPath(std::move(out));
    }
    // The body goes upstream with the (edited) content-type: it decides.
    json_body_ = edit_body && transformer::IsPlainJson(headers);
    if (edit_body && !json_body_ && settings_.body.takes_fields() &&
        transformer::IsJsonTyped(headers)) {
      // JSON under a content coding: its fields to remove or rename cannot
      // be taken out, and an upstream that decodes it would read them
      // (RFC 9110 15.5.16: 415, naming what is accepted).
      http::HeaderMap reply;
      reply.Add("accept-encoding", "identity");
      callbacks.SendLocalReply(
          415,
          absl::StrCat("header content-encoding: ", transformer::EncodingOf(headers),
                       " is not accepted: fields to remove or rename cannot be taken out of "
                       "an encoded body"),
          reply);
      return http::FilterStatus::kStopLocalReply;
    }
    return http::FilterStatus::kContinue;
  }

  // Only a JSON body is edited: any other streams on, unheld.
  bool WantsRequestBody(const http::HeaderMap&) override { return json_body_; }

  http::FilterStatus OnRequestBody(std::string& body,
                                   http::FilterCallbacks& callbacks) override {
    // Not JSON, or not an object: Kong's request-transformer leaves such a
    // body as it is, and so does this policy -- unless it takes fields out
    // and cannot read the body: an upstream's parser might read it (a
    // number beyond 64 bits, a lone surrogate), the field to remove with it.
    if (json_body_ && settings_.body.Apply(body_values_, &body) ==
                          transformer::JsonBodyEdits::Result::kUnreadable &&
        settings_.body.takes_fields() && !body.empty()) {
      callbacks.SendLocalReply(400,
                               "request body is not JSON the gateway can read (its fields to "
                               "remove or rename could not be taken out)",
                               http::HeaderMap());
      return http::FilterStatus::kStopLocalReply;
    }
    return http::FilterStatus::kContinue;
  }

 private:
  const Settings& settings_;
  transformer::JsonBodyEdits::Values body_values_;
  bool json_body_ = false;
};

// Immutable; outlives its filters (a request holds its snapshot, which holds
// the route's chain).
class RequestTransformerFilterFactory : public http::FilterFactory {
 public:
  explicit RequestTransformerFilterFactory(Settings settings)
      : settings_(std::move(settings)) {}
  std::unique_ptr<http::Filter> CreateFilter() const override {
    return std::make_unique<RequestTransformerFilter>(settings_);
  }
  std::string_view policy_name() const override {
    return "request-transformer";
  }
  http::FilterPhase phase() const override {
    return http::FilterPhase::kTransformation;
  }
  const std::vector<std::string>& removed_request_fields() const override {
    return settings_.headers.removed();
  }
  uint64_t request_body_limit() const override {
    return settings_.body.empty() ? 0 : settings_.max_body_bytes;
  }

 private:
  const Settings settings_;
};

class RequestTransformerPolicyFactory : public PolicyFactory {
 public:
  std::string name() const override { return "request-transformer"; }
  absl::StatusOr<std::shared_ptr<const http::FilterFactory>> Compile(
      const google::protobuf::Message& message) const override {
    const auto& config =
        static_cast<const v1::RequestTransformerConfig&>(message);
    Settings s;
    transformer::TemplateScope scope;
    scope.request_fields = true;
    if (!config.path().regex().empty()) {
      auto path =
          PathRewrite::Compile(config.path().regex(), config.path().rewrite());
      if (!path.ok()) return path.status();
      s.path = std::move(*path);
      scope.captures = s.path->captures();
    }
    auto headers = transformer::HeaderEdits::Compile(
        transformer::ToEditSpec(config.headers()), scope);
    if (!headers.ok()) return headers.status();
    s.headers = std::move(*headers);
    auto query = transformer::QueryEdits::Compile(
        transformer::ToEditSpec(config.query()), scope);
    if (!query.ok()) return query.status();
    s.query = std::move(*query);
    auto body = transformer::JsonBodyEdits::Compile(
        transformer::ToEditSpec(config.body()), scope);
    if (!body.ok()) return body.status();
    s.body = std::move(*body);
    if (config.body().max_body_bytes() > 0)
      s.max_body_bytes = config.body().max_body_bytes();
    return std::shared_ptr<const http::FilterFactory>(
        std::make_shared<RequestTransformerFilterFactory>(std::move(s)));
  }
};

const bool registered =
    RegisterPolicyFactory(std::make_unique<RequestTransformerPolicyFactory>());

}  // namespace
}  // namespace sluice::policy::request_transformer
