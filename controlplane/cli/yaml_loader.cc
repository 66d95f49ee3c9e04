#include "controlplane/cli/yaml_loader.h"

#include <dirent.h>
#include <sys/stat.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <fstream>
#include <iostream>
#include <map>
#include <optional>
#include <set>
#include <sstream>
#include <type_traits>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_replace.h"
#include "absl/strings/str_split.h"
#include "api/discovery.h"
#include "api/policy_registry.h"
#include "api/regex_limit.h"
#include "api/validation.h"
#include "common/nearest.h"
#include "common/utf8.h"
#include "google/protobuf/descriptor.h"
#include "google/protobuf/duration.pb.h"
#include "google/protobuf/util/json_util.h"
#include "controlplane/cli/fast_yaml.h"
#include "re2/re2.h"
#include "yaml-cpp/yaml.h"

namespace sluice::cli {
namespace {

// At most 20 errors, then a count, as the control plane answers (a file of
// 5,000 bad routes printed 5,000 lines).
std::string JoinErrors(const std::vector<std::string>& errors) {
  constexpr size_t kMaxShown = 20;
  std::vector<std::string> shown(errors.begin(),
                                 errors.begin() + std::min(errors.size(), kMaxShown));
  if (errors.size() > kMaxShown) {
    shown.push_back(absl::StrCat("... and ", errors.size() - kMaxShown, " more errors"));
  }
  return absl::StrJoin(shown, "\n");
}

// A config duration as operators write it (5s, 250ms, 1m30s, 720h) in whole
// nanoseconds: "" and `*nanos`, or why not. A fraction of a nanosecond
// ("0.1ns") is refused rather than read as 0s, which turns most timeouts
// off; so is "inf" or anything past 100 years (it was read as int64's
// 2562047h47m16s and reported so).
std::string ParseConfigDuration(const std::string& text, int64_t* nanos) {
  absl::Duration d;
  // "-0s" is no duration either (it was read as 0s, which turns a route's
  // timeout off).
  if (absl::StartsWith(text, "-") || !absl::ParseDuration(text, &d) ||
      d < absl::ZeroDuration()) {
    return absl::StrCat("'", api::Shown(text), "' is not a duration (examples: 5s, 250ms, 1m)");
  }
  if (d >= absl::Hours(24 * 365 * 100)) {
    return absl::StrCat("'", api::Shown(text), "' is not a duration this config takes: over 100 years");
  }
  *nanos = absl::ToInt64Nanoseconds(d);
  // absl keeps quarters of a nanosecond: "0.1ns" (or "-0.1ns") is exactly 0.
  const bool below_resolution =
      d == absl::ZeroDuration() && text.find_first_of("123456789") != std::string::npos;
  if (absl::Nanoseconds(*nanos) != d || below_resolution) {
    return absl::StrCat("'", api::Shown(text), "' is not a whole number of nanoseconds");
  }
  return "";
}

// The error for an unsigned field's value `text`: not a number, or past
// the field's range (a value over 2^32 - 1 is not "negative").
std::string IntegerRangeError(const std::string& text, bool is32) {
  uint64_t v = 0;
  const bool digits = !text.empty() && std::all_of(text.begin(), text.end(), [](char c) {
    return c >= '0' && c <= '9';
  });
  if (digits && (!absl::SimpleAtoi(text, &v) || is32)) {
    return absl::StrCat("expected an integer 0..", is32 ? "4294967295" : "18446744073709551615",
                        ", got '", api::Shown(text), "'");
  }
  return absl::StrCat("expected a non-negative integer, got '", api::Shown(text), "'");
}

// An integer written with a leading zero (0100, -012): YAML 1.2, as read
// here, takes it as decimal, YAML 1.1 tools (PyYAML, some editors and
// generators) as octal: refused rather than read one way silently. "" when
// `text` has none.
std::string LeadingZeroError(const std::string& text) {
  const size_t digits = !text.empty() && (text[0] == '-' || text[0] == '+') ? 1 : 0;
  auto is_digit = [](char c) { return c >= '0' && c <= '9'; };
  if (text.size() < digits + 2 || text[digits] != '0' ||
      !std::all_of(text.begin() + digits, text.end(), is_digit)) {
    return "";
  }
  return absl::StrCat("'", text, "' has a leading zero (YAML 1.1 tools read such a number as "
                      "octal); write it without the zero");
}

// The values a user may write for an enum field: the placeholder for "not
// set" (FOO_UNSPECIFIED, number 0) is not one to offer.
std::string EnumChoices(const google::protobuf::EnumDescriptor& type) {
  std::vector<std::string> names;
  for (int i = 0; i < type.value_count(); ++i) {
    const std::string& name = type.value(i)->name();
    if (type.value(i)->number() == 0 && absl::EndsWith(name, "_UNSPECIFIED")) continue;
    names.push_back(name);
  }
  return absl::StrJoin(names, ", ");
}

// A null where a message goes (`tls:` with nothing after it, `tls: ~`): not
// taken as "unset" (protobuf JSON's reading) nor as "set, all defaults"
// (what an empty mapping is), since a user can mean either; for `tls` the
// wrong guess is plaintext or a failing handshake.
std::string NullMessageError(const google::protobuf::Descriptor& type) {
  if (absl::StartsWith(type.file()->name(), "google/protobuf/")) {
    return "is null (a key with nothing after it): leave the field out for its default";
  }
  return absl::StrCat("is null (a key with nothing after it): leave the field out to not set "
                      "it, or write {} for a ", type.name(), " with every default");
}

// An unknown key as an error message shows it. A key that cannot be a field
// name is not quoted: it is often a line of a multi-line value (a PEM
// private key) that fell out of its indentation, and an error message must
// not print key material.
// A '-' (no base64 line holds one) is a field name spelled the nginx or
// Kong way: shown, with the '_' spelling.
bool FieldNameLike(absl::string_view key) {
  if (key.empty() || key.size() > 48 || absl::ascii_isdigit(key[0])) return false;
  for (char c : key) {
    if (!absl::ascii_isalnum(c) && c != '_' && c != '-') return false;
  }
  return true;
}

std::string ShownKey(const std::string& key) {
  if (key == "<<") return "'<<' (YAML merge keys are not supported: write the fields out)";
  if (FieldNameLike(key) && key.find('-') != std::string::npos) {
    std::string underscored = key;
    std::replace(underscored.begin(), underscored.end(), '-', '_');
    return absl::StrCat("'", key, "' (field names are written with '_': ", underscored, ")");
  }
  return FieldNameLike(key) ? absl::StrCat("'", key, "'")
                            : absl::StrCat("of ", key.size(),
                                           " characters, not quoted (not a field name: a line of a "
                                           "multi-line value out of its indentation? write "
                                           "`field: |` and indent every line below it)");
}

// A key `type` has no field for, with its fields and the one a typo
// likely meant.
std::string UnknownFieldError(const std::string& key, const google::protobuf::Descriptor& type) {
  std::vector<std::string> names;
  for (int i = 0; i < type.field_count(); ++i) names.push_back(type.field(i)->name());
  std::string near = common::Nearest(key, names);
  // ShownKey names a kebab-case key's '_' spelling already.
  if (near == absl::StrReplaceAll(key, {{"-", "_"}})) near.clear();
  return absl::StrCat("unknown field ", ShownKey(key), " in ", type.name(), " (fields: ",
                      absl::StrJoin(names, ", "), ")",
                      near.empty() ? "" : absl::StrCat("; did you mean '", near, "'?"));
}

// A value `type` has no name for, with the names and the one a typo
// likely meant.
std::string UnknownEnumError(const std::string& text,
                             const google::protobuf::EnumDescriptor& type) {
  std::vector<std::string> names;
  for (int i = 0; i < type.value_count(); ++i) names.push_back(type.value(i)->name());
  std::string near = common::Nearest(absl::AsciiStrToUpper(text), names);
  if (absl::EndsWith(near, "_UNSPECIFIED")) near.clear();
  return absl::StrCat("'", api::Shown(text), "' is not one of ", EnumChoices(type),
                      near.empty() ? "" : absl::StrCat("; did you mean '", near, "'?"));
}

// The key in an error's field path: "?" for one ShownKey does not quote.
std::string PathKey(const std::string& key) {
  return FieldNameLike(key) || key == "<<" ? key : "?";
}

using google::protobuf::Descriptor;
using google::protobuf::FieldDescriptor;

// "expected a single value", which kind, and what was written instead (a
// list where Envoy takes one and Sluice one string: `cipher_suites`).
template <typename Node>
std::string SingleValueExpected(const Node& node, const FieldDescriptor* field) {
  const char* wanted = "a number";
  switch (field->cpp_type()) {
    case FieldDescriptor::CPPTYPE_STRING:
      wanted = "a string";
      break;
    case FieldDescriptor::CPPTYPE_BOOL:
      wanted = "true or false";
      break;
    case FieldDescriptor::CPPTYPE_ENUM:
      wanted = "one of its names";
      break;
    default:
      break;
  }
  return absl::StrCat("expected a single value (", wanted, "), got a ",
                      node.IsSequence() ? "list" : "mapping");
}

// Converts a YAML node to protobuf JSON while checking it against the
// message's descriptor, so that errors carry YAML line numbers. `Node` is
// YAML::Node or FastYamlNode (same tree, same lines).
template <typename Node>
class SpecConverter {
 public:
  // `resource`: the resource the spec is of, for errors (`Cluster "web"`).
  SpecConverter(std::string where, std::string resource)
      : where_(std::move(where)), resource_(std::move(resource)) {}

