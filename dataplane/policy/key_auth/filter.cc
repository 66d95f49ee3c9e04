// The `key-auth` policy's filter: finds the API key in a header or the
// query, looks its consumer up (one SHA-256 and one hash probe), and
// removes the key before the request goes upstream.
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "dataplane/auth/consumers.h"
#include "dataplane/http/filter.h"
#include "dataplane/policy/auth_util.h"
#include "dataplane/policy/key_auth/key_auth_config.pb.h"
#include "dataplane/policy/registry.h"

namespace sluice::policy::key_auth {
namespace {

struct Settings {
  std::vector<std::string> key_names;
  bool in_header = true;
  bool in_query = true;
  bool keep_credentials = false;
  std::string anonymous;
  std::string challenge;  // WWW-Authenticate value
};

class KeyAuthFilter : public http::Filter {
 public:
  explicit KeyAuthFilter(const Settings& settings) : settings_(settings) {}

  http::FilterStatus OnRequestHeaders(http::HeaderMap& headers,
                                      http::FilterCallbacks& callbacks) override {
    // One key per request (Kong: "Duplicate API key found"): with two, the
    // key checked (the first) need not be the one an upstream reads (the
    // last, with keep_credentials). Refused whatever the anonymous consumer.
    // A field counts in any spelling CGI reads as the key's (`x_api_key`
    // is `x-api-key` to PHP or Rack), once whichever of the names it is
    // (key_names may list two spellings of one field).
    size_t keys = 0;
    if (settings_.in_header) {
      for (const http::HeaderMap::Field& f : headers.fields()) {
        for (const std::string& name : settings_.key_names) {
          if (http::SameCgiName(f.name, name)) {
            ++keys;
            break;
          }
        }
      }
    }
    if (settings_.in_query) {
      for (const std::string& name : settings_.key_names) {
        keys += CountQueryParameter(callbacks.info().path, name);
      }
    }
    if (keys > 1) {
      // Refused, and no key goes into the access log's path either.
      const bool after_semicolon = KeyAfterSemicolon(callbacks);
      if (!after_semicolon && settings_.in_query) {
        for (const std::string& name : settings_.key_names) {
          if (FindQueryParameter(callbacks.info().path, name)) {
            callbacks.SetPath(RemoveQueryParameter(callbacks.info().path, name));
          }
        }
      }
      return Reject(callbacks, 401, "more than one API key found in request", settings_.challenge,
                    after_semicolon);
    }
    // A key parameter after a ';' (`?x=1;apikey=k`) is neither checked nor
    // removed, and Rack 2, Python before 3.9.2 and Go before 1.17 read it
    // (as jwt refuses it).
    if (KeyAfterSemicolon(callbacks)) {
      return Reject(callbacks, 400, "API key query parameter after a ';'", "", true);
    }
    DropUnlistedSpellings(headers);
    std::string key;
    bool found = false;
    for (const std::string& name : settings_.key_names) {
      if (settings_.in_header) {
        if (const std::string* value = headers.Get(name)) {
          key = *value;
          found = true;
        }
      }
      if (!found && settings_.in_query) {
        if (auto value = FindQueryParameter(callbacks.info().path, name)) {
          key = std::move(*value);
          found = true;
        }
      }
      if (!found) continue;
      // Both places lose the name, whichever held the key used (as Kong's
      // hide_credentials does): a second key must not reach the upstream.
      if (!settings_.keep_credentials) {
        if (settings_.in_header) headers.Remove(name);
        if (settings_.in_query && FindQueryParameter(callbacks.info().path, name)) {
          callbacks.SetPath(RemoveQueryParameter(callbacks.info().path, name));
        }
      } else if (settings_.in_query) {
        callbacks.HideQueryParameterFromLog(name);  // the upstream has it, the log not
      }
      break;
    }
    if (!found || key.empty()) {
      return Unaccepted(headers, callbacks, "no API key found in request");
    }
    const auth::Consumer* consumer = callbacks.consumers().FindByKey(key);
    if (consumer == nullptr) {
      return Unaccepted(headers, callbacks, "invalid API key");
    }
    callbacks.SetConsumer(consumer, /*anonymous=*/false);
    return http::FilterStatus::kContinue;
  }

