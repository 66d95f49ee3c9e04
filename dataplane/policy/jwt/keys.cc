#include "dataplane/policy/jwt/keys.h"

#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/crypto.h>
#include <openssl/ecdsa.h>
#include <openssl/err.h>
#include <openssl/hmac.h>
#include <openssl/pem.h>
#include <openssl/rsa.h>
#include <openssl/x509.h>
#include <simdjson.h>

#include <algorithm>
#include <set>
#include <utility>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "dataplane/policy/jwt/jws.h"

namespace sluice::policy::jwt {
namespace {

constexpr size_t kMaxJwksDepth = 16;

struct AlgorithmInfo {
  Algorithm alg;
  std::string_view name;
  KeyType key_type;
};
constexpr AlgorithmInfo kAlgorithms[] = {
    {Algorithm::kRs256, "RS256", KeyType::kRsa},   {Algorithm::kRs384, "RS384", KeyType::kRsa},
    {Algorithm::kRs512, "RS512", KeyType::kRsa},   {Algorithm::kPs256, "PS256", KeyType::kRsa},
    {Algorithm::kEs256, "ES256", KeyType::kEcP256}, {Algorithm::kEs384, "ES384", KeyType::kEcP384},
    {Algorithm::kEdDsa, "EdDSA", KeyType::kEd25519}, {Algorithm::kHs256, "HS256", KeyType::kHmac},
};

const AlgorithmInfo& Info(Algorithm alg) {
  for (const AlgorithmInfo& info : kAlgorithms) {
    if (info.alg == alg) return info;
  }
  abort();  // every enumerator is in the table
}

const EVP_MD* Digest(Algorithm alg) {
  switch (alg) {
    case Algorithm::kRs384:
    case Algorithm::kEs384:
      return EVP_sha384();
    case Algorithm::kRs512:
      return EVP_sha512();
    case Algorithm::kEdDsa:
      return nullptr;  // Ed25519 hashes internally
    default:
      return EVP_sha256();
  }
}

// --- DER, just enough for a SubjectPublicKeyInfo --------------------------

void AppendTlv(std::string* out, unsigned char tag, std::string_view content) {
  out->push_back(static_cast<char>(tag));
  size_t n = content.size();
  if (n < 0x80) {
    out->push_back(static_cast<char>(n));
  } else if (n <= 0xff) {
    out->push_back('\x81');
    out->push_back(static_cast<char>(n));
  } else {  // keys are far below 64 KiB
    out->push_back('\x82');
    out->push_back(static_cast<char>(n >> 8));
    out->push_back(static_cast<char>(n & 0xff));
  }
  out->append(content);
}

// An unsigned big-endian number as a DER INTEGER.
void AppendInteger(std::string* out, std::string_view magnitude) {
  while (magnitude.size() > 1 && magnitude[0] == '\0') magnitude.remove_prefix(1);
  std::string content;
  if (magnitude.empty() || (static_cast<unsigned char>(magnitude[0]) & 0x80)) content.push_back('\0');
  content.append(magnitude);
  AppendTlv(out, 0x02, content);
}

// Reads one TLV from the front of `in`.
bool ReadTlv(std::string_view* in, unsigned char* tag, std::string_view* content) {
  if (in->size() < 2) return false;
  *tag = static_cast<unsigned char>((*in)[0]);
  size_t len = static_cast<unsigned char>((*in)[1]);
  size_t header = 2;
  if (len & 0x80) {
    size_t bytes = len & 0x7f;
    if (bytes == 0 || bytes > 3 || in->size() < 2 + bytes) return false;
    len = 0;
    for (size_t i = 0; i < bytes; ++i) len = len << 8 | static_cast<unsigned char>((*in)[2 + i]);
    header += bytes;
  }
  if (in->size() - header < len) return false;
  *content = in->substr(header, len);
  in->remove_prefix(header + len);
  return true;
}

constexpr std::string_view kRsaEncryptionOid("\x2a\x86\x48\x86\xf7\x0d\x01\x01\x01", 9);
constexpr std::string_view kEcPublicKeyOid("\x2a\x86\x48\xce\x3d\x02\x01", 7);
constexpr std::string_view kP256Oid("\x2a\x86\x48\xce\x3d\x03\x01\x07", 8);
constexpr std::string_view kP384Oid("\x2b\x81\x04\x00\x22", 5);

std::string SubjectPublicKeyInfo(std::string_view algorithm_oid, std::string_view parameters,
                                 std::string_view public_key) {
  std::string algorithm;
  AppendTlv(&algorithm, 0x06, algorithm_oid);
  algorithm.append(parameters);
  std::string bits(1, '\0');  // no unused bits
  bits.append(public_key);
  std::string content;
  AppendTlv(&content, 0x30, algorithm);
  AppendTlv(&content, 0x03, bits);
  std::string spki;
  AppendTlv(&spki, 0x30, content);
  return spki;
}

EVP_PKEY* PublicKeyFromDer(const std::string& der) {
  const unsigned char* p = reinterpret_cast<const unsigned char*>(der.data());
  EVP_PKEY* key = d2i_PUBKEY(nullptr, &p, static_cast<long>(der.size()));
  if (key != nullptr && p != reinterpret_cast<const unsigned char*>(der.data()) + der.size()) {
    EVP_PKEY_free(key);
    key = nullptr;
  }
  if (key == nullptr) ERR_clear_error();
  return key;
}

std::string DerOf(EVP_PKEY* key) {
  unsigned char* der = nullptr;
  int len = i2d_PUBKEY(key, &der);
  if (len <= 0) {
    ERR_clear_error();
    return "";
  }
  std::string out(reinterpret_cast<char*>(der), static_cast<size_t>(len));
  OPENSSL_free(der);
  return out;
}

// The SubjectPublicKeyInfo's algorithm parameters (the curve OID of an EC
// key) and the BIT STRING's key bytes.
bool SplitSpki(std::string_view der, std::string_view* parameters, std::string_view* key) {
  unsigned char tag;
  std::string_view spki, algorithm, bits, oid;
  if (!ReadTlv(&der, &tag, &spki) || tag != 0x30) return false;
  if (!ReadTlv(&spki, &tag, &algorithm) || tag != 0x30) return false;
  if (!ReadTlv(&spki, &tag, &bits) || tag != 0x03 || bits.empty() || bits[0] != '\0') return false;
  if (!ReadTlv(&algorithm, &tag, &oid) || tag != 0x06) return false;
  *parameters = algorithm;
  *key = bits.substr(1);
  return true;
}

// The odd primes below 2^16, for trial division.
const std::vector<uint32_t>& SmallPrimes() {
  static const std::vector<uint32_t> primes = [] {
    constexpr uint32_t kBound = 1 << 16;
    std::vector<char> composite(kBound, 0);
    std::vector<uint32_t> out;
    for (uint32_t i = 3; i < kBound; i += 2) {
      if (composite[i]) continue;
      out.push_back(i);
      for (uint64_t j = uint64_t{i} * i; j < kBound; j += 2 * i) composite[j] = 1;
    }
    return out;
  }();
  return primes;
}

// floor(n^(1/k)) into `x`, k >= 2: Newton's method from above.
bool IntegerRoot(const BIGNUM* n, int k, BIGNUM* x, BN_CTX* ctx) {
  BN_CTX_start(ctx);
  BIGNUM* y = BN_CTX_get(ctx);
  BIGNUM* t = BN_CTX_get(ctx);
  BIGNUM* power = BN_CTX_get(ctx);
  bool ok = power != nullptr && BN_set_word(power, static_cast<BN_ULONG>(k - 1)) == 1;
  BN_zero(x);
  ok = ok && BN_set_bit(x, BN_num_bits(n) / k + 1) == 1;  // above the root
  for (int round = 0; ok && round < 4096; ++round) {
    // y = ((k - 1) x + n / x^(k-1)) / k
    ok = BN_exp(t, x, power, ctx) && BN_div(y, nullptr, n, t, ctx) &&
         BN_copy(t, x) != nullptr && BN_mul_word(t, static_cast<BN_ULONG>(k - 1)) &&
         BN_add(y, y, t) && BN_div_word(y, static_cast<BN_ULONG>(k)) != static_cast<BN_ULONG>(-1);
    if (!ok || BN_cmp(y, x) >= 0) break;
    ok = BN_copy(x, y) != nullptr;
  }
  BN_CTX_end(ctx);
  return ok;
}

// Whether x^k == n.
bool IsPower(const BIGNUM* x, int k, const BIGNUM* n, BN_CTX* ctx) {
  BN_CTX_start(ctx);
  BIGNUM* power = BN_CTX_get(ctx);
  BIGNUM* t = BN_CTX_get(ctx);
  const bool is = t != nullptr && BN_set_word(power, static_cast<BN_ULONG>(k)) &&
                  BN_exp(t, x, power, ctx) && BN_cmp(t, n) == 0;
  BN_CTX_end(ctx);
  return is;
}

// Why an RSA modulus (big-endian, odd) gives its private key away, or "":
// a prime factor below 2^16 (n = 3q: q = n/3 is the rest), n itself prime
// (d = e^-1 mod n-1), n a perfect power (p^2, p^3: its root gives d), or
// two prime factors so close that Fermat's method finds them (|p - q| of
// about a quarter of n's bits or less: CVE-2022-26320's keys). Tokens
// signed with such a key can be forged from the public key alone. (A
// Fermat test to base 2 finds a prime n; an RSA modulus passes it about
// never.)
std::string CheckRsaModulus(std::string_view n_be) {
  BN_CTX* ctx = BN_CTX_new();
  if (ctx == nullptr) return "";
  BN_CTX_start(ctx);
  BIGNUM* n = BN_CTX_get(ctx);
  BIGNUM* t = BN_CTX_get(ctx);
  BIGNUM* x = BN_CTX_get(ctx);
  BIGNUM* y = BN_CTX_get(ctx);
  std::string why;
  bool ok = y != nullptr &&
            BN_bin2bn(reinterpret_cast<const unsigned char*>(n_be.data()),
                      static_cast<int>(n_be.size()), n) != nullptr;
  for (size_t i = 0; ok && why.empty() && i < SmallPrimes().size(); ++i) {
    const uint32_t p = SmallPrimes()[i];
    const BN_ULONG rest = BN_mod_word(n, p);
    if (rest == static_cast<BN_ULONG>(-1)) ok = false;
    if (ok && rest == 0) {
      why = absl::StrCat("RSA modulus has the small prime factor ", p,
                         ": its private key follows from it, and anyone can sign");
    }
  }
  // 2^(n-1) mod n == 1: n is prime.
  if (ok && why.empty() && BN_copy(t, n) != nullptr && BN_sub_word(t, 1) && BN_set_word(x, 2) &&
      BN_mod_exp(y, x, t, n, ctx) && BN_is_one(y)) {
    why = "RSA modulus is prime: its private key follows from it, and anyone can sign";
  }
  // A k-th power, for each prime k up to n's bits / 16 (its root is above
  // the small primes).
  for (int k = 2; ok && why.empty() && k <= BN_num_bits(n) / 16; ++k) {
    bool prime_k = true;
    for (int f = 2; f * f <= k; ++f) prime_k = prime_k && k % f != 0;
    if (!prime_k) continue;
    ok = IntegerRoot(n, k, x, ctx);
    if (ok && IsPower(x, k, n, ctx)) {
      why = absl::StrCat("RSA modulus is ",
                         k == 2 ? std::string("a square")
                         : k == 3 ? std::string("a cube")
                                  : absl::StrCat("a perfect ", k, "th power"),
                         ": its private key follows from it, and anyone can sign");
    }
  }
  // Fermat's method: a = ceil(sqrt(n)) and up; a^2 - n a square b^2 gives
  // n = (a - b)(a + b). 64 steps find factors up to about 2^(bits/4 + 3)
  // apart; random primes are about 2^(bits/2) apart.
  if (ok && why.empty()) {
    ok = IntegerRoot(n, 2, x, ctx);
    if (ok && !IsPower(x, 2, n, ctx)) ok = BN_add_word(x, 1) == 1;
    BIGNUM* b = BN_CTX_get(ctx);
    ok = ok && b != nullptr;
    for (int step = 0; ok && why.empty() && step < 64; ++step) {
      ok = BN_sqr(t, x, ctx) && BN_sub(t, t, n) && IntegerRoot(t, 2, b, ctx);
      if (ok && IsPower(b, 2, t, ctx)) {
        why = "RSA modulus has two prime factors so close that Fermat's method finds them: its "
              "private key follows from it, and anyone can sign";
      }
      ok = ok && BN_add_word(x, 1);
    }
  }
  BN_CTX_end(ctx);
  BN_CTX_free(ctx);
  ERR_clear_error();
  return why;
}

// Why an RSA key is refused, or "" (size, and an exponent that is odd and
// above 1: e = 1 would make every padded digest its own signature).
std::string CheckRsa(EVP_PKEY* key) {
  int bits = EVP_PKEY_bits(key);
  if (bits < kMinRsaBits || bits > kMaxRsaBits) {
    return absl::StrCat("RSA key of ", bits, " bits; ", kMinRsaBits, "..", kMaxRsaBits,
                        " are accepted");
  }
  std::string der = DerOf(key);
  std::string_view parameters, rsa_key, sequence, n, e;
  unsigned char tag;
  if (!SplitSpki(der, &parameters, &rsa_key) || !ReadTlv(&rsa_key, &tag, &sequence) ||
      tag != 0x30 || !ReadTlv(&sequence, &tag, &n) || tag != 0x02 ||
      !ReadTlv(&sequence, &tag, &e) || tag != 0x02) {
    return "RSA key does not encode";
  }
  while (!e.empty() && e[0] == '\0') e.remove_prefix(1);
  while (!n.empty() && n[0] == '\0') n.remove_prefix(1);
  if (n.empty() || (n.back() & 1) == 0) return "RSA modulus is even: it is no RSA public key";
  if (e.empty() || (e.back() & 1) == 0 || (e.size() == 1 && e[0] == '\1')) {
    return "RSA public exponent must be odd and greater than 1";
  }
  // RFC 8017 3.1: e < n; and at most 33 bits, as BoringSSL takes (65537
  // is what keys use): a larger one only makes each verification dearer.
  if (e.size() > n.size() || (e.size() == n.size() && e >= n)) {
    return "RSA public exponent must be less than the modulus (RFC 8017 3.1)";
  }
  if (e.size() > 5 || (e.size() == 5 && static_cast<unsigned char>(e[0]) > 1)) {
    return "RSA public exponent is over 33 bits; keys use 65537";
  }
  return CheckRsaModulus(n);
}

// Whether a point of edwards25519 has this y (32 bytes little-endian, below
// p) and an x of that sign (RFC 8032 5.1.3): x^2 = (y^2 - 1) / (d y^2 + 1)
// must be a square mod p = 2^255 - 19 (Euler's criterion), and x = 0 has
// no negative.
bool Ed25519PointExists(const unsigned char y_le[32], bool sign) {
  unsigned char y_be[32];
  for (int i = 0; i < 32; ++i) y_be[i] = y_le[31 - i];
  BN_CTX* ctx = BN_CTX_new();
  if (ctx == nullptr) return false;
  BN_CTX_start(ctx);
  BIGNUM* p = BN_CTX_get(ctx);
  BIGNUM* y = BN_CTX_get(ctx);
  BIGNUM* y2 = BN_CTX_get(ctx);
  BIGNUM* d = BN_CTX_get(ctx);
  BIGNUM* t = BN_CTX_get(ctx);
  BIGNUM* u = BN_CTX_get(ctx);
  BIGNUM* v = BN_CTX_get(ctx);
  BIGNUM* e = BN_CTX_get(ctx);
  bool ok = e != nullptr && BN_set_bit(p, 255) && BN_sub_word(p, 19) &&
            BN_bin2bn(y_be, sizeof y_be, y) != nullptr && BN_mod_sqr(y2, y, p, ctx) &&
            // d = -121665 / 121666 mod p
            BN_set_word(t, 121666) && BN_mod_inverse(d, t, p, ctx) != nullptr &&
            BN_set_word(t, 121665) && BN_mod_mul(d, d, t, p, ctx) && BN_sub(d, p, d) &&
            // u = y^2 - 1, v = d y^2 + 1
            BN_copy(u, y2) != nullptr && BN_set_word(t, 1) && BN_mod_sub(u, u, t, p, ctx) &&
            BN_mod_mul(v, d, y2, p, ctx) && BN_mod_add(v, v, t, p, ctx);
  bool exists = false;
  if (ok && BN_is_zero(u)) {
    exists = !sign;  // x = 0: y = 1 or p - 1, and no -0
  } else if (ok && !BN_is_zero(v) && BN_mod_inverse(v, v, p, ctx) != nullptr &&
             BN_mod_mul(u, u, v, p, ctx) && BN_copy(e, p) != nullptr && BN_sub_word(e, 1) &&
             BN_rshift1(e, e) && BN_mod_exp(t, u, e, p, ctx)) {
    exists = BN_is_one(t);
  }
  BN_CTX_end(ctx);
  BN_CTX_free(ctx);
  ERR_clear_error();
  return exists;
}

// Why an Ed25519 public key is refused, or "": an encoding of a point of
// small order (the identity, or a point of order 2, 4 or 8) verifies
// signatures anyone can make, and a y at or above p is not canonical
// (RFC 8032 5.1.3). These points' y, little-endian: 0, 1, p - 1 and the
// two of order 8 (each with either sign of x, the encoding's top bit).
std::string CheckEd25519(EVP_PKEY* key) {
  unsigned char raw[32];
  size_t len = sizeof raw;
  if (EVP_PKEY_get_raw_public_key(key, raw, &len) != 1 || len != sizeof raw) {
    ERR_clear_error();
    return "Ed25519 key does not encode";
  }
  const bool sign = (raw[31] & 0x80) != 0;  // of x
  raw[31] &= 0x7f;
  static constexpr std::string_view kSmallOrderY[] = {
      "0000000000000000000000000000000000000000000000000000000000000000",
      "0100000000000000000000000000000000000000000000000000000000000000",
      "ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
      "26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc05",
      "c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac037a",
  };
  const std::string hex = absl::BytesToHexString(
      absl::string_view(reinterpret_cast<const char*>(raw), sizeof raw));
  for (std::string_view y : kSmallOrderY) {
    if (hex == y) {
      return "the Ed25519 key is a point of small order: it verifies signatures anyone can make";
    }
  }
  // y >= p = 2^255 - 19: 0x7f, then 30 bytes of 0xff, then >= 0xed.
  const bool high = raw[31] == 0x7f &&
                    std::all_of(raw + 1, raw + 31, [](unsigned char b) { return b == 0xff; });
  if (high && raw[0] >= 0xed) {
    return "the Ed25519 key is not canonically encoded (its y is not below p)";
  }
  if (!Ed25519PointExists(raw, sign)) {
    return "the Ed25519 key is not a point on the curve (no x has its y)";
  }
  return "";
}

// The type of a decoded public key, or an error.
std::optional<KeyType> TypeOf(EVP_PKEY* key, std::string* error) {
  switch (EVP_PKEY_id(key)) {
    case EVP_PKEY_RSA:
      *error = CheckRsa(key);
      if (!error->empty()) return std::nullopt;
      return KeyType::kRsa;
    case EVP_PKEY_EC: {
      std::string der = DerOf(key);
      std::string_view parameters, point, oid;
      unsigned char tag;
      if (SplitSpki(der, &parameters, &point) && ReadTlv(&parameters, &tag, &oid) &&
          tag == 0x06) {
        if (oid == kP256Oid) return KeyType::kEcP256;
        if (oid == kP384Oid) return KeyType::kEcP384;
      }
      *error = "EC curve not supported (P-256, P-384)";
      return std::nullopt;
    }
    case EVP_PKEY_ED25519:
      *error = CheckEd25519(key);
      if (!error->empty()) return std::nullopt;
      return KeyType::kEd25519;
    default:
      *error = "key type not supported (RSA, EC P-256 or P-384, Ed25519)";
      return std::nullopt;
  }
}

// --- JWK ------------------------------------------------------------------

// One JWK's members, read from its JSON object.
class JwkReader {
 public:
  explicit JwkReader(simdjson::dom::object object) : object_(object) {}

