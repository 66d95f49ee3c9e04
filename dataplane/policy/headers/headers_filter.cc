// The `headers` policy's filter and its factory, registered for sluice-proxy;
// the value templates the transformer policies share.
#include <memory>
#include <optional>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "dataplane/auth/consumers.h"
#include "dataplane/policy/auth_util.h"
#include "dataplane/policy/headers/headers_policy.h"
#include "dataplane/policy/registry.h"

namespace sluice::policy::headers {

namespace {

// The argument of NAME(arg), or nullopt when `name` is not of that form.
std::optional<std::string_view> Argument(std::string_view name, std::string_view function) {
  if (name.size() < function.size() + 2 || name.substr(0, function.size()) != function ||
      name[function.size()] != '(' || name.back() != ')') {
    return std::nullopt;
  }
  return name.substr(function.size() + 1, name.size() - function.size() - 2);
}

bool IsTokenChar(char c) {
  if (absl::ascii_isalnum(static_cast<unsigned char>(c))) return true;
  return std::string_view("!#$&'*+-.^_`|~").find(c) != std::string_view::npos;
}

std::string KnownVariables(const TemplateScope& scope) {
  std::string known =
      "%REQUEST_ID%, %CLIENT_IP%, %SCHEME%, %METHOD%, %ROUTE%, %TLS_VERSION%, %TLS_CIPHER%, "
      "%TLS_SNI%, %TLS_CLIENT_SUBJECT%, %CONSUMER%";
  if (scope.request_fields) known.append(", %HEADER(name)%, %QUERY(name)%");
  if (scope.captures >= 0) known.append(", %CAPTURE(n)%");
  return known;
}

}  // namespace

absl::StatusOr<ValueTemplate> ValueTemplate::Parse(std::string_view text,
                                                   const TemplateScope& scope) {
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
    Piece piece;
    if (name == "REQUEST_ID") piece.variable = Variable::kRequestId;
    else if (name == "CLIENT_IP") piece.variable = Variable::kClientIp;
    else if (name == "SCHEME") piece.variable = Variable::kScheme;
    else if (name == "METHOD") piece.variable = Variable::kMethod;
    else if (name == "ROUTE") piece.variable = Variable::kRoute;
    else if (name == "TLS_VERSION") piece.variable = Variable::kTlsVersion;
    else if (name == "TLS_CIPHER") piece.variable = Variable::kTlsCipher;
    else if (name == "TLS_SNI") piece.variable = Variable::kTlsSni;
    else if (name == "TLS_CLIENT_SUBJECT") piece.variable = Variable::kTlsClientSubject;
    else if (name == "CONSUMER") piece.variable = Variable::kConsumer;
    std::optional<std::string_view> header = Argument(name, "HEADER");
    std::optional<std::string_view> query = Argument(name, "QUERY");
    std::optional<std::string_view> capture = Argument(name, "CAPTURE");
    if ((header || query) && !scope.request_fields) {
      return absl::InvalidArgumentError(absl::StrCat(
          "%", std::string(name), "% is not available here (request fields can be used in "
          "request-transformer's request values only)"));
    }
    if (header) {
      bool ok = !header->empty();
      for (char c : *header) ok = ok && IsTokenChar(c);
      if (!ok) {
        return absl::InvalidArgumentError(absl::StrCat(
            "%", std::string(name), "%: '", std::string(*header), "' is not a header name"));
      }
      piece.variable = Variable::kHeader;
      piece.literal = std::string(*header);
    } else if (query) {
      // Names compare percent-decoded, as the query edits' do (`api%20key`
      // is `api key`): a space or a UTF-8 byte may be part of one; '&', '='
      // and control bytes not.
      bool ok = !query->empty();
      for (char c : *query) {
        const auto u = static_cast<unsigned char>(c);
        ok = ok && u >= 0x20 && u != 0x7f && c != '&' && c != '=';
      }
      if (!ok) {
        return absl::InvalidArgumentError(absl::StrCat(
            "%", std::string(name), "%: '", std::string(*query), "' is not a query parameter name"));
      }
      piece.variable = Variable::kQuery;
      piece.literal = std::string(*query);
    } else if (capture) {
      if (scope.captures < 0) {
        return absl::InvalidArgumentError(absl::StrCat(
            "%", std::string(name), "% is not available here (captures of path.regex, in "
            "request-transformer's request values only)"));
      }
      if (capture->size() != 1 || !absl::ascii_isdigit(static_cast<unsigned char>((*capture)[0])) ||
          (*capture)[0] - '0' > scope.captures) {
        return absl::InvalidArgumentError(absl::StrCat(
            "%", std::string(name), "%: path.regex has ", scope.captures,
            " capture group(s); use %CAPTURE(0)% .. %CAPTURE(", scope.captures, ")%"));
      }
      piece.variable = Variable::kCapture;
      piece.index = (*capture)[0] - '0';
    }
    if (piece.variable == Variable::kNone) {
      return absl::InvalidArgumentError(absl::StrCat("unknown variable %", std::string(name),
                                                     "% (known: ", KnownVariables(scope), ")"));
    }
    if (!literal.empty()) t.pieces_.push_back(Piece{Variable::kNone, std::move(literal)});
    literal.clear();
    t.pieces_.push_back(std::move(piece));
    i = end + 1;
  }
  if (!literal.empty()) t.pieces_.push_back(Piece{Variable::kNone, std::move(literal)});
  return t;
}