  bool ConvertMessage(const Node& node, const Descriptor* type,
                      const std::string& path, std::string* json) {
    if (type->full_name() == "google.protobuf.Duration") {
      return ConvertDuration(node, path, json);
    }
    if (type->file()->name() == "google/protobuf/wrappers.proto") {
      // UInt32Value and friends: written as the bare value.
      return ConvertSingle(node, type->FindFieldByName("value"), path, json);
    }
    if (type->full_name() == "google.protobuf.Any") {
      // The policy's own message: checked by the validation library.
      *json = ToJsonValue(node);
      return true;
    }
    if (node.IsNull()) {
      *json = "{}";
      return true;
    }
    if (!node.IsMap()) {
      return Fail(node, path, absl::StrCat("expected a mapping (the fields of ",
                                           type->name(), ")"));
    }
    std::vector<std::string> members;
    for (const auto& item : node) {
      std::string key = item.first.template as<std::string>();
      if (key == "@type" && !type_key_path_.empty() && path == type_key_path_) continue;
      const FieldDescriptor* field = type->FindFieldByName(key);
      for (int i = 0; field == nullptr && i < type->field_count(); ++i) {
        if (type->field(i)->json_name() == key) field = type->field(i);
      }
      std::string field_path = Join(path, field ? field->name() : PathKey(key));
      if (field == nullptr) return Fail(item.first, field_path, UnknownFieldError(key, *type));
      std::string value;
      if (item.second.IsNull() && !field->is_repeated() &&
          type->full_name() != "sluice.config.v1.TypedExtensionConfig") {
        // `tls:` with nothing after it: the null's mark is the next token's
        // (a later line, past blank lines, or one past the file's end), so
        // the error names the key's line.
        Remember(item.first, field_path);
        return Fail(item.first, field_path,
                    field->type() == FieldDescriptor::TYPE_MESSAGE
                        ? NullMessageError(*field->message_type())
                        : "is null (a key with nothing after it, or ~): leave the field out "
                          "for its default");
      }
      if (type->full_name() == "sluice.config.v1.TypedExtensionConfig" &&
          field->name() == "typed_config") {
        if (!ConvertPolicyConfig(node, item.second, field_path, &value)) return false;
      } else if (!ConvertField(item.second, field, field_path, &value)) {
        return false;
      }
      members.push_back(absl::StrCat("\"", field->json_name(), "\":", value));
    }
    *json = absl::StrCat("{", absl::StrJoin(members, ","), "}");
    return true;
  }

  const std::string& error() const { return error_; }
  const std::map<std::string, int>& lines() const { return lines_; }

  // A policy's typed_config: its "@type" may be left out, and is then taken
  // from the policy's name (the registry knows each policy's config type).
  bool ConvertPolicyConfig(const Node& policy, const Node& config,
                           const std::string& path, std::string* json) {
    Remember(config, path);
    if (!config.IsNull() && !config.IsMap()) {
      return Fail(config, path, "expected a mapping (the policy's settings)");
    }
    std::string name = policy["name"] && policy["name"].IsScalar() ? policy["name"].Scalar() : "";
    const api::PolicyValidator* validator = api::FindPolicyValidator(name);
    if (validator == nullptr) {
      // The error is the policy's name's (path ends in "typed_config").
      std::string name_path = path;
      if (absl::EndsWith(name_path, "typed_config")) {
        name_path.replace(name_path.size() - std::string_view("typed_config").size(),
                          std::string_view("typed_config").size(), "name");
      }
      if (name.empty()) return Fail(policy["name"] ? policy["name"] : policy, name_path, "is required");
      std::vector<std::string> names = api::RegisteredPolicyNames();
      // Names are lower case: `JWT` and `ACL` are typed in capitals.
      std::string near = common::Nearest(absl::AsciiStrToLower(name), names);
      return Fail(policy["name"] ? policy["name"] : policy, name_path,
                  absl::StrCat("unknown policy '", api::Shown(name), "' (this build has: ",
                               names.empty() ? std::string("none") : absl::StrJoin(names, ", "),
                               ")", near.empty() ? "" : absl::StrCat("; did you mean '", near, "'?")));
    }
    const std::string expected =
        absl::StrCat("type.googleapis.com/", validator->config_type()->full_name());
    std::string type = absl::StrCat("\"@type\":", Quote(expected));
    if (config.IsMap() && config["@type"]) {
      // As `sluicectl get` writes it: the policy's own type, or refused
      // here, with its line. Before, a config with "@type" skipped the
      // conversion below, and its errors lost their line and field path.
      const Node at_type = config["@type"];
      if (!at_type.IsScalar() || at_type.Scalar() != expected) {
        const std::string given = at_type.IsScalar() ? at_type.Scalar() : "";
        return Fail(at_type, Join(path, "@type"),
                    absl::StrCat("is '", api::Shown(given.substr(0, 128)), "', policy '", name,
                                 "' takes '", expected, "' (or leave \"@type\" out)"));
      }
    }
    // Converted against the policy's own message, as the rest of the spec
    // is: durations as operators write them (250ms, 1m, 1h), and a wrong
    // field or value named with its path and line.
    std::string body = "{}";
    type_key_path_ = path;  // its "@type" is no field
    const bool converted =
        !config.IsMap() || ConvertMessage(config, validator->config_type(), path, &body);
    type_key_path_.clear();
    if (!converted) return false;
    *json = body == "{}" ? absl::StrCat("{", type, "}")
                         : absl::StrCat("{", type, ",", body.substr(1));
    return true;
  }

 private:
  static std::string Join(const std::string& path, const std::string& field) {
    return path.empty() ? field : absl::StrCat(path, ".", field);
  }

  bool Fail(const Node& node, const std::string& path, const std::string& message) {
    error_ = absl::StrCat(where_, ", line ", node.Mark().line + 1, ": ", resource_, ": ",
                          path.empty() ? "spec" : "spec." + path, ": ", message);
    return false;
  }

  void Remember(const Node& node, const std::string& path) {
    if (node.Mark().line >= 0) lines_.emplace(path, node.Mark().line + 1);
  }

  bool ConvertField(const Node& node, const FieldDescriptor* field,
                    const std::string& path, std::string* json) {
    Remember(node, path);
    if (field->is_map()) {
      if (!node.IsMap()) return Fail(node, path, "expected a mapping");
      const FieldDescriptor* value_field = field->message_type()->map_value();
      std::vector<std::string> members;
      for (const auto& item : node) {
        std::string value;
        std::string key = item.first.template as<std::string>();
        if (!ConvertSingle(item.second, value_field, absl::StrCat(path, "[", key, "]"), &value)) {
          return false;
        }
        members.push_back(absl::StrCat(Quote(key), ":", value));
      }
      *json = absl::StrCat("{", absl::StrJoin(members, ","), "}");
      return true;
    }
    if (field->is_repeated()) {
      if (node.IsNull()) {
        *json = "[]";
        return true;
      }
      if (!node.IsSequence()) return Fail(node, path, "expected a list");
      std::vector<std::string> items;
      for (size_t i = 0; i < node.size(); ++i) {
        std::string item_path = absl::StrCat(path, "[", i, "]");
        Remember(node[i], item_path);
        std::string value;
        if (!ConvertSingle(node[i], field, item_path, &value)) return false;
        items.push_back(std::move(value));
      }
      *json = absl::StrCat("[", absl::StrJoin(items, ","), "]");
      return true;
    }
    return ConvertSingle(node, field, path, json);
  }

  bool ConvertSingle(const Node& node, const FieldDescriptor* field,
                     const std::string& path, std::string* json) {
    if (field->type() == FieldDescriptor::TYPE_MESSAGE) {
      if (node.IsNull()) return Fail(node, path, NullMessageError(*field->message_type()));
      return ConvertMessage(node, field->message_type(), path, json);
    }
    if (node.IsNull()) {
      return Fail(node, path,
                  "is null (a key with nothing after it, or ~): leave the field out for its "
                  "default");
    }
    if (!node.IsScalar()) return Fail(node, path, SingleValueExpected(node, field));
    const std::string text = node.Scalar();
    switch (field->cpp_type()) {
      case FieldDescriptor::CPPTYPE_STRING:
        // Said here, with the field's path and line: the JSON parser's own
        // message named neither ("Encountered non UTF-8 code points").
        if (field->type() == FieldDescriptor::TYPE_STRING) {
          if (size_t at = common::InvalidUtf8At(text); at != std::string::npos) {
            return Fail(node, path, absl::StrCat("is not valid UTF-8 (byte ", at, " of ",
                                                 text.size(), ")"));
          }
        }
        *json = Quote(text);
        return true;
      case FieldDescriptor::CPPTYPE_BOOL:
        if (text == "true" || text == "false") {
          *json = text;
          return true;
        }
        return Fail(node, path, absl::StrCat("expected true or false, got '", api::Shown(text), "'"));
      case FieldDescriptor::CPPTYPE_ENUM: {
        const auto* value = field->enum_type()->FindValueByName(absl::AsciiStrToUpper(text));
        if (value == nullptr) {
          return Fail(node, path, UnknownEnumError(text, *field->enum_type()));
        }
        *json = Quote(value->name());
        return true;
      }
      case FieldDescriptor::CPPTYPE_INT32:
      case FieldDescriptor::CPPTYPE_INT64: {
        if (std::string zero = LeadingZeroError(text); !zero.empty()) return Fail(node, path, zero);
        int64_t v;
        if (!absl::SimpleAtoi(text, &v) ||
            (field->cpp_type() == FieldDescriptor::CPPTYPE_INT32 &&
             (v < INT32_MIN || v > INT32_MAX))) {
          return Fail(node, path, absl::StrCat("expected an integer, got '", api::Shown(text), "'"));
        }
        *json = absl::StrCat(v);
        return true;
      }
      case FieldDescriptor::CPPTYPE_UINT32:
      case FieldDescriptor::CPPTYPE_UINT64: {
        if (std::string zero = LeadingZeroError(text); !zero.empty()) return Fail(node, path, zero);
        uint64_t v;
        const bool is32 = field->cpp_type() == FieldDescriptor::CPPTYPE_UINT32;
        if (!absl::SimpleAtoi(text, &v) || (is32 && v > UINT32_MAX)) {
          return Fail(node, path, IntegerRangeError(text, is32));
        }
        *json = absl::StrCat(v);
        return true;
      }
      case FieldDescriptor::CPPTYPE_DOUBLE:
      case FieldDescriptor::CPPTYPE_FLOAT: {
        double v;
        if (!absl::SimpleAtod(text, &v)) {
          return Fail(node, path, absl::StrCat("expected a number, got '", api::Shown(text), "'"));
        }
        *json = text;
        return true;
      }
      default:
        return Fail(node, path, "unsupported field type");
    }
  }

