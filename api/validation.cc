#include "api/validation.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <openssl/err.h>
#include <openssl/ssl.h>

#include <algorithm>
#include <map>
#include <memory>
#include <optional>
#include <set>

#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_replace.h"
#include "absl/strings/str_split.h"
#include "api/credentials.h"
#include "api/policy_registry.h"
#include "api/regex_limit.h"
#include "api/tls_material.h"
#include "common/log.h"
#include "common/nearest.h"
#include "google/protobuf/util/message_differencer.h"
#include "re2/re2.h"

namespace sluice::api {

const std::vector<std::string>& AccessLogFieldNames() {
  static const std::vector<std::string>* names = new std::vector<std::string>{
      "time", "request_id", "trace_id", "client_ip", "peer_ip", "method", "authority", "path", "protocol",
      "status", "bytes_in", "bytes_out", "duration_ms", "upstream_duration_ms", "route",
      "cluster", "endpoint", "attempts", "consumer", "tls_version", "sni", "tls_cipher",
      "tls_client_subject", "user_agent", "response_flag", "upstream_failure", "grpc_status",
      "cache_status"};
  return *names;
}

int GrpcRetryOnCode(absl::string_view name) {
  if (name == "cancelled") return 1;
  if (name == "deadline-exceeded") return 4;
  if (name == "resource-exhausted") return 8;
  if (name == "internal") return 13;
  if (name == "unavailable") return 14;
  return -1;
}
namespace {

using config::v1::Cluster;
using config::v1::Consumer;
using config::v1::HttpOptions;
using config::v1::Listener;
using config::v1::ListenerTls;
using config::v1::Route;
using config::v1::RouteTable;
using config::v1::Secret;

// "; did you mean 'rate-limit'?" for a policy name a typo away from one
// this build has, in any case (`JWT`, `Rate-Limit`), else "".
std::string DidYouMean(const std::string& given, const std::vector<std::string>& known) {
  const std::string near = common::Nearest(absl::AsciiStrToLower(given), known);
  return near.empty() ? "" : absl::StrCat("; did you mean '", near, "'?");
}

class ErrorSink {
 public:
  ErrorSink(const ResourceId& id, std::vector<ValidationError>* errors)
      : id_(id), errors_(errors) {}
  void Add(std::string field, std::string message) {
    errors_->push_back({id_, std::move(field), std::move(message)});
  }