bool ValueTemplate::literal() const {
  for (const Piece& p : pieces_) {
    if (p.variable != Variable::kNone) return false;
  }
  return true;
}

std::string ValueTemplate::Render(const http::StreamInfo& info) const {
  TemplateContext context;
  context.info = &info;
  return Render(context);
}

std::string ValueTemplate::Render(const TemplateContext& context) const {
  std::string out = RenderRaw(context);
  // A client certificate subject or a decoded query value could hold bytes
  // a header must not: each control character but HTAB becomes a space.
  for (char& c : out) {
    if (IsFieldValueControl(c)) c = ' ';
  }
  return out;
}

std::string ValueTemplate::RenderRaw(const TemplateContext& context) const {
  if (pieces_.empty()) return {};
  if (pieces_.size() == 1 && pieces_[0].variable == Variable::kNone) return pieces_[0].literal;
  const http::StreamInfo& info = *context.info;
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
      case Variable::kConsumer:
        if (info.consumer != nullptr) out.append(info.consumer->name);
        break;
      case Variable::kHeader:
        // Every field of that name, joined as RFC 9110 5.3 combines them;
        // cookie lines as one cookie-string (RFC 6265 5.4), as HTTP/2's crumbs.
        if (context.request_headers != nullptr) {
          bool first = true;
          for (const http::HeaderMap::Field& f : context.request_headers->fields()) {
            if (!absl::EqualsIgnoreCase(f.name, p.literal)) continue;
            if (!first) out.append(absl::EqualsIgnoreCase(p.literal, "cookie") ? "; " : ", ");
            out.append(f.value);
            first = false;
          }
        }
        break;
      case Variable::kQuery:
        // A '+' is a space, as route query matchers and Kong read it.
        if (auto value = FindQueryParameter(info.path, p.literal, ParameterNames::kExact,
                                            /*plus_is_space=*/true)) {
          out.append(*value);
        }
        break;
      case Variable::kCapture:
        if (context.captures != nullptr && static_cast<size_t>(p.index) < context.captures->size()) {
          out.append((*context.captures)[p.index]);
        }
        break;
    }
  }
  return out;
}

namespace {

struct CompiledMutations {
  std::vector<std::string> remove;
  std::vector<std::pair<std::string, ValueTemplate>> set;
  std::vector<std::pair<std::string, ValueTemplate>> add;
  // `remove`'s names and `set`'s: the fields whose values are the
  // policy's, or none (a trailer of such a name is dropped too).
  std::vector<std::string> owned;

  bool empty() const { return remove.empty() && set.empty() && add.empty(); }

  void Apply(http::HeaderMap& headers, const http::StreamInfo& info) const {
    // A field removed or set goes in every spelling CGI, WSGI, Rack and PHP
    // read as the same variable (`X_Client_Cert` for `x-client-cert`):
    // else a client's `X_Client_Cert` reached the upstream next to the
    // value the policy set, as HTTP_X_CLIENT_CERT (CVE-2024-45614's class).
    for (const std::string& name : remove) {
      headers.Remove(name);
      headers.RemoveOtherCgiSpellings(name);
    }
    // A value that renders empty (%CONSUMER% with no consumer, a TLS
    // variable over plain HTTP) sends no empty field, as nginx and Envoy
    // leave it out: `set` still takes the fields of that name away (so a
    // client cannot supply the value), `add` adds nothing.
    for (const auto& [name, value] : set) {
      headers.RemoveOtherCgiSpellings(name);
      std::string rendered = value.Render(info);
      if (rendered.empty()) {
        headers.Remove(name);
      } else {
        headers.Set(name, std::move(rendered));
      }
    }
    for (const auto& [name, value] : add) {
      std::string rendered = value.Render(info);
      if (!rendered.empty()) headers.Add(name, std::move(rendered));
    }
  }
};

absl::StatusOr<CompiledMutations> Compile(const v1::HeaderMutations& m) {
  CompiledMutations out;
  out.remove.assign(m.remove().begin(), m.remove().end());
  out.owned = out.remove;
  for (const auto& v : m.set()) {
    auto t = ValueTemplate::Parse(v.value());
    if (!t.ok()) return t.status();
    out.set.emplace_back(v.name(), std::move(*t));
    out.owned.push_back(v.name());
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
  bool edits_every_answer() const override { return !response_.empty(); }
  // What it removes or sets: a trailer of that name would otherwise reach
  // an upstream (a client) that merges trailers into the head, even when
  // the set value rendered empty and the head has no such field.
  const std::vector<std::string>& removed_request_fields() const override {
    return request_.owned;
  }
  const std::vector<std::string>& removed_response_fields() const override {
    return response_.owned;
  }

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
