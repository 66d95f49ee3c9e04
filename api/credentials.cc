#include "api/credentials.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>

#include <climits>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "api/resource.h"
#include "common/log.h"

namespace sluice::api {
namespace {

constexpr char kScheme[] = "pbkdf2-sha256";
constexpr char kFormat[] =
    "pbkdf2-sha256$<iterations>$<salt, base64>$<hash, base64>";
constexpr size_t kSaltBytes = 16;
constexpr size_t kMinSaltBytes = 16;
constexpr size_t kMaxSaltBytes = 64;
constexpr size_t kHashBytes = 32;

std::string EncodeBase64(std::string_view bytes) {
  std::vector<unsigned char> out(4 * ((bytes.size() + 2) / 3) + 1);
  int n = EVP_EncodeBlock(out.data(),
                          reinterpret_cast<const unsigned char*>(bytes.data()),
                          static_cast<int>(bytes.size()));
  return std::string(reinterpret_cast<const char*>(out.data()), n);
}

// Standard base64 with padding, in its one canonical spelling (no
// whitespace, zero padding bits): what EncodeBase64 gives back exactly.
bool DecodeBase64(std::string_view text, std::string* bytes) {
  if (text.empty() || text.size() % 4 != 0 || text.size() > INT_MAX)
    return false;
  std::vector<unsigned char> out(text.size() / 4 * 3);
  int n = EVP_DecodeBlock(out.data(),
                          reinterpret_cast<const unsigned char*>(text.data()),
                          static_cast<int>(text.size()));
  if (n < 0) return false;
  // EVP_DecodeBlock counts the padding as zero bytes.
  size_t padding = text.back() != '='             ? 0
                   : text[text.size() - 2] == '=' ? 2
                                                  : 1;
  if (static_cast<size_t>(n) < padding) return false;
  bytes->assign(reinterpret_cast<const char*>(out.data()), n - padding);
  return EncodeBase64(*bytes) == text;
}

void DeriveKey(std::string_view password, std::string_view salt,
               uint32_t iterations, unsigned char out[kHashBytes]) {
  SLUICE_CHECK(password.size() <= INT_MAX && salt.size() <= INT_MAX &&
               iterations <= INT_MAX);
  // An empty string_view may have a null data(), which OpenSSL need not accept.
  const char* pass = password.empty() ? "" : password.data();
  SLUICE_CHECK(PKCS5_PBKDF2_HMAC(
                   pass, static_cast<int>(password.size()),
                   reinterpret_cast<const unsigned char*>(salt.data()),
                   static_cast<int>(salt.size()), static_cast<int>(iterations),
                   EVP_sha256(), kHashBytes, out) == 1);
}

}  // namespace

void Sha256(std::string_view data, unsigned char out[32]) {
  SLUICE_CHECK(EVP_Digest(data.data(), data.size(), out, nullptr, EVP_sha256(),
                          nullptr) == 1);
}

std::string Sha256Hex(std::string_view data) {
  unsigned char digest[32];
  Sha256(data, digest);
  return absl::BytesToHexString(
      absl::string_view(reinterpret_cast<const char*>(digest), sizeof(digest)));
}

std::optional<std::string_view> BearerToken(std::string_view authorization) {
  constexpr std::string_view kScheme = "Bearer";
  // White space around a field value is not part of it (RFC 9110 5.5); gRPC
  // metadata comes as sent.
  while (!authorization.empty() &&
         (authorization.front() == ' ' || authorization.front() == '\t')) {
    authorization.remove_prefix(1);
  }
  if (authorization.size() <= kScheme.size() ||
      !absl::EqualsIgnoreCase(absl::string_view(authorization.data(), kScheme.size()),
                              absl::string_view(kScheme.data(), kScheme.size()))) {
    return std::nullopt;
  }
  std::string_view rest = authorization.substr(kScheme.size());
  if (rest.front() != ' ' && rest.front() != '\t') return std::nullopt;
  while (!rest.empty() && (rest.front() == ' ' || rest.front() == '\t')) rest.remove_prefix(1);
  while (!rest.empty() && (rest.back() == ' ' || rest.back() == '\t')) rest.remove_suffix(1);
  if (rest.empty()) return std::nullopt;
  return rest;
}

std::string TokenTextProblem(std::string_view token) {
  for (size_t i = 0; i < token.size(); ++i) {
    const unsigned char c = static_cast<unsigned char>(token[i]);
    if (c < 0x21 || c > 0x7e) {
      return absl::StrCat("the token's character ", i + 1, " is byte 0x",
                          absl::Hex(c, absl::kZeroPad2),
                          ": a token is printable ASCII other than space (it travels in "
                          "an HTTP header or gRPC metadata)");
    }
  }
  return "";
}

std::string HashPassword(std::string_view password, uint32_t iterations) {
  SLUICE_CHECK(iterations >= kMinPasswordIterations &&
               iterations <= kMaxPasswordIterations);
  unsigned char salt[kSaltBytes];
  SLUICE_CHECK(RAND_bytes(salt, sizeof(salt)) == 1);
  std::string_view salt_bytes(reinterpret_cast<const char*>(salt),
                              sizeof(salt));
  unsigned char key[kHashBytes];
  DeriveKey(password, salt_bytes, iterations, key);
  return absl::StrCat(kScheme, "$", iterations, "$", EncodeBase64(salt_bytes),
                      "$",
                      EncodeBase64(std::string_view(
                          reinterpret_cast<const char*>(key), sizeof(key))));
}

absl::StatusOr<ParsedPasswordHash> ParsePasswordHash(std::string_view text) {
  // Messages never quote `text`: a password pasted into the wrong field
  // must not end up in an error.
  std::vector<absl::string_view> parts =
      absl::StrSplit(absl::string_view(text.data(), text.size()), '$');
  if (parts.size() != 4) {
    return absl::InvalidArgumentError(
        absl::StrCat("is not a password hash: expected ", kFormat,
                     " (sluicectl hash-password "
                     "makes one)"));
  }
  if (parts[0] != kScheme) {
    return absl::InvalidArgumentError(
        absl::StrCat("uses an unsupported scheme; expected ", kFormat));
  }
  ParsedPasswordHash parsed;
  uint64_t iterations = 0;
  bool digits = !parts[1].empty() && parts[1].size() <= 10;
  for (char c : parts[1]) digits = digits && absl::ascii_isdigit(c);
  if (!digits || !absl::SimpleAtoi(parts[1], &iterations)) {
    return absl::InvalidArgumentError(
        absl::StrCat("iterations must be a number ", kMinPasswordIterations,
                     "..", kMaxPasswordIterations));
  }
  if (iterations < kMinPasswordIterations ||
      iterations > kMaxPasswordIterations) {
    return absl::InvalidArgumentError(
        absl::StrCat("iterations must be ", kMinPasswordIterations, "..",
                     kMaxPasswordIterations, ", got ", iterations));
  }
  parsed.iterations = static_cast<uint32_t>(iterations);
  if (!DecodeBase64(std::string_view(parts[2].data(), parts[2].size()),
                    &parsed.salt)) {
    return absl::InvalidArgumentError(
        "salt is not valid base64 (standard alphabet, padded)");
  }
  if (parsed.salt.size() < kMinSaltBytes ||
      parsed.salt.size() > kMaxSaltBytes) {
    return absl::InvalidArgumentError(
        absl::StrCat("salt is ", parsed.salt.size(), " bytes; must be ",
                     kMinSaltBytes, "..", kMaxSaltBytes));
  }
  if (!DecodeBase64(std::string_view(parts[3].data(), parts[3].size()),
                    &parsed.hash)) {
    return absl::InvalidArgumentError(
        "hash is not valid base64 (standard alphabet, padded)");
  }
  if (parsed.hash.size() != kHashBytes) {
    return absl::InvalidArgumentError(absl::StrCat(
        "hash is ", parsed.hash.size(), " bytes; must be ", kHashBytes));
  }
  return parsed;
}

bool VerifyPassword(std::string_view password, std::string_view password_hash) {
  absl::StatusOr<ParsedPasswordHash> parsed = ParsePasswordHash(password_hash);
  if (!parsed.ok() || password.size() > INT_MAX) return false;
  unsigned char key[kHashBytes];
  DeriveKey(password, parsed->salt, parsed->iterations, key);
  return CRYPTO_memcmp(key, parsed->hash.data(), kHashBytes) == 0;
}

bool ValidApiKeyText(std::string_view key) {
  if (key.size() < kMinApiKeyLength || key.size() > kMaxApiKeyLength)
    return false;
  for (char c : key) {
    if (c < 0x21 || c > 0x7e) return false;
  }
  return true;
}

void SealCredentials(config::v1::Resource* resource,
                     const config::v1::Resource* previous) {
  if (!resource->has_consumer()) return;
  config::v1::Consumer* consumer = resource->mutable_consumer();
  for (config::v1::ApiKey& key : *consumer->mutable_keys()) {
    if (key.key().empty() || !key.key_sha256().empty() ||
        key.key() == kRedactedText || !ValidApiKeyText(key.key())) {
      continue;
    }
    key.set_key_sha256(Sha256Hex(key.key()));
    key.clear_key();
  }
  if (!consumer->has_basic_auth()) return;
  config::v1::BasicAuthCredential* basic = consumer->mutable_basic_auth();
  const std::string& password = basic->password();
  if (password.empty() || !basic->password_hash().empty() ||
      password.size() > kMaxPasswordBytes || password == kRedactedText ||
      HasControlCharacter(password)) {
    return;  // left for validation to refuse
  }
  std::string hash;
  if (previous != nullptr && previous->has_consumer() &&
      previous->consumer().name() == consumer->name()) {
    const config::v1::BasicAuthCredential& before =
        previous->consumer().basic_auth();
    if (before.username() == basic->username() &&
        !before.password_hash().empty() &&
        VerifyPassword(password, before.password_hash())) {
      hash = before.password_hash();
    }
  }
  if (hash.empty()) hash = HashPassword(password);
  basic->set_password_hash(std::move(hash));
  basic->clear_password();
}

}  // namespace sluice::api