  bool ConvertDuration(const Node& node, const std::string& path, std::string* json) {
    if (!node.IsScalar()) return Fail(node, path, "expected a duration such as 5s or 250ms");
    std::string text = node.Scalar();
    // Accept what operators write (250ms, 1m30s, 5s) and emit protobuf's form.
    int64_t nanos = 0;
    if (std::string why = ParseConfigDuration(text, &nanos); !why.empty()) {
      return Fail(node, path, why);
    }
    *json = Quote(absl::StrFormat("%d.%09ds", nanos / 1000000000, nanos % 1000000000));
    return true;
  }

  static std::string Quote(const std::string& text) {
    std::string out = "\"";
    for (unsigned char c : text) {
      switch (c) {
        case '"': out += "\\\""; break;
        case '\\': out += "\\\\"; break;
        case '\n': out += "\\n"; break;
        case '\r': out += "\\r"; break;
        case '\t': out += "\\t"; break;
        default:
          if (c < 0x20) {
            char buf[8];
            std::snprintf(buf, sizeof(buf), "\\u%04x", c);
            out += buf;
          } else {
            out += static_cast<char>(c);
          }
      }
    }
    out += "\"";
    return out;
  }

  // Untyped conversion for google.protobuf.Any payloads.
  static std::string ToJsonValue(const Node& node) {
    if (node.IsMap()) {
      std::vector<std::string> members;
      for (const auto& item : node) {
        members.push_back(absl::StrCat(Quote(item.first.template as<std::string>()), ":",
                                       ToJsonValue(item.second)));
      }
      return absl::StrCat("{", absl::StrJoin(members, ","), "}");
    }
    if (node.IsSequence()) {
      std::vector<std::string> items;
      for (const auto& item : node) items.push_back(ToJsonValue(item));
      return absl::StrCat("[", absl::StrJoin(items, ","), "]");
    }
    if (node.IsNull()) return "null";
    const std::string& text = node.Scalar();
    // A JSON number as it is; anything else a number parser would take
    // (inf, nan, 0x1F, +1) is a string: raw, it is no JSON.
    static const RE2* const kJsonNumber =
        new RE2("-?(0|[1-9][0-9]*)(\\.[0-9]+)?([eE][-+]?[0-9]+)?");
    if (node.Tag() != "!" &&
        (text == "true" || text == "false" || RE2::FullMatch(text, *kJsonNumber))) {
      return text;
    }
    return Quote(text);
  }

  std::string where_;
  std::string resource_;
  std::string error_;
  std::map<std::string, int> lines_;
  // The typed_config being converted, whose "@type" key is no field.
  std::string type_key_path_;
};

// Fills a message straight from the YAML tree, with the checks and error
// messages of SpecConverter in the same order, without the JSON text and
// protobuf's JSON parser in between (most of the loader's time on big
// files). What it does not do itself (google.protobuf.Any and other
// well-known types but Duration and the wrappers, bytes, floating point,
// non-ASCII text, a field or oneof set twice) it leaves to SpecConverter:
// kUnsupported, and the caller converts the document that way instead.
// It records no lines: a document that fails validation is converted again
// by SpecConverter, which does.
template <typename Node>
class DirectConverter {
 public:
  enum Outcome { kOk, kFailed, kUnsupported };

  DirectConverter(const std::string& where, const std::string& resource)
      : where_(where), resource_(resource) {}

  Outcome FillMessage(const Node& node, google::protobuf::Message* message) {
    const Descriptor* type = message->GetDescriptor();
    if (type->full_name() == "google.protobuf.Duration") return FillDuration(node, message);
    if (type->file()->name() == "google/protobuf/wrappers.proto") {
      const FieldDescriptor* value = type->FindFieldByName("value");
      return FillSingle(node, value, message);
    }
    if (absl::StartsWith(type->file()->name(), "google/protobuf/")) return kUnsupported;
    if (node.IsNull()) return kOk;
    if (!node.IsMap()) {
      return Fail(node, absl::StrCat("expected a mapping (the fields of ", type->name(), ")"));
    }
    const google::protobuf::Reflection* reflection = message->GetReflection();
    std::vector<int> seen;
    for (const auto& item : node) {
      std::string key = item.first.template as<std::string>();
      const FieldDescriptor* field = type->FindFieldByName(key);
      for (int i = 0; field == nullptr && i < type->field_count(); ++i) {
        if (type->field(i)->json_name() == key) field = type->field(i);
      }
      if (field == nullptr) {
        const std::string shown = PathKey(key);
        path_.push_back({&shown, 0});
        return Fail(item.first, UnknownFieldError(key, *type));
      }
      if (std::find(seen.begin(), seen.end(), field->number()) != seen.end()) {
        return kUnsupported;
      }
      seen.push_back(field->number());
      if (const auto* oneof = field->real_containing_oneof();
          oneof != nullptr && reflection->HasOneof(*message, oneof)) {
        return kUnsupported;
      }
      path_.push_back({&field->name(), 0});
      Outcome outcome = FillField(item.second, field, message);
      if (outcome != kOk) return outcome;
      path_.pop_back();
    }
    return kOk;
  }

  const std::string& error() const { return error_; }

 private:
  // One step of the path to the value being filled: a field name, or an
  // index when `name` is null.
  struct Step {
    const std::string* name;
    size_t index;
  };

  Outcome Fail(const Node& node, const std::string& message) {
    std::string path;
    for (const Step& step : path_) {
      if (step.name != nullptr) {
        absl::StrAppend(&path, path.empty() ? "" : ".", *step.name);
      } else {
        absl::StrAppend(&path, "[", step.index, "]");
      }
    }
    error_ = absl::StrCat(where_, ", line ", node.Mark().line + 1, ": ", resource_, ": ",
                          path.empty() ? "spec" : "spec." + path, ": ", message);
    return kFailed;
  }

  Outcome FillField(const Node& node, const FieldDescriptor* field,
                    google::protobuf::Message* message) {
    if (field->is_map()) return kUnsupported;
    if (field->is_repeated()) {
      if (node.IsNull()) return kOk;
      if (!node.IsSequence()) return Fail(node, "expected a list");
      for (size_t i = 0; i < node.size(); ++i) {
        path_.push_back({nullptr, i});
        Outcome outcome = FillSingle(node[i], field, message);
        if (outcome != kOk) return outcome;
        path_.pop_back();
      }
      return kOk;
    }
    return FillSingle(node, field, message);
  }

  // One value of `field` (added when it is repeated).
  Outcome FillSingle(const Node& node, const FieldDescriptor* field,
                     google::protobuf::Message* message) {
    const google::protobuf::Reflection* r = message->GetReflection();
    const bool add = field->is_repeated();
    if (field->type() == FieldDescriptor::TYPE_MESSAGE) {
      if (node.IsNull()) return kUnsupported;  // the error is SpecConverter's
      return FillMessage(node, add ? r->AddMessage(message, field)
                                   : r->MutableMessage(message, field));
    }
    if (node.IsNull()) return kUnsupported;  // the error is SpecConverter's
    if (!node.IsScalar()) return Fail(node, SingleValueExpected(node, field));
    const std::string& text = node.Scalar();
    switch (field->cpp_type()) {
      case FieldDescriptor::CPPTYPE_STRING:
        if (field->type() == FieldDescriptor::TYPE_BYTES) return kUnsupported;
        for (unsigned char c : text) {
          if (c >= 0x80) return kUnsupported;  // UTF-8 checks are the JSON parser's
        }
        add ? r->AddString(message, field, text) : r->SetString(message, field, text);
        return kOk;
      case FieldDescriptor::CPPTYPE_BOOL:
        if (text == "true" || text == "false") {
          add ? r->AddBool(message, field, text == "true")
              : r->SetBool(message, field, text == "true");
          return kOk;
        }
        return Fail(node, absl::StrCat("expected true or false, got '", api::Shown(text), "'"));
      case FieldDescriptor::CPPTYPE_ENUM: {
        const auto* value = field->enum_type()->FindValueByName(absl::AsciiStrToUpper(text));
        if (value == nullptr) {
          return Fail(node, UnknownEnumError(text, *field->enum_type()));
        }
        add ? r->AddEnumValue(message, field, value->number())
            : r->SetEnumValue(message, field, value->number());
        return kOk;
      }
      case FieldDescriptor::CPPTYPE_INT32:
      case FieldDescriptor::CPPTYPE_INT64: {
        if (std::string zero = LeadingZeroError(text); !zero.empty()) return Fail(node, zero);
        int64_t v;
        const bool is32 = field->cpp_type() == FieldDescriptor::CPPTYPE_INT32;
        if (!absl::SimpleAtoi(text, &v) || (is32 && (v < INT32_MIN || v > INT32_MAX))) {
          return Fail(node, absl::StrCat("expected an integer, got '", api::Shown(text), "'"));
        }
        if (is32) {
          add ? r->AddInt32(message, field, static_cast<int32_t>(v))
              : r->SetInt32(message, field, static_cast<int32_t>(v));
        } else {
          add ? r->AddInt64(message, field, v) : r->SetInt64(message, field, v);
        }
        return kOk;
      }
      case FieldDescriptor::CPPTYPE_UINT32:
      case FieldDescriptor::CPPTYPE_UINT64: {
        if (std::string zero = LeadingZeroError(text); !zero.empty()) return Fail(node, zero);
        uint64_t v;
        const bool is32 = field->cpp_type() == FieldDescriptor::CPPTYPE_UINT32;
        if (!absl::SimpleAtoi(text, &v) || (is32 && v > UINT32_MAX)) {
          return Fail(node, IntegerRangeError(text, is32));
        }
        if (is32) {
          add ? r->AddUInt32(message, field, static_cast<uint32_t>(v))
              : r->SetUInt32(message, field, static_cast<uint32_t>(v));
        } else {
          add ? r->AddUInt64(message, field, v) : r->SetUInt64(message, field, v);
        }
        return kOk;
      }
      case FieldDescriptor::CPPTYPE_DOUBLE:
      case FieldDescriptor::CPPTYPE_FLOAT: {
        double v;
        if (!absl::SimpleAtod(text, &v)) {
          return Fail(node, absl::StrCat("expected a number, got '", api::Shown(text), "'"));
        }
        return kUnsupported;  // the JSON parser's number rules decide
      }
      default:
        return Fail(node, "unsupported field type");
    }
  }

