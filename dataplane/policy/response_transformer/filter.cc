// The `response-transformer` policy's filter: edits the header fields of
// every response of the route (OnResponseHeaders) and, when the policy has
// body edits, the JSON object body of an upstream response the stream held
// whole for it (OnResponseBody, before OnResponseHeaders).
#include "dataplane/http/filter.h"

#include <memory>
#include <string>

#include "dataplane/policy/registry.h"
#include "dataplane/policy/request_transformer/transform.h"
#include "dataplane/policy/response_transformer/response_transformer_config.pb.h"

namespace sluice::policy::response_transformer {
namespace {

struct Settings {
  transformer::HeaderEdits headers;
  transformer::JsonBodyEdits body;
  uint64_t max_body_bytes = transformer::kDefaultMaxBodyBytes;
};

// One per request, on its worker; reads the factory's settings.
class ResponseTransformerFilter : public http::Filter {
 public:
  explicit ResponseTransformerFilter(const Settings& settings)
      : settings_(settings) {}

  // With body edits the upstream is asked for the whole representation in
  // plain text: a range of it (206), or a compressed one, would go to the
  // client unedited, and with it the fields the edits remove.
  http::FilterStatus OnRequestHeaders(http::HeaderMap& headers, http::FilterCallbacks&) override {
    if (!settings_.body.empty()) {
      headers.Remove("range");
      headers.Remove("if-range");
      headers.Set("accept-encoding", "identity");  // none would mean any (RFC 9110 12.5.3)
    }
    return http::FilterStatus::kContinue;
  }

  // Only a JSON response (in plain text) is edited: anything else -- an
  // event stream, a download -- streams on, unheld.
  bool WantsResponseBody(int, const http::HeaderMap& headers) override {
    return !settings_.body.empty() && transformer::IsPlainJson(headers);
  }

  void OnResponseBody(int, http::HeaderMap& headers, std::string& body,
                      http::FilterCallbacks& callbacks) override {
    // Only a JSON object in plain text; anything else goes on untouched.
    if (settings_.body.empty() || !transformer::IsPlainJson(headers)) return;
    transformer::TemplateContext context;
    context.info = &callbacks.info();
    settings_.body.Apply(settings_.body.Render(context), &body);
  }

  void OnResponseHeaders(int, http::HeaderMap& headers,
                         http::FilterCallbacks& callbacks) override {
    if (!settings_.body.empty()) {
      // Every answer of the route (HEAD, a 304, a cache hit too: they carry
      // the fields the edited 200 would): its bodies are not the upstream's
      // bytes, so a strong validator of the upstream's would claim byte
      // equality it lacks (RFC 9110 8.8.1), and no range is served (the
      // request's Range was removed).
      if (const std::string* etag = headers.Get("etag");
          etag != nullptr && !etag->empty() && (*etag)[0] == '"') {
        headers.Set("etag", "W/" + *etag);
      }
      headers.Remove("accept-ranges");
    }
    transformer::TemplateContext context;
    context.info = &callbacks.info();
    settings_.headers.Apply(headers, context);
  }

 private:
  const Settings& settings_;
};

// Immutable; outlives its filters (a request holds its snapshot, which holds
// the route's chain).
class ResponseTransformerFilterFactory : public http::FilterFactory {
 public:
  explicit ResponseTransformerFilterFactory(Settings settings)
      : settings_(std::move(settings)) {}
  std::unique_ptr<http::Filter> CreateFilter() const override {
    return std::make_unique<ResponseTransformerFilter>(settings_);
  }
  std::string_view policy_name() const override {
    return "response-transformer";
  }
  http::FilterPhase phase() const override {
    return http::FilterPhase::kTransformation;
  }
  uint64_t response_body_limit() const override {
    return settings_.body.empty() ? 0 : settings_.max_body_bytes;
  }
  bool edits_every_answer() const override { return true; }
  bool edits_response_body() const override { return !settings_.body.empty(); }
  const std::vector<std::string>& removed_response_fields() const override {
    return settings_.headers.removed();
  }

 private:
  const Settings settings_;
};

class ResponseTransformerPolicyFactory : public PolicyFactory {
 public:
  std::string name() const override { return "response-transformer"; }
  absl::StatusOr<std::shared_ptr<const http::FilterFactory>> Compile(
      const google::protobuf::Message& message) const override {
    const auto& config =
        static_cast<const v1::ResponseTransformerConfig&>(message);
    const transformer::TemplateScope scope;
    Settings s;
    auto headers = transformer::HeaderEdits::Compile(
        transformer::ToEditSpec(config.headers()), scope);
    if (!headers.ok()) return headers.status();
    s.headers = std::move(*headers);
    auto body = transformer::JsonBodyEdits::Compile(
        transformer::ToEditSpec(config.body()), scope);
    if (!body.ok()) return body.status();
    s.body = std::move(*body);
    if (config.body().max_body_bytes() > 0)
      s.max_body_bytes = config.body().max_body_bytes();
    return std::shared_ptr<const http::FilterFactory>(
        std::make_shared<ResponseTransformerFilterFactory>(std::move(s)));
  }
};

const bool registered =
    RegisterPolicyFactory(std::make_unique<ResponseTransformerPolicyFactory>());

}  // namespace
}  // namespace sluice::policy::response_transformer
