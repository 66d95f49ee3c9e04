// The `jwt` policy through its validator and filter, with keys and tokens
// made at test time by PyJWT (jwt_tokens.py) and a fake clock: every
// algorithm, key selection, the refusals (alg none, algorithm confusion,
// times, issuer, audience, malformed tokens), token sources, claims to
// headers, consumers, the anonymous fallback, the verified-token cache and
// the config rules by field.
#include <gtest/gtest.h>
#include <openssl/bn.h>
#include <openssl/evp.h>

#include <atomic>

#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "api/credentials.h"
#include "api/policy_registry.h"
#include "api/resource.h"
#include "dataplane/auth/consumers.h"
#include "dataplane/http/filter.h"
#include "dataplane/policy/chain.h"
#include "dataplane/policy/jwt/filter.h"
#include "dataplane/policy/jwt/jws.h"
#include "dataplane/policy/jwt/jwt_config.pb.h"
#include "dataplane/policy/jwt/verified_token_cache.h"
#include "dataplane/policy/key_auth/key_auth_config.pb.h"
#include "dataplane/policy/registry.h"
#include "tests/dataplane/policy/fake_callbacks.h"
#include "tests/dataplane/policy/jwt_material.h"

namespace sluice::policy::jwt {
namespace {

using testing::FakeCallbacks;
using testing::JwtMaterial;

constexpr int64_t kNow = 1700000000;
std::atomic<int64_t> fake_now{kNow};
std::atomic<int64_t> fake_now_extra_ms{0};  // milliseconds after fake_now

int64_t FakeNowMillis() { return fake_now.load() * 1000 + fake_now_extra_ms.load(); }

const JwtMaterial& M() {
  static const JwtMaterial* const m = new JwtMaterial(testing::MakeJwtMaterial(kNow));
  return *m;
}

std::string Token(const std::string& name) {
  std::string t = M().token(name);
  EXPECT_FALSE(t.empty()) << "no token " << name << " " << M().error;
  return t;
}

std::vector<api::PolicyConfigError> Errors(const v1::JwtConfig& config) {
  std::vector<api::PolicyConfigError> errors;
  api::FindPolicyValidator("jwt")->Validate(config, &errors);
  return errors;
}

std::string ErrorText(const std::vector<api::PolicyConfigError>& errors) {
  std::string out;
  for (const auto& e : errors) absl::StrAppend(&out, e.field, ": ", e.message, "\n");
  return out;
}

// Validated as every binary validates, compiled with the fake clock.
std::shared_ptr<const http::FilterFactory> Compile(const v1::JwtConfig& config) {
  std::vector<api::PolicyConfigError> errors = Errors(config);
  EXPECT_TRUE(errors.empty()) << ErrorText(errors);
  auto compiled = CompileJwtFilter(config, [] { return FakeNowMillis(); });
  EXPECT_TRUE(compiled.ok()) << compiled.status();
  return compiled.ok() ? *compiled : nullptr;
}

v1::JwtConfig Config(std::initializer_list<const char*> algorithms,
                     const std::string& jwks_name = "all") {
  v1::JwtConfig config;
  config.set_jwks(M().jwks.at(jwks_name));
  for (const char* a : algorithms) config.add_algorithms(a);
  return config;
}

// alice and bob; guest for anonymous requests.
std::shared_ptr<const auth::ConsumerIndex> Consumers() {
  static const auto index = [] {
    api::ResourceMap resources;
    for (const char* name : {"alice", "bob", "guest"}) {
      config::v1::Resource r;
      r.mutable_consumer()->set_name(name);
      if (std::string(name) == "alice") r.mutable_consumer()->add_keys()->set_key("alice-key-123");
      resources[api::IdOf(r)] = r;
    }
    return auth::ConsumerIndex::Build(resources);
  }();
  return index;
}

struct Request {
  FakeCallbacks callbacks;
  http::HeaderMap headers;
  explicit Request(std::string path = "/api") {
    callbacks.index_ = Consumers();
    callbacks.SetPath(std::move(path));
  }
  static Request Bearer(const std::string& token) {
    Request r;
    r.headers.Add("Authorization", "Bearer " + token);
    return r;
  }
  http::FilterStatus Run(const http::FilterFactory& factory) {
    filter = factory.CreateFilter();
    return filter->OnRequestHeaders(headers, callbacks);
  }
  std::string consumer() const {
    return callbacks.info_.consumer ? callbacks.info_.consumer->name : "";
  }
  std::string header(std::string_view name) const {
    const std::string* v = headers.Get(name);
    return v ? *v : "<none>";
  }
  std::string challenge() const {
    const std::string* v = callbacks.reply_headers_.Get("www-authenticate");
    return v ? *v : "<none>";
  }
  std::unique_ptr<http::Filter> filter;
};

class JwtTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(M().error.empty()) << M().error;
    fake_now = kNow;
    fake_now_extra_ms = 0;
  }

  // The refusal a token gets: the 401's message, after checking the
  // challenge carries it.
  static std::string Refusal(const http::FilterFactory& factory, const std::string& token) {
    Request r = Request::Bearer(token);
    if (r.Run(factory) != http::FilterStatus::kStopLocalReply) return "<accepted>";
    EXPECT_EQ(r.callbacks.status_, 401);
    EXPECT_EQ(r.challenge(),
              absl::StrCat("Bearer realm=\"sluice\", error=\"invalid_token\", "
                           "error_description=\"",
                           r.callbacks.message_, "\""));
    EXPECT_EQ(r.consumer(), "");
    return r.callbacks.message_;
  }
};

TEST_F(JwtTest, EveryAlgorithmVerifiesWithItsKey) {
  auto factory = Compile(
      Config({"RS256", "RS384", "RS512", "PS256", "ES256", "ES384", "EdDSA", "HS256"}));
  for (const char* alg : {"RS256", "RS384", "RS512", "PS256", "ES256", "ES384", "EdDSA", "HS256"}) {
    Request r = Request::Bearer(Token(alg));
    EXPECT_EQ(r.Run(*factory), http::FilterStatus::kContinue) << alg << ": " << r.callbacks.message_;
    EXPECT_EQ(r.callbacks.replies_, 0) << alg;
    EXPECT_EQ(r.header("authorization"), "<none>") << alg;  // removed before going upstream
  }
}

TEST_F(JwtTest, AnAlgorithmNotListedIsRefusedWhateverTheKeys) {
  auto factory = Compile(Config({"ES256"}));
  EXPECT_EQ(Refusal(*factory, Token("RS256")), "algorithm not allowed: RS256");
  EXPECT_EQ(Refusal(*factory, Token("HS256")), "algorithm not allowed: HS256");
  EXPECT_EQ(Refusal(*factory, Token("alg_none")), "algorithm not allowed: none");
}

TEST_F(JwtTest, AlgNoneIsRefusedEvenWithEveryAlgorithmAllowed) {
  auto factory = Compile(
      Config({"RS256", "RS384", "RS512", "PS256", "ES256", "ES384", "EdDSA", "HS256"}));
  EXPECT_EQ(Refusal(*factory, Token("alg_none")), "algorithm not allowed: none");
  v1::JwtConfig none = Config({"none"});
  auto errors = Errors(none);
  ASSERT_EQ(errors.size(), 1u) << ErrorText(errors);
  EXPECT_EQ(errors[0].field, "algorithms[0]");
  EXPECT_EQ(errors[0].message, "\"none\" (unsigned tokens) is never allowed");
}

TEST_F(JwtTest, AnHs256TokenKeyedWithTheRsaPublicKeyIsRefused) {
  // The classic confusion: the RSA key's PEM used as an HMAC secret.
  auto both = Compile(Config({"RS256", "HS256"}));
  EXPECT_EQ(Refusal(*both, Token("hs256_rsa_pem_secret")),
            "key does not match the token's algorithm");
  EXPECT_EQ(Refusal(*both, Token("hs256_rsa_pem_secret_no_kid")), "bad signature");  // hs-1 only
  v1::JwtConfig pem;
  pem.add_public_keys_pem()->set_pem(M().pem.at("rsa"));
  pem.add_algorithms("RS256");
  auto rsa_only = Compile(pem);
  EXPECT_EQ(Refusal(*rsa_only, Token("hs256_rsa_pem_secret_no_kid")),
            "algorithm not allowed: HS256");
  Request ok = Request::Bearer(Token("rs256_no_kid"));
  EXPECT_EQ(ok.Run(*rsa_only), http::FilterStatus::kContinue) << ok.callbacks.message_;
  // Unvalidated (HS256 allowed without an HMAC key): still no public key is
  // taken as a secret.
  pem.add_algorithms("HS256");
  auto unvalidated = CompileJwtFilter(pem, [] { return FakeNowMillis(); });
  ASSERT_TRUE(unvalidated.ok());
  EXPECT_EQ(Refusal(**unvalidated, Token("hs256_rsa_pem_secret_no_kid")),
            "no key for the token's algorithm");
}