  Outcome FillDuration(const Node& node, google::protobuf::Message* message) {
    if (!node.IsScalar()) return Fail(node, "expected a duration such as 5s or 250ms");
    const std::string& text = node.Scalar();
    // As SpecConverter's "S.NNNNNNNNNs" reads back.
    int64_t nanos = 0;
    if (std::string why = ParseConfigDuration(text, &nanos); !why.empty()) return Fail(node, why);
    auto* duration = static_cast<google::protobuf::Duration*>(message);
    duration->set_seconds(nanos / 1000000000);
    duration->set_nanos(static_cast<int32_t>(nanos % 1000000000));
    return kOk;
  }

  const std::string& where_;
  const std::string& resource_;
  std::string error_;
  std::vector<Step> path_;
};

const FieldDescriptor* KindField(config::v1::ResourceKind kind) {
  const Descriptor* d = api::Resource::descriptor();
  switch (kind) {
    case config::v1::LISTENER: return d->FindFieldByName("listener");
    case config::v1::ROUTE_TABLE: return d->FindFieldByName("route_table");
    case config::v1::CLUSTER: return d->FindFieldByName("cluster");
    case config::v1::SECRET: return d->FindFieldByName("secret");
    case config::v1::CONSUMER: return d->FindFieldByName("consumer");
    default: return nullptr;
  }
}

// Bounds on a document's walk, aliases expanded: far above any config (a
// policy's JSON schema is at most 64 deep; a 32 MiB file holds a few
// million nodes), far below what an alias bomb expands to.
constexpr int kMaxYamlDepth = 256;
constexpr int64_t kMaxYamlNodes = 8'000'000;

// yaml-cpp ends a quoted scalar that has no closing quote at the end of the
// text, so a forgotten quote swallowed the rest of the file into one string
// and applied that. YAML 1.2 (7.3) requires the closing quote: whether the
// scalar whose node starts at byte `pos` of `text` has one.
bool QuotedScalarCloses(const std::string& text, size_t pos) {
  if (pos >= text.size() || (text[pos] != '"' && text[pos] != '\'')) return true;  // not quoted
  const char quote = text[pos];
  for (size_t i = pos + 1; i < text.size(); ++i) {
    if (quote == '"' && text[i] == '\\') {
      ++i;  // an escaped character, '"' included
    } else if (text[i] == quote) {
      if (quote == '\'' && i + 1 < text.size() && text[i + 1] == '\'') {
        ++i;  // '' is one quote in a single-quoted scalar
      } else {
        return true;
      }
    }
  }
  return false;
}

// What the walk below checks once per text (aliases repeat nodes).
struct YamlWalk {
  int64_t nodes = 0;
  const std::string* text = nullptr;  // yaml-cpp's documents: check quotes
  std::set<size_t> quotes_checked;
};

// YAML lets a mapping repeat a key, and yaml-cpp keeps both: a later read
// takes one of them and a list field gets both lists joined. A repeated key
// is refused instead, naming it and both lines.
template <typename Node>
absl::Status CheckDistinctKeys(const Node& node, const std::string& where, int depth,
                               YamlWalk* walk) {
  // An alias is the node it names, walked again wherever it is used: a
  // self-referencing one never ends, and nested ones multiply (a "billion
  // laughs" file of 500 bytes). Both are refused before anything else walks
  // the document.
  if (depth > kMaxYamlDepth) {
    return absl::InvalidArgumentError(absl::StrCat(
        where, ", line ", node.Mark().line + 1, ": nested more than ", kMaxYamlDepth,
        " levels deep (or an alias used inside the node it names)"));
  }
  if (++walk->nodes > kMaxYamlNodes) {
    return absl::InvalidArgumentError(absl::StrCat(
        where, ": more than ", kMaxYamlNodes,
        " YAML nodes once its aliases are expanded (aliases used inside aliases)"));
  }
  if constexpr (std::is_same_v<Node, YAML::Node>) {
    // A tag ("!custom 1", "!!str 8080") was dropped without a word: the
    // value was read as if untagged, whatever type the tag named.
    // The core schema's structure and number tags say what the field's
    // type checks anyway (`!!int 8080`; `!!int abc` is refused by it);
    // others are refused.
    const std::string& tag = node.Tag();
    const std::string core = "tag:yaml.org,2002:";
    const bool is_core = tag.compare(0, core.size(), core) == 0;
    bool core_checked = false;
    // Not !!bool and !!null: a value they disagree with was read as if
    // untagged (`!!bool 8080` a port), and a tagged null is no null to
    // yaml-cpp (`!!null ~` was no empty list).
    for (const char* name : {"int", "float", "map", "seq"}) {
      core_checked =
          core_checked || (is_core && tag.compare(core.size(), std::string::npos, name) == 0);
    }
    if (!tag.empty() && tag != "?" && tag != "!" && !core_checked) {
      std::string shown = tag;
      if (is_core) shown = "!!" + shown.substr(core.size());
      return absl::InvalidArgumentError(absl::StrCat(
          where, ", line ", node.Mark().line + 1, ": YAML tag ", shown,
          " is not supported: write the value without it (quote it for text)"));
    }
    if (core_checked) {
      // The tag must say what the node is: !!map on a mapping, !!seq on a
      // list, !!int and !!float on a number (`!!int 127.0.0.1` was read as
      // the address, `!!map 8080` as the port).
      const std::string kind = tag.substr(core.size());
      double number = 0;
      const bool agrees =
          kind == "map"   ? node.IsMap()
          : kind == "seq" ? node.IsSequence()
                          : node.IsScalar() && absl::SimpleAtod(node.Scalar(), &number) &&
                                (kind == "float" ||
                                 node.Scalar().find_first_of(".eE") == std::string::npos);
      if (!agrees) {
        return absl::InvalidArgumentError(absl::StrCat(
            where, ", line ", node.Mark().line + 1, ": YAML tag !!", kind,
            " on a value that is not ", kind == "map" ? "a mapping" : kind == "seq" ? "a list"
                                        : kind == "int" ? "an integer" : "a number",
            ": write the value without it"));
      }
    }
  }
  if (node.IsSequence()) {
    for (const auto& item : node) {
      if (absl::Status s = CheckDistinctKeys(item, where, depth + 1, walk); !s.ok()) return s;
    }
    return absl::OkStatus();
  }
  if (!node.IsMap()) {
    if constexpr (std::is_same_v<Node, YAML::Node>) {
      if (walk->text != nullptr && node.IsScalar() && node.Tag() == "!") {
        const size_t pos = static_cast<size_t>(node.Mark().pos);
        if (walk->quotes_checked.insert(pos).second && !QuotedScalarCloses(*walk->text, pos)) {
          return absl::InvalidArgumentError(absl::StrCat(
              where, ", line ", node.Mark().line + 1, ", column ", node.Mark().column + 1,
              ": not valid YAML: a quoted string that is never closed (its closing ",
              (*walk->text)[pos] == '"' ? "\"" : "'", " is missing)"));
        }
      }
    }
    return absl::OkStatus();
  }
  // Key -> its first line and spelling. Keys are compared as the field they
  // name: "connectTimeout" is "connect_timeout" (protobuf's JSON mapping
  // takes both, and would keep the last).
  std::map<std::string, std::pair<int, std::string>> lines;
  for (const auto& item : node) {
    if (item.first.IsScalar()) {
      const int line = item.first.Mark().line + 1;
      const std::string& key = item.first.Scalar();
      std::string field;
      for (char c : key) {
        if (c >= 'A' && c <= 'Z') {
          field.push_back('_');
          field.push_back(static_cast<char>(c - 'A' + 'a'));
        } else {
          field.push_back(c);
        }
      }
      auto [it, inserted] = lines.emplace(field, std::make_pair(line, key));
      if (!inserted) {
        const auto& [first_line, first_key] = it->second;
        return absl::InvalidArgumentError(absl::StrCat(
            where, ", line ", line, ": duplicate key '", key, "' (first at line ", first_line,
            first_key == key ? "" : absl::StrCat(", as '", first_key, "'"), ")"));
      }
    }
    if (absl::Status s = CheckDistinctKeys(item.first, where, depth + 1, walk); !s.ok()) {
      return s;
    }
    if (absl::Status s = CheckDistinctKeys(item.second, where, depth + 1, walk); !s.ok()) {
      return s;
    }
  }
  return absl::OkStatus();
}

// `direct`: fill the message with DirectConverter when it can (the result
// is the same as SpecConverter's; see the differential test).
template <typename Node>
absl::Status LoadDocument(const Node& doc, const std::string& where, bool direct, bool validate,
                          const std::string* text,
                          std::vector<LoadedResource>* out) {
  auto fail = [&](const Node& node, const std::string& message) {
    return absl::InvalidArgumentError(
        absl::StrCat(where, ", line ", node.Mark().line + 1, ": ", message));
  };
  YamlWalk walk;
  walk.text = text;
  if (absl::Status distinct = CheckDistinctKeys(doc, where, 0, &walk); !distinct.ok()) {
    return distinct;
  }
  if (!doc.IsMap()) return fail(doc, "expected a mapping with kind, name and spec");
  // The lines of the kind: and name: keys: an empty value's own mark is the
  // next line's, and errors about the name are said at its line.
  int kind_line = 0;
  int name_line = 0;
  for (const auto& item : doc) {
    std::string key = item.first.template as<std::string>();
    if (key == "kind") kind_line = item.first.Mark().line + 1;
    if (key == "name") name_line = item.first.Mark().line + 1;
    // `version`: `get KIND NAME -o json` of one resource (the caller reads it).
    if (key != "kind" && key != "name" && key != "spec" && key != "version") {
      return fail(item.first, absl::StrCat("unknown top-level field ", ShownKey(key),
                                           " (expected kind, name and spec)"));
    }
  }
  if (!doc["kind"]) return fail(doc, "kind is required");
  auto fail_at = [&](int line, const std::string& message) {
    return absl::InvalidArgumentError(absl::StrCat(where, ", line ", line, ": ", message));
  };
  if (doc["kind"].IsNull()) return fail_at(kind_line, "kind is empty (nothing after it, or ~)");
  if (!doc["kind"].IsScalar()) return fail(doc["kind"], "kind must be a single value, e.g. Cluster");
  if (!doc["name"]) return fail(doc, "name is required");
  if (doc["name"].IsNull()) return fail_at(name_line, "name is empty (nothing after it, or ~)");
  if (!doc["name"].IsScalar()) {
    return fail(doc["name"], "name must be a single value, not a list or mapping");
  }
  auto kind = api::ParseKind(doc["kind"].Scalar());
  if (!kind.ok()) return fail(doc["kind"], std::string(kind.status().message()));
  const std::string name = doc["name"].Scalar();
  const FieldDescriptor* field = KindField(*kind);

  api::Resource resource;
  google::protobuf::Message* message =
      resource.GetReflection()->MutableMessage(&resource, field);
  const std::string resource_label = api::Describe({*kind, name});
  SpecConverter<Node> converter(where, resource_label);
  // The line of the deepest part of field path `path` the YAML spelled out.
  auto line_of = [&](std::string p) {
    if (p == "name") return name_line;
    for (; !p.empty();) {
      if (auto it = converter.lines().find(p); it != converter.lines().end()) return it->second;
      size_t cut = p.find_last_of(".[");
      p = cut == std::string::npos ? "" : p.substr(0, cut);
    }
    return doc.Mark().line + 1;
  };
  const Node spec = doc["spec"];
  // Without validation only the kind and name are read (delete -f): the
  // spec may be of another release's schema.
  bool filled = !validate;
  if (direct && spec && !filled) {
    DirectConverter<Node> direct_converter(where, resource_label);
    switch (direct_converter.FillMessage(spec, message)) {
      case DirectConverter<Node>::kOk:
        filled = true;
        break;
      case DirectConverter<Node>::kFailed:
        return absl::InvalidArgumentError(direct_converter.error());
      case DirectConverter<Node>::kUnsupported:
        message->Clear();
        break;
    }
  }
  // A missing spec is an empty mapping: no fields.
  if (!filled && spec) {
    std::string json;
    if (!converter.ConvertMessage(spec, field->message_type(), "", &json)) {
      return absl::InvalidArgumentError(converter.error());
    }
    google::protobuf::util::JsonParseOptions options;
    auto status = google::protobuf::util::JsonStringToMessage(json, message, options);
    if (!status.ok()) {
      // protobuf says "(a.b[0].c): reason": give it a line and the
      // resource, and say a oneof conflict in words.
      std::string reason(status.message());
      std::string path;
      if (absl::StartsWith(reason, "(")) {
        if (size_t close = reason.find("): "); close != std::string::npos) {
          path = reason.substr(1, close - 1);
          reason = reason.substr(close + 3);
        }
      } else if (absl::StartsWith(reason, ": ")) {
        reason = reason.substr(2);  // a field of the spec itself: no path
      }
      static constexpr char kOneof[] = "invalid value oneof field '";
      static constexpr char kCannotSet[] = "' is already set. Cannot set '";
      if (absl::StartsWith(reason, kOneof)) {
        size_t group_end = reason.find(kCannotSet);
        if (group_end != std::string::npos) {
          const size_t group_at = sizeof(kOneof) - 1;
          const std::string group = reason.substr(group_at, group_end - group_at);
          const size_t field_at = group_end + sizeof(kCannotSet) - 1;
          // JSON's camelCase name ("tlsCertificate") as written: tls_certificate.
          std::string second;
          for (char c : reason.substr(field_at, reason.find('\'', field_at) - field_at)) {
            if (absl::ascii_isupper(static_cast<unsigned char>(c))) {
              second.push_back('_');
              second.push_back(absl::ascii_tolower(static_cast<unsigned char>(c)));
            } else {
              second.push_back(c);
            }
          }
          if (!path.empty()) path += ".";
          path += second;
          reason = absl::StrCat("cannot be set together with another field of ", group,
                                ": set only one of them");
        }
      }
      return absl::InvalidArgumentError(
          absl::StrCat(where, ", line ", line_of(path), ": ", api::Describe({*kind, name}), ": ",
                       path.empty() ? "spec" : path, ": ", reason));
    }
  }
  const FieldDescriptor* name_field = message->GetDescriptor()->FindFieldByName("name");
  std::string spec_name = message->GetReflection()->GetString(*message, name_field);
  if (!spec_name.empty() && spec_name != name) {
    return fail(doc["spec"]["name"], absl::StrCat("spec.name '", spec_name,
                                                  "' differs from name '", name, "'"));
  }
  message->GetReflection()->SetString(message, name_field, name);

  std::vector<api::ValidationError> errors;
  // What the control plane refuses only in content an apply adds or
  // changes: not refused here (this content may be stored unchanged), but
  // its lines are kept for the answer, and with other errors (so the
  // content changes) it is said with them, in one round. First: it counts
  // the regular expressions (LoadDocuments' RegexProgramCount); past the
  // config's bound nothing more is validated (each pattern compiled costs
  // time, and the file is refused).
  std::vector<api::ValidationError> later;
  if (validate && !api::RegexBudgetSpent()) {
    api::ValidateNewContent(resource, &later);
    if (!api::RegexBudgetSpent()) api::ValidateResource(resource, &errors);
  }
  if (!errors.empty() || !later.empty()) {
    // The lines of the fields in error are SpecConverter's to find.
    if (filled) return LoadDocument(doc, where, /*direct=*/false, validate, text, out);
  }
  if (!errors.empty()) {
    errors.insert(errors.end(), later.begin(), later.end());
    std::vector<std::string> lines;
    for (const auto& e : errors) {
      lines.push_back(absl::StrCat(where, ", line ", line_of(e.field), ": ", e.ToString()));
    }
    return absl::InvalidArgumentError(absl::StrJoin(lines, "\n"));
  }
  LoadedResource loaded{std::move(resource),
                        absl::StrCat(where, " (line ", doc.Mark().line + 1, ")"), where, {}};
  for (const auto& e : later) {
    loaded.field_lines[e.field] = line_of(e.field);
    loaded.later_errors.push_back(
        absl::StrCat(where, ", line ", line_of(e.field), ": ", e.ToString(),
                     " (refused if the apply adds or changes it)"));
  }
  out->push_back(std::move(loaded));
  return absl::OkStatus();
}

// Every document of `docs` (nodes of one type), in order.
template <typename Node>
absl::StatusOr<std::vector<LoadedResource>> LoadDocuments(const std::vector<Node>& docs,
                                                          const std::string& file_name,
                                                          bool direct, bool validate,
                                                          const std::string* text = nullptr) {
  std::vector<LoadedResource> out;
  out.reserve(docs.size());
  std::vector<std::string> errors;
  bool failed = false;
  int index = 0;
  // The file's regular expressions together, against the bound on a whole
  // config's (api/regex_limit.h).
  api::RegexProgramCount regex_count;
  auto load = [&](const Node& doc, const std::string& where) {
    const size_t loaded_before = out.size();
    absl::Status status;
    try {
      status = LoadDocument(doc, where, direct, validate, text, &out);
    } catch (const YAML::Exception& e) {
      // yaml-cpp's "bad conversion": a list or mapping where one value goes.
      status = absl::InvalidArgumentError(absl::StrCat(
          where, ", line ", e.mark.line + 1, ": ",
          e.msg == "bad conversion"
              ? "a list or mapping where a single value belongs (as a key, say)"
              : e.msg));
    }
    if (!status.ok()) {
      failed = true;
      // One line per error, so that the cap counts each (one table of 2,000
      // bad routes printed 1,999 lines, 300 KB).
      for (absl::string_view line : absl::StrSplit(status.message(), '\n')) {
        errors.emplace_back(line);
      }
    } else if (!out.empty() && out.size() > loaded_before) {
      // What the control plane would refuse in a document that loaded: said
      // with the others' errors, in document order, so one round names all.
      for (const std::string& e : out.back().later_errors) errors.push_back(e);
    }
  };
  auto is_number = [](const Node& node) {
    uint64_t version = 0;
    return node.IsScalar() && !node.Scalar().empty() &&
           std::all_of(node.Scalar().begin(), node.Scalar().end(),
                       [](char c) { return c >= '0' && c <= '9'; }) &&
           absl::SimpleAtoi(node.Scalar(), &version);
  };
  for (const Node& doc : docs) {
    ++index;
    if (doc.IsNull()) continue;  // empty document between separators
    std::string where = absl::StrCat(file_name, ", document ", index);
    // `sluicectl get -o json` of several resources: {"version": N, "items":
    // [...]}, whose items are the documents (as kubectl applies a List).
    if (doc.IsMap() && !doc["kind"] && doc["items"]) {
      if (!doc["items"].IsSequence()) {
        failed = true;
        errors.push_back(absl::StrCat(where, ", line ", doc["items"].Mark().line + 1,
                                      ": items must be a list of resources"));
        continue;
      }
      std::string other;  // the first other key, as said
      std::string repeated;  // version or items given twice: one would be lost
      int repeated_line = 0;
      bool seen_version = false, seen_items = false;
      for (const auto& item : doc) {
        if (!other.empty() || !repeated.empty()) break;
        if (!item.first.IsScalar()) {
          // `? [a, b]` or `~`: no field either
          other = "that is not a name (a list, a mapping or null)";
          continue;
        }
        const std::string& key = item.first.Scalar();
        if (key != "version" && key != "items") other = ShownKey(key);
        bool& seen = key == "version" ? seen_version : seen_items;
        if (other.empty() && seen) {
          repeated = key;
          repeated_line = item.first.Mark().line + 1;
        }
        seen = true;
      }
      if (!repeated.empty()) {
        failed = true;
        errors.push_back(absl::StrCat(where, ", line ", repeated_line, ": duplicate key '",
                                      repeated, "' (a list of resources takes one version and "
                                      "one items; join the lists)"));
        continue;
      }
      if (other.empty() && doc["version"] && !is_number(doc["version"])) {
        failed = true;
        errors.push_back(absl::StrCat(where, ", line ", doc["version"].Mark().line + 1,
                                      ": version must be a number (as get -o json prints it)"));
        continue;
      }
      if (!other.empty()) {
        failed = true;
        errors.push_back(absl::StrCat(where, ": unknown top-level field ", other,
                                      " beside items (a list of resources takes version and "
                                      "items only)"));
        continue;
      }
      const size_t before = out.size();
      for (size_t i = 0; i < doc["items"].size(); ++i) {
        load(doc["items"][i], absl::StrCat(where, ", items[", i, "]"));
      }
      uint64_t exported = 0;
      if (doc["version"] && absl::SimpleAtoi(doc["version"].Scalar(), &exported)) {
        for (size_t i = before; i < out.size(); ++i) out[i].exported_version = exported;
      }
      continue;
    }
    // `get KIND NAME -o json` of one resource carries the version it was
    // read at, as the list does: a stale copy must not undo later changes.
    uint64_t exported = 0;
    if (doc.IsMap() && doc["kind"] && doc["version"]) {
      if (!is_number(doc["version"])) {
        failed = true;
        errors.push_back(absl::StrCat(where, ", line ", doc["version"].Mark().line + 1,
                                      ": version must be a number (as get -o json prints it)"));
        continue;
      }
      absl::SimpleAtoi(doc["version"].Scalar(), &exported);
    }
    const size_t before = out.size();
    load(doc, where);
    for (size_t i = before; i < out.size(); ++i) {
      out[i].document = index;
      out[i].exported_version = exported;
    }
  }
  if (validate && api::RegexBudgetSpent()) {
    // Said first: past it, the documents were not all validated.
    errors.insert(errors.begin(),
                  absl::StrCat(file_name, ": ", api::RegexBudgetError(regex_count.total(), {})));
    failed = true;
  }
  if (failed) return absl::InvalidArgumentError(JoinErrors(errors));
  if (out.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(file_name, ": no documents"));
  }
  return out;
}

}  // namespace

