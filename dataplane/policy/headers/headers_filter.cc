// The `headers` policy's filter and its factory, registered for sluice-proxy.
#include <memory>

#include "absl/strings/str_cat.h"
#include "dataplane/policy/headers/headers_policy.h"
#include "dataplane/policy/registry.h"

namespace sluice::policy::headers {

absl::StatusOr<ValueTemplate> ValueTemplate::Parse(std::string_view text) {
  ValueTemplate t;
  std::string literal;
  size_t i = 0;
  while (i < text.size()) {
    if (text[i] != '%') {
      literal.push_back(text[i++]);
      continue;
    }
    if (i + 1 < text.size() && text[i + 1] == '%') {
      literal.push_back('%');
      i += 2;
      continue;
    }
    size_t end = text.find('%', i + 1);
    if (end == std::string_view::npos) {
      return absl::InvalidArgumentError(
          absl::StrCat("'%' at byte ", i, " starts no variable (write %% for a literal %)"));
    }
    std::string_view name = text.substr(i + 1, end - i - 1);
    Variable v = Variable::kNone;
    if (name == "REQUEST_ID") v = Variable::kRequestId;
    else if (name == "CLIENT_IP") v = Variable::kClientIp;
    else if (name == "SCHEME") v = Variable::kScheme;
    else if (name == "METHOD") v = Variable::kMethod;
    else if (name == "ROUTE") v = Variable::kRoute;
    else if (name == "TLS_VERSION") v = Variable::kTlsVersion;
    else if (name == "TLS_CIPHER") v = Variable::kTlsCipher;
    else if (name == "TLS_SNI") v = Variable::kTlsSni;
    else if (name == "TLS_CLIENT_SUBJECT") v = Variable::kTlsClientSubject;
    if (v == Variable::kNone) {
      return absl::InvalidArgumentError(absl::StrCat(
          "unknown variable %", std::string(name), "% (known: %REQUEST_ID%, %CLIENT_IP%, %SCHEME%, %METHOD%, "
          "%ROUTE%, %TLS_VERSION%, %TLS_CIPHER%, %TLS_SNI%, %TLS_CLIENT_SUBJECT%)"));
    }
    if (!literal.empty()) t.pieces_.push_back(Piece{Variable::kNone, std::move(literal)});
    literal.clear();
    t.pieces_.push_back(Piece{v, {}});
    i = end + 1;
  }
  if (!literal.empty()) t.pieces_.push_back(Piece{Variable::kNone, std::move(literal)});
  return t;
}

std::string ValueTemplate::Render(const http::StreamInfo& info) const {
  if (pieces_.size() == 1 && pieces_[0].variable == Variable::kNone) return pieces_[0].literal;
  std::string out;
  for (const Piece& p : pieces_) {
    switch (p.variable) {
      case Variable::kNone: out.append(p.literal); break;
      case Variable::kRequestId: out.append(info.request_id); break;
      case Variable::kClientIp: out.append(info.client_ip); break;
      case Variable::kScheme: out.append(info.scheme); break;
      case Variable::kMethod: out.append(info.method); break;
      case Variable::kRoute: out.append(info.route_name); break;
      case Variable::kTlsVersion: out.append(info.tls_version); break;
      case Variable::kTlsCipher: out.append(info.tls_cipher); break;
      case Variable::kTlsSni: out.append(info.tls_sni); break;
      case Variable::kTlsClientSubject: out.append(info.tls_peer_subject); break;
    }
  }
  // A client certificate subject could hold bytes a header must not.
  for (char& c : out) {
    if (c == '\r' || c == '\n' || c == '\0') c = ' ';
  }
  return out;
}

namespace {

struct CompiledMutations {
  std::vector<std::string> remove;
  std::vector<std::pair<std::string, ValueTemplate>> set;
  std::vector<std::pair<std::string, ValueTemplate>> add;

  bool empty() const { return remove.empty() && set.empty() && add.empty(); }

  void Apply(http::HeaderMap& headers, const http::StreamInfo& info) const {
    for (const std::string& name : remove) headers.Remove(name);
    for (const auto& [name, value] : set) headers.Set(name, value.Render(info));
    for (const auto& [name, value] : add) headers.Add(name, value.Render(info));
  }
};

absl::StatusOr<CompiledMutations> Compile(const v1::HeaderMutations& m) {
  CompiledMutations out;
  out.remove.assign(m.remove().begin(), m.remove().end());
  for (const auto& v : m.set()) {
    auto t = ValueTemplate::Parse(v.value());
    if (!t.ok()) return t.status();
    out.set.emplace_back(v.name(), std::move(*t));
  }
  for (const auto& v : m.add()) {
    auto t = ValueTemplate::Parse(v.value());
    if (!t.ok()) return t.status();
    out.add.emplace_back(v.name(), std::move(*t));
  }
  return out;
}

class HeadersFilter : public http::Filter {
 public:
  HeadersFilter(const CompiledMutations& request, const CompiledMutations& response)
      : request_(request), response_(response) {}

  http::FilterStatus OnRequestHeaders(http::HeaderMap& headers,
                                      http::FilterCallbacks& callbacks) override {
    request_.Apply(headers, callbacks.info());
    return http::FilterStatus::kContinue;
  }
  void OnResponseHeaders(int, http::HeaderMap& headers, http::FilterCallbacks& callbacks) override {
    response_.Apply(headers, callbacks.info());
  }

 private:
  const CompiledMutations& request_;
  const CompiledMutations& response_;
};

// Immutable; outlives its filters (a request holds its snapshot, which holds
// the route's chain).
class HeadersFilterFactory : public http::FilterFactory {
 public:
  HeadersFilterFactory(CompiledMutations request, CompiledMutations response)
      : request_(std::move(request)), response_(std::move(response)) {}
  std::unique_ptr<http::Filter> CreateFilter() const override {
    return std::make_unique<HeadersFilter>(request_, response_);
  }
  std::string_view policy_name() const override { return "headers"; }

 private:
  CompiledMutations request_;
  CompiledMutations response_;
};

class HeadersPolicyFactory : public PolicyFactory {
 public:
  std::string name() const override { return "headers"; }
  absl::StatusOr<std::shared_ptr<const http::FilterFactory>> Compile(
      const google::protobuf::Message& message) const override {
    const auto& config = static_cast<const v1::HeadersConfig&>(message);
    auto request = headers::Compile(config.request());
    if (!request.ok()) return request.status();
    auto response = headers::Compile(config.response());
    if (!response.ok()) return response.status();
    return std::shared_ptr<const http::FilterFactory>(
        std::make_shared<HeadersFilterFactory>(std::move(*request), std::move(*response)));
  }
};

const bool registered = RegisterPolicyFactory(std::make_unique<HeadersPolicyFactory>());

}  // namespace
}  // namespace sluice::policy::headers