TEST_F(JwtTest, KeysArePickedByKidOrTriedByType) {
  auto factory = Compile(Config({"ES256"}));
  Request b = Request::Bearer(Token("es256_key_b"));
  EXPECT_EQ(b.Run(*factory), http::FilterStatus::kContinue) << b.callbacks.message_;
  Request no_kid = Request::Bearer(Token("es256_key_b_no_kid"));  // ec-256 fails, ec-256-b fits
  EXPECT_EQ(no_kid.Run(*factory), http::FilterStatus::kContinue) << no_kid.callbacks.message_;
  EXPECT_EQ(Refusal(*factory, Token("es256_key_b_wrong_kid")), "bad signature");
  EXPECT_EQ(Refusal(*factory, Token("es256_unknown_kid")), "unknown kid");
  EXPECT_EQ(Refusal(*factory, Token("es256_other_key")), "bad signature");
  // A kid naming a key of another type.
  auto rsa_and_ec = Compile(Config({"RS256", "ES256"}));
  // An RS256 token whose header names kid ec-256 is not checked with the EC key.
  std::string rs256 = Token("RS256");
  std::string forged = absl::StrCat(absl::WebSafeBase64Escape(R"({"alg":"RS256","kid":"ec-256"})"),
                                    rs256.substr(rs256.find('.')));
  EXPECT_EQ(Refusal(*rsa_and_ec, forged), "key does not match the token's algorithm");
}

TEST_F(JwtTest, ExpiryAndNotBeforeHonourTheLeewayCachedOrNot) {
  auto factory = Compile(Config({"ES256"}));  // leeway 60
  std::string window = Token("window");       // nbf now+1000, exp now+2000
  fake_now = kNow + 939;
  EXPECT_EQ(Refusal(*factory, window), "token not yet valid");
  fake_now = kNow + 940;
  Request early = Request::Bearer(window);
  EXPECT_EQ(early.Run(*factory), http::FilterStatus::kContinue) << early.callbacks.message_;
  fake_now = kNow + 939;  // the clock steps back: the cached entry is not used
  EXPECT_EQ(Refusal(*factory, window), "token not yet valid");
  fake_now = kNow + 2059;
  Request late = Request::Bearer(window);
  EXPECT_EQ(late.Run(*factory), http::FilterStatus::kContinue) << late.callbacks.message_;
  fake_now = kNow + 2060;
  EXPECT_EQ(Refusal(*factory, window), "token expired");
  fake_now = kNow;
  EXPECT_EQ(Refusal(*factory, Token("expired")), "token expired");

  v1::JwtConfig strict = Config({"ES256"});
  strict.set_leeway_seconds(0);
  auto no_leeway = Compile(strict);
  fake_now = kNow + 999;
  EXPECT_EQ(Refusal(*no_leeway, window), "token not yet valid");
  fake_now = kNow + 2000;
  EXPECT_EQ(Refusal(*no_leeway, window), "token expired");
}

// A NumericDate's fraction counts to the millisecond. Before: exp was
// rounded up to a whole second and the clock read in whole seconds, so a
// token with exp now+2000.5 was still accepted at now+2000.9 (and, with the
// leeway, up to two seconds after exp + leeway).
TEST_F(JwtTest, FractionalTimesCountToTheMillisecond) {
  std::string window = Token("fractional_window");  // nbf now+1000.25, exp now+2000.5
  v1::JwtConfig strict = Config({"ES256"});
  strict.set_leeway_seconds(0);
  auto no_leeway = Compile(strict);
  fake_now = kNow + 1000;
  fake_now_extra_ms = 249;
  EXPECT_EQ(Refusal(*no_leeway, window), "token not yet valid");
  fake_now_extra_ms = 250;
  Request first = Request::Bearer(window);
  EXPECT_EQ(first.Run(*no_leeway), http::FilterStatus::kContinue) << first.callbacks.message_;
  fake_now = kNow + 2000;
  fake_now_extra_ms = 499;
  Request cached = Request::Bearer(window);  // the cached acceptance, still in its window
  EXPECT_EQ(cached.Run(*no_leeway), http::FilterStatus::kContinue) << cached.callbacks.message_;
  fake_now_extra_ms = 500;
  EXPECT_EQ(Refusal(*no_leeway, window), "token expired");
  fake_now_extra_ms = 900;
  EXPECT_EQ(Refusal(*no_leeway, window), "token expired");
  // With the leeway: refused from exp + leeway on, to the millisecond.
  auto factory = Compile(Config({"ES256"}));  // leeway 60
  fake_now = kNow + 2060;
  fake_now_extra_ms = 499;
  Request late = Request::Bearer(window);
  EXPECT_EQ(late.Run(*factory), http::FilterStatus::kContinue) << late.callbacks.message_;
  fake_now_extra_ms = 500;
  EXPECT_EQ(Refusal(*factory, window), "token expired");
  fake_now = kNow + 940;
  fake_now_extra_ms = 249;
  EXPECT_EQ(Refusal(*factory, window), "token not yet valid");
}

TEST_F(JwtTest, ExpIsRequiredUnlessTurnedOff) {
  auto factory = Compile(Config({"ES256"}));
  EXPECT_EQ(Refusal(*factory, Token("no_exp")), "token has no expiry (exp)");
  v1::JwtConfig config = Config({"ES256"});
  config.set_require_exp(false);
  auto lenient = Compile(config);
  Request r = Request::Bearer(Token("no_exp"));
  EXPECT_EQ(r.Run(*lenient), http::FilterStatus::kContinue) << r.callbacks.message_;
}

TEST_F(JwtTest, IssuerAndAudienceMustBeAllowed) {
  v1::JwtConfig config = Config({"ES256"});
  config.add_issuers("https://other.test");
  EXPECT_EQ(Refusal(*Compile(config), Token("ES256")), "issuer not allowed");
  config.add_issuers("https://issuer.test");
  config.add_audiences("nope");
  auto wrong_audience = Compile(config);
  EXPECT_EQ(Refusal(*wrong_audience, Token("ES256")), "audience not allowed");
  config.add_audiences("other");  // the token's aud is ["api", "other"]
  auto good = Compile(config);
  Request r = Request::Bearer(Token("ES256"));
  EXPECT_EQ(r.Run(*good), http::FilterStatus::kContinue) << r.callbacks.message_;
  EXPECT_EQ(Refusal(*good, Token("no_iss_no_aud")), "issuer not allowed");
  config.clear_issuers();
  auto any_issuer = Compile(config);
  EXPECT_EQ(Refusal(*any_issuer, Token("no_iss_no_aud")), "audience not allowed");
  config.clear_audiences();
  config.add_audiences("api");
  Request s = Request::Bearer(Token("aud_string"));
  EXPECT_EQ(s.Run(*Compile(config)), http::FilterStatus::kContinue) << s.callbacks.message_;
}

TEST_F(JwtTest, MalformedTokensAreRefusedWithTheReason) {
  auto factory = Compile(Config({"ES256", "HS256"}));
  std::string good = Token("ES256");
  struct Case {
    std::string token;
    std::string message;
  } cases[] = {
      {"abc", "malformed token: not three base64url parts separated by dots"},
      {"a.b", "malformed token: not three base64url parts separated by dots"},
      {good + ".x", "malformed token: not three base64url parts separated by dots"},
      {"!!." + good.substr(good.find('.') + 1), "malformed token: header is not base64url"},
      {"e30=." + good.substr(good.find('.') + 1), "malformed token: header is not base64url"},
      {"bm90IGpzb24." + good.substr(good.find('.') + 1), "malformed token: header is not JSON"},
      {"W10." + good.substr(good.find('.') + 1), "malformed token: header is not a JSON object"},
      // {"alg":"ES256","n":18446744073709551616}: valid JSON, a number past 64 bits.
      {"eyJhbGciOiJFUzI1NiIsIm4iOjE4NDQ2NzQ0MDczNzA5NTUxNjE2fQ." + good.substr(good.find('.') + 1),
       "malformed token: header has a number this gateway cannot read (an integer beyond 64 "
       "bits, a value beyond a double's range, or not a JSON number)"},
      {"e30." + good.substr(good.find('.') + 1), "malformed token: header has no alg"},
      {good.substr(0, good.rfind('.')) + ".a", "malformed token: signature is not base64url"},
      {good.substr(0, good.rfind('.') + 1), "bad signature"},
      {Token("crit"), "malformed token: header has crit (no extension is supported)"},
      {Token("duplicate_alg"), "malformed token: header repeats a member name"},
      {Token("deep_header"), "malformed token: header is nested deeper than 32 levels"},
      {Token("payload_not_json"), "malformed token: payload is not JSON"},
      {Token("payload_exp_string"), "malformed token: exp is not a number"},
      {Token("duplicate_claim"), "malformed token: payload repeats a member name"},
      {std::string(kMaxTokenBytes + 1, 'a'), "malformed token: longer than 8192 bytes"},
  };
  for (const Case& c : cases) {
    EXPECT_EQ(Refusal(*factory, c.token), c.message) << c.token.substr(0, 80);
  }
  // A signature altered in one character.
  std::string tampered = good;
  char& c = tampered[tampered.size() - 10];
  c = c == 'A' ? 'B' : 'A';
  EXPECT_EQ(Refusal(*factory, tampered), "bad signature");
  // The same signature bytes written another way (bits past the last byte
  // set): one encoding only.
  std::string respelled = good;
  ASSERT_EQ((respelled.size() - respelled.rfind('.') - 1) % 4, 2u);  // 64 bytes: 86 characters
  respelled.back() = respelled.back() == 'A' ? 'B' : static_cast<char>(respelled.back() + 1);
  EXPECT_EQ(Refusal(*factory, respelled), "malformed token: signature is not base64url");
}

