// Consumer credentials: the digests and password hashes that the control
// plane stores and the proxy checks against, and the sealing of an applied
// Consumer.
#include "api/credentials.h"

#include <gtest/gtest.h>

#include <vector>

#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "google/protobuf/text_format.h"
#include "google/protobuf/util/message_differencer.h"

namespace sluice::api {
namespace {

using config::v1::Resource;
using google::protobuf::util::MessageDifferencer;

// A hash made elsewhere (Python's hashlib.pbkdf2_hmac("sha256", b"password",
// b"saltsaltsaltsalt", 10000, 32)): the format is not private to this code.
constexpr char kPythonHash[] =
    "pbkdf2-sha256$10000$c2FsdHNhbHRzYWx0c2FsdA==$/HBtt7Z/"
    "7p0CzRvSN1B+KXrKNskvRts1UWw61zKTFUo=";

std::string Base64(size_t bytes) {
  return absl::Base64Escape(std::string(bytes, 'x'));
}

std::string HashWith(const std::string& iterations, const std::string& salt,
                     const std::string& hash) {
  return absl::StrCat("pbkdf2-sha256$", iterations, "$", salt, "$", hash);
}

Resource Parse(const std::string& text) {
  Resource r;
  EXPECT_TRUE(google::protobuf::TextFormat::ParseFromString(text, &r)) << text;
  return r;
}

const char kAlice[] = R"(consumer {
  name: "alice" groups: ["admins"]
  keys { key: "alice-key-0123456789" }
  keys { key_sha256: "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad" }
  basic_auth { username: "alice" password: "correct horse battery staple" } })";

