#include "dataplane/http/http_util.h"

#include <algorithm>
#include <cstdio>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "common/json_string.h"

namespace sluice::http {
namespace {

char Lower(char c) { return (c >= 'A' && c <= 'Z') ? static_cast<char>(c + 32) : c; }

std::string_view Trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

}  // namespace

bool IsToken(std::string_view s) {
  if (s.empty()) return false;
  for (char c : s) {
    const bool alnum = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
    if (!alnum && std::string_view("!#$%&'*+-.^_`|~").find(c) == std::string_view::npos) {
      return false;
    }
  }
  return true;
}

bool IsHopByHop(std::string_view name, const ConnectionTokens& connection_tokens) {
  switch (name.size()) {
    case 2:
      if (EqualsIgnoreCase(name, "te")) return true;
      break;
    case 7:
      if (EqualsIgnoreCase(name, "upgrade")) return true;
      break;
    case 10:
      if (EqualsIgnoreCase(name, "connection") || EqualsIgnoreCase(name, "keep-alive")) {
        return true;
      }
      break;
    case 14:
      // RFC 7540 3.2.1: part of an h2c upgrade, which the gateway never
      // makes; connection-specific, as the Upgrade it goes with.
      if (EqualsIgnoreCase(name, "http2-settings")) return true;
      break;
    case 16:
      if (EqualsIgnoreCase(name, "proxy-connection")) return true;
      break;
    case 17:
      if (EqualsIgnoreCase(name, "transfer-encoding")) return true;
      break;
    default:
      break;
  }
  return connection_tokens.Contains(name);
}

ConnectionTokens::ConnectionTokens(const std::vector<HeaderField>& headers) {
  for (const HeaderField& h : headers) {
    if (!EqualsIgnoreCase(h.name, "connection")) continue;
    std::string_view value = h.value;
    while (!value.empty()) {
      size_t comma = value.find(',');
      std::string_view token = Trim(value.substr(0, comma));
      if (!token.empty() && !EqualsIgnoreCase(token, "close") &&
          !EqualsIgnoreCase(token, "keep-alive") && !EqualsIgnoreCase(token, "host") &&
          !EqualsIgnoreCase(token, "content-length") &&
          !EqualsIgnoreCase(token, "transfer-encoding")) {
        std::string lower(token);
        for (char& c : lower) c = Lower(c);
        tokens_.push_back(std::move(lower));
      }
      if (comma == std::string_view::npos) break;
      value.remove_prefix(comma + 1);
    }
  }
  std::sort(tokens_.begin(), tokens_.end());
}

bool ConnectionTokens::Contains(std::string_view name) const {
  if (tokens_.empty()) return false;
  char lower[64];
  if (name.size() > sizeof(lower)) {
    std::string copy(name);
    for (char& c : copy) c = Lower(c);
    return std::binary_search(tokens_.begin(), tokens_.end(), copy);
  }
  for (size_t i = 0; i < name.size(); ++i) lower[i] = Lower(name[i]);
  return std::binary_search(tokens_.begin(), tokens_.end(), std::string_view(lower, name.size()),
                            [](std::string_view a, std::string_view b) { return a < b; });
}

bool HasToken(std::string_view list, std::string_view token) {
  while (!list.empty()) {
    size_t comma = list.find(',');
    std::string_view item = list.substr(0, comma);
    item = Trim(item.substr(0, item.find(';')));
    if (EqualsIgnoreCase(item, token)) return true;
    if (comma == std::string_view::npos) break;
    list.remove_prefix(comma + 1);
  }
  return false;
}

GrpcContentType ClassifyGrpcContentType(std::string_view value) {
  constexpr std::string_view kGrpc = "application/grpc";
  if (value.size() < kGrpc.size() || !EqualsIgnoreCase(value.substr(0, kGrpc.size()), kGrpc)) {
    return GrpcContentType::kNone;
  }
  // The rest is empty or starts '+' or ';', after an optional -web(-text).
  auto ends_here = [](std::string_view rest) {
    return rest.empty() || rest[0] == '+' || rest[0] == ';';
  };
  std::string_view rest = value.substr(kGrpc.size());
  if (ends_here(rest)) return GrpcContentType::kGrpc;
  if (rest.size() < 4 || !EqualsIgnoreCase(rest.substr(0, 4), "-web")) {
    return GrpcContentType::kNone;
  }
  rest.remove_prefix(4);
  if (ends_here(rest)) return GrpcContentType::kGrpcWeb;
  if (rest.size() >= 5 && EqualsIgnoreCase(rest.substr(0, 5), "-text") &&
      ends_here(rest.substr(5))) {
    return GrpcContentType::kGrpcWebText;
  }
  return GrpcContentType::kNone;
}

const HeaderField* FindHeader(const std::vector<HeaderField>& headers, std::string_view name) {
  for (const HeaderField& h : headers) {
    if (EqualsIgnoreCase(h.name, name)) return &h;
  }
  return nullptr;
}

std::string_view ReasonPhrase(int status) {
  switch (status) {
    // RFC 9110 section 15 and the other codes in IANA's registry (RFC 4918,
    // 5842, 3229, 2295, 2774, 6585, 8297, 7725): a direct_response or a
    // policy's configured status may use any of them.
    case 100: return "Continue";
    case 101: return "Switching Protocols";
    case 102: return "Processing";
    case 103: return "Early Hints";
    case 200: return "OK";
    case 201: return "Created";
    case 202: return "Accepted";
    case 203: return "Non-Authoritative Information";
    case 204: return "No Content";
    case 205: return "Reset Content";
    case 206: return "Partial Content";
    case 207: return "Multi-Status";
    case 208: return "Already Reported";
    case 226: return "IM Used";
    case 300: return "Multiple Choices";
    case 301: return "Moved Permanently";
    case 302: return "Found";
    case 303: return "See Other";
    case 304: return "Not Modified";
    case 305: return "Use Proxy";
    case 307: return "Temporary Redirect";
    case 308: return "Permanent Redirect";
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 402: return "Payment Required";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 406: return "Not Acceptable";
    case 407: return "Proxy Authentication Required";
    case 408: return "Request Timeout";
    case 409: return "Conflict";
    case 410: return "Gone";
    case 411: return "Length Required";
    case 412: return "Precondition Failed";
    case 413: return "Content Too Large";
    case 414: return "URI Too Long";
    case 415: return "Unsupported Media Type";
    case 416: return "Range Not Satisfiable";
    case 417: return "Expectation Failed";
    case 421: return "Misdirected Request";
    case 422: return "Unprocessable Content";
    case 423: return "Locked";
    case 424: return "Failed Dependency";
    case 425: return "Too Early";
    case 426: return "Upgrade Required";
    case 428: return "Precondition Required";
    case 429: return "Too Many Requests";
    case 431: return "Request Header Fields Too Large";
    case 451: return "Unavailable For Legal Reasons";
    case 500: return "Internal Server Error";
    case 501: return "Not Implemented";
    case 502: return "Bad Gateway";
    case 503: return "Service Unavailable";
    case 504: return "Gateway Timeout";
    case 505: return "HTTP Version Not Supported";
    case 506: return "Variant Also Negotiates";
    case 507: return "Insufficient Storage";
    case 508: return "Loop Detected";
    case 510: return "Not Extended";
    case 511: return "Network Authentication Required";
    default: return "Unknown";
  }
}

std::string MethodCaseProblem(std::string_view method) {
  std::string upper(method);
  bool lower = false;
  for (char& c : upper) {
    if (c >= 'a' && c <= 'z') {
      c = static_cast<char>(c - 'a' + 'A');
      lower = true;
    }
  }
  if (!lower) return "";
  const absl::string_view sent(method.data(), method.size());
  static constexpr std::string_view kStandard[] = {"GET",     "HEAD",    "POST",  "PUT",  "DELETE",
                                                   "CONNECT", "OPTIONS", "TRACE", "PATCH"};
  for (std::string_view standard : kStandard) {
    if (upper == standard) {
      return absl::StrCat("method ", sent, " is not ", upper,
                          ": methods are case-sensitive (RFC 9110 9.1)");
    }
  }
  return absl::StrCat("method ", sent,
                      " has lowercase letters: methods are case-sensitive (RFC 9110 9.1), and "
                      "upstreams that upper-case them would take it for ",
                      upper, "; send ", upper);
}

std::string ErrorBody(std::string_view error, std::string_view request_id) {
  std::string out = "{\"error\":";
  common::AppendJsonString(&out, error);
  out += ",\"request_id\":";
  common::AppendJsonString(&out, request_id);
  out += "}\n";
  return out;
}

void AppendChunkHeader(std::string* out, size_t size) {
  char buf[24];
  int n = std::snprintf(buf, sizeof(buf), "%zx\r\n", size);
  out->append(buf, static_cast<size_t>(n));
}

void AppendHeader(std::string* out, std::string_view name, std::string_view value) {
  // One resize and four copies: a request head is some tens of these.
  const size_t at = out->size();
  out->resize(at + name.size() + value.size() + 4);
  char* p = out->data() + at;
  std::memcpy(p, name.data(), name.size());
  p += name.size();
  std::memcpy(p, ": ", 2);
  p += 2;
  if (!value.empty()) std::memcpy(p, value.data(), value.size());
  p += value.size();
  std::memcpy(p, "\r\n", 2);
}

}  // namespace sluice::http