absl::StatusOr<std::vector<LoadedResource>> LoadYaml(const std::string& text,
                                                     const std::string& file_name) {
  return LoadYaml(text, file_name, LoadOptions());
}

namespace {

// What is refused before any parser runs: a NUL byte in UTF-8 text (YAML
// allows none; yaml-cpp read "<NUL>n" as an escaped newline, changing the
// value), and more documents than an apply may hold (each is a node built
// before any limit is looked at: 3 million "---" lines took 2 GB).
constexpr size_t kMaxDocuments = 100000;

// YAML 1.2 5.2: UTF-32 or UTF-16 (by a byte order mark, else by where the
// first character's zero bytes are) becomes UTF-8, so that every check and
// both parsers see one encoding. Empty: the text is UTF-8 already.
absl::StatusOr<std::string> DecodeToUtf8(const std::string& text, const std::string& file_name) {
  auto byte = [&](size_t i) -> unsigned { return i < text.size() ? static_cast<unsigned char>(text[i]) : 1u; };
  int unit = 0;
  bool big_endian = false;
  size_t skip = 0;
  if (byte(0) == 0 && byte(1) == 0 && byte(2) == 0xFE && byte(3) == 0xFF) {
    unit = 4, big_endian = true, skip = 4;
  } else if (byte(0) == 0 && byte(1) == 0 && byte(2) == 0) {
    unit = 4, big_endian = true;
  } else if (byte(0) == 0xFF && byte(1) == 0xFE && byte(2) == 0 && byte(3) == 0) {
    unit = 4, skip = 4;
  } else if (byte(1) == 0 && byte(2) == 0 && byte(3) == 0) {
    unit = 4;
  } else if (byte(0) == 0xFE && byte(1) == 0xFF) {
    unit = 2, big_endian = true, skip = 2;
  } else if (byte(0) == 0) {
    unit = 2, big_endian = true;
  } else if (byte(0) == 0xFF && byte(1) == 0xFE) {
    unit = 2, skip = 2;
  } else if (byte(1) == 0) {
    unit = 2;
  }
  if (unit == 0 || text.size() < 2) return std::string();
  auto invalid = [&](size_t at) {
    return absl::InvalidArgumentError(absl::StrCat(file_name, ": not valid UTF-", unit * 8,
                                                   " at byte ", at));
  };
  auto read = [&](size_t at) -> uint32_t {
    uint32_t v = 0;
    for (int k = 0; k < unit; ++k) {
      const uint32_t b = static_cast<unsigned char>(text[at + (big_endian ? k : unit - 1 - k)]);
      v = (v << 8) | b;
    }
    return v;
  };
  std::string out;
  out.reserve(text.size());
  for (size_t at = skip; at < text.size(); at += unit) {
    if (at + unit > text.size()) return invalid(at);
    uint32_t c = read(at);
    if (unit == 2 && c >= 0xD800 && c <= 0xDBFF) {
      if (at + 2 * unit > text.size()) return invalid(at);
      const uint32_t low = read(at + unit);
      if (low < 0xDC00 || low > 0xDFFF) return invalid(at);
      c = 0x10000 + ((c - 0xD800) << 10) + (low - 0xDC00);
      at += unit;
    } else if ((c >= 0xD800 && c <= 0xDFFF) || c > 0x10FFFF) {
      return invalid(at);
    }
    if (c < 0x80) {
      out.push_back(static_cast<char>(c));
    } else if (c < 0x800) {
      out.push_back(static_cast<char>(0xC0 | (c >> 6)));
      out.push_back(static_cast<char>(0x80 | (c & 0x3F)));
    } else if (c < 0x10000) {
      out.push_back(static_cast<char>(0xE0 | (c >> 12)));
      out.push_back(static_cast<char>(0x80 | ((c >> 6) & 0x3F)));
      out.push_back(static_cast<char>(0x80 | (c & 0x3F)));
    } else {
      out.push_back(static_cast<char>(0xF0 | (c >> 18)));
      out.push_back(static_cast<char>(0x80 | ((c >> 12) & 0x3F)));
      out.push_back(static_cast<char>(0x80 | ((c >> 6) & 0x3F)));
      out.push_back(static_cast<char>(0x80 | (c & 0x3F)));
    }
  }
  return out;
}

absl::Status CheckRawText(const std::string& text, const std::string& file_name) {
  if (size_t nul = text.find('\0'); nul != std::string::npos) {
    return absl::InvalidArgumentError(absl::StrCat(
        file_name, ", line ", std::count(text.begin(), text.begin() + nul, '\n') + 1,
        ": a NUL byte, which YAML allows nowhere"));
  }
  // Documents begin at '---' and end at '...' lines: each may start one.
  size_t documents = 0;
  size_t at = 0;  // the start of each line
  while (at < text.size()) {
    if ((text.compare(at, 3, "---") == 0 || text.compare(at, 3, "...") == 0) &&
        (at + 3 == text.size() || text[at + 3] == ' ' || text[at + 3] == '\n' ||
         text[at + 3] == '\r' || text[at + 3] == '\t') &&
        ++documents > kMaxDocuments) {
      return absl::InvalidArgumentError(absl::StrCat(
          file_name, ": more than ", kMaxDocuments,
          " documents ('---' or '...' lines); one apply takes at most that many"));
    }
    const size_t end = text.find('\n', at);
    if (end == std::string::npos) break;
    at = end + 1;
  }
  return absl::OkStatus();
}

}  // namespace

