#include "dataplane/policy/request_validation/json_schema.h"

#include <simdjson.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/string_view.h"
#include "api/regex_limit.h"
#include "re2/re2.h"

namespace sluice::policy::request_validation {
namespace {

using simdjson::dom::element;
using simdjson::dom::element_type;

// JSON types as bits of a set. An integer instance carries both kNumber and
// kInteger, so "number" admits it and "integer" admits only it.
enum TypeBit : uint8_t {
  kObject = 1 << 0,
  kArray = 1 << 1,
  kString = 1 << 2,
  kNumber = 1 << 3,
  kInteger = 1 << 4,
  kBoolean = 1 << 5,
  kNull = 1 << 6,
};
constexpr uint8_t kAnyType = 0x7f;

constexpr std::pair<std::string_view, uint8_t> kTypeNames[] = {
    {"object", kObject},   {"array", kArray},     {"string", kString}, {"number", kNumber},
    {"integer", kInteger}, {"boolean", kBoolean}, {"null", kNull},
};

constexpr std::string_view kKeywords =
    "type, properties, required, additionalProperties, enum, minimum, maximum, "
    "exclusiveMinimum, exclusiveMaximum, minLength, maxLength, pattern, items, minItems, "
    "maxItems";
constexpr std::string_view kAnnotations[] = {
    "$schema", "$id",      "$comment",   "title",    "description",
    "default", "examples", "deprecated", "readOnly", "writeOnly",
};

// A schema's text nests two levels per subschema (the keyword's object and
// the schema), plus an enum value of up to a document's depth.
constexpr size_t kMaxSchemaTextDepth = 2 * kMaxSchemaDepth + kMaxDocumentDepth + 4;
// A thread keeps its body parser between calls while the parser's buffers
// are at most this big (a 16 MiB body's buffers are freed after it).
constexpr size_t kKeptParserCapacity = 1 << 20;
// Bounds on what a failure message quotes from the body.
constexpr size_t kMaxKeyInMessage = 64;
constexpr size_t kMaxPointerInMessage = 512;
constexpr size_t kMaxEnumInMessage = 200;

// This Abseil's string_view is not std::string_view: StrCat needs this.
absl::string_view Av(std::string_view s) { return absl::string_view(s.data(), s.size()); }

constexpr double kTwoTo64 = 18446744073709551616.0;

// A JSON number, compared exactly: integers (and doubles with no fractional
// part below 2^64 in magnitude) as sign and magnitude, the rest as doubles.
struct Number {
  bool exact = true;
  bool negative = false;  // never for zero
  uint64_t magnitude = 0;
  double value = 0;  // when !exact
};

Number FromUint64(uint64_t u) {
  Number n;
  n.magnitude = u;
  return n;
}

Number FromInt64(int64_t i) {
  Number n;
  n.negative = i < 0;
  n.magnitude = n.negative ? uint64_t{0} - static_cast<uint64_t>(i) : static_cast<uint64_t>(i);
  return n;
}

Number FromDouble(double d) {
  Number n;
  if (std::isfinite(d) && d == std::floor(d) && std::fabs(d) < kTwoTo64) {
    n.magnitude = static_cast<uint64_t>(std::fabs(d));
    n.negative = d < 0 && n.magnitude != 0;
  } else {
    n.exact = false;
    n.value = d;
  }
  return n;
}

// nullopt when `e` is not a number.
std::optional<Number> NumberOf(element e) {
  switch (e.type()) {
    case element_type::INT64: {
      int64_t i = 0;
      if (e.get_int64().get(i)) return std::nullopt;
      return FromInt64(i);
    }
    case element_type::UINT64: {
      uint64_t u = 0;
      if (e.get_uint64().get(u)) return std::nullopt;
      return FromUint64(u);
    }
    case element_type::DOUBLE: {
      double d = 0;
      if (e.get_double().get(d)) return std::nullopt;
      return FromDouble(d);
    }
    default:
      return std::nullopt;
  }
}

int CompareExact(const Number& a, const Number& b) {
  if (a.negative != b.negative) return a.negative ? -1 : 1;
  if (a.magnitude == b.magnitude) return 0;
  bool less = a.magnitude < b.magnitude;
  if (a.negative) less = !less;
  return less ? -1 : 1;
}

// -1, 0 or 1 as a <, ==, > b.
int Compare(const Number& a, const Number& b) {
  if (a.exact && b.exact) return CompareExact(a, b);
  if (!a.exact && !b.exact) return a.value < b.value ? -1 : (a.value > b.value ? 1 : 0);
  if (!a.exact) return -Compare(b, a);
  // `a` is an integer; `b` has a fractional part (so |b| < 2^53) or is
  // beyond 2^64 in magnitude.
  const double d = b.value;
  if (d >= kTwoTo64) return -1;
  if (d <= -kTwoTo64) return 1;
  // a < d exactly when a <= floor(d).
  return CompareExact(a, FromDouble(std::floor(d))) <= 0 ? -1 : 1;
}

// The shortest of %.15g..%.17g that reads back as `d`.
std::string FormatDouble(double d) {
  char buf[40];
  for (int precision = 15; precision <= 17; ++precision) {
    std::snprintf(buf, sizeof(buf), "%.*g", precision, d);
    if (std::strtod(buf, nullptr) == d) break;
  }
  return buf;
}

std::string FormatNumber(const Number& n) {
  if (!n.exact) return FormatDouble(n.value);
  return absl::StrCat(n.negative ? "-" : "", n.magnitude);
}

void AppendQuoted(std::string_view s, std::string* out) {
  out->push_back('"');
  for (char c : s) {
    if (c == '"' || c == '\\') {
      out->push_back('\\');
      out->push_back(c);
    } else if (static_cast<unsigned char>(c) < 0x20) {
      char buf[8];
      std::snprintf(buf, sizeof(buf), "\\u%04x", static_cast<unsigned>(c));
      out->append(buf);
    } else {
      out->push_back(c);
    }
  }
  out->push_back('"');
}

// `e` as canonical JSON text (members sorted by name, numbers by value), so
// that values equal as JSON have equal text. False when `e` nests more than
// kMaxDocumentDepth arrays and objects (`depth`: those around it).
bool AppendCanonical(element e, int depth, std::string* out) {
  switch (e.type()) {
    case element_type::ARRAY: {
      if (depth >= kMaxDocumentDepth) return false;
      simdjson::dom::array array;
      if (e.get_array().get(array)) return false;
      out->push_back('[');
      bool first = true;
      for (element item : array) {
        if (!first) out->push_back(',');
        first = false;
        if (!AppendCanonical(item, depth + 1, out)) return false;
      }
      out->push_back(']');
      return true;
    }
    case element_type::OBJECT: {
      if (depth >= kMaxDocumentDepth) return false;
      simdjson::dom::object object;
      if (e.get_object().get(object)) return false;
      std::vector<std::pair<std::string_view, std::string>> members;
      for (simdjson::dom::key_value_pair member : object) {
        std::string value;
        if (!AppendCanonical(member.value, depth + 1, &value)) return false;
        members.emplace_back(member.key, std::move(value));
      }
      std::sort(members.begin(), members.end());
      out->push_back('{');
      for (size_t i = 0; i < members.size(); ++i) {
        if (i > 0) out->push_back(',');
        AppendQuoted(members[i].first, out);
        out->push_back(':');
        out->append(members[i].second);
      }
      out->push_back('}');
      return true;
    }
    case element_type::STRING: {
      std::string_view s;
      if (e.get_string().get(s)) return false;
      AppendQuoted(s, out);
      return true;
    }
    case element_type::INT64:
    case element_type::UINT64:
    case element_type::DOUBLE: {
      std::optional<Number> n = NumberOf(e);
      if (!n) return false;
      out->append(FormatNumber(*n));
      return true;
    }
    case element_type::BOOL: {
      bool b = false;
      if (e.get_bool().get(b)) return false;
      out->append(b ? "true" : "false");
      return true;
    }
    case element_type::NULL_VALUE:
      out->append("null");
      return true;
  }
  return false;
}

uint8_t TypeBitsOf(element e) {
  switch (e.type()) {
    case element_type::OBJECT:
      return kObject;
    case element_type::ARRAY:
      return kArray;
    case element_type::STRING:
      return kString;
    case element_type::INT64:
    case element_type::UINT64:
      return kNumber | kInteger;
    case element_type::DOUBLE: {
      // No fractional part, however large (1e20 is an integer).
      double d = 0;
      if (e.get_double().get(d)) return kNumber;
      return std::isfinite(d) && d == std::floor(d) ? (kNumber | kInteger) : kNumber;
    }
    case element_type::BOOL:
      return kBoolean;
    case element_type::NULL_VALUE:
      return kNull;
  }
  return 0;
}

std::string_view TypeNameOf(element e) {
  uint8_t bits = TypeBitsOf(e);
  if (bits & kInteger) return "integer";
  for (const auto& [name, bit] : kTypeNames) {
    if (bits & bit) return name;
  }
  return "unknown";
}

// Unicode code points in valid UTF-8 (simdjson has checked the encoding):
// the bytes that do not continue a sequence.
uint64_t CodePoints(std::string_view s) {
  uint64_t n = 0;
  for (char c : s) n += (static_cast<unsigned char>(c) & 0xC0) != 0x80;
  return n;
}

// `s` cut to at most `max` bytes on a code point boundary, with "..." when
// cut.
std::string Shorten(std::string_view s, size_t max) {
  if (s.size() <= max) return std::string(s);
  size_t cut = max;
  while (cut > 0 && (static_cast<unsigned char>(s[cut]) & 0xC0) == 0x80) --cut;
  return absl::StrCat(absl::string_view(s.data(), cut), "...");
}

// A JSON pointer reference token (RFC 6901): '~' as "~0", '/' as "~1".
void AppendPointerToken(std::string_view key, std::string* out) {
  out->push_back('/');
  for (char c : key) {
    if (c == '~') {
      out->append("~0");
    } else if (c == '/') {
      out->append("~1");
    } else {
      out->push_back(c);
    }
  }
}

std::string ChildPointer(const std::string& pointer, std::string_view key) {
  std::string out = pointer;
  AppendPointerToken(key, &out);
  return out;
}

std::optional<uint64_t> NonNegativeInteger(element e) {
  std::optional<Number> n = NumberOf(e);
  if (!n || !n->exact || n->negative) return std::nullopt;
  return n->magnitude;
}

}  // namespace

// What one schema checks. The members whose keyword was absent stay empty.
struct JsonSchema::Node {
  bool reject_all = false;  // the `false` schema
  uint8_t types = kAnyType;
  std::string type_names;  // for messages: "string or null"
  bool has_enum = false;
  absl::flat_hash_set<std::string> enum_values;  // canonical JSON text
  std::string enum_text;                         // for messages
  std::optional<Number> minimum, maximum, exclusive_minimum, exclusive_maximum;
  std::optional<uint64_t> min_length, max_length, min_items, max_items;
  std::unique_ptr<RE2> pattern;
  uint64_t pattern_cost = 0;  // its program size: its weight per byte checked
  // Objects: each name in properties or required, with its index in
  // `properties` and in `required` (-1: not there).
  struct MemberRule {
    int property = -1;
    int required = -1;
  };
  absl::flat_hash_map<std::string, MemberRule> members;
  std::vector<std::unique_ptr<Node>> properties;
  std::vector<std::string> required;
  bool forbid_additional = false;
  std::unique_ptr<Node> additional;  // additionalProperties as a schema
  std::unique_ptr<Node> items;
};

namespace {

using Node = JsonSchema::Node;

absl::Status SchemaError(const std::string& pointer, std::string_view message) {
  if (pointer.empty()) return absl::InvalidArgumentError(Av(message));
  return absl::InvalidArgumentError(absl::StrCat(pointer, ": ", Av(message)));
}

// Compiles one schema object or boolean found at `pointer`, `depth` schemas
// deep (the root: 1).
absl::StatusOr<std::unique_ptr<Node>> CompileNode(element e, const std::string& pointer, int depth);

absl::Status CompileType(element e, const std::string& pointer, Node* node) {
  constexpr std::string_view kWhat =
      "must be one of object, array, string, number, integer, boolean, null, or a non-empty "
      "list of them";
  std::vector<element> names;
  if (e.type() == element_type::STRING) {
    names.push_back(e);
  } else if (e.type() == element_type::ARRAY) {
    simdjson::dom::array array;
    if (e.get_array().get(array)) return SchemaError(pointer, kWhat);
    for (element item : array) names.push_back(item);
    if (names.empty()) return SchemaError(pointer, kWhat);
  } else {
    return SchemaError(pointer, kWhat);
  }
  node->types = 0;
  std::vector<absl::string_view> written;
  for (size_t i = 0; i < names.size(); ++i) {
    std::string item_pointer =
        e.type() == element_type::ARRAY ? absl::StrCat(pointer, "/", i) : pointer;
    std::string_view name;
    uint8_t bit = 0;
    if (names[i].get_string().get(name) == simdjson::SUCCESS) {
      for (const auto& [known, known_bit] : kTypeNames) {
        if (name == known) bit = known_bit;
      }
    }
    if (bit == 0) return SchemaError(item_pointer, kWhat);
    if (node->types & bit) return SchemaError(item_pointer, "lists a type twice");
    node->types |= bit;
    written.push_back(Av(name));
  }
  // "number" takes integers too.
  if (node->types & kNumber) node->types |= kInteger;
  node->type_names = absl::StrJoin(written, " or ");
  return absl::OkStatus();
}

absl::Status CompileProperties(element e, const std::string& pointer, int depth, Node* node) {
  simdjson::dom::object object;
  if (e.get_object().get(object)) {
    return SchemaError(pointer, "must be an object of property names and schemas");
  }
  for (simdjson::dom::key_value_pair member : object) {
    std::string child = ChildPointer(pointer, member.key);
    Node::MemberRule& rule = node->members[absl::string_view(member.key.data(), member.key.size())];
    if (rule.property >= 0) return SchemaError(child, "duplicate property name");
    absl::StatusOr<std::unique_ptr<Node>> compiled = CompileNode(member.value, child, depth + 1);
    if (!compiled.ok()) return compiled.status();
    rule.property = static_cast<int>(node->properties.size());
    node->properties.push_back(std::move(*compiled));
  }
  return absl::OkStatus();
}

absl::Status CompileRequired(element e, const std::string& pointer, Node* node) {
  simdjson::dom::array array;
  if (e.get_array().get(array)) return SchemaError(pointer, "must be a list of property names");
  size_t i = 0;
  for (element item : array) {
    std::string item_pointer = absl::StrCat(pointer, "/", i++);
    std::string_view name;
    if (item.get_string().get(name)) return SchemaError(item_pointer, "must be a string");
    Node::MemberRule& rule = node->members[absl::string_view(name.data(), name.size())];
    if (rule.required >= 0) return SchemaError(item_pointer, "lists a property twice");
    rule.required = static_cast<int>(node->required.size());
    node->required.emplace_back(name);
  }
  return absl::OkStatus();
}

absl::Status CompileEnum(element e, const std::string& pointer, Node* node) {
  simdjson::dom::array array;
  if (e.get_array().get(array)) return SchemaError(pointer, "must be a non-empty list of values");
  std::vector<std::string> texts;
  size_t i = 0;
  for (element item : array) {
    std::string item_pointer = absl::StrCat(pointer, "/", i++);
    if (texts.size() == kMaxEnumValues) {
      return SchemaError(item_pointer, absl::StrCat("at most ", kMaxEnumValues, " values"));
    }
    std::string text;
    if (!AppendCanonical(item, 0, &text)) {
      return SchemaError(item_pointer, absl::StrCat("nested deeper than ", kMaxDocumentDepth,
                                                    " arrays and objects"));
    }
    if (node->enum_values.insert(text).second) texts.push_back(std::move(text));
  }
  if (texts.empty()) return SchemaError(pointer, "must be a non-empty list of values");
  node->has_enum = true;
  node->enum_text = absl::StrCat("[", absl::StrJoin(texts, ", "), "]");
  if (node->enum_text.size() > kMaxEnumInMessage) {
    node->enum_text = absl::StrCat("the ", texts.size(), " allowed values");
  }
  return absl::OkStatus();
}

// Set while CompileNew runs: patterns are held to api/regex_limit.h.
thread_local bool new_content = false;

absl::Status CompilePattern(element e, const std::string& pointer, Node* node) {
  std::string_view text;
  if (e.get_string().get(text)) return SchemaError(pointer, "must be a string (an RE2 pattern)");
  if (text.size() > kMaxPatternBytes) {
    return SchemaError(pointer, absl::StrCat("at most ", kMaxPatternBytes, " bytes"));
  }
  RE2::Options options;
  options.set_log_errors(false);
  auto re = std::make_unique<RE2>(re2::StringPiece(text.data(), text.size()), options);
  if (!re->ok()) return SchemaError(pointer, absl::StrCat("invalid RE2 pattern: ", re->error()));
  if (std::string why = new_content ? api::RegexProgramTooLarge(*re) : std::string(); !why.empty()) {
    return SchemaError(pointer, why);
  }
  node->pattern_cost = static_cast<uint64_t>(std::max(re->ProgramSize(), 1));
  node->pattern = std::move(re);
  return absl::OkStatus();
}

absl::Status CheckConsistent(const std::string& pointer, const Node& node) {
  if (node.min_length && node.max_length && *node.min_length > *node.max_length) {
    return SchemaError(absl::StrCat(pointer, "/maxLength"), "is less than minLength");
  }
  if (node.min_items && node.max_items && *node.min_items > *node.max_items) {
    return SchemaError(absl::StrCat(pointer, "/maxItems"), "is less than minItems");
  }
  if (node.minimum && node.maximum && Compare(*node.minimum, *node.maximum) > 0) {
    return SchemaError(absl::StrCat(pointer, "/maximum"), "is less than minimum");
  }
  if (node.forbid_additional) {
    for (size_t i = 0; i < node.required.size(); ++i) {
      if (node.members.find(node.required[i])->second.property < 0) {
        return SchemaError(absl::StrCat(pointer, "/required/", i),
                           absl::StrCat("'", node.required[i],
                                        "' is not in properties and additionalProperties is "
                                        "false: no object could pass"));
      }
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<Node>> CompileNode(element e, const std::string& pointer,
                                                  int depth) {
  auto node = std::make_unique<Node>();
  if (depth > kMaxSchemaDepth) {
    return SchemaError(pointer,
                       absl::StrCat("schemas nested deeper than ", kMaxSchemaDepth, " levels"));
  }
  if (e.type() == element_type::BOOL) {
    bool accept = true;
    if (e.get_bool().get(accept)) accept = true;
    node->reject_all = !accept;
    return node;
  }
  simdjson::dom::object object;
  if (e.get_object().get(object)) {
    return SchemaError(pointer, absl::StrCat("must be a schema (an object or a boolean), got ",
                                             Av(TypeNameOf(e))));
  }
  absl::flat_hash_set<std::string_view> seen;
  for (simdjson::dom::key_value_pair member : object) {
    const std::string_view key = member.key;
    const element value = member.value;
    const std::string child = ChildPointer(pointer, key);
    if (!seen.insert(key).second) return SchemaError(child, "duplicate keyword");
    absl::Status status;
    if (key == "type") {
      status = CompileType(value, child, node.get());
    } else if (key == "properties") {
      status = CompileProperties(value, child, depth, node.get());
    } else if (key == "required") {
      status = CompileRequired(value, child, node.get());
    } else if (key == "additionalProperties") {
      if (value.type() == element_type::BOOL) {
        bool allow = true;
        if (value.get_bool().get(allow)) allow = true;
        node->forbid_additional = !allow;
      } else if (value.type() == element_type::OBJECT) {
        absl::StatusOr<std::unique_ptr<Node>> compiled = CompileNode(value, child, depth + 1);
        if (!compiled.ok()) return compiled.status();
        node->additional = std::move(*compiled);
      } else {
        status = SchemaError(child, "must be a boolean or a schema");
      }
    } else if (key == "enum") {
      status = CompileEnum(value, child, node.get());
    } else if (key == "minimum" || key == "maximum" || key == "exclusiveMinimum" ||
               key == "exclusiveMaximum") {
      std::optional<Number> n = NumberOf(value);
      if (!n) {
        status = SchemaError(child, value.type() == element_type::BOOL
                                        ? "must be a number (the draft-4 boolean form is not "
                                          "supported: write the bound itself here)"
                                        : "must be a number");
      } else if (key == "minimum") {
        node->minimum = n;
      } else if (key == "maximum") {
        node->maximum = n;
      } else if (key == "exclusiveMinimum") {
        node->exclusive_minimum = n;
      } else {
        node->exclusive_maximum = n;
      }
    } else if (key == "minLength" || key == "maxLength" || key == "minItems" || key == "maxItems") {
      std::optional<uint64_t> n = NonNegativeInteger(value);
      if (!n) {
        status = SchemaError(child, "must be a non-negative integer");
      } else if (key == "minLength") {
        node->min_length = n;
      } else if (key == "maxLength") {
        node->max_length = n;
      } else if (key == "minItems") {
        node->min_items = n;
      } else {
        node->max_items = n;
      }
    } else if (key == "pattern") {
      status = CompilePattern(value, child, node.get());
    } else if (key == "items") {
      if (value.type() == element_type::ARRAY) {
        status = SchemaError(child,
                             "must be a schema (the tuple form, a list of schemas, is "
                             "not supported)");
      } else {
        absl::StatusOr<std::unique_ptr<Node>> compiled = CompileNode(value, child, depth + 1);
        if (!compiled.ok()) return compiled.status();
        node->items = std::move(*compiled);
      }
    } else if (std::find(std::begin(kAnnotations), std::end(kAnnotations), key) ==
               std::end(kAnnotations)) {
      status = SchemaError(child, absl::StrCat("keyword not supported (supported: ", Av(kKeywords),
                                               "; and annotations such as title and "
                                               "description)"));
    }
    if (!status.ok()) return status;
  }
  absl::Status status = CheckConsistent(pointer, *node);
  if (!status.ok()) return status;
  return node;
}

// One body's walk: the instance path so far, for the failure message.
class Walk {
 public:
  absl::Status Check(const Node& node, element e, int depth) {
    if (depth > kMaxDocumentDepth) return TooDeep();  // the parser refuses such bodies first
    if (node.reject_all) return Fail("is not allowed (false schema)");
    if (node.types != kAnyType && (TypeBitsOf(e) & node.types) == 0) {
      return Fail(absl::StrCat("must be of type ", node.type_names, ", got ", Av(TypeNameOf(e)),
                               " (type)"));
    }
    if (node.has_enum) {
      std::string text;
      if (!AppendCanonical(e, depth, &text)) return TooDeep();
      if (!node.enum_values.contains(text)) {
        return Fail(absl::StrCat("must be one of ", node.enum_text, " (enum)"));
      }
    }
    switch (e.type()) {
      case element_type::INT64:
      case element_type::UINT64:
      case element_type::DOUBLE:
        return CheckNumber(node, e);
      case element_type::STRING:
        return CheckString(node, e);
      case element_type::ARRAY:
        return CheckArray(node, e, depth);
      case element_type::OBJECT:
        return CheckObject(node, e, depth);
      case element_type::BOOL:
      case element_type::NULL_VALUE:
        break;
    }
    return absl::OkStatus();
  }

 private:
  uint64_t pattern_work_ = 0;  // against kMaxPatternWork
  struct Segment {
    std::string_view key;
    uint64_t index = 0;
    bool is_index = false;
  };

  absl::Status CheckNumber(const Node& node, element e) {
    std::optional<Number> n = NumberOf(e);
    if (!n) return absl::OkStatus();
    if (node.minimum && Compare(*n, *node.minimum) < 0) {
      return Fail(absl::StrCat("must be >= ", FormatNumber(*node.minimum), " (minimum)"));
    }
    if (node.maximum && Compare(*n, *node.maximum) > 0) {
      return Fail(absl::StrCat("must be <= ", FormatNumber(*node.maximum), " (maximum)"));
    }
    if (node.exclusive_minimum && Compare(*n, *node.exclusive_minimum) <= 0) {
      return Fail(
          absl::StrCat("must be > ", FormatNumber(*node.exclusive_minimum), " (exclusiveMinimum)"));
    }
    if (node.exclusive_maximum && Compare(*n, *node.exclusive_maximum) >= 0) {
      return Fail(
          absl::StrCat("must be < ", FormatNumber(*node.exclusive_maximum), " (exclusiveMaximum)"));
    }
    return absl::OkStatus();
  }

  absl::Status CheckString(const Node& node, element e) {
    std::string_view s;
    if (e.get_string().get(s)) return absl::OkStatus();
    if (node.min_length || node.max_length) {
      const uint64_t length = CodePoints(s);
      if (node.min_length && length < *node.min_length) {
        return Fail(
            absl::StrCat("must be at least ", *node.min_length, " characters long (minLength)"));
      }
      if (node.max_length && length > *node.max_length) {
        return Fail(
            absl::StrCat("must be at most ", *node.max_length, " characters long (maxLength)"));
      }
    }
    if (node.pattern) {
      pattern_work_ += s.size() * node.pattern_cost;
      if (pattern_work_ > kMaxPatternWork) {
        return Fail(absl::StrCat("is past what patterns may check in one body (", kMaxPatternWork,
                                 " bytes, each weighed by its pattern's program size: ",
                                 node.pattern->pattern(), " weighs ", node.pattern_cost,
                                 ") (pattern)"));
      }
      if (!RE2::PartialMatch(re2::StringPiece(s.data(), s.size()), *node.pattern)) {
        return Fail(absl::StrCat("does not match pattern ", node.pattern->pattern(), " (pattern)"));
      }
    }
    return absl::OkStatus();
  }

  absl::Status CheckArray(const Node& node, element e, int depth) {
    simdjson::dom::array array;
    if (e.get_array().get(array)) return absl::OkStatus();
    if (node.min_items || node.max_items) {
      const uint64_t size = array.size();
      if (node.min_items && size < *node.min_items) {
        return Fail(absl::StrCat("must have at least ", *node.min_items, " items (minItems)"));
      }
      if (node.max_items && size > *node.max_items) {
        return Fail(absl::StrCat("must have at most ", *node.max_items, " items (maxItems)"));
      }
    }
    if (node.items == nullptr) return absl::OkStatus();
    uint64_t index = 0;
    for (element item : array) {
      path_.push_back({{}, index++, true});
      absl::Status status = Check(*node.items, item, depth + 1);
      path_.pop_back();
      if (!status.ok()) return status;
    }
    return absl::OkStatus();
  }

  absl::Status CheckObject(const Node& node, element e, int depth) {
    simdjson::dom::object object;
    if (e.get_object().get(object)) return absl::OkStatus();
    if (!node.required.empty()) {
      std::vector<bool> present(node.required.size());
      for (simdjson::dom::key_value_pair member : object) {
        auto it = node.members.find(absl::string_view(member.key.data(), member.key.size()));
        if (it != node.members.end() && it->second.required >= 0) {
          present[it->second.required] = true;
        }
      }
      for (size_t i = 0; i < present.size(); ++i) {
        if (present[i]) continue;
        path_.push_back({node.required[i]});
        return Fail("is required (required)");
      }
    }
    if (node.properties.empty() && !node.forbid_additional && node.additional == nullptr) {
      return absl::OkStatus();
    }
    for (simdjson::dom::key_value_pair member : object) {
      auto it = node.members.find(absl::string_view(member.key.data(), member.key.size()));
      const Node* schema = nullptr;
      if (it != node.members.end() && it->second.property >= 0) {
        schema = node.properties[it->second.property].get();
      } else if (node.forbid_additional) {
        path_.push_back({member.key});
        return Fail("is not allowed (additionalProperties)");
      } else {
        schema = node.additional.get();
      }
      if (schema == nullptr) continue;
      path_.push_back({member.key});
      absl::Status status = Check(*schema, member.value, depth + 1);
      path_.pop_back();
      if (!status.ok()) return status;
    }
    return absl::OkStatus();
  }

  absl::Status TooDeep() {
    return absl::InvalidArgumentError(
        absl::StrCat("body: nested deeper than ", kMaxDocumentDepth, " arrays and objects"));
  }

  // "body: <pointer>: <what>", the pointer bounded (keys come from the client).
  absl::Status Fail(std::string_view what) {
    std::string pointer;
    for (const Segment& s : path_) {
      if (s.is_index) {
        absl::StrAppend(&pointer, "/", s.index);
      } else {
        AppendPointerToken(Shorten(s.key, kMaxKeyInMessage), &pointer);
      }
    }
    if (pointer.empty()) return absl::InvalidArgumentError(absl::StrCat("body: ", Av(what)));
    return absl::InvalidArgumentError(
        absl::StrCat("body: ", Shorten(pointer, kMaxPointerInMessage), ": ", Av(what)));
  }

  std::vector<Segment> path_;
};

}  // namespace

JsonSchema::JsonSchema(std::unique_ptr<Node> root) : root_(std::move(root)) {}

absl::StatusOr<std::unique_ptr<const JsonSchema>> JsonSchema::CompileNew(
    std::string_view schema_text) {
  new_content = true;
  auto compiled = Compile(schema_text);
  new_content = false;
  return compiled;
}
JsonSchema::~JsonSchema() = default;

absl::StatusOr<std::unique_ptr<const JsonSchema>> JsonSchema::Compile(
    std::string_view schema_text) {
  if (schema_text.size() > kMaxSchemaBytes) {
    return absl::InvalidArgumentError(
        absl::StrCat("at most ", kMaxSchemaBytes, " bytes, got ", schema_text.size()));
  }
  simdjson::dom::parser parser;
  if (parser.allocate(std::max<size_t>(schema_text.size(), 64), kMaxSchemaTextDepth)) {
    return absl::ResourceExhaustedError("cannot allocate a JSON parser");
  }
  element root;
  simdjson::error_code error = parser.parse(schema_text.data(), schema_text.size()).get(root);
  if (error == simdjson::DEPTH_ERROR) {
    return absl::InvalidArgumentError(absl::StrCat("nested too deeply (at most ", kMaxSchemaDepth,
                                                   " schemas, and enum values at most ",
                                                   kMaxDocumentDepth, " arrays and objects deep)"));
  }
  if (error) {
    return absl::InvalidArgumentError(
        absl::StrCat("not valid JSON: ", simdjson::error_message(error)));
  }
  absl::StatusOr<std::unique_ptr<Node>> node = CompileNode(root, "", 1);
  if (!node.ok()) return node.status();
  return std::unique_ptr<const JsonSchema>(new JsonSchema(std::move(*node)));
}

namespace {

// Whether `e` has at most `levels` arrays and objects nested in it, itself
// included.
bool WithinDepth(element e, int levels) {
  if (e.is_array()) {
    if (levels == 0) return false;
    for (element item : simdjson::dom::array(e)) {
      if (!WithinDepth(item, levels - 1)) return false;
    }
  } else if (e.is_object()) {
    if (levels == 0) return false;
    for (auto member : simdjson::dom::object(e)) {
      if (!WithinDepth(member.value, levels - 1)) return false;
    }
  }
  return true;
}

}  // namespace

static_assert(JsonSchema::kPadding == simdjson::SIMDJSON_PADDING);

absl::Status JsonSchema::Validate(std::string_view document, bool padded) const {
  // One parser per thread (a worker's), its buffers reused while small.
  thread_local std::unique_ptr<simdjson::dom::parser> parser;
  if (parser == nullptr) {
    parser = std::make_unique<simdjson::dom::parser>();
    // simdjson's depth counts a scalar inside the innermost array or object
    // as a level too: kMaxDocumentDepth + 1 lets 64 arrays around a value
    // through, and 65 around nothing, which WithinDepth catches.
    if (parser->allocate(4096, kMaxDocumentDepth + 1)) {
      parser.reset();
      return absl::ResourceExhaustedError("body: cannot allocate a JSON parser");
    }
  }
  absl::Status status;
  element root;
  simdjson::error_code error =
      parser->parse(document.data(), document.size(), /*realloc_if_needed=*/!padded).get(root);
  if (error == simdjson::DEPTH_ERROR) {
    status = absl::InvalidArgumentError(
        absl::StrCat("body: nested deeper than ", kMaxDocumentDepth, " arrays and objects"));
  } else if (error) {
    status = absl::InvalidArgumentError(
        absl::StrCat("body: not valid JSON: ", simdjson::error_message(error)));
  } else if (document.size() > 2 * kMaxDocumentDepth && !WithinDepth(root, kMaxDocumentDepth)) {
    // (Shorter documents cannot hold kMaxDocumentDepth + 1 arrays or objects.)
    status = absl::InvalidArgumentError(
        absl::StrCat("body: nested deeper than ", kMaxDocumentDepth, " arrays and objects"));
  } else {
    status = Walk().Check(*root_, root, 0);
  }
  if (parser->capacity() > kKeptParserCapacity) parser.reset();
  return status;
}

}  // namespace sluice::policy::request_validation