TEST_F(JwtTest, MissingTokenGetsTheBareChallenge) {
  auto factory = Compile(Config({"ES256"}));
  for (const char* authorization : {"", "Basic YWxpY2U6d29uZGVybGFuZA==", "Bearer ", "Bearer"}) {
    Request r;
    if (*authorization) r.headers.Add("authorization", authorization);
    EXPECT_EQ(r.Run(*factory), http::FilterStatus::kStopLocalReply) << authorization;
    EXPECT_EQ(r.callbacks.status_, 401);
    EXPECT_EQ(r.callbacks.message_, "no bearer token found in request");
    EXPECT_EQ(r.challenge(), "Bearer realm=\"sluice\"");
    if (*authorization) {
      EXPECT_EQ(r.header("authorization"), authorization);  // not ours: kept
    }
  }
}

TEST_F(JwtTest, TokenSourcesAreTriedHeaderCookieQueryAndTheTokenIsRemoved) {
  v1::JwtConfig config = Config({"ES256"});
  config.set_cookie("session_jwt");
  config.set_query_parameter("access_token");
  auto factory = Compile(config);
  std::string token = Token("ES256");

  Request lower;
  lower.headers.Add("authorization", "bearer   " + token);
  EXPECT_EQ(lower.Run(*factory), http::FilterStatus::kContinue) << lower.callbacks.message_;

  Request cookie;
  cookie.headers.Add("cookie", "a=1; session_jwt=" + token + "; b=2");
  cookie.headers.Add("cookie", "session_jwt=" + token);
  EXPECT_EQ(cookie.Run(*factory), http::FilterStatus::kContinue) << cookie.callbacks.message_;
  ASSERT_EQ(cookie.headers.Remove("cookie"), 1u);  // the second field had only the token
  Request cookie_again;
  cookie_again.headers.Add("cookie", "a=1; session_jwt=\"" + token + "\"; b=2");
  EXPECT_EQ(cookie_again.Run(*factory), http::FilterStatus::kContinue);
  EXPECT_EQ(cookie_again.header("cookie"), "a=1; b=2");

  Request query("/api/items?page=2&access_token=" + token + "&sort=asc");
  EXPECT_EQ(query.Run(*factory), http::FilterStatus::kContinue) << query.callbacks.message_;
  EXPECT_EQ(query.callbacks.path_, "/api/items?page=2&sort=asc");

  // The header comes first: its bad token is the answer though the cookie's is good.
  Request both;
  both.headers.Add("authorization", "Bearer " + Token("expired"));
  both.headers.Add("cookie", "session_jwt=" + token);
  EXPECT_EQ(both.Run(*factory), http::FilterStatus::kStopLocalReply);
  EXPECT_EQ(both.callbacks.message_, "token expired");

  // Tokens in the later sources were never checked: removed too (they
  // went upstream before, with the checked token's consumer).
  Request forged("/x?a=1&access_token=FORGED");
  forged.headers.Add("authorization", "Bearer " + token);
  forged.headers.Add("cookie", "k=1; session_jwt=FORGED2");
  EXPECT_EQ(forged.Run(*factory), http::FilterStatus::kContinue) << forged.callbacks.message_;
  EXPECT_EQ(forged.header("authorization"), "<none>");
  EXPECT_EQ(forged.header("cookie"), "k=1");
  EXPECT_EQ(forged.callbacks.path_, "/x?a=1");

  // keep_token keeps the checked token only.
  config.set_keep_token(true);
  auto keep = Compile(config);
  Request kept("/x?access_token=" + token);
  kept.headers.Add("cookie", "session_jwt=" + token);
  kept.headers.Add("authorization", "Bearer " + token);
  EXPECT_EQ(kept.Run(*keep), http::FilterStatus::kContinue);
  EXPECT_EQ(kept.header("authorization"), "Bearer " + token);
  EXPECT_EQ(kept.header("cookie"), "<none>");
  EXPECT_EQ(kept.callbacks.path_, "/x");
  Request kept_cookie("/x?access_token=" + token);
  kept_cookie.headers.Add("cookie", "session_jwt=" + token);
  EXPECT_EQ(kept_cookie.Run(*keep), http::FilterStatus::kContinue);
  EXPECT_EQ(kept_cookie.header("cookie"), "session_jwt=" + token);
  EXPECT_EQ(kept_cookie.callbacks.path_, "/x");
  // keep_token with two copies in the source used: the second one, never
  // checked, might be the one an upstream reads (both went upstream).
  Request two_cookies;
  two_cookies.headers.Add("cookie", "session_jwt=" + token);
  two_cookies.headers.Add("cookie", "session_jwt=evil");
  EXPECT_EQ(two_cookies.Run(*keep), http::FilterStatus::kStopLocalReply);
  EXPECT_EQ(two_cookies.callbacks.status_, 400);
  EXPECT_EQ(two_cookies.callbacks.message_, "more than one session_jwt cookie");
  EXPECT_EQ(two_cookies.challenge(),
            "Bearer realm=\"sluice\", error=\"invalid_request\", "
            "error_description=\"more than one session_jwt cookie\"");
  Request two_params("/x?access_token=" + token + "&access_token=evil");
  EXPECT_EQ(two_params.Run(*keep), http::FilterStatus::kStopLocalReply);
  EXPECT_EQ(two_params.callbacks.message_, "more than one access_token query parameter");
  // After a ';' (read by Rack 2, older Python and Go): neither checked nor
  // removable, so refused, with or without keep_token.
  for (const http::FilterFactory* f : {keep.get(), factory.get()}) {
    Request hidden("/x?a=1;access_token=evil");
    hidden.headers.Add("authorization", "Bearer " + token);
    EXPECT_EQ(hidden.Run(*f), http::FilterStatus::kStopLocalReply);
    EXPECT_EQ(hidden.callbacks.status_, 400);
    EXPECT_EQ(hidden.callbacks.message_, "access_token query parameter after a ';'");
  }
  Request semicolon_value("/x?a=1;b=2");  // other parameters with ';' are no matter
  semicolon_value.headers.Add("authorization", "Bearer " + token);
  EXPECT_EQ(semicolon_value.Run(*factory), http::FilterStatus::kContinue);
  // Names PHP reads as access_token count as it (they were left upstream,
  // where $_GET['access_token'] is the unchecked copy).
  for (const char* other : {"access.token", "access+token", "access%20token", "access[token",
                            "access_token%5B%5D", "+access_token", "%20access.token",
                            "access_token%00x"}) {
    Request php(absl::StrCat("/x?access_token=", token, "&", other, "=evil"));
    EXPECT_EQ(php.Run(*keep), http::FilterStatus::kStopLocalReply) << other;
    Request stripped(absl::StrCat("/x?a=1&", other, "=evil"));
    stripped.headers.Add("authorization", "Bearer " + token);
    EXPECT_EQ(stripped.Run(*factory), http::FilterStatus::kContinue) << other;
    EXPECT_EQ(stripped.callbacks.path_, "/x?a=1") << other;
  }
  // And not others: %2B is a '+' PHP keeps, and after an unmatched '[' PHP
  // rewrites nothing more.
  for (const char* unrelated : {"access%2Btoken", "access[to.ken"}) {
    Request kept_param(absl::StrCat("/x?", unrelated, "=1"));
    kept_param.headers.Add("authorization", "Bearer " + token);
    EXPECT_EQ(kept_param.Run(*factory), http::FilterStatus::kContinue) << unrelated;
    EXPECT_EQ(kept_param.callbacks.path_, absl::StrCat("/x?", unrelated, "=1")) << unrelated;
  }
}