namespace {

// How many double-quoted scalars with surrogate pairs LoadYaml joins (one
// reading of the text each).
constexpr int kMaxSurrogateRounds = 256;

// The value of the `\uXXXX` escape at `at` of `text`, if one is there.
bool Hex4At(const std::string& text, size_t at, int* value) {
  if (at + 6 > text.size() || text[at] != '\\' || text[at + 1] != 'u') return false;
  int v = 0;
  for (size_t i = at + 2; i < at + 6; ++i) {
    const unsigned char c = static_cast<unsigned char>(text[i]);
    if (!absl::ascii_isxdigit(c)) return false;
    v = v * 16 + (absl::ascii_isdigit(c) ? c - '0' : absl::ascii_tolower(c) - 'a' + 10);
  }
  *value = v;
  return true;
}

// The character of the surrogate pair `\uD8xx\uDCxx` at `at` of `text`, if
// one is there.
bool SurrogatePairAt(const std::string& text, size_t at, int* code) {
  int high = 0;
  int low = 0;
  if (!Hex4At(text, at, &high) || high < 0xd800 || high > 0xdbff || !Hex4At(text, at + 6, &low) ||
      low < 0xdc00 || low > 0xdfff) {
    return false;
  }
  *code = 0x10000 + ((high - 0xd800) << 10) + (low - 0xdc00);
  return true;
}

// Joins the UTF-16 surrogate pairs (`\ud83d\ude00` -> `\U0001f600`) of the
// double-quoted scalar in which yaml-cpp refused one half: `end` is where it
// stopped, after the half's four hex digits. False when no pair starts
// there (a lone half stays refused).
bool JoinSurrogatePairs(std::string* text, size_t end) {
  int code = 0;
  if (end < 6 || !SurrogatePairAt(*text, end - 6, &code)) return false;
  // From the refused half to the scalar's closing quote: `\` escapes one
  // character (the hex digits of \x, \u and \U are neither `"` nor `\`).
  for (size_t i = end - 6; i < text->size() && (*text)[i] != '"';) {
    if ((*text)[i] != '\\') {
      ++i;
      continue;
    }
    if (SurrogatePairAt(*text, i, &code)) {
      const std::string joined = absl::StrFormat("\\U%08x", code);
      text->replace(i, 12, joined);
      i += joined.size();
    } else {
      i += 2;
    }
  }
  return true;
}

// JSON text (json.dump's, with its surrogate pairs) read in one pass: every
// pair of every string joined, as JoinSurrogatePairs joins one scalar's.
// False, and `text` left alone, unless outside its strings the text holds
// only JSON's punctuation, numbers, literals and white space (and `---`
// lines): in YAML, `\ud83d` outside a double-quoted scalar is text.
bool JoinJsonSurrogatePairs(std::string* text) {
  static constexpr absl::string_view kOutside = "{}[],:-+.0123456789eEtrufalsn \t\r\n";
  std::string out;
  out.reserve(text->size());
  bool joined = false;
  bool in_string = false;
  for (size_t i = 0; i < text->size();) {
    const char c = (*text)[i];
    if (!in_string) {
      if (c == '"') {
        in_string = true;
      } else if (kOutside.find(c) == absl::string_view::npos) {
        return false;
      }
      out.push_back(c);
      ++i;
      continue;
    }
    if (c == '"') {
      in_string = false;
    } else if (c == '\\') {
      int code = 0;
      if (SurrogatePairAt(*text, i, &code)) {
        absl::StrAppend(&out, absl::StrFormat("\\U%08x", code));
        joined = true;
        i += 12;
        continue;
      }
      out.push_back(c);
      if (i + 1 < text->size()) out.push_back((*text)[i + 1]);
      i += 2;
      continue;
    }
    out.push_back(c);
    ++i;
  }
  if (!joined || in_string) return false;
  *text = std::move(out);
  return true;
}

// Gives every loaded resource a shared copy of the text it came from.
void KeepSource(const std::string& text, absl::StatusOr<std::vector<LoadedResource>>* loaded) {
  if (!loaded->ok()) return;
  auto source = std::make_shared<const std::string>(text);
  for (LoadedResource& r : **loaded) r.source = source;
}

}  // namespace

