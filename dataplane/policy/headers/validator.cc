// The `headers` policy's config rules, registered for every binary that
// validates config.
#include <algorithm>
#include <memory>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "api/policy_registry.h"
#include "dataplane/http/header_map.h"
#include "dataplane/policy/headers/headers_policy.h"

namespace sluice::policy::headers {
namespace {

bool IsTokenChar(char c) {
  if (absl::ascii_isalnum(static_cast<unsigned char>(c))) return true;
  return std::string_view("!#$%&'*+-.^_`|~").find(c) != std::string_view::npos;
}

// Fields that describe the connection or the message framing: the gateway
// owns them.
bool IsReserved(std::string_view lower) {
  for (std::string_view name : {"connection", "keep-alive", "proxy-connection", "te",
                                "transfer-encoding", "upgrade", "trailer", "content-length"}) {
    if (lower == name) return true;
  }
  return false;
}

constexpr std::string_view kHostRule =
    "host can only be replaced (request.set), not added or removed";
constexpr std::string_view kResponseHostRule =
    "host is a request field; a response has none to change";

void CheckName(const std::string& name, const std::string& field, bool allow_host,
               std::vector<std::pair<std::string, std::string>>* errors, bool request = true) {
  CheckHeaderName(name, field,
                  allow_host ? std::string_view() : request ? kHostRule : kResponseHostRule,
                  errors);
}

void CheckMutations(const v1::HeaderMutations& m, const std::string& prefix, bool request,
                    std::vector<std::pair<std::string, std::string>>* errors) {
  auto check_count = [&](int n, const char* list) {
    if (static_cast<size_t>(n) > kMaxEntriesPerList) {
      errors->emplace_back(absl::StrCat(prefix, ".", list),
                           absl::StrCat("has ", n, " entries; at most ", kMaxEntriesPerList));
    }
  };
  check_count(m.remove_size(), "remove");
  check_count(m.set_size(), "set");
  check_count(m.add_size(), "add");
  for (int i = 0; i < m.remove_size(); ++i) {
    CheckName(m.remove(i), absl::StrCat(prefix, ".remove[", i, "]"), false, errors, request);
  }
  auto check_values = [&](const auto& list, const char* kind, bool allow_host) {
    for (int i = 0; i < list.size(); ++i) {
      std::string field = absl::StrCat(prefix, ".", kind, "[", i, "]");
      CheckName(list.Get(i).name(), field + ".name", allow_host, errors, request);
      if (request) CheckNotConsumerField(list.Get(i).name(), field + ".name", errors);
      CheckTemplateValue(list.Get(i).value(), field + ".value", TemplateScope(), errors);
    }
  };
  check_values(m.set(), "set", request);
  check_values(m.add(), "add", false);
}

}  // namespace

void CheckHeaderName(const std::string& name, const std::string& field,
                     std::string_view host_rule,
                     std::vector<std::pair<std::string, std::string>>* errors) {
  if (name.empty()) {
    errors->emplace_back(field, "is required");
    return;
  }
  for (char c : name) {
    if (!IsTokenChar(c)) {
      errors->emplace_back(field, absl::StrCat("'", name, "' is not a valid header name"));
      return;
    }
  }
  std::string lower = absl::AsciiStrToLower(name);
  if (IsReserved(lower)) {
    errors->emplace_back(field, absl::StrCat("'", name,
                                             "' is set by the gateway (connection and framing) "
                                             "and cannot be changed"));
  } else if (lower == "host" && !host_rule.empty()) {
    errors->emplace_back(field, std::string(host_rule));
  }
}

void CheckNotConsumerField(const std::string& name, const std::string& field,
                           std::vector<std::pair<std::string, std::string>>* errors) {
  // With '_' for '-' too: CGI, WSGI, Rack and PHP read both spellings as
  // one variable, and the proxy drops a client's '_' spelling likewise.
  if (http::IsConsumerField(name)) {
    errors->emplace_back(field, absl::StrCat("'", name, "' is set by the gateway's "
                                             "authentication policies for the upstream to "
                                             "trust and cannot be written"));
  }
}

void CheckNewRequestFieldName(const std::string& name, const std::string& field,
                              std::vector<std::pair<std::string, std::string>>* errors) {
  if (name.find('_') != std::string::npos) {
    for (const char* reserved : {"connection", "keep-alive", "proxy-connection",
                                 "transfer-encoding", "content-length"}) {
      if (http::SameCgiName(name, reserved)) {
        errors->emplace_back(field, absl::StrCat("'", name, "' is read as ", reserved,
                                                 " by CGI-style servers (PHP, WSGI, Rack), which "
                                                 "the gateway sets (connection and framing); it "
                                                 "cannot be written"));
        return;
      }
    }
  }
  for (std::string_view taken : {"expect", "http2-settings"}) {
    if (http::SameCgiName(name, taken)) {
      errors->emplace_back(field, absl::StrCat("'", name, "' is taken off requests before "
                                               "policies and handled by the gateway "
                                               "(100-continue, the HTTP/2 upgrade); it cannot "
                                               "be written"));
      return;
    }
  }
}

void CheckNewResponseFieldName(const std::string& name, const std::string& field,
                               ResponseEdit edit,
                               std::vector<std::pair<std::string, std::string>>* errors) {
  if (absl::EqualsIgnoreCase(name, "grpc-status")) {
    errors->emplace_back(field, absl::StrCat("'", name, "' is a gRPC call's outcome, which the "
                                             "upstream sends in the trailers after its "
                                             "messages; a policy cannot change or remove it "
                                             "(gRPC clients would fail every call: No status "
                                             "received)"));
    return;
  }
  if (!absl::EqualsIgnoreCase(name, "grpc-message") &&
      !absl::EqualsIgnoreCase(name, "grpc-status-details-bin")) {
    return;
  }
  if (edit == ResponseEdit::kWrite) {
    errors->emplace_back(field, absl::StrCat("'", name, "' goes with a gRPC call's status, in "
                                             "the trailers the upstream sends; a policy can "
                                             "remove it (from trailers too) but not write it"));
  }
}

void CheckHostValue(const std::string& value, const std::string& field,
                    std::vector<std::pair<std::string, std::string>>* errors) {
  std::string literal;
  for (size_t i = 0; i < value.size(); ++i) {
    if (value[i] != '%') {
      literal.push_back(value[i]);
    } else if (i + 1 < value.size() && value[i + 1] == '%') {
      literal.push_back('%');
      ++i;
    } else {
      return;  // a variable: rendered and checked per request
    }
  }
  if (!http::IsValidHostValue(literal)) {
    errors->emplace_back(field, absl::StrCat("'", literal, "' is not a valid host (host[:port], "
                                             "the port 0..65535): every request would get 400"));
  }
}

void CheckTemplateValue(const std::string& value, const std::string& field,
                        const TemplateScope& scope,
                        std::vector<std::pair<std::string, std::string>>* errors) {
  if (value.size() > kMaxValueBytes) {
    errors->emplace_back(field, absl::StrCat("is ", value.size(), " bytes; at most ",
                                             kMaxValueBytes));
  } else if (std::string why = FieldValueControlError(value); !why.empty()) {
    errors->emplace_back(field, why);
  } else if (auto parsed = ValueTemplate::Parse(value, scope); !parsed.ok()) {
    errors->emplace_back(field, std::string(parsed.status().message()));
  }
}

void ValidateHeadersConfig(const v1::HeadersConfig& config,
                           std::vector<std::pair<std::string, std::string>>* errors) {
  CheckMutations(config.request(), "request", /*request=*/true, errors);
  CheckMutations(config.response(), "response", /*request=*/false, errors);
}

namespace {

class HeadersValidator : public api::PolicyValidator {
 public:
  std::string name() const override { return "headers"; }
  const google::protobuf::Descriptor* config_type() const override {
    return v1::HeadersConfig::descriptor();
  }
  void Validate(const google::protobuf::Message& config,
                std::vector<api::PolicyConfigError>* errors) const override {
    std::vector<std::pair<std::string, std::string>> found;
    ValidateHeadersConfig(static_cast<const v1::HeadersConfig&>(config), &found);
    for (auto& [field, message] : found) errors->push_back({field, message});
  }
  // Apply-only: a stored config an older build took still loads.
  void ValidateNew(const google::protobuf::Message& config,
                   std::vector<api::PolicyConfigError>* errors) const override {
    const auto& headers = static_cast<const v1::HeadersConfig&>(config);
    const auto& set = headers.request().set();
    std::vector<std::pair<std::string, std::string>> found;
    for (const auto& [list, what] : {std::pair{&headers.request().set(), "set"},
                                     std::pair{&headers.request().add(), "add"}}) {
      for (int i = 0; i < list->size(); ++i) {
        CheckNewRequestFieldName(list->Get(i).name(),
                                 absl::StrCat("request.", what, "[", i, "].name"), &found);
      }
    }
    for (int i = 0; i < set.size(); ++i) {
      if (absl::EqualsIgnoreCase(set.Get(i).name(), "host")) {
        CheckHostValue(set.Get(i).value(), absl::StrCat("request.set[", i, "].value"), &found);
      }
    }
    // A field value has no white space at its ends (RFC 9110 5.5): HTTP/2
    // drops such a field as malformed (RFC 9113 8.2.1) where HTTP/1 sends
    // it, so one config would send different requests and answers.
    auto edges = [&found](const v1::HeaderMutations& side, const char* name) {
      for (const auto& [list, what] :
           {std::pair{&side.set(), "set"}, std::pair{&side.add(), "add"}}) {
        for (int i = 0; i < list->size(); ++i) {
          const std::string& value = list->Get(i).value();
          if (!value.empty() && (value.front() == ' ' || value.front() == '\t' ||
                                 value.back() == ' ' || value.back() == '\t')) {
            found.emplace_back(absl::StrCat(name, ".", what, "[", i, "].value"),
                               "begins or ends with white space, which a field value cannot "
                               "(RFC 9110 5.5: HTTP/2 drops such a field, HTTP/1 would send it)");
          }
        }
      }
    };
    edges(headers.request(), "request");
    edges(headers.response(), "response");
    const v1::HeaderMutations& response = headers.response();
    for (int i = 0; i < response.remove_size(); ++i) {
      CheckNewResponseFieldName(response.remove(i), absl::StrCat("response.remove[", i, "]"),
                                ResponseEdit::kRemove, &found);
    }
    for (const auto& [list, what] :
         {std::pair{&response.set(), "set"}, std::pair{&response.add(), "add"}}) {
      for (int i = 0; i < list->size(); ++i) {
        CheckNewResponseFieldName(list->Get(i).name(),
                                  absl::StrCat("response.", what, "[", i, "].name"),
                                  ResponseEdit::kWrite, &found);
      }
    }
    for (auto& [field, message] : found) errors->push_back({field, message});
  }
};

const bool registered = api::RegisterPolicyValidator(std::make_unique<HeadersValidator>());

}  // namespace
}  // namespace sluice::policy::headers