  // Another policy identified the caller (or none did): the keys go,
  // whatever keep_credentials says (it keeps what this policy accepted).
  void OnSkippedInGroup(http::HeaderMap& headers, http::FilterCallbacks& callbacks) override {
    RemoveKeys(headers, callbacks);
  }

 private:
  // No key accepted: 401, or the anonymous consumer, for whom every key goes
  // first, as when another policy identified the caller (a refused key that
  // keep_credentials would keep).
  http::FilterStatus Unaccepted(http::HeaderMap& headers, http::FilterCallbacks& callbacks,
                                std::string_view message) {
    if (!settings_.anonymous.empty()) RemoveKeys(headers, callbacks);
    return RefuseOrAnonymous(callbacks, settings_.anonymous, message, settings_.challenge);
  }

  void RemoveKeys(http::HeaderMap& headers, http::FilterCallbacks& callbacks) {
    DropUnlistedSpellings(headers);
    for (const std::string& name : settings_.key_names) {
      if (settings_.in_header) headers.Remove(name);
      // After a ';' too (`?x=1;apikey=k`): no policy checked it.
      if (settings_.in_query && (FindQueryParameter(callbacks.info().path, name) ||
                                 QueryParameterAfterSemicolon(callbacks.info().path, name))) {
        callbacks.SetPath(RemoveQueryParameter(callbacks.info().path, name));
      }
    }
  }

  bool KeyAfterSemicolon(const http::FilterCallbacks& callbacks) const {
    if (!settings_.in_query) return false;
    for (const std::string& name : settings_.key_names) {
      if (QueryParameterAfterSemicolon(callbacks.info().path, name)) return true;
    }
    return false;
  }

  // A key field in a spelling not listed is no key this policy checks, but
  // an upstream would read it as one: it never goes on, whatever
  // keep_credentials says, for an anonymous caller too.
  void DropUnlistedSpellings(http::HeaderMap& headers) const {
    if (!settings_.in_header) return;
    for (const std::string& name : settings_.key_names) {
      headers.RemoveOtherCgiSpellings(name, settings_.key_names);
    }
  }

  const Settings& settings_;
};

class KeyAuthFilterFactory : public http::FilterFactory {
 public:
  explicit KeyAuthFilterFactory(Settings settings) : settings_(std::move(settings)) {}
  std::unique_ptr<http::Filter> CreateFilter() const override {
    return std::make_unique<KeyAuthFilter>(settings_);
  }
  std::string_view policy_name() const override { return "key-auth"; }
  http::FilterPhase phase() const override { return http::FilterPhase::kAuthentication; }
  bool reads_query_credential() const override { return settings_.in_query; }
  // A key in a trailer is one the gateway never checked.
  const std::vector<std::string>& removed_request_fields() const override { return removed_; }

 private:
  const Settings settings_;
  const std::vector<std::string> removed_ =
      settings_.in_header ? settings_.key_names : std::vector<std::string>();
};

class KeyAuthPolicyFactory : public PolicyFactory {
 public:
  std::string name() const override { return "key-auth"; }
  absl::StatusOr<std::shared_ptr<const http::FilterFactory>> Compile(
      const google::protobuf::Message& message) const override {
    const auto& config = static_cast<const v1::KeyAuthConfig&>(message);
    Settings s;
    s.key_names.assign(config.key_names().begin(), config.key_names().end());
    if (s.key_names.empty()) s.key_names.push_back("apikey");
    s.in_header = !config.has_key_in_header() || config.key_in_header();
    s.in_query = !config.has_key_in_query() || config.key_in_query();
    s.keep_credentials = config.keep_credentials();
    s.anonymous = config.anonymous();
    s.challenge = absl::StrCat("Key realm=\"", config.realm().empty() ? "sluice" : config.realm(),
                               "\"");
    return std::shared_ptr<const http::FilterFactory>(
        std::make_shared<KeyAuthFilterFactory>(std::move(s)));
  }
};

const bool registered = RegisterPolicyFactory(std::make_unique<KeyAuthPolicyFactory>());

}  // namespace
}  // namespace sluice::policy::key_auth
