#include "dataplane/policy/jwt/jws.h"

#include <simdjson.h>

#include <algorithm>
#include <cmath>

#include "absl/status/status.h"
#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"

namespace sluice::policy::jwt {
namespace {

// In seconds: as milliseconds it stays within int64 with room for the
// leeway (2^52 s is some 140 million years).
constexpr int64_t kMaxNumericDate = int64_t{1} << 52;

absl::Status Malformed(std::string_view why) {
  return absl::InvalidArgumentError(absl::StrCat("malformed token: ", std::string(why)));
}

// This thread's parser, sized for the largest part of a token.
simdjson::dom::parser& ThreadParser() {
  thread_local simdjson::dom::parser parser(kMaxTokenBytes);
  thread_local bool allocated = false;
  if (!allocated) {
    // On failure (out of memory) parse() allocates on demand instead.
    allocated = parser.allocate(kMaxTokenBytes, kMaxJsonDepth) == simdjson::SUCCESS;
  }
  return parser;
}

// Parses `json` as an object whose member names are distinct. `what` names
// the part in errors ("header", "payload").
absl::Status ParseObject(simdjson::dom::parser& parser, std::string_view json,
                         std::string_view what, simdjson::dom::object* out) {
  simdjson::dom::element root;
  simdjson::error_code error = parser.parse(json.data(), json.size()).get(root);
  if (error == simdjson::DEPTH_ERROR) {
    return Malformed(absl::StrCat(std::string(what), " is nested deeper than ", kMaxJsonDepth,
                                  " levels"));
  }
  if (error == simdjson::NUMBER_ERROR) {
    // Often valid JSON (RFC 8259 6 lets a parser bound numbers): said so.
    return Malformed(absl::StrCat(std::string(what),
                                  " has a number this gateway cannot read (an integer beyond 64 "
                                  "bits, a value beyond a double's range, or not a JSON number)"));
  }
  if (error != simdjson::SUCCESS) return Malformed(absl::StrCat(std::string(what), " is not JSON"));
  if (root.get_object().get(*out) != simdjson::SUCCESS) {
    return Malformed(absl::StrCat(std::string(what), " is not a JSON object"));
  }
  std::vector<std::string_view> names;
  names.reserve(out->size());
  for (simdjson::dom::key_value_pair member : *out) names.push_back(member.key);
  std::sort(names.begin(), names.end());
  if (std::adjacent_find(names.begin(), names.end()) != names.end()) {
    return Malformed(absl::StrCat(std::string(what), " repeats a member name"));
  }
  return absl::OkStatus();
}

// A NumericDate in milliseconds, `round_up` for exp; false for a
// non-number. Whole seconds made a fractional exp up to a second late on a
// clock read in whole seconds (exp 990.2 still accepted at 990.9).
bool ReadNumericDate(simdjson::dom::element value, bool round_up, int64_t* out) {
  switch (value.type()) {
    case simdjson::dom::element_type::INT64: {
      int64_t v = 0;
      v = value.get_int64().value_unsafe();
      *out = std::clamp(v, -kMaxNumericDate, kMaxNumericDate) * 1000;
      return true;
    }
    case simdjson::dom::element_type::UINT64:
      *out = kMaxNumericDate * 1000;  // beyond INT64_MAX
      return true;
    case simdjson::dom::element_type::DOUBLE: {
      double v = 0;
      v = value.get_double().value_unsafe();
      v = round_up ? std::ceil(v * 1000) : std::floor(v * 1000);
      if (v >= static_cast<double>(kMaxNumericDate) * 1000) {
        *out = kMaxNumericDate * 1000;
      } else if (v <= -static_cast<double>(kMaxNumericDate) * 1000) {
        *out = -kMaxNumericDate * 1000;
      } else {
        *out = static_cast<int64_t>(v);
      }
      return true;
    }
    default:
      return false;
  }
}

// A string, number or boolean as header text; false for anything else.
bool RenderScalar(simdjson::dom::element value, std::string* out) {
  switch (value.type()) {
    case simdjson::dom::element_type::STRING: {
      std::string_view s;
      s = value.get_string().value_unsafe();
      out->append(s);
      return true;
    }
    case simdjson::dom::element_type::INT64: {
      int64_t v = 0;
      v = value.get_int64().value_unsafe();
      absl::StrAppend(out, v);
      return true;
    }
    case simdjson::dom::element_type::UINT64: {
      uint64_t v = 0;
      v = value.get_uint64().value_unsafe();
      absl::StrAppend(out, v);
      return true;
    }
    case simdjson::dom::element_type::DOUBLE:
      out->append(simdjson::minify(value));  // shortest text that reads back the same
      return true;
    case simdjson::dom::element_type::BOOL: {
      bool v = false;
      v = value.get_bool().value_unsafe();
      out->append(v ? "true" : "false");
      return true;
    }
    default:
      return false;
  }
}

// Text that a reader splitting a list on ',' (and trimming white space)
// reads back as this one item.
bool OneListItem(std::string_view item) {
  if (item.empty() || item.find(',') != std::string_view::npos) return false;
  auto space = [](char c) { return c == ' ' || c == '\t'; };
  return !space(item.front()) && !space(item.back());
}

ClaimValue Render(simdjson::dom::element value) {
  ClaimValue claim;
  if (value.type() == simdjson::dom::element_type::STRING) {
    claim.kind = ClaimValue::Kind::kString;
    RenderScalar(value, &claim.text);
    return claim;
  }
  if (value.type() == simdjson::dom::element_type::ARRAY) {
    simdjson::dom::array array;
    array = value.get_array().value_unsafe();
    bool first = true;
    for (simdjson::dom::element item : array) {
      if (!first) claim.text.push_back(',');
      first = false;
      const size_t item_start = claim.text.size();
      // An item must read back as one item: no ',' in it, not empty, no
      // white space at its ends (["user,admin"] is not two roles).
      if (!RenderScalar(item, &claim.text) ||
          !OneListItem(std::string_view(claim.text).substr(item_start))) {
        claim.text.clear();
        claim.kind = ClaimValue::Kind::kOther;
        return claim;
      }
    }
    claim.kind = ClaimValue::Kind::kRendered;
    return claim;
  }
  claim.kind = RenderScalar(value, &claim.text) ? ClaimValue::Kind::kRendered
                                                : ClaimValue::Kind::kOther;
  return claim;
}

// The 6-bit value of a base64url character, -1 for any other.
int Base64UrlValue(char c) {
  if (c >= 'A' && c <= 'Z') return c - 'A';
  if (c >= 'a' && c <= 'z') return c - 'a' + 26;
  if (c >= '0' && c <= '9') return c - '0' + 52;
  if (c == '-') return 62;
  if (c == '_') return 63;
  return -1;
}

}  // namespace

std::optional<std::string> DecodeBase64Url(std::string_view in) {
  if (in.size() % 4 == 1) return std::nullopt;
  for (char c : in) {
    if (Base64UrlValue(c) < 0) return std::nullopt;
  }
  // The bits past the last byte must be zero: one encoding per byte string,
  // so a token cannot be altered without changing what it says.
  if (in.size() % 4 == 2 && (Base64UrlValue(in.back()) & 0x0f) != 0) return std::nullopt;
  if (in.size() % 4 == 3 && (Base64UrlValue(in.back()) & 0x03) != 0) return std::nullopt;
  std::string out;
  if (!absl::WebSafeBase64Unescape(absl::string_view(in.data(), in.size()), &out)) {
    return std::nullopt;
  }
  return out;
}

absl::StatusOr<CompactJws> ParseCompactJws(std::string_view token) {
  if (token.size() > kMaxTokenBytes) {
    return Malformed(absl::StrCat("longer than ", kMaxTokenBytes, " bytes"));
  }
  size_t first = token.find('.');
  size_t second = first == std::string_view::npos ? first : token.find('.', first + 1);
  if (second == std::string_view::npos || token.find('.', second + 1) != std::string_view::npos) {
    return Malformed("not three base64url parts separated by dots");
  }
  std::string_view header_part = token.substr(0, first);
  std::string_view payload_part = token.substr(first + 1, second - first - 1);
  std::string_view signature_part = token.substr(second + 1);
  std::optional<std::string> header_json = DecodeBase64Url(header_part);
  if (!header_json) return Malformed("header is not base64url");
  std::optional<std::string> payload = DecodeBase64Url(payload_part);
  if (!payload) return Malformed("payload is not base64url");
  std::optional<std::string> signature = DecodeBase64Url(signature_part);
  if (!signature) return Malformed("signature is not base64url");

  CompactJws jws;
  simdjson::dom::object header;
  if (absl::Status s = ParseObject(ThreadParser(), *header_json, "header", &header); !s.ok()) {
    return s;
  }
  bool has_alg = false;
  for (simdjson::dom::key_value_pair member : header) {
    std::string_view text;
    bool is_string = member.value.get_string().get(text) == simdjson::SUCCESS;
    if (member.key == "alg") {
      if (!is_string || text.empty()) return Malformed("header alg is not a non-empty string");
      jws.header.alg = std::string(text);
      has_alg = true;
    } else if (member.key == "kid") {
      if (!is_string) return Malformed("header kid is not a string");
      jws.header.kid = std::string(text);
    } else if (member.key == "typ") {
      if (!is_string) return Malformed("header typ is not a string");
      jws.header.typ = std::string(text);
    } else if (member.key == "crit") {
      return Malformed("header has crit (no extension is supported)");
    }
  }
  if (!has_alg) return Malformed("header has no alg");
  jws.signing_input = token.substr(0, second);
  jws.payload = std::move(*payload);
  jws.signature = std::move(*signature);
  return jws;
}

absl::StatusOr<Claims> ParseClaims(std::string_view payload,
                                   absl::Span<const std::string> wanted) {
  simdjson::dom::object object;
  if (absl::Status s = ParseObject(ThreadParser(), payload, "payload", &object); !s.ok()) {
    return s;
  }
  Claims claims;
  claims.wanted.resize(wanted.size());
  for (simdjson::dom::key_value_pair member : object) {
    if (member.key == "exp") {
      int64_t v;
      if (!ReadNumericDate(member.value, /*round_up=*/true, &v)) {
        return Malformed("exp is not a number");
      }
      claims.exp = v;
    } else if (member.key == "nbf") {
      int64_t v;
      if (!ReadNumericDate(member.value, /*round_up=*/false, &v)) {
        return Malformed("nbf is not a number");
      }
      claims.nbf = v;
    } else if (member.key == "iss") {
      std::string_view v;
      if (member.value.get_string().get(v) != simdjson::SUCCESS) {
        return Malformed("iss is not a string");
      }
      claims.iss = std::string(v);
    } else if (member.key == "aud") {
      std::vector<std::string> aud;
      std::string_view v;
      simdjson::dom::array array;
      if (member.value.get_string().get(v) == simdjson::SUCCESS) {
        aud.emplace_back(v);
      } else if (member.value.get_array().get(array) == simdjson::SUCCESS) {
        for (simdjson::dom::element item : array) {
          if (item.get_string().get(v) != simdjson::SUCCESS) {
            return Malformed("aud is not a string or an array of strings");
          }
          aud.emplace_back(v);
        }
      } else {
        return Malformed("aud is not a string or an array of strings");
      }
      claims.aud = std::move(aud);
    }
    for (size_t i = 0; i < wanted.size(); ++i) {
      if (member.key == wanted[i]) claims.wanted[i] = Render(member.value);
    }
  }
  return claims;
}

}  // namespace sluice::policy::jwt