 private:
  ResourceId id_;
  std::vector<ValidationError>* errors_;
};

std::string Index(absl::string_view field, int i) {
  return absl::StrCat(field, "[", i, "]");
}

std::string Join(absl::string_view prefix, absl::string_view field) {
  return prefix.empty() ? std::string(field) : absl::StrCat(prefix, ".", field);
}

bool IsTokenChar(char c) {
  return absl::ascii_isalnum(c) || absl::string_view("!#$%&'*+-.^_`|~").find(c) !=
                                       absl::string_view::npos;
}

bool IsToken(absl::string_view s) {
  if (s.empty()) return false;
  for (char c : s) {
    if (!IsTokenChar(c)) return false;
  }
  return true;
}

void CheckName(absl::string_view name, absl::string_view field, ErrorSink& sink,
               bool required = true) {
  if (name.empty()) {
    if (required) sink.Add(std::string(field), "is required");
    return;
  }
  if (name.size() > kMaxNameLength) {
    sink.Add(std::string(field),
             absl::StrCat("is ", name.size(), " characters; at most ",
                          kMaxNameLength, " are allowed"));
    return;
  }
  for (char c : name) {
    if (!absl::ascii_isalnum(c) && c != '-' && c != '_' && c != '.') {
      sink.Add(std::string(field),
               absl::StrCat("'", Shown(name),
                            "' may contain only ASCII letters, digits, '-', '_' "
                            "and '.'"));
      return;
    }
  }
}

bool IsIpLiteral(const std::string& address) {
  unsigned char buf[16];
  // inet_pton reads up to a NUL: "127.0.0.1\0x" is not an address.
  if (address.find('\0') != std::string::npos) return false;
  return inet_pton(AF_INET, address.c_str(), buf) == 1 ||
         inet_pton(AF_INET6, address.c_str(), buf) == 1;
}

// One spelling per address ("0:0::1" and "::1" are the same, as the proxy
// binds and connects them), for comparisons; `address` itself when it is
// not an IP literal.
// "127.0.0.1:80", "[::1]:80" (as /clusters writes an endpoint).
std::string HostPort(const std::string& address, uint32_t port) {
  return address.find(':') != std::string::npos ? absl::StrCat("[", address, "]:", port)
                                                : absl::StrCat(address, ":", port);
}

std::string CanonicalAddress(const std::string& address) {
  unsigned char bytes[sizeof(in6_addr)];
  char text[INET6_ADDRSTRLEN];
  if (address.find('\0') != std::string::npos) return address;
  if (inet_pton(AF_INET, address.c_str(), bytes) == 1) {
    return inet_ntop(AF_INET, bytes, text, sizeof(text)) ? text : address;
  }
  if (inet_pton(AF_INET6, address.c_str(), bytes) == 1) {
    return inet_ntop(AF_INET6, bytes, text, sizeof(text)) ? text : address;
  }
  return address;
}

// What an address (as CanonicalAddress spells it) is when no TCP connection
// can go to it, other than the unspecified address (said on its own): ""
// for one that can be asked. The DNS answers the proxies leave out
// (dns_cache.cc); as a literal endpoint such an address is taken (its
// connect fails at once, ENETUNREACH, and counts as a connect failure).
std::string UnconnectableAddress(const std::string& canonical) {
  std::string v4 = canonical;
  if (absl::StartsWith(v4, "::ffff:") && IsIpLiteral(v4.substr(7))) v4 = v4.substr(7);
  unsigned char b[sizeof(in6_addr)];
  if (inet_pton(AF_INET, v4.c_str(), b) == 1) {
    if (b[0] == 0) return "in 0.0.0.0/8 (\"this network\")";
    if ((b[0] >> 4) == 0xe) return "a multicast address (224.0.0.0/4)";
    if (b[0] == 255 && b[1] == 255 && b[2] == 255 && b[3] == 255) return "the broadcast address";
    return "";
  }
  if (inet_pton(AF_INET6, canonical.c_str(), b) == 1 && b[0] == 0xff) {
    return "a multicast address (ff00::/8)";
  }
  return "";
}

// "10.0.0.256" is a bad IPv4 address, not a host name: a name's last label
// is not all digits (RFC 1123 2.1, as resolvers read it).
bool LooksLikeHostName(const std::string& name) {
  absl::string_view rest = name;
  if (absl::EndsWith(rest, ".")) rest.remove_suffix(1);
  if (rest.empty() || rest.size() > 253) return false;
  bool last_all_digits = false;
  for (absl::string_view label : absl::StrSplit(rest, '.')) {
    if (label.empty() || label.size() > 63 || label.front() == '-' || label.back() == '-') {
      return false;
    }
    last_all_digits = true;
    for (char c : label) {
      if (!absl::ascii_isalnum(c) && c != '-' && c != '_') return false;
      last_all_digits = last_all_digits && absl::ascii_isdigit(c);
    }
  }
  return !last_all_digits;
}

// A Cluster endpoint's address: an IP literal or a host name.
void CheckEndpointAddress(const std::string& address, absl::string_view field,
                          ErrorSink& sink) {
  if (address.empty()) {
    sink.Add(std::string(field), "is required");
  } else if (!IsIpLiteral(address) && !LooksLikeHostName(address)) {
    sink.Add(std::string(field),
             absl::StrCat("'", Shown(address),
                          "' is neither an IPv4 or IPv6 address nor a host name (labels of "
                          "1..63 letters, digits, '-' and '_', not starting or ending with "
                          "'-', separated by '.', the last one not all digits; at most 253 "
                          "in all)"));
  }
}

// "IP", "IP:PORT" or "[IPv6]:PORT": a DNS server of dns_resolvers.
bool IsResolverAddress(const std::string& text) {
  if (IsIpLiteral(text)) return true;
  std::string host;
  absl::string_view port;
  if (absl::StartsWith(text, "[")) {
    const size_t close = text.find("]:");
    if (close == std::string::npos) return false;
    host = text.substr(1, close - 1);
    if (host.find(':') == std::string::npos) return false;
    port = absl::string_view(text).substr(close + 2);
  } else {
    const size_t colon = text.rfind(':');
    if (colon == std::string::npos) return false;
    host = text.substr(0, colon);
    if (host.find(':') != std::string::npos) return false;
    port = absl::string_view(text).substr(colon + 1);
  }
  uint32_t number = 0;
  return IsIpLiteral(host) && !port.empty() && port.size() <= 5 &&
         std::all_of(port.begin(), port.end(), [](char c) { return absl::ascii_isdigit(c); }) &&
         absl::SimpleAtoi(port, &number) && number >= 1 && number <= 65535;
}

void CheckAddress(const std::string& address, absl::string_view field,
                  ErrorSink& sink) {
  if (address.empty()) {
    sink.Add(std::string(field), "is required");
  } else if (!IsIpLiteral(address)) {
    sink.Add(std::string(field),
             absl::StrCat("'", Shown(address),
                          "' is not an IPv4 or IPv6 address (host names are "
                          "not resolved)"));
  }
}

void CheckPort(uint32_t port, absl::string_view field, ErrorSink& sink) {
  if (port < 1 || port > 65535) {
    sink.Add(std::string(field), absl::StrCat("must be 1..65535, got ", port));
  }
}

void CheckRegex(const std::string& pattern, absl::string_view field,
                ErrorSink& sink) {
  RE2::Options options;
  options.set_log_errors(false);
  RE2 re(pattern, options);
  if (!re.ok()) {
    sink.Add(std::string(field), absl::StrCat("invalid RE2 regular expression '",
                                              pattern, "': ", re.error()));
  }
}

// A header or query parameter matcher (the two protos share these fields).
template <typename Matcher>
void CheckValueMatcher(const Matcher& m, const std::string& field, ErrorSink& sink) {
  const bool regex = m.has_regex();
  const bool present = m.has_present();
  if (!regex && !present && !m.has_exact() && !m.has_prefix() && !m.has_suffix() &&
      !m.has_contains()) {
    sink.Add(field, "needs one of exact, prefix, suffix, contains, regex or present");
  }
  if (m.ignore_case() && (regex || present)) {
    sink.Add(Join(field, "ignore_case"),
             regex ? "applies to exact, prefix, suffix and contains; make a regex ignore case "
                     "with (?i)"
                   : "applies to exact, prefix, suffix and contains, not to present");
  }
  if (regex) CheckRegex(m.regex(), Join(field, "regex"), sink);
}

void CheckDuration(const google::protobuf::Duration& d, bool present,
                   absl::string_view field, absl::Duration min,
                   absl::Duration max, ErrorSink& sink) {
  if (!present) return;
  if (d.seconds() < 0 || d.nanos() < 0 || d.nanos() > 999999999) {
    sink.Add(std::string(field), "must be a non-negative duration");
    return;
  }
  absl::Duration value = ToDuration(d);
  if (value < min || value > max) {
    sink.Add(std::string(field),
             absl::StrCat("must be between ", absl::FormatDuration(min), " and ",
                          absl::FormatDuration(max), ", got ",
                          value == absl::ZeroDuration() ? std::string("0s")
                                                        : absl::FormatDuration(value)));
  }
}

void CheckWeight(uint32_t weight, absl::string_view field, ErrorSink& sink,
                 bool zero_means_default) {
  if ((weight == 0 && !zero_means_default) || weight > kMaxWeight) {
    sink.Add(std::string(field),
             absl::StrCat("must be 1..", kMaxWeight, ", got ", weight));
  }
}

void ValidateHttpOptions(const HttpOptions& http, ErrorSink& sink) {
  uint32_t limit = http.max_request_headers_bytes();
  if (limit != 0 && (limit < kMinHeaderLimit || limit > kMaxHeaderLimit)) {
    sink.Add("http.max_request_headers_bytes",
             absl::StrCat("must be ", kMinHeaderLimit, "..", kMaxHeaderLimit,
                          ", got ", limit));
  }
  CheckDuration(http.request_headers_timeout(), http.has_request_headers_timeout(),
                "http.request_headers_timeout", absl::Milliseconds(100),
                absl::Hours(1), sink);
  CheckDuration(http.idle_timeout(), http.has_idle_timeout(), "http.idle_timeout",
                absl::Milliseconds(100), absl::Hours(24), sink);
  uint32_t streams = http.http2().max_concurrent_streams();
  if (streams > kMaxHttp2MaxConcurrentStreams) {
    sink.Add("http.http2.max_concurrent_streams",
             absl::StrCat("must be 1..", kMaxHttp2MaxConcurrentStreams, ", got ", streams));
  }
  uint32_t window = http.http2().initial_stream_window_size();
  if (window != 0 && (window < kMinHttp2StreamWindow || window > kMaxHttp2StreamWindow)) {
    sink.Add("http.http2.initial_stream_window_size",
             absl::StrCat("must be ", kMinHttp2StreamWindow, "..", kMaxHttp2StreamWindow,
                          ", got ", window));
  }
  if (http.max_uri_bytes() != 0 && (http.max_uri_bytes() < 256 || http.max_uri_bytes() > 1048576)) {
    sink.Add("http.max_uri_bytes", absl::StrCat("must be 256..1048576, got ", http.max_uri_bytes()));
  }
  if (http.max_request_headers() > 10000) {
    sink.Add("http.max_request_headers",
             absl::StrCat("must be 1..10000, got ", http.max_request_headers()));
  }
  if (http.has_max_connection_age() && ToDuration(http.max_connection_age()) > absl::Hours(24 * 30)) {
    sink.Add("http.max_connection_age",
             absl::StrCat("must be 0s (no limit) or 1s..720h, got ",
                          absl::FormatDuration(ToDuration(http.max_connection_age()))));
  }
  CheckDuration(http.max_connection_age(), http.has_max_connection_age(), "http.max_connection_age",
                absl::ZeroDuration(), absl::InfiniteDuration(), sink);
  if (http.trusted_proxy_hops() > 10) {
    sink.Add("http.trusted_proxy_hops",
             absl::StrCat("must be 0..10, got ", http.trusted_proxy_hops()));
  }
  if (http.has_max_connection_age() && ToDuration(http.max_connection_age()) > absl::ZeroDuration() &&
      ToDuration(http.max_connection_age()) < absl::Seconds(1)) {
    sink.Add("http.max_connection_age",
             absl::StrCat("must be 0s (no limit) or 1s..720h, got ",
                          absl::FormatDuration(ToDuration(http.max_connection_age()))));
  }
  const auto& path = http.path_normalization();
  if (!config::v1::PathNormalization::EscapedSlashAction_IsValid(path.escaped_slashes())) {
    sink.Add("http.path_normalization.escaped_slashes",
             absl::StrCat("unknown value ", path.escaped_slashes()));
  }
  if (!config::v1::PathNormalization::BackslashAction_IsValid(path.backslashes())) {
    sink.Add("http.path_normalization.backslashes",
             absl::StrCat("unknown value ", path.backslashes()));
  }
  if (!config::v1::HttpOptions::HeadersWithUnderscoresAction_IsValid(
          http.headers_with_underscores())) {
    sink.Add("http.headers_with_underscores",
             absl::StrCat("unknown value ", http.headers_with_underscores()));
  }
}

// Each element of an OpenSSL cipher list must select something on its own
// (OpenSSL skips unknown names silently, BoringSSL refuses them), and the
// whole list must leave at least one TLS 1.2 suite.
void CheckCipherSuites(const std::string& list, ErrorSink& sink) {
  constexpr char kField[] = "tls.cipher_suites";
  std::unique_ptr<SSL_CTX, decltype(&SSL_CTX_free)> ctx(SSL_CTX_new(TLS_method()), SSL_CTX_free);
  SLUICE_CHECK(ctx != nullptr);
  bool elements_ok = true;
  for (absl::string_view element : absl::StrSplit(list, absl::ByAnyChar(": ,"), absl::SkipEmpty())) {
    if (absl::StartsWithIgnoreCase(element, "@SECLEVEL")) {
      sink.Add(kField, absl::StrCat("'", element, "' changes OpenSSL's security level, which a "
                                                  "listener does not let a list lower"));
      elements_ok = false;
      continue;
    }
    // "!x", "-x", "+x" and "@STRENGTH" adjust the list; they select nothing alone.
    if (absl::string_view("!-+@").find(element.front()) != absl::string_view::npos) continue;
    if (absl::StartsWith(element, "TLS_")) {
      sink.Add(kField, absl::StrCat("'", element, "' is a TLS 1.3 suite; TLS 1.3 suites are not "
                                                  "configurable (all three standard ones are offered)"));
      elements_ok = false;
    } else if (SSL_CTX_set_cipher_list(ctx.get(), std::string(element).c_str()) != 1) {
      sink.Add(kField, absl::StrCat("'", element, "' matches no TLS 1.2 cipher suite"));
      elements_ok = false;
    }
  }
  if (elements_ok && SSL_CTX_set_cipher_list(ctx.get(), list.c_str()) != 1) {
    sink.Add(kField, absl::StrCat("'", list, "' leaves no TLS 1.2 cipher suite"));
  } else if (elements_ok) {
    // What the list selects must authenticate the gateway and encrypt:
    // an anonymous suite (aNULL, ADH, AECDH) lets anyone in the middle
    // answer for it, a NULL one sends in the clear.
    STACK_OF(SSL_CIPHER)* selected = SSL_CTX_get_ciphers(ctx.get());
    for (int i = 0; selected != nullptr && i < sk_SSL_CIPHER_num(selected); ++i) {
      const SSL_CIPHER* cipher = sk_SSL_CIPHER_value(selected, i);
      if (SSL_CIPHER_get_version(cipher) != nullptr &&
          std::string_view(SSL_CIPHER_get_version(cipher)) == "TLSv1.3") {
        continue;  // the three TLS 1.3 suites are not set by this list
      }
      if (SSL_CIPHER_get_auth_nid(cipher) == NID_auth_null) {
        sink.Add(kField, absl::StrCat("'", list, "' selects ", SSL_CIPHER_get_name(cipher),
                                      ", which does not authenticate the server (add !aNULL)"));
        break;
      }
      if (SSL_CIPHER_get_cipher_nid(cipher) == NID_undef) {
        sink.Add(kField, absl::StrCat("'", list, "' selects ", SSL_CIPHER_get_name(cipher),
                                      ", which does not encrypt (add !eNULL)"));
        break;
      }
    }
  }
  ERR_clear_error();
}

// "" (the default), "1.2" or "1.3" as 12 or 13; 0 after an error.
int ParseTlsVersion(const std::string& version, const char* field, int default_version,
                    ErrorSink& sink) {
  if (version.empty()) return default_version;
  if (version == "1.2") return 12;
  if (version == "1.3") return 13;
  sink.Add(field, absl::StrCat("must be \"1.2\" or \"1.3\", got '", version, "'"));
  return 0;
}

// tls.min_version and tls.max_version: each valid, min not above max.
void CheckTlsVersions(const std::string& min_version, const std::string& max_version,
                      ErrorSink& sink) {
  int min = ParseTlsVersion(min_version, "tls.min_version", 12, sink);
  int max = ParseTlsVersion(max_version, "tls.max_version", 13, sink);
  if (min != 0 && max != 0 && min > max) {
    sink.Add("tls.min_version", absl::StrCat(min_version, " is above max_version ", max_version));
  }
}

void ValidateListenerTls(const ListenerTls& tls, ErrorSink& sink) {
  if (tls.certificates_size() == 0) {
    sink.Add("tls.certificates", "needs at least one Secret with a tls_certificate");
  } else if (static_cast<size_t>(tls.certificates_size()) > kMaxListenerCertificates) {
    sink.Add("tls.certificates", absl::StrCat("has ", tls.certificates_size(),
                                              " entries; at most ", kMaxListenerCertificates));
  }
  std::map<std::string, int> seen;
  for (int i = 0; i < tls.certificates_size(); ++i) {
    std::string field = Index("tls.certificates", i);
    CheckName(tls.certificates(i), field, sink);
    auto [it, inserted] = seen.emplace(tls.certificates(i), i);
    if (!inserted && !tls.certificates(i).empty()) {
      sink.Add(field, absl::StrCat("Secret \"", tls.certificates(i),
                                   "\" is already listed at tls.certificates[", it->second, "]"));
    }
  }
  CheckTlsVersions(tls.min_version(), tls.max_version(), sink);
  if (!tls.cipher_suites().empty()) CheckCipherSuites(tls.cipher_suites(), sink);
  if (static_cast<size_t>(tls.alpn_protocols_size()) > kMaxAlpnProtocols) {
    sink.Add("tls.alpn_protocols", absl::StrCat("has ", tls.alpn_protocols_size(),
                                                " entries; at most ", kMaxAlpnProtocols));
  }
  std::set<std::string> protocols;
  for (int i = 0; i < tls.alpn_protocols_size(); ++i) {
    const std::string& protocol = tls.alpn_protocols(i);
    std::string field = Index("tls.alpn_protocols", i);
    if (protocol != "h2" && protocol != "http/1.1") {
      sink.Add(field, absl::StrCat("'", protocol, "' is not supported (h2 or http/1.1)"));
    }
    if (!protocols.insert(protocol).second) {
      sink.Add(field, absl::StrCat("'", protocol, "' is listed twice"));
    }
  }
  CheckName(tls.client_ca(), "tls.client_ca", sink, /*required=*/false);
  if (tls.has_require_client_certificate() && tls.client_ca().empty()) {
    sink.Add("tls.require_client_certificate",
             "needs client_ca (the Secret with the CAs that client certificates are checked "
             "against)");
  }
}

// A name for the proxy's own insides rather than a file: another of its
// descriptors (/proc/self/fd/5 was its event loop's signal pipe, and each
// line's newline read as a SIGUSR1), /proc or /sys, or standard input.
// Standard output and error keep their names. Empty when it is none.
// Read as the kernel reads it (`//`, `/./` and `..` resolved), so that
// `/dev/./fd/5` is no way round it. (Symbolic links are the proxy's to
// see: it refuses an anonymous pipe when it opens one.)
std::string InternalAccessLogPath(const std::string& written) {
  if (written.empty()) return "";  // refused as required
  if (written.back() == '/') {
    return "'" + written + "' ends with '/', which names a directory, not a file";
  }
  // `/var/log/.` and `/tmp/..` name directories as much as `/var/log/` does.
  const absl::string_view last = absl::string_view(written).substr(written.rfind('/') + 1);
  if (last == "." || last == "..") {
    return "'" + written + "' ends with '/" + std::string(last) +
           "', which names a directory, not a file";
  }
  std::vector<std::string> parts;
  for (absl::string_view part : absl::StrSplit(written, '/', absl::SkipEmpty())) {
    if (part == ".") continue;
    if (part == "..") {
      if (!parts.empty()) parts.pop_back();
      continue;
    }
    parts.emplace_back(part);
  }
  std::string path;
  for (const std::string& part : parts) absl::StrAppend(&path, "/", part);
  path.push_back('/');  // `/proc` is under /proc/ too
  for (const char* standard :
       {"/proc/self/fd/1/", "/proc/self/fd/2/", "/dev/fd/1/", "/dev/fd/2/"}) {
    if (path == standard) return "";
  }
  if (path == "/dev/stdin/") return "'" + written + "' is standard input, which cannot take a log";
  for (const char* internal : {"/proc/", "/sys/", "/dev/fd/"}) {
    if (absl::StartsWith(path, internal)) {
      return absl::StrCat("'", written, "' is under ", internal, ", not a file the log can be ",
                          "written to (another of the proxy's descriptors, or the kernel's); ",
                          "\"-\" or /dev/stdout writes to standard output, /dev/stderr to ",
                          "standard error");
    }
  }
  return "";
}

void ValidateAccessLog(const config::v1::AccessLog& log, ErrorSink& sink) {
  const std::string& path = log.path();
  if (path.empty()) {
    sink.Add("access_log.path", "is required (\"-\" for standard output, or an absolute path)");
  } else if (path.size() > 4096) {
    sink.Add("access_log.path", absl::StrCat("is ", path.size(), " bytes; at most 4096"));
  } else if (path != "-" && path != "stdout" &&
             (path[0] != '/' || path.find('\0') != std::string::npos)) {
    sink.Add("access_log.path",
             absl::StrCat("'", absl::CHexEscape(path),
                          "' must be \"-\", \"stdout\" or an absolute path"));
  }
  const std::vector<std::string>& known = AccessLogFieldNames();
  std::set<std::string> seen;
  for (int i = 0; i < log.fields_size(); ++i) {
    const std::string& f = log.fields(i);
    if (std::find(known.begin(), known.end(), f) == known.end()) {
      sink.Add(Index("access_log.fields", i),
               absl::StrCat("unknown field '", f, "' (known: ", absl::StrJoin(known, ", "), ")"));
    } else if (!seen.insert(f).second) {
      sink.Add(Index("access_log.fields", i), absl::StrCat("'", f, "' is listed twice"));
    }
  }
  if (log.sample_percent() > 100) {
    sink.Add("access_log.sample_percent",
             absl::StrCat("must be 1..100 (0: 100), got ", log.sample_percent()));
  }
}

void ValidateListener(const Listener& listener, ErrorSink& sink) {
  CheckName(listener.name(), "name", sink);
  CheckAddress(listener.address(), "address", sink);
  // The proxy's IPv6 sockets are IPv6-only, so an IPv4-mapped address
  // cannot be bound (the proxy would NACK it): say so at apply.
  in6_addr v6;
  if (inet_pton(AF_INET6, listener.address().c_str(), &v6) == 1 && IN6_IS_ADDR_V4MAPPED(&v6)) {
    char v4[INET_ADDRSTRLEN];
    inet_ntop(AF_INET, &v6.s6_addr[12], v4, sizeof(v4));
    sink.Add("address", absl::StrCat("'", listener.address(),
                                     "' is an IPv4-mapped IPv6 address, which a listener "
                                     "cannot bind; write it as the IPv4 address ", v4));
  }
  CheckPort(listener.port(), "port", sink);
  CheckName(listener.route_table(), "route_table", sink);
  if (listener.has_http()) ValidateHttpOptions(listener.http(), sink);
  if (listener.has_tls()) ValidateListenerTls(listener.tls(), sink);
  if (listener.max_connections() > 1000000) {
    sink.Add("max_connections",
             absl::StrCat("must be at most 1000000, got ", listener.max_connections()));
  }
  if (listener.has_access_log()) ValidateAccessLog(listener.access_log(), sink);
  std::map<std::string, int> groups;
  for (int i = 0; i < listener.node_groups_size(); ++i) {
    std::string field = Index("node_groups", i);
    CheckName(listener.node_groups(i), field, sink);
    auto [it, inserted] = groups.emplace(listener.node_groups(i), i);
    if (!inserted && !listener.node_groups(i).empty()) {
      sink.Add(field, absl::StrCat("'", listener.node_groups(i),
                                   "' is already listed at node_groups[", it->second, "]"));
    }
  }
}

// Whether two listeners may be bound by one proxy: true unless both name
// node_groups and no group is in both.
bool MayShareProxy(const Listener& a, const Listener& b) {
  if (a.node_groups().empty() || b.node_groups().empty()) return true;
  for (const std::string& group : a.node_groups()) {
    if (std::find(b.node_groups().begin(), b.node_groups().end(), group) !=
        b.node_groups().end()) {
      return true;
    }
  }
  return false;
}

// Content only; the validity period is checked by ValidateAtApplyTime.
void ValidateSecret(const Secret& secret, ErrorSink& sink) {
  CheckName(secret.name(), "name", sink);
  TlsMaterialError error;
  switch (secret.type_case()) {
    case Secret::kTlsCertificate:
      if (secret.tls_certificate().private_key() == kRedactedText) {
        sink.Add("tls_certificate.private_key",
                 absl::StrCat("is \"", kRedactedText,
                              "\", what sluicectl get and the admin API show in place of a "
                              "key: the key was redacted on output and must be supplied "
                              "(the PEM private key itself)"));
      } else if (!ParseTlsCertificate(secret.tls_certificate(), nullptr, &error)) {
        sink.Add(error.field, error.message);
      }
      break;
    case Secret::kTrustedCa:
      if (!InspectTrustedCa(secret.trusted_ca(), &error)) sink.Add(error.field, error.message);
      break;
    case Secret::TYPE_NOT_SET:
      sink.Add("", "needs one of tls_certificate or trusted_ca");
      break;
  }
}

// A Consumer's name or group: 1..kMaxNameLength letters, digits, '.', '_',
// '-' and '@' (so that an e-mail address can be a name).
void CheckConsumerName(const std::string& name, const std::string& field, ErrorSink& sink) {
  if (name.empty()) {
    sink.Add(field, "is required");
    return;
  }
  if (name.size() > kMaxNameLength) {
    sink.Add(field, absl::StrCat("is ", name.size(), " characters; at most ", kMaxNameLength,
                                 " are allowed"));
    return;
  }
  for (char c : name) {
    if (!absl::ascii_isalnum(c) && c != '-' && c != '_' && c != '.' && c != '@') {
      sink.Add(field, absl::StrCat("'", name,
                                   "' may contain only ASCII letters, digits, '-', '_', '.' and '@'"));
      return;
    }
  }
}

bool IsSha256Hex(const std::string& text) {
  if (text.size() != 64) return false;
  for (char c : text) {
    if (!absl::ascii_isdigit(c) && !(c >= 'a' && c <= 'f')) return false;
  }
  return true;
}

// The SHA-256 (hex) that identifies an API key, plain or hashed; empty when
// the key is malformed (reported by ValidateConsumer).
std::string KeyDigest(const config::v1::ApiKey& key) {
  if (!key.key().empty() && key.key_sha256().empty()) {
    return ValidApiKeyText(key.key()) && key.key() != kRedactedText ? Sha256Hex(key.key()) : "";
  }
  if (key.key().empty() && IsSha256Hex(key.key_sha256())) return key.key_sha256();
  return "";
}

std::string RedactedMessage(absl::string_view what) {
  return absl::StrCat("is \"", kRedactedText, "\", what sluicectl get and the admin API show "
                      "in place of a credential: give the ", what, " itself");
}

void ValidateApiKeys(const Consumer& consumer, ErrorSink& sink) {
  if (static_cast<size_t>(consumer.keys_size()) > kMaxConsumerKeys) {
    sink.Add("keys", absl::StrCat("has ", consumer.keys_size(), " entries; at most ",
                                  kMaxConsumerKeys));
  }
  std::map<std::string, int> seen;  // KeyDigest -> index
  for (int i = 0; i < consumer.keys_size(); ++i) {
    const config::v1::ApiKey& key = consumer.keys(i);
    std::string field = Index("keys", i);
    // Never quote a key: neither the plain one nor (out of caution) its hash.
    if (!key.key().empty() && !key.key_sha256().empty()) {
      sink.Add(field, "set one of key and key_sha256, not both");
      continue;
    }
    if (key.key().empty() && key.key_sha256().empty()) {
      sink.Add(field, "needs key or key_sha256");
      continue;
    }
    if (key.key() == kRedactedText) {
      sink.Add(Join(field, "key"), RedactedMessage("API key"));
    } else if (!key.key().empty() && !ValidApiKeyText(key.key())) {
      sink.Add(Join(field, "key"),
               key.key().size() < kMinApiKeyLength || key.key().size() > kMaxApiKeyLength
                   ? absl::StrCat("is ", key.key().size(), " characters; must be ",
                                  kMinApiKeyLength, "..", kMaxApiKeyLength)
                   : std::string("may contain only printable ASCII characters, no spaces"));
    }
    if (!key.key_sha256().empty() && !IsSha256Hex(key.key_sha256())) {
      sink.Add(Join(field, "key_sha256"), "must be 64 lowercase hex digits");
    }
    std::string digest = KeyDigest(key);
    if (digest.empty()) continue;
    auto [it, inserted] = seen.emplace(digest, i);
    if (!inserted) sink.Add(field, absl::StrCat("is the same key as keys[", it->second, "]"));
  }
}

void ValidateBasicAuth(const config::v1::BasicAuthCredential& basic, ErrorSink& sink) {
  const std::string& username = basic.username();
  if (username.empty()) {
    sink.Add("basic_auth.username", "is required");
  } else if (username.size() > kMaxNameLength) {
    sink.Add("basic_auth.username", absl::StrCat("is ", username.size(), " characters; at most ",
                                                 kMaxNameLength, " are allowed"));
  } else {
    for (char c : username) {
      // Not quoted: a "user:password" typed here must not end up in an error.
      if (c < 0x20 || c > 0x7e || c == ':') {
        sink.Add("basic_auth.username",
                 "may contain only printable ASCII characters and no ':' (RFC 7617)");
        break;
      }
    }
  }
  const std::string& password = basic.password();
  const std::string& hash = basic.password_hash();
  if (!password.empty() && !hash.empty()) {
    sink.Add("basic_auth", "set one of password and password_hash, not both");
  } else if (password.empty() && hash.empty()) {
    sink.Add("basic_auth", "needs password or password_hash");
  } else if (password == kRedactedText) {
    sink.Add("basic_auth.password", RedactedMessage("password"));
  } else if (password.size() > kMaxPasswordBytes) {
    sink.Add("basic_auth.password", absl::StrCat("is ", password.size(), " bytes; at most ",
                                                 kMaxPasswordBytes));
  } else if (HasControlCharacter(password)) {
    // Not quoted, as every password.
    sink.Add("basic_auth.password",
             "may not contain control characters (RFC 7617: no client could send it)");
  } else if (!hash.empty()) {
    if (absl::StatusOr<ParsedPasswordHash> parsed = ParsePasswordHash(hash); !parsed.ok()) {
      sink.Add("basic_auth.password_hash", std::string(parsed.status().message()));
    }
  }
}

void ValidateConsumer(const Consumer& consumer, ErrorSink& sink) {
  CheckConsumerName(consumer.name(), "name", sink);
  if (static_cast<size_t>(consumer.groups_size()) > kMaxConsumerGroups) {
    sink.Add("groups", absl::StrCat("has ", consumer.groups_size(), " entries; at most ",
                                    kMaxConsumerGroups));
  }
  std::map<std::string, int> groups;
  for (int i = 0; i < consumer.groups_size(); ++i) {
    std::string field = Index("groups", i);
    CheckConsumerName(consumer.groups(i), field, sink);
    auto [it, inserted] = groups.emplace(consumer.groups(i), i);
    if (!inserted && !consumer.groups(i).empty()) {
      sink.Add(field, absl::StrCat("'", consumer.groups(i), "' is already listed at groups[",
                                   it->second, "]"));
    }
  }
  ValidateApiKeys(consumer, sink);
  if (consumer.has_basic_auth()) ValidateBasicAuth(consumer.basic_auth(), sink);
}

// Across Consumers: each API key (by its SHA-256) and each basic-auth
// username belongs to one Consumer only, or a request could not tell who it
// is. The first Consumer keeps it (those a change leaves as they were come
// first, then by name); the others are told.
class ConsumerCredentialIndex {
 public:
  void Add(const Consumer& consumer, ErrorSink& sink) {
    for (int i = 0; i < consumer.keys_size(); ++i) {
      std::string digest = KeyDigest(consumer.keys(i));
      if (digest.empty()) continue;
      auto [it, inserted] =
          keys_.emplace(digest, Owner{consumer.name(), Index("keys", i)});
      if (!inserted && it->second.name != consumer.name()) {
        sink.Add(Index("keys", i), absl::StrCat("is also a key of Consumer \"", it->second.name,
                                                "\" (", it->second.field,
                                                "); no two consumers may share a key"));
      }
    }
    const std::string& username = consumer.basic_auth().username();
    if (username.empty()) return;
    auto [it, inserted] = usernames_.emplace(username, consumer.name());
    if (!inserted && it->second != consumer.name()) {
      sink.Add("basic_auth.username",
               absl::StrCat("'", username, "' is also the username of Consumer \"", it->second,
                            "\"; no two consumers may share a username"));
    }
  }

