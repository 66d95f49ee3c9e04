#include "api/tls_material.h"

#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/objects.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include <memory>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"

namespace sluice::api {
namespace {

struct BioFree {
  void operator()(BIO* bio) const { BIO_free(bio); }
};
struct X509Free {
  void operator()(X509* x509) const { X509_free(x509); }
};
struct PkeyFree {
  void operator()(EVP_PKEY* key) const { EVP_PKEY_free(key); }
};
using BioPtr = std::unique_ptr<BIO, BioFree>;
using X509Ptr = std::unique_ptr<X509, X509Free>;
using PkeyPtr = std::unique_ptr<EVP_PKEY, PkeyFree>;

constexpr absl::string_view kChainField = "tls_certificate.certificate_chain";
constexpr absl::string_view kKeyField = "tls_certificate.private_key";
constexpr absl::string_view kCaField = "trusted_ca.ca_certificates";

// One "-----BEGIN LABEL-----" ... "-----END LABEL-----" block.
struct PemBlock {
  std::string label;
  absl::string_view text;  // from the BEGIN line to the END line, inclusive
  int line = 0;            // 1-based line of BEGIN
  bool encrypted = false;  // RFC 1421 "Proc-Type: 4,ENCRYPTED" header
};

// Splits PEM text into its blocks. Text before and between blocks is
// explanatory text (RFC 7468 section 5.2; CA bundles label their
// certificates that way) and is skipped, as OpenSSL does. Text after the last
// block is refused: it is usually a block cut short or pasted twice, which
// OpenSSL would silently ignore. Never quotes the input, which may be a key.
// A PEM label as RFC 7468 writes them ("CERTIFICATE", "EC PRIVATE KEY"):
// short, upper-case letters, digits and single spaces. Only such a label is
// quoted in an error: a BEGIN line that goes on (a PEM pasted on one line)
// would otherwise put the key itself into the message.
bool PemLabelLike(absl::string_view label) {
  if (label.empty() || label.size() > 40) return false;
  for (char c : label) {
    if (!absl::ascii_isupper(c) && !absl::ascii_isdigit(c) && c != ' ') return false;
  }
  return true;
}

bool SplitPem(absl::string_view text, std::vector<PemBlock>* blocks, std::string* error) {
  bool in_block = false;
  PemBlock current;
  size_t block_start = 0;
  int line_number = 0;
  int trailing_text_line = 0;
  size_t pos = 0;
  while (pos < text.size()) {
    size_t end = text.find('\n', pos);
    if (end == absl::string_view::npos) end = text.size();
    absl::string_view line = absl::StripAsciiWhitespace(text.substr(pos, end - pos));
    ++line_number;
    if (!in_block) {
      if (absl::StartsWith(line, "-----BEGIN ") && absl::EndsWith(line, "-----") &&
          line.size() > 16) {
        absl::string_view label = line.substr(11, line.size() - 16);
        if (!PemLabelLike(label)) {
          *error = absl::StrCat(
              "line ", line_number,
              " is a '-----BEGIN' line that goes on (", line.size(),
              " characters, not quoted): PEM text keeps its line breaks (in YAML, write `field: |` "
              "and the PEM below it, every line indented)");
          return false;
        }
        in_block = true;
        current = PemBlock();
        current.label = std::string(label);
        current.line = line_number;
        block_start = pos;
        trailing_text_line = 0;
      } else if (!line.empty() && trailing_text_line == 0) {
        trailing_text_line = line_number;
      }
    } else if (line == absl::StrCat("-----END ", current.label, "-----")) {
      current.text = text.substr(block_start, end - block_start);
      blocks->push_back(std::move(current));
      in_block = false;
    } else if (absl::StartsWith(line, "-----")) {
      *error = absl::StrCat("'-----BEGIN ", current.label, "-----' at line ", current.line,
                            " has no matching '-----END ", current.label,
                            "-----' line (found another boundary at line ", line_number, ")");
      return false;
    } else if (absl::StartsWith(line, "Proc-Type:") && absl::StrContains(line, "ENCRYPTED")) {
      current.encrypted = true;
    }
    pos = end + 1;
  }
  if (in_block) {
    *error = absl::StrCat("'-----BEGIN ", current.label, "-----' at line ", current.line,
                          " has no matching '-----END ", current.label,
                          "-----' line (is the text cut short?)");
    return false;
  }
  if (!blocks->empty() && trailing_text_line != 0) {
    *error = absl::StrCat("unexpected text at line ", trailing_text_line,
                          ", after the last PEM block");
    return false;
  }
  return true;
}

// The reason of the oldest error on this thread's OpenSSL queue (the root
// cause), then clears the queue so it cannot leak into unrelated calls.
std::string TakeOpenSslError() {
  unsigned long code = ERR_get_error();
  std::string reason;
  if (code == 0) {
    reason = "unknown error";
  } else if (const char* text = ERR_reason_error_string(code); text != nullptr) {
    reason = text;
  } else {
    char buf[256];
    ERR_error_string_n(code, buf, sizeof(buf));
    reason = buf;
  }
  ERR_clear_error();
  return reason;
}

// Why OpenSSL could not read `block`: an empty one (nothing between its
// BEGIN and END lines, which OpenSSL reads with no error queued) says so;
// else TakeOpenSslError() (`what` the block should hold: "certificate").
std::string PemReadFailure(const PemBlock& block, absl::string_view what) {
  const absl::string_view text = block.text;
  const size_t body = text.find('\n');
  const size_t end = text.rfind("-----END");
  if (body != absl::string_view::npos && end != absl::string_view::npos && end > body &&
      absl::StripAsciiWhitespace(text.substr(body + 1, end - body - 1)).empty()) {
    ERR_clear_error();
    return "the block is empty (nothing between its BEGIN and END lines)";
  }
  // The base64 decoded, and what it gave is no DER: OpenSSL's ASN.1 words
  // alone ("too long", "header too long") read as a size limit.
  if (ERR_GET_LIB(ERR_peek_error()) == ERR_LIB_ASN1) {
    return absl::StrCat("the block's base64 decodes, but not to a ", what,
                        " (DER: ", TakeOpenSslError(), ")");
  }
  return TakeOpenSslError();
}

BioPtr MemBio(absl::string_view text) {
  return BioPtr(BIO_new_mem_buf(text.data(), static_cast<int>(text.size())));
}

void Fail(TlsMaterialError* error, absl::string_view field, std::string message) {
  if (error == nullptr) return;
  error->field = std::string(field);
  error->message = std::move(message);
}

std::string BlockName(size_t index, size_t count) {
  return count > 1 ? absl::StrCat(" (PEM block ", index + 1, " of ", count, ")") : "";
}

// Parses PEM text that must hold only certificates (a chain or a CA bundle).
bool ParseCertificates(absl::string_view text, absl::string_view field,
                       std::vector<X509Ptr>* out, TlsMaterialError* error) {
  std::vector<PemBlock> blocks;
  std::string split_error;
  if (!SplitPem(text, &blocks, &split_error)) {
    Fail(error, field, std::move(split_error));
    return false;
  }
  for (size_t i = 0; i < blocks.size(); ++i) {
    const PemBlock& block = blocks[i];
    if (block.label != "CERTIFICATE") {
      std::string hint = absl::StrContains(block.label, "PRIVATE KEY")
                             ? " (is the private key in the wrong field?)"
                             : "";
      Fail(error, field,
           absl::StrCat("PEM block ", i + 1, " (line ", block.line, ") is a '", block.label,
                        "', not a 'CERTIFICATE'", hint));
      return false;
    }
    ERR_clear_error();
    BioPtr bio = MemBio(block.text);
    X509Ptr certificate(PEM_read_bio_X509(bio.get(), nullptr, nullptr, nullptr));
    if (certificate == nullptr) {
      Fail(error, field,
           absl::StrCat("not a PEM certificate: ", PemReadFailure(block, "certificate"),
                        BlockName(i, blocks.size())));
      return false;
    }
    out->push_back(std::move(certificate));
  }
  return true;
}

// Whether an EC key is on P-256, P-384 or P-521, the curves of TLS 1.3's
// ECDSA signature schemes (RFC 8446 4.2.3). Read from the key's
// SubjectPublicKeyInfo: the AlgorithmIdentifier is id-ecPublicKey followed
// by the curve's OID (i2d_PUBKEY is API that BoringSSL shares).
bool OnTlsCurve(EVP_PKEY* key) {
  unsigned char* der = nullptr;
  const int size = i2d_PUBKEY(key, &der);
  if (size <= 0) return false;
  const std::string spki(reinterpret_cast<const char*>(der), static_cast<size_t>(size));
  OPENSSL_free(der);
  static constexpr char kEcPublicKey[] = "\x06\x07\x2a\x86\x48\xce\x3d\x02\x01";
  static constexpr absl::string_view kCurves[] = {
      absl::string_view("\x06\x08\x2a\x86\x48\xce\x3d\x03\x01\x07", 10),  // P-256
      absl::string_view("\x06\x05\x2b\x81\x04\x00\x22", 7),                  // P-384
      absl::string_view("\x06\x05\x2b\x81\x04\x00\x23", 7),                  // P-521
  };
  const size_t at = spki.find(std::string(kEcPublicKey, 9));
  if (at == std::string::npos) return false;
  const absl::string_view rest = absl::string_view(spki).substr(at + 9);
  for (absl::string_view curve : kCurves) {
    if (absl::StartsWith(rest, curve)) return true;
  }
  return false;
}

int RefusePassword(char*, int, int, void* asked) {
  *static_cast<bool*>(asked) = true;
  return -1;
}

bool ParsePrivateKey(absl::string_view text, PkeyPtr* out, TlsMaterialError* error) {
  std::vector<PemBlock> blocks;
  std::string split_error;
  if (!SplitPem(text, &blocks, &split_error)) {
    Fail(error, kKeyField, std::move(split_error));
    return false;
  }
  const PemBlock* key_block = nullptr;
  int keys = 0;
  for (size_t i = 0; i < blocks.size(); ++i) {
    const PemBlock& block = blocks[i];
    if (block.label == "EC PARAMETERS") continue;  // `openssl ecparam -genkey` writes it first
    if (!absl::EndsWith(block.label, "PRIVATE KEY")) {
      std::string hint =
          block.label == "CERTIFICATE" ? " (is the certificate in the wrong field?)" : "";
      Fail(error, kKeyField,
           absl::StrCat("PEM block ", i + 1, " (line ", block.line, ") is a '", block.label,
                        "', not a private key", hint));
      return false;
    }
    ++keys;
    key_block = &block;
  }
  if (keys == 0) {
    Fail(error, kKeyField,
         "not a PEM private key: no '-----BEGIN PRIVATE KEY-----' line found");
    return false;
  }
  if (keys > 1) {
    Fail(error, kKeyField, absl::StrCat("holds ", keys, " private keys; exactly one is expected"));
    return false;
  }
  constexpr char kEncrypted[] =
      "is encrypted; encrypted private keys are not supported: give the key without a "
      "passphrase (e.g. the output of `openssl pkey -in KEY.pem`)";
  if (key_block->label == "ENCRYPTED PRIVATE KEY" || key_block->encrypted) {
    Fail(error, kKeyField, kEncrypted);
    return false;
  }
  ERR_clear_error();
  BioPtr bio = MemBio(key_block->text);
  bool asked_for_password = false;
  PkeyPtr key(PEM_read_bio_PrivateKey(bio.get(), nullptr, RefusePassword, &asked_for_password));
  if (key == nullptr) {
    std::string reason = PemReadFailure(*key_block, "private key");
    Fail(error, kKeyField,
         asked_for_password ? kEncrypted : absl::StrCat("not a PEM private key: ", reason));
    return false;
  }
  int type = EVP_PKEY_id(key.get());
  if (type != EVP_PKEY_RSA && type != EVP_PKEY_EC && type != EVP_PKEY_ED25519) {
    const char* name = OBJ_nid2sn(type);
    Fail(error, kKeyField,
         absl::StrCat("is a",
                      name == nullptr                      ? "n unknown"
                      : absl::string_view("AEIOU").find(name[0]) != absl::string_view::npos
                          ? absl::StrCat("n ", name)
                          : absl::StrCat(" ", name),
                      " key; RSA, ECDSA and Ed25519 keys are supported"));
    return false;
  }
  // The proxies' TLS library, at its default security level, refuses RSA
  // keys under 2048 bits and EC keys under 224 ("ee key too small"): refused
  // here, so that no version every proxy would refuse is stored.
  const int bits = EVP_PKEY_bits(key.get());
  const int min_bits = type == EVP_PKEY_RSA ? 2048 : type == EVP_PKEY_EC ? 224 : 0;
  if (bits < min_bits) {
    Fail(error, kKeyField,
         absl::StrCat("is a ", bits, "-bit ", type == EVP_PKEY_RSA ? "RSA" : "EC",
                      " key; at least ", min_bits, " bits are needed (TLS libraries refuse "
                      "smaller ones)"));
    return false;
  }
  *out = std::move(key);
  return true;
}

absl::Time ToAbslTime(const ASN1_TIME* time) {
  struct tm tm = {};
  if (time == nullptr || ASN1_TIME_to_tm(time, &tm) != 1) return absl::InfinitePast();
  return absl::FromTM(tm, absl::UTCTimeZone());
}

std::string FormatUtc(absl::Time time) {
  return absl::FormatTime("%Y-%m-%dT%H:%M:%SZ", time, absl::UTCTimeZone());
}

std::string SubjectLine(X509* certificate) {
  BioPtr bio(BIO_new(BIO_s_mem()));
  // RFC 2253: "CN=api.example.com,O=Example"; UTF-8 left readable.
  X509_NAME_print_ex(bio.get(), X509_get_subject_name(certificate), 0,
                     XN_FLAG_RFC2253 & ~ASN1_STRFLGS_ESC_MSB);
  const char* data = nullptr;
  long size = BIO_get_mem_data(bio.get(), &data);
  return size > 0 ? std::string(data, static_cast<size_t>(size)) : std::string();
}

std::vector<std::string> DnsNames(X509* certificate) {
  std::vector<std::string> names;
  auto* sans = static_cast<GENERAL_NAMES*>(
      X509_get_ext_d2i(certificate, NID_subject_alt_name, nullptr, nullptr));
  if (sans != nullptr) {
    for (int i = 0; i < sk_GENERAL_NAME_num(sans); ++i) {
      const GENERAL_NAME* name = sk_GENERAL_NAME_value(sans, i);
      if (name->type != GEN_DNS) continue;
      const ASN1_STRING* dns = name->d.dNSName;
      names.push_back(absl::AsciiStrToLower(
          absl::string_view(reinterpret_cast<const char*>(ASN1_STRING_get0_data(dns)),
                            static_cast<size_t>(ASN1_STRING_length(dns)))));
    }
    GENERAL_NAMES_free(sans);
  }
  ERR_clear_error();
  if (!names.empty()) return names;
  X509_NAME* subject = X509_get_subject_name(certificate);
  int index = X509_NAME_get_index_by_NID(subject, NID_commonName, -1);
  if (index >= 0) {
    unsigned char* utf8 = nullptr;
    int length =
        ASN1_STRING_to_UTF8(&utf8, X509_NAME_ENTRY_get_data(X509_NAME_get_entry(subject, index)));
    if (length > 0) {
      names.push_back(absl::AsciiStrToLower(
          absl::string_view(reinterpret_cast<const char*>(utf8), static_cast<size_t>(length))));
    }
    OPENSSL_free(utf8);
  }
  ERR_clear_error();
  return names;
}

}  // namespace

bool ParseTlsCertificate(const config::v1::TlsCertificate& certificate, CertificateInfo* info,
                         TlsMaterialError* error) {
  const std::string& chain_text = certificate.certificate_chain();
  if (chain_text.empty()) {
    Fail(error, kChainField, "is required");
    return false;
  }
  if (chain_text.size() > kMaxCertificateChainBytes) {
    Fail(error, kChainField,
         absl::StrCat("certificate chain is ", chain_text.size(), " bytes, at most ",
                      kMaxCertificateChainBytes));
    return false;
  }
  std::vector<X509Ptr> chain;
  if (!ParseCertificates(chain_text, kChainField, &chain, error)) return false;
  if (chain.empty()) {
    Fail(error, kChainField,
         "not a PEM certificate: no '-----BEGIN CERTIFICATE-----' line found");
    return false;
  }
  if (certificate.private_key().empty()) {
    Fail(error, kKeyField, "is required");
    return false;
  }
  PkeyPtr key;
  if (!ParsePrivateKey(certificate.private_key(), &key, error)) return false;
  X509* leaf = chain.front().get();
  if (X509_check_private_key(leaf, key.get()) != 1) {
    ERR_clear_error();
    std::string hint;
    for (size_t i = 1; i < chain.size() && hint.empty(); ++i) {
      if (X509_check_private_key(chain[i].get(), key.get()) == 1) {
        hint = absl::StrCat(" (it matches certificate ", i + 1,
                            " of the chain: the leaf certificate must come first)");
      }
    }
    ERR_clear_error();
    Fail(error, kKeyField, absl::StrCat("does not match the certificate's public key", hint));
    return false;
  }
  CertificateInfo parsed;
  parsed.dns_names = DnsNames(leaf);
  parsed.subject = SubjectLine(leaf);
  parsed.not_before = ToAbslTime(X509_get0_notBefore(leaf));
  parsed.not_after = ToAbslTime(X509_get0_notAfter(leaf));
  switch (EVP_PKEY_base_id(key.get())) {
    case EVP_PKEY_RSA:
    case EVP_PKEY_RSA_PSS:
      parsed.key_kind = CertificateInfo::KeyKind::kRsa;
      break;
    case EVP_PKEY_EC:
      parsed.key_kind = CertificateInfo::KeyKind::kEc;
      parsed.tls_curve = OnTlsCurve(key.get());
      break;
    case EVP_PKEY_ED25519:
    case EVP_PKEY_ED448:
      parsed.key_kind = CertificateInfo::KeyKind::kEc;
      break;
    default:
      break;
  }
  ERR_clear_error();
  if (info != nullptr) *info = std::move(parsed);
  return true;
}

namespace {

// The chain's first certificate, or null when `chain_pem` holds none that
// parses (OpenSSL's error queue left empty either way).
X509Ptr LeafCertificate(const std::string& chain_pem) {
  std::vector<X509Ptr> chain;
  TlsMaterialError error;
  const bool parsed = !chain_pem.empty() &&
                      ParseCertificates(chain_pem, kChainField, &chain, &error) && !chain.empty();
  ERR_clear_error();
  return parsed ? std::move(chain.front()) : X509Ptr();
}

}  // namespace

std::vector<std::string> TrustedCaNotes(const config::v1::TrustedCa& ca, absl::Time now) {
  std::vector<std::string> notes;
  std::vector<X509Ptr> certificates;
  TlsMaterialError error;
  const std::string& text = ca.ca_certificates();
  if (text.empty() || text.size() > kMaxCaBundleBytes ||
      !ParseCertificates(text, kCaField, &certificates, &error)) {
    ERR_clear_error();
    return notes;
  }
  for (size_t i = 0; i < certificates.size(); ++i) {
    X509* certificate = certificates[i].get();
    const absl::Time not_before = ToAbslTime(X509_get0_notBefore(certificate));
    const absl::Time not_after = ToAbslTime(X509_get0_notAfter(certificate));
    std::string when;
    if (now > not_after) {
      when = absl::StrCat("expired at ", FormatUtc(not_after));
    } else if (now < not_before) {
      when = absl::StrCat("is not valid before ", FormatUtc(not_before));
    } else {
      continue;
    }
    notes.push_back(absl::StrCat("certificate ", SubjectLine(certificate),
                                 BlockName(i, certificates.size()), " ", when));
  }
  ERR_clear_error();
  return notes;
}

std::optional<absl::Time> LeafNotAfter(const std::string& chain_pem) {
  const X509Ptr leaf = LeafCertificate(chain_pem);
  if (leaf == nullptr) return std::nullopt;
  const absl::Time not_after = ToAbslTime(X509_get0_notAfter(leaf.get()));
  ERR_clear_error();
  if (not_after == absl::InfinitePast()) return std::nullopt;
  return not_after;
}

std::optional<CertificateInfo::KeyKind> LeafKeyKind(const std::string& chain_pem) {
  const X509Ptr leaf = LeafCertificate(chain_pem);
  if (leaf == nullptr) return std::nullopt;
  const EVP_PKEY* key = X509_get0_pubkey(leaf.get());
  ERR_clear_error();
  if (key == nullptr) return std::nullopt;
  switch (EVP_PKEY_base_id(key)) {
    case EVP_PKEY_RSA:
    case EVP_PKEY_RSA_PSS:
      return CertificateInfo::KeyKind::kRsa;
    case EVP_PKEY_EC:
    case EVP_PKEY_ED25519:
    case EVP_PKEY_ED448:
      return CertificateInfo::KeyKind::kEc;
    default:
      return CertificateInfo::KeyKind::kOther;
  }
}

bool CheckTlsCurve(const CertificateInfo& info, TlsMaterialError* error) {
  if (info.tls_curve) return true;
  Fail(error, kKeyField,
       "is an EC key on a curve other than P-256, P-384 or P-521: TLS 1.3 signs with those "
       "only, and clients refuse the handshake");
  return false;
}

bool CheckValidAt(const CertificateInfo& info, absl::Time now, TlsMaterialError* error) {
  if (now > info.not_after) {
    Fail(error, kChainField, absl::StrCat("certificate expired at ", FormatUtc(info.not_after)));
    return false;
  }
  if (now < info.not_before) {
    Fail(error, kChainField,
         absl::StrCat("certificate is not valid before ", FormatUtc(info.not_before)));
    return false;
  }
  return true;
}

bool InspectTlsCertificate(const config::v1::TlsCertificate& certificate, absl::Time now,
                           CertificateInfo* info, TlsMaterialError* error) {
  CertificateInfo parsed;
  if (!ParseTlsCertificate(certificate, &parsed, error)) return false;
  if (!CheckValidAt(parsed, now, error)) return false;
  if (info != nullptr) *info = std::move(parsed);
  return true;
}

bool InspectTrustedCa(const config::v1::TrustedCa& ca, TlsMaterialError* error) {
  const std::string& text = ca.ca_certificates();
  if (text.empty()) {
    Fail(error, kCaField, "is required");
    return false;
  }
  if (text.size() > kMaxCaBundleBytes) {
    Fail(error, kCaField,
         absl::StrCat("CA bundle is ", text.size(), " bytes, at most ", kMaxCaBundleBytes));
    return false;
  }
  std::vector<X509Ptr> certificates;
  if (!ParseCertificates(text, kCaField, &certificates, error)) return false;
  if (certificates.empty()) {
    Fail(error, kCaField,
         "no certificate found (expected PEM blocks '-----BEGIN CERTIFICATE-----')");
    return false;
  }
  return true;
}

bool DnsNameMatches(std::string_view dns_name_view, std::string_view server_name_view) {
  // This build's absl::string_view is not std::string_view.
  absl::string_view dns_name(dns_name_view.data(), dns_name_view.size());
  absl::string_view server_name(server_name_view.data(), server_name_view.size());
  if (server_name.empty() || dns_name.empty()) return false;
  if (absl::EqualsIgnoreCase(dns_name, server_name)) return true;
  if (!absl::StartsWith(dns_name, "*.") || dns_name.size() < 3) return false;
  absl::string_view rest = dns_name.substr(1);  // ".example.com"
  if (rest.find('*') != absl::string_view::npos) return false;
  if (server_name.size() <= rest.size() || !absl::EndsWithIgnoreCase(server_name, rest)) {
    return false;
  }
  absl::string_view label = server_name.substr(0, server_name.size() - rest.size());
  return label.find('.') == absl::string_view::npos;
}

}  // namespace sluice::api
