// The JSON Schema subset of the `request-validation` policy: the operator's
// schema text is compiled once into an immutable tree, which then checks
// request bodies (bytes in, the first failure out). No I/O; a unit test or a
// fuzzer drives it directly.
//
// Keywords (JSON Schema 2020-12 meaning, restricted as noted):
//   type                  "object", "array", "string", "number", "integer",
//                         "boolean", "null", or a non-empty list of them
//                         ("integer": a number with no fractional part, so
//                         1.0 and 1e20 are integers)
//   properties            object of name -> schema
//   required              list of unique names
//   additionalProperties  boolean or schema, for members not in properties
//   enum                  non-empty list (at most 256) of JSON values; equal
//                         as JSON (1 == 1.0, member order does not matter)
//   minimum, maximum, exclusiveMinimum, exclusiveMaximum   numbers (the
//                         draft-4 boolean exclusive* form is refused)
//   minLength, maxLength  non-negative integers, in Unicode code points
//   pattern               RE2 expression, searched (unanchored), as JSON
//                         Schema's ECMA-262 `pattern` is
//   items                 one schema for every element (the tuple form, a
//                         list of schemas, is refused)
//   minItems, maxItems    non-negative integers
// A schema is an object of keywords or a boolean (true: anything, false:
// nothing). Annotations are accepted and have no effect: $schema, $id,
// $comment, title, description, default, examples, deprecated, readOnly,
// writeOnly. Any other keyword ($ref, oneOf, format, multipleOf, ...) is
// refused at Compile() rather than ignored. Keywords that do not apply to an
// instance's type pass it (minLength says nothing about a number), as in
// JSON Schema.
//
// Limits: schema text at most kMaxSchemaBytes; schemas nested at most
// kMaxSchemaDepth deep (the root is depth 1; each properties/<name>, items
// and additionalProperties schema one more); documents (and enum values) at
// most kMaxDocumentDepth arrays/objects deep. Integers must fit 64 bits
// (signed or unsigned) and other numbers a double, else the document is
// refused as not valid JSON (simdjson's limits).
//
// Thread-safety: Compile() runs on any thread. A compiled JsonSchema is
// immutable; Validate() may run on many threads at once (each thread parses
// with its own simdjson parser, kept between calls while small).
#ifndef SLUICE_DATAPLANE_POLICY_REQUEST_VALIDATION_JSON_SCHEMA_H_
#define SLUICE_DATAPLANE_POLICY_REQUEST_VALIDATION_JSON_SCHEMA_H_

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace sluice::policy::request_validation {

inline constexpr size_t kMaxSchemaBytes = 64 * 1024;
inline constexpr int kMaxSchemaDepth = 32;
inline constexpr int kMaxDocumentDepth = 64;
inline constexpr size_t kMaxEnumValues = 256;
inline constexpr size_t kMaxPatternBytes = 1024;
// What `pattern`s may check in one body: the bytes of each string checked
// times its pattern's RE2 program size, summed. RE2 is linear, but a
// pattern whose DFA outgrows its memory (`a[ab]{200}c`) falls back to its
// NFA at ~7 ns per byte per program instruction: 1.4 s for 1 MiB on one
// worker. This bounds that to ~0.25 s, and lets a pattern of program size
// 32 or less (most) check 1 MiB.
inline constexpr uint64_t kMaxPatternWork = uint64_t{1} << 25;

class JsonSchema {
 public:
  // Parses and compiles `schema_text`. Errors are INVALID_ARGUMENT with a
  // message that starts with the JSON pointer (RFC 6901) of the offending
  // keyword, e.g. "/properties/age/minimum: must be a number", or that
  // speaks of the text as a whole ("not valid JSON: ...").
  static absl::StatusOr<std::unique_ptr<const JsonSchema>> Compile(std::string_view schema_text);
  // The same, with the rules only a new config is held to (an apply's
  // ValidateNew): each pattern within api/regex_limit.h's program size.
  static absl::StatusOr<std::unique_ptr<const JsonSchema>> CompileNew(
      std::string_view schema_text);

  ~JsonSchema();
  JsonSchema(const JsonSchema&) = delete;
  JsonSchema& operator=(const JsonSchema&) = delete;

  // Checks `document` against the schema. OK, or INVALID_ARGUMENT with the
  // first failure as a client may see it, naming the instance's JSON
  // pointer and the keyword: "body: /items/2/price: must be >= 0 (minimum)",
  // "body: must be of type object, got array (type)" (the root has no
  // pointer), "body: not valid JSON: <simdjson's reason>", "body: nested
  // deeper than 64 arrays and objects". Checks run depth first, and at each
  // value in this order: false schema, type, enum, the type's own keywords
  // (numbers: minimum, maximum, exclusiveMinimum, exclusiveMaximum; strings:
  // minLength, maxLength, pattern; arrays: minItems, maxItems, then items in
  // order; objects: required in the listed order, then members in document
  // order against properties or additionalProperties).
  // `padded`: kPadding more bytes are allocated past the document's end (a
  // std::string's spare capacity), so the parser reads it in place instead
  // of copying it (a 16 MiB body was in memory once more for the parse).
  static constexpr size_t kPadding = 64;
  absl::Status Validate(std::string_view document, bool padded = false) const;

  struct Node;

 private:
  explicit JsonSchema(std::unique_ptr<Node> root);
  std::unique_ptr<Node> root_;
};

}  // namespace sluice::policy::request_validation

#endif  // SLUICE_DATAPLANE_POLICY_REQUEST_VALIDATION_JSON_SCHEMA_H_