 private:
  struct Owner {
    std::string name;
    std::string field;
  };
  std::map<std::string, Owner> keys_;            // key digest -> first consumer
  std::map<std::string, std::string> usernames_;  // username -> first consumer
};

void CheckDomain(const std::string& domain, const std::string& field,
                 ErrorSink& sink) {
  if (domain == "*") return;
  absl::string_view host = domain;
  if (absl::StartsWith(host, "*.")) host.remove_prefix(2);
  bool ok = !host.empty();
  for (char c : host) {
    // '_' as in a Docker Compose service name, which Host may carry.
    if (!(absl::ascii_islower(c) || absl::ascii_isdigit(c) || c == '-' || c == '_' ||
          c == '.' || c == ':' || c == '[' || c == ']')) {
      ok = false;
    }
  }
  if (host.find('*') != absl::string_view::npos) ok = false;
  if (!ok) {
    sink.Add(field, absl::StrCat("'", Shown(domain),
                                 "' must be a lower-case host name, '*.' "
                                 "followed by one, or '*'"));
    return;
  }
  // Requests are matched on Host without its port and without one trailing
  // dot, and an IPv6 Host is bracketed: a domain otherwise would never match.
  const bool bracketed = absl::StartsWith(host, "[");
  in6_addr v6;
  if (bracketed ? (!absl::EndsWith(host, "]") || host.size() < 3 ||
                   host.find_first_of("[]", 1) != host.size() - 1 ||
                   inet_pton(AF_INET6, std::string(host.substr(1, host.size() - 2)).c_str(),
                             &v6) != 1)
                : host.find_first_of("[]") != absl::string_view::npos) {
    sink.Add(field, absl::StrCat("'", domain, "': an IPv6 address is written in brackets, "
                                 "as '[::1]', with nothing around them"));
  } else if (!bracketed && host.find(':') != absl::string_view::npos) {
    sink.Add(field, absl::StrCat("'", domain, "' would never match: ",
                                 host.find(':') == host.rfind(':')
                                     ? "requests are matched on Host without its port; "
                                       "leave the port out (a listener has one port)"
                                     : "an IPv6 address is written in brackets, as '[::1]'"));
  } else if (absl::EndsWith(host, ".")) {
    sink.Add(field, absl::StrCat("'", domain, "' would never match: leave the trailing dot out "
                                 "(it is dropped from Host before matching)"));
  }
  // (Labels of 1..63 characters: at apply only, DomainLabelsProblem.)
}

// RFC 1035 2.3.4: labels of 1..63 characters, 253 in all; "" when `domain`
// (as CheckDomain took it) keeps to that or is no plain host name.
std::string DomainLabelsProblem(const std::string& domain) {
  absl::string_view host = domain;
  if (host == "*") return "";
  if (absl::StartsWith(host, "[") && absl::EndsWith(host, "]")) {
    // Hosts are compared as written: [0:0::1] would match no client's
    // [::1]. So the one spelling clients send (RFC 5952) is asked for.
    const std::string inside(host.substr(1, host.size() - 2));
    in6_addr address;
    char canonical[INET6_ADDRSTRLEN];
    if (inet_pton(AF_INET6, inside.c_str(), &address) != 1 ||
        inet_ntop(AF_INET6, &address, canonical, sizeof(canonical)) == nullptr) {
      return absl::StrCat("'", domain, "' is not an IPv6 address in brackets");
    }
    if (inside != canonical) {
      return absl::StrCat("'", domain, "' is not the IPv6 address's usual spelling (RFC 5952), "
                          "which hosts are matched against: write '[", canonical, "]'");
    }
    return "";
  }
  if (absl::StartsWith(host, "[")) return "";
  if (absl::StartsWith(host, "*.")) host.remove_prefix(2);
  if (host.empty()) return "";  // CheckDomain's to report
  bool labels_ok = host.size() <= 253;
  for (absl::string_view label : absl::StrSplit(host, '.')) {
    labels_ok = labels_ok && !label.empty() && label.size() <= 63;
  }
  if (labels_ok) return "";
  return absl::StrCat("'", domain, "' is not a host name: labels of 1..63 characters between "
                      "dots, at most 253 in all");
}

int HexValue(char c);  // below

// Why a route's prefix_rewrite would make a bad request target, or "".
std::string RewriteProblem(const std::string& rewrite, const std::string& match_prefix) {
  for (size_t i = 0; i < rewrite.size(); ++i) {
    const char c = rewrite[i];
    const auto u = static_cast<unsigned char>(c);
    if (u > 0x20 && u != 0x7f && !absl::ascii_isalnum(u) &&
        std::string_view("-._~!$&'()*+,;=:@/?#%").find(c) == std::string_view::npos) {
      return absl::StrCat("has ", absl::StrFormat("'%s' (0x%02X)", absl::CHexEscape(std::string(1, c)), u),
                          " at byte ", i + 1,
                          ": a request target takes it percent-encoded only (RFC 3986)");
    }
    if (c == '?') {
      return absl::StrCat("has '?' at byte ", i + 1, ": the rest of the path would move into "
                          "the query");
    }
    if (c == '#') {
      return absl::StrCat("has '#' at byte ", i + 1, ": a request target has no fragment");
    }
    if (c == '%' && (i + 2 >= rewrite.size() || HexValue(rewrite[i + 1]) < 0 ||
                     HexValue(rewrite[i + 2]) < 0)) {
      return absl::StrCat("has '%' at byte ", i + 1,
                          " starting no percent-encoding; write %25 for a '%'");
    }
  }
  // A whole "." or ".." segment before the last: every request would be
  // refused (400). The last may run on into the rest of the path when the
  // match prefix ends in '/' ("/v1/.." and "x" make "/v1/..x"); after any
  // other prefix the prefix itself and every path under it as a directory
  // ("/api", "/api/x") leave it whole: only names that merely begin with
  // the prefix ("/apiary") would pass, so it is refused too.
  std::vector<std::string> segments = absl::StrSplit(rewrite, '/');
  const bool last_stays_whole = !absl::EndsWith(match_prefix, "/");
  for (size_t s = 1; s < segments.size(); ++s) {
    if (s + 1 == segments.size() && !last_stays_whole) break;
    std::string segment = absl::StrReplaceAll(segments[s], {{"%2e", "."}, {"%2E", "."}});
    if (segment == "." || segment == "..") {
      return absl::StrCat("has the segment '", segments[s], "'",
                          s + 1 == segments.size()
                              ? absl::StrCat(", which requests for '", match_prefix, "' and '",
                                             match_prefix, "/...' leave whole")
                              : "",
                          ": requests on the route would be refused (400)");
    }
  }
  return "";
}

// Why `target` is not an origin-form request target (RFC 9112 3.2.1: a path
// and optional query of RFC 3986 characters, '%' only as %HH), or "".
std::string TargetProblem(const std::string& target) {
  if (!absl::StartsWith(target, "/")) return "is required and must start with '/'";
  for (size_t i = 0; i < target.size(); ++i) {
    const unsigned char c = static_cast<unsigned char>(target[i]);
    if (c == '%') {
      if (i + 2 >= target.size() || HexValue(target[i + 1]) < 0 || HexValue(target[i + 2]) < 0) {
        return absl::StrCat("has '%' at byte ", i + 1,
                            " starting no percent-encoding; write %25 for a '%'");
      }
      continue;
    }
    if (!absl::ascii_isalnum(c) && std::string_view("-._~!$&'()*+,;=:@/?").find(c) ==
                                       std::string_view::npos) {
      return absl::StrCat("has ", c == ' ' ? std::string("a space") :
                                  absl::StrFormat("'%s' (0x%02X)", absl::CHexEscape(std::string(1, c)), c),
                          " at byte ", i + 1,
                          ": a request target takes it percent-encoded only (RFC 3986)");
    }
  }
  return "";
}

// Why a redirect's host_redirect is not a host (with an optional port) a
// Location can carry (RFC 3986 3.2.2), or "".
std::string RedirectHostProblem(const std::string& value) {
  absl::string_view host = value;
  absl::string_view port;
  if (absl::StartsWith(host, "[")) {
    const size_t close = host.find(']');
    in6_addr v6;
    if (close == absl::string_view::npos ||
        inet_pton(AF_INET6, std::string(host.substr(1, close - 1)).c_str(), &v6) != 1) {
      return "an IPv6 address is written in brackets, as '[::1]'";
    }
    port = host.substr(close + 1);
    if (!port.empty() && port[0] != ':') return "only ':PORT' may follow ']'";
    host = host.substr(0, close + 1);
  } else {
    const size_t colon = host.find(':');
    if (colon != absl::string_view::npos) {
      if (host.find(':', colon + 1) != absl::string_view::npos) {
        return "an IPv6 address is written in brackets, as '[::1]'";
      }
      port = host.substr(colon);
      host = host.substr(0, colon);
    }
    // RFC 3986 reg-name: '_' too (a Docker Compose service), and one
    // trailing dot (a fully qualified name).
    if (absl::EndsWith(host, ".") && host.size() > 1) host.remove_suffix(1);
    bool ok = !host.empty() && host.size() <= 253;
    for (absl::string_view label : absl::StrSplit(host, '.')) {
      ok = ok && !label.empty() && label.size() <= 63;
      for (char c : label) {
        ok = ok && (absl::ascii_isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '_');
      }
    }
    if (!ok) {
      return absl::StrCat("'", Shown(value), "' is not a host name: letters, digits, '-' and "
                          "'_' in labels of 1..63 characters between dots (no '/', '@' or "
                          "space)");
    }
  }
  if (!port.empty()) {
    uint32_t number = 0;
    if (!absl::SimpleAtoi(port.substr(1), &number) || number < 1 || number > 65535 ||
        port.size() < 2 || !absl::ascii_isdigit(static_cast<unsigned char>(port[1]))) {
      return absl::StrCat("the port in '", Shown(value), "' must be 1..65535");
    }
  }
  return "";
}

// Each entry names a registered policy and carries a config of its type that
// passes the policy's own rules. A name appears at most once per list.
void ValidatePolicies(
    const google::protobuf::RepeatedPtrField<config::v1::TypedExtensionConfig>& policies,
    const std::string& prefix, ErrorSink& sink) {
  if (static_cast<size_t>(policies.size()) > kMaxPoliciesPerList) {
    sink.Add(prefix, absl::StrCat("has ", policies.size(), " entries; at most ",
                                  kMaxPoliciesPerList));
  }
  std::set<std::string> seen;
  for (int i = 0; i < policies.size(); ++i) {
    const config::v1::TypedExtensionConfig& policy = policies.Get(i);
    std::string field = Index(prefix, i);
    const PolicyValidator* validator = FindPolicyValidator(policy.name());
    if (validator == nullptr) {
      std::vector<std::string> names = RegisteredPolicyNames();
      sink.Add(Join(field, "name"),
               absl::StrCat("unknown policy '", Shown(policy.name(), 64), "' (this build has: ",
                            names.empty() ? std::string("none") : absl::StrJoin(names, ", "),
                            ")", DidYouMean(policy.name(), names)));
      continue;
    }
    if (!seen.insert(policy.name()).second) {
      sink.Add(Join(field, "name"), absl::StrCat("policy '", policy.name(), "' is listed twice"));
    }
    std::string error;
    std::unique_ptr<google::protobuf::Message> config =
        UnpackPolicyConfig(*validator, policy.typed_config(), &error);
    if (config == nullptr) {
      sink.Add(Join(field, "typed_config"), error);
      continue;
    }
    std::vector<PolicyConfigError> errors;
    validator->Validate(*config, &errors);
    for (const PolicyConfigError& e : errors) {
      sink.Add(Join(Join(field, "typed_config"), e.field), e.message);
    }
  }
}

// A control byte (a NUL...) can never be in a request's path: a prefix or
// path holding one would never match.
void CheckNoControlByte(const std::string& value, const std::string& field, ErrorSink& sink) {
  for (size_t i = 0; i < value.size(); ++i) {
    const unsigned char c = static_cast<unsigned char>(value[i]);
    if (c < 0x20 || c == 0x7f) {
      sink.Add(field, absl::StrCat("'", Shown(value), "' has a control byte at position ",
                                   i + 1, ": no request path holds one"));
      return;
    }
  }
}

void ValidateRoute(const Route& route, const std::string& prefix,
                   ErrorSink& sink) {
  CheckName(route.name(), Join(prefix, "name"), sink, /*required=*/false);
  const auto& match = route.match();
  std::string m = Join(prefix, "match");
  switch (match.path_specifier_case()) {
    case config::v1::RouteMatch::kPrefix:
      if (!absl::StartsWith(match.prefix(), "/")) {
        sink.Add(Join(m, "prefix"), absl::StrCat("'", match.prefix(),
                                                 "' must start with '/'"));
      } else {
        CheckNoControlByte(match.prefix(), Join(m, "prefix"), sink);
      }
      break;
    case config::v1::RouteMatch::kPath:
      if (!absl::StartsWith(match.path(), "/")) {
        sink.Add(Join(m, "path"),
                 absl::StrCat("'", match.path(), "' must start with '/'"));
      } else {
        CheckNoControlByte(match.path(), Join(m, "path"), sink);
      }
      break;
    case config::v1::RouteMatch::kRegex:
      // (Empty: refused at apply, RouteNewContent.)
      if (!match.regex().empty()) CheckRegex(match.regex(), Join(m, "regex"), sink);
      break;
    case config::v1::RouteMatch::PATH_SPECIFIER_NOT_SET:
      sink.Add(m, "needs one of prefix, path or regex");
      break;
  }
  for (int i = 0; i < match.methods_size(); ++i) {
    const std::string& method = match.methods(i);
    if (!IsToken(method) || absl::AsciiStrToUpper(method) != method) {
      sink.Add(Index(Join(m, "methods"), i),
               absl::StrCat("'", method, "' is not an upper-case HTTP method"));
    }
  }
  for (int i = 0; i < match.headers_size(); ++i) {
    const auto& h = match.headers(i);
    std::string f = Index(Join(m, "headers"), i);
    if (!IsToken(h.name())) {
      // Envoy's matchers take pseudo-headers; here each has its own field.
      const std::string& n = h.name();
      const char* instead = n == ":authority" ? ": match it as `host` (port included), or by the "
                                                "virtual host's domains"
                            : n == ":path"    ? ": match the path with path, prefix or regex"
                            : n == ":method"  ? ": match the method with methods"
                            : n == ":scheme"  ? ": the scheme is not matched; a listener has one"
                                              : "";
      sink.Add(Join(f, "name"), absl::StrCat("'", n, "' is not a valid header name", instead));
    }
    CheckValueMatcher(h, f, sink);
  }
  for (int i = 0; i < match.query_parameters_size(); ++i) {
    const auto& q = match.query_parameters(i);
    std::string f = Index(Join(m, "query_parameters"), i);
    if (q.name().empty()) sink.Add(Join(f, "name"), "is required");
    CheckValueMatcher(q, f, sink);
  }

  switch (route.action_case()) {
    case Route::kRoute: {
      const auto& action = route.route();
      std::string a = Join(prefix, "route");
      if (action.cluster_specifier_case() ==
          config::v1::RouteAction::CLUSTER_SPECIFIER_NOT_SET) {
        sink.Add(a, "needs cluster or weighted_clusters");
      }
      if (action.has_weighted_clusters()) {
        const auto& wc = action.weighted_clusters();
        if (wc.clusters_size() == 0) {
          sink.Add(Join(a, "weighted_clusters.clusters"), "needs at least one");
        }
        std::set<std::string> seen;
        for (int i = 0; i < wc.clusters_size(); ++i) {
          std::string f = Index(Join(a, "weighted_clusters.clusters"), i);
          CheckName(wc.clusters(i).name(), Join(f, "name"), sink);
          CheckWeight(wc.clusters(i).weight(), Join(f, "weight"), sink, false);
          if (!seen.insert(wc.clusters(i).name()).second) {
            sink.Add(Join(f, "name"), absl::StrCat("cluster '", wc.clusters(i).name(),
                                                   "' is listed twice"));
          }
        }
      } else if (action.has_cluster()) {
        CheckName(action.cluster(), Join(a, "cluster"), sink);
      }
      CheckDuration(action.timeout(), action.has_timeout(), Join(a, "timeout"),
                    absl::ZeroDuration(), absl::Hours(1), sink);
      CheckDuration(action.websocket_idle_timeout(), action.has_websocket_idle_timeout(),
                    Join(a, "websocket_idle_timeout"), absl::Seconds(1), absl::Hours(24), sink);
      CheckDuration(action.idle_timeout(), action.has_idle_timeout(), Join(a, "idle_timeout"),
                    absl::ZeroDuration(), absl::Hours(24), sink);
      if (action.has_websocket_idle_timeout() && !action.websocket()) {
        sink.Add(Join(a, "websocket_idle_timeout"), "needs websocket: true");
      }
      if (action.has_retry_policy()) {
        const auto& rp = action.retry_policy();
        std::string f = Join(a, "retry_policy");
        if (rp.num_retries() > 10) {
          sink.Add(Join(f, "num_retries"), absl::StrCat("must be 0..10, got ", rp.num_retries()));
        }
        bool wants_codes = false;
        for (int i = 0; i < rp.retry_on_size(); ++i) {
          const std::string& on = rp.retry_on(i);
          if (on == "retriable-status-codes") wants_codes = true;
          if (on != "connect-failure" && on != "reset" && on != "gateway-error" && on != "5xx" &&
              on != "retriable-status-codes" && GrpcRetryOnCode(on) < 0) {
            sink.Add(Index(Join(f, "retry_on"), i),
                     absl::StrCat("'", on, "' is not one of connect-failure, reset, "
                                            "gateway-error, 5xx, retriable-status-codes, "
                                            "cancelled, deadline-exceeded, resource-exhausted, "
                                            "internal, unavailable"));
          }
        }
        for (int i = 0; i < rp.retriable_status_codes_size(); ++i) {
          uint32_t code = rp.retriable_status_codes(i);
          if (code < 100 || code > 599) {
            sink.Add(Index(Join(f, "retriable_status_codes"), i),
                     absl::StrCat("must be 100..599, got ", code));
          }
        }
        if (rp.retriable_status_codes_size() > 0 && !wants_codes) {
          sink.Add(Join(f, "retriable_status_codes"),
                   "needs \"retriable-status-codes\" in retry_on");
        }
        CheckDuration(rp.per_try_timeout(), rp.has_per_try_timeout(), Join(f, "per_try_timeout"),
                      absl::ZeroDuration(), absl::Hours(1), sink);
        CheckDuration(rp.base_interval(), rp.has_base_interval(), Join(f, "base_interval"),
                      absl::Milliseconds(1), absl::Seconds(10), sink);
        CheckDuration(rp.max_interval(), rp.has_max_interval(), Join(f, "max_interval"),
                      absl::Milliseconds(1), absl::Seconds(10), sink);
        if (rp.max_replay_bytes() > 16 * 1024 * 1024) {
          sink.Add(Join(f, "max_replay_bytes"),
                   absl::StrCat("must be at most 16777216, got ", rp.max_replay_bytes()));
        }
      }
      if (!action.prefix_rewrite().empty()) {
        if (match.path_specifier_case() != config::v1::RouteMatch::kPrefix) {
          sink.Add(Join(a, "prefix_rewrite"), "needs a match on prefix");
        } else if (!absl::StartsWith(action.prefix_rewrite(), "/")) {
          sink.Add(Join(a, "prefix_rewrite"), "must start with '/'");
        }
        // It becomes part of the request line sent upstream.
        for (char c : action.prefix_rewrite()) {
          if (static_cast<unsigned char>(c) <= 0x20 || c == 0x7f) {
            sink.Add(Join(a, "prefix_rewrite"),
                     "must not contain spaces or control characters (CR, LF, NUL...)");
            break;
          }
        }
      }
      break;
    }
    case Route::kRedirect: {
      const auto& r = route.redirect();
      std::string a = Join(prefix, "redirect");
      uint32_t code = r.response_code();
      if (code != 0 && code != 301 && code != 302 && code != 303 &&
          code != 307 && code != 308) {
        sink.Add(Join(a, "response_code"),
                 absl::StrCat("must be 301, 302, 303, 307 or 308, got ", code));
      }
      if (!r.scheme_redirect().empty() && r.scheme_redirect() != "http" &&
          r.scheme_redirect() != "https") {
        sink.Add(Join(a, "scheme_redirect"),
                 absl::StrCat("must be http or https, got '", r.scheme_redirect(), "'"));
      }
      if (!r.path_redirect().empty() && !absl::StartsWith(r.path_redirect(), "/")) {
        sink.Add(Join(a, "path_redirect"), "must start with '/'");
      }
      if (!r.prefix_rewrite().empty()) {
        if (match.path_specifier_case() != config::v1::RouteMatch::kPrefix) {
          sink.Add(Join(a, "prefix_rewrite"), "needs a match on prefix");
        } else if (!absl::StartsWith(r.prefix_rewrite(), "/")) {
          sink.Add(Join(a, "prefix_rewrite"), "must start with '/'");
        }
        if (!r.path_redirect().empty()) {
          sink.Add(Join(a, "prefix_rewrite"), "set only one of path_redirect and prefix_rewrite");
        }
      }
      for (char c : r.host_redirect() + r.path_redirect() + r.prefix_rewrite()) {
        if (static_cast<unsigned char>(c) <= 0x20 || c == 0x7f) {
          sink.Add(a, "host_redirect, path_redirect and prefix_rewrite must not contain spaces "
                      "or control characters");
          break;
        }
      }
      break;
    }
    case Route::kDirectResponse: {
      const auto& d = route.direct_response();
      std::string a = Join(prefix, "direct_response");
      if (d.status() < 200 || d.status() > 599) {
        sink.Add(Join(a, "status"), absl::StrCat("must be 200..599, got ", d.status()));
      }
      if (d.body().size() > kMaxDirectResponseBody) {
        sink.Add(Join(a, "body"), absl::StrCat("is ", d.body().size(),
                                               " bytes; at most ",
                                               kMaxDirectResponseBody));
      }
      for (char c : d.content_type()) {
        if (static_cast<unsigned char>(c) < 0x20 || c == 0x7f) {
          sink.Add(Join(a, "content_type"), "must not contain control characters");
          break;
        }
      }
      break;
    }
    case Route::ACTION_NOT_SET:
      sink.Add(prefix, "needs one of route, redirect or direct_response");
      break;
  }
  ValidatePolicies(route.policies(), Join(prefix, "policies"), sink);
}

void ValidateRouteTable(const RouteTable& table, ErrorSink& sink) {
  CheckName(table.name(), "name", sink);
  if (table.virtual_hosts_size() == 0) {
    sink.Add("virtual_hosts", "needs at least one virtual host");
  }
  std::map<std::string, int> domain_owner;
  // Names label the metrics (route_table, virtual_host, route): two alike
  // would share series. An unnamed virtual host is labelled by its index.
  std::map<std::string, int> vhost_names;
  for (int v = 0; v < table.virtual_hosts_size(); ++v) {
    const auto& vhost = table.virtual_hosts(v);
    std::string vf = Index("virtual_hosts", v);
    CheckName(vhost.name(), Join(vf, "name"), sink, /*required=*/false);
    if (!vhost.name().empty()) {
      if (std::all_of(vhost.name().begin(), vhost.name().end(), absl::ascii_isdigit)) {
        sink.Add(Join(vf, "name"), absl::StrCat("'", vhost.name(), "' is all digits, as the "
                                                "label of an unnamed virtual host (its index) "
                                                "is; add a letter"));
      } else if (auto [it, inserted] = vhost_names.emplace(vhost.name(), v); !inserted) {
        sink.Add(Join(vf, "name"), absl::StrCat("'", vhost.name(), "' is also virtual_hosts[",
                                                it->second, "]'s name"));
      }
    }
    std::map<std::string, int> route_names;
    for (int r = 0; r < vhost.routes_size(); ++r) {
      const std::string& name = vhost.routes(r).name();
      if (name.empty()) continue;
      if (auto [it, inserted] = route_names.emplace(name, r); !inserted) {
        sink.Add(Join(Index(Join(vf, "routes"), r), "name"),
                 absl::StrCat("'", name, "' is also routes[", it->second,
                              "]'s name in this virtual host"));
      }
    }
    if (vhost.domains_size() == 0) {
      sink.Add(Join(vf, "domains"), "needs at least one domain ('*' for any)");
    }
    for (int d = 0; d < vhost.domains_size(); ++d) {
      std::string df = Index(Join(vf, "domains"), d);
      CheckDomain(vhost.domains(d), df, sink);
      auto [it, inserted] = domain_owner.emplace(vhost.domains(d), v);
      if (!inserted) {
        sink.Add(df, absl::StrCat("domain '", vhost.domains(d),
                                  "' is already served by virtual_hosts[",
                                  it->second, "]"));
      }
    }
    if (vhost.routes_size() == 0) {
      sink.Add(Join(vf, "routes"), "needs at least one route");
    }
    ValidatePolicies(vhost.policies(), Join(vf, "policies"), sink);
    for (int r = 0; r < vhost.routes_size(); ++r) {
      ValidateRoute(vhost.routes(r), Index(Join(vf, "routes"), r), sink);
    }
  }
}

// A host name to send as SNI and check the certificate against: labels of
// letters, digits and '-' (not at either end), at most 63 bytes each and 253
// in all; no IP address, wildcard or trailing dot.
void CheckServerName(const std::string& name, const char* field, ErrorSink& sink) {
  if (name.empty()) return;
  if (IsIpLiteral(name)) {
    sink.Add(field, absl::StrCat("'", name, "' is an IP address; SNI carries host names only "
                                            "(leave sni unset to connect by address)"));
    return;
  }
  bool ok = name.size() <= 253;
  for (absl::string_view label : absl::StrSplit(name, '.')) {
    if (label.empty() || label.size() > 63 || label.front() == '-' || label.back() == '-') {
      ok = false;
    }
    for (char c : label) {
      if (!absl::ascii_isalnum(c) && c != '-') ok = false;
    }
  }
  if (!ok) {
    sink.Add(field, absl::StrCat("'", Shown(name), "' is not a host name (labels of 1..63 "
                                 "letters, digits and '-', not starting or ending with '-', "
                                 "separated by '.'; at most 253 in all)"));
  }
}

void ValidateUpstreamTls(const config::v1::UpstreamTls& tls, ErrorSink& sink) {
  CheckName(tls.ca(), "tls.ca", sink, /*required=*/false);
  if (tls.insecure_skip_verify()) {
    if (!tls.ca().empty()) {
      sink.Add("tls.ca", "must be unset with insecure_skip_verify (nothing is verified)");
    }
  } else if (tls.ca().empty()) {
    sink.Add("tls.ca",
             "is required: the Secret with the trusted_ca that the upstream's certificate must "
             "chain to (or, unsafe, insecure_skip_verify: true)");
  }
  CheckServerName(tls.sni(), "tls.sni", sink);
  CheckName(tls.client_certificate(), "tls.client_certificate", sink, /*required=*/false);
  CheckTlsVersions(tls.min_version(), tls.max_version(), sink);
}

void ValidateCluster(const Cluster& cluster, ErrorSink& sink) {
  CheckName(cluster.name(), "name", sink);
  if (cluster.endpoints_size() == 0) {
    sink.Add("endpoints", "needs at least one endpoint");
  }
  if (static_cast<size_t>(cluster.endpoints_size()) > kMaxEndpointsPerCluster) {
    sink.Add("endpoints", absl::StrCat("has ", cluster.endpoints_size(),
                                       " endpoints; at most ",
                                       kMaxEndpointsPerCluster));
  }
  std::map<std::pair<std::string, uint32_t>, int> seen;
  bool host_names = false;
  for (int i = 0; i < cluster.endpoints_size(); ++i) {
    const auto& e = cluster.endpoints(i);
    std::string f = Index("endpoints", i);
    CheckEndpointAddress(e.address(), Join(f, "address"), sink);
    host_names = host_names || (!e.address().empty() && !IsIpLiteral(e.address()));
    CheckPort(e.port(), Join(f, "port"), sink);
    if (e.has_weight() && e.weight() == 0) {
      sink.Add(Join(f, "weight"), "must be 1..10000, got 0: a weight of 0 does not drain an "
                                  "endpoint; remove it from endpoints to stop sending to it");
    } else {
      CheckWeight(e.weight(), Join(f, "weight"), sink, /*zero_means_default=*/true);
    }
    // (An IPv4-mapped IPv6 spelling of another endpoint: at apply only.)
    auto [it, inserted] = seen.emplace(
        std::make_pair(IsIpLiteral(e.address()) ? CanonicalAddress(e.address())
                                                : CanonicalHostName(e.address()),
                       e.port()),
        i);
    if (!inserted) {
      sink.Add(f, absl::StrCat(HostPort(e.address(), e.port()),
                               " is the same endpoint as endpoints[", it->second,
                               "]"));
    }
  }
  if (!config::v1::Cluster::LbPolicy_IsValid(cluster.lb_policy())) {
    sink.Add("lb_policy", absl::StrCat("unknown value ", cluster.lb_policy()));
  }
  // Resolving: only where an endpoint is a host name.
  constexpr absl::string_view kNoHostName =
      "applies only to endpoints given by host name; every endpoint here is an IP address";
  if (cluster.has_dns_refresh_interval()) {
    if (!host_names) sink.Add("dns_refresh_interval", std::string(kNoHostName));
    CheckDuration(cluster.dns_refresh_interval(), true, "dns_refresh_interval",
                  absl::Seconds(1), absl::Hours(24), sink);
  }
  if (cluster.has_slow_start()) {
    const config::v1::SlowStart& s = cluster.slow_start();
    if (!s.has_window()) {
      sink.Add("slow_start.window", "is required (examples: 30s, 2m)");
    } else {
      CheckDuration(s.window(), true, "slow_start.window", absl::Seconds(1), absl::Hours(1), sink);
    }
    if (s.has_min_weight_percent() &&
        (s.min_weight_percent().value() < 1 || s.min_weight_percent().value() > 100)) {
      sink.Add("slow_start.min_weight_percent",
               absl::StrCat("must be 1..100, got ", s.min_weight_percent().value()));
    }
    if (cluster.lb_policy() == config::v1::Cluster::RING_HASH ||
        cluster.lb_policy() == config::v1::Cluster::MAGLEV) {
      sink.Add("slow_start", absl::StrCat("does not apply to lb_policy ",
                                          config::v1::Cluster::LbPolicy_Name(cluster.lb_policy()),
                                          ": a key's endpoint is fixed by the hash (use "
                                          "ROUND_ROBIN, LEAST_REQUEST or RANDOM)"));
    }
  }
  if (!config::v1::Cluster::DnsLookupFamily_IsValid(cluster.dns_lookup_family())) {
    sink.Add("dns_lookup_family", absl::StrCat("unknown value ", cluster.dns_lookup_family()));
  } else if (cluster.dns_lookup_family() != config::v1::Cluster::V4_PREFERRED && !host_names) {
    sink.Add("dns_lookup_family", std::string(kNoHostName));
  }
  if (cluster.dns_resolvers_size() > 0 && !host_names) {
    sink.Add("dns_resolvers", std::string(kNoHostName));
  }
  if (static_cast<size_t>(cluster.dns_resolvers_size()) > kMaxDnsResolvers) {
    sink.Add("dns_resolvers", absl::StrCat("has ", cluster.dns_resolvers_size(),
                                           " servers; at most ", kMaxDnsResolvers));
  }
  std::set<std::string> resolvers;
  for (int i = 0; i < cluster.dns_resolvers_size(); ++i) {
    const std::string& r = cluster.dns_resolvers(i);
    if (!IsResolverAddress(r)) {
      sink.Add(Index("dns_resolvers", i),
               absl::StrCat("'", Shown(r),
                            "' is not a DNS server address: IP, IP:PORT or [IPv6]:PORT"));
      continue;
    }
    // The server as an address and a port (53 when none is written), to
    // find one listed twice in two spellings.
    const bool bracketed = absl::StartsWith(r, "[");
    const bool bare = IsIpLiteral(r);
    const std::string host = bracketed ? r.substr(1, r.find(']') - 1)
                             : bare    ? r
                                       : r.substr(0, r.rfind(':'));
    const std::string port = bare ? "53" : r.substr(r.rfind(':') + 1);
    std::string canonical = CanonicalAddress(host);
    if (absl::StartsWith(canonical, "::ffff:") && IsIpLiteral(canonical.substr(7))) {
      canonical = canonical.substr(7);  // an IPv4-mapped spelling is the IPv4 address
    }
    if (canonical == "0.0.0.0" || canonical == "::") {
      sink.Add(Index("dns_resolvers", i),
               absl::StrCat("'", Shown(r), "' is the unspecified address, no server"));
    } else if (!resolvers.insert(absl::StrCat(canonical, " ", std::stoi(port))).second) {
      sink.Add(Index("dns_resolvers", i), absl::StrCat("'", Shown(r), "' is listed twice"));
    }
  }
  CheckDuration(cluster.connect_timeout(), cluster.has_connect_timeout(),
                "connect_timeout", absl::Milliseconds(1), absl::Minutes(5), sink);
  CheckDuration(cluster.idle_connection_timeout(), cluster.has_idle_connection_timeout(),
                "idle_connection_timeout", absl::Seconds(1), absl::Hours(24), sink);
  if (cluster.has_idle_connection_timeout() && cluster.protocol() == config::v1::Cluster::HTTP2) {
    sink.Add("idle_connection_timeout",
             "applies to HTTP/1.1 connections (protocol HTTP1, or AUTO's endpoints that chose "
             "HTTP/1.1); HTTP/2 connections close after 5 minutes with no stream");
  }
  if (cluster.has_health_check()) {
    const auto& hc = cluster.health_check();
    CheckDuration(hc.interval(), hc.has_interval(), "health_check.interval",
                  absl::Milliseconds(10), absl::Hours(1), sink);
    CheckDuration(hc.timeout(), hc.has_timeout(), "health_check.timeout", absl::Milliseconds(1),
                  absl::Minutes(1), sink);
    CheckDuration(hc.interval_jitter(), hc.has_interval_jitter(), "health_check.interval_jitter",
                  absl::ZeroDuration(), absl::Hours(1), sink);
    absl::Duration interval = hc.has_interval()
        ? ToDuration(hc.interval())
        : kDefaultHealthCheckInterval;
    absl::Duration timeout = hc.has_timeout()
        ? ToDuration(hc.timeout())
        : kDefaultHealthCheckTimeout;
    if (timeout > interval) {
      sink.Add("health_check.timeout",
               absl::StrCat(hc.has_timeout() ? "" : "1s (the default) ",
                            "must not exceed interval (", absl::FormatDuration(interval), ")",
                            hc.has_timeout() ? "" : ": set a timeout with an interval under 1s"));
    }
    for (auto [value, field] : {std::make_pair(hc.healthy_threshold(), "healthy_threshold"),
                                std::make_pair(hc.unhealthy_threshold(), "unhealthy_threshold")}) {
      if (value > 100) {
        sink.Add(absl::StrCat("health_check.", field), absl::StrCat("must be 1..100, got ", value));
      }
    }
    if (hc.checker_case() == config::v1::HealthCheck::CHECKER_NOT_SET) {
      sink.Add("health_check", "needs http, tcp or grpc");
    } else if (hc.has_http()) {
      if (!absl::StartsWith(hc.http().path(), "/")) {
        sink.Add("health_check.http.path", "is required and must start with '/'");
      }
      // Both go on the wire as they are, the request line and Host: no
      // control byte or space, ever (the rest of their syntax: at apply).
      for (const auto& [value, field] :
           {std::pair<const std::string&, const char*>{hc.http().path(), "health_check.http.path"},
            std::pair<const std::string&, const char*>{hc.http().host(), "health_check.http.host"}}) {
        for (char c : value) {
          if (static_cast<unsigned char>(c) <= 0x20 || c == 0x7f) {
            sink.Add(field, "must not contain spaces or control characters (CR, LF, NUL...)");
            break;
          }
        }
      }
      for (int i = 0; i < hc.http().expected_statuses_size(); ++i) {
        uint32_t code = hc.http().expected_statuses(i);
        if (code < 100 || code > 599) {
          sink.Add(Index("health_check.http.expected_statuses", i),
                   absl::StrCat("must be 100..599, got ", code));
        }
      }
    } else if (hc.has_grpc()) {
      if (cluster.protocol() == config::v1::Cluster::HTTP1) {
        sink.Add("health_check.grpc", "gRPC runs over HTTP/2: set the cluster's protocol to HTTP2 "
                                      "(or AUTO with tls)");
      }
      for (char c : hc.grpc().service_name() + hc.grpc().authority()) {
        if (static_cast<unsigned char>(c) <= 0x20 || c == 0x7f) {
          sink.Add("health_check.grpc",
                   "service_name and authority must not contain spaces or control characters");
          break;
        }
      }
    }
  }
  if (cluster.has_outlier_detection()) {
    const auto& od = cluster.outlier_detection();
    CheckDuration(od.base_ejection_time(), od.has_base_ejection_time(),
                  "outlier_detection.base_ejection_time", absl::Milliseconds(1), absl::Hours(24), sink);
    CheckDuration(od.max_ejection_time(), od.has_max_ejection_time(),
                  "outlier_detection.max_ejection_time", absl::Milliseconds(1), absl::Hours(24), sink);
    if (od.has_base_ejection_time() && od.has_max_ejection_time() &&
        ToDuration(od.base_ejection_time()) > ToDuration(od.max_ejection_time())) {
      sink.Add("outlier_detection.max_ejection_time",
               absl::StrCat("must be at least base_ejection_time (",
                            absl::FormatDuration(ToDuration(od.base_ejection_time())), "), got ",
                            absl::FormatDuration(ToDuration(od.max_ejection_time()))));
    }
    if (od.has_max_ejection_percent() && od.max_ejection_percent().value() > 100) {
      sink.Add("outlier_detection.max_ejection_percent",
               absl::StrCat("must be 0..100, got ", od.max_ejection_percent().value()));
    }
  }
  if (cluster.has_panic_threshold_percent() && cluster.panic_threshold_percent().value() > 100) {
    sink.Add("panic_threshold_percent",
             absl::StrCat("must be 0..100, got ", cluster.panic_threshold_percent().value()));
  }
  bool hashing = cluster.lb_policy() == config::v1::Cluster::RING_HASH ||
                 cluster.lb_policy() == config::v1::Cluster::MAGLEV;
  if (hashing && cluster.hash_policy().key_case() == config::v1::HashPolicy::KEY_NOT_SET) {
    sink.Add("hash_policy", "is required for RING_HASH and MAGLEV (header, cookie, source_ip or path)");
  }
  if (!hashing && cluster.has_hash_policy()) {
    sink.Add("hash_policy", "is used only with RING_HASH or MAGLEV");
  }
  // (`source_ip: false` or `path: false`: at apply, ClusterNewContent.)
  if (cluster.hash_policy().has_header() && !IsToken(cluster.hash_policy().header())) {
    sink.Add("hash_policy.header", absl::StrCat("'", cluster.hash_policy().header(),
                                                "' is not a valid header name"));
  }
  if (cluster.hash_policy().has_cookie() && !IsToken(cluster.hash_policy().cookie())) {
    sink.Add("hash_policy.cookie", absl::StrCat("'", cluster.hash_policy().cookie(),
                                                "' is not a valid cookie name"));
  }
  if (cluster.ring_points_per_weight() != 0 &&
      (cluster.ring_points_per_weight() < 16 || cluster.ring_points_per_weight() > 65536)) {
    sink.Add("ring_points_per_weight",
             absl::StrCat("must be 16..65536, got ", cluster.ring_points_per_weight()));
  }
  if (cluster.ring_points_per_weight() != 0 &&
      cluster.lb_policy() != config::v1::Cluster::RING_HASH) {
    sink.Add("ring_points_per_weight", "is used only with RING_HASH");
  }
  if (cluster.max_idle_connections_per_endpoint() > 10000) {
    sink.Add("max_idle_connections_per_endpoint",
             absl::StrCat("must be at most 10000, got ",
                          cluster.max_idle_connections_per_endpoint()));
  }
  if (cluster.has_tls()) ValidateUpstreamTls(cluster.tls(), sink);
  if (cluster.protocol() == config::v1::Cluster::AUTO && !cluster.has_tls()) {
    sink.Add("protocol", "AUTO picks the protocol by TLS ALPN and needs tls; use HTTP1 or HTTP2 "
                         "(h2c) for a plain-TCP upstream");
  }
  if (cluster.max_concurrent_streams() > 0x7fffffff) {
    sink.Add("max_concurrent_streams",
             absl::StrCat("must be 1..2147483647, got ", cluster.max_concurrent_streams()));
  }
  const auto& cb = cluster.circuit_breakers();
  if (cb.has_retry_budget() && cb.max_retries() != 0) {
    sink.Add("circuit_breakers.retry_budget",
             "not with max_retries: a fixed cap and a budget would disagree; set one");
  }
  if (cb.retry_budget().budget_percent() > 100) {
    sink.Add("circuit_breakers.retry_budget.budget_percent",
             absl::StrCat("must be 1..100, got ", cb.retry_budget().budget_percent()));
  }
  if (cb.retry_budget().min_retry_concurrency() > 10000) {
    sink.Add("circuit_breakers.retry_budget.min_retry_concurrency",
             absl::StrCat("must be 1..10000, got ", cb.retry_budget().min_retry_concurrency()));
  }
  if (cluster.max_concurrent_streams() != 0 && cluster.protocol() == config::v1::Cluster::HTTP1) {
    sink.Add("max_concurrent_streams", "applies to HTTP/2 only (protocol HTTP2 or AUTO)");
  }
  CheckDuration(cluster.keepalive_interval(), cluster.has_keepalive_interval(),
                "keepalive_interval", absl::Seconds(1), absl::Hours(1), sink);
  if (cluster.has_keepalive_interval() && cluster.protocol() == config::v1::Cluster::HTTP1) {
    sink.Add("keepalive_interval",
             "applies to HTTP/2 only (protocol HTTP2 or AUTO): HTTP/1.1 has no PING");
  }
}

// `name` (when set) is a Secret that exists and holds `want`.
void CheckSecretReference(const std::string& name, const std::string& field,
                          Secret::TypeCase want, absl::string_view want_name,
                          const ResourceMap& state, ErrorSink& sink) {
  if (name.empty()) return;
  auto it = state.find({config::v1::SECRET, name});
  if (it == state.end()) {
    sink.Add(field, absl::StrCat("Secret \"", name, "\" does not exist"));
    return;
  }
  Secret::TypeCase have = it->second.secret().type_case();
  if (have != want) {
    sink.Add(field, absl::StrCat("Secret \"", name, "\" is not a ", want_name,
                                 have == Secret::kTlsCertificate ? " (it is a tls_certificate)"
                                 : have == Secret::kTrustedCa    ? " (it is a trusted_ca)"
                                                                 : ""));
  }
}

// Whether a proxy can ever negotiate `cipher`: not a suite that needs a
// pre-shared key or an SRP password (the proxy has neither), nor a
// finite-field DHE one (it sets no DH parameters). "HIGH" selects such
// suites; they are harmless in a list, but cannot serve a certificate.
bool ProxyCanNegotiate(const SSL_CIPHER* cipher) {
  switch (SSL_CIPHER_get_kx_nid(cipher)) {
    case NID_kx_psk:
#ifdef NID_kx_srp
    case NID_kx_srp:
#endif
#ifdef NID_kx_rsa_psk
    case NID_kx_rsa_psk:
#endif
#ifdef NID_kx_ecdhe_psk
    case NID_kx_ecdhe_psk:
#endif
#ifdef NID_kx_dhe_psk
    case NID_kx_dhe_psk:
#endif
#ifdef NID_kx_dhe
    case NID_kx_dhe:
#endif
      return false;
    default:
      return true;
  }
}

// Which certificate key kinds the TLS 1.2 suites of `list` can serve.
struct SuiteAuth {
  bool rsa = false;
  bool ecdsa = false;
};
SuiteAuth AuthOfCipherList(const std::string& list) {
  // A list CheckCipherSuites refuses is reported there, once.
  std::vector<ValidationError> list_errors;
  ErrorSink list_sink({}, &list_errors);
  CheckCipherSuites(list, list_sink);
  if (!list_errors.empty()) return {true, true};
  SuiteAuth auth;
  std::unique_ptr<SSL_CTX, decltype(&SSL_CTX_free)> ctx(SSL_CTX_new(TLS_method()), SSL_CTX_free);
  SLUICE_CHECK(ctx != nullptr);
  SLUICE_CHECK(SSL_CTX_set_cipher_list(ctx.get(), list.c_str()) == 1);  // checked above
  STACK_OF(SSL_CIPHER)* selected = SSL_CTX_get_ciphers(ctx.get());
  for (int i = 0; selected != nullptr && i < sk_SSL_CIPHER_num(selected); ++i) {
    const SSL_CIPHER* cipher = sk_SSL_CIPHER_value(selected, i);
    if (!ProxyCanNegotiate(cipher)) continue;
    const int nid = SSL_CIPHER_get_auth_nid(cipher);
    auth.rsa = auth.rsa || nid == NID_auth_rsa;
    auth.ecdsa = auth.ecdsa || nid == NID_auth_ecdsa;
  }
  return auth;
}

// A listener's tls names Secrets that exist and hold the right material;
// with cipher_suites set and TLS 1.2 allowed, each certificate's key has a
// suite it can serve (an RSA certificate behind ECDSA-only suites fails
// every TLS 1.2 handshake that picks it).
void CheckTlsReferences(const ListenerTls& tls, const ResourceMap& state, ErrorSink& sink) {
  const bool tls12 = tls.min_version().empty() || tls.min_version() == "1.2";
  std::optional<SuiteAuth> auth;
  if (tls12 && !tls.cipher_suites().empty()) auth = AuthOfCipherList(tls.cipher_suites());
  for (int i = 0; i < tls.certificates_size(); ++i) {
    CheckSecretReference(tls.certificates(i), Index("tls.certificates", i),
                         Secret::kTlsCertificate, "tls_certificate", state, sink);
    if (!auth) continue;
    auto it = state.find({config::v1::SECRET, tls.certificates(i)});
    if (it == state.end() || !it->second.secret().has_tls_certificate()) continue;
    // The leaf's public key: the Secret's own rules matched the private key
    // to it, and parsing each private key again cost seconds per apply.
    const std::optional<CertificateInfo::KeyKind> kind =
        LeafKeyKind(it->second.secret().tls_certificate().certificate_chain());
    if (!kind) continue;
    const bool rsa = *kind == CertificateInfo::KeyKind::kRsa;
    const bool ec = *kind == CertificateInfo::KeyKind::kEc;
    if ((rsa && !auth->rsa) || (ec && !auth->ecdsa)) {
      sink.Add(Index("tls.certificates", i),
               absl::StrCat("Secret \"", tls.certificates(i), "\" holds ",
                            rsa ? "an RSA" : "an ECDSA (or EdDSA)",
                            " key, and tls.cipher_suites has no TLS 1.2 suite for it (",
                            rsa ? "ECDHE-RSA-..." : "ECDHE-ECDSA-...",
                            "): TLS 1.2 clients would fail to connect"));
    }
  }
  CheckSecretReference(tls.client_ca(), "tls.client_ca", Secret::kTrustedCa, "trusted_ca", state,
                       sink);
}

// Likewise a cluster's tls.
void CheckUpstreamTlsReferences(const config::v1::UpstreamTls& tls, const ResourceMap& state,
                                ErrorSink& sink) {
  CheckSecretReference(tls.ca(), "tls.ca", Secret::kTrustedCa, "trusted_ca", state, sink);
  CheckSecretReference(tls.client_certificate(), "tls.client_certificate",
                       Secret::kTlsCertificate, "tls_certificate", state, sink);
}

bool IsWildcard(const std::string& canonical_address) {
  return canonical_address == "0.0.0.0" || canonical_address == "::";
}

// The clusters route `r` of virtual host `v` sends to exist.
void CheckClusterReferences(const Route& route, int v, int r, const ResourceMap& state,
                            ErrorSink& sink) {
  if (!route.has_route()) return;
  std::string f = absl::StrCat("virtual_hosts[", v, "].routes[", r, "].route");
  auto check = [&](const std::string& cluster, const std::string& field) {
    if (!cluster.empty() && !state.count({config::v1::CLUSTER, cluster})) {
      sink.Add(field, absl::StrCat("refers to Cluster \"", cluster, "\", which does not exist"));
    }
  };
  if (route.route().has_cluster()) check(route.route().cluster(), f + ".cluster");
  const auto& wc = route.route().weighted_clusters().clusters();
  for (int i = 0; i < wc.size(); ++i) {
    check(wc[i].name(), absl::StrCat(f, ".weighted_clusters.clusters[", i, "].name"));
  }
}

// The per-resource rules and the cluster references of the routes of
// `table` whose ids are `replaced` (ascending), named by their position.
void ValidateReplacedRoutes(const RouteTable& table, const std::vector<uint32_t>& replaced,
                            const ResourceMap& state, bool check_references,
                            ErrorSink& sink) {
  auto id = replaced.begin();
  uint32_t first = 0;  // id of the virtual host's first route
  for (int v = 0; v < table.virtual_hosts_size() && id != replaced.end(); ++v) {
    const auto& vhost = table.virtual_hosts(v);
    const uint32_t end = first + static_cast<uint32_t>(vhost.routes_size());
    for (; id != replaced.end() && *id < end; ++id) {
      const int r = static_cast<int>(*id - first);
      ValidateRoute(vhost.routes(r), Index(Join(Index("virtual_hosts", v), "routes"), r), sink);
      if (check_references) CheckClusterReferences(vhost.routes(r), v, r, state, sink);
    }
    first = end;
  }
  if (id != replaced.end()) {
    sink.Add("virtual_hosts", absl::StrCat("has ", first, " routes; route id ", *id,
                                           " was replaced"));
  }
}

}  // namespace

namespace {

// An error line as people and logs see it: at most kMaxErrorLineBytes of
// it (cut on a UTF-8 boundary, with the size said), and its control bytes
// (ESC, CR, LF, ...) written \xNN, so that a value a message quotes as it
// was sent can neither drive a terminal nor forge a line of the audit log.
// Before, a 25 MB value quoted in one error made a 131 MB audit line, and a
// 4 KB one an answer over gRPC's metadata limit that sluicectl could not
// read (field and reason lost).
constexpr size_t kMaxErrorLineBytes = 1024;

std::string PrintableLine(const std::string& line) {
  std::string out;
  out.reserve(std::min(line.size(), kMaxErrorLineBytes) + 32);
  size_t end = 0;  // the first byte not shown
  for (; end < line.size(); ++end) {
    const unsigned char c = static_cast<unsigned char>(line[end]);
    const bool control = c < 0x20 || c == 0x7f;
    // The bound is on what is written: escapes count as the 4 bytes they are.
    if (out.size() + (control ? 4 : 1) > kMaxErrorLineBytes) break;
    if (control) {
      absl::StrAppend(&out, "\\x", absl::Hex(c, absl::kZeroPad2));
    } else {
      out.push_back(static_cast<char>(c));
    }
  }
  if (end == line.size()) return out;
  // Not inside a UTF-8 sequence: back to before its first byte (bytes of
  // one are written as they are, one each).
  while (end > 0 && (static_cast<unsigned char>(line[end]) & 0xC0) == 0x80) {
    --end;
    out.pop_back();
  }
  absl::StrAppend(&out, "...(", line.size(), " bytes)");
  return out;
}

}  // namespace

std::string ValidationError::ToString() const {
  std::string out;
  if (resource.first != config::v1::RESOURCE_KIND_UNSPECIFIED) {
    absl::StrAppend(&out, Describe(resource), ": ");
  }
  if (!field.empty()) absl::StrAppend(&out, field, ": ");
  absl::StrAppend(&out, message);
  return PrintableLine(out);
}

void ValidateResource(const Resource& resource,
                      std::vector<ValidationError>* errors) {
  ErrorSink sink(IdOf(resource), errors);
  switch (resource.kind_case()) {
    case Resource::kListener:
      ValidateListener(resource.listener(), sink);
      break;
    case Resource::kRouteTable:
      ValidateRouteTable(resource.route_table(), sink);
      break;
    case Resource::kCluster:
      ValidateCluster(resource.cluster(), sink);
      break;
    case Resource::kSecret:
      ValidateSecret(resource.secret(), sink);
      break;
    case Resource::kConsumer:
      ValidateConsumer(resource.consumer(), sink);
      break;
    case Resource::KIND_NOT_SET:
      sink.Add("", "resource has no kind (expected listener, route_table, cluster, secret or "
                   "consumer)");
      break;
  }
}

void ValidateAtApplyTime(const Resource& resource, absl::Time now,
                         std::vector<ValidationError>* errors) {
  if (!resource.has_secret() || !resource.secret().has_tls_certificate()) return;
  CertificateInfo info;
  // A certificate that does not parse is ValidateResource's to report.
  if (!ParseTlsCertificate(resource.secret().tls_certificate(), &info, nullptr)) return;
  TlsMaterialError error;
  if (!CheckValidAt(info, now, &error)) {
    errors->push_back({IdOf(resource), error.field, error.message});
  }
  if (!CheckTlsCurve(info, &error)) {
    errors->push_back({IdOf(resource), error.field, error.message});
  }
}

namespace {

bool IsUnreservedPathByte(char c) {
  return absl::ascii_isalnum(c) || c == '-' || c == '.' || c == '_' || c == '~';
}

int HexValue(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  c = absl::ascii_tolower(c);
  return c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

// Why no normalised request path can equal (`prefix` false) or start with
// `value`, or "" when one can. See path_normalizer.h for what a request path
// looks like once normalised; this scan knows those rules, not that code.
// `ignore_case`: the route's case_sensitive is false, so a lower-case
// percent-encoding ("%2f") matches the normalised upper-case one.
std::string UnmatchablePathReason(const std::string& value, bool prefix, bool ignore_case) {
  // The canonical spelling, offered when only the spelling is wrong.
  std::string canonical;
  std::string spelling_problem;
  for (size_t i = 0; i < value.size(); ++i) {
    const unsigned char c = static_cast<unsigned char>(value[i]);
    // Built only for a message (once per byte was most of the check's time).
    auto at = [i] { return absl::StrCat(" at byte ", i + 1); };
    if (c == '?') {
      return absl::StrCat("has '?'", at(),
                          ": the query is not part of the path (match it with query_parameters)");
    }
    if (c == '#') {
      return absl::StrCat("has '#'", at(), ": a request whose path holds one is refused (400)");
    }
    if (c == ' ' || c >= 0x80) {
      if (spelling_problem.empty()) {
        spelling_problem = absl::StrCat(
            "has ", c == ' ' ? std::string("a space") : absl::StrFormat("the byte 0x%02X", c), at(),
            ", which requests send percent-encoded");
      }
      absl::StrAppend(&canonical, absl::StrFormat("%%%02X", c));
      continue;
    }
    if (c != '%') {
      canonical.push_back(static_cast<char>(c));
      continue;
    }
    const int high = i + 1 < value.size() ? HexValue(value[i + 1]) : -1;
    const int low = i + 2 < value.size() ? HexValue(value[i + 2]) : -1;
    if (high < 0 || low < 0) {
      // A prefix may end inside an encoding: "/a%2" starts "/a%2F".
      const bool cut_short = (i + 1 == value.size()) || (i + 2 == value.size() && high >= 0);
      if (prefix && cut_short) {
        const std::string rest = value.substr(i);
        const std::string upper = absl::AsciiStrToUpper(rest);
        if (upper != rest && !ignore_case && spelling_problem.empty()) {
          spelling_problem = absl::StrCat("ends with ", rest, ", which request paths carry as ",
                                          upper, "... once normalised");
        }
        canonical += upper;
        break;
      }
      return absl::StrCat("has '%'", at(),
                          " starting no percent-encoding: a request whose path holds one is "
                          "refused (400); write %25 for a '%'");
    }
    const char decoded = static_cast<char>(high * 16 + low);
    if (decoded == 0) {
      return absl::StrCat("has %00", at(), ": a request whose path holds it is refused (400)");
    }
    const std::string encoding = value.substr(i, 3);
    if (IsUnreservedPathByte(decoded)) {
      if (spelling_problem.empty()) {
        spelling_problem = absl::StrCat("has ", encoding, at(), ", which request paths carry as '",
                                        std::string(1, decoded), "' once normalised");
      }
      canonical.push_back(decoded);
    } else {
      const std::string upper = absl::AsciiStrToUpper(encoding);
      if (upper != encoding && !ignore_case && spelling_problem.empty()) {
        spelling_problem = absl::StrCat("has ", encoding, at(), ", which request paths carry as ",
                                        upper, " once normalised");
      }
      canonical += upper;
    }
    i += 2;
  }
  // Dot segments are gone from a normalised path: a whole "." or ".."
  // segment (also spelled %2E) cannot be matched; at the end of a prefix it
  // may be the start of a longer segment ("/..a").
  std::vector<absl::string_view> segments = absl::StrSplit(canonical, '/');
  for (size_t s = 1; s < segments.size(); ++s) {
    const bool last = s + 1 == segments.size();
    if ((segments[s] == "." || segments[s] == "..") && (!last || !prefix)) {
      return absl::StrCat("has the segment '", segments[s],
                          "', which request paths never hold once normalised (dot segments "
                          "are removed)");
    }
  }
  if (!spelling_problem.empty()) {
    return absl::StrCat(spelling_problem, ": write '", canonical, "'");
  }
  return "";
}

}  // namespace

namespace {

// One step down from a message: a field's name, and the index of the
// element when it is repeated (-1 when not).
using FieldStep = std::pair<absl::string_view, int>;

// The first field `message` (or a message in it, a policy's typed_config
// included) carries that its schema does not know: protobuf keeps such
// bytes, stores and pushes them, and no validation looks at them. Its number
// into *number and the fields leading to it into *trail, innermost first
// (paths are built only for what is found: building one for every message
// of a 10,000-route table was a sixth of an apply); false when there is
// none.
bool FindUnknownFieldIn(const google::protobuf::Message& message, std::vector<FieldStep>* trail,
                        int* number, const google::protobuf::Descriptor** owner,
                        const google::protobuf::Descriptor* skip) {
  const google::protobuf::Reflection* reflection = message.GetReflection();
  const google::protobuf::UnknownFieldSet& unknown = reflection->GetUnknownFields(message);
  if (!unknown.empty()) {
    *number = unknown.field(0).number();
    *owner = message.GetDescriptor();
    return true;
  }
  if (message.GetDescriptor() == config::v1::TypedExtensionConfig::descriptor()) {
    const auto& policy = static_cast<const config::v1::TypedExtensionConfig&>(message);
    // The Any wrapper itself, then what it carries.
    bool found = policy.has_typed_config() &&
                 FindUnknownFieldIn(policy.typed_config(), trail, number, owner, skip);
    if (!found) {
      if (const PolicyValidator* validator = FindPolicyValidator(policy.name())) {
        std::string error;
        auto config = UnpackPolicyConfig(*validator, policy.typed_config(), &error);
        found = config != nullptr && FindUnknownFieldIn(*config, trail, number, owner, skip);
      }
    }
    if (found) trail->emplace_back("typed_config", -1);
    return found;
  }
  std::vector<const google::protobuf::FieldDescriptor*> fields;
  reflection->ListFields(message, &fields);
  for (const google::protobuf::FieldDescriptor* field : fields) {
    if (field->cpp_type() != google::protobuf::FieldDescriptor::CPPTYPE_MESSAGE ||
        field->message_type() == skip) {
      continue;
    }
    if (field->is_repeated()) {
      for (int i = 0; i < reflection->FieldSize(message, field); ++i) {
        if (FindUnknownFieldIn(reflection->GetRepeatedMessage(message, field, i), trail, number,
                               owner, skip)) {
          trail->emplace_back(field->name(), i);
          return true;
        }
      }
    } else if (FindUnknownFieldIn(reflection->GetMessage(message, field), trail, number,
                                  owner, skip)) {
      trail->emplace_back(field->name(), -1);
      return true;
    }
  }
  return false;
}

}  // namespace

bool FindUnknownField(const google::protobuf::Message& message, const std::string& at,
                      std::string* path, int* number,
                      const google::protobuf::Descriptor** owner,
                      const google::protobuf::Descriptor* skip) {
  std::vector<FieldStep> trail;
  if (!FindUnknownFieldIn(message, &trail, number, owner, skip)) return false;
  *path = at;
  for (auto step = trail.rbegin(); step != trail.rend(); ++step) {
    *path = Join(*path, step->first);
    if (step->second >= 0) *path = Index(*path, step->second);
  }
  return true;
}

namespace {

// A route's rules that builds before this one did not check, and whose
// breaking loses nothing that worked (a stored or pushed route keeps being
// served as before): an empty regex (no request path is empty), a CONNECT
// method (answered 405 by the gateway) or one listed twice, a
// prefix_rewrite that requests would get 400 from or that puts bytes into
// the request target unencoded, a host_redirect that is no host, a body on
// a 204/205/304 direct response (dropped on the wire). Run at apply only.
// Apply-only (a stored config an older build took still loads): each of
// the route's regular expressions within api/regex_limit.h.
void RegexNewContent(const std::string& pattern, const std::string& field, ErrorSink& sink) {
  // Past the config's bound, compiling more only costs time.
  if (pattern.empty() || RegexBudgetSpent()) return;
  RE2::Options options;
  options.set_log_errors(false);
  const RE2 re(pattern, options);
  if (std::string why = re.ok() ? RegexProgramTooLarge(re) : std::string(); !why.empty()) {
    sink.Add(field, why);
  }
}

void RouteNewContent(const Route& route, const std::string& prefix, ErrorSink& sink) {
  const auto& match = route.match();
  const std::string m = Join(prefix, "match");
  if (match.path_specifier_case() == config::v1::RouteMatch::kRegex) {
    RegexNewContent(match.regex(), Join(m, "regex"), sink);
  }
  for (int i = 0; i < match.headers_size(); ++i) {
    RegexNewContent(match.headers(i).regex(), Join(Index(Join(m, "headers"), i), "regex"), sink);
  }
  for (int i = 0; i < match.query_parameters_size(); ++i) {
    RegexNewContent(match.query_parameters(i).regex(),
                    Join(Index(Join(m, "query_parameters"), i), "regex"), sink);
  }
  if (match.path_specifier_case() == config::v1::RouteMatch::kRegex && match.regex().empty()) {
    sink.Add(Join(m, "regex"), "is empty: it matches only an empty path, which no request has");
  }
  for (int i = 0; i < match.methods_size(); ++i) {
    const std::string& method = match.methods(i);
    if (method == "CONNECT") {
      sink.Add(Index(Join(m, "methods"), i),
               "CONNECT is answered 405 by the gateway (it opens no tunnels): a route cannot "
               "match it");
      continue;
    }
    for (int j = 0; j < i; ++j) {
      if (match.methods(j) == method) {
        sink.Add(Index(Join(m, "methods"), i), absl::StrCat("'", method, "' is listed twice"));
        break;
      }
    }
  }
  switch (route.action_case()) {
    case Route::kRoute:
      if (!route.route().prefix_rewrite().empty() &&
          match.path_specifier_case() == config::v1::RouteMatch::kPrefix) {
        if (std::string why = RewriteProblem(route.route().prefix_rewrite(), match.prefix());
            !why.empty()) {
          sink.Add(Join(Join(prefix, "route"), "prefix_rewrite"), why);
        }
      }
      break;
    case Route::kRedirect:
      if (!route.redirect().prefix_rewrite().empty() &&
          match.path_specifier_case() == config::v1::RouteMatch::kPrefix) {
        if (std::string why = RewriteProblem(route.redirect().prefix_rewrite(), match.prefix());
            !why.empty()) {
          sink.Add(Join(Join(prefix, "redirect"), "prefix_rewrite"), why);
        }
      }
      if (!route.redirect().host_redirect().empty()) {
        if (std::string why = RedirectHostProblem(route.redirect().host_redirect());
            !why.empty()) {
          sink.Add(Join(Join(prefix, "redirect"), "host_redirect"), why);
        }
      }
      break;
    case Route::kDirectResponse: {
      const auto& d = route.direct_response();
      if ((d.status() == 204 || d.status() == 205 || d.status() == 304) && !d.body().empty()) {
        sink.Add(Join(Join(prefix, "direct_response"), "body"),
                 absl::StrCat("a ", d.status(),
                              " answer has no body (RFC 9110 15.3.5, 15.3.6, 15.4.5); leave it "
                              "out"));
      }
      break;
    }
    default:
      break;
  }
}

// Each policy's own apply-only rules (PolicyValidator::ValidateNew).
// ValidateResource reports an unknown policy or a config that does not
// unpack.
void PoliciesNewContent(
    const google::protobuf::RepeatedPtrField<config::v1::TypedExtensionConfig>& policies,
    const std::string& prefix, ErrorSink& sink) {
  for (int i = 0; i < policies.size(); ++i) {
    const PolicyValidator* validator = FindPolicyValidator(policies[i].name());
    if (validator == nullptr) continue;
    std::string error;
    std::unique_ptr<google::protobuf::Message> config =
        UnpackPolicyConfig(*validator, policies[i].typed_config(), &error);
    if (config == nullptr) continue;
    std::vector<PolicyConfigError> errors;
    validator->ValidateNew(*config, &errors);
    for (const PolicyConfigError& e : errors) {
      sink.Add(Join(Join(Index(prefix, i), "typed_config"), e.field), e.message);
    }
  }
}

// A route's policy that reads a request field another of its policies
// takes off first (a rate-limit keyed on the `apikey` key-auth removes)
// finds it on no request: every caller would be one (rate-limit's
// fallback bucket), one spending every other's budget. The route's
// policies are its own and its virtual host's of other names.
void FieldsReadAfterRemoval(const config::v1::VirtualHost& vhost, int v, ErrorSink& sink) {
  // What each policy removes and reads, worked out once per policy.
  struct Fields {
    std::string name;  // the policy's
    std::string at;
    std::vector<std::string> removed;
    std::vector<std::pair<std::string, std::string>> read;  // (config path, field)
  };
  auto fields_of = [](const config::v1::TypedExtensionConfig& policy, std::string at) {
    Fields f{policy.name(), std::move(at), {}, {}};
    const PolicyValidator* validator = FindPolicyValidator(policy.name());
    if (validator == nullptr) return f;
    std::string error;
    auto config = UnpackPolicyConfig(*validator, policy.typed_config(), &error);
    if (config == nullptr) return f;
    validator->RemovedRequestFields(*config, &f.removed);
    validator->ReadRequestFields(*config, &f.read);
    return f;
  };
  const std::string vhost_at = Join(Index("virtual_hosts", v), "policies");
  std::vector<Fields> shared;
  for (int p = 0; p < vhost.policies_size(); ++p) {
    shared.push_back(fields_of(vhost.policies(p), Index(vhost_at, p)));
  }
  std::set<std::string> reported;
  for (int r = 0; r < vhost.routes_size(); ++r) {
    const auto& route = vhost.routes(r);
    const std::string route_at = Join(Index(Join(Index("virtual_hosts", v), "routes"), r),
                                      "policies");
    std::vector<Fields> own;
    for (int p = 0; p < route.policies_size(); ++p) {
      own.push_back(fields_of(route.policies(p), Index(route_at, p)));
    }
    // The route's policies: its own, and its virtual host's of other names.
    std::vector<const Fields*> chain;
    for (const Fields& f : own) chain.push_back(&f);
    for (const Fields& f : shared) {
      bool replaced = false;
      for (const Fields& o : own) replaced = replaced || o.name == f.name;
      if (!replaced) chain.push_back(&f);
    }
    std::map<std::string, std::string> removed;  // field -> the policy taking it off
    for (const Fields* f : chain) {
      for (const std::string& field : f->removed) removed.emplace(field, f->name);
    }
    if (removed.empty()) continue;
    for (const Fields* f : chain) {
      for (const auto& [path, field] : f->read) {
        auto it = removed.find(field);
        if (it == removed.end()) continue;
        const std::string at = Join(Join(f->at, "typed_config"), path);
        if (!reported.insert(at).second) continue;
        sink.Add(at, absl::StrCat("'", field, "' is the credential ", it->second,
                                  " takes off the request before ", f->name,
                                  " reads it: no request would have it, so all would count as "
                                  "one caller; key by CONSUMER, the caller ", it->second,
                                  " identifies"));
      }
    }
  }
}

}  // namespace

void ValidateNewContent(const Resource& resource, std::vector<ValidationError>* errors) {
  ErrorSink sink(IdOf(resource), errors);
  {
    // The kind's message itself (the fields below `spec`), as YAML paths
    // name them.
    const google::protobuf::Reflection* reflection = resource.GetReflection();
    std::vector<const google::protobuf::FieldDescriptor*> fields;
    reflection->ListFields(resource, &fields);
    std::string path;
    int number = 0;
    const google::protobuf::Descriptor* owner = resource.GetDescriptor();
    bool found = !reflection->GetUnknownFields(resource).empty();
    if (found) number = reflection->GetUnknownFields(resource).field(0).number();
    for (size_t f = 0; f < fields.size() && !found; ++f) {
      if (fields[f]->cpp_type() == google::protobuf::FieldDescriptor::CPPTYPE_MESSAGE &&
          !fields[f]->is_repeated()) {
        found = FindUnknownField(reflection->GetMessage(resource, fields[f]), "", &path, &number,
                                 &owner);
      }
    }
    // A known number lands among the unknown fields when it came with
    // another wire type than its field's.
    const google::protobuf::FieldDescriptor* known =
        found ? owner->FindFieldByNumber(number) : nullptr;
    if (known != nullptr) {
      sink.Add(Join(path, known->name()),
               absl::StrCat("field number ", number, " came with the wrong wire type (it is a ",
                            known->is_repeated() ? "repeated " : "", known->type_name(),
                            " field); the request is malformed"));
    } else if (found) {
      sink.Add(path, absl::StrCat("carries field number ", number,
                                  ", which this sluice-control does not know (a client built "
                                  "from a newer schema?); it would be stored and pushed "
                                  "unchecked"));
    }
  }
  // A name sluicectl would read as a flag (`get cluster -x`), or that reads
  // as a path's own segment: refused when new (CheckName's characters allow
  // them; a stored one keeps working).
  if (const std::string name = IdOf(resource).second; absl::StartsWith(name, "-")) {
    sink.Add("name", absl::StrCat("'", Shown(name), "' starts with '-', which sluicectl reads as "
                                  "a flag (get and delete take it only after --); start it "
                                  "with a letter, digit, '_' or '.'"));
  } else if (name == "." || name == "..") {
    sink.Add("name", absl::StrCat("'", name, "' is a path segment's own name (this directory, "
                                  "its parent), which tools would read as such; choose "
                                  "another"));
  }
  if (resource.has_cluster()) {
    const auto& cluster = resource.cluster();
    // An IPv4-mapped IPv6 address is the IPv4 endpoint: listed twice.
    std::map<std::pair<std::string, uint32_t>, int> seen;
    for (int i = 0; i < cluster.endpoints_size(); ++i) {
      std::string key = CanonicalAddress(cluster.endpoints(i).address());
      const bool mapped = absl::StartsWith(key, "::ffff:") && key.find('.') != std::string::npos;
      if (mapped) key = key.substr(7);
      auto [it, inserted] = seen.emplace(std::make_pair(key, cluster.endpoints(i).port()), i);
      if (!inserted && mapped != absl::StartsWith(CanonicalAddress(cluster.endpoints(it->second).address()), "::ffff:")) {
        sink.Add(Index("endpoints", i),
                 absl::StrCat(HostPort(cluster.endpoints(i).address(), cluster.endpoints(i).port()),
                              " is the same endpoint as endpoints[", it->second, "]"));
      }
    }
    // `source_ip: false` or `path: false` names no key: requests spread at
    // random (no affinity, and no warning).
    if (cluster.hash_policy().key_case() == config::v1::HashPolicy::kSourceIp &&
        !cluster.hash_policy().source_ip()) {
      sink.Add("hash_policy.source_ip", "must be true (false names no key)");
    }
    if (cluster.hash_policy().key_case() == config::v1::HashPolicy::kPath &&
        !cluster.hash_policy().path()) {
      sink.Add("hash_policy.path", "must be true (false names no key)");
    }
    if (cluster.has_health_check() && cluster.health_check().has_http()) {
      const auto& http = cluster.health_check().http();
      // A space or control byte: ValidateResource says so (once is enough).
      auto wire_safe = [](const std::string& v) {
        return std::none_of(v.begin(), v.end(), [](char c) {
          return static_cast<unsigned char>(c) <= 0x20 || c == 0x7f;
        });
      };
      if (absl::StartsWith(http.path(), "/") && wire_safe(http.path())) {
        if (std::string why = TargetProblem(http.path()); !why.empty()) {
          sink.Add("health_check.http.path", why);
        }
      }
      if (!http.host().empty() && wire_safe(http.host())) {
        if (std::string why = RedirectHostProblem(http.host()); !why.empty()) {
          sink.Add("health_check.http.host", why);
        }
      }
    }
    // The unspecified address names no endpoint: a connect to it reaches
    // this host (Linux), which is seldom what was meant. Accepted before.
    for (int i = 0; i < cluster.endpoints_size(); ++i) {
      const std::string key = CanonicalAddress(cluster.endpoints(i).address());
      if (key == "0.0.0.0" || key == "::" || key == "::ffff:0.0.0.0") {
        sink.Add(Join(Index("endpoints", i), "address"),
                 absl::StrCat("'", cluster.endpoints(i).address(),
                              "' is the unspecified address, no endpoint (a connect to it "
                              "reaches this host); give the endpoint's own address, "
                              "127.0.0.1 or ::1 for this host"));
      }
    }
    // Nor are those DNS servers to ask (mDNS's 224.0.0.251 answers no
    // unicast query). Accepted before.
    for (int i = 0; i < cluster.dns_resolvers_size(); ++i) {
      const std::string& r = cluster.dns_resolvers(i);
      if (!IsResolverAddress(r)) continue;  // said by ValidateResource
      const std::string host = absl::StartsWith(r, "[") ? r.substr(1, r.find(']') - 1)
                               : IsIpLiteral(r)         ? r
                                                        : r.substr(0, r.rfind(':'));
      if (std::string kind = UnconnectableAddress(CanonicalAddress(host)); !kind.empty()) {
        sink.Add(Index("dns_resolvers", i),
                 absl::StrCat("'", Shown(r), "' is ", kind, ", no DNS server to ask"));
      }
    }
  }
  // OpenSSL also reads `@SECLEVEL=` inside an element (`X@SECLEVEL=0`,
  // which lowered the level the start-of-element rule guards), and a
  // `SUITEB...` keyword switches the whole context into Suite B mode
  // (curves and signature algorithms for TLS 1.3 too; `SUITEB192` with a
  // P-256 certificate failed every handshake).
  if (resource.has_listener() && !resource.listener().tls().cipher_suites().empty()) {
    for (absl::string_view element :
         absl::StrSplit(resource.listener().tls().cipher_suites(), absl::ByAnyChar(": ,"),
                        absl::SkipEmpty())) {
      const std::string upper = absl::AsciiStrToUpper(element);
      if (!absl::StartsWith(upper, "@SECLEVEL") && absl::StrContains(upper, "@SECLEVEL")) {
        sink.Add("tls.cipher_suites",
                 absl::StrCat("'", element, "' changes OpenSSL's security level, which a "
                                            "listener does not let a list lower"));
      } else if (absl::StrContains(upper, "SUITEB")) {
        sink.Add("tls.cipher_suites",
                 absl::StrCat("'", element, "' turns on OpenSSL's Suite B mode, which also "
                                            "restricts TLS 1.3 curves and signatures; list the "
                                            "suites themselves"));
      }
    }
  }
  // A line break in a log file's name broke the proxy's own log lines about
  // it (a name stored before is kept).
  if (resource.has_listener()) {
    const std::string& path = resource.listener().access_log().path();
    auto control = std::find_if(path.begin(), path.end(),
                                [](unsigned char c) { return c < 0x20 || c == 0x7f; });
    if (control != path.end() && path.find('\0') == std::string::npos) {
      sink.Add("access_log.path",
               absl::StrFormat("'%s' has a control character (byte %d is 0x%02x): a file "
                               "name may not",
                               absl::CHexEscape(path),
                               static_cast<int>(control - path.begin()) + 1,
                               static_cast<unsigned char>(*control)));
    } else if (std::string why = InternalAccessLogPath(path); !why.empty()) {
      sink.Add("access_log.path", why);
    }
  }
  // A 16384-bit RSA key is about 12.5 KiB of PEM: as the chain, at most
  // 64 KiB (a 20 MB "key" of padding was stored and pushed before).
  if (resource.has_secret() &&
      resource.secret().tls_certificate().private_key().size() > kMaxCertificateChainBytes) {
    sink.Add("tls_certificate.private_key",
             absl::StrCat("is ", resource.secret().tls_certificate().private_key().size(),
                          " bytes, at most ", kMaxCertificateChainBytes));
  }
  if (!resource.has_route_table()) return;
  const RouteTable& table = resource.route_table();
  for (int v = 0; v < table.virtual_hosts_size(); ++v) {
    const auto& vhost = table.virtual_hosts(v);
    PoliciesNewContent(vhost.policies(), Join(Index("virtual_hosts", v), "policies"), sink);
    FieldsReadAfterRemoval(vhost, v, sink);
    for (int d = 0; d < vhost.domains_size(); ++d) {
      if (std::string why = DomainLabelsProblem(vhost.domains(d)); !why.empty()) {
        sink.Add(Index(Join(Index("virtual_hosts", v), "domains"), d), why);
      }
    }
    const std::string routes_at = Join(Index("virtual_hosts", v), "routes");
    for (int r = 0; r < vhost.routes_size(); ++r) {
      const std::string route_at = Index(routes_at, r);
      RouteNewContent(vhost.routes(r), route_at, sink);
      if (vhost.routes(r).policies_size() > 0) {
        PoliciesNewContent(vhost.routes(r).policies(), Join(route_at, "policies"), sink);
      }
      const auto& match = vhost.routes(r).match();
      const bool prefix = match.path_specifier_case() == config::v1::RouteMatch::kPrefix;
      if (!prefix && match.path_specifier_case() != config::v1::RouteMatch::kPath) continue;
      const std::string& value = prefix ? match.prefix() : match.path();
      // ValidateResource reports a value without '/' or with a control byte.
      if (!absl::StartsWith(value, "/")) continue;
      if (std::string why = UnmatchablePathReason(value, prefix, MatchIgnoresCase(match));
          !why.empty()) {
        sink.Add(Join(route_at, prefix ? "match.prefix" : "match.path"),
                 absl::StrCat("'", Shown(value), "' ", why,
                              "; no request would match"));
      }
    }
  }
}


bool MatchIgnoresCase(const config::v1::RouteMatch& match) {
  return match.has_case_sensitive() && !match.case_sensitive().value();
}

std::vector<ValidationError> ValidateState(const ResourceMap& state,
                                           const std::set<ResourceId>* changed,
                                           const std::set<ResourceId>* new_ids) {
  std::vector<ValidationError> errors;
  std::map<uint32_t, std::vector<const Listener*>> by_port;
  std::vector<const Consumer*> consumers;
  ConsumerCredentialIndex credentials;
  for (const auto& [id, resource] : state) {
    if (changed == nullptr || changed->count(id)) ValidateResource(resource, &errors);
    if (IdOf(resource) != id) {
      errors.push_back({id, "name", absl::StrCat("stored under '", id.second,
                                                 "' but named '", NameOf(resource), "'")});
    }
    ErrorSink sink(id, &errors);
    if (resource.has_listener()) {
      const Listener& l = resource.listener();
      if (!l.route_table().empty() &&
          !state.count({config::v1::ROUTE_TABLE, l.route_table()})) {
        sink.Add("route_table", absl::StrCat("refers to RouteTable \"",
                                             l.route_table(), "\", which does not exist"));
      }
      if (l.has_tls()) CheckTlsReferences(l.tls(), state, sink);
      by_port[l.port()].push_back(&l);
    } else if (resource.has_route_table()) {
      const RouteTable& t = resource.route_table();
      for (int v = 0; v < t.virtual_hosts_size(); ++v) {
        for (int r = 0; r < t.virtual_hosts(v).routes_size(); ++r) {
          CheckClusterReferences(t.virtual_hosts(v).routes(r), v, r, state, sink);
        }
      }
    } else if (resource.has_cluster()) {
      if (resource.cluster().has_tls()) {
        CheckUpstreamTlsReferences(resource.cluster().tls(), state, sink);
      }
    } else if (resource.has_consumer()) {
      consumers.push_back(&resource.consumer());
    }
  }
  // A conflict between a resource of the change and one it leaves as it was
  // is the change's: those it leaves go first, and the later one is told.
  const std::set<ResourceId>* applied = new_ids != nullptr ? new_ids : changed;
  auto unchanged_first = [&](auto& list, config::v1::ResourceKind kind) {
    if (applied == nullptr) return;
    std::stable_partition(list.begin(), list.end(), [&](const auto* r) {
      return applied->count(ResourceId{kind, r->name()}) == 0;
    });
  };
  unchanged_first(consumers, config::v1::CONSUMER);
  for (const Consumer* consumer : consumers) {
    ErrorSink sink({config::v1::CONSUMER, consumer->name()}, &errors);
    credentials.Add(*consumer, sink);
  }
  for (auto& [port, listeners] : by_port) {
    unchanged_first(listeners, config::v1::LISTENER);
    for (size_t i = 0; i < listeners.size(); ++i) {
      for (size_t j = i + 1; j < listeners.size(); ++j) {
        const Listener& a = *listeners[i];
        const Listener& b = *listeners[j];
        if (!MayShareProxy(a, b)) continue;  // never bound by the same proxy
        const std::string a_address = CanonicalAddress(a.address());
        const std::string b_address = CanonicalAddress(b.address());
        if (a_address == b_address || IsWildcard(a_address) || IsWildcard(b_address)) {
          errors.push_back(
              {{config::v1::LISTENER, b.name()}, "port",
               absl::StrCat(HostPort(b.address(), port), " conflicts with Listener \"",
                            a.name(), "\" on ", HostPort(a.address(), port))});
        }
      }
    }
  }
  return errors;
}

bool ListenerPlacedOn(const Listener& listener, absl::string_view group) {
  if (listener.node_groups().empty()) return true;
  for (const std::string& g : listener.node_groups()) {
    if (g == group) return true;
  }
  return false;
}

absl::Status ToStatus(const std::vector<ValidationError>& errors) {
  if (errors.empty()) return absl::OkStatus();
  // At most 20 lines and about 6 KiB: the answer travels in a gRPC status,
  // which a client refuses past its 8 KiB metadata limit.
  constexpr size_t kMaxShown = 20;
  constexpr size_t kMaxShownBytes = 6 * 1024;
  std::vector<std::string> lines;
  size_t bytes = 0;
  size_t shown = 0;
  for (; shown < errors.size() && shown < kMaxShown; ++shown) {
    std::string line = errors[shown].ToString();
    if (shown > 0 && bytes + line.size() > kMaxShownBytes) break;
    bytes += line.size() + 1;
    lines.push_back(std::move(line));
  }
  if (errors.size() > shown) {
    lines.push_back(absl::StrCat("... and ", errors.size() - shown, " more errors"));
  }
  return absl::InvalidArgumentError(absl::StrJoin(lines, "\n"));
}

absl::Status CheckState(const ResourceMap& state, const std::set<ResourceId>* changed) {
  return ToStatus(ValidateState(state, changed));
}

std::vector<ValidationError> ValidateChange(const ResourceMap& state, const ConfigChange& change) {
  const bool only_patched = change.changed.empty() && !change.removed;
  std::vector<ValidationError> errors;
  if (!only_patched) errors = ValidateState(state, &change.changed);
  for (const auto& [name, replaced] : change.patched) {
    const ResourceId id{config::v1::ROUTE_TABLE, name};
    auto it = state.find(id);
    if (it == state.end() || !it->second.has_route_table()) {
      errors.push_back({id, "", "was patched but is not in the config"});
      continue;
    }
    ErrorSink sink(id, &errors);
    // Without only_patched, ValidateState checked every route's references.
    ValidateReplacedRoutes(it->second.route_table(), replaced, state, only_patched, sink);
    if (change.spliced.count(name)) {
      const RouteTable& table = it->second.route_table();
      for (int v = 0; v < table.virtual_hosts_size(); ++v) {
        if (table.virtual_hosts(v).routes_size() == 0) {
          sink.Add(Join(Index("virtual_hosts", v), "routes"), "needs at least one route");
        }
      }
    }
  }
  return errors;
}

absl::Status CheckChange(const ResourceMap& state, const ConfigChange& change) {
  return ToStatus(ValidateChange(state, change));
}

void CheckConsumerReferences(const ResourceMap& next, const ResourceMap& base,
                             std::vector<ValidationError>* errors) {
  std::set<std::string> removed;  // Consumers the change deletes
  for (const auto& [id, resource] : base) {
    if (id.first == config::v1::CONSUMER && next.count(id) == 0) removed.insert(id.second);
  }
  for (const auto& [id, resource] : next) {
    if (!resource.has_route_table()) continue;
    auto stored = base.find(id);
    const bool changed =
        stored == base.end() ||
        !google::protobuf::util::MessageDifferencer::Equals(stored->second, resource);
    if (!changed && removed.empty()) continue;
    ErrorSink sink(id, errors);
    auto check = [&](const google::protobuf::RepeatedPtrField<config::v1::TypedExtensionConfig>& list,
                     const std::string& at) {
      for (int p = 0; p < list.size(); ++p) {
        const PolicyValidator* validator = FindPolicyValidator(list[p].name());
        if (validator == nullptr) continue;
        std::string error;
        auto config = UnpackPolicyConfig(*validator, list[p].typed_config(), &error);
        if (config == nullptr) continue;  // ValidateResource says why
        std::vector<std::pair<std::string, std::string>> refs;
        validator->ConsumerReferences(*config, &refs);
        for (const auto& [field, name] : refs) {
          if (next.count({config::v1::CONSUMER, name}) > 0) continue;
          if (!changed && removed.count(name) == 0) continue;  // not this change's doing
          sink.Add(absl::StrCat(Index(at, p), ".typed_config.", field),
                   absl::StrCat("refers to Consumer \"", name, "\", which does not exist"));
        }
      }
    };
    const RouteTable& table = resource.route_table();
    for (int v = 0; v < table.virtual_hosts_size(); ++v) {
      const std::string vhost = Index("virtual_hosts", v);
      check(table.virtual_hosts(v).policies(), Join(vhost, "policies"));
      for (int r = 0; r < table.virtual_hosts(v).routes_size(); ++r) {
        check(table.virtual_hosts(v).routes(r).policies(),
              Join(Index(Join(vhost, "routes"), r), "policies"));
      }
    }
  }
}

namespace {

// Routes of `vhost` no request reaches: an earlier route without header or
// query conditions, with no methods or the same ones, matches every path
// the later one would (routes are tried in order): a prefix that begins
// the later one's prefix or path (`/` begins a regex's paths too), the same
// path, the same regex. The prefixes go in a trie, so a route costs its
// path's length, however long the path or the table.
//
// `*shadowed` counts the routes found; past kMaxShadowedRouteNotes they are
// counted only (a generated table could otherwise print thousands).
constexpr int kMaxShadowedRouteNotes = 20;

class PrefixTrie {
 public:
  // Marks `prefix` as matched by route `index`, unless an earlier one is.
  void Insert(std::string_view prefix, int index) {
    int node = 0;
    for (char c : prefix) {
      int child = Child(node, c);
      if (child < 0) {
        nodes_.push_back(Node{});
        child = static_cast<int>(nodes_.size()) - 1;
        nodes_[node].children.push_back({c, child});
      }
      node = child;
    }
    if (nodes_[node].route < 0) nodes_[node].route = index;
  }
  // The first route whose prefix begins `path` (its length in *length),
  // or -1.
  int Covering(std::string_view path, size_t* length) const {
    int node = 0;
    int found = -1;
    for (size_t i = 0; i < path.size(); ++i) {
      node = Child(node, path[i]);
      if (node < 0) break;
      const int route = nodes_[node].route;
      if (route >= 0 && (found < 0 || route < found)) {
        found = route;
        *length = i + 1;
      }
    }
    return found;
  }

