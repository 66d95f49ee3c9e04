#include "tests/harness/grpc_peer.h"

#include <simdjson.h>

#include <string_view>
#include <utility>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"

namespace sluice::testing {
namespace {

constexpr char kPython[] = "/usr/bin/python3";

std::string ToolPath() { return RunfilePath("tests/harness/grpc_tool.py"); }

// Reads a {string: string} object; false on any other shape.
bool ReadStringMap(simdjson::dom::element element, std::map<std::string, std::string>* out) {
  simdjson::dom::object object;
  if (element.get_object().get(object)) return false;
  for (simdjson::dom::key_value_pair field : object) {
    std::string_view value;
    if (field.value.get_string().get(value)) return false;
    (*out)[std::string(field.key)] = std::string(value);
  }
  return true;
}

}  // namespace

GrpcServer::GrpcServer(const std::string& name, Options options) {
  std::vector<std::string> args = {ToolPath(), "server"};
  if (!options.cert_path.empty()) {
    args.insert(args.end(), {"--tls", options.cert_path, options.key_path});
  }
  if (!options.client_ca_path.empty()) {
    args.insert(args.end(), {"--client-ca", options.client_ca_path});
  }
  if (!options.health_file.empty()) {
    args.insert(args.end(), {"--health-file", options.health_file});
  }
  std::string log = absl::StrCat(MakeTempDir(absl::StrCat("grpc-", name)), "/log");
  process_ = std::make_unique<Process>(kPython, args, log);
  std::optional<std::string> line;
  WaitFor(
      [&] {
        line = process_->WaitForLogLine("listening on ", absl::ZeroDuration());
        return line.has_value() || !process_->Running();
      },
      absl::Seconds(30));
  if (!line) return;
  int port = 0;
  absl::string_view tail = absl::string_view(*line).substr(line->find("listening on ") + 13);
  if (absl::SimpleAtoi(absl::StripAsciiWhitespace(tail), &port)) port_ = port;
}

std::string GrpcServer::address() const { return absl::StrCat("127.0.0.1:", port_); }

std::string GrpcCallResult::Describe() const {
  return absl::StrCat("grpc_tool exit ", exit_code, "\nstdout: ", out, "\nstderr: ", err,
                      parse_error.empty() ? "" : absl::StrCat("\nparse error: ", parse_error));
}

void ParseGrpcCallOutput(const std::string& json, GrpcCallResult* result) {
  result->parsed = false;
  simdjson::dom::parser parser;
  simdjson::dom::element doc;
  if (auto error = parser.parse(json).get(doc)) {
    result->parse_error = simdjson::error_message(error);
    return;
  }
  auto fail = [&](const char* field) {
    result->parse_error = absl::StrCat("field \"", field, "\" is missing or of the wrong type");
  };
  std::string_view text;
  if (doc["ok"].get_bool().get(result->ok)) return fail("ok");
  if (doc["code"].get_string().get(text)) return fail("code");
  result->code = std::string(text);
  if (doc["details"].get_string().get(text)) return fail("details");
  result->details = std::string(text);
  simdjson::dom::element metadata;
  if (doc["initial_metadata"].get(metadata) ||
      !ReadStringMap(metadata, &result->initial_metadata)) {
    return fail("initial_metadata");
  }
  if (doc["trailing_metadata"].get(metadata) ||
      !ReadStringMap(metadata, &result->trailing_metadata)) {
    return fail("trailing_metadata");
  }
  if (doc["responses"].get_int64().get(result->responses)) return fail("responses");
  if (doc["bytes"].get_int64().get(result->bytes)) return fail("bytes");
  if (doc["verified"].get_bool().get(result->verified)) return fail("verified");
  if (doc["elapsed_ms"].get_int64().get(result->elapsed_ms)) return fail("elapsed_ms");
  simdjson::dom::element payload;
  if (doc["payload"].get(payload)) return fail("payload");
  if (!payload.is_null()) {
    if (payload.get_string().get(text)) return fail("payload");
    result->payload = std::string(text);
  }
  simdjson::dom::element status;
  if (doc["status"].get(status)) return fail("status");
  if (!status.is_null()) {
    if (status.get_string().get(text)) return fail("status");
    result->status = std::string(text);
  }
  simdjson::dom::element stats;
  if (doc["stats"].get(stats)) return fail("stats");
  if (!stats.is_null()) {
    simdjson::dom::object object;
    if (stats.get_object().get(object)) return fail("stats");
    for (simdjson::dom::key_value_pair field : object) {
      int64_t calls = 0;
      if (field.value.get_int64().get(calls)) return fail("stats");
      result->stats[std::string(field.key)] = calls;
    }
  }
  result->parsed = true;
}

GrpcCallResult GrpcCall(const std::string& target, const std::string& kind,
                        const std::vector<std::string>& args, absl::Duration timeout) {
  std::vector<std::string> argv = {kPython, ToolPath(), "call", target, kind};
  argv.insert(argv.end(), args.begin(), args.end());
  CommandResult r = RunCommand(argv, {}, timeout);
  GrpcCallResult result;
  result.exit_code = r.exit_code;
  result.out = std::string(absl::StripAsciiWhitespace(r.out));
  result.err = std::move(r.err);
  if (result.exit_code != 0) {
    result.parse_error = "the tool did not complete the call";
    return result;
  }
  ParseGrpcCallOutput(result.out, &result);
  return result;
}

}  // namespace sluice::testing