TEST_F(JwtTest, ACustomHeaderWithoutPrefixAndTheHeaderTurnedOff) {
  v1::JwtConfig config = Config({"ES256"});
  config.set_header("X-JWT");
  config.set_header_prefix("");
  auto custom = Compile(config);
  Request r;
  r.headers.Add("x-jwt", Token("ES256"));
  EXPECT_EQ(r.Run(*custom), http::FilterStatus::kContinue) << r.callbacks.message_;
  EXPECT_EQ(r.header("x-jwt"), "<none>");
  // A trailer of that name carries a token never checked: dropped.
  EXPECT_EQ(custom->removed_request_fields(), std::vector<std::string>{"X-JWT"});
  // Its CGI spelling carries a token never checked either: removed (it went
  // upstream, where CGI reads it as the token's field).
  Request spelled;
  spelled.headers.Add("x-jwt", Token("ES256"));
  spelled.headers.Add("x_jwt", "evil");
  EXPECT_EQ(spelled.Run(*custom), http::FilterStatus::kContinue) << spelled.callbacks.message_;
  EXPECT_EQ(spelled.header("x_jwt"), "<none>");

  config.set_header("");
  config.clear_header_prefix();
  config.set_query_parameter("jwt");
  auto query_only = Compile(config);
  Request header_only = Request::Bearer(Token("ES256"));
  EXPECT_EQ(header_only.Run(*query_only), http::FilterStatus::kStopLocalReply);
  EXPECT_EQ(header_only.callbacks.message_, "no bearer token found in request");
}

// Another policy of a group identified the caller: jwt drops its token
// whatever keep_token says, a `Bearer<TAB>T` field it never checks, and
// cookies PHP reads as its cookie (`jwt.token` is `$_COOKIE['jwt_token']`).
TEST_F(JwtTest, SkippedInAGroupItDropsEveryFormOfItsToken) {
  v1::JwtConfig config = Config({"ES256"});
  config.set_keep_token(true);
  config.set_cookie("jwt_token");
  auto factory = Compile(config);
  Request r;
  r.headers.Add("Authorization", "Basic YWxpY2U6eA==");  // another policy's
  r.headers.Add("Authorization", "bearer\tforged.token.two");
  r.headers.Add("Cookie", "jwt.token=forged; a=1; jwt token=forged; jwt[token=forged; b=2");
  auto filter = factory->CreateFilter();
  filter->OnSkippedInGroup(r.headers, r.callbacks);
  EXPECT_EQ(r.headers.Count("authorization"), 1u);
  EXPECT_EQ(r.header("authorization"), "Basic YWxpY2U6eA==");
  EXPECT_EQ(r.header("cookie"), "a=1; b=2");
}

TEST_F(JwtTest, ClaimsGoToHeadersAndClientCopiesAreRemoved) {
  v1::JwtConfig config = Config({"ES256"});
  for (auto [claim, header] : std::initializer_list<std::pair<const char*, const char*>>{
           {"email", "X-User-Email"}, {"roles", "x-roles"}, {"level", "x-level"},
           {"ratio", "x-ratio"}, {"active", "x-active"}, {"org", "x-org"},
           {"missing", "x-missing"}}) {
    auto* c = config.add_claims_to_headers();
    c->set_claim(claim);
    c->set_header(header);
  }
  auto factory = Compile(config);
  Request r = Request::Bearer(Token("ES256"));
  r.headers.Add("x-user-email", "mallory@example.com");
  r.headers.Add("X-Org", "forged");
  r.headers.Add("x-missing", "forged");
  EXPECT_EQ(r.Run(*factory), http::FilterStatus::kContinue) << r.callbacks.message_;
  EXPECT_EQ(r.header("x-user-email"), "alice@example.com");
  EXPECT_EQ(r.headers.Remove("x-user-email"), 1u);
  EXPECT_EQ(r.header("x-roles"), "admin,dev");
  EXPECT_EQ(r.header("x-level"), "3");
  EXPECT_EQ(r.header("x-ratio"), "1.5");
  EXPECT_EQ(r.header("x-active"), "true");
  EXPECT_EQ(r.header("x-org"), "<none>");      // an object is not copied
  EXPECT_EQ(r.header("x-missing"), "<none>");  // the client's copy is gone too
  // And are recorded for a response cache keyed by consumer.
  EXPECT_EQ(r.callbacks.info().consumer_claims,
            "x-user-email=alice@example.com\nx-roles=admin,dev\nx-level=3\nx-ratio=1.5\n"
            "x-active=true\n");
  // Served from the cache the second time: the same headers.
  Request again = Request::Bearer(Token("ES256"));
  EXPECT_EQ(again.Run(*factory), http::FilterStatus::kContinue);
  EXPECT_EQ(again.header("x-roles"), "admin,dev");
  EXPECT_EQ(again.callbacks.info().consumer_claims, r.callbacks.info().consumer_claims);
  // A claim that would break the header block is not copied.
  Request evil = Request::Bearer(Token("evil_claim"));
  EXPECT_EQ(evil.Run(*factory), http::FilterStatus::kContinue);
  EXPECT_EQ(evil.header("x-user-email"), "<none>");
  EXPECT_EQ(evil.header("x-admin"), "<none>");
  // An array item that a reader would split or trim is not copied:
  // ["user,admin"] is not two roles. Nor is an empty value, as an absent
  // claim (before: [] and "" set an empty header, which an upstream may
  // read otherwise than none).
  for (const char* name : {"comma_role", "spaced_role", "empty_roles", "empty_string_role"}) {
    Request listed = Request::Bearer(Token(name));
    EXPECT_EQ(listed.Run(*factory), http::FilterStatus::kContinue) << name;
    EXPECT_EQ(listed.header("x-roles"), "<none>") << name;
    EXPECT_EQ(listed.header("x-user-email"), "alice@example.com") << name;
  }
}

TEST_F(JwtTest, TheConsumerClaimNamesTheConsumer) {
  v1::JwtConfig config = Config({"ES256"});
  config.set_consumer_claim("sub");
  auto factory = Compile(config);
  Request alice = Request::Bearer(Token("ES256"));
  EXPECT_EQ(alice.Run(*factory), http::FilterStatus::kContinue) << alice.callbacks.message_;
  EXPECT_EQ(alice.consumer(), "alice");
  EXPECT_FALSE(alice.callbacks.info_.anonymous_consumer);
  Request bob = Request::Bearer(Token("sub_bob"));
  EXPECT_EQ(bob.Run(*factory), http::FilterStatus::kContinue);
  EXPECT_EQ(bob.consumer(), "bob");
  EXPECT_EQ(Refusal(*factory, Token("sub_mallory")), "token's consumer is not known");
  EXPECT_EQ(Refusal(*factory, Token("sub_number")), "token's sub claim is missing or not a string");
  // Without consumer_claim the token alone lets the request through.
  auto anyone = Compile(Config({"ES256"}));
  Request plain = Request::Bearer(Token("sub_mallory"));
  EXPECT_EQ(plain.Run(*anyone), http::FilterStatus::kContinue);
  EXPECT_EQ(plain.callbacks.info_.consumer, nullptr);
}

TEST_F(JwtTest, AnonymousTakesRequestsWithoutAnAcceptedToken) {
  v1::JwtConfig config = Config({"ES256"});
  config.set_consumer_claim("sub");
  config.set_anonymous("guest");
  auto factory = Compile(config);
  for (const std::string& token : {std::string(), Token("expired"), Token("sub_mallory")}) {
    Request r = token.empty() ? Request() : Request::Bearer(token);
    EXPECT_EQ(r.Run(*factory), http::FilterStatus::kContinue);
    EXPECT_EQ(r.consumer(), "guest");
    EXPECT_TRUE(r.callbacks.info_.anonymous_consumer);
    EXPECT_EQ(r.header("authorization"), "<none>");
  }
  // No token of its form (`Bearer<TAB>T`, which upstreams splitting at any
  // white space read), or a refused one kept by keep_token: the anonymous
  // request goes on without it. Before: it reached the upstream.
  config.set_keep_token(true);
  auto keep = Compile(config);
  for (const std::string& value :
       {"Bearer\t" + Token("ES256"), "bearer\t\t" + Token("ES256"),
        "Bearer " + Token("expired")}) {
    Request r;
    r.headers.Add("Authorization", value);
    EXPECT_EQ(r.Run(*keep), http::FilterStatus::kContinue) << value;
    EXPECT_EQ(r.consumer(), "guest") << value;
    EXPECT_EQ(r.header("authorization"), "<none>") << value;
  }
  Request accepted = Request::Bearer(Token("ES256"));
  EXPECT_EQ(accepted.Run(*keep), http::FilterStatus::kContinue);
  EXPECT_EQ(accepted.consumer(), "alice");
  EXPECT_NE(accepted.header("authorization"), "<none>");
  config.set_anonymous("nobody");
  Request r;
  EXPECT_EQ(r.Run(*Compile(config)), http::FilterStatus::kStopLocalReply);
  EXPECT_EQ(r.callbacks.status_, 500);
}

