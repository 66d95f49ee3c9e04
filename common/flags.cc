#include "common/flags.h"

#include <algorithm>
#include <limits>

#include "absl/strings/match.h"
#include "absl/strings/escaping.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "common/nearest.h"

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
      // With the flag meant when it is a typo away (--lisen, --dryrun);
      // never a one-letter flag, which any short typo is near.
      std::vector<std::string> known(with_value.begin(), with_value.end());
      known.insert(known.end(), switches.begin(), switches.end());
      std::string near = common::Nearest(name, known, /*max_edits=*/2);
      if (near.empty() && name.size() >= 3) {
        // Cut short (--max-held-body for --max-held-body-mb): the one flag
        // it begins.
        for (const std::string& flag : known) {
          if (!absl::StartsWith(flag, name)) continue;
          if (!near.empty()) {
            near.clear();
            break;
          }
          near = flag;
        }
      }
      return absl::InvalidArgumentError(
          absl::StrCat("unknown flag ", dashes, name,
                       near.size() > 1 ? absl::StrCat("; did you mean --", near, "?") : ""));
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

absl::Status IntFlagInRange(const ParsedFlags& flags, const std::string& name, int64_t lo,
                            int64_t hi, int64_t* out) {
  auto it = flags.values.find(name);
  if (it == flags.values.end()) return absl::OkStatus();
  int64_t value = 0;
  if (absl::SimpleAtoi(it->second, &value) && value >= lo && value <= hi) {
    *out = value;
    return absl::OkStatus();
  }
  const std::string shown = it->second.size() > 64 ? it->second.substr(0, 64) + "..." : it->second;
  return absl::InvalidArgumentError(absl::StrCat(
      "--", name, " must be ",
      hi == std::numeric_limits<int64_t>::max() ? absl::StrCat("at least ", lo)
                                                : absl::StrCat(lo, "..", hi),
      ", not '", absl::CHexEscape(shown), "'"));
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