absl::StatusOr<std::vector<LoadedResource>> LoadYaml(const std::string& raw_text,
                                                     const std::string& file_name,
                                                     const LoadOptions& options) {
  absl::StatusOr<std::string> decoded = DecodeToUtf8(raw_text, file_name);
  if (!decoded.ok()) return decoded.status();
  const std::string& text = decoded->empty() ? raw_text : *decoded;
  if (absl::Status raw = CheckRawText(text, file_name); !raw.ok()) return raw;
  if (options.fast_parser) {
    if (auto fast = ParseFastYaml(text); fast.has_value()) {
      std::vector<FastYamlNode> docs;
      docs.reserve((*fast)->documents.size());
      for (uint32_t root : (*fast)->documents) docs.emplace_back(fast->get(), root);
      auto loaded = LoadDocuments(docs, file_name, options.direct_conversion, options.validate);
      KeepSource(text, &loaded);
      return loaded;
    }
  }
  std::vector<YAML::Node> docs;
  // JSON writes a character past U+FFFF as a UTF-16 surrogate pair
  // (`\ud83d\ude00`, Python's json.dump), which yaml-cpp refuses half by
  // half. JSON text has every pair joined (`\U0001f600`) in one pass;
  // else each double-quoted scalar yaml-cpp stops in has its pairs joined
  // and the text is read again (at most kMaxSurrogateRounds times).
  std::string joined;
  const std::string* source = &text;
  std::optional<YAML::Exception> failed;
  bool too_many_scalars = false;
  for (int round = 0;; ++round) {
    try {
      docs = YAML::LoadAll(*source);
      break;
    } catch (const YAML::Exception& e) {
      if (absl::StartsWith(e.msg, "invalid unicode: ")) {
        std::string next = *source;
        if (round == 0 && JoinJsonSurrogatePairs(&next)) {
          joined = std::move(next);
          source = &joined;
          continue;
        }
        if (JoinSurrogatePairs(&next, e.mark.pos)) {
          if (round < kMaxSurrogateRounds) {
            joined = std::move(next);
            source = &joined;
            continue;
          }
          too_many_scalars = true;
        }
      }
      failed.emplace(e.mark, e.msg);
      break;
    }
  }
  if (failed.has_value()) {
    const YAML::Exception& e = *failed;
    // YAML indents with spaces only: a tab where indentation goes reads as
    // content, and yaml-cpp's words ("illegal map value") do not say so.
    std::string hint;
    if (e.mark.line >= 0) {
      std::vector<absl::string_view> lines = absl::StrSplit(text, '\n');
      if (static_cast<size_t>(e.mark.line) < lines.size()) {
        absl::string_view line = lines[e.mark.line];
        const size_t content = line.find_first_not_of(" \t");
        if (line.substr(0, content).find('\t') != absl::string_view::npos) {
          hint = " (a tab in the indentation: YAML indents with spaces only)";
        }
      }
      // A block scalar (`key: |`) whose text is not indented more than its
      // key is empty, and its text is read as keys: the error comes lines
      // later (PEM pasted at column 0 under `certificate_chain: |`).
      for (size_t i = 0; hint.empty() && i < lines.size() &&
                         i <= static_cast<size_t>(e.mark.line);
           ++i) {
        static const LazyRE2 kBlockKey = {R"((\s*)[^#\s][^#]*:\s*[|>][-+0-9]*\s*(#.*)?)"};
        std::string indent;
        static const LazyRE2 kKeyColon = {R"(:(\s|$))"};
        if (!RE2::FullMatch(re2::StringPiece(lines[i].data(), lines[i].size()), *kBlockKey,
                            &indent)) {
          continue;
        }
        for (size_t j = i + 1; j < lines.size(); ++j) {
          absl::string_view next = absl::StripTrailingAsciiWhitespace(lines[j]);
          if (next.empty()) continue;
          // Text, not the next key (`a: |` may be empty on purpose).
          if (next.find_first_not_of(' ') <= indent.size() &&
              !RE2::PartialMatch(re2::StringPiece(next.data(), next.size()), *kKeyColon)) {
            hint = absl::StrCat(" (the block scalar at line ", i + 1,
                                " is empty: its text, from line ", j + 1,
                                ", must be indented more than its key)");
          }
          break;
        }
      }
    }
    // yaml-cpp's own depth guard (500 levels of flow nesting, before this
    // loader's 256 are counted) says only "bad file".
    if (e.msg == "bad file") {
      return absl::InvalidArgumentError(absl::StrCat(
          file_name, ", line ", e.mark.line + 1, ", column ", e.mark.column + 1,
          ": nested more than ", kMaxYamlDepth, " levels deep"));
    }
    if (too_many_scalars) {
      hint = absl::StrCat(" (UTF-16 surrogate pairs, such as \\ud83d\\ude00, in more than ",
                          kMaxSurrogateRounds,
                          " double-quoted YAML scalars: write the characters themselves, or "
                          "\\U0001f600; JSON text has no such bound)");
    } else if (absl::StartsWith(e.msg, "invalid unicode: ")) {
      int code = 0;
      if (absl::SimpleAtoi(e.msg.substr(sizeof("invalid unicode: ") - 1), &code) &&
          code >= 0xd800 && code <= 0xdfff) {
        hint = absl::StrFormat(
            " (\\u%04x is half of a UTF-16 surrogate pair: a high half, \\ud800..\\udbff, "
            "must be followed by a low one, \\udc00..\\udfff; or write the character itself)",
            code);
      }
    }
    return absl::InvalidArgumentError(absl::StrCat(
        file_name, ", line ", e.mark.line + 1, ", column ", e.mark.column + 1,
        ": not valid YAML: ", e.msg, hint));
  }
  auto loaded =
      LoadDocuments(docs, file_name, options.direct_conversion, options.validate, source);
  KeepSource(*source, &loaded);
  return loaded;
}

int FieldLine(const LoadedResource& r, const std::string& field) {
  if (r.source == nullptr || r.document < 1 || field.empty() ||
      !RE2::FullMatch(field, "[a-z0-9_]+(\\[[0-9]+\\])*(\\.[a-z0-9_]+(\\[[0-9]+\\])*)*")) {
    return 0;
  }
  // Read again with yaml-cpp (any YAML the loader takes), once per text.
  // The cache holds the text it parsed, so no later text can take its
  // address and be taken for it.
  static auto* parsed_source = new std::shared_ptr<const std::string>;
  static auto* parsed = new std::vector<YAML::Node>;
  if (*parsed_source != r.source) {
    try {
      *parsed = YAML::LoadAll(*r.source);
    } catch (const YAML::Exception&) {
      parsed->clear();
    }
    *parsed_source = r.source;
  }
  if (static_cast<size_t>(r.document) > parsed->size()) return 0;
  YAML::Node node = (*parsed)[r.document - 1]["spec"];
  if (!node) return 0;
  int line = 0;
  for (absl::string_view part : absl::StrSplit(field, '.')) {
    const size_t bracket = part.find('[');
    const std::string name(part.substr(0, bracket));
    // The field as the proto names it, or in lowerCamelCase (JSON's).
    // Looked up through a const view and moved with reset(): yaml-cpp's
    // operator= on a bound node writes into the node it is bound to (the
    // cached document: the next error in it was then at line 0), and a
    // non-const lookup of a missing key adds it.
    YAML::Node next;
    if (node.IsMap()) {
      const YAML::Node& map = node;
      next.reset(map[name]);
      if (!next) {
        std::string camel;
        for (size_t i = 0; i < name.size(); ++i) {
          if (name[i] == '_' && i + 1 < name.size()) {
            camel.push_back(absl::ascii_toupper(static_cast<unsigned char>(name[++i])));
          } else {
            camel.push_back(name[i]);
          }
        }
        next.reset(map[camel]);
      }
    }
    if (!next) return line;
    node.reset(next);
    line = node.Mark().line + 1;
    for (size_t at = bracket; at != absl::string_view::npos; at = part.find('[', at + 1)) {
      size_t index = 0;
      if (!absl::SimpleAtoi(part.substr(at + 1, part.find(']', at) - at - 1), &index) ||
          !node.IsSequence() || index >= node.size()) {
        return line;
      }
      const YAML::Node& list = node;
      node.reset(list[index]);
      line = node.Mark().line + 1;
    }
  }
  return line;
}