  // A member that must be a string when present. nullopt: absent; sets
  // error_ when present but not a string.
  std::optional<std::string_view> String(std::string_view name) {
    simdjson::dom::element value;
    if (object_.at_key(name).get(value) != simdjson::SUCCESS) return std::nullopt;
    std::string_view text;
    if (value.get_string().get(text) != simdjson::SUCCESS) {
      Fail(absl::StrCat(std::string(name), " is not a string"));
      return std::nullopt;
    }
    return text;
  }
  bool Has(std::string_view name) {
    simdjson::dom::element value;
    return object_.at_key(name).get(value) == simdjson::SUCCESS;
  }
  // A required base64url member, decoded.
  std::optional<std::string> Bytes(std::string_view name) {
    std::optional<std::string_view> text = String(name);
    if (!ok()) return std::nullopt;
    if (!text) {
      Fail(absl::StrCat(std::string(name), " is missing"));
      return std::nullopt;
    }
    std::optional<std::string> bytes = DecodeBase64Url(*text);
    if (!bytes) {
      // Only the alphabet and a possible length: the last character sets
      // bits past the last byte (an edited or cut value).
      const bool alphabet = std::all_of(text->begin(), text->end(), [](char c) {
        return absl::ascii_isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '_';
      });
      Fail(absl::StrCat(std::string(name),
                        alphabet && text->size() % 4 != 1
                            ? " is not canonical base64url: its last character sets bits past "
                              "the last byte (was the value edited or cut short?)"
                            : " is not base64url (without padding)"));
    }
    return bytes;
  }
  bool KeyOpsAllowVerify() {
    simdjson::dom::element value;
    if (object_.at_key("key_ops").get(value) != simdjson::SUCCESS) return true;
    simdjson::dom::array ops;
    if (value.get_array().get(ops) != simdjson::SUCCESS) {
      Fail("key_ops is not an array");
      return false;
    }
    std::vector<std::string_view> seen;
    bool verify = false;
    for (simdjson::dom::element op : ops) {
      std::string_view text;
      if (op.get_string().get(text) != simdjson::SUCCESS) {
        Fail("key_ops holds a value that is not a string");
        return false;
      }
      if (std::find(seen.begin(), seen.end(), text) != seen.end()) {
        // RFC 7517 4.3: duplicate key operation values MUST NOT be present.
        Fail(absl::StrCat("key_ops holds \"", Quoted(text), "\" twice (RFC 7517 4.3)"));
        return false;
      }
      seen.push_back(text);
      verify = verify || text == "verify";
    }
    if (verify) return true;
    Fail("key_ops does not include \"verify\"");
    return false;
  }
  // False (and error_ set) when a member name appears twice: two JSON
  // readers could take different keys from it.
  bool MembersUnique() {
    std::vector<std::string_view> seen;
    for (simdjson::dom::key_value_pair member : object_) {
      if (std::find(seen.begin(), seen.end(), member.key) != seen.end()) {
        Fail(absl::StrCat("member \"", Quoted(member.key),
                          "\" appears twice"));
        return false;
      }
      seen.push_back(member.key);
    }
    return true;
  }
  // The first member whose name is not in `allowed`, or nullopt.
  std::optional<std::string_view> MemberNotIn(std::initializer_list<std::string_view> allowed) {
    for (simdjson::dom::key_value_pair member : object_) {
      if (std::find(allowed.begin(), allowed.end(), member.key) == allowed.end()) {
        return member.key;
      }
    }
    return std::nullopt;
  }
  // A member name as errors quote it: at most 32 bytes, escaped.
  static std::string Quoted(std::string_view name) {
    name = name.substr(0, 32);
    return absl::CHexEscape(absl::string_view(name.data(), name.size()));
  }
  void Fail(std::string message) {
    if (error_.empty()) error_ = std::move(message);
  }
  bool ok() const { return error_.empty(); }
  const std::string& error() const { return error_; }