TEST_F(JwtTest, WithKeyAuthOnTheRouteEitherIdentifiesTheCaller) {
  v1::JwtConfig config = Config({"ES256"});
  config.set_consumer_claim("sub");
  FactoryList chain = OrderChain(
      {Compile(config), FindPolicyFactory("key-auth")->Compile(key_auth::v1::KeyAuthConfig()).value()});
  ASSERT_EQ(chain.size(), 1u);
  Request jwt = Request::Bearer(Token("sub_bob"));
  EXPECT_EQ(jwt.Run(*chain[0]), http::FilterStatus::kContinue);
  EXPECT_EQ(jwt.consumer(), "bob");
  Request key;
  key.headers.Add("apikey", "alice-key-123");
  EXPECT_EQ(key.Run(*chain[0]), http::FilterStatus::kContinue);
  EXPECT_EQ(key.consumer(), "alice");
  Request none;
  EXPECT_EQ(none.Run(*chain[0]), http::FilterStatus::kStopLocalReply);
  EXPECT_EQ(none.callbacks.message_, "no bearer token found in request");
  // A route whose jwt also reads a cookie and a query parameter: when the
  // key identifies the caller, tokens in every jwt source are removed (the
  // query and cookie ones went upstream before).
  config.set_cookie("tok");
  config.set_query_parameter("access_token");
  FactoryList sources = OrderChain(
      {FindPolicyFactory("key-auth")->Compile(key_auth::v1::KeyAuthConfig()).value(),
       Compile(config)});
  Request keyed("/x?access_token=zzz&b=2");
  keyed.headers.Add("apikey", "alice-key-123");
  keyed.headers.Add("cookie", "tok=zzz; k=1");
  EXPECT_EQ(keyed.Run(*sources[0]), http::FilterStatus::kContinue) << keyed.callbacks.message_;
  EXPECT_EQ(keyed.consumer(), "alice");
  EXPECT_EQ(keyed.header("cookie"), "k=1");
  EXPECT_EQ(keyed.callbacks.path_, "/x?b=2");
}

TEST_F(JwtTest, AcceptedTokensAreCachedPerConfigAndAKeyChangeMisses) {
  v1::JwtConfig config = Config({"ES256"}, "es256");
  config.add_audiences("api");  // a config no other test uses
  auto factory = Compile(config);
  std::string token = Token("ES256");
  VerifiedTokenCache& cache = VerifiedTokenCache::Get();
  Request first = Request::Bearer(token);
  EXPECT_EQ(first.Run(*factory), http::FilterStatus::kContinue);
  VerifiedTokenCache::Stats before = cache.stats();
  Request second = Request::Bearer(token);
  EXPECT_EQ(second.Run(*factory), http::FilterStatus::kContinue);
  VerifiedTokenCache::Stats after = cache.stats();
  EXPECT_EQ(after.hits, before.hits + 1);
  EXPECT_EQ(after.misses, before.misses);
  // kid ec-256 now names another key: the cached acceptance does not count.
  v1::JwtConfig rotated = Config({"ES256"}, "es256_rotated");
  rotated.add_audiences("api");
  EXPECT_EQ(Refusal(*Compile(rotated), token), "bad signature");
  // Nor under a config that checks more.
  config.add_issuers("https://other.test");
  EXPECT_EQ(Refusal(*Compile(config), token), "issuer not allowed");
}

TEST_F(JwtTest, PemKeysOfEachTypeVerify) {
  v1::JwtConfig config;
  for (const char* name : {"rsa", "ec256", "ed25519"}) {
    config.add_public_keys_pem()->set_pem(M().pem.at(name));
  }
  config.mutable_public_keys_pem(1)->set_kid("ec-256");
  for (const char* a : {"RS256", "PS256", "ES256", "EdDSA"}) config.add_algorithms(a);
  auto factory = Compile(config);
  for (const char* alg : {"RS256", "PS256", "ES256", "EdDSA"}) {
    // RS256/PS256 and EdDSA carry kids the PEMs do not have: a key without
    // a kid is tried for any (a kid is a hint, RFC 7515 4.1.4; Envoy's
    // jwt_authn does the same). Refused before with "unknown kid".
    Request r = Request::Bearer(Token(alg));
    EXPECT_EQ(r.Run(*factory), http::FilterStatus::kContinue) << alg << ": " << r.callbacks.message_;
  }
  Request no_kid = Request::Bearer(Token("rs256_no_kid"));
  EXPECT_EQ(no_kid.Run(*factory), http::FilterStatus::kContinue) << no_kid.callbacks.message_;
  // When every key has a kid, a token's unknown kid is refused as such.
  config.mutable_public_keys_pem(0)->set_kid("rsa-pem");
  config.mutable_public_keys_pem(2)->set_kid("ed-pem");
  auto all_named = Compile(config);
  Request named = Request::Bearer(Token("RS256"));
  EXPECT_EQ(named.Run(*all_named), http::FilterStatus::kStopLocalReply);
  EXPECT_EQ(named.callbacks.message_, "unknown kid");
  // A kid-less key of another type than the token's algorithm.
  config.mutable_public_keys_pem(0)->clear_kid();
  auto rsa_unnamed = Compile(config);
  Request eddsa = Request::Bearer(Token("EdDSA"));
  EXPECT_EQ(eddsa.Run(*rsa_unnamed), http::FilterStatus::kStopLocalReply);
  EXPECT_EQ(eddsa.callbacks.message_, "key does not match the token's algorithm");
}