TEST(CredentialsTest, Sha256KnownVectors) {
  EXPECT_EQ(Sha256Hex("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  EXPECT_EQ(Sha256Hex(""),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  unsigned char digest[32];
  Sha256("abc", digest);
  EXPECT_EQ(absl::BytesToHexString(
                absl::string_view(reinterpret_cast<char*>(digest), 32)),
            Sha256Hex("abc"));
}

TEST(CredentialsTest, HashAndVerifyRoundTrip) {
  std::string hash = HashPassword("correct horse", 10000);
  std::vector<std::string> parts = absl::StrSplit(hash, '$');
  ASSERT_EQ(parts.size(), 4u) << hash;
  EXPECT_EQ(parts[0], "pbkdf2-sha256");
  EXPECT_EQ(parts[1], "10000");
  absl::StatusOr<ParsedPasswordHash> parsed = ParsePasswordHash(hash);
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  EXPECT_EQ(parsed->iterations, 10000u);
  EXPECT_EQ(parsed->salt.size(), 16u);
  EXPECT_EQ(parsed->hash.size(), 32u);
  EXPECT_EQ(absl::Base64Escape(parsed->salt), parts[2]);

  EXPECT_TRUE(VerifyPassword("correct horse", hash));
  EXPECT_FALSE(VerifyPassword("correct horse ", hash));
  EXPECT_FALSE(VerifyPassword("Correct horse", hash));
  EXPECT_FALSE(VerifyPassword("", hash));

  // A new salt every time: the same password gives another hash, which
  // verifies too.
  std::string again = HashPassword("correct horse", 10000);
  EXPECT_NE(again, hash);
  EXPECT_TRUE(VerifyPassword("correct horse", again));
}

TEST(CredentialsTest, DefaultIterations) {
  std::string hash = HashPassword("pw");
  EXPECT_TRUE(absl::StartsWith(
      hash, absl::StrCat("pbkdf2-sha256$", kDefaultPasswordIterations, "$")))
      << hash;
  EXPECT_TRUE(VerifyPassword("pw", hash));
}

TEST(CredentialsTest, VerifiesAHashMadeElsewhere) {
  EXPECT_TRUE(VerifyPassword("password", kPythonHash));
  EXPECT_FALSE(VerifyPassword("passwore", kPythonHash));
}

TEST(CredentialsTest, TamperedHashDoesNotVerify) {
  std::vector<std::string> parts = absl::StrSplit(kPythonHash, '$');
  // Another derived key (first character changed: '/' to 'A').
  EXPECT_FALSE(VerifyPassword(
      "password", HashWith(parts[1], parts[2], "A" + parts[3].substr(1))));
  // Another salt, other iterations: the key no longer matches.
  EXPECT_FALSE(
      VerifyPassword("password", HashWith(parts[1], Base64(16), parts[3])));
  EXPECT_FALSE(
      VerifyPassword("password", HashWith("10001", parts[2], parts[3])));
  // Unparsable: false, not a crash.
  EXPECT_FALSE(VerifyPassword("password", ""));
  EXPECT_FALSE(VerifyPassword("password", "password"));
  EXPECT_FALSE(VerifyPassword("password",
                              HashWith(parts[1], parts[2], parts[3] + "AAAA")));
}

TEST(CredentialsTest, ParseErrorsSayWhatIsWrongAndQuoteNothing) {
  const std::string salt = Base64(16);
  const std::string hash = Base64(32);
  struct Case {
    std::string text;
    std::string message;
  };
  const std::vector<Case> cases = {
      {"hunter2secret",
       "is not a password hash: expected pbkdf2-sha256$<iterations>$<salt, "
       "base64>$<hash, "
       "base64> (sluicectl hash-password makes one)"},
      {HashWith("10000", salt, hash) + "$hunter2secret",
       "is not a password hash"},
      {absl::StrCat("hunter2secret$10000$", salt, "$", hash),
       "uses an unsupported scheme; expected pbkdf2-sha256$"},
      {absl::StrCat("PBKDF2-SHA256$10000$", salt, "$", hash),
       "uses an unsupported scheme"},
      {HashWith("hunter2secret", salt, hash),
       "iterations must be a number 10000..1000000"},
      {HashWith("", salt, hash), "iterations must be a number 10000..1000000"},
      {HashWith("-10000", salt, hash),
       "iterations must be a number 10000..1000000"},
      {HashWith("99999999999", salt, hash),
       "iterations must be a number 10000..1000000"},
      {HashWith("9999", salt, hash),
       "iterations must be 10000..1000000, got 9999"},
      {HashWith("1000001", salt, hash),
       "iterations must be 10000..1000000, got 1000001"},
      {HashWith("10000", "hunter2secret!", hash),
       "salt is not valid base64 (standard alphabet, padded)"},
      // Unpadded, URL-safe alphabet, whitespace, non-zero padding bits: not
      // the one canonical spelling.
      {HashWith("10000", "eHh4eHh4eHh4eHh4eHh4eA", hash),
       "salt is not valid base64"},
      {HashWith("10000", "eHh4eHh4eHh4eHh4eHh4e_==", hash),
       "salt is not valid base64"},
      {HashWith("10000", " eHh4eHh4eHh4eHh4eHh4eA==", hash),
       "salt is not valid base64"},
      {HashWith("10000", "eHh4eHh4eHh4eHh4eHh4eB==", hash),
       "salt is not valid base64"},
      {HashWith("10000", "", hash), "salt is not valid base64"},
      {HashWith("10000", Base64(15), hash), "salt is 15 bytes; must be 16..64"},
      {HashWith("10000", Base64(65), hash), "salt is 65 bytes; must be 16..64"},
      {HashWith("10000", salt, "hunter2secret"),
       "hash is not valid base64 (standard alphabet, padded)"},
      {HashWith("10000", salt, Base64(31)), "hash is 31 bytes; must be 32"},
      {HashWith("10000", salt, Base64(33)), "hash is 33 bytes; must be 32"},
  };
  for (const Case& c : cases) {
    absl::StatusOr<ParsedPasswordHash> parsed = ParsePasswordHash(c.text);
    ASSERT_FALSE(parsed.ok()) << c.text;
    EXPECT_EQ(parsed.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_TRUE(absl::StartsWith(parsed.status().message(), c.message))
        << c.text << " -> " << parsed.status().message();
    EXPECT_FALSE(absl::StrContains(parsed.status().message(), "hunter2"))
        << parsed.status().message();
  }
  // The limits themselves are fine.
  EXPECT_TRUE(ParsePasswordHash(HashWith("10000", Base64(64), hash)).ok());
  EXPECT_TRUE(ParsePasswordHash(HashWith("1000000", salt, hash)).ok());
}

TEST(CredentialsTest, ApiKeyText) {
  EXPECT_TRUE(ValidApiKeyText("12345678"));
  EXPECT_TRUE(ValidApiKeyText(std::string(512, 'k')));
  EXPECT_TRUE(ValidApiKeyText("!~azAZ09_-.+/=\"'"));
  EXPECT_FALSE(ValidApiKeyText("1234567"));
  EXPECT_FALSE(ValidApiKeyText(std::string(513, 'k')));
  EXPECT_FALSE(ValidApiKeyText(""));
  EXPECT_FALSE(ValidApiKeyText("1234 5678"));
  EXPECT_FALSE(ValidApiKeyText("12345678\t"));
  EXPECT_FALSE(ValidApiKeyText("12345678\x7f"));
  EXPECT_FALSE(ValidApiKeyText("12345678\xc3\xa9"));
  EXPECT_FALSE(
      ValidApiKeyText(std::string("1234\0"
                                  "5678",
                                  9)));
}

// RFC 6750 2.1 and RFC 9110 11.1: the scheme in any case, then white space.
TEST(CredentialsTest, BearerToken) {
  EXPECT_EQ(BearerToken("Bearer abc").value_or("none"), "abc");
  EXPECT_EQ(BearerToken("bearer abc").value_or("none"), "abc");
  EXPECT_EQ(BearerToken("BEARER  abc").value_or("none"), "abc");
  EXPECT_EQ(BearerToken("Bearer\tabc \t").value_or("none"), "abc");
  EXPECT_EQ(BearerToken(" \tBearer abc").value_or("none"), "abc");
  EXPECT_EQ(BearerToken("Bearer a b").value_or("none"), "a b");  // then no token matches it
  EXPECT_FALSE(BearerToken("Bearer").has_value());
  EXPECT_FALSE(BearerToken("Bearer   ").has_value());
  EXPECT_FALSE(BearerToken("Bearerabc").has_value());
  EXPECT_FALSE(BearerToken("Basic abc").has_value());
  EXPECT_FALSE(BearerToken("").has_value());
}

TEST(CredentialsTest, TokenTextProblem) {
  EXPECT_EQ(TokenTextProblem("abc!~XYZ_-./+="), "");
  const std::string accented = TokenTextProblem("abc\xc3\xa9defghijklmnop");
  EXPECT_TRUE(absl::StrContains(accented, "character 4 is byte 0xc3")) << accented;
  EXPECT_FALSE(absl::StrContains(accented, "abc")) << accented;
  EXPECT_NE(TokenTextProblem("abc def"), "");
  EXPECT_NE(TokenTextProblem(std::string("ab\0c", 4)), "");
}

TEST(CredentialsTest, SealLeavesOnlyHashes) {
  Resource alice = Parse(kAlice);
  Resource sealed = alice;
  SealCredentials(&sealed, nullptr);
  const auto& consumer = sealed.consumer();
  ASSERT_EQ(consumer.keys_size(), 2);
  EXPECT_EQ(consumer.keys(0).key(), "");
  EXPECT_EQ(consumer.keys(0).key_sha256(), Sha256Hex("alice-key-0123456789"));
  EXPECT_EQ(consumer.keys(1).SerializeAsString(),
            alice.consumer().keys(1).SerializeAsString());
  EXPECT_EQ(consumer.basic_auth().username(), "alice");
  EXPECT_EQ(consumer.basic_auth().password(), "");
  EXPECT_TRUE(ParsePasswordHash(consumer.basic_auth().password_hash()).ok());
  EXPECT_TRUE(VerifyPassword("correct horse battery staple",
                             consumer.basic_auth().password_hash()));
  EXPECT_EQ(consumer.name(), "alice");
  EXPECT_EQ(consumer.groups(0), "admins");
  std::string text = sealed.DebugString();
  EXPECT_FALSE(absl::StrContains(text, "alice-key")) << text;
  EXPECT_FALSE(absl::StrContains(text, "horse")) << text;
}

TEST(CredentialsTest, SealingAgainstTheStoredVersionIsANoOp) {
  Resource stored = Parse(kAlice);
  SealCredentials(&stored, nullptr);
  // The same file applied again: the stored hash is kept (no new salt).
  Resource again = Parse(kAlice);
  SealCredentials(&again, &stored);
  EXPECT_TRUE(MessageDifferencer::Equals(again, stored)) << again.DebugString();
  // What is already sealed stays as it is.
  Resource resealed = stored;
  SealCredentials(&resealed, &stored);
  EXPECT_TRUE(MessageDifferencer::Equals(resealed, stored));
  SealCredentials(&resealed, nullptr);
  EXPECT_TRUE(MessageDifferencer::Equals(resealed, stored));
}

TEST(CredentialsTest, SealMakesANewHashWhenThePasswordOrUserChanges) {
  Resource stored = Parse(kAlice);
  SealCredentials(&stored, nullptr);
  const std::string& old_hash = stored.consumer().basic_auth().password_hash();

  Resource changed = Parse(kAlice);
  changed.mutable_consumer()->mutable_basic_auth()->set_password(
      "a new password");
  SealCredentials(&changed, &stored);
  const std::string& new_hash = changed.consumer().basic_auth().password_hash();
  EXPECT_NE(new_hash, old_hash);
  EXPECT_TRUE(VerifyPassword("a new password", new_hash));
  EXPECT_FALSE(VerifyPassword("correct horse battery staple", new_hash));
  EXPECT_EQ(changed.consumer().basic_auth().password(), "");

  // Same password, another username: not reused.
  Resource renamed_user = Parse(kAlice);
  renamed_user.mutable_consumer()->mutable_basic_auth()->set_username("alice2");
  SealCredentials(&renamed_user, &stored);
  EXPECT_NE(renamed_user.consumer().basic_auth().password_hash(), old_hash);
  EXPECT_TRUE(
      VerifyPassword("correct horse battery staple",
                     renamed_user.consumer().basic_auth().password_hash()));

  // `previous` of another consumer: not reused either.
  Resource bob = Parse(kAlice);
  bob.mutable_consumer()->set_name("bob");
  SealCredentials(&bob, &stored);
  EXPECT_NE(bob.consumer().basic_auth().password_hash(), old_hash);
}

TEST(CredentialsTest, SealLeavesWhatValidationMustReport) {
  // Malformed credentials stay as given, so that validation names them
  // instead of their hash hiding the mistake.
  for (
      const char* text : {
          R"(consumer { name: "a" keys { key: "short" } })",
          R"(consumer { name: "a" keys { key: "has a space" } })",
          R"(consumer { name: "a" keys { key: "[redacted]" } })",
          R"(consumer { name: "a" keys { key: "alice-key-0123456789" key_sha256: "ab" } })",
          R"(consumer { name: "a" basic_auth { username: "a" password: "[redacted]" } })",
          R"(consumer { name: "a" basic_auth { username: "a" password: "p" password_hash: "h" } })",
          R"(cluster { name: "users" endpoints { address: "127.0.0.1" port: 80 } })",
          R"(secret { name: "web" tls_certificate { private_key: "key" } })",
      }) {
    Resource r = Parse(text);
    Resource sealed = r;
    SealCredentials(&sealed, nullptr);
    EXPECT_TRUE(MessageDifferencer::Equals(sealed, r)) << text;
  }
  Resource long_password =
      Parse(R"(consumer { name: "a" basic_auth { username: "a" } })");
  long_password.mutable_consumer()->mutable_basic_auth()->set_password(
      std::string(kMaxPasswordBytes + 1, 'p'));
  Resource sealed = long_password;
  SealCredentials(&sealed, nullptr);
  EXPECT_TRUE(MessageDifferencer::Equals(sealed, long_password));
  // At the limit: hashed.
  long_password.mutable_consumer()->mutable_basic_auth()->set_password(
      std::string(kMaxPasswordBytes, 'p'));
  SealCredentials(&long_password, nullptr);
  EXPECT_EQ(long_password.consumer().basic_auth().password(), "");
  EXPECT_TRUE(
      VerifyPassword(std::string(kMaxPasswordBytes, 'p'),
                     long_password.consumer().basic_auth().password_hash()));
}

}  // namespace
}  // namespace sluice::api