 private:
  simdjson::dom::object object_;
  std::string error_;
};

EVP_PKEY* RsaFromJwk(JwkReader& jwk) {
  std::optional<std::string> n = jwk.Bytes("n");
  std::optional<std::string> e = jwk.Bytes("e");
  if (!jwk.ok()) return nullptr;
  std::string rsa_key;
  std::string integers;
  AppendInteger(&integers, *n);
  AppendInteger(&integers, *e);
  AppendTlv(&rsa_key, 0x30, integers);
  std::string null_parameters("\x05\x00", 2);
  EVP_PKEY* key = PublicKeyFromDer(SubjectPublicKeyInfo(kRsaEncryptionOid, null_parameters, rsa_key));
  if (key == nullptr) jwk.Fail("n and e do not make an RSA public key");
  return key;
}

EVP_PKEY* EcFromJwk(JwkReader& jwk, KeyType* type) {
  std::optional<std::string_view> crv = jwk.String("crv");
  if (!jwk.ok()) return nullptr;
  size_t size;
  std::string_view curve_oid;
  if (crv == "P-256") {
    *type = KeyType::kEcP256;
    size = 32;
    curve_oid = kP256Oid;
  } else if (crv == "P-384") {
    *type = KeyType::kEcP384;
    size = 48;
    curve_oid = kP384Oid;
  } else {
    jwk.Fail(crv ? absl::StrCat("crv \"", std::string(*crv), "\" is not supported (P-256, P-384)")
                 : std::string("crv is missing"));
    return nullptr;
  }
  std::optional<std::string> x = jwk.Bytes("x");
  std::optional<std::string> y = jwk.Bytes("y");
  if (!jwk.ok()) return nullptr;
  if (x->size() != size || y->size() != size) {
    jwk.Fail(absl::StrCat("x and y must be ", size, " bytes each for ", std::string(*crv)));
    return nullptr;
  }
  std::string parameters;
  AppendTlv(&parameters, 0x06, curve_oid);
  std::string point = absl::StrCat("\x04", *x, *y);  // uncompressed
  EVP_PKEY* key = PublicKeyFromDer(SubjectPublicKeyInfo(kEcPublicKeyOid, parameters, point));
  if (key == nullptr) jwk.Fail("the point (x, y) is not on the curve");
  return key;
}

EVP_PKEY* OkpFromJwk(JwkReader& jwk) {
  std::optional<std::string_view> crv = jwk.String("crv");
  if (!jwk.ok()) return nullptr;
  if (crv != "Ed25519") {
    jwk.Fail(crv ? absl::StrCat("crv \"", std::string(*crv), "\" is not supported (Ed25519)")
                 : std::string("crv is missing"));
    return nullptr;
  }
  std::optional<std::string> x = jwk.Bytes("x");
  if (!jwk.ok()) return nullptr;
  if (x->size() != 32) {
    jwk.Fail("x must be 32 bytes for Ed25519");
    return nullptr;
  }
  EVP_PKEY* key = EVP_PKEY_new_raw_public_key(
      EVP_PKEY_ED25519, nullptr, reinterpret_cast<const unsigned char*>(x->data()), x->size());
  if (key == nullptr) {
    ERR_clear_error();
    jwk.Fail("x is not an Ed25519 public key");
    return nullptr;
  }
  if (std::string why = CheckEd25519(key); !why.empty()) {
    EVP_PKEY_free(key);
    jwk.Fail(why);
    return nullptr;
  }
  return key;
}

// One JWK; nullopt with jwk.error() when it cannot be used.
std::optional<VerificationKey> KeyFromJwk(JwkReader& jwk) {
  std::optional<std::string_view> kty = jwk.String("kty");
  std::optional<std::string_view> kid = jwk.String("kid");
  std::optional<std::string_view> alg_name = jwk.String("alg");
  std::optional<std::string_view> use = jwk.String("use");
  if (!jwk.ok() || !jwk.MembersUnique()) return std::nullopt;
  if (!kty) {
    jwk.Fail("kty is missing");
    return std::nullopt;
  }
  if (kid && kid->size() > kMaxKidLength) {
    jwk.Fail(absl::StrCat("kid is longer than ", kMaxKidLength, " characters"));
    return std::nullopt;
  }
  if (use && *use != "sig") {
    jwk.Fail(absl::StrCat("use is \"", std::string(*use), "\"; only \"sig\" keys verify tokens"));
    return std::nullopt;
  }
  if (!jwk.KeyOpsAllowVerify()) return std::nullopt;
  std::optional<Algorithm> alg;
  if (alg_name) {
    alg = AlgorithmFromName(*alg_name);
    if (!alg) {
      jwk.Fail(absl::StrCat("alg \"", std::string(*alg_name), "\" is not supported (",
                            AlgorithmNames(), ")"));
      return std::nullopt;
    }
  }
  KeyType type;
  EVP_PKEY* key = nullptr;
  std::string secret;
  if (*kty == "oct") {
    type = KeyType::kHmac;
    // Only `k` is redacted where config is shown: any other member (a
    // private "d" pasted along) would be shown as it is.
    if (std::optional<std::string_view> other =
            jwk.MemberNotIn({"kty", "k", "kid", "alg", "use", "key_ops", "ext"})) {
      jwk.Fail(absl::StrCat("an oct key takes only kty, k, kid, alg, use, key_ops and ext; \"",
                            JwkReader::Quoted(*other),
                            "\" is not one (it would be shown unredacted)"));
      return std::nullopt;
    }
    std::optional<std::string> k = jwk.Bytes("k");
    if (!jwk.ok()) return std::nullopt;
    if (k->size() < kMinHmacKeyBytes || k->size() > kMaxHmacKeyBytes) {
      jwk.Fail(absl::StrCat("k is ", k->size(), " bytes; HS256 takes ", kMinHmacKeyBytes, "..",
                            kMaxHmacKeyBytes, " (RFC 7518 3.2)"));
      return std::nullopt;
    }
    secret = std::move(*k);
  } else {
    for (std::string_view private_member : {"d", "p", "q", "dp", "dq", "qi", "oth", "k"}) {
      if (jwk.Has(private_member)) {
        jwk.Fail(absl::StrCat("holds private key material (", std::string(private_member),
                              "); give the public key only"));
        return std::nullopt;
      }
    }
    if (*kty == "RSA") {
      type = KeyType::kRsa;
      key = RsaFromJwk(jwk);
    } else if (*kty == "EC") {
      key = EcFromJwk(jwk, &type);
    } else if (*kty == "OKP") {
      type = KeyType::kEd25519;
      key = OkpFromJwk(jwk);
    } else {
      jwk.Fail(absl::StrCat("kty \"", std::string(*kty), "\" is not supported (RSA, EC, OKP, oct)"));
      return std::nullopt;
    }
    if (key == nullptr) return std::nullopt;
    if (type == KeyType::kRsa) {
      std::string why = CheckRsa(key);
      if (!why.empty()) {
        EVP_PKEY_free(key);
        jwk.Fail(why);
        return std::nullopt;
      }
    }
  }
  if (alg && Info(*alg).key_type != type) {
    if (key != nullptr) EVP_PKEY_free(key);
    jwk.Fail(absl::StrCat("alg \"", std::string(AlgorithmName(*alg)), "\" does not fit a key of kty \"",
                          std::string(*kty), "\""));
    return std::nullopt;
  }
  return VerificationKey(type, kid ? std::string(*kid) : std::string(), alg, key,
                         std::move(secret));
}

void ParseJwks(std::string_view jwks, std::vector<VerificationKey>* keys,
               std::vector<KeySetError>* errors) {
  auto fail = [&](std::string message) { errors->push_back({"jwks", std::move(message)}); };
  if (jwks.size() > kMaxJwksBytes) {
    fail(absl::StrCat("is ", jwks.size(), " bytes; at most ", kMaxJwksBytes));
    return;
  }
  simdjson::dom::parser parser(kMaxJwksBytes);
  if (parser.allocate(std::max<size_t>(jwks.size(), 1), kMaxJwksDepth) != simdjson::SUCCESS) {
    fail("cannot be parsed (out of memory)");
    return;
  }
  simdjson::dom::element root;
  simdjson::error_code error = parser.parse(jwks.data(), jwks.size()).get(root);
  if (error != simdjson::SUCCESS) {
    fail(absl::StrCat("is not JSON: ", simdjson::error_message(error)));
    return;
  }
  simdjson::dom::array array;
  if (root.at_key("keys").get_array().get(array) != simdjson::SUCCESS) {
    fail("is not a JWK Set (a JSON object with a \"keys\" array)");
    return;
  }
  {
    // One "keys": two JSON readers could take different arrays.
    size_t keys_members = 0;
    simdjson::dom::object set;
    if (root.get_object().get(set) == simdjson::SUCCESS) {
      for (simdjson::dom::key_value_pair member : set) keys_members += member.key == "keys";
    }
    if (keys_members > 1) {
      fail("names \"keys\" more than once");
      return;
    }
  }
  size_t index = 0;
  for (simdjson::dom::element item : array) {
    size_t i = index++;
    simdjson::dom::object object;
    if (item.get_object().get(object) != simdjson::SUCCESS) {
      fail(absl::StrCat("key ", i, ": not a JSON object"));
      continue;
    }
    JwkReader jwk(object);
    std::optional<VerificationKey> key = KeyFromJwk(jwk);
    if (key) {
      keys->push_back(std::move(*key));
      continue;
    }
    std::string_view kid;
    simdjson::dom::element kid_value;
    bool has_kid = object.at_key("kid").get(kid_value) == simdjson::SUCCESS &&
                   kid_value.get_string().get(kid) == simdjson::SUCCESS && !kid.empty() &&
                   kid.size() <= kMaxKidLength;
    fail(absl::StrCat("key ", i,
                      has_kid ? absl::StrCat(" (kid \"", std::string(kid), "\")") : std::string(),
                      ": ", jwk.error()));
  }
}

std::optional<VerificationKey> KeyFromPem(std::string_view pem, std::string_view kid,
                                          std::string* error) {
  BIO* bio = BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size()));
  // No passphrase, ever: the default callback would prompt on a terminal.
  pem_password_cb* no_passphrase = [](char*, int, int, void*) { return 0; };
  EVP_PKEY* key = bio ? PEM_read_bio_PUBKEY(bio, nullptr, no_passphrase, nullptr) : nullptr;
  BIO_free(bio);
  if (key == nullptr) {
    ERR_clear_error();
    *error = "is not a PEM public key (-----BEGIN PUBLIC KEY-----)";
    return std::nullopt;
  }
  std::optional<KeyType> type = TypeOf(key, error);
  if (!type) {
    EVP_PKEY_free(key);
    return std::nullopt;
  }
  return VerificationKey(*type, std::string(kid), std::nullopt, key, "");
}

}  // namespace

