// The `realm` rules key-auth and basic-auth share: the realm goes into their
// WWW-Authenticate challenge as a quoted string.
#ifndef SLUICE_DATAPLANE_POLICY_REALM_RULES_H_
#define SLUICE_DATAPLANE_POLICY_REALM_RULES_H_

#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "api/policy_registry.h"

namespace sluice::policy {

inline constexpr size_t kMaxRealmLength = 128;

// Always: at most kMaxRealmLength characters, no '"', '\' or line break.
inline void CheckRealm(const std::string& realm, std::vector<api::PolicyConfigError>* errors) {
  if (realm.size() > kMaxRealmLength || realm.find_first_of("\"\\\r\n") != std::string::npos) {
    errors->push_back({"realm", absl::StrCat("at most ", kMaxRealmLength,
                                             " characters, without quotes, backslashes or "
                                             "line breaks")});
  }
}

// At apply only (PolicyValidator::ValidateNew): no other control character.
// One breaks the challenge: HTTP/1 would send it raw (RFC 9110 5.5 forbids
// it), HTTP/2 drops the field and the 401 goes without the WWW-Authenticate
// RFC 9110 15.5.2 requires. Earlier builds accepted one.
inline void CheckRealmNew(const std::string& realm, std::vector<api::PolicyConfigError>* errors) {
  for (size_t i = 0; i < realm.size(); ++i) {
    const unsigned char c = static_cast<unsigned char>(realm[i]);
    if ((c < 0x20 && c != '\t') || c == 0x7f) {
      errors->push_back({"realm", absl::StrCat("has a control character at position ", i + 1,
                                               " (byte 0x", absl::Hex(c, absl::kZeroPad2),
                                               "); a challenge cannot carry it")});
      return;
    }
  }
}

}  // namespace sluice::policy

#endif  // SLUICE_DATAPLANE_POLICY_REALM_RULES_H_