namespace {

// Reads `in` whole into `text`, but at most one byte past what one apply may
// carry (a file like /dev/zero would otherwise be read until memory runs
// out); false with `error` set when there is more.
bool ReadBounded(std::istream& in, const std::string& name, std::string* text,
                 std::string* error) {
  // In pieces: a buffer of the whole bound (32 MiB) cleared for a file of a
  // few hundred KiB was a third of a big apply's time in sluicectl.
  constexpr size_t kPiece = 256 * 1024;
  const size_t bound = static_cast<size_t>(api::kMaxConfigBytes) + 1;
  text->clear();
  while (text->size() < bound && in) {
    const size_t at = text->size();
    text->resize(at + std::min(kPiece, bound - at));
    in.read(text->data() + at, static_cast<std::streamsize>(text->size() - at));
    text->resize(at + static_cast<size_t>(in.gcount()));
  }
  if (text->size() > static_cast<size_t>(api::kMaxConfigBytes)) {
    *error = absl::StrCat(name, ": larger than ", api::kMaxConfigBytes,
                          " bytes, the most one apply can carry");
    return false;
  }
  return true;
}

}  // namespace

absl::StatusOr<std::vector<LoadedResource>> LoadPath(const std::string& path) {
  return LoadPath(path, LoadOptions());
}

absl::StatusOr<std::vector<LoadedResource>> LoadPath(const std::string& path,
                                                     const LoadOptions& options) {
  if (path == "-") {  // standard input, as kubectl reads it
    std::string text, error;
    if (!ReadBounded(std::cin, "standard input", &text, &error)) {
      return absl::InvalidArgumentError(error);
    }
    if (std::cin.bad()) {
      return absl::InvalidArgumentError(
          absl::StrCat("standard input: cannot read: ", strerror(errno)));
    }
    return LoadYaml(text, "standard input", options);
  }
  struct stat st;
  if (::stat(path.c_str(), &st) != 0) {
    return absl::NotFoundError(absl::StrCat(path, ": no such file or directory"));
  }
  std::vector<std::string> files;
  if (S_ISDIR(st.st_mode)) {
    DIR* dir = ::opendir(path.c_str());
    if (dir == nullptr) {
      return absl::PermissionDeniedError(absl::StrCat(path, ": cannot read: ", strerror(errno)));
    }
    while (dirent* entry = ::readdir(dir)) {
      std::string name = entry->d_name;
      // Regular files (a link to one too), not hidden ones: an editor's or
      // macOS's "._x.yaml", a FIFO (it would block the apply) or a
      // directory named x.yaml are no config.
      if (name.empty() || name[0] == '.') continue;
      // A `get -o json` export is config too (JSON is YAML).
      if (!absl::EndsWith(name, ".yaml") && !absl::EndsWith(name, ".yml") &&
          !absl::EndsWith(name, ".json")) {
        continue;
      }
      std::string file = absl::StrCat(path, "/", name);
      struct stat file_st;
      if (::stat(file.c_str(), &file_st) == 0 && !S_ISREG(file_st.st_mode)) continue;
      files.push_back(std::move(file));
    }
    ::closedir(dir);
    std::sort(files.begin(), files.end());
    if (files.empty()) {
      return absl::InvalidArgumentError(absl::StrCat(path, ": no .yaml, .yml or .json files"));
    }
  } else {
    files.push_back(path);
  }
  std::vector<LoadedResource> all;
  std::vector<std::string> errors;
  for (const std::string& file : files) {
    std::ifstream in(file);
    if (!in) {
      errors.push_back(absl::StrCat(file, ": cannot read: ", strerror(errno)));
      continue;
    }
    std::string text, error;
    if (!ReadBounded(in, file, &text, &error)) {
      errors.push_back(std::move(error));
      continue;
    }
    auto loaded = LoadYaml(text, file, options);
    if (!loaded.ok()) {
      errors.push_back(std::string(loaded.status().message()));
      continue;
    }
    for (auto& r : *loaded) all.push_back(std::move(r));
  }
  if (!errors.empty()) return absl::InvalidArgumentError(JoinErrors(errors));
  return all;
}

namespace {

std::string SpecJson(const api::Resource& resource) {
  const FieldDescriptor* field = KindField(api::KindOf(resource));
  api::Resource copy = resource;
  google::protobuf::Message* message = copy.GetReflection()->MutableMessage(&copy, field);
  message->GetReflection()->ClearField(message,
                                       message->GetDescriptor()->FindFieldByName("name"));
  google::protobuf::util::JsonPrintOptions options;
  options.preserve_proto_field_names = true;
  std::string json;
  (void)google::protobuf::util::MessageToJsonString(*message, &json, options);
  return json;
}

// Whether `text` reads back unchanged from a `|` block scalar: printable
// ASCII lines, not starting with a space (that would set the indentation),
// ending with exactly one line break (the default "clip" chomping). PEM does.
bool FitsLiteralBlock(const std::string& text) {
  if (text.size() < 2 || text.back() != '\n' || text[text.size() - 2] == '\n') return false;
  if (text.front() == ' ' || text.front() == '\n') return false;
  bool multi_line = false;
  for (size_t i = 0; i < text.size(); ++i) {
    char c = text[i];
    if (c == '\n') {
      if (i + 1 < text.size()) multi_line = true;
    } else if (c < 0x20 || c > 0x7e) {
      return false;
    }
  }
  return multi_line;
}

// Whether a plain scalar `text` would be read as something other than a
// string by a YAML 1.1 or 1.2 reader (PyYAML, yq, Ansible, Helm): a bool
// (`yes`, `off`...), a null, an int (`0x1F`, `0o17`, `1_000`, `1:30`), a
// float (`1.5`, `.inf`), a timestamp, or the merge and value keys.
bool ReadsAsAnotherType(const std::string& text) {
  static const RE2* const kOther = new RE2(
      "y|Y|yes|Yes|YES|n|N|no|No|NO|true|True|TRUE|false|False|FALSE|on|On|ON|off|Off|OFF|"
      "~|null|Null|NULL|<<|=|"
      "[-+]?(0[bB][01_]+|0[oO]?[0-7_]+|[0-9][0-9_]*|0[xX][0-9a-fA-F_.]+([pP][-+]?[0-9]+)?|"
      "[0-9][0-9_]*(:[0-5]?[0-9])+)|"
      "[-+]?(\\.[0-9_]+|[0-9][0-9_]*(\\.[0-9_]*)?)([eE][-+]?[0-9]+)?|"
      "[-+]?[0-9][0-9_]*(:[0-5]?[0-9])+\\.[0-9_]*|"
      "[-+]?\\.?(inf|Inf|INF|infinity|Infinity|INFINITY)|\\.?(nan|NaN|NAN)|"
      "[0-9][0-9][0-9][0-9]-[0-9][0-9]?-[0-9][0-9]?([Tt ].*)?");
  return text.empty() || RE2::FullMatch(text, *kOther);
}

// Block style throughout; multi-line strings (PEM) as `|` block scalars.
void EmitBlock(const YAML::Node& node, YAML::Emitter& out) {
  if (node.IsMap()) {
    out << YAML::BeginMap;
    for (auto it = node.begin(); it != node.end(); ++it) {
      out << YAML::Key << it->first << YAML::Value;
      EmitBlock(it->second, out);
    }
    out << YAML::EndMap;
  } else if (node.IsSequence()) {
    out << YAML::BeginSeq;
    for (auto it = node.begin(); it != node.end(); ++it) EmitBlock(*it, out);
    out << YAML::EndSeq;
  } else if (node.IsScalar() && FitsLiteralBlock(node.Scalar())) {
    // Without its final newline: `|` keeps one on reading, and yaml-cpp
    // would print that newline as a blank line after the block.
    const std::string& text = node.Scalar();
    out << YAML::Literal << text.substr(0, text.size() - 1);
  } else if (node.IsScalar() && node.Tag() == "!") {
    // A string (quoted in the JSON the spec was printed as).
    const std::string& text = node.Scalar();
    if (text.find('\x7f') != std::string::npos || text.find("\xe2\x80\xa8") != std::string::npos ||
        text.find("\xe2\x80\xa9") != std::string::npos || text.find("\xc2\x85") != std::string::npos) {
      // DEL is no printable YAML character: escaped (\x7f), and with it
      // any non-ASCII character (\xe9 is U+00E9: it reads back the same).
      // So are U+2028, U+2029 and U+0085, line breaks to a YAML 1.1 reader
      // (PyYAML stopped at one in a plain scalar).
      out << YAML::EscapeNonAscii << YAML::DoubleQuoted << text << YAML::EmitNonAscii;
    } else if (ReadsAsAnotherType(text)) {
      // `cluster: 0x1F` is the number 31 to PyYAML and yq: quoted, as
      // kubectl's printer does, so other tools read the string back.
      out << YAML::DoubleQuoted << text;
    } else {
      out << node;
    }
  } else {
    out << node;
  }
}

}  // namespace

std::string ToJson(const api::Resource& resource) {
  return absl::StrCat("{\"kind\":\"", api::KindName(api::KindOf(resource)),
                      "\",\"name\":\"", api::NameOf(resource), "\",\"spec\":",
                      SpecJson(resource), "}");
}

std::string ToYaml(const api::Resource& resource) {
  YAML::Node spec = YAML::Load(SpecJson(resource));
  YAML::Emitter out;
  out << YAML::BeginMap;
  out << YAML::Key << "kind" << YAML::Value << std::string(api::KindName(api::KindOf(resource)));
  const std::string name(api::NameOf(resource));
  out << YAML::Key << "name" << YAML::Value;
  if (ReadsAsAnotherType(name)) out << YAML::DoubleQuoted;
  out << name;
  out << YAML::Key << "spec" << YAML::Value;
  EmitBlock(spec, out);
  out << YAML::EndMap;
  // Ends with a newline: a last `|` block reads back with its own.
  return absl::StrCat(out.c_str(), "\n");
}

}  // namespace sluice::cli