std::string PemProblem(std::string_view pem) {
  constexpr std::string_view kBegin = "-----BEGIN ";
  constexpr std::string_view kEnd = "-----END PUBLIC KEY-----";
  int blocks = 0;
  for (size_t at = pem.find(kBegin); at != std::string_view::npos;
       at = pem.find(kBegin, at + 1)) {
    ++blocks;
    const size_t label_end = pem.find("-----", at + kBegin.size());
    const std::string_view label = pem.substr(
        at + kBegin.size(),
        label_end == std::string_view::npos ? 0 : label_end - at - kBegin.size());
    if (label != "PUBLIC KEY") {
      // The label only (bounded): never the block's contents.
      const std::string_view shown = label.substr(0, 40);
      return absl::StrCat("PEM block ", blocks, " is a '",
                          absl::CHexEscape(absl::string_view(shown.data(), shown.size())),
                          "', not a PUBLIC KEY",
                          label.find("PRIVATE") != std::string_view::npos
                              ? " (a private key never belongs in a policy)"
                              : "");
    }
  }
  if (blocks > 1) return "holds more than one PEM block: give each public key its own entry";
  const size_t begin = pem.find(kBegin);
  const size_t end = pem.find(kEnd);
  auto blank = [](std::string_view text) {
    return text.find_first_not_of(" \t\r\n") == std::string_view::npos;
  };
  if (begin != std::string_view::npos && end != std::string_view::npos &&
      (!blank(pem.substr(0, begin)) || !blank(pem.substr(end + kEnd.size())))) {
    return "holds text outside its PEM block";
  }
  return "";
}