TEST_F(JwtTest, KeyErrorsNameTheKeyAndTheReason) {
  auto key_errors = [](const std::string& jwks) {
    v1::JwtConfig config;
    config.set_jwks(jwks);
    config.add_algorithms("RS256");
    return Errors(config);
  };
  auto first = [&](const std::string& jwks) {
    auto errors = key_errors(jwks);
    return errors.empty() ? std::string("<none>") : errors[0].field + ": " + errors[0].message;
  };
  EXPECT_EQ(first(M().bad_jwks.at("rsa1024")),
            "jwks: key 0 (kid \"small\"): RSA key of 1024 bits; 2048..8192 are accepted");
  EXPECT_EQ(first(M().bad_jwks.at("bad_point")),
            "jwks: key 0 (kid \"bad-point\"): the point (x, y) is not on the curve");
  EXPECT_EQ(first(M().bad_jwks.at("private")),
            "jwks: key 0 (kid \"private\"): holds private key material (d); give the public "
            "key only");
  EXPECT_EQ(first(R"({"keys":[{"kty":"oct","k":"c2hvcnQ"},{"kty":"EC","kid":"x","crv":"P-521","x":"AA","y":"AA"}]})"),
            "jwks: key 0: k is 5 bytes; HS256 takes 32..1024 (RFC 7518 3.2)");
  // Only `k` is redacted where config is shown: an oct key carries nothing
  // else secret, and no member twice (two readers could take two keys).
  const std::string k43 = std::string(43, 'A');
  EXPECT_EQ(first(R"({"keys":[{"kty":"oct","k":")" + k43 + R"(","d":"c2VjcmV0"}]})"),
            "jwks: key 0: an oct key takes only kty, k, kid, alg, use, key_ops and ext; \"d\" is "
            "not one (it would be shown unredacted)");
  EXPECT_EQ(first(R"({"keys":[{"kty":"oct","k":")" + k43 + R"(","k":")" + std::string(43, 'g') +
                  R"("}]})"),
            "jwks: key 0: member \"k\" appears twice");
  EXPECT_EQ(first(R"({"keys":[{"kty":"oct","k":")" + k43 + R"("}],"keys":[]})"),
            "jwks: names \"keys\" more than once");
  EXPECT_EQ(first(R"({"keys":[{"kty":"RSA","kid":"o","n":"AQAB","e":"AQAB","oth":[]}]})"),
            "jwks: key 0 (kid \"o\"): holds private key material (oth); give the public key only");
  auto two = key_errors(
      R"({"keys":[{"kty":"oct","k":"c2hvcnQ"},{"kty":"EC","kid":"x","crv":"P-521","x":"AA","y":"AA"}]})");
  ASSERT_GE(two.size(), 2u);
  EXPECT_EQ(two[1].message, "key 1 (kid \"x\"): crv \"P-521\" is not supported (P-256, P-384)");
  EXPECT_EQ(first(R"({"keys":[{"kty":"RSA","kid":"e","use":"enc","n":"AQAB","e":"AQAB"}]})"),
            "jwks: key 0 (kid \"e\"): use is \"enc\"; only \"sig\" keys verify tokens");
  EXPECT_EQ(first(R"({"keys":[{"kty":"OKP","crv":"Ed25519","x":"AAAA","alg":"ES256"}]})"),
            "jwks: key 0: x must be 32 bytes for Ed25519");
  EXPECT_EQ(first(R"({"keys":[{"kty":"oct","k":"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA","alg":"RS256"}]})"),
            "jwks: key 0: alg \"RS256\" does not fit a key of kty \"oct\"");
  EXPECT_EQ(first(R"({"keys":[{"kty":"DSA"}]})"),
            "jwks: key 0: kty \"DSA\" is not supported (RSA, EC, OKP, oct)");
  EXPECT_EQ(first(R"({"keys":[{"n":"AQAB"}]})"), "jwks: key 0: kty is missing");
  // Ed25519 keys of small order verify signatures anyone can make (R the
  // identity, S = 0); before, they were accepted and such tokens passed.
  auto okp = [&](std::string x) {
    return first(R"({"keys":[{"kty":"OKP","crv":"Ed25519","kid":"z","x":")" +
                 absl::WebSafeBase64Escape(x) + R"("}]})");
  };
  const std::string small_order =
      "jwks: key 0 (kid \"z\"): the Ed25519 key is a point of small order: it verifies "
      "signatures anyone can make";
  EXPECT_EQ(okp(std::string(32, '\0')), small_order);
  EXPECT_EQ(okp(std::string("\x01", 1) + std::string(31, '\0')), small_order);
  std::string order8 = absl::HexStringToBytes(
      "c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac037a");
  EXPECT_EQ(okp(order8), small_order);
  order8[31] = static_cast<char>(order8[31] | 0x80);  // the other sign of x
  EXPECT_EQ(okp(order8), small_order);
  // Every real key is a point on the curve: 200 fresh ones are taken.
  for (int i = 0; i < 200; ++i) {
    EVP_PKEY* fresh = nullptr;
    EVP_PKEY_CTX* keygen = EVP_PKEY_CTX_new_id(EVP_PKEY_ED25519, nullptr);
    ASSERT_NE(keygen, nullptr);
    ASSERT_EQ(EVP_PKEY_keygen_init(keygen), 1);
    ASSERT_EQ(EVP_PKEY_keygen(keygen, &fresh), 1);
    EVP_PKEY_CTX_free(keygen);
    unsigned char raw[32];
    size_t raw_length = sizeof raw;
    ASSERT_EQ(EVP_PKEY_get_raw_public_key(fresh, raw, &raw_length), 1);
    EVP_PKEY_free(fresh);
    const std::string x(reinterpret_cast<const char*>(raw), raw_length);
    // (The key is taken: only the RS256 this config asks for has no key.)
    ASSERT_EQ(okp(x), "algorithms[0]: no key can verify RS256 tokens")
        << absl::BytesToHexString(x);
  }
  // y = 2 is no point's (before: taken, a key that verified nothing).
  EXPECT_EQ(okp(std::string("\x02", 1) + std::string(31, '\0')),
            "jwks: key 0 (kid \"z\"): the Ed25519 key is not a point on the curve (no x has "
            "its y)");
  EXPECT_EQ(okp("\xed" + std::string(30, '\xff') + "\x7f"),
            "jwks: key 0 (kid \"z\"): the Ed25519 key is not canonically encoded (its y is not "
            "below p)");
  // RFC 8017 3.1: e < n; and e of at most 33 bits. Before, both were
  // accepted, the first a key that verified nothing. A modulus of two
  // fresh 1024-bit primes, as real keys have.
  auto prime = [](int bits) {
    BIGNUM* p = BN_new();
    EXPECT_EQ(BN_generate_prime_ex(p, bits, 0, nullptr, nullptr, nullptr), 1);
    return p;
  };
  auto bytes = [](const BIGNUM* b) {
    std::string out(static_cast<size_t>(BN_num_bytes(b)), '\0');
    BN_bn2bin(b, reinterpret_cast<unsigned char*>(out.data()));
    return out;
  };
  BN_CTX* ctx = BN_CTX_new();
  BIGNUM* p = prime(1024);
  BIGNUM* q = prime(1024);
  BIGNUM* product = BN_new();
  ASSERT_EQ(BN_mul(product, p, q, ctx), 1);
  const std::string n = bytes(product);
  auto rsa = [&](const std::string& e) {
    return first(R"({"keys":[{"kty":"RSA","kid":"r","n":")" + absl::WebSafeBase64Escape(n) +
                 R"(","e":")" + absl::WebSafeBase64Escape(e) + R"("}]})");
  };
  EXPECT_EQ(rsa(n), "jwks: key 0 (kid \"r\"): RSA public exponent must be less than the "
                    "modulus (RFC 8017 3.1)");
  EXPECT_EQ(rsa("\x01" + n), "jwks: key 0 (kid \"r\"): RSA public exponent must be less than "
                             "the modulus (RFC 8017 3.1)");
  EXPECT_EQ(rsa(std::string("\x02\0\0\0\x01", 5)),
            "jwks: key 0 (kid \"r\"): RSA public exponent is over 33 bits; keys use 65537");
  EXPECT_EQ(rsa(std::string("\x01\0\x01", 3)), "<none>");
  const std::string even = "\xc1" + std::string(255, '\0');
  EXPECT_EQ(first(R"({"keys":[{"kty":"RSA","kid":"r","n":")" + absl::WebSafeBase64Escape(even) +
                  R"(","e":"AQAB"}]})"),
            "jwks: key 0 (kid \"r\"): RSA modulus is even: it is no RSA public key");
  // A modulus whose private key follows from it: a small prime factor
  // (3q), a prime one, a square (p^2). Each verified tokens anyone could
  // sign (a probe signed {"sub":"admin"} with 3q's). Before: taken.
  auto with_n = [&](const std::string& modulus) {
    return first(R"({"keys":[{"kty":"RSA","kid":"r","n":")" + absl::WebSafeBase64Escape(modulus) +
                 R"(","e":"AQAB"}]})");
  };
  BIGNUM* weak = BN_new();
  ASSERT_EQ(BN_mul_word(p, 3) + BN_mul(weak, p, q, ctx), 2);  // 3pq
  EXPECT_EQ(with_n(bytes(weak)),
            "jwks: key 0 (kid \"r\"): RSA modulus has the small prime factor 3: its private key "
            "follows from it, and anyone can sign");
  BN_free(p);
  p = prime(2048);
  EXPECT_EQ(with_n(bytes(p)), "jwks: key 0 (kid \"r\"): RSA modulus is prime: its private key "
                              "follows from it, and anyone can sign");
  BN_free(p);
  p = prime(1024);
  ASSERT_EQ(BN_sqr(weak, p, ctx), 1);
  EXPECT_EQ(with_n(bytes(weak)), "jwks: key 0 (kid \"r\"): RSA modulus is a square: its private "
                                 "key follows from it, and anyone can sign");
  // 65521 (the largest prime below 2^16) times a 2032-bit prime.
  BN_free(p);
  p = prime(2032);
  ASSERT_EQ(BN_mul_word(p, 65521), 1);
  EXPECT_TRUE(absl::StrContains(with_n(bytes(p)), "small prime factor 65521")) << with_n(bytes(p));
  // The second regression probe's: a cube (p^3), and primes 2^100 apart
  // (Fermat's method). Before: taken, and its forged tokens passed.
  BN_free(p);
  p = prime(683);
  BIGNUM* cube = BN_new();
  ASSERT_EQ(BN_sqr(cube, p, ctx) + BN_mul(cube, cube, p, ctx), 2);
  EXPECT_EQ(with_n(bytes(cube)), "jwks: key 0 (kid \"r\"): RSA modulus is a cube: its private "
                                 "key follows from it, and anyone can sign");
  BN_free(cube);
  BN_free(p);
  p = prime(1024);
  BIGNUM* near = BN_new();
  ASSERT_EQ(BN_copy(near, p) != nullptr, true);
  BIGNUM* gap = BN_new();
  ASSERT_EQ(BN_set_bit(gap, 100) + BN_add(near, near, gap), 2);  // p + 2^100: odd
  while (BN_check_prime(near, ctx, nullptr) != 1) ASSERT_EQ(BN_add_word(near, 2), 1);
  BIGNUM* close = BN_new();
  ASSERT_EQ(BN_mul(close, p, near, ctx), 1);
  EXPECT_EQ(with_n(bytes(close)),
            "jwks: key 0 (kid \"r\"): RSA modulus has two prime factors so close that Fermat's "
            "method finds them: its private key follows from it, and anyone can sign");
  BN_free(close);
  BN_free(gap);
  BN_free(near);
  BN_free(weak);
  BN_free(p);
  BN_free(q);
  BN_free(product);
  BN_CTX_free(ctx);
  // RFC 7517 4.3: no key operation twice.
  EXPECT_EQ(first(R"({"keys":[{"kty":"RSA","kid":"r","n":")" + absl::WebSafeBase64Escape(n) +
                  R"(","e":"AQAB","key_ops":["verify","verify"]}]})"),
            "jwks: key 0 (kid \"r\"): key_ops holds \"verify\" twice (RFC 7517 4.3)");
  EXPECT_EQ(first(R"({"keys":[{"kty":"RSA","n":"@@","e":"AQAB"}]})"),
            "jwks: key 0: n is not base64url (without padding)");
  // The alphabet, but bits set past the last byte (an edited last character).
  EXPECT_EQ(first(R"({"keys":[{"kty":"RSA","n":"AQAB","e":"AQB"}]})"),
            "jwks: key 0: e is not canonical base64url: its last character sets bits past the "
            "last byte (was the value edited or cut short?)");
  EXPECT_EQ(first("{\"keys\": 5}"),
            "jwks: is not a JWK Set (a JSON object with a \"keys\" array)");
  EXPECT_TRUE(absl::StartsWith(first("{nope"), "jwks: is not JSON: ")) << first("{nope");
  EXPECT_EQ(first(R"({"keys":[]})"), "jwks: no keys: give jwks (a JWK Set) and/or public_keys_pem");
  EXPECT_EQ(first(""), "jwks: no keys: give jwks (a JWK Set) and/or public_keys_pem");

  v1::JwtConfig pem;
  pem.add_algorithms("RS256");
  pem.add_public_keys_pem()->set_pem(M().pem.at("rsa1024"));
  pem.add_public_keys_pem()->set_pem("-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n");
  auto* dup = pem.add_public_keys_pem();
  dup->set_pem(M().pem.at("rsa"));
  dup->set_kid("k");
  auto* dup2 = pem.add_public_keys_pem();
  dup2->set_pem(M().pem.at("rsa"));
  dup2->set_kid("k");
  // An Ed25519 PEM of small order, as its JWK.
  pem.add_public_keys_pem()->set_pem(
      "-----BEGIN PUBLIC KEY-----\n" +
      absl::Base64Escape(absl::HexStringToBytes("302a300506032b6570032100") +
                         std::string(32, '\0')) +
      "\n-----END PUBLIC KEY-----\n");
  auto errors = Errors(pem);
  ASSERT_EQ(errors.size(), 4u) << ErrorText(errors);
  EXPECT_EQ(errors[3].field, "public_keys_pem[4].pem");
  EXPECT_EQ(errors[3].message,
            "the Ed25519 key is a point of small order: it verifies signatures anyone can make");
  EXPECT_EQ(errors[0].field, "public_keys_pem[0].pem");
  EXPECT_EQ(errors[0].message, "RSA key of 1024 bits; 2048..8192 are accepted");
  EXPECT_EQ(errors[1].field, "public_keys_pem[1].pem");
  EXPECT_EQ(errors[1].message, "is not a PEM public key (-----BEGIN PUBLIC KEY-----)");
  EXPECT_EQ(errors[2].field, "public_keys_pem[3].kid");
  EXPECT_EQ(errors[2].message, "kid \"k\" is used by another key");

  // A private key beside the public one (OpenSSL skips the block it was not
  // asked for): refused, named by its label only (before: accepted, and
  // shown in full by sluicectl get, history and /config_dump).
  const std::string private_block =
      "-----BEGIN PRIVATE KEY-----\nMIIEsecretsecret\n-----END PRIVATE KEY-----\n";
  v1::JwtConfig mixed;
  mixed.add_algorithms("RS256");
  mixed.add_public_keys_pem()->set_pem(private_block + M().pem.at("rsa"));
  mixed.add_public_keys_pem()->set_pem(M().pem.at("rsa") + private_block);
  mixed.add_public_keys_pem()->set_pem(M().pem.at("rsa") + M().pem.at("rsa"));
  mixed.add_public_keys_pem()->set_pem("a note\n" + M().pem.at("rsa"));
  mixed.add_public_keys_pem()->set_pem("\n\n" + M().pem.at("rsa") + "\n\n");  // fine
  // A stored or pushed policy (Validate, and the proxy's compile) keeps
  // working: the first PUBLIC KEY is taken, as earlier builds did. Only an
  // apply (ValidateNew) refuses it.
  errors = Errors(mixed);
  EXPECT_TRUE(errors.empty()) << ErrorText(errors);
  errors.clear();
  api::FindPolicyValidator("jwt")->ValidateNew(mixed, &errors);
  ASSERT_EQ(errors.size(), 4u) << ErrorText(errors);
  EXPECT_EQ(errors[0].field, "public_keys_pem[0].pem");
  EXPECT_EQ(errors[0].message,
            "PEM block 1 is a 'PRIVATE KEY', not a PUBLIC KEY (a private key never belongs in a "
            "policy)");
  EXPECT_EQ(errors[1].message,
            "PEM block 2 is a 'PRIVATE KEY', not a PUBLIC KEY (a private key never belongs in a "
            "policy)");
  EXPECT_EQ(errors[2].message, "holds more than one PEM block: give each public key its own entry");
  EXPECT_EQ(errors[3].field, "public_keys_pem[3].pem");
  EXPECT_EQ(errors[3].message, "holds text outside its PEM block");
  for (const auto& e : errors) EXPECT_FALSE(absl::StrContains(e.message, "secret")) << e.message;
}