 private:
  struct Node {
    std::vector<std::pair<char, int>> children;
    int route = -1;
  };
  int Child(int node, char c) const {
    for (const auto& [byte, child] : nodes_[node].children) {
      if (byte == c) return child;
    }
    return -1;
  }
  std::vector<Node> nodes_ = std::vector<Node>(1);
};

void AddShadowedRouteNotes(const std::string& table, int v,
                           const config::v1::VirtualHost& vhost,
                           std::vector<std::string>* notes, int* shadowed) {
  // By methods (sorted, comma-joined): the routes without header or query
  // conditions, by prefix, path and regex (the first of each).
  std::map<std::string, PrefixTrie, std::less<>> prefixes;
  std::map<std::pair<std::string, std::string>, int, std::less<>> paths, regexes;
  auto first = [](const auto& map, const std::string& methods, const std::string& value) {
    auto it = map.find(std::make_pair(methods, value));
    return it == map.end() ? -1 : it->second;
  };
  for (int r = 0; r < vhost.routes_size(); ++r) {
    const config::v1::RouteMatch& match = vhost.routes(r).match();
    // A route ignoring case takes requests the ones before it may not, and
    // the ones after it take others: neither is noted nor noted against.
    if (MatchIgnoresCase(match)) continue;
    std::vector<std::string> sorted(match.methods().begin(), match.methods().end());
    std::sort(sorted.begin(), sorted.end());
    const std::string methods = absl::StrJoin(sorted, ",");
    const std::string& value = match.has_regex() ? match.regex()
                               : match.has_path() ? match.path() : match.prefix();
    int by = -1;
    std::string how;
    for (const std::string& m : {std::string(), methods}) {
      auto trie = prefixes.find(m);
      size_t length = 0;
      if (match.has_regex()) {
        if (int q = trie == prefixes.end() ? -1 : trie->second.Covering("/", &length); q >= 0) {
          by = q;
          how = "prefix \"/\"";
        } else if (int same = first(regexes, m, value); same >= 0) {
          by = same;
          how = "the same regex";
        }
      } else {
        if (int q = trie == prefixes.end() ? -1 : trie->second.Covering(value, &length); q >= 0) {
          by = q;
          // A long prefix is cut in the note (the config names it whole).
          how = absl::StrCat("prefix \"",
                             length > 64 ? absl::StrCat(value.substr(0, 60), "...")
                                         : value.substr(0, length),
                             "\"");
        } else if (int same = match.has_path() ? first(paths, m, value) : -1; same >= 0) {
          by = same;
          how = "the same path";
        }
      }
      if (by >= 0 || methods.empty()) break;
    }
    if (by >= 0 && ++*shadowed <= kMaxShadowedRouteNotes) {
      const std::string vh = Index("virtual_hosts", v);
      notes->push_back(absl::StrCat(
          "RouteTable \"", table, "\": ", Join(vh, Index("routes", r)),
          ": never matched: ", Join(vh, Index("routes", by)), " (", how,
          vhost.routes(by).match().methods_size() > 0 ? ", the same methods" : "",
          ") comes first and takes every request this one would (routes are tried in "
          "order: put the more specific one first)"));
    }
    if (match.headers_size() > 0 || match.query_parameters_size() > 0) continue;
    if (match.has_regex()) {
      regexes.emplace(std::make_pair(methods, value), r);
    } else if (match.has_path()) {
      paths.emplace(std::make_pair(methods, value), r);
    } else {
      prefixes[methods].Insert(value, r);
    }
  }
}

}  // namespace

std::vector<std::string> ConfigNotes(const ResourceMap& next, const StateDiff& diff) {
  std::set<ResourceId> touched(diff.added.begin(), diff.added.end());
  touched.insert(diff.changed.begin(), diff.changed.end());
  auto changed = [&](const ResourceId& id) { return touched.count(id) > 0; };
  auto http2 = [&](const std::string& cluster) -> const Resource* {
    auto it = next.find({config::v1::CLUSTER, cluster});
    if (it == next.end() || it->second.cluster().protocol() != config::v1::Cluster::HTTP2) {
      return nullptr;
    }
    return &it->second;
  };
  std::vector<std::string> notes;
  int shadowed = 0;
  for (const auto& [id, resource] : next) {
    // Allowed (tests, migrations), but nothing on the path is checked.
    if (resource.has_cluster() && resource.cluster().tls().insecure_skip_verify() &&
        changed(id)) {
      notes.push_back(absl::StrCat(
          "Cluster \"", id.second,
          "\": tls.insecure_skip_verify: the upstream's certificate is not verified: anyone on "
          "the path can pose as the upstream (set tls.ca and tls.sni to verify it)"));
    }
    // Taken (a bundle may carry old certificates), but a chain that leads
    // only to one of these is refused: every client, or every upstream,
    // behind an expired CA is locked out without a word at apply.
    if (resource.has_secret() && resource.secret().has_trusted_ca() && changed(id)) {
      const std::vector<std::string> stale =
          TrustedCaNotes(resource.secret().trusted_ca(), absl::Now());
      constexpr size_t kMaxNamed = 5;  // a system bundle may carry many
      for (size_t i = 0; i < stale.size() && i < kMaxNamed; ++i) {
        notes.push_back(absl::StrCat(
            "Secret \"", id.second, "\": trusted_ca.ca_certificates: ", stale[i],
            ": a certificate whose chain leads only to it is refused (a client's, where a "
            "listener's tls.client_ca names this Secret; an upstream's, where a cluster's tls.ca "
            "does)"));
      }
      if (stale.size() > kMaxNamed) {
        notes.push_back(absl::StrCat("Secret \"", id.second, "\": trusted_ca.ca_certificates: and ",
                                     stale.size() - kMaxNamed,
                                     " more certificates not valid now (the first ", kMaxNamed,
                                     " are named above)"));
      }
    }
    if (!resource.has_route_table()) continue;
    const bool table_changed = changed(id);
    const RouteTable& table = resource.route_table();
    for (int v = 0; v < table.virtual_hosts_size(); ++v) {
      const auto& vhost = table.virtual_hosts(v);
      if (table_changed) AddShadowedRouteNotes(id.second, v, vhost, &notes, &shadowed);
      for (int r = 0; r < vhost.routes_size(); ++r) {
        const auto& route = vhost.routes(r);
        if (!route.has_route() || !route.route().websocket()) continue;
        std::vector<std::string> clusters;
        if (route.route().has_weighted_clusters()) {
          for (const auto& w : route.route().weighted_clusters().clusters()) {
            clusters.push_back(w.name());
          }
        } else {
          clusters.push_back(route.route().cluster());
        }
        for (const std::string& name : clusters) {
          const Resource* cluster = http2(name);
          if (cluster == nullptr) continue;
          if (!table_changed && !changed({config::v1::CLUSTER, name})) continue;
          notes.push_back(absl::StrCat(
              "RouteTable \"", id.second, "\": ",
              Join(Index("virtual_hosts", v), Join(Index("routes", r), "route.websocket")),
              ": Cluster \"", name,
              "\" speaks HTTP2: its WebSockets go upstream as extended CONNECT (RFC 8441), "
              "which its endpoints must allow (SETTINGS_ENABLE_CONNECT_PROTOCOL) or each is "
              "answered 502 (an HTTP1 or AUTO cluster takes them as HTTP/1.1 upgrades)"));
        }
      }
    }
  }
  if (shadowed > kMaxShadowedRouteNotes) {
    notes.push_back(absl::StrCat("and ", shadowed - kMaxShadowedRouteNotes,
                                 " more routes never matched (the first ",
                                 kMaxShadowedRouteNotes, " are named above)"));
  }
  return notes;
}

int64_t RegexProgramSizeOf(const Resource& resource) {
  RegexProgramCount count;
  std::vector<ValidationError> ignored;
  ValidateNewContent(resource, &ignored);
  return count.total();
}

std::string RegexBudgetError(int64_t total,
                             const std::vector<std::pair<ResourceId, int64_t>>& biggest) {
  std::vector<std::pair<ResourceId, int64_t>> sorted = biggest;
  std::sort(sorted.begin(), sorted.end(),
            [](const auto& a, const auto& b) { return a.second > b.second; });
  std::string most;
  for (size_t i = 0; i < sorted.size() && i < 3; ++i) {
    if (sorted[i].second == 0) break;
    absl::StrAppend(&most, most.empty() ? "" : ", ", Describe(sorted[i].first), " ",
                    sorted[i].second);
  }
  return absl::StrCat(
      "the config's regular expressions would compile to at least ", total,
      " RE2 instructions in all, over the limit of ", kMaxConfigRegexProgramSize,
      " for a whole config (every proxy holds each one compiled; counted repetitions such as "
      ".{900} or \\pL{1,300} grow them fast: use +, * or smaller counts, and fewer patterns)",
      most.empty() ? "" : absl::StrCat("; the most: ", most));
}

bool IsEndpointHostName(const std::string& address) {
  return !address.empty() && !IsIpLiteral(address);
}

std::string CanonicalHostName(const std::string& name) {
  std::string out = absl::AsciiStrToLower(name);
  if (absl::EndsWith(out, ".")) out.pop_back();
  return out;
}

}  // namespace sluice::api