std::optional<Algorithm> AlgorithmFromName(std::string_view name) {
  for (const AlgorithmInfo& info : kAlgorithms) {
    if (info.name == name) return info.alg;
  }
  return std::nullopt;
}

std::string_view AlgorithmName(Algorithm alg) { return Info(alg).name; }

std::string AlgorithmNames() {
  std::vector<std::string> names;
  for (const AlgorithmInfo& info : kAlgorithms) names.emplace_back(info.name);
  return absl::StrJoin(names, ", ");
}

VerificationKey::VerificationKey(KeyType type, std::string kid, std::optional<Algorithm> alg,
                                 EVP_PKEY* public_key, std::string secret)
    : type_(type),
      kid_(std::move(kid)),
      alg_(alg),
      public_key_(public_key),
      secret_(std::move(secret)) {}

bool VerificationKey::CanVerify(Algorithm alg) const {
  return Info(alg).key_type == type_ && (!alg_ || *alg_ == alg);
}

bool VerificationKey::Verify(Algorithm alg, std::string_view signing_input,
                             std::string_view signature) const {
  const auto* input = reinterpret_cast<const unsigned char*>(signing_input.data());
  if (type_ == KeyType::kHmac) {
    unsigned char mac[EVP_MAX_MD_SIZE];
    unsigned int mac_size = 0;
    if (HMAC(EVP_sha256(), secret_.data(), static_cast<int>(secret_.size()), input,
             signing_input.size(), mac, &mac_size) == nullptr) {
      ERR_clear_error();
      return false;
    }
    return signature.size() == mac_size &&
           CRYPTO_memcmp(mac, signature.data(), mac_size) == 0;
  }
  std::string der_signature;
  if (type_ == KeyType::kEcP256 || type_ == KeyType::kEcP384) {
    // JWS carries r || s, each the curve's size; EVP wants an ECDSA-Sig-Value.
    size_t half = type_ == KeyType::kEcP256 ? 32 : 48;
    if (signature.size() != 2 * half) return false;
    const auto* rs = reinterpret_cast<const unsigned char*>(signature.data());
    ECDSA_SIG* sig = ECDSA_SIG_new();
    BIGNUM* r = BN_bin2bn(rs, static_cast<int>(half), nullptr);
    BIGNUM* s = BN_bin2bn(rs + half, static_cast<int>(half), nullptr);
    if (sig == nullptr || r == nullptr || s == nullptr || ECDSA_SIG_set0(sig, r, s) != 1) {
      BN_free(r);
      BN_free(s);
      ECDSA_SIG_free(sig);
      ERR_clear_error();
      return false;
    }
    unsigned char* der = nullptr;
    int der_size = i2d_ECDSA_SIG(sig, &der);
    ECDSA_SIG_free(sig);
    if (der_size <= 0) {
      ERR_clear_error();
      return false;
    }
    der_signature.assign(reinterpret_cast<char*>(der), static_cast<size_t>(der_size));
    OPENSSL_free(der);
    signature = der_signature;
  }
  const EVP_MD* md = Digest(alg);
  EVP_MD_CTX* ctx = EVP_MD_CTX_new();
  EVP_PKEY_CTX* pctx = nullptr;
  bool ok = ctx != nullptr && EVP_DigestVerifyInit(ctx, &pctx, md, nullptr, public_key_.get()) == 1;
  if (ok && alg == Algorithm::kPs256) {
    // RFC 7518 3.5: MGF1 with the same hash, a salt as long as the hash.
    ok = EVP_PKEY_CTX_set_rsa_padding(pctx, RSA_PKCS1_PSS_PADDING) > 0 &&
         EVP_PKEY_CTX_set_rsa_pss_saltlen(pctx, RSA_PSS_SALTLEN_DIGEST) > 0 &&
         EVP_PKEY_CTX_set_rsa_mgf1_md(pctx, md) > 0;
  }
  ok = ok && EVP_DigestVerify(ctx, reinterpret_cast<const unsigned char*>(signature.data()),
                              signature.size(), input, signing_input.size()) == 1;
  EVP_MD_CTX_free(ctx);
  // A failed check leaves errors on this thread's queue, where the TLS code
  // of the same worker would read them.
  if (!ok) ERR_clear_error();
  return ok;
}

