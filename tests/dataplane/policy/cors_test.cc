// The `cors` policy: its config rules and its filter, through the
// registries the binaries use: preflights answered (or not) at the gateway,
// the CORS fields on actual responses, Vary merging.
#include <gtest/gtest.h>

#include "absl/strings/match.h"
#include "api/policy_registry.h"
#include "dataplane/http/filter.h"
#include "dataplane/policy/cors/cors_config.pb.h"
#include "dataplane/policy/cors/origin_pattern.h"
#include "dataplane/policy/registry.h"
#include "tests/dataplane/policy/fake_callbacks.h"

namespace sluice::policy::cors {
namespace {

using testing::FakeCallbacks;

std::vector<api::PolicyConfigError> Errors(const v1::CorsConfig& config) {
  std::vector<api::PolicyConfigError> errors;
  api::FindPolicyValidator("cors")->Validate(config, &errors);
  return errors;
}

std::shared_ptr<const http::FilterFactory> Compile(const v1::CorsConfig& config) {
  auto errors = Errors(config);
  EXPECT_TRUE(errors.empty()) << errors[0].field << ": " << errors[0].message;
  auto compiled = FindPolicyFactory("cors")->Compile(config);
  EXPECT_TRUE(compiled.ok()) << compiled.status();
  return *compiled;
}

v1::CorsConfig Origins(std::initializer_list<const char*> origins) {
  v1::CorsConfig config;
  for (const char* o : origins) config.add_origins(o);
  return config;
}

// One exchange: the request head through OnRequestHeaders, then (unless the
// filter answered) a response head through OnResponseHeaders.
struct Exchange {
  FakeCallbacks callbacks;
  http::HeaderMap request;
  http::HeaderMap response;
  std::unique_ptr<http::Filter> filter;
  http::FilterStatus status = http::FilterStatus::kContinue;

