#include "common/flags.h"

#include <algorithm>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"

namespace sluice {

absl::StatusOr<ParsedFlags> ParseFlags(int argc, char** argv,
                                       const std::set<std::string>& with_value,
                                       const std::set<std::string>& switches) {
  ParsedFlags parsed;
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i];
    if (arg == "--") {
      for (++i; i < argc; ++i) parsed.positional.push_back(argv[i]);
      break;
    }
    if (!absl::StartsWith(arg, "-") || arg == "-") {
      parsed.positional.push_back(arg);
      continue;
    }
    if (arg == "-h" && switches.count("help")) {  // as every CLI takes it
      parsed.switches.insert("help");
      continue;
    }
    const std::string dashes = arg[1] == '-' ? "--" : "-";  // as typed, for errors
    std::string name = arg.substr(dashes.size());
    std::string value;
    bool has_value = false;
    if (size_t eq = name.find('='); eq != std::string::npos) {
      value = name.substr(eq + 1);
      name = name.substr(0, eq);
      has_value = true;
    }
    if (switches.count(name)) {
      if (has_value) {
        return absl::InvalidArgumentError(
            absl::StrCat("flag ", dashes, name, " takes no value"));
      }
      parsed.switches.insert(name);
      continue;
    }
    if (!with_value.count(name)) {
      return absl::InvalidArgumentError(absl::StrCat("unknown flag ", arg));
    }
    if (!has_value) {
      if (i + 1 >= argc) {
        return absl::InvalidArgumentError(
            absl::StrCat("flag ", dashes, name, " needs a value"));
      }
      value = argv[++i];
    }
    if (!parsed.values.emplace(name, value).second) {
      parsed.repeated.insert(name);
      parsed.values[name] = value;
    }
  }
  return parsed;
}

absl::Status CheckHostPortFlag(const std::string& flag, const std::string& value,
                               bool allow_zero) {
  const size_t colon = value.rfind(':');
  const std::string host = colon == std::string::npos ? "" : value.substr(0, colon);
  const std::string port = colon == std::string::npos ? "" : value.substr(colon + 1);
  uint32_t number = 0;
  const bool bracketed = host.size() > 2 && host.front() == '[' && host.back() == ']';
  if (host.empty() || (!bracketed && host.find(':') != std::string::npos)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--", flag, " ", value, ": expected HOST:PORT (an IPv6 address in brackets: [::1]:18000)"));
  }
  if (port.empty() || port.size() > 5 ||
      !std::all_of(port.begin(), port.end(), [](char c) { return c >= '0' && c <= '9'; }) ||
      !absl::SimpleAtoi(port, &number) || (number < 1 && !allow_zero) || number > 65535) {
    return absl::InvalidArgumentError(absl::StrCat("--", flag, " ", value, ": the port must be ",
                                                   allow_zero ? "0" : "1", "..65535"));
  }
  return absl::OkStatus();
}

absl::StatusOr<absl::Duration> ParseDurationFlag(const std::string& flag,
                                                 const std::string& value) {
  absl::Duration d;
  if (!absl::ParseDuration(value, &d) || d < absl::ZeroDuration()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "flag --", flag, ": '", value,
        "' is not a duration (examples: 30s, 250ms, 1m)"));
  }
  return d;
}

}  // namespace sluice