std::vector<VerificationKey> ParseKeySet(std::string_view jwks,
                                         absl::Span<const PemKeyInput> pems,
                                         std::vector<KeySetError>* errors) {
  std::vector<VerificationKey> keys;
  size_t errors_before = errors->size();
  if (!jwks.empty()) ParseJwks(jwks, &keys, errors);
  std::set<std::string> kids;
  for (const VerificationKey& key : keys) {
    if (!key.kid().empty() && !kids.insert(key.kid()).second) {
      errors->push_back({"jwks", absl::StrCat("kid \"", key.kid(), "\" is used by another key")});
    }
  }
  for (size_t i = 0; i < pems.size(); ++i) {
    if (pems[i].kid.size() > kMaxKidLength) {
      errors->push_back({absl::StrCat("public_keys_pem[", i, "].kid"),
                         absl::StrCat("is longer than ", kMaxKidLength, " characters")});
      continue;
    }
    std::string error;
    std::optional<VerificationKey> key = KeyFromPem(pems[i].pem, pems[i].kid, &error);
    if (!key) {
      errors->push_back({absl::StrCat("public_keys_pem[", i, "].pem"), error});
      continue;
    }
    if (!key->kid().empty() && !kids.insert(key->kid()).second) {
      errors->push_back({absl::StrCat("public_keys_pem[", i, "].kid"),
                         absl::StrCat("kid \"", key->kid(), "\" is used by another key")});
    }
    keys.push_back(std::move(*key));
  }
  if (keys.size() > kMaxKeys) {
    errors->push_back(
        {"jwks", absl::StrCat(keys.size(), " keys in all; at most ", kMaxKeys)});
  }
  if (keys.empty() && errors->size() == errors_before) {
    errors->push_back({"jwks", "no keys: give jwks (a JWK Set) and/or public_keys_pem"});
  }
  return keys;
}

}  // namespace sluice::policy::jwt