// A claim written into Cookie or Authorization would pass for the
// client's session or credentials: refused at apply (a stored policy keeps
// working).
TEST_F(JwtTest, AClaimIntoCookieOrAuthorizationIsRefusedAtApply) {
  v1::JwtConfig config = Config({"ES256"});
  config.set_header("x-jwt");
  auto* cookie = config.add_claims_to_headers();
  cookie->set_claim("sid");
  cookie->set_header("Cookie");
  auto* authorization = config.add_claims_to_headers();
  authorization->set_claim("sub");
  authorization->set_header("authorization");
  std::vector<api::PolicyConfigError> errors = Errors(config);
  EXPECT_TRUE(errors.empty()) << ErrorText(errors);
  api::FindPolicyValidator("jwt")->ValidateNew(config, &errors);
  ASSERT_EQ(errors.size(), 2u) << ErrorText(errors);
  EXPECT_EQ(errors[0].field, "claims_to_headers[0].header");
  EXPECT_EQ(errors[0].message,
            "\"cookie\" carries the client's cookies or credentials; choose another header");
  EXPECT_EQ(errors[1].field, "claims_to_headers[1].header");
  // Nor Expect or HTTP2-Settings, which the gateway takes off requests (the
  // regression probe sent `expect: 100-continue` upstream from a claim).
  v1::JwtConfig taken = Config({"ES256"});
  for (const char* name : {"expect", "HTTP2_Settings"}) {
    auto* c = taken.add_claims_to_headers();
    c->set_claim("sub");
    c->set_header(name);
  }
  errors.clear();
  api::FindPolicyValidator("jwt")->ValidateNew(taken, &errors);
  ASSERT_EQ(errors.size(), 2u) << ErrorText(errors);
  EXPECT_EQ(errors[0].message,
            "\"expect\" is taken off requests before policies and handled by the gateway; "
            "choose another header");
  EXPECT_EQ(errors[1].field, "claims_to_headers[1].header");
}

// A token header the gateway sets or removes before the policy runs never
// holds the client's token (every request got 401): refused at apply.
TEST_F(JwtTest, ATokenHeaderTheGatewayOwnsIsRefusedAtApply) {
  for (const char* owned : {"x-consumer-name", "X-Forwarded-For", "x-real-ip", "content-length"}) {
    v1::JwtConfig config = Config({"ES256"});
    config.set_header(owned);
    config.set_header_prefix("");
    EXPECT_TRUE(Errors(config).empty()) << owned;  // a stored one still loads
    std::vector<api::PolicyConfigError> errors;
    api::FindPolicyValidator("jwt")->ValidateNew(config, &errors);
    ASSERT_EQ(errors.size(), 1u) << owned;
    EXPECT_EQ(errors[0].field, "header");
    EXPECT_TRUE(absl::StrContains(errors[0].message, "is set by the gateway or frames the message"))
        << errors[0].message;
  }
  v1::JwtConfig fine = Config({"ES256"});
  fine.set_header("x-jwt");
  std::vector<api::PolicyConfigError> errors;
  api::FindPolicyValidator("jwt")->ValidateNew(fine, &errors);
  EXPECT_TRUE(errors.empty()) << ErrorText(errors);
}