  Exchange(std::string_view method, std::string_view origin) {
    callbacks.info_.method = method;
    if (!origin.empty()) request.Add("Origin", origin);
  }
  Exchange& Run(const http::FilterFactory& factory) {
    filter = factory.CreateFilter();
    status = filter->OnRequestHeaders(request, callbacks);
    // The chain runs the response hooks on the gateway's own answer too.
    http::HeaderMap& head = callbacks.replies_ > 0 ? callbacks.reply_headers_ : response;
    filter->OnResponseHeaders(callbacks.replies_ > 0 ? callbacks.status_ : 200, head, callbacks);
    return *this;
  }
  std::string Reply(std::string_view name) const {
    const std::string* v = callbacks.reply_headers_.Get(name);
    return v ? *v : "<none>";
  }
  std::string Response(std::string_view name) const {
    const std::string* v = response.Get(name);
    return v ? *v : "<none>";
  }
  int ResponseCount(std::string_view name) const {
    int n = 0;
    for (const auto& f : response.fields()) n += absl::EqualsIgnoreCase(f.name, std::string(name));
    return n;
  }
};

Exchange Preflight(std::string_view origin, std::string_view request_headers = "") {
  Exchange e("OPTIONS", origin);
  e.request.Add("Access-Control-Request-Method", "PUT");
  if (!request_headers.empty()) e.request.Add("Access-Control-Request-Headers", request_headers);
  return e;
}

// --- config rules ---

TEST(CorsConfigTest, OriginsAreRequiredAndBounded) {
  auto errors = Errors(v1::CorsConfig());
  ASSERT_EQ(errors.size(), 1u);
  EXPECT_EQ(errors[0].field, "origins");
  EXPECT_EQ(errors[0].message, "needs 1..64 entries, got 0");
  v1::CorsConfig many;
  for (int i = 0; i < 65; ++i) many.add_origins("https://a.example");
  errors = Errors(many);
  ASSERT_EQ(errors.size(), 1u);
  EXPECT_EQ(errors[0].field, "origins");
  EXPECT_EQ(Errors(Origins({"https://app.example.com", "http://localhost:3000", "*.x"})).size(),
            1u);
}

// Apply-only: a stored config an older build took still loads.
TEST(CorsConfigTest, ARegexThatCompilesHugeIsRefused) {
  const v1::CorsConfig config = Origins({"~https://(\\pL){1,100}\\.example"});
  EXPECT_TRUE(Errors(config).empty());
  std::vector<api::PolicyConfigError> errors;
  api::FindPolicyValidator("cors")->ValidateNew(config, &errors);
  ASSERT_EQ(errors.size(), 1u);
  EXPECT_EQ(errors[0].field, "origins[0]");
  EXPECT_TRUE(absl::StartsWith(errors[0].message, "the regular expression compiles to "))
      << errors[0].message;
}

TEST(CorsConfigTest, EachOriginIsAnOriginAStarOrARegex) {
  auto errors = Errors(Origins({"https://app.example.com", "https://app.example.com/",
                                "app.example.com", "https://a.example:99999", "~(", "~", "null",
                                "https://[2001:db8::1]:8443", "HTTPS://App.Example.COM:443"}));
  ASSERT_EQ(errors.size(), 6u);
  EXPECT_EQ(errors[0].field, "origins[1]");
  EXPECT_EQ(errors[0].message,
            "'https://app.example.com/' is not an origin: write scheme://host[:port] with no "
            "path (e.g. https://app.example.com), '*', or '~' and an RE2 regular expression");
  EXPECT_EQ(errors[1].field, "origins[2]");
  EXPECT_EQ(errors[2].field, "origins[3]");
  EXPECT_EQ(errors[3].field, "origins[4]");
  EXPECT_EQ(errors[3].message, "invalid RE2 regular expression '(': missing ): (");
  EXPECT_EQ(errors[4].field, "origins[5]");
  EXPECT_EQ(errors[4].message, "'~' must be followed by a regular expression");
  EXPECT_EQ(errors[5].field, "origins[6]");
  EXPECT_TRUE(absl::StrContains(errors[5].message, "'null' is the origin of sandboxed"));
}

TEST(CorsConfigTest, ExactOriginsAreNormalised) {
  auto p = ParseOriginPattern("HTTPS://App.Example.COM:443");
  ASSERT_TRUE(p.ok());
  EXPECT_EQ(p->kind, OriginPattern::Kind::kExact);
  EXPECT_EQ(p->value, "https://app.example.com");
  EXPECT_EQ(ParseOriginPattern("http://a.example:80")->value, "http://a.example");
  EXPECT_EQ(ParseOriginPattern("http://a.example:443")->value, "http://a.example:443");
  EXPECT_EQ(ParseOriginPattern("https://[2001:DB8::1]:8443")->value, "https://[2001:db8::1]:8443");
  EXPECT_EQ(ParseOriginPattern("*")->kind, OriginPattern::Kind::kAny);
  EXPECT_EQ(ParseOriginPattern("~^https://.*$")->kind, OriginPattern::Kind::kRegex);
  EXPECT_EQ(ParseOriginPattern("~^https://.*$")->value, "^https://.*$");
  EXPECT_FALSE(ParseOriginPattern("https://user@a.example").ok());
  EXPECT_FALSE(ParseOriginPattern("https://a.example?x").ok());
  EXPECT_FALSE(ParseOriginPattern("https://").ok());
  EXPECT_FALSE(ParseOriginPattern("https://a.example:0").ok());
  EXPECT_FALSE(ParseOriginPattern(" https://a.example").ok());
  EXPECT_FALSE(ParseOriginPattern(std::string(1025, 'a')).ok());
}

TEST(CorsConfigTest, StarIsAloneAndNeverWithCredentials) {
  auto errors = Errors(Origins({"https://a.example", "*"}));
  ASSERT_EQ(errors.size(), 1u);
  EXPECT_EQ(errors[0].field, "origins[1]");
  EXPECT_EQ(errors[0].message, "'*' allows every origin and must be the only entry");
  v1::CorsConfig star = Origins({"*"});
  star.set_credentials(true);
  errors = Errors(star);
  ASSERT_EQ(errors.size(), 1u);
  EXPECT_EQ(errors[0].field, "credentials");
  EXPECT_TRUE(absl::StrContains(errors[0].message, "browsers refuse credentials"))
      << errors[0].message;
  // "*" as a header or method name is a wildcard only without credentials.
  v1::CorsConfig wildcard_names = Origins({"https://a.example"});
  wildcard_names.add_headers("*");
  wildcard_names.add_methods("*");
  wildcard_names.add_exposed_headers("*");
  EXPECT_TRUE(Errors(wildcard_names).empty());
  wildcard_names.set_credentials(true);
  errors = Errors(wildcard_names);
  ASSERT_EQ(errors.size(), 3u);
  EXPECT_EQ(errors[0].field, "methods[0]");
  EXPECT_EQ(errors[1].field, "headers[0]");
  EXPECT_EQ(errors[2].field, "exposed_headers[0]");
}

// With credentials, an expression that matches null or any origin is the
// reflect-every-origin mistake: refused at apply (a stored one still loads).
TEST(CorsConfigTest, ACredentialedExpressionMustNotLetEveryOriginIn) {
  auto new_errors = [](const v1::CorsConfig& config) {
    std::vector<api::PolicyConfigError> errors;
    api::FindPolicyValidator("cors")->ValidateNew(config, &errors);
    return errors;
  };
  for (const char* loose : {"~.*", "~https?://.*", "~^null$"}) {
    v1::CorsConfig config = Origins({"https://a.example", loose});
    config.set_credentials(true);
    EXPECT_TRUE(Errors(config).empty()) << loose;
    auto errors = new_errors(config);
    ASSERT_EQ(errors.size(), 1u) << loose;
    EXPECT_EQ(errors[0].field, "origins[1]");
    EXPECT_TRUE(absl::StartsWith(errors[0].message, "with credentials: true the expression must "
                                                    "not match"))
        << errors[0].message;
    config.set_credentials(false);
    EXPECT_TRUE(new_errors(config).empty()) << loose;
  }
  v1::CorsConfig anchored = Origins({"~https://[a-z]+\\.example\\.com"});
  anchored.set_credentials(true);
  EXPECT_TRUE(new_errors(anchored).empty());
  // A lone `.` matches any character: ~https://app.example.com lets in
  // https://app-example.com, a domain anyone can register.
  for (const char* lone : {"~https://app.example\\.com", "~https://app\\.example.com",
                           "~https://[a-z]+\\.example\\.co.", "~(https://a\\.example|http://b.example)",
                           "~https://app.?example\\.com", "~https://x.{1}example\\.com",
                           "~https://app.{0,1}example\\.com"}) {
    v1::CorsConfig config = Origins({lone});
    config.set_credentials(true);
    auto errors = new_errors(config);
    ASSERT_EQ(errors.size(), 1u) << lone;
    EXPECT_EQ(errors[0].field, "origins[0]");
    EXPECT_TRUE(absl::StrContains(errors[0].message, "a lone '.'")) << errors[0].message;
    config.set_credentials(false);
    EXPECT_TRUE(new_errors(config).empty()) << lone;
  }
  // A wildcard joined to a domain's last two labels lets in a look-alike
  // anyone can register (https://evilexample.com). Before: taken.
  for (const char* joined : {"~^https://.*example\\.com$", "~https://.+example\\.com(:[0-9]+)?",
                             "~https://(www\\.)?.{1,20}example\\.com", "~https://.*?shop\\.io",
                             "~https://.*example", "~^https://[^/]*example\\.com$",
                             "~^https://\\w*example\\.com$", "~^https://\\S*example\\.com$",
                             "~^https://[a-z.]+example\\.com$", "~https://\\w+-example\\.com",
                             "~https://[^/]example\\.com", "~https://\\p{L}{2,}example\\.com",
                             "~https://[[:alpha:]]+example\\.com", "~https://\\d{1,3}example\\.com",
                             // Found by matching a made-up look-alike of each
                             // domain the expression spells (before: taken).
                             "~^https://.*example\\.co\\.uk$", "~^https://.*example\\.com\\.?$",
                             "~^https://.*example\\.(com|co\\.uk)$", "~^https://(.*)example\\.com$",
                             "~^(https://.*example\\.com|https://app\\.other\\.org)$",
                             "~^https://(?:.*)example\\.com$", "~^https://.*(example)\\.com$",
                             "~^https://.*(?i)example\\.com$", "~^https://.*(?i:example)\\.com$",
                             "~^https://.*[e]xample\\.com$", "~^https://.*\\x65xample\\.com$",
                             "~^https://.*\\Qexample\\E\\.com$", "~^https://(\\w)+example\\.com$",
                             "~^https://[a-z]example\\.com$", "~^https://[[:alpha:]]example\\.com$",
                             "~^https://[a-z]+-dev\\.com:8443$",
                             // The second regression probe's (before: taken).
                             "~^https://[a-z]+example\\.[a-z]+$", "~^https://[a-z]+example\\.c[^x]m$",
                             "~^https://[a-z]+example\\056com$",
                             "~^https://(?:[a-z]+example|foo)\\.com$",
                             "~^https://[a-z]+example\\.com:\\d+$", "~^https://[a-z]+example\\.com:[0-9]{4}$",
                             "~^https://[a-z]+example\\.com:(443|8443)$",
                             "~^https://[a-z]+example\\.com\\x3a8443$", "~^https://[a-z]{2}example\\.com$",
                             "~^https://\\w{3}example\\.com$", "~^https://[a-r]+example\\.com$",
                             "~^https://\\pLexample\\.com$", "~^https://[a-z]+exa\\x{6d}ple\\.com$",
                             "~^https://[d-f]xample\\.com$", "~https://[ae]xample\\.com",
                             // A class or a missing dot between a label it
                             // spells and the domain (before: taken).
                             "~^https://app[.-]example\\.com$",
                             "~^https://(app|api)[.-]example\\.com$", "~^https://app\\Wexample\\.com$",
                             "~^https://app[^a-z]example\\.com$", "~^https://app\\Sexample\\.com$",
                             "~^https://app[[:punct:]]example\\.com$", "~^https://app[^/]example\\.com$",
                             "~^https://app\\pPexample\\.com$", "~^https://(www\\.?)?example\\.com$",
                             "~^https://www\\.?example\\.com$", "~^https://www[.-]?example\\.com$"}) {
    v1::CorsConfig config = Origins({joined});
    config.set_credentials(true);
    auto errors = new_errors(config);
    ASSERT_EQ(errors.size(), 1u) << joined;
    EXPECT_EQ(errors[0].field, "origins[0]");
    EXPECT_TRUE(absl::StrContains(errors[0].message, "must not join a wildcard to a domain's name"))
        << errors[0].message;
    config.set_credentials(false);
    EXPECT_TRUE(new_errors(config).empty()) << joined;
  }
  // A wildcard after a domain's name lets in a name under another domain
  // (https://example.com.a.com), one for its top-level domain the same
  // name under a top-level domain it does not spell (https://example.zq).
  // Before: taken.
  for (const char* trailing : {"~^https://example\\.com.*$", "~^https://example\\.com[^/]*$",
                               "~^https://example\\.com\\S*$", "~^https://example\\.com\\..+$",
                               "~^https://example\\.com(\\.[a-z]+)*$", "~^https://example\\.[a-z]+$",
                               "~^https://app\\.example\\.(com|[a-z]+)$",
                               "~^https://example\\.[a-z]{2}$", "~^https://example\\.com[a-z.-]*$",
                               "~^http://localhost\\..*$",
                               // The regression probe's (before: taken).
                               "~^https://example\\.com(:\\d+|\\.[a-z]+)?$",
                               "~^https://example\\.com\\.?[a-z]*$", "~^https://example\\.com\\w*$",
                               "~^https://example\\.com[^.]*$", "~^https://example\\.com[a-z0-9]*(:[0-9]+)?$",
                               "~^https://example\\.com\\p{L}*$", "~^https://example\\.com[[:alnum:]]*$",
                               "~^https://example\\.com\\.[a-z]+\\.(net|org)$",
                               "~^https://example\\.com[-.a-z]*\\.net$",
                               "~^https://example\\.[a-z]+\\.[a-z]{2}$", "~^https://example\\.c[a-z]+$",
                               "~^https://example\\.co[a-z]?$", "~^https://example\\.[a-y]{2}$",
                               "~^https://example\\.com\\.[b-z]+\\.[b-z]+$",
                               // The third probe's: a class for a letter of it.
                               "~^https://example\\.[a-z]et$", "~^https://example\\.(com|[a-z]et)$",
                               "~^https://example\\.(com|i[a-z])$", "~^https://example\\.c[a-z]m$",
                               "~^https://example\\.[a-z][a-z]o$",
                               "~^https://example\\.(com|co[a-z])$",
                               // The fourth probe's: a class for the top-level
                               // domain in an alternative after the first
                               // (https://example.co.jp was let in).
                               "~^https://example\\.(com|co\\.[a-z]{2})$",
                               "~^https://example\\.(com|co\\.[a-z]+)$",
                               "~^https://(www\\.)?example\\.(com|co\\.[a-z]{2})$",
                               "~^https://example\\.(com|co\\.uk|co\\.[a-z]+)$",
                               "~^https://example\\.(?:com|(?:net|co\\.[a-z]{2}))$"}) {
    v1::CorsConfig config = Origins({trailing});
    config.set_credentials(true);
    auto errors = new_errors(config);
    ASSERT_EQ(errors.size(), 1u) << trailing;
    EXPECT_EQ(errors[0].field, "origins[0]");
    EXPECT_TRUE(absl::StrContains(errors[0].message, "must not let a wildcard follow a domain's "
                                                     "name or stand for its top-level domain"))
        << trailing << ": " << errors[0].message;
    config.set_credentials(false);
    EXPECT_TRUE(new_errors(config).empty()) << trailing;
  }
  // A wildcard inside the registered name, or in its place: digits where
  // letters were refused (https://example1.com), a made-up second level
  // under a country code (https://example.qq.uk), a name or an address
  // that is all wildcard. Before (the fifth probe's): taken.
  for (const char* inner : {"~^https://example[0-9]*\\.com$", "~^https://example\\d\\.com$",
                            "~^https://(www\\.)?example-[0-9]+\\.com$",
                            "~^https://shop[0-9]\\.com$",
                            "~^https://[a-z]\\.example\\.com$|^https://[0-9]+\\.com$",
                            "~^https://example\\.(com|[a-z]{2}\\.uk)$",
                            "~^https://[a-z0-9]+\\.example\\.com$|^https://[0-9.]+$"}) {
    v1::CorsConfig config = Origins({inner});
    config.set_credentials(true);
    auto errors = new_errors(config);
    ASSERT_EQ(errors.size(), 1u) << inner;
    EXPECT_EQ(errors[0].field, "origins[0]");
    EXPECT_TRUE(absl::StrContains(errors[0].message, "must not hold a wildcard inside the domain"))
        << inner << ": " << errors[0].message;
    config.set_credentials(false);
    EXPECT_TRUE(new_errors(config).empty()) << inner;
  }
  // The regression probe's: any origin without a hyphen (the only probe
  // host had one), a wildcard in the registered name behind a spelled
  // subdomain, other addresses. Before: taken.
  for (const char* loose : {"~^https://[a-z]+\\.[a-z]+$", "~^https://[a-z0-9]+\\.[a-z]+$",
                            "~^https://\\w+\\.\\w+$", "~^https://[a-z0-9-]+\\.[a-z0-9-]+\\.[a-z]+$",
                            "~^https://(app|[a-z]+\\.[a-z]+)$",
                            "~^https://www\\.example[0-9]+\\.com$",
                            "~^https://[a-z]+\\.example[0-9]+\\.com$",
                            "~^https://app\\.example[0-9]*\\.co\\.uk$",
                            "~^http://[0-9]+\\.[0-9]+\\.[0-9]+\\.1$",
                            "~^http://\\[[0-9a-f:]+\\](:[0-9]+)?$",
                            // The second regression probe's: any origin of a
                            // top-level domain, any name under a public suffix.
                            "~^https://([a-z0-9-]+\\.)+com$",
                            "~^https://[a-z0-9-]+\\.[a-z]{2,}\\.[a-z]{2}$",
                            "~^https://[a-z0-9-]+\\.[a-z]+\\.io$",
                            "~^https://([a-z0-9-]+\\.)?co\\.uk$", "~^https://(.+\\.)?co\\.uk$",
                            "~^https://([a-z0-9-]+\\.)?com\\.au$",
                            "~^https://[a-z0-9-]+\\.[a-z]{2}\\.uk$"}) {
    v1::CorsConfig config = Origins({loose});
    config.set_credentials(true);
    auto errors = new_errors(config);
    ASSERT_EQ(errors.size(), 1u) << loose;
    EXPECT_TRUE(absl::StrContains(errors[0].message, "with credentials: true the expression must"))
        << loose << ": " << errors[0].message;
  }
  // Subdomains of a name one owner registered under a two-letter top-level
  // domain, and names under localhost (the client's own machine). Before
  // (the inner-wildcard check's first version): refused as app1.fly.io.
  for (const char* fine : {"~^https://app[0-9]+\\.fly\\.io$", "~^https://web[0-9]+\\.abc\\.io$",
                           "~^https://web[0-9]+\\.ab\\.io$", "~^https://[a-z0-9-]+\\.fly\\.io$",
                           "~^https://[a-z0-9-]+\\.x\\.ai$", "~^https://[a-z]+\\.vk\\.me$",
                           "~^http://[a-z0-9-]+\\.localhost:[0-9]+$",
                           // A company's own name that is a public second
                           // level elsewhere (web.de; co.uk is one).
                           "~^https://[a-z0-9-]+\\.web\\.de$", "~^https://app-[0-9]+\\.web\\.de$",
                           "~^https://[a-z0-9-]+\\.id\\.me$", "~^https://[a-z0-9-]+\\.go\\.io$",
                           "~^https://tenant-[0-9]+\\.gen\\.ai$"}) {
    v1::CorsConfig config = Origins({fine});
    config.set_credentials(true);
    auto errors = new_errors(config);
    EXPECT_TRUE(errors.empty()) << fine << ": " << (errors.empty() ? "" : errors[0].message);
  }
  v1::CorsConfig suffix = Origins({"~^https://example\\.com.*$"});
  suffix.set_credentials(true);
  EXPECT_TRUE(absl::StrContains(new_errors(suffix)[0].message, "it matches https://example.com.a.com,"))
      << new_errors(suffix)[0].message;
  // Escaped, in a class, or spanning a label with a quantifier: not lone;
  // a wildcard ending at a dot, or joined to a label below the domain's.
  for (const char* fine : {"~https://app\\.example\\.com", "~https://[.a-z]+\\.example\\.com",
                           "~https://[]a.]+\\.example\\.com", "~https://[^.]+\\.example\\.com",
                           "~https://.+\\.example\\.com", "~https://.{1,63}\\.example\\.com",
                           "~https://a\\.example\\.com(:[0-9]+)?",
                           "~\\Qhttps://app.example.com\\E", "~https://[[:alnum:].-]+\\.example\\.com",
                           "~https://.{1,63}\\.example\\.com", "~https://[a-z]+\\.example\\.com(:\\d{2,5})?",
                           "~^https://(.*\\.)?example\\.com$", "~https://.*-staging\\.example\\.com",
                           "~https://app[0-9]*\\.example\\.com", "~https://(axample|example)\\.com",
                           "~https://[a-z0-9-]+\\.example\\.com", "~https://\\w+\\.example\\.com",
                           // Ports and addresses are no domain names.
                           "~^http://localhost:[0-9]{2}00$", "~^http://localhost:\\d000$",
                           "~^http://10\\.0\\.0\\.5:8\\d00$", "~^https://\\[2001:db8::[0-9a-f]+1\\]$",
                           "~^https://([a-z0-9-]+\\.)?example\\.com$", "~^https://(www|api)\\.example\\.com(:[0-9]+)?$",
                           "~([a-z0-9-]+\\.)*example\\.co\\.uk", "~pr-[0-9]+-preview\\.example\\.com",
                           "~(?i)app\\.example\\.com", "~^https://app[0-9]{1,2}\\.example\\.com$",
                           // Top-level domains and ports spelled out.
                           "~^https://example\\.(com|net|org)$", "~^https://example\\.com(:[0-9]+)?$",
                           "~^https://example\\.com(\\.cn)?$", "~^https://example\\.xyz$",
                           "~^https://(www\\.)?example\\.co\\.(uk|jp)$",
                           // Top-level domains spelled among alternatives, in
                           // any order (before: refused as example.com cut short).
                           "~^https://example\\.(com|co)$", "~^https://example\\.(co|com)$",
                           "~^https://example\\.(com|co|io)$", "~^https://example\\.co(m)?$",
                           "~^https://(www\\.)?example\\.(com|co|co\\.uk)$",
                           "~^https://example\\.(com|com\\.au|co\\.nz|co)$",
                           "~^https://(example|exemple)\\.(com|co)$", "~^https://example\\.(net|ne)$",
                           "~^https://example\\.(org|or)$",
                           // The regression probe's: an operator's own domains.
                           "~^https://example\\.com$",
                           "~^https://([a-z0-9-]+\\.)*example\\.com(:\\d+)?$",
                           "~^https://(.+\\.)?example\\.com$",
                           "~^https?://(www\\.)?example\\.(com|co\\.uk|de)$",
                           "~^https://api\\.[a-z]+\\.example\\.com$",
                           "~^https://app(-[a-z0-9]+)?\\.example\\.com$",
                           "~^https://[a-z0-9-]+--example\\.netlify\\.app$",
                           "~^https://example-[a-z0-9]+-team\\.vercel\\.app$",
                           "~^http://localhost(:\\d+)?$",
                           "~^http://192\\.168\\.[0-9]+\\.[0-9]+(:\\d+)?$",
                           "~^http://10\\.\\d+\\.\\d+\\.\\d+(:\\d+)?$",
                           "~^https://example\\.com\\.au$",
                           "~^https://(www\\.)?example\\.com(\\.au)?$",
                           "~^https://example\\.com(\\.au|\\.br)?$",
                           "~^https://shop\\.example\\.co\\.uk(:\\d+)?$",
                           "~^https://example\\.com:(443|8443)$",
                           "~^https://example\\.com(:\\d{2,5})?$",
                           "~^https://(dev|staging|prod)\\.example\\.com(:[0-9]{4})?$",
                           "~^https://example\\.com\\.cdn\\.cloudflare\\.net$",
                           "~^https://[a-z0-9]+\\.example\\.com\\.cdn\\.cloudflare\\.net$",
                           "~^https://example\\.co$", "~^https://[a-z]+\\.example\\.community$",
                           "~^https://example\\.com\\.?$",
                           "~^https://(www\\.)?example\\.com\\.?(:\\d+)?$",
                           "~^https://[a-z]{2}-[a-z]{2}\\.example\\.com$",
                           "~^https://example\\.com(:[0-9]+)?(/)?$",
                           "~^https://\\[::1\\](:\\d+)?$",
                           "~^https://xn--[a-z0-9-]+\\.example\\.com$",
                           "~^https://example\\.com$|^https://example\\.org$",
                           "~^https://(app|admin)\\.(example|sample)\\.com$",
                           "~^https://[a-z]+\\.example\\.com\\.br$",
                           "~^https://[a-z0-9-]+\\.s3\\.example\\.com$",
                           "~^https://example\\.(com|co\\.uk|co\\.jp)$",
                           "~^https://(www|app)\\.example\\.(com|net)$",
                           "~^https://(?i)(www\\.)?example\\.(com|de)$"}) {
    v1::CorsConfig config = Origins({fine});
    config.set_credentials(true);
    EXPECT_TRUE(new_errors(config).empty()) << fine << ": " << new_errors(config)[0].message;
  }
}

// The 2026-12-02 probe's: names anyone registers under a public suffix
// the list of tried origins missed (before: taken), and names under
// top-level names nobody registers (before: refused).
TEST(CorsConfigTest, ACredentialedExpressionIsCheckedUnderEveryPublicSuffixItSpells) {
  auto new_errors = [](const char* origin) {
    v1::CorsConfig config = Origins({origin});
    config.set_credentials(true);
    std::vector<api::PolicyConfigError> errors;
    api::FindPolicyValidator("cors")->ValidateNew(config, &errors);
    return errors;
  };
  for (const char* open : {"~https://([a-z0-9-]+\\.)+org", "~https://([a-z0-9-]+\\.)*org",
                           "~https://([a-z0-9-]+\\.)+(org|edu)", "~https?://([a-z0-9-]+\\.)+fr",
                           "~https://(?:[a-z0-9-]+\\.)+org(:\\d+)?", "~https://([a-z0-9-]+\\.)+ai",
                           "~https://([a-z0-9-]+\\.)?com\\.pl", "~https://[a-z0-9-]+\\.co\\.hu",
                           "~https://[a-z0-9-]+\\.com\\.ru", "~https://.*example\\.com\\.pl",
                           "~https://[a-z]+example\\.co\\.at",
                           "~https://[a-z0-9-]+\\.github\\.io",
                           "~https://[a-z0-9-]+\\.herokuapp\\.com",
                           "~https://[a-z0-9-]+\\.s3\\.amazonaws\\.com",
                           "~https://([a-z0-9-]+\\.)?vercel\\.app",
                           "~https://(www\\.|www)example\\.com",
                           // The regression probe's: a wildcard after a name
                           // under a reserved top-level name, or after any
                           // single label; ports in a group; short names;
                           // other glued alternations; deeper platforms.
                           "~https://[a-z0-9-]+\\.internal.*",
                           "~https://[a-z0-9-]+\\.internal(\\.[a-z]+)?",
                           "~https://[a-z0-9-]+\\.example\\.[a-z]+", "~https?://localhost.*",
                           "~https://acme.*", "~https://([a-z0-9-]+\\.)+org:(3000|8080)",
                           "~https://[a-z]{3,6}\\.org", "~https://[a-z]{1,10}\\.github\\.io",
                           "~https://(api\\.|www)example\\.com",
                           "~https://(www\\.|ww)example\\.com",
                           "~https://(www\\.|www-)example\\.com",
                           "~https://[a-z0-9-]+\\.s3\\.us-east-1\\.amazonaws\\.com",
                           "~https://[a-z0-9-]+\\.run\\.app", "~https://[a-z0-9-]+\\.or\\.at"}) {
    auto errors = new_errors(open);
    ASSERT_EQ(errors.size(), 1u) << open;
    EXPECT_TRUE(absl::StartsWith(errors[0].message, "with credentials: true the expression must"))
        << errors[0].message;
    EXPECT_FALSE(absl::StrContains(errors[0].message, "https.")) << errors[0].message;
  }
  EXPECT_TRUE(absl::StrContains(new_errors("~https://([a-z0-9-]+\\.)+org")[0].message,
                                "https://sluiceprobe.org"));
  EXPECT_TRUE(absl::StrContains(new_errors("~https://(www\\.|www)example\\.com")[0].message,
                                "https://wwwexample.com"));
  for (const char* fine : {"~https://[a-z0-9-]+\\.internal", "~http://[a-z0-9-]+\\.test(:\\d+)?",
                           "~https://.*\\.internal", "~(https|http)://[a-z0-9-]+\\.internal",
                           "~https://[a-z0-9-]+\\.corp\\.local",
                           "~https://[a-z0-9-]+\\.home\\.arpa",
                           "~https://[a-z0-9-]+\\.svc\\.cluster\\.local",
                           "~https://[a-z0-9-]+\\.example", "~https?://.*localhost(:\\d+)?",
                           "~https://foo\\.github\\.io", "~https://mysite\\.netlify\\.app",
                           "~https://app\\.example\\.org", "~https://[a-z0-9-]+\\.example\\.org",
                           "~https://([a-z0-9-]+\\.)?example\\.com\\.pl",
                           "~https://(www\\.)?example\\.co\\.hu", "~https://https\\.dev",
                           "~https://[a-z0-9]+\\.myproject\\.pages\\.dev",
                           "~https://mybucket\\.s3\\.amazonaws\\.com",
                           "~http://localhost:[0-9]+", "~https://(app|api)\\.example\\.com"}) {
    auto errors = new_errors(fine);
    EXPECT_TRUE(errors.empty()) << fine << ": " << errors[0].message;
  }
}

TEST(CorsConfigTest, MethodsAndHeaderNamesAreTokensAndMaxAgeIsBounded) {
  v1::CorsConfig config = Origins({"https://a.example"});
  config.add_methods("GET");
  config.add_methods("BAD METHOD");
  config.add_headers("x-ok");
  config.add_headers("x bad");
  config.add_headers(std::string(129, 'a'));
  config.add_exposed_headers("x-total:count");
  config.set_max_age(86401);
  auto errors = Errors(config);
  ASSERT_EQ(errors.size(), 5u);
  EXPECT_EQ(errors[0].field, "methods[1]");
  EXPECT_EQ(errors[0].message,
            "'BAD METHOD' is not a method (an RFC 9110 token of 1..32 characters)");
  EXPECT_EQ(errors[1].field, "headers[1]");
  EXPECT_EQ(errors[1].message,
            "'x bad' is not a header name (an RFC 9110 token of 1..128 characters)");
  EXPECT_EQ(errors[2].field, "headers[2]");
  EXPECT_EQ(errors[3].field, "exposed_headers[0]");
  EXPECT_EQ(errors[4].field, "max_age");
  EXPECT_EQ(errors[4].message, "must be 0..86400 seconds, got 86401");
  v1::CorsConfig too_many = Origins({"https://a.example"});
  for (int i = 0; i < 33; ++i) too_many.add_methods("GET");
  for (int i = 0; i < 65; ++i) too_many.add_headers("x");
  errors = Errors(too_many);
  ASSERT_EQ(errors.size(), 2u);
  EXPECT_EQ(errors[0].field, "methods");
  EXPECT_EQ(errors[1].field, "headers");
}

// --- preflights ---

TEST(CorsPreflightTest, AllowedOriginIsAnswered204WithTheAllowFields) {
  v1::CorsConfig config = Origins({"https://app.example.com"});
  config.set_credentials(true);
  config.set_max_age(600);
  config.add_headers("Authorization");
  config.add_headers("X-Trace");
  auto factory = Compile(config);
  Exchange e = Preflight("https://app.example.com", "x-anything");
  e.Run(*factory);
  EXPECT_EQ(e.status, http::FilterStatus::kStopLocalReply);
  EXPECT_EQ(e.callbacks.replies_, 1);
  EXPECT_EQ(e.callbacks.status_, 204);
  EXPECT_EQ(e.callbacks.body_, "");
  EXPECT_EQ(e.Reply("access-control-allow-origin"), "https://app.example.com");
  EXPECT_EQ(e.Reply("access-control-allow-methods"),
            "GET, HEAD, PUT, PATCH, POST, DELETE, OPTIONS");
  EXPECT_EQ(e.Reply("access-control-allow-headers"), "Authorization, X-Trace");
  EXPECT_EQ(e.Reply("access-control-allow-credentials"), "true");
  EXPECT_EQ(e.Reply("access-control-max-age"), "600");
  EXPECT_EQ(e.Reply("vary"), "Origin");
  EXPECT_EQ(e.Reply("access-control-expose-headers"), "<none>");  // actual responses only
  EXPECT_EQ(e.callbacks.reply_headers_.size(), 6u);  // its own response hook added nothing
}

TEST(CorsPreflightTest, RequestHeadersAreReflectedWhenNoneAreConfigured) {
  v1::CorsConfig config = Origins({"https://app.example.com"});
  config.add_methods("GET");
  config.add_methods("PURGE");
  auto factory = Compile(config);
  Exchange e = Preflight("https://app.example.com", "content-type, x-custom");
  e.Run(*factory);
  EXPECT_EQ(e.Reply("access-control-allow-headers"), "content-type, x-custom");
  EXPECT_EQ(e.Reply("access-control-allow-methods"), "GET, PURGE");
  EXPECT_EQ(e.Reply("access-control-allow-credentials"), "<none>");
  EXPECT_EQ(e.Reply("access-control-max-age"), "<none>");
  // Nothing asked: nothing sent. Not a list of names: not reflected.
  Exchange none = Preflight("https://app.example.com");
  none.Run(*factory);
  EXPECT_EQ(none.Reply("access-control-allow-headers"), "<none>");
  Exchange odd = Preflight("https://app.example.com", "x-a, <script>");
  odd.Run(*factory);
  EXPECT_EQ(odd.Reply("access-control-allow-headers"), "<none>");
  EXPECT_EQ(odd.Reply("access-control-allow-origin"), "https://app.example.com");
}

TEST(CorsPreflightTest, MaxAgeZeroIsSentNotDropped) {
  // 0 tells the browser not to reuse the answer; unset leaves its default.
  v1::CorsConfig config = Origins({"https://app.example.com"});
  config.set_max_age(0);
  auto factory = Compile(config);
  Exchange e = Preflight("https://app.example.com");
  e.Run(*factory);
  EXPECT_EQ(e.Reply("access-control-max-age"), "0");
}

TEST(CorsPreflightTest, DisallowedOriginIsAnswered204WithoutAllowFields) {
  v1::CorsConfig config = Origins({"https://app.example.com"});
  config.set_credentials(true);
  config.set_max_age(600);
  auto factory = Compile(config);
  Exchange e = Preflight("https://evil.example", "x-custom");
  e.Run(*factory);
  EXPECT_EQ(e.status, http::FilterStatus::kStopLocalReply);
  EXPECT_EQ(e.callbacks.status_, 204);
  ASSERT_EQ(e.callbacks.reply_headers_.size(), 1u);
  EXPECT_EQ(e.Reply("vary"), "Origin");
}

// Origin is one value: two fields are no origin, in either order (before,
// the first decided: a listed origin first let an unlisted one through).
// Two Access-Control-Request-Headers fields are one list (RFC 9110 5.3);
// before, only the first was reflected.
TEST(CorsPreflightTest, TwoOriginFieldsAreNoOriginAndRequestedHeadersCombine) {
  auto factory = Compile(Origins({"https://app.example.com"}));
  for (bool listed_first : {true, false}) {
    Exchange e("OPTIONS", listed_first ? "https://app.example.com" : "https://evil.example");
    e.request.Add("Origin", listed_first ? "https://evil.example" : "https://app.example.com");
    e.request.Add("Access-Control-Request-Method", "PUT");
    e.Run(*factory);
    EXPECT_EQ(e.callbacks.status_, 204);
    EXPECT_EQ(e.Reply("access-control-allow-origin"), "<none>") << listed_first;
    Exchange get("GET", listed_first ? "https://app.example.com" : "https://evil.example");
    get.request.Add("Origin", listed_first ? "https://evil.example" : "https://app.example.com");
    get.Run(*factory);
    EXPECT_EQ(get.Response("access-control-allow-origin"), "<none>") << listed_first;
    EXPECT_EQ(get.Response("vary"), "Origin");
  }
  Exchange e = Preflight("https://app.example.com", "x-a");
  e.request.Add("Access-Control-Request-Headers", "x-b");
  e.Run(*factory);
  EXPECT_EQ(e.Reply("access-control-allow-headers"), "x-a, x-b");
}

TEST(CorsPreflightTest, WildcardOriginAnswersStar) {
  auto factory = Compile(Origins({"*"}));
  Exchange e = Preflight("https://anyone.example");
  e.Run(*factory);
  EXPECT_EQ(e.callbacks.status_, 204);
  EXPECT_EQ(e.Reply("access-control-allow-origin"), "*");
  EXPECT_EQ(e.Reply("access-control-allow-credentials"), "<none>");
}

TEST(CorsPreflightTest, OnlyOptionsWithOriginAndRequestMethodIsAPreflight) {
  auto factory = Compile(Origins({"https://app.example.com"}));
  Exchange no_request_method("OPTIONS", "https://app.example.com");
  no_request_method.Run(*factory);
  EXPECT_EQ(no_request_method.status, http::FilterStatus::kContinue);
  EXPECT_EQ(no_request_method.callbacks.replies_, 0);
  EXPECT_EQ(no_request_method.Response("access-control-allow-origin"), "https://app.example.com");
  Exchange no_origin = Preflight("");
  no_origin.Run(*factory);
  EXPECT_EQ(no_origin.status, http::FilterStatus::kContinue);
  EXPECT_EQ(no_origin.callbacks.replies_, 0);
  Exchange get("GET", "https://app.example.com");
  get.request.Add("Access-Control-Request-Method", "PUT");
  get.Run(*factory);
  EXPECT_EQ(get.status, http::FilterStatus::kContinue);
}

TEST(CorsPreflightTest, PreflightContinueSendsItUpstreamAndDecoratesTheAnswer) {
  v1::CorsConfig config = Origins({"https://app.example.com"});
  config.set_preflight_continue(true);
  config.set_credentials(true);
  auto factory = Compile(config);
  Exchange e = Preflight("https://app.example.com");
  e.Run(*factory);
  EXPECT_EQ(e.status, http::FilterStatus::kContinue);
  EXPECT_EQ(e.callbacks.replies_, 0);
  EXPECT_EQ(e.request.Get("access-control-request-method") != nullptr, true);  // untouched
  EXPECT_EQ(e.Response("access-control-allow-origin"), "https://app.example.com");
  EXPECT_EQ(e.Response("access-control-allow-credentials"), "true");
  EXPECT_EQ(e.Response("access-control-allow-methods"), "<none>");  // the upstream's business
  EXPECT_EQ(e.Response("vary"), "Origin");
}

// --- actual requests ---

TEST(CorsActualTest, AllowedOriginGetsAllowOriginCredentialsAndExposedHeaders) {
  v1::CorsConfig config = Origins({"https://app.example.com"});
  config.set_credentials(true);
  config.add_exposed_headers("X-Total-Count");
  config.add_exposed_headers("ETag");
  auto factory = Compile(config);
  Exchange e("POST", "https://app.example.com");
  e.response.Add("Access-Control-Allow-Origin", "*");  // the upstream's: replaced
  e.Run(*factory);
  EXPECT_EQ(e.status, http::FilterStatus::kContinue);
  EXPECT_EQ(e.callbacks.replies_, 0);
  EXPECT_EQ(e.Response("access-control-allow-origin"), "https://app.example.com");
  EXPECT_EQ(e.ResponseCount("access-control-allow-origin"), 1);
  EXPECT_EQ(e.Response("access-control-allow-credentials"), "true");
  EXPECT_EQ(e.Response("access-control-expose-headers"), "X-Total-Count, ETag");
  EXPECT_EQ(e.Response("vary"), "Origin");
  EXPECT_EQ(e.Response("access-control-allow-methods"), "<none>");
}

// Without credentials, an upstream's Access-Control-Allow-Credentials does
// not stay next to the gateway's Allow-Origin: that credentialed grant was
// made by neither.
TEST(CorsActualTest, TheUpstreamsCredentialsDoNotJoinTheGatewaysOrigin) {
  auto factory = Compile(Origins({"https://app.example.com"}));
  Exchange e("GET", "https://app.example.com");
  e.response.Add("Access-Control-Allow-Origin", "https://upstream-chose.example");
  e.response.Add("Access-Control-Allow-Credentials", "true");
  e.Run(*factory);
  EXPECT_EQ(e.Response("access-control-allow-origin"), "https://app.example.com");
  EXPECT_EQ(e.Response("access-control-allow-credentials"), "<none>");
}

TEST(CorsActualTest, DisallowedOriginGetsOnlyVary) {
  v1::CorsConfig config = Origins({"https://app.example.com"});
  config.set_credentials(true);
  config.add_exposed_headers("X-Total-Count");
  auto factory = Compile(config);
  Exchange e("GET", "https://evil.example");
  e.Run(*factory);
  EXPECT_EQ(e.status, http::FilterStatus::kContinue);
  EXPECT_EQ(e.Response("access-control-allow-origin"), "<none>");
  EXPECT_EQ(e.Response("access-control-allow-credentials"), "<none>");
  EXPECT_EQ(e.Response("access-control-expose-headers"), "<none>");
  EXPECT_EQ(e.Response("vary"), "Origin");
}

TEST(CorsActualTest, ExactOriginsMatchWithoutCaseAndOnlyWhole) {
  auto factory = Compile(Origins({"https://App.Example.com:443", "http://localhost:3000"}));
  for (const char* allowed :
       {"https://app.example.com", "HTTPS://APP.EXAMPLE.COM", "http://localhost:3000"}) {
    Exchange e("GET", allowed);
    e.Run(*factory);
    EXPECT_EQ(e.Response("access-control-allow-origin"), allowed);  // as the client sent it
  }
  for (const char* refused : {"https://app.example.com.evil.example", "http://app.example.com",
                              "https://app.example.com:8443", "http://localhost:3001",
                              "https://app.example.com/", "null"}) {
    Exchange e("GET", refused);
    e.Run(*factory);
    EXPECT_EQ(e.Response("access-control-allow-origin"), "<none>") << refused;
  }
}

TEST(CorsActualTest, RegexOriginsMustMatchTheWholeOrigin) {
  auto factory = Compile(Origins({"~https://[a-z0-9-]+\\.example\\.com", "https://exact.example"}));
  for (const char* allowed :
       {"https://app.example.com", "https://a-1.example.com", "https://exact.example"}) {
    Exchange e("GET", allowed);
    e.Run(*factory);
    EXPECT_EQ(e.Response("access-control-allow-origin"), allowed);
  }
  for (const char* refused :
       {"https://app.example.com.evil.example", "https://evil.example/https://app.example.com",
        "http://app.example.com", "https://a.b.example.com"}) {
    Exchange e("GET", refused);
    e.Run(*factory);
    EXPECT_EQ(e.Response("access-control-allow-origin"), "<none>") << refused;
  }
}

// With "*" the answer is the same for every origin and for a request without
// one: no Vary (the Fetch standard's "CORS protocol and HTTP caches"). Before,
// a request without Origin got no CORS fields and no Vary, so a cache could
// serve that answer to a CORS request, which the browser then refused.
TEST(CorsActualTest, WildcardOriginAnswersStarToEveryRequestWithoutVary) {
  v1::CorsConfig config = Origins({"*"});
  config.add_exposed_headers("X-Total-Count");
  auto factory = Compile(config);
  Exchange e("GET", "https://anyone.example");
  e.Run(*factory);
  EXPECT_EQ(e.Response("access-control-allow-origin"), "*");
  EXPECT_EQ(e.Response("access-control-allow-credentials"), "<none>");
  EXPECT_EQ(e.Response("access-control-expose-headers"), "X-Total-Count");
  EXPECT_EQ(e.Response("vary"), "<none>");
  Exchange plain("GET", "");
  plain.response.Add("Content-Type", "text/plain");
  plain.Run(*factory);
  EXPECT_EQ(plain.Response("access-control-allow-origin"), "*");
  EXPECT_EQ(plain.Response("access-control-expose-headers"), "X-Total-Count");
  EXPECT_EQ(plain.Response("vary"), "<none>");
  EXPECT_EQ(plain.response.size(), 3u);
}

TEST(CorsActualTest, RequestsWithoutOriginGetOnlyVaryWhenOriginsAreListed) {
  auto factory = Compile(Origins({"https://app.example.com"}));
  Exchange e("GET", "");
  e.Run(*factory);
  EXPECT_EQ(e.Response("access-control-allow-origin"), "<none>");
  EXPECT_EQ(e.Response("vary"), "Origin");
  EXPECT_EQ(e.response.size(), 1u);
}

TEST(CorsActualTest, VaryIsMergedNeverDuplicated) {
  auto factory = Compile(Origins({"https://app.example.com"}));
  struct Case {
    std::vector<const char*> upstream;  // Vary fields the upstream sent
    const char* want;                   // the single Vary after the filter
  };
  for (const Case& c : std::vector<Case>{
           {{}, "Origin"},
           {{"Accept-Encoding"}, "Accept-Encoding, Origin"},
           {{"Accept-Encoding", "Accept-Language"}, "Accept-Encoding, Accept-Language, Origin"},
           {{"accept-encoding,  cookie"}, "accept-encoding, cookie, Origin"},
           {{"Accept-Encoding, origin"}, "Accept-Encoding, origin"},
           {{"ORIGIN"}, "ORIGIN"},
           {{"*"}, "*"},
       }) {
    Exchange e("GET", "https://app.example.com");
    for (const char* v : c.upstream) e.response.Add("Vary", v);
    e.Run(*factory);
    EXPECT_EQ(e.ResponseCount("vary"), 1);
    EXPECT_EQ(e.Response("vary"), c.want);
  }
}

TEST(CorsActualTest, GatewayAnswersOfLaterPoliciesGetTheFieldsToo) {
  // A 401 from an authentication policy: the browser's script can read it.
  auto factory = Compile(Origins({"https://app.example.com"}));
  auto filter = factory->CreateFilter();
  FakeCallbacks callbacks;
  callbacks.info_.method = "GET";
  http::HeaderMap request;
  request.Add("origin", "https://app.example.com");
  ASSERT_EQ(filter->OnRequestHeaders(request, callbacks), http::FilterStatus::kContinue);
  http::HeaderMap reply;
  reply.Add("www-authenticate", "Key realm=\"sluice\"");
  filter->OnResponseHeaders(401, reply, callbacks);
  ASSERT_NE(reply.Get("access-control-allow-origin"), nullptr);
  EXPECT_EQ(*reply.Get("access-control-allow-origin"), "https://app.example.com");
}

TEST(CorsActualTest, RunsInThePreflightPhase) {
  auto factory = Compile(Origins({"*"}));
  EXPECT_EQ(factory->phase(), http::FilterPhase::kPreflight);
  EXPECT_EQ(factory->policy_name(), "cors");
}

}  // namespace
}  // namespace sluice::policy::cors
