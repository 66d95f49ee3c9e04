# Sourced by run_fuzzer.sh for the JSON Schema target: the libraries it
# links, the seed corpus (${corpus}) and the dictionary (${work}/fuzz.dict).

# The system libraries json_schema.cc links, as bazel/system_libs.BUILD lists
# them for @system_libs//:simdjson, @system_libs//:re2 and @system_libs//:absl.
libs=(
  -lsimdjson -lre2
  -labsl_statusor -labsl_status -labsl_cord -labsl_cordz_info
  -labsl_cord_internal -labsl_cordz_functions -labsl_cordz_handle
  -labsl_cordz_sample_token -labsl_exponential_biased
  -labsl_str_format_internal -labsl_synchronization
  -labsl_graphcycles_internal -labsl_stacktrace -labsl_symbolize
  -labsl_debugging_internal -labsl_demangle_internal -labsl_malloc_internal
  -labsl_time -labsl_civil_time -labsl_time_zone -labsl_strings
  -labsl_strings_internal -labsl_hash -labsl_city -labsl_low_level_hash
  -labsl_raw_hash_set -labsl_hashtablez_sampler -labsl_strerror
  -labsl_bad_optional_access -labsl_bad_variant_access -labsl_int128
  -labsl_base -labsl_spinlock_wait -labsl_throw_delegate
  -labsl_raw_logging_internal -labsl_log_severity -pthread
)

# Seeds. Byte 0 picks a compiled schema (bit 0x80 clear; see
# tests/fuzz/json_schema_fuzz.cc) or says the rest is a schema (0x80 set).
seed() {
  printf '%b' "$2" >"${corpus}/$1"
}
seed order_ok '\x00{"id": 7, "name": "Ann", "ratio": 0.5, "tags": ["a", "\\u00e9"], "items": [{"price": 1}, {"price": 0.25}], "meta": {"x": true}}'
seed order_bad '\x00{"id": 0, "name": "", "items": [{"price": -1, "extra": 1}], "never": 1}'
seed deep_ok '\x01[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]'
seed deep_bad '\x01[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[["x"]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]'
seed enum '\x02{"c": "x", "a": [1.0, {"b": null}]}'
seed enum_numbers '\x02[-0.0, 1.8446744073709551615e19, 1e300, -9223372036854775808]'
seed pattern '\x03"abbac"'
seed unicode '\x03"\xf0\x9f\x98\x80\xc3\xa9c"'
seed mixed '\x04[{"k": [1, 2, 3], "z": [1, 2, 3]}, {"q~/": []}]'
seed invalid '\x05{"a": [1, 2,, "\\ud800"]'
seed schema '\x80{"type": ["object", "null"], "required": ["a"], "properties": {"a": {"enum": [1, [2]]}}, "additionalProperties": {"minLength": 1, "pattern": "^x"}}'
seed schema_items '\x80{"items": {"items": {"minimum": -1.5, "maximum": 1e3, "exclusiveMinimum": -2}}, "minItems": 1, "maxItems": 9}'

# Tokens of JSON and of the schema keywords.
cat >"${work}/fuzz.dict" <<'DICT'
"{"
"}"
"["
"]"
":"
","
"\""
"null"
"true"
"false"
"-0"
"1e308"
"18446744073709551615"
"-9223372036854775808"
"9007199254740993"
"0.5"
"\\u00e9"
"\\ud83d\\ude00"
"\\u0000"
"\\/"
"\"type\""
"\"object\""
"\"array\""
"\"string\""
"\"number\""
"\"integer\""
"\"boolean\""
"\"properties\""
"\"required\""
"\"additionalProperties\""
"\"enum\""
"\"minimum\""
"\"maximum\""
"\"exclusiveMinimum\""
"\"exclusiveMaximum\""
"\"minLength\""
"\"maxLength\""
"\"pattern\""
"\"items\""
"\"minItems\""
"\"maxItems\""
"\"price\""
"\"id\""
"\"tags\""
"\"meta\""
"\"never\""
DICT