TEST_F(JwtTest, ConfigRulesNameTheField) {
  v1::JwtConfig config = Config({"ES256", "RS256", "XS1", "ES256"});
  config.set_jwks(M().jwks.at("es256"));
  config.add_issuers("");
  config.set_leeway_seconds(3601);
  config.set_header("bad header");
  config.set_cookie("a;b");
  config.set_query_parameter("a&b");
  config.set_consumer_claim("has space");
  auto add = [&](const char* claim, const char* header) {
    auto* c = config.add_claims_to_headers();
    c->set_claim(claim);
    c->set_header(header);
  };
  add("email", "x-email");
  add("email", "X-Email");
  add("sub", "x-consumer-name");
  add("q\"x", "content-length");
  add("roles", "bad header");
  auto errors = Errors(config);
  std::vector<std::string> fields;
  for (const auto& e : errors) fields.push_back(e.field);
  EXPECT_EQ(fields, (std::vector<std::string>{
                        "algorithms[1]", "algorithms[2]", "algorithms[3]", "issuers[0]",
                        "leeway_seconds", "consumer_claim", "header", "cookie", "query_parameter",
                        "claims_to_headers[1].header", "claims_to_headers[2].header",
                        "claims_to_headers[3].claim", "claims_to_headers[3].header",
                        "claims_to_headers[4].header"}))
      << ErrorText(errors);
  EXPECT_EQ(errors[0].message, "no key can verify RS256 tokens");
  EXPECT_EQ(errors[1].message,
            "\"XS1\" is not one of RS256, RS384, RS512, PS256, ES256, ES384, EdDSA, HS256");
  EXPECT_EQ(errors[2].message, "ES256 is listed twice");
  EXPECT_EQ(errors[4].message, "at most 3600, got 3601");

  v1::JwtConfig nothing;
  nothing.set_jwks(M().jwks.at("es256"));
  auto none = Errors(nothing);
  ASSERT_EQ(none.size(), 1u);
  EXPECT_EQ(none[0].field, "algorithms");

  v1::JwtConfig nowhere = Config({"ES256"}, "es256");
  nowhere.set_header("");
  auto no_source = Errors(nowhere);
  ASSERT_EQ(no_source.size(), 1u) << ErrorText(no_source);
  EXPECT_EQ(no_source[0].field, "header");

  v1::JwtConfig token_header = Config({"ES256"}, "es256");
  auto* c = token_header.add_claims_to_headers();
  c->set_claim("sub");
  c->set_header("Authorization");
  auto clash = Errors(token_header);
  ASSERT_EQ(clash.size(), 1u) << ErrorText(clash);
  EXPECT_EQ(clash[0].message, "\"authorization\" is the header the token comes in");
  // Its CGI spelling too, when applied (ValidateNew: CGI would read the
  // claim as the token's field); a stored config that has it stays valid.
  token_header.set_header("x-token");
  c->set_header("X_Token");
  EXPECT_TRUE(Errors(token_header).empty()) << ErrorText(Errors(token_header));
  clash.clear();
  api::FindPolicyValidator("jwt")->ValidateNew(token_header, &clash);
  ASSERT_EQ(clash.size(), 1u) << ErrorText(clash);
  EXPECT_EQ(clash[0].field, "claims_to_headers[0].header");
  EXPECT_EQ(clash[0].message, "\"x_token\" is the header the token comes in (as CGI reads it)");

  // Fields the gateway sets for the upstream, in any spelling CGI reads as
  // theirs, are no claim's (a user-typed claim would pass as the consumer
  // or the client's address). Before: only 12 exact lower-case names.
  for (const char* owned : {"x_consumer_name", "X-Consumer-Id", "x-anonymous_consumer",
                            "x-forwarded-for", "X_Forwarded_Proto", "x-real-ip", "forwarded",
                            "x-request-id", "via", "traceparent", "tracestate",
                            "x-forwarded-host", "x_forwarded_port"}) {
    v1::JwtConfig owned_config = Config({"ES256"}, "es256");
    auto* o = owned_config.add_claims_to_headers();
    o->set_claim("sub");
    o->set_header(owned);
    auto refused = Errors(owned_config);
    ASSERT_EQ(refused.size(), 1u) << owned << ": " << ErrorText(refused);
    EXPECT_EQ(refused[0].field, "claims_to_headers[0].header") << owned;
  }
  // Two spellings of one field are one header.
  v1::JwtConfig twice = Config({"ES256"}, "es256");
  for (const char* h : {"x-user-email", "x_user_email"}) {
    auto* t = twice.add_claims_to_headers();
    t->set_claim("email");
    t->set_header(h);
  }
  auto repeated = Errors(twice);
  ASSERT_EQ(repeated.size(), 1u) << ErrorText(repeated);
  EXPECT_EQ(repeated[0].field, "claims_to_headers[1].header");
}

TEST(JwsTest, ClaimsAreReadAsTheirTypesSay) {
  std::vector<std::string> wanted = {"sub", "n", "big", "f", "arr", "mixed", "nul"};
  auto claims = ParseClaims(
      R"({"sub":"a","n":-5,"big":18446744073709551615,"f":1e3,"arr":[1,"x",false],)"
      R"("mixed":[1,[2]],"nul":null,"exp":1.2,"nbf":9.8,"aud":"api"})",
      wanted);
  ASSERT_TRUE(claims.ok()) << claims.status();
  EXPECT_EQ(*claims->exp, 1200);  // milliseconds
  EXPECT_EQ(*claims->nbf, 9800);
  EXPECT_EQ(*claims->aud, std::vector<std::string>{"api"});
  EXPECT_EQ(claims->wanted[0].kind, ClaimValue::Kind::kString);
  EXPECT_EQ(claims->wanted[1].text, "-5");
  EXPECT_EQ(claims->wanted[2].text, "18446744073709551615");
  EXPECT_EQ(claims->wanted[3].text, "1000.0");
  EXPECT_EQ(claims->wanted[4].text, "1,x,false");
  EXPECT_EQ(claims->wanted[5].kind, ClaimValue::Kind::kOther);
  EXPECT_EQ(claims->wanted[6].kind, ClaimValue::Kind::kOther);
  EXPECT_EQ(ParseClaims(R"({"exp":1e300})", {})->exp, (int64_t{1} << 52) * 1000);
  EXPECT_EQ(ParseClaims(R"({"exp":1.0001,"nbf":1.0009})", {})->exp, 1001);  // rounded up
  EXPECT_EQ(ParseClaims(R"({"exp":1.0001,"nbf":1.0009})", {})->nbf, 1000);  // rounded down
  EXPECT_EQ(ParseClaims(R"({"exp":-1e300})", {})->exp,
            -(int64_t{1} << 52) * 1000);
  EXPECT_EQ(ParseClaims(R"({"aud":[1]})", {}).status().message(),
            "malformed token: aud is not a string or an array of strings");
  EXPECT_EQ(ParseClaims(R"({"iss":1})", {}).status().message(), "malformed token: iss is not a string");
}

}  // namespace
}  // namespace sluice::policy::jwt

namespace sluice::policy::jwt {
namespace {

// `config` as a route's policy shows it once redacted (sluicectl get,
// /config_dump).
v1::JwtConfig ShownAfterRedaction(const v1::JwtConfig& config) {
  config::v1::Resource resource;
  auto* policy = resource.mutable_route_table()->add_virtual_hosts()->add_routes()->add_policies();
  policy->set_name("jwt");
  policy->mutable_typed_config()->PackFrom(config);
  api::RedactSecrets(&resource);
  v1::JwtConfig shown;
  EXPECT_TRUE(resource.route_table().virtual_hosts(0).routes(0).policies(0).typed_config().UnpackTo(
      &shown));
  return shown;
}

TEST(JwtRedactionTest, Hs256SecretsAreNotShownPublicKeysAre) {
  v1::JwtConfig config;
  config.set_jwks(R"({"keys": [{"kty": "oct", "kid": "h", "k" : "c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0LTMyYg"},
                              {"kty": "EC", "kid": "e", "crv": "P-256", "x": "xx", "y": "yy"}]})");
  config.add_algorithms("HS256");
  v1::JwtConfig shown = ShownAfterRedaction(config);
  EXPECT_FALSE(absl::StrContains(shown.jwks(), "c2VjcmV0")) << shown.jwks();
  EXPECT_TRUE(absl::StrContains(shown.jwks(), R"("k":"[redacted]")")) << shown.jwks();
  EXPECT_TRUE(absl::StrContains(shown.jwks(), R"("x": "xx")")) << shown.jwks();
  // Applied back as shown: refused, saying why (not "k is not base64url").
  std::vector<api::PolicyConfigError> errors = Errors(shown);
  ASSERT_EQ(errors.size(), 1u);
  EXPECT_EQ(errors[0].field, "jwks");
  EXPECT_TRUE(absl::StrContains(errors[0].message, "redacted on output")) << errors[0].message;
}

// "\u006b" is "k" to the key parser: a secret so spelled is refused at apply
// (the redaction reads the text), and one stored so is redacted anyway.
TEST(JwtRedactionTest, MemberNamesWithEscapesAreRefusedAndStillRedacted) {
  v1::JwtConfig config;
  config.set_jwks(
      R"({"keys": [{"kty": "oct", "kid": "h", "\u006b": "c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0LTMyYg"}]})");
  config.add_algorithms("HS256");
  std::vector<api::PolicyConfigError> errors = Errors(config);
  ASSERT_EQ(errors.size(), 1u);
  EXPECT_EQ(errors[0].field, "jwks");
  EXPECT_TRUE(absl::StrContains(errors[0].message, "is written with escapes")) << errors[0].message;
  // An escaped value in a plainly named member is fine.
  v1::JwtConfig plain;
  plain.set_jwks(R"({"keys": [{"kty": "oct", "kid": "a\"b", "k": "c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0LTMyYnk"}]})");
  plain.add_algorithms("HS256");
  std::vector<api::PolicyConfigError> plain_errors = Errors(plain);
  EXPECT_TRUE(plain_errors.empty()) << plain_errors[0].field << ": " << plain_errors[0].message;

  EXPECT_FALSE(absl::StrContains(ShownAfterRedaction(config).jwks(), "c2VjcmV0"));
}

}  // namespace
}  // namespace sluice::policy::jwt
