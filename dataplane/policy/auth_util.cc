#include "dataplane/policy/auth_util.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "dataplane/auth/consumers.h"

namespace sluice::policy {
namespace {

int HexValue(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}


// Calls fn(name, value, begin, end) for each parameter of the query
// (begin/end: its offsets in the query, without the separator), split at
// any of `separators`.
template <typename Fn>
void ForEachParameter(std::string_view query, Fn fn, std::string_view separators = "&") {
  size_t at = 0;
  while (at <= query.size()) {
    size_t amp = query.find_first_of(separators, at);
    if (amp == std::string_view::npos) amp = query.size();
    std::string_view pair = query.substr(at, amp - at);
    size_t eq = pair.find('=');
    std::string_view name = pair.substr(0, eq);
    std::string_view value = eq == std::string_view::npos ? std::string_view() : pair.substr(eq + 1);
    if (!pair.empty() && !fn(name, value, at, amp)) return;
    at = amp + 1;
  }
}

}  // namespace

std::string PercentDecode(std::string_view in) {
  std::string out;
  out.reserve(in.size());
  for (size_t i = 0; i < in.size(); ++i) {
    int hi, lo;
    if (in[i] == '%' && i + 2 < in.size() &&
        (hi = HexValue(in[i + 1])) >= 0 && (lo = HexValue(in[i + 2])) >= 0) {
      out.push_back(static_cast<char>(hi << 4 | lo));
      i += 2;
    } else {
      out.push_back(in[i]);
    }
  }
  return out;
}

namespace {

// A decoded parameter name as PHP's $_GET keys it (php_register_variable_ex):
// cut at a NUL; leading spaces dropped; '.' and ' ' read as '_'; a '[' with
// a ']' after it starts an array (the name ends there), one without is read
// as '_' and ends the rewriting.
std::string PhpName(std::string out) {
  if (size_t nul = out.find('\0'); nul != std::string::npos) out.resize(nul);
  out.erase(0, out.find_first_not_of(' ') == std::string::npos ? out.size()
                                                               : out.find_first_not_of(' '));
  for (size_t i = 0; i < out.size(); ++i) {
    char& c = out[i];
    if (c == '.' || c == ' ') {
      c = '_';
    } else if (c == '[') {
      if (i > 0 && out.find(']', i) != std::string::npos) {
        out.resize(i);
      } else {
        c = '_';
      }
      break;
    }
  }
  return out;
}

// A name as sent in a query: '+' is a space, then percent-decoded.
std::string FormDecode(std::string_view sent) {
  std::string raw(sent);
  std::replace(raw.begin(), raw.end(), '+', ' ');
  return PercentDecode(raw);
}

}  // namespace

bool SameParameterName(std::string_view sent, std::string_view name) {
  // As sent, '+' is a space and '%' starts an escape: only a name with
  // neither is the configured one as it stands.
  if (sent == name && sent.find_first_of("%+") == std::string_view::npos) return true;
  if (sent.find_first_of("%+. [") == std::string_view::npos &&
      name.find_first_of(". [") == std::string_view::npos) {
    return false;
  }
  // `name` is configured as the decoded name: only PHP's rewriting applies
  // to it (a '+' in it is a '+', which a query spells %2B).
  return PhpName(FormDecode(sent)) == PhpName(std::string(name));
}

http::FilterStatus RefuseOrAnonymous(http::FilterCallbacks& callbacks, std::string_view anonymous,
                                     std::string_view message, std::string_view challenge) {
  if (!anonymous.empty()) {
    const auth::Consumer* consumer = callbacks.consumers().FindByName(anonymous);
    if (consumer == nullptr) {
      callbacks.SendLocalReply(500,
                               absl::StrCat("the anonymous consumer \"", std::string(anonymous),
                                            "\" does not exist"),
                               http::HeaderMap());
      return http::FilterStatus::kStopLocalReply;
    }
    callbacks.SetConsumer(consumer, /*anonymous=*/true);
    return http::FilterStatus::kContinue;
  }
  http::HeaderMap headers;
  headers.Add("www-authenticate", challenge);
  callbacks.SendLocalReply(401, message, headers);
  return http::FilterStatus::kStopLocalReply;
}

http::FilterStatus Reject(http::FilterCallbacks& callbacks, int status, std::string_view message,
                          std::string_view challenge, bool drop_query) {
  if (drop_query) {
    std::string_view path = callbacks.info().path;
    if (size_t q = path.find('?'); q != std::string_view::npos) {
      callbacks.SetPath(std::string(path.substr(0, q)));
    }
  }
  http::HeaderMap headers;
  if (!challenge.empty()) headers.Add("www-authenticate", challenge);
  callbacks.RejectRequest(status, message, headers);
  return http::FilterStatus::kStopLocalReply;
}

std::optional<std::string> FindQueryParameter(std::string_view path_and_query,
                                              std::string_view name, ParameterNames names,
                                              bool plus_is_space) {
  size_t q = path_and_query.find('?');
  if (q == std::string_view::npos) return std::nullopt;
  std::optional<std::string> found;
  // A form's '+' is a space (its "%2B" a '+'), in a name as in a value.
  auto decode = [plus_is_space](std::string_view text) {
    if (!plus_is_space) return PercentDecode(text);
    std::string spaced(text);
    std::replace(spaced.begin(), spaced.end(), '+', ' ');
    return PercentDecode(spaced);
  };
  ForEachParameter(path_and_query.substr(q + 1),
                   [&](std::string_view n, std::string_view v, size_t, size_t) {
                     const bool same = names == ParameterNames::kExact
                                           ? decode(n) == name
                                           : SameParameterName(n, name);
                     if (!same) return true;
                     found = decode(v);
                     return false;
                   });
  return found;
}

namespace {

// How many parameters of the query are `name`, split at `separators`.
size_t CountSplitAt(std::string_view path_and_query, std::string_view name,
                    std::string_view separators) {
  size_t q = path_and_query.find('?');
  if (q == std::string_view::npos) return 0;
  size_t n = 0;
  ForEachParameter(
      path_and_query.substr(q + 1),
      [&](std::string_view sent, std::string_view, size_t, size_t) {
        if (SameParameterName(sent, name)) ++n;
        return true;
      },
      separators);
  return n;
}

}  // namespace

size_t CountQueryParameter(std::string_view path_and_query, std::string_view name) {
  // Counted as '&' splits the query and as ';' and '&' split it (Rack 2,
  // Python before 3.9.2 and Go before 1.17 read `x=1;apikey=k` as two
  // parameters): the more of the two.
  const size_t by_amp = CountSplitAt(path_and_query, name, "&");
  if (path_and_query.find(';') == std::string_view::npos) return by_amp;
  return std::max(by_amp, CountSplitAt(path_and_query, name, "&;"));
}

bool QueryParameterAfterSemicolon(std::string_view path_and_query, std::string_view name) {
  if (path_and_query.find(';') == std::string_view::npos) return false;
  return CountSplitAt(path_and_query, name, "&;") > CountSplitAt(path_and_query, name, "&");
}

std::string RemoveQueryParameter(std::string_view path_and_query, std::string_view name) {
  size_t q = path_and_query.find('?');
  if (q == std::string_view::npos) return std::string(path_and_query);
  std::string_view query = path_and_query.substr(q + 1);
  // Split at ';' too when there is one (`x=1;apikey=k`, which Rack 2,
  // Python before 3.9.2 and Go before 1.17 read as a parameter; and
  // `apikey=k;a=1`, where `a=1` is a parameter to them, kept): each piece
  // kept goes with the separator before it.
  const bool hidden = query.find(';') != std::string_view::npos;
  std::string kept;
  ForEachParameter(
      query,
      [&](std::string_view n, std::string_view, size_t begin, size_t end) {
        if (SameParameterName(n, name)) return true;
        if (!kept.empty()) kept.push_back(hidden && begin > 0 ? query[begin - 1] : '&');
        kept.append(query.substr(begin, end - begin));
        return true;
      },
      hidden ? "&;" : "&");
  std::string out(path_and_query.substr(0, q));
  if (!kept.empty()) absl::StrAppend(&out, "?", kept);
  return out;
}

}  // namespace sluice::policy
