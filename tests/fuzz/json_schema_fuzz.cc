// libFuzzer target: the request-validation policy's JSON Schema subset
// (dataplane/policy/request_validation/json_schema.h), which reads request
// bodies from clients.
//
// Input layout: byte 0 selects what the rest is.
//   bit 0x80 clear: a request body, checked against the compiled schema
//     number (byte 0 % kSchemas) below (together they use every keyword,
//     the schema depth limit and enum values of every kind);
//   bit 0x80 set: a schema text (operator input): Compile() must answer,
//     and a schema that compiles checks a few fixed bodies and the input.
// Every answer is checked against the contract: a failure is
// INVALID_ARGUMENT, its message starts with "body: ", is bounded and valid
// UTF-8 (it goes into a JSON error body), and checking the same body again
// gives the same answer (the thread's parser is reused between calls). A
// violation aborts so that libFuzzer reports it.
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "dataplane/policy/request_validation/json_schema.h"

#define FUZZ_CHECK(cond)                                                    \
  do {                                                                      \
    if (!(cond)) {                                                          \
      std::fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, \
                   #cond);                                                  \
      std::abort();                                                         \
    }                                                                       \
  } while (0)

namespace sluice::policy::request_validation::fuzz {
namespace {

// The longest message: "body: " + a pointer (bounded to 512 bytes and
// "...") + ": does not match pattern " + a pattern (at most 1024 bytes) +
// " (pattern)".
constexpr size_t kMaxMessage = 2048;

std::string DeepItems(int schemas) {
  std::string out;
  for (int i = 1; i < schemas; ++i) out += "{\"items\":";
  out += "{\"type\":[\"integer\",\"string\"],\"enum\":[1,\"a\",2.5e3]}";
  for (int i = 1; i < schemas; ++i) out += "}";
  return out;
}

const std::vector<std::unique_ptr<const JsonSchema>>& Schemas() {
  static const auto* schemas = [] {
    const std::string texts[] = {
        R"({"type": "object", "required": ["id", "items"],
            "properties": {
              "id": {"type": "integer", "minimum": 1, "maximum": 9007199254740993},
              "name": {"type": "string", "minLength": 1, "maxLength": 8,
                       "pattern": "^[\\p{L} ]+$"},
              "ratio": {"type": "number", "exclusiveMinimum": 0, "exclusiveMaximum": 1.5},
              "tags": {"type": "array", "minItems": 1, "maxItems": 4,
                       "items": {"type": "string", "enum": ["a", "b", "\u00e9"]}},
              "items": {"type": "array",
                        "items": {"type": "object", "required": ["price"],
                                  "properties": {"price": {"type": "number", "minimum": 0}},
                                  "additionalProperties": false}},
              "meta": {"type": ["object", "null"], "additionalProperties": {"type": "boolean"}},
              "never": false
            },
            "additionalProperties": true})",
        DeepItems(32),
        R"({"enum": [null, true, -0, 18446744073709551615, -9223372036854775808, 1e300,
                     {"a": [1, {"b": null}], "c": "x"}, [[], {}], "\u0000"]})",
        R"({"type": "string", "pattern": "(a|b)*c$", "minLength": 2, "maxLength": 64})",
        R"({"type": ["array", "object"], "items": {"type": "object",
            "properties": {"k": {"items": true}}, "additionalProperties": {"maxItems": 2}}})",
        "{}",
        "false",
    };
    auto* out = new std::vector<std::unique_ptr<const JsonSchema>>();
    for (const std::string& text : texts) {
      auto schema = JsonSchema::Compile(text);
      if (!schema.ok()) {
        std::fprintf(stderr, "fuzz schema does not compile: %s\n%s\n",
                     std::string(schema.status().message()).c_str(),
                     text.c_str());
        std::abort();
      }
      out->push_back(std::move(*schema));
    }
    return out;
  }();
  return *schemas;
}

bool ValidUtf8(std::string_view s) {
  size_t i = 0;
  while (i < s.size()) {
    const unsigned char c = static_cast<unsigned char>(s[i]);
    size_t n = c < 0x80           ? 1
               : (c >> 5) == 0x6  ? 2
               : (c >> 4) == 0xE  ? 3
               : (c >> 3) == 0x1E ? 4
                                  : 0;
    if (n == 0 || i + n > s.size()) return false;
    for (size_t k = 1; k < n; ++k) {
      if ((static_cast<unsigned char>(s[i + k]) & 0xC0) != 0x80) return false;
    }
    i += n;
  }
  return true;
}

void CheckBody(const JsonSchema& schema, std::string_view body) {
  absl::Status first = schema.Validate(body);
  if (!first.ok()) {
    FUZZ_CHECK(first.code() == absl::StatusCode::kInvalidArgument);
    std::string_view message(first.message().data(), first.message().size());
    FUZZ_CHECK(message.substr(0, 6) == "body: ");
    FUZZ_CHECK(message.size() <= kMaxMessage);
    FUZZ_CHECK(ValidUtf8(message));
  }
  absl::Status again = schema.Validate(body);
  FUZZ_CHECK(again == first);
}

void RunOne(const uint8_t* data, size_t size) {
  if (size < 1) return;
  const uint8_t selector = data[0];
  const std::string_view rest(reinterpret_cast<const char*>(data) + 1,
                              size - 1);
  if ((selector & 0x80) == 0) {
    const auto& schemas = Schemas();
    CheckBody(*schemas[selector % schemas.size()], rest);
    return;
  }
  auto schema = JsonSchema::Compile(rest);
  if (!schema.ok()) {
    FUZZ_CHECK(schema.status().code() == absl::StatusCode::kInvalidArgument);
    FUZZ_CHECK(!schema.status().message().empty());
    return;
  }
  for (std::string_view body :
       {std::string_view("{}"), std::string_view("[1,\"a\",null]"),
        std::string_view("{\"a\":{\"b\":[1.5,-2,true]}}"),
        std::string_view("\"\xc3\xa9t\xc3\xa9\""), rest}) {
    CheckBody(**schema, body);
  }
}

}  // namespace
}  // namespace sluice::policy::request_validation::fuzz

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  sluice::policy::request_validation::fuzz::RunOne(data, size);
  return 0;
}
