#include "tests/dataplane/policy/jwt_material.h"

#include <simdjson.h>

#include "absl/strings/str_cat.h"
#include "tests/harness/process.h"

namespace sluice::testing {
namespace {

bool ReadStrings(simdjson::dom::element root, const char* name,
                 std::map<std::string, std::string>* out) {
  simdjson::dom::object object;
  if (root[name].get_object().get(object) != simdjson::SUCCESS) return false;
  for (simdjson::dom::key_value_pair field : object) {
    std::string_view value;
    if (field.value.get_string().get(value) != simdjson::SUCCESS) return false;
    (*out)[std::string(field.key)] = std::string(value);
  }
  return true;
}

}  // namespace

std::string JwtMaterial::token(const std::string& name) const {
  auto it = tokens.find(name);
  return it == tokens.end() ? std::string() : it->second;
}

JwtMaterial MakeJwtMaterial(int64_t now) {
  JwtMaterial m;
  m.now = now;
  CommandResult r = RunCommand({"/usr/bin/python3",
                                RunfilePath("tests/dataplane/policy/jwt_tokens.py"), "--now",
                                absl::StrCat(now)});
  if (r.exit_code != 0) {
    m.error = absl::StrCat("jwt_tokens.py exited with ", r.exit_code, ": ", r.err);
    return m;
  }
  simdjson::dom::parser parser;
  simdjson::dom::element root;
  if (parser.parse(r.out).get(root) != simdjson::SUCCESS || !ReadStrings(root, "jwks", &m.jwks) ||
      !ReadStrings(root, "pem", &m.pem) || !ReadStrings(root, "bad_jwks", &m.bad_jwks) ||
      !ReadStrings(root, "tokens", &m.tokens)) {
    m.error = absl::StrCat("jwt_tokens.py printed what does not parse: ", r.out.substr(0, 200));
    return m;
  }
  return m;
}

}  // namespace sluice::testing
