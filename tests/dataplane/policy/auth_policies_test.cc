// The authentication and authorization policies (key-auth, basic-auth,
// acl) and the chain's ordering and "any of" grouping, through the
// registries the binaries use, against consumers compiled as the proxy
// compiles them.
#include <gtest/gtest.h>

#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "api/credentials.h"
#include "api/policy_registry.h"
#include "dataplane/auth/consumers.h"
#include "dataplane/http/filter.h"
#include "dataplane/policy/acl/acl_config.pb.h"
#include "dataplane/policy/basic_auth/basic_auth_config.pb.h"
#include "dataplane/policy/chain.h"
#include "dataplane/policy/key_auth/key_auth_config.pb.h"
#include "dataplane/policy/registry.h"
#include "tests/dataplane/policy/fake_callbacks.h"

namespace sluice::policy {
namespace {

using testing::FakeCallbacks;

std::shared_ptr<const http::FilterFactory> Compile(const std::string& name,
                                                   const google::protobuf::Message& config) {
  std::vector<api::PolicyConfigError> errors;
  api::FindPolicyValidator(name)->Validate(config, &errors);
  EXPECT_TRUE(errors.empty()) << errors[0].field << ": " << errors[0].message;
  auto compiled = FindPolicyFactory(name)->Compile(config);
  EXPECT_TRUE(compiled.ok()) << compiled.status();
  return *compiled;
}

std::vector<api::PolicyConfigError> Errors(const std::string& name,
                                           const google::protobuf::Message& config) {
  std::vector<api::PolicyConfigError> errors;
  api::FindPolicyValidator(name)->Validate(config, &errors);
  return errors;
}

// alice: key "alice-key-123", user alice / "wonderland", groups admins, staff.
// bob: key_sha256 of "bob-key-4567", no groups. guest: no credentials.
std::shared_ptr<const auth::ConsumerIndex> Consumers() {
  static const auto index = [] {
    api::ResourceMap resources;
    config::v1::Resource alice;
    alice.mutable_consumer()->set_name("alice");
    alice.mutable_consumer()->add_groups("admins");
    alice.mutable_consumer()->add_groups("staff");
    alice.mutable_consumer()->add_keys()->set_key("alice-key-123");
    alice.mutable_consumer()->mutable_basic_auth()->set_username("alice");
    alice.mutable_consumer()->mutable_basic_auth()->set_password_hash(
        api::HashPassword("wonderland", 10000));
    resources[api::IdOf(alice)] = alice;
    config::v1::Resource bob;
    bob.mutable_consumer()->set_name("bob");
    bob.mutable_consumer()->add_keys()->set_key_sha256(api::Sha256Hex("bob-key-4567"));
    resources[api::IdOf(bob)] = bob;
    config::v1::Resource guest;
    guest.mutable_consumer()->set_name("guest");
    resources[api::IdOf(guest)] = guest;
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
  http::FilterStatus Run(const http::FilterFactory& factory) {
    filter = factory.CreateFilter();
    return filter->OnRequestHeaders(headers, callbacks);
  }
  std::string consumer() const {
    return callbacks.info_.consumer ? callbacks.info_.consumer->name : "";
  }
  std::unique_ptr<http::Filter> filter;
};

TEST(ConsumerIndexTest, FindsByKeyPlainOrHashedByUsernameAndByName) {
  auto index = Consumers();
  EXPECT_EQ(index->size(), 3u);
  ASSERT_NE(index->FindByKey("alice-key-123"), nullptr);
  EXPECT_EQ(index->FindByKey("alice-key-123")->name, "alice");
  EXPECT_EQ(index->FindByKey("bob-key-4567")->name, "bob");
  EXPECT_EQ(index->FindByKey("alice-key-124"), nullptr);
  EXPECT_EQ(index->FindByUsername("alice")->groups_header, "admins, staff");
  EXPECT_EQ(index->FindByUsername("bob"), nullptr);
  EXPECT_NE(index->FindByName("guest"), nullptr);
}

// The response cache tells a consumer made again under the same name from
// the one before by this hash.
TEST(ConsumerIndexTest, ContentHashChangesWithTheConsumersCredentialsOnly) {
  auto build = [](const std::string& key, const std::string& other_name) {
    api::ResourceMap resources;
    config::v1::Resource bob;
    bob.mutable_consumer()->set_name("bob");
    bob.mutable_consumer()->add_keys()->set_key(key);
    resources[api::IdOf(bob)] = bob;
    config::v1::Resource other;
    other.mutable_consumer()->set_name(other_name);
    resources[api::IdOf(other)] = other;
    return auth::ConsumerIndex::Build(resources);
  };
  auto first = build("bob-key-1234567", "carol");
  auto same = build("bob-key-1234567", "dave");
  auto again = build("new-bob-key-999999", "carol");
  EXPECT_NE(first->FindByName("bob")->content_hash, 0u);
  EXPECT_EQ(first->FindByName("bob")->content_hash, same->FindByName("bob")->content_hash);
  EXPECT_NE(first->FindByName("bob")->content_hash, again->FindByName("bob")->content_hash);
}

TEST(KeyAuthTest, KeyInHeaderIdentifiesTheConsumerAndIsRemoved) {
  auto factory = Compile("key-auth", key_auth::v1::KeyAuthConfig());
  Request r;
  r.headers.Add("ApiKey", "alice-key-123");
  EXPECT_EQ(r.Run(*factory), http::FilterStatus::kContinue);
  EXPECT_EQ(r.consumer(), "alice");
  EXPECT_FALSE(r.callbacks.info_.anonymous_consumer);
  EXPECT_EQ(r.headers.Get("apikey"), nullptr);
}

TEST(KeyAuthTest, KeyInQueryIsDecodedAndRemovedFromThePath) {
  auto factory = Compile("key-auth", key_auth::v1::KeyAuthConfig());
  Request r("/api/items?a=1&apikey=bob%2Dkey-4567&b=2");
  EXPECT_EQ(r.Run(*factory), http::FilterStatus::kContinue);
  EXPECT_EQ(r.consumer(), "bob");
  EXPECT_EQ(r.callbacks.path_, "/api/items?a=1&b=2");
  Request only("/x?apikey=bob-key-4567");
  EXPECT_EQ(only.Run(*factory), http::FilterStatus::kContinue);
  EXPECT_EQ(only.callbacks.path_, "/x");
  // A percent-encoded name is the same parameter: found, and removed.
  Request encoded("/x?api%6Bey=bob-key-4567&z=1");
  EXPECT_EQ(encoded.Run(*factory), http::FilterStatus::kContinue);
  EXPECT_EQ(encoded.consumer(), "bob");
  EXPECT_EQ(encoded.callbacks.path_, "/x?z=1");
  // A name with a '+' (a token character): a query spells it %2B, and PHP
  // keeps it. It was read as a space in the configured name too: x%2Bkey
  // went unmatched (upstream unchecked), x.key matched.
  key_auth::v1::KeyAuthConfig plus;
  plus.add_key_names("x+key");
  auto plus_factory = Compile("key-auth", plus);
  Request spelled("/x?x%2Bkey=bob-key-4567&z=1");
  EXPECT_EQ(spelled.Run(*plus_factory), http::FilterStatus::kContinue);
  EXPECT_EQ(spelled.consumer(), "bob");
  EXPECT_EQ(spelled.callbacks.path_, "/x?z=1");
  // x.key and x_key are x_key to PHP; x+key as sent is "x key" to every
  // form decoder.
  for (const char* other : {"x.key", "x_key", "x+key"}) {
    Request not_it(absl::StrCat("/x?", other, "=bob-key-4567"));
    EXPECT_EQ(not_it.Run(*plus_factory), http::FilterStatus::kStopLocalReply) << other;
  }
}

// One key per request, as Kong's "Duplicate API key found": with two (two
// fields, two parameters, or one of each), the key checked need not be the
// one an upstream reads. Refused, whatever the anonymous consumer. Before:
// the first was used, and with keep_credentials both went upstream.
// key_names may list two spellings of one field: a request with one key
// has one key (it counted once per listed name, and every request got
// 401). A spelling not listed never reaches the upstream, for an
// anonymous caller too (PHP reads x_api_key as the key).
TEST(KeyAuthTest, OneFieldIsOneKeyWhateverTheNamesListed) {
  key_auth::v1::KeyAuthConfig both;
  both.add_key_names("x-api-key");
  both.add_key_names("x_api_key");
  auto factory = Compile("key-auth", both);
  for (const char* name : {"x-api-key", "x_api_key", "X-Api-Key"}) {
    Request r;
    r.headers.Add(name, "alice-key-123");
    EXPECT_EQ(r.Run(*factory), http::FilterStatus::kContinue) << name;
    EXPECT_EQ(r.consumer(), "alice") << name;
  }
  key_auth::v1::KeyAuthConfig anonymous;
  anonymous.add_key_names("x-api-key");
  anonymous.set_anonymous("guest");
  anonymous.set_keep_credentials(true);
  auto guest = Compile("key-auth", anonymous);
  Request spelled;
  spelled.headers.Add("x_api_key", "alice-key-123");
  EXPECT_EQ(spelled.Run(*guest), http::FilterStatus::kContinue);
  EXPECT_EQ(spelled.consumer(), "guest");
  EXPECT_EQ(spelled.headers.Get("x_api_key"), nullptr);
}

TEST(KeyAuthTest, TwoKeysInARequestAreRefused) {
  key_auth::v1::KeyAuthConfig config;
  config.set_anonymous("guest");
  auto factory = Compile("key-auth", config);
  Request both("/x?apikey=bob-key-4567&z=1");
  both.headers.Add("apikey", "alice-key-123");
  Request fields;
  fields.headers.Add("apikey", "bob-key-4567");
  fields.headers.Add("ApiKey", "alice-key-123");
  Request params("/x?apikey=bob-key-4567&api%6Bey=alice-key-123");
  Request same("/x?apikey=bob-key-4567&apikey=bob-key-4567");
  // Rack 2 and older Python and Go read a parameter after a ';'.
  Request semicolon("/x?z=1;apikey=bob-key-4567");
  semicolon.headers.Add("apikey", "alice-key-123");
  Request cgi;  // x_api_key is x-api-key to CGI, PHP and Rack
  cgi.headers.Add("apikey", "alice-key-123");
  cgi.headers.Add("ApiKey", "alice-key-123");
  Request spelled;
  spelled.headers.Add("x-api-key", "alice-key-123");
  spelled.headers.Add("x_api_key", "bob-key-4567");
  key_auth::v1::KeyAuthConfig named;
  named.add_key_names("x-api-key");
  auto named_factory = Compile("key-auth", named);
  EXPECT_EQ(spelled.Run(*named_factory), http::FilterStatus::kStopLocalReply);
  EXPECT_EQ(spelled.callbacks.message_, "more than one API key found in request");
  // One key, and another spelling of its field is not passed on either.
  Request one;
  one.headers.Add("x-api-key", "alice-key-123");
  one.headers.Add("x-other", "kept");
  EXPECT_EQ(one.Run(*named_factory), http::FilterStatus::kContinue);
  EXPECT_EQ(one.consumer(), "alice");
  for (Request* r : {&both, &fields, &params, &same, &semicolon, &cgi}) {
    EXPECT_EQ(r->Run(*factory), http::FilterStatus::kStopLocalReply) << r->callbacks.path_;
    EXPECT_EQ(r->callbacks.status_, 401);
    EXPECT_EQ(r->callbacks.message_, "more than one API key found in request");
    EXPECT_EQ(r->consumer(), "");
  }
  // The refusal leaves no key in the path the access log writes (a valid
  // key was logged before).
  EXPECT_EQ(both.callbacks.path_, "/x?z=1");
  EXPECT_EQ(params.callbacks.path_, "/x");
  EXPECT_EQ(semicolon.callbacks.path_, "/x");  // the key hides in z's value: the query goes
  // One key, after a ';': 400, whatever the anonymous consumer.
  Request hidden("/x?z=1;apikey=bob-key-4567");
  EXPECT_EQ(hidden.Run(*factory), http::FilterStatus::kStopLocalReply);
  EXPECT_EQ(hidden.callbacks.status_, 400);
  EXPECT_EQ(hidden.callbacks.message_, "API key query parameter after a ';'");
  EXPECT_EQ(hidden.callbacks.path_, "/x");
  EXPECT_EQ(hidden.consumer(), "");
}

TEST(KeyAuthTest, KeepCredentialsAndCustomNames) {
  key_auth::v1::KeyAuthConfig config;
  config.add_key_names("x-api-key");
  config.set_keep_credentials(true);
  config.set_key_in_query(false);
  auto factory = Compile("key-auth", config);
  Request r("/api?x-api-key=alice-key-123");
  EXPECT_EQ(r.Run(*factory), http::FilterStatus::kStopLocalReply);  // query is off
  Request h;
  h.headers.Add("x-api-key", "alice-key-123");
  EXPECT_EQ(h.Run(*factory), http::FilterStatus::kContinue);
  EXPECT_NE(h.headers.Get("x-api-key"), nullptr);
}

TEST(KeyAuthTest, MissingOrUnknownKeyIs401WithAChallenge) {
  key_auth::v1::KeyAuthConfig config;
  config.set_realm("shop");
  auto factory = Compile("key-auth", config);
  Request missing;
  EXPECT_EQ(missing.Run(*factory), http::FilterStatus::kStopLocalReply);
  EXPECT_EQ(missing.callbacks.status_, 401);
  EXPECT_EQ(missing.callbacks.message_, "no API key found in request");
  ASSERT_NE(missing.callbacks.reply_headers_.Get("www-authenticate"), nullptr);
  EXPECT_EQ(*missing.callbacks.reply_headers_.Get("www-authenticate"), "Key realm=\"shop\"");
  Request unknown;
  unknown.headers.Add("apikey", "nobody-has-this");
  EXPECT_EQ(unknown.Run(*factory), http::FilterStatus::kStopLocalReply);
  EXPECT_EQ(unknown.callbacks.message_, "invalid API key");
}

TEST(KeyAuthTest, AnonymousConsumerTakesUnauthenticatedRequests) {
  key_auth::v1::KeyAuthConfig config;
  config.set_anonymous("guest");
  auto factory = Compile("key-auth", config);
  Request r;
  EXPECT_EQ(r.Run(*factory), http::FilterStatus::kContinue);
  EXPECT_EQ(r.consumer(), "guest");
  EXPECT_TRUE(r.callbacks.info_.anonymous_consumer);
  config.set_anonymous("nobody");
  auto missing = Compile("key-auth", config);
  Request m;
  EXPECT_EQ(m.Run(*missing), http::FilterStatus::kStopLocalReply);
  EXPECT_EQ(m.callbacks.status_, 500);
  EXPECT_TRUE(absl::StrContains(m.callbacks.message_, "\"nobody\" does not exist"));
}

// Taken as the anonymous consumer, a refused key does not go upstream, even
// with keep_credentials (it keeps what the policy accepted). Before: the
// unknown key reached the upstream beside `x-anonymous-consumer: true`.
TEST(KeyAuthTest, AnAnonymousCallerLosesTheKeyItSent) {
  key_auth::v1::KeyAuthConfig config;
  config.add_key_names("x-api-key");
  config.set_key_in_query(true);
  config.set_anonymous("guest");
  config.set_keep_credentials(true);
  auto factory = Compile("key-auth", config);
  Request header;
  header.headers.Add("x-api-key", "forged-key");
  EXPECT_EQ(header.Run(*factory), http::FilterStatus::kContinue);
  EXPECT_EQ(header.consumer(), "guest");
  EXPECT_EQ(header.headers.Get("x-api-key"), nullptr);
  Request query("/api?x-api-key=forged-key&a=1");
  EXPECT_EQ(query.Run(*factory), http::FilterStatus::kContinue);
  EXPECT_EQ(query.consumer(), "guest");
  EXPECT_EQ(query.callbacks.path_, "/api?a=1");
  // An accepted key stays with keep_credentials.
  Request kept;
  kept.headers.Add("x-api-key", "bob-key-4567");
  EXPECT_EQ(kept.Run(*factory), http::FilterStatus::kContinue);
  EXPECT_EQ(kept.consumer(), "bob");
  EXPECT_NE(kept.headers.Get("x-api-key"), nullptr);
}

TEST(KeyAuthTest, ConfigRulesNameTheField) {
  key_auth::v1::KeyAuthConfig config;
  config.add_key_names("bad name");
  config.set_key_in_header(false);
  config.set_key_in_query(false);
  config.set_realm("a\"b");
  auto errors = Errors("key-auth", config);
  ASSERT_EQ(errors.size(), 3u);
  EXPECT_EQ(errors[0].field, "key_names[0]");
  EXPECT_EQ(errors[1].field, "key_in_header");
  EXPECT_EQ(errors[2].field, "realm");
  // A control character, at apply only (accepted before; HTTP/2 dropped the
  // challenge, HTTP/1 sent the byte).
  for (const char* policy : {"key-auth", "basic-auth"}) {
    key_auth::v1::KeyAuthConfig key;
    basic_auth::v1::BasicAuthConfig basic;
    key.set_realm(std::string("a\0b", 3));
    basic.set_realm("x\x7fy");
    const google::protobuf::Message& odd =
        std::string(policy) == "key-auth" ? static_cast<const google::protobuf::Message&>(key)
                                          : basic;
    EXPECT_TRUE(Errors(policy, odd).empty()) << policy;
    std::vector<api::PolicyConfigError> apply;
    api::FindPolicyValidator(policy)->ValidateNew(odd, &apply);
    ASSERT_EQ(apply.size(), 1u) << policy;
    EXPECT_EQ(apply[0].field, "realm");
    EXPECT_EQ(apply[0].message, std::string(policy) == "key-auth"
                                    ? "has a control character at position 2 (byte 0x00); a "
                                      "challenge cannot carry it"
                                    : "has a control character at position 2 (byte 0x7f); a "
                                      "challenge cannot carry it");
    key.set_realm("tab\tok");
    apply.clear();
    api::FindPolicyValidator("key-auth")->ValidateNew(key, &apply);
    EXPECT_TRUE(apply.empty());
  }
}

// A key name the gateway sets, removes or frames with (host, the consumer
// fields, x-forwarded-*) never holds the client's key: refused at apply.
// Before: accepted, and every request got 400 (host) or 401.
TEST(KeyAuthTest, AKeyNameTheGatewayOwnsIsRefusedAtApply) {
  key_auth::v1::KeyAuthConfig config;
  config.add_key_names("apikey");
  config.add_key_names("Host");
  config.add_key_names("x_consumer_name");
  EXPECT_TRUE(Errors("key-auth", config).empty());  // a stored one keeps working
  std::vector<api::PolicyConfigError> apply;
  api::FindPolicyValidator("key-auth")->ValidateNew(config, &apply);
  ASSERT_EQ(apply.size(), 2u);
  EXPECT_EQ(apply[0].field, "key_names[1]");
  EXPECT_EQ(apply[0].message,
            "\"Host\" is set by the gateway or frames the message: no key could be read from "
            "it; choose another name");
  EXPECT_EQ(apply[1].field, "key_names[2]");
  // Only looked for in the query: any name will do.
  config.set_key_in_header(false);
  apply.clear();
  api::FindPolicyValidator("key-auth")->ValidateNew(config, &apply);
  EXPECT_TRUE(apply.empty());
}

TEST(AclTest, AllowAndDenyByGroup) {
  acl::v1::AclConfig allow;
  allow.add_allow("admins");
  auto allow_admins = Compile("acl", allow);
  acl::v1::AclConfig deny;
  deny.add_deny("staff");
  auto deny_staff = Compile("acl", deny);
  auto index = Consumers();
  Request alice;
  alice.callbacks.SetConsumer(index->FindByName("alice"), false);
  EXPECT_EQ(alice.Run(*allow_admins), http::FilterStatus::kContinue);
  EXPECT_EQ(alice.Run(*deny_staff), http::FilterStatus::kStopLocalReply);
  EXPECT_EQ(alice.callbacks.status_, 403);
  Request bob;
  bob.callbacks.SetConsumer(index->FindByName("bob"), false);
  EXPECT_EQ(bob.Run(*allow_admins), http::FilterStatus::kStopLocalReply);
  EXPECT_EQ(bob.callbacks.status_, 403);
  EXPECT_EQ(bob.Run(*deny_staff), http::FilterStatus::kContinue);
  // No consumer identified: 403, since no credential would help (a 401
  // would need a challenge to offer, RFC 9110 15.5.2).
  Request nobody;
  EXPECT_EQ(nobody.Run(*allow_admins), http::FilterStatus::kStopLocalReply);
  EXPECT_EQ(nobody.callbacks.status_, 403);
  EXPECT_EQ(nobody.callbacks.reply_headers_.Get("www-authenticate"), nullptr);
}

TEST(AclTest, ExactlyOneListIsRequired) {
  EXPECT_EQ(Errors("acl", acl::v1::AclConfig()).size(), 1u);
  acl::v1::AclConfig both;
  both.add_allow("a");
  both.add_deny("b");
  ASSERT_EQ(Errors("acl", both).size(), 1u);
  EXPECT_EQ(Errors("acl", both)[0].field, "allow");
  // A name no Consumer group can have would never match. It was accepted,
  // so it is refused at apply only (ValidateNew), never in a stored state.
  acl::v1::AclConfig odd;
  odd.add_allow("staff");
  odd.add_allow("a b");
  odd.add_allow("ops@example.com");
  EXPECT_TRUE(Errors("acl", odd).empty());
  std::vector<api::PolicyConfigError> errors;
  api::FindPolicyValidator("acl")->ValidateNew(odd, &errors);
  ASSERT_EQ(errors.size(), 1u);
  EXPECT_EQ(errors[0].field, "allow[1]");
}

std::string Basic(const std::string& user_pass) {
  return "Basic " + absl::Base64Escape(user_pass);
}

TEST(BasicAuthTest, PasswordIsCheckedOffTheWorkerThenRemembered) {
  auto factory = Compile("basic-auth", basic_auth::v1::BasicAuthConfig());
  Request first;
  first.headers.Add("authorization", Basic("alice:wonderland"));
  // Not known yet: the check runs on the verifier thread, the chain waits.
  ASSERT_EQ(first.Run(*factory), http::FilterStatus::kStopIteration);
  EXPECT_EQ(first.headers.Get("authorization"), nullptr);
  ASSERT_TRUE(first.callbacks.RunPosted());
  EXPECT_EQ(first.consumer(), "alice");
  EXPECT_EQ(first.callbacks.continues_, 1);
  // The same credentials again: answered from the cache, at once.
  Request second;
  second.headers.Add("authorization", Basic("alice:wonderland"));
  EXPECT_EQ(second.Run(*factory), http::FilterStatus::kContinue);
  EXPECT_EQ(second.consumer(), "alice");
}

// `user_pass` is refused with a 401 only after the password check ran on
// its thread (the request paused, then answered).
void ExpectRefusedAfterTheCheck(const std::string& user_pass) {
  auto factory = Compile("basic-auth", basic_auth::v1::BasicAuthConfig());
  Request r;
  r.headers.Add("authorization", Basic(user_pass));
  ASSERT_EQ(r.Run(*factory), http::FilterStatus::kStopIteration);
  ASSERT_TRUE(r.callbacks.RunPosted());
  EXPECT_EQ(r.callbacks.status_, 401);
  EXPECT_EQ(r.callbacks.continues_, 0);
  EXPECT_EQ(r.consumer(), "");
  EXPECT_TRUE(absl::StrContains(*r.callbacks.reply_headers_.Get("www-authenticate"),
                                "Basic realm=\"sluice\""));
}

TEST(BasicAuthTest, WrongPasswordIs401AfterTheCheck) { ExpectRefusedAfterTheCheck("alice:not-it"); }

// Checks for requests that are over (HTTP/2 streams the client reset) are
// dropped: they do not hold the 256 places (a live login got 503), nor
// cost the clients still waiting ~20 ms each. Before: every queued check
// ran, a client's rapid resets queueing seconds of work.
TEST(BasicAuthTest, ChecksOfRequestsThatAreOverAreDropped) {
  auto factory = Compile("basic-auth", basic_auth::v1::BasicAuthConfig());
  std::vector<std::unique_ptr<Request>> gone;
  for (int i = 0; i < 300; ++i) {
    auto r = std::make_unique<Request>();
    r->headers.Add("authorization", Basic(absl::StrCat("nobody-", i, ":guess-", i)));
    ASSERT_EQ(r->Run(*factory), http::FilterStatus::kStopIteration) << i;
    r->callbacks.EndRequest();
    gone.push_back(std::move(r));
  }
  Request live;
  live.headers.Add("authorization", Basic("alice:wonderland-not"));
  ASSERT_EQ(live.Run(*factory), http::FilterStatus::kStopIteration) << live.callbacks.status_;
  ASSERT_TRUE(live.callbacks.RunPosted());
  EXPECT_EQ(live.callbacks.status_, 401);
}

TEST(BasicAuthTest, MissingAndMalformedCredentialsAreRefusedAtOnce) {
  auto factory = Compile("basic-auth", basic_auth::v1::BasicAuthConfig());
  // Base64 as RFC 4648 4 writes it, one token68: no white space inside,
  // padding required (absl's decoder took both).
  for (const std::string& value :
       {std::string(), std::string("Bearer x"), std::string("Basic !!!"), Basic("no-colon"),
        std::string("Basic YWxpY2U6 d29uZGVybGFuZA=="), std::string("Basic YWxpY2U6d29uZGVybGFuZA"),
        std::string("Basic YWxpY2U6d29uZGVybGFuZA="), std::string("Basic YWxp=2U6d29uZGVybGFuZA==")}) {
    Request r;
    if (!value.empty()) r.headers.Add("authorization", value);
    EXPECT_EQ(r.Run(*factory), http::FilterStatus::kStopLocalReply) << value;
    EXPECT_EQ(r.callbacks.status_, 401) << value;
  }
}

// Taken as the anonymous consumer, a request keeps no Basic credential:
// one set apart by a tab (which this policy does not read, and Werkzeug
// does), and refused ones whatever keep_credentials says. Before: both went
// upstream beside `x-anonymous-consumer: true`.
TEST(BasicAuthTest, AnAnonymousCallerLosesEveryBasicCredential) {
  basic_auth::v1::BasicAuthConfig config;
  config.set_anonymous("guest");
  config.set_keep_credentials(true);
  auto factory = Compile("basic-auth", config);
  Request tab;
  tab.headers.Add("authorization", "Basic\t" + Basic("alice:wonderland").substr(6));
  EXPECT_EQ(tab.Run(*factory), http::FilterStatus::kContinue);
  EXPECT_EQ(tab.consumer(), "guest");
  EXPECT_EQ(tab.headers.Get("authorization"), nullptr);
  Request other_scheme;
  other_scheme.headers.Add("authorization", "Bearer not-ours");
  EXPECT_EQ(other_scheme.Run(*factory), http::FilterStatus::kContinue);
  EXPECT_EQ(*other_scheme.headers.Get("authorization"), "Bearer not-ours");
  Request malformed;
  malformed.headers.Add("authorization", "Basic !!!");
  EXPECT_EQ(malformed.Run(*factory), http::FilterStatus::kContinue);
  EXPECT_EQ(malformed.headers.Get("authorization"), nullptr);
  Request wrong;
  wrong.headers.Add("authorization", Basic("alice:guessed-wrong"));
  ASSERT_EQ(wrong.Run(*factory), http::FilterStatus::kStopIteration);
  ASSERT_TRUE(wrong.callbacks.RunPosted());
  EXPECT_EQ(wrong.consumer(), "guest");
  EXPECT_EQ(wrong.callbacks.continues_, 1);
  EXPECT_EQ(wrong.headers.Get("authorization"), nullptr);
  // The same wrong credentials again, refused from memory: the same.
  Request again;
  again.headers.Add("authorization", Basic("alice:guessed-wrong"));
  EXPECT_EQ(again.Run(*factory), http::FilterStatus::kContinue);
  EXPECT_EQ(again.consumer(), "guest");
  EXPECT_EQ(again.headers.Get("authorization"), nullptr);
}

// Two Authorization fields: 400 whatever the anonymous consumer (the
// credentials checked need not be the ones an upstream reads), as jwt
// does. Decoded credentials with a control character are malformed
// (RFC 7617 2): "wonderland\0" matched "wonderland" (PBKDF2 pads the key
// with NULs). Both refused at once, before any check.
TEST(BasicAuthTest, TwoFieldsAndControlCharactersAreRefused) {
  basic_auth::v1::BasicAuthConfig config;
  config.set_anonymous("guest");
  auto factory = Compile("basic-auth", config);
  Request two;
  two.headers.Add("authorization", Basic("alice:wonderland"));
  two.headers.Add("authorization", Basic("bob:x"));
  EXPECT_EQ(two.Run(*factory), http::FilterStatus::kStopLocalReply);
  EXPECT_EQ(two.callbacks.status_, 400);
  EXPECT_EQ(two.callbacks.message_, "more than one authorization field");
  EXPECT_EQ(two.consumer(), "");
  // Taken as the anonymous consumer, malformed credentials are not passed
  // on (a C-string upstream would read "alice:wonderland").
  Request anonymous;
  anonymous.headers.Add("authorization", Basic(std::string("alice:wonderland\0", 17)));
  EXPECT_EQ(anonymous.Run(*factory), http::FilterStatus::kContinue);
  EXPECT_EQ(anonymous.consumer(), "guest");
  EXPECT_EQ(anonymous.headers.Get("authorization"), nullptr);
  auto strict = Compile("basic-auth", basic_auth::v1::BasicAuthConfig());
  for (const std::string& creds :
       {std::string("alice:wonderland\0", 17), std::string("alice:wonder\nland"),
        std::string("al\x7fice:wonderland"), std::string("alice:\twonderland")}) {
    Request r;
    r.headers.Add("authorization", Basic(creds));
    EXPECT_EQ(r.Run(*strict), http::FilterStatus::kStopLocalReply) << absl::CHexEscape(creds);
    EXPECT_EQ(r.callbacks.status_, 401);
    EXPECT_EQ(r.callbacks.message_, "malformed basic credentials");
  }
}

// An unknown username is refused only after a password check, as a wrong
// password of a known one is: the answer's time tells nothing. Before: at
// once (0.3 ms against 57 ms).
TEST(BasicAuthTest, AnUnknownUserIsRefusedAfterACheckLikeAWrongPassword) {
  ExpectRefusedAfterTheCheck("mallory:x");
}

// A failed check is remembered for a while: the same wrong credentials
// again are refused at once, so a client retrying them in a loop (or a
// flood of them) cannot fill the verifier's queue and get every other
// login a 503. Before: each one cost a full check. Another password is
// checked in full, and so is an unknown user's, like a known one's.
TEST(BasicAuthTest, TheSameWrongCredentialsAgainAreRefusedWithoutACheck) {
  auto factory = Compile("basic-auth", basic_auth::v1::BasicAuthConfig());
  for (const char* creds : {"alice:guess-1", "nobody:guess-1"}) {
    ExpectRefusedAfterTheCheck(creds);
    Request again;
    again.headers.Add("authorization", Basic(creds));
    EXPECT_EQ(again.Run(*factory), http::FilterStatus::kStopLocalReply) << creds;
    EXPECT_EQ(again.callbacks.status_, 401) << creds;
    EXPECT_EQ(again.callbacks.message_, "invalid credentials") << creds;
    EXPECT_NE(again.callbacks.reply_headers_.Get("www-authenticate"), nullptr) << creds;
  }
  ExpectRefusedAfterTheCheck("alice:guess-2");
  Request right;
  right.headers.Add("authorization", Basic("alice:wonderland"));
  if (right.Run(*factory) == http::FilterStatus::kStopIteration) {
    ASSERT_TRUE(right.callbacks.RunPosted());
  }
  EXPECT_EQ(right.consumer(), "alice");
}

TEST(ChainTest, PoliciesRunByPhaseWhateverTheWrittenOrder) {
  acl::v1::AclConfig acl;
  acl.add_allow("admins");
  FactoryList chain = OrderChain({Compile("acl", acl), Compile("key-auth",
                                                                key_auth::v1::KeyAuthConfig())});
  ASSERT_EQ(chain.size(), 2u);
  EXPECT_EQ(chain[0]->policy_name(), "key-auth");
  EXPECT_EQ(chain[1]->policy_name(), "acl");
}

TEST(ChainTest, SeveralAuthenticationPoliciesMeanAnyOfThem) {
  FactoryList chain = OrderChain({Compile("key-auth", key_auth::v1::KeyAuthConfig()),
                                  Compile("basic-auth", basic_auth::v1::BasicAuthConfig())});
  ASSERT_EQ(chain.size(), 1u);
  const http::FilterFactory& any = *chain[0];
  // The key identifies bob: basic-auth does not run (nor refuse).
  Request key;
  key.headers.Add("apikey", "bob-key-4567");
  key.headers.Add("authorization", Basic("alice:wrong"));
  EXPECT_EQ(key.Run(any), http::FilterStatus::kContinue);
  EXPECT_EQ(key.consumer(), "bob");
  EXPECT_EQ(key.callbacks.replies_, 0);
  // No key, good basic credentials: basic-auth pauses, then the chain goes on.
  Request basic;
  basic.headers.Add("authorization", Basic("alice:wonderland"));
  http::FilterStatus status = basic.Run(any);
  if (status == http::FilterStatus::kStopIteration) {
    ASSERT_TRUE(basic.callbacks.RunPosted());
    EXPECT_EQ(basic.callbacks.continues_, 1);
  } else {
    EXPECT_EQ(status, http::FilterStatus::kContinue);  // remembered by an earlier test
  }
  EXPECT_EQ(basic.consumer(), "alice");
  EXPECT_EQ(basic.callbacks.replies_, 0);
  // Neither: the first refusal, with both challenges.
  Request none;
  EXPECT_EQ(none.Run(any), http::FilterStatus::kStopLocalReply);
  EXPECT_EQ(none.callbacks.status_, 401);
  EXPECT_EQ(none.callbacks.message_, "no API key found in request");
  int challenges = 0;
  for (const auto& f : none.callbacks.reply_headers_.fields()) {
    challenges += f.name == "www-authenticate";
  }
  EXPECT_EQ(challenges, 2);
}

// Each policy of a group reads the request as the client sent it: what one
// took out as it refused may be the next one's credential (key-auth on
// `authorization` removed a Basic field before basic-auth saw it: 401
// `invalid API key`). Refused by all, the request keeps no credential in
// its path (the access log's).
TEST(ChainTest, EachPolicyInAGroupSeesTheCredentialsTheOnesBeforeRefused) {
  key_auth::v1::KeyAuthConfig on_authorization;
  on_authorization.add_key_names("authorization");
  on_authorization.add_key_names("apikey");
  key_auth::v1::KeyAuthConfig on_query;
  on_query.add_key_names("apikey");
  FactoryList chain = OrderChain({Compile("key-auth", on_authorization),
                                  Compile("basic-auth", basic_auth::v1::BasicAuthConfig()),
                                  Compile("key-auth", on_query)});
  ASSERT_EQ(chain.size(), 1u);
  Request basic;
  basic.headers.Add("authorization", Basic("alice:wonderland"));
  http::FilterStatus status = basic.Run(*chain[0]);
  if (status == http::FilterStatus::kStopIteration) {
    ASSERT_TRUE(basic.callbacks.RunPosted());
    EXPECT_EQ(basic.callbacks.continues_, 1);
  } else {
    EXPECT_EQ(status, http::FilterStatus::kContinue);  // remembered by an earlier test
  }
  EXPECT_EQ(basic.consumer(), "alice") << basic.callbacks.message_;
  EXPECT_EQ(basic.callbacks.replies_, 0);
  EXPECT_EQ(basic.headers.Get("authorization"), nullptr);  // not passed on
  // Refused by all three: the query's key is not in the path.
  Request none("/api?apikey=wrong-key&x=1");
  EXPECT_EQ(none.Run(*chain[0]), http::FilterStatus::kStopLocalReply);
  EXPECT_EQ(none.callbacks.status_, 401);
  EXPECT_EQ(none.callbacks.info_.path, "/api?x=1");
}

// The policies that did not identify the caller drop their credentials
// whatever keep_credentials says, in every field (a refused Basic field
// second behind another scheme reached the upstream beside bob's identity),
// and a malformed credential's refusal leaves no key in the path the
// access log writes.
TEST(ChainTest, LosersDropTheirCredentialsAndARejectionLeavesNoKeyInThePath) {
  key_auth::v1::KeyAuthConfig key;
  key.add_key_names("apikey");
  basic_auth::v1::BasicAuthConfig keep_basic;
  keep_basic.set_keep_credentials(true);
  FactoryList chain = OrderChain({Compile("key-auth", key), Compile("basic-auth", keep_basic)});
  ASSERT_EQ(chain.size(), 1u);
  Request r("/api?apikey=bob-key-4567");
  r.headers.Add("authorization", "Foo bar");
  r.headers.Add("authorization", Basic("alice:wrong"));
  r.headers.Add("authorization", "basic\tYWxpY2U6d3Jvbmc=");
  EXPECT_EQ(r.Run(*chain[0]), http::FilterStatus::kContinue);
  EXPECT_EQ(r.consumer(), "bob");
  EXPECT_EQ(r.headers.Count("authorization"), 1u);
  EXPECT_EQ(*r.headers.Get("authorization"), "Foo bar");  // another scheme's

  FactoryList basic_first =
      OrderChain({Compile("basic-auth", keep_basic), Compile("key-auth", key)});
  Request two("/api?apikey=alice-key-123&x=1");
  two.headers.Add("authorization", Basic("alice:wonderland"));
  two.headers.Add("authorization", Basic("bob:x"));
  EXPECT_EQ(two.Run(*basic_first[0]), http::FilterStatus::kStopLocalReply);
  EXPECT_EQ(two.callbacks.status_, 400);
  EXPECT_EQ(two.callbacks.info_.path, "/api?x=1");
  // A key after a ';', which Rack 2, older Python and Go read, is dropped
  // too when another policy wins (it went upstream, and into the log).
  Request hidden("/api?x=1;apikey=alice-key-123;y=2&z=3");
  hidden.headers.Add("authorization", Basic("alice:wonderland"));
  http::FilterStatus status = hidden.Run(*basic_first[0]);
  if (status == http::FilterStatus::kStopIteration) ASSERT_TRUE(hidden.callbacks.RunPosted());
  EXPECT_EQ(hidden.consumer(), "alice");
  EXPECT_EQ(hidden.callbacks.info_.path, "/api?x=1;y=2&z=3");
  // A parameter after the key's ';' is one of its own to those readers:
  // kept (it went with the key).
  Request before("/api?apikey=alice-key-123;a=1&b=2");
  before.headers.Add("authorization", Basic("alice:wonderland"));
  status = before.Run(*basic_first[0]);
  if (status == http::FilterStatus::kStopIteration) ASSERT_TRUE(before.callbacks.RunPosted());
  EXPECT_EQ(before.consumer(), "alice");
  EXPECT_EQ(before.callbacks.info_.path, "/api?a=1&b=2");
}

// key-auth skipped in a group (basic-auth identified the caller) drops its
// key field in every spelling, with keep_credentials too (it keeps a key
// key-auth accepted; this one it did not): an upstream would read it, or
// `x_api_key`, as a key someone checked.
TEST(ChainTest, ASkippedKeyAuthDropsUnlistedSpellingsOfItsField) {
  key_auth::v1::KeyAuthConfig keep;
  keep.add_key_names("x-api-key");
  keep.set_keep_credentials(true);
  FactoryList chain = OrderChain({Compile("basic-auth", basic_auth::v1::BasicAuthConfig()),
                                  Compile("key-auth", keep)});
  ASSERT_EQ(chain.size(), 1u);
  Request r;
  r.headers.Add("authorization", Basic("alice:wonderland"));
  r.headers.Add("x_api_key", "forged");
  r.headers.Add("X-Api-Key", "other");
  http::FilterStatus status = r.Run(*chain[0]);
  if (status == http::FilterStatus::kStopIteration) ASSERT_TRUE(r.callbacks.RunPosted());
  EXPECT_EQ(r.consumer(), "alice");
  EXPECT_EQ(r.headers.Get("x_api_key"), nullptr);
  EXPECT_EQ(r.headers.Get("x-api-key"), nullptr);  // before: listed, and kept
}

TEST(ChainTest, AnonymousIsTakenOnlyWhenNoPolicyIdentifiesTheCaller) {
  key_auth::v1::KeyAuthConfig anonymous_key;
  anonymous_key.set_anonymous("guest");
  key_auth::v1::KeyAuthConfig second;
  second.add_key_names("x-other-key");
  FactoryList chain =
      OrderChain({Compile("key-auth", anonymous_key), Compile("key-auth", second)});
  ASSERT_EQ(chain.size(), 1u);
  Request later;
  later.headers.Add("x-other-key", "alice-key-123");
  EXPECT_EQ(later.Run(*chain[0]), http::FilterStatus::kContinue);
  EXPECT_EQ(later.consumer(), "alice");
  EXPECT_FALSE(later.callbacks.info_.anonymous_consumer);
  Request none;
  EXPECT_EQ(none.Run(*chain[0]), http::FilterStatus::kContinue);
  EXPECT_EQ(none.consumer(), "guest");
  EXPECT_TRUE(none.callbacks.info_.anonymous_consumer);
}

}  // namespace
}  // namespace sluice::policy
