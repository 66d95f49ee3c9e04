#include "dataplane/net/tls.h"

#include <errno.h>
#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include <atomic>
#include <cstring>
#include <mutex>

#include <sys/socket.h>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "common/log.h"

namespace sluice::net {
namespace {

// Tickets are sealed with the current key; one made with the previous key
// still resumes (and is re-issued). Ticket lifetime is the SSL_CTX timeout.
constexpr absl::Duration kTicketKeyRotation = absl::Hours(12);
constexpr long kTicketLifetimeSeconds = 2 * 60 * 60;

struct TicketKey {
  unsigned char name[16];
  unsigned char aes_key[16];
  unsigned char hmac_key[32];
};

// The process's ticket keys: current and previous, rotated lazily.
class TicketKeys {
 public:
  static TicketKeys& Get() {
    static TicketKeys* const keys = new TicketKeys();
    return *keys;
  }
  // The key to seal a new ticket with.
  TicketKey Current() {
    std::lock_guard<std::mutex> lock(mu_);
    if (absl::Now() - made_ >= kTicketKeyRotation) Rotate();
    return current_;
  }
  // The key named `name`; *old when it is the previous one.
  bool Find(const unsigned char* name, TicketKey* key, bool* old) {
    std::lock_guard<std::mutex> lock(mu_);
    if (absl::Now() - made_ >= kTicketKeyRotation) Rotate();
    if (std::memcmp(name, current_.name, sizeof(current_.name)) == 0) {
      *key = current_;
      *old = false;
      return true;
    }
    if (has_previous_ && std::memcmp(name, previous_.name, sizeof(previous_.name)) == 0) {
      *key = previous_;
      *old = true;
      return true;
    }
    return false;
  }

 private:
  TicketKeys() { Rotate(); }
  void Rotate() {
    previous_ = current_;
    has_previous_ = made_ != absl::InfinitePast();
    RAND_bytes(reinterpret_cast<unsigned char*>(&current_), sizeof(current_));
    made_ = absl::Now();
  }
  std::mutex mu_;
  TicketKey current_{};
  TicketKey previous_{};
  bool has_previous_ = false;
  absl::Time made_ = absl::InfinitePast();
};

// The ticket key callback is the one API OpenSSL 3 and BoringSSL share for
// keys under the application's control; OpenSSL 3 marks it deprecated in
// favour of an EVP_MAC variant BoringSSL does not have.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wdeprecated-declarations"
int OnTicketKey(SSL* ssl, unsigned char* key_name, unsigned char* iv, EVP_CIPHER_CTX* cipher,
                HMAC_CTX* hmac, int encrypt) {
  TicketKeys& keys = TicketKeys::Get();
  if (encrypt) {
    TicketKey key = keys.Current();
    if (RAND_bytes(iv, EVP_MAX_IV_LENGTH) != 1) return -1;
    std::memcpy(key_name, key.name, sizeof(key.name));
    if (EVP_EncryptInit_ex(cipher, EVP_aes_128_cbc(), nullptr, key.aes_key, iv) != 1) return -1;
    if (HMAC_Init_ex(hmac, key.hmac_key, sizeof(key.hmac_key), EVP_sha256(), nullptr) != 1) {
      return -1;
    }
    return 1;
  }
  TicketKey key;
  bool old = false;
  if (!keys.Find(key_name, &key, &old)) return 0;  // unknown key: full handshake
  if (HMAC_Init_ex(hmac, key.hmac_key, sizeof(key.hmac_key), EVP_sha256(), nullptr) != 1) {
    return -1;
  }
  if (EVP_DecryptInit_ex(cipher, EVP_aes_128_cbc(), nullptr, key.aes_key, iv) != 1) return -1;
  // 2: valid, and issue a new ticket. A TLS 1.3 client uses a ticket once
  // (RFC 8446 C.4), so a resumed connection gets a fresh one as a full
  // handshake does; without it the client's next connection could not
  // resume. A TLS 1.2 ticket is renewed when it is under the previous key.
  return old || SSL_version(ssl) == TLS1_3_VERSION ? 2 : 1;
}
#pragma GCC diagnostic pop

#ifndef OPENSSL_IS_BORINGSSL
// The SSL ex_data slot of a server socket's TlsInfo::sni, which OnClientHello
// fills with the name the client sent.
int SentServerNameIndex() {
  static const int index = SSL_get_ex_new_index(0, nullptr, nullptr, nullptr, nullptr);
  return index;
}
#endif

int OnServerName(SSL* ssl, int* alert, void* arg) {
  const auto* context = static_cast<const TlsServerContext*>(arg);
  const char* name = SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name);
  if (name == nullptr) return SSL_TLSEXT_ERR_NOACK;
  // RFC 6066 3: a DNS host name (an address from a lax client is let be).
  // Anything else (a space, '/', '*', a control or non-ASCII byte, nothing
  // at all) would only reach %TLS_SNI% and the logs: refused.
  std::string_view sni(name);
  bool valid = !sni.empty();
  for (char c : sni) {
    valid = valid && (absl::ascii_isalnum(static_cast<unsigned char>(c)) ||
                      std::string_view("-._:[]").find(c) != std::string_view::npos);
  }
  if (!valid) {
    *alert = SSL_AD_UNRECOGNIZED_NAME;
    return SSL_TLSEXT_ERR_ALERT_FATAL;
  }
  SSL_CTX* chosen = context->ContextFor(name);
  if (chosen != SSL_get_SSL_CTX(ssl)) SSL_set_SSL_CTX(ssl, chosen);
  return SSL_TLSEXT_ERR_OK;
}

#ifndef OPENSSL_IS_BORINGSSL
// The host name of a server_name extension (RFC 6066 3: a list of typed
// names; the first host_name counts), as sent; empty when there is none or
// the extension is malformed (the handshake then fails in OpenSSL's own
// parsing).
std::string HostNameOfSniExtension(const unsigned char* data, size_t length) {
  if (length < 2 || static_cast<size_t>((data[0] << 8) | data[1]) != length - 2) return {};
  size_t at = 2;
  while (at + 3 <= length) {
    const unsigned char type = data[at];
    const size_t size = static_cast<size_t>((data[at + 1] << 8) | data[at + 2]);
    at += 3;
    if (at + size > length) return {};
    if (type == TLSEXT_NAMETYPE_host_name) {
      return std::string(reinterpret_cast<const char*>(data + at), size);
    }
    at += size;
  }
  return {};
}

// Runs before OpenSSL looks for a session to resume: sets this handshake's
// session id context from the name the client asked for, and keeps that
// name as sent for %TLS_SNI% (after a TLS 1.2 resumption SSL_get_servername
// gives the name of the session's first handshake, which may differ in case).
int OnClientHello(SSL* ssl, int* /*alert*/, void* arg) {
  const auto* context = static_cast<const TlsServerContext*>(arg);
  const unsigned char* data = nullptr;
  size_t length = 0;
  std::string name;
  if (SSL_client_hello_get0_ext(ssl, TLSEXT_TYPE_server_name, &data, &length) == 1) {
    name = HostNameOfSniExtension(data, length);
  }
  if (auto* sent = static_cast<std::string*>(SSL_get_ex_data(ssl, SentServerNameIndex()))) {
    *sent = name;
  }
  absl::AsciiStrToLower(&name);
  unsigned char id[32];
  context->SessionIdContextFor(name, id);
  SSL_set_session_id_context(ssl, id, sizeof(id));
  return SSL_CLIENT_HELLO_SUCCESS;
}
#endif

// RFC 9113 9.2.2: HTTP/2 over TLS 1.2 needs an ephemeral key exchange and
// an AEAD cipher (browsers fail the connection otherwise). Read after the
// cipher is chosen: OpenSSL and BoringSSL pick it before asking for ALPN.
bool CipherAllowsHttp2(const SSL* ssl) {
  if (SSL_version(ssl) >= TLS1_3_VERSION) return true;  // every TLS 1.3 suite does
  const SSL_CIPHER* cipher = SSL_get_pending_cipher(ssl);
  if (cipher == nullptr) cipher = SSL_get_current_cipher(ssl);
  if (cipher == nullptr) return true;
  const int kx = SSL_CIPHER_get_kx_nid(cipher);
  return SSL_CIPHER_is_aead(cipher) && (kx == NID_kx_ecdhe || kx == NID_kx_dhe);
}

int OnAlpn(SSL* ssl, const unsigned char** out, unsigned char* out_length,
           const unsigned char* in, unsigned int in_length, void* arg) {
  const auto* context = static_cast<const TlsServerContext*>(arg);
  // Without a cipher HTTP/2 may use, only the listener's other protocols.
  // `selected` points into `ours`, which OpenSSL copies after this returns:
  // both lists live in the context (a list made here would be gone by then).
  const bool dropped_h2 = context->alpn_wire().size() != context->alpn_wire_without_h2().size() &&
                          !CipherAllowsHttp2(ssl);
  const std::string& ours = dropped_h2 ? context->alpn_wire_without_h2() : context->alpn_wire();
  unsigned char* selected = nullptr;
  // Server preference: the first of ours that the client offers.
  if (SSL_select_next_proto(&selected, out_length,
                            reinterpret_cast<const unsigned char*>(ours.data()),
                            static_cast<unsigned int>(ours.size()), in,
                            in_length) == OPENSSL_NPN_NEGOTIATED) {
    *out = selected;
    return SSL_TLSEXT_ERR_OK;
  }
  // An HTTP/1.0 client is served by the HTTP/1 side when the listener has it.
  static constexpr unsigned char kHttp10[] = "\x08http/1.0";
  static constexpr unsigned char kHttp11[] = "\x08http/1.1";
  if (ours.find(reinterpret_cast<const char*>(kHttp11), 0, 9) != std::string::npos &&
      SSL_select_next_proto(&selected, out_length, kHttp10, 9, in, in_length) ==
          OPENSSL_NPN_NEGOTIATED) {
    *out = selected;
    return SSL_TLSEXT_ERR_OK;
  }
  // The listener takes h2, the client offered it, and only the suite the
  // handshake chose forbids it (an `[h2]` listener whose cipher_suites put
  // a CBC suite first): no protocol is named and the client speaks
  // HTTP/1.1, as one that offers no ALPN does, rather than being refused
  // while it offered an AEAD suite too.
  if (dropped_h2 &&
      SSL_select_next_proto(&selected, out_length,
                            reinterpret_cast<const unsigned char*>("\x02h2"), 3, in,
                            in_length) == OPENSSL_NPN_NEGOTIATED) {
    return SSL_TLSEXT_ERR_NOACK;
  }
  // RFC 7301 3.2: offered protocols, none of them ours: no_application_protocol.
  return SSL_TLSEXT_ERR_ALERT_FATAL;
}

struct BioDeleter {
  void operator()(BIO* bio) const { BIO_free(bio); }
};
using BioPtr = std::unique_ptr<BIO, BioDeleter>;

BioPtr MemoryBio(const std::string& pem) {
  return BioPtr(BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())));
}

// Loads a certificate chain (leaf first) and its key into `ctx`; errors name
// "certificate_chain" or "private_key".
absl::Status UseCertificate(SSL_CTX* ctx, const std::string& chain_pem,
                            const std::string& key_pem) {
  auto fail = [](const char* what) {
    return absl::InvalidArgumentError(absl::StrCat(what, ": ", TakeOpenSslError()));
  };
  BioPtr chain = MemoryBio(chain_pem);
  X509* leaf = PEM_read_bio_X509(chain.get(), nullptr, nullptr, nullptr);
  if (leaf == nullptr) return fail("certificate_chain");
  int used = SSL_CTX_use_certificate(ctx, leaf);
  X509_free(leaf);
  if (used != 1) return fail("certificate_chain");
  while (X509* intermediate = PEM_read_bio_X509(chain.get(), nullptr, nullptr, nullptr)) {
    if (SSL_CTX_add0_chain_cert(ctx, intermediate) != 1) {
      X509_free(intermediate);
      return fail("certificate_chain");
    }
  }
  ERR_clear_error();  // the end of the PEM stream
  BioPtr key_bio = MemoryBio(key_pem);
  EVP_PKEY* key = PEM_read_bio_PrivateKey(key_bio.get(), nullptr, nullptr, nullptr);
  if (key == nullptr) return fail("private_key");
  used = SSL_CTX_use_PrivateKey(ctx, key);
  EVP_PKEY_free(key);
  if (used != 1 || SSL_CTX_check_private_key(ctx) != 1) return fail("private_key");
  return absl::OkStatus();
}

// Adds the PEM certificates in `pem` to the context's trust store (and, for
// a server asking for client certificates, to the CA names it sends).
// Returns how many were added.
int AddTrustedCas(SSL_CTX* ctx, const std::string& pem, bool advertise) {
  X509_STORE* store = SSL_CTX_get_cert_store(ctx);
  BioPtr cas = MemoryBio(pem);
  int count = 0;
  while (X509* ca = PEM_read_bio_X509(cas.get(), nullptr, nullptr, nullptr)) {
    X509_STORE_add_cert(store, ca);
    if (advertise) SSL_CTX_add_client_CA(ctx, ca);
    X509_free(ca);
    ++count;
  }
  ERR_clear_error();  // the end of the PEM stream
  return count;
}

// No compression or renegotiation. A client that closes without
// close_notify ends the stream (HTTP framing tells whether its request was
// cut short); an upstream's missing close_notify is told apart
// (TlsTransportSocket::truncated), since a response delimited by the close
// is complete only with it (RFC 9112 9.8).
void SetCommonOptions(SSL_CTX* ctx, long options, bool server) {
  options |= SSL_OP_NO_COMPRESSION;
#ifdef SSL_OP_NO_RENEGOTIATION
  options |= SSL_OP_NO_RENEGOTIATION;
#endif
#ifdef SSL_OP_IGNORE_UNEXPECTED_EOF
  if (server) options |= SSL_OP_IGNORE_UNEXPECTED_EOF;
#endif
  SSL_CTX_set_options(ctx, options);
  // Partial writes from a buffer that may move; buffers released while a
  // connection is idle (memory per idle connection).
  SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER |
                            SSL_MODE_RELEASE_BUFFERS);
  // One read(2) takes whatever records are there, not a header and then a
  // body per record: half the syscalls. What it takes beyond the record
  // being decrypted shows in SSL_has_pending (has_buffered_input).
  SSL_CTX_set_read_ahead(ctx, 1);
}

// A certificate's whole subject in RFC 2253 form, most specific part first
// (`CN=alice,OU=dev,O=Example`), as Envoy's %DOWNSTREAM_PEER_SUBJECT% and
// nginx's $ssl_client_s_dn give it: `,+"\<>;` escaped with a backslash,
// control characters and bytes over 0x7F as \XX. Never cut: two subjects
// that differ only in their last parts stay two values.
std::string SubjectOf(X509* cert) {
  BIO* bio = BIO_new(BIO_s_mem());
  if (bio == nullptr) return {};
  std::string out;
  if (X509_NAME_print_ex(bio, X509_get_subject_name(cert), 0, XN_FLAG_RFC2253) >= 0) {
    char* data = nullptr;
    const long n = BIO_get_mem_data(bio, &data);
    if (n > 0) out.assign(data, static_cast<size_t>(n));
  }
  BIO_free(bio);
  // A value ending in a space ends the string in "\ ": a header value may
  // not end in whitespace (HTTP/1 recipients strip it, HTTP/2 refuses the
  // field). RFC 4514 2.4 allows the hex form.
  if (out.size() >= 2 && out.compare(out.size() - 2, 2, "\\ ") == 0) {
    out.replace(out.size() - 2, 2, "\\20");
  }
  return out;
}

constexpr size_t kFirstBytes = 24;
// What is kept of first bytes that begin no TLS record (a handshake
// record's first byte is 22): a plain HTTP request's head, for its log line.
constexpr size_t kFirstBytesPlain = 4096;

// Whether a connection's first bytes are an HTTP/1 request line's start (a
// method token of capitals and a space) or the HTTP/2 client preface.
bool LooksLikePlainHttp(std::string_view bytes) {
  if (bytes.rfind("PRI * HTTP/2.0", 0) == 0) return true;
  size_t i = 0;
  while (i < bytes.size() && i < 16 && bytes[i] >= 'A' && bytes[i] <= 'Z') ++i;
  return i > 0 && i < bytes.size() && bytes[i] == ' ';
}

// The kind of a failed handshake from OpenSSL's reason code, for the
// `reason` label of the handshake error counter: a fixed, small set.
std::string_view HandshakeFailureKind(int reason, bool server) {
  switch (reason) {
    case SSL_R_HTTP_REQUEST:
    case SSL_R_HTTPS_PROXY_REQUEST:
      return "plain_http";
    case SSL_R_UNSUPPORTED_PROTOCOL:
    case SSL_R_WRONG_VERSION_NUMBER:
#ifdef SSL_R_VERSION_TOO_LOW
    case SSL_R_VERSION_TOO_LOW:
    case SSL_R_VERSION_TOO_HIGH:
#endif
    case SSL_R_TLSV1_ALERT_PROTOCOL_VERSION:
      return "protocol_version";
    case SSL_R_NO_SHARED_CIPHER:
    case SSL_R_NO_SHARED_GROUPS:
    case SSL_R_NO_SUITABLE_SIGNATURE_ALGORITHM:
    case SSL_R_SSLV3_ALERT_HANDSHAKE_FAILURE:
      return "no_shared_cipher";
    case SSL_R_NO_APPLICATION_PROTOCOL:
      return "no_application_protocol";
    case SSL_R_PEER_DID_NOT_RETURN_A_CERTIFICATE:
#ifdef SSL_R_CERTIFICATE_REQUIRED
    case SSL_R_CERTIFICATE_REQUIRED:
#endif
    case SSL_R_CERTIFICATE_VERIFY_FAILED:
      return "client_certificate";
#ifdef SSL_R_UNEXPECTED_EOF_WHILE_READING
    case SSL_R_UNEXPECTED_EOF_WHILE_READING:
      return "closed";
#endif
    case SSL_R_CALLBACK_FAILED:
      // The only server-name callback failure is a name that is not one.
      return server ? "server_name" : "other";
    default:
      return "other";
  }
}

}  // namespace

std::string TakeOpenSslError() {
  unsigned long code = ERR_get_error();
  std::string text;
  if (code != 0) {
    char buffer[256];
    ERR_error_string_n(code, buffer, sizeof(buffer));
    text = buffer;
  }
  ERR_clear_error();
  return text.empty() ? std::string("unknown TLS error") : text;
}

absl::StatusOr<std::shared_ptr<TlsServerContext>> TlsServerContext::Create(
    const TlsServerConfig& config) {
  if (config.certificates.empty()) {
    return absl::InvalidArgumentError("a TLS listener needs at least one certificate");
  }
  std::shared_ptr<TlsServerContext> context(new TlsServerContext());
  {
    // Length-prefixed parts, so no two configs hash the same input.
    std::string identity;
    auto part = [&identity](std::string_view bytes) {
      absl::StrAppend(&identity, bytes.size(), ":", absl::string_view(bytes.data(), bytes.size()), ";");
    };
    part("sluice session context v1");
    for (const TlsCertificateConfig& cert : config.certificates) part(cert.chain_pem);
    part(config.client_ca_pem);
    part(config.require_client_certificate ? "required" : "optional");
    // On a TLS 1.2 resumption OpenSSL checks the session's suite against the
    // client's list only: a session from a listener with other suites or
    // versions would bring them here.
    part(config.cipher_list.empty() ? std::string(kDefaultCipherList) : config.cipher_list);
    part(absl::StrCat(config.min_version, "-", config.max_version));
    unsigned int length = 0;
    if (EVP_Digest(identity.data(), identity.size(), context->session_id_context_, &length,
                   EVP_sha256(), nullptr) != 1 ||
        length != sizeof(context->session_id_context_)) {
      return absl::InternalError(TakeOpenSslError());
    }
  }
  for (const std::string& protocol : config.alpn_protocols) {
    context->alpn_wire_.push_back(static_cast<char>(protocol.size()));
    context->alpn_wire_.append(protocol);
    if (protocol == "h2") continue;
    context->alpn_wire_without_h2_.push_back(static_cast<char>(protocol.size()));
    context->alpn_wire_without_h2_.append(protocol);
  }
  for (const TlsCertificateConfig& cert : config.certificates) {
    if (absl::Status status = context->AddCertificate(config, cert); !status.ok()) return status;
  }
  return context;
}

void TlsServerContext::SessionIdContextFor(std::string_view server_name,
                                           unsigned char out[32]) const {
  std::string input(reinterpret_cast<const char*>(session_id_context_),
                    sizeof(session_id_context_));
  input.append(server_name);
  unsigned int length = 0;
  if (EVP_Digest(input.data(), input.size(), out, &length, EVP_sha256(), nullptr) != 1 ||
      length != 32) {
    // No digest: the listener's own context (resumption across names).
    std::memcpy(out, session_id_context_, sizeof(session_id_context_));
    ERR_clear_error();
  }
}

absl::Status TlsServerContext::AddCertificate(const TlsServerConfig& config,
                                              const TlsCertificateConfig& cert) {
  SSL_CTX* ctx = SSL_CTX_new(TLS_server_method());
  if (ctx == nullptr) return absl::InternalError(TakeOpenSslError());
  const size_t index = contexts_.size();
  contexts_.push_back(ctx);
  auto fail = [](const char* what) {
    return absl::InvalidArgumentError(absl::StrCat(what, ": ", TakeOpenSslError()));
  };
  SSL_CTX_set_min_proto_version(ctx, config.min_version);
  SSL_CTX_set_max_proto_version(ctx, config.max_version);
  SetCommonOptions(ctx, SSL_OP_CIPHER_SERVER_PREFERENCE, /*server=*/true);
  const std::string& ciphers = config.cipher_list.empty() ? std::string(kDefaultCipherList)
                                                          : config.cipher_list;
  if (SSL_CTX_set_cipher_list(ctx, ciphers.c_str()) != 1) return fail("cipher_suites");
#ifndef OPENSSL_IS_BORINGSSL
  // TLS 1.3: all three standard suites, AES-128 first (BoringSSL's fixed order).
  SSL_CTX_set_ciphersuites(ctx,
                           "TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256");
#endif

  if (absl::Status status = UseCertificate(ctx, cert.chain_pem, cert.key_pem); !status.ok()) {
    return status;
  }

  // The same for every certificate of the listener (a handshake may switch
  // to another by SNI); another for each listener whose rules differ.
  SSL_CTX_set_session_id_context(ctx, session_id_context_, sizeof(session_id_context_));
  if (!config.client_ca_pem.empty()) {
    if (AddTrustedCas(ctx, config.client_ca_pem, /*advertise=*/true) == 0) {
      return absl::InvalidArgumentError("client_ca: no certificate found");
    }
    // Each CA of the secret is a trust anchor, an intermediate too (as for a
    // cluster's tls.ca): a client certificate it issued need not lead on to
    // a root the secret does not hold.
    X509_VERIFY_PARAM_set_flags(SSL_CTX_get0_param(ctx), X509_V_FLAG_PARTIAL_CHAIN);
    SSL_CTX_set_verify(ctx,
                       SSL_VERIFY_PEER | (config.require_client_certificate
                                              ? SSL_VERIFY_FAIL_IF_NO_PEER_CERT
                                              : 0),
                       nullptr);
  }
  // Stateless tickets only: no server-side session cache to share or lock.
  SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
  SSL_CTX_set_timeout(ctx, kTicketLifetimeSeconds);
  if (config.session_tickets) {
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wdeprecated-declarations"
    SSL_CTX_set_tlsext_ticket_key_cb(ctx, OnTicketKey);
#pragma GCC diagnostic pop
    SSL_CTX_set_num_tickets(ctx, 1);  // one resumes; OpenSSL's default of two costs a second seal
  } else {
    SSL_CTX_set_options(ctx, SSL_OP_NO_TICKET);
    SSL_CTX_set_num_tickets(ctx, 0);
  }
  if (!alpn_wire_.empty()) SSL_CTX_set_alpn_select_cb(ctx, OnAlpn, this);
  // Every context may be the one a handshake starts on.
#ifndef OPENSSL_IS_BORINGSSL
  SSL_CTX_set_client_hello_cb(ctx, OnClientHello, this);
#endif
  SSL_CTX_set_tlsext_servername_callback(ctx, OnServerName);
  SSL_CTX_set_tlsext_servername_arg(ctx, this);

  for (const std::string& name : cert.dns_names) {
    std::string lower = absl::AsciiStrToLower(name);
    if (lower.size() > 2 && lower[0] == '*' && lower[1] == '.') {
      wildcard_suffixes_.try_emplace(lower.substr(2), index);
    } else {
      exact_names_.try_emplace(lower, index);
    }
  }
  return absl::OkStatus();
}

TlsServerContext::~TlsServerContext() {
  for (SSL_CTX* ctx : contexts_) SSL_CTX_free(ctx);
}

SSL_CTX* TlsServerContext::ContextFor(std::string_view server_name) const {
  if (contexts_.size() == 1) return contexts_[0];
  std::string name(server_name);
  absl::AsciiStrToLower(&name);
  if (!name.empty() && name.back() == '.') name.pop_back();
  if (auto it = exact_names_.find(name); it != exact_names_.end()) return contexts_[it->second];
  size_t dot = name.find('.');
  if (dot != std::string::npos && dot > 0) {
    if (auto it = wildcard_suffixes_.find(name.substr(dot + 1));
        it != wildcard_suffixes_.end()) {
      return contexts_[it->second];
    }
  }
  return contexts_[0];
}

std::unique_ptr<TransportSocket> TlsServerContext::Create() const {
  SSL* ssl = SSL_new(contexts_[0]);
  if (ssl == nullptr) {
    TakeOpenSslError();
    return nullptr;
  }
  return std::make_unique<TlsTransportSocket>(shared_from_this(), ssl, /*server=*/true);
}

TlsClientContext::TlsClientContext(const TlsClientConfig& config)
    : config_(config), id_([] {
        static std::atomic<uint64_t> next{1};
        return next.fetch_add(1, std::memory_order_relaxed);
      }()) {}

absl::StatusOr<std::shared_ptr<TlsClientContext>> TlsClientContext::Create(
    const TlsClientConfig& config) {
  std::shared_ptr<TlsClientContext> context(new TlsClientContext(config));
  SSL_CTX* ctx = SSL_CTX_new(TLS_client_method());
  if (ctx == nullptr) return absl::InternalError(TakeOpenSslError());
  context->ctx_ = ctx;
  SSL_CTX_set_min_proto_version(ctx, config.min_version);
  SSL_CTX_set_max_proto_version(ctx, config.max_version);
  SetCommonOptions(ctx, 0, /*server=*/false);
  if (config.verify) {
    if (AddTrustedCas(ctx, config.ca_pem, /*advertise=*/false) == 0) {
      return absl::InvalidArgumentError("ca: no certificate found");
    }
    // Every certificate in the bundle is a trust anchor, so a bundle holding
    // an intermediate CA (and not its root) works as operators expect.
    X509_VERIFY_PARAM_set_flags(SSL_CTX_get0_param(ctx), X509_V_FLAG_PARTIAL_CHAIN);
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, nullptr);
  } else {
    SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, nullptr);
  }
  if (!config.client_chain_pem.empty()) {
    if (absl::Status status = UseCertificate(ctx, config.client_chain_pem, config.client_key_pem);
        !status.ok()) {
      return absl::InvalidArgumentError(
          absl::StrCat("client_certificate: ", status.message()));
    }
  }
  std::string alpn;
  for (const std::string& protocol : config.alpn_protocols) {
    alpn.push_back(static_cast<char>(protocol.size()));
    alpn.append(protocol);
  }
  if (SSL_CTX_set_alpn_protos(ctx, reinterpret_cast<const unsigned char*>(alpn.data()),
                              alpn.size()) != 0) {  // 0 is success here
    return absl::InternalError(absl::StrCat("alpn: ", TakeOpenSslError()));
  }
  // Sessions are kept by OnNewSession, not in OpenSSL's internal cache.
  SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_CLIENT | SSL_SESS_CACHE_NO_INTERNAL_STORE);
  SSL_CTX_sess_set_new_cb(ctx, OnNewSession);
  SSL_CTX_set_app_data(ctx, context.get());
  return context;
}

TlsClientContext::~TlsClientContext() {
  if (last_session_ != nullptr) SSL_SESSION_free(last_session_);
  if (ctx_ != nullptr) SSL_CTX_free(ctx_);
}

int TlsClientContext::OnNewSession(SSL* ssl, SSL_SESSION* session) {
  // The context outlives its SSLs: every socket holds a reference to it.
  auto* context = static_cast<TlsClientContext*>(SSL_CTX_get_app_data(SSL_get_SSL_CTX(ssl)));
  if (context == nullptr || SSL_SESSION_is_resumable(session) != 1) return 0;
  SSL_SESSION* replaced;
  {
    absl::MutexLock lock(&context->mu_);
    replaced = context->last_session_;
    context->last_session_ = session;
  }
  if (replaced != nullptr) SSL_SESSION_free(replaced);
  return 1;  // the reference is ours now
}

std::unique_ptr<TransportSocket> TlsClientContext::Create() const { return MakeSocket(false); }

std::unique_ptr<TransportSocket> TlsClientContext::CreateHttp1() const {
  return MakeSocket(config_.alpn_protocols != std::vector<std::string>{"http/1.1"});
}

std::unique_ptr<TransportSocket> TlsClientContext::MakeSocket(bool http1_only) const {
  SSL* ssl = SSL_new(ctx_);
  if (ssl == nullptr) {
    TakeOpenSslError();
    return nullptr;
  }
  static constexpr unsigned char kHttp1Alpn[] = "\x08http/1.1";
  if (http1_only && SSL_set_alpn_protos(ssl, kHttp1Alpn, sizeof(kHttp1Alpn) - 1) != 0) {
    TakeOpenSslError();  // 0 is success here
    SSL_free(ssl);
    return nullptr;
  }
  if (!config_.sni.empty()) {
    bool ok = SSL_set_tlsext_host_name(ssl, config_.sni.c_str()) == 1;
    if (ok && config_.verify) {
      // DNS subjectAltNames only, as browsers check them; "*.example.com"
      // stands for one whole label.
      X509_VERIFY_PARAM* param = SSL_get0_param(ssl);
      X509_VERIFY_PARAM_set_hostflags(
          param, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS | X509_CHECK_FLAG_NEVER_CHECK_SUBJECT);
      ok = X509_VERIFY_PARAM_set1_host(param, config_.sni.data(), config_.sni.size()) == 1;
    }
    if (!ok) {
      TakeOpenSslError();
      SSL_free(ssl);
      return nullptr;
    }
  }
  {
    absl::MutexLock lock(&mu_);
    if (last_session_ != nullptr) SSL_set_session(ssl, last_session_);  // takes a reference
  }
  return std::make_unique<TlsTransportSocket>(shared_from_this(), ssl, /*server=*/false);
}

// The socket under a TLS session: OpenSSL's socket BIO, but with recv/send
// (no file layer) and noting whether the last recv came back short, that
// is, took everything the socket had (TlsTransportSocket::drained). With
// read-ahead a record usually arrives in one recv that comes back short, so
// the connection need not read again only to get EAGAIN. Retry flags, EOF
// (BIO_CTRL_EOF, which OpenSSL reads to tell an EOF without close_notify)
// and errno follow the socket BIO.
class TlsTransportSocket::SocketBio {
 public:
  static BIO* New(TlsTransportSocket* socket) {
    BIO* bio = BIO_new(Method());
    if (bio == nullptr) return nullptr;
    BIO_set_data(bio, socket);
    BIO_set_init(bio, 1);
    return bio;
  }

 private:
  static BIO_METHOD* Method() {
    static BIO_METHOD* const method = [] {
      BIO_METHOD* m = BIO_meth_new(BIO_get_new_index() | BIO_TYPE_SOURCE_SINK | BIO_TYPE_DESCRIPTOR,
                                   "sluice socket");
      SLUICE_CHECK(m != nullptr);
      BIO_meth_set_read(m, Read);
      BIO_meth_set_write(m, Write);
      BIO_meth_set_ctrl(m, Ctrl);
      return m;
    }();
    return method;
  }
  static TlsTransportSocket* Socket(BIO* bio) {
    return static_cast<TlsTransportSocket*>(BIO_get_data(bio));
  }
  static bool ShouldRetry() { return errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR; }

  static int Read(BIO* bio, char* out, int size) {
    TlsTransportSocket* socket = Socket(bio);
    BIO_clear_retry_flags(bio);
    if (!socket->received_.empty()) {
      // A batched read's bytes come first (only after the handshake: no
      // first bytes to keep).
      const size_t n = std::min(socket->received_.size(), static_cast<size_t>(size));
      std::memcpy(out, socket->received_.view().data(), n);
      socket->received_.Drain(n);
      // Its room is not kept: thousands of open TLS connections would each
      // hold 16.5 KiB.
      socket->received_.Release();
      return static_cast<int>(n);
    }
    if (socket->received_error_ != 0) {
      errno = socket->received_error_;
      socket->received_error_ = 0;
      return -1;
    }
    const ssize_t n = ::recv(socket->fd_, out, static_cast<size_t>(size), 0);
    if (n > 0) {
      if (!socket->done_) {
        const size_t kept = socket->first_bytes_.size();
        const char first = kept > 0 ? socket->first_bytes_[0] : out[0];
        const size_t limit = first == 22 ? kFirstBytes : kFirstBytesPlain;
        if (kept < limit) {
          socket->first_bytes_.append(out, std::min<size_t>(static_cast<size_t>(n), limit - kept));
        }
      }
      socket->socket_drained_ = n < size;
      return static_cast<int>(n);
    }
    if (n == 0) {
      socket->peer_eof_ = true;
    } else if (ShouldRetry()) {
      BIO_set_retry_read(bio);
    }
    return static_cast<int>(n);
  }
  static int Write(BIO* bio, const char* data, int size) {
    BIO_clear_retry_flags(bio);
    TlsTransportSocket* socket = Socket(bio);
    if (socket->sealing_ || !socket->sealed_.empty()) {
      // Sealing, or behind what was sealed and is not sent yet: queued.
      socket->sealed_.Append({data, static_cast<size_t>(size)});
      return size;
    }
    const ssize_t n = ::send(socket->fd_, data, static_cast<size_t>(size), MSG_NOSIGNAL);
    if (n < 0 && ShouldRetry()) BIO_set_retry_write(bio);
    return static_cast<int>(n);
  }
  static long Ctrl(BIO* bio, int cmd, long /*num*/, void* ptr) {
    switch (cmd) {
      case BIO_CTRL_FLUSH:
        return 1;
      case BIO_CTRL_EOF:
        return Socket(bio)->peer_eof_ ? 1 : 0;
      case BIO_C_GET_FD:
        if (ptr != nullptr) *static_cast<int*>(ptr) = Socket(bio)->fd_;
        return Socket(bio)->fd_;
      default:
        return 0;
    }
  }
};

TlsTransportSocket::TlsTransportSocket(std::shared_ptr<const void> context, SSL* ssl, bool server)
    : context_(std::move(context)), ssl_(ssl), server_(server) {
#ifndef OPENSSL_IS_BORINGSSL
  if (server_) SSL_set_ex_data(ssl_, SentServerNameIndex(), &info_.sni);
#endif
}

TlsTransportSocket::~TlsTransportSocket() {
  // A session that ended without a TLS error stays resumable. OpenSSL would
  // otherwise mark it not resumable in SSL_free for want of a close_notify,
  // and HTTP peers often just close (TLS 1.3 no longer asks for this).
  if (done_ && !failed_) SSL_set_shutdown(ssl_, SSL_get_shutdown(ssl_) | SSL_SENT_SHUTDOWN);
  SSL_free(ssl_);
}

void TlsTransportSocket::Attach(int fd) {
  fd_ = fd;
  BIO* bio = SocketBio::New(this);
  SLUICE_CHECK(bio != nullptr);
  SSL_set_bio(ssl_, bio, bio);  // one BIO both ways: the SSL owns it
  if (server_) {
    SSL_set_accept_state(ssl_);
  } else {
    SSL_set_connect_state(ssl_);
  }
}

TransportSocket::Progress TlsTransportSocket::Handshake() {
  int ret = SSL_do_handshake(ssl_);
  if (ret == 1) {
    done_ = true;
    std::string().swap(first_bytes_);  // needed only if the handshake failed
    info_.version = SSL_get_version(ssl_);
    if (const SSL_CIPHER* cipher = SSL_get_current_cipher(ssl_)) {
      info_.cipher = SSL_CIPHER_get_name(cipher);
    }
    if (info_.sni.empty()) {  // (a server's is the name as sent, from OnClientHello)
      if (const char* sni = SSL_get_servername(ssl_, TLSEXT_NAMETYPE_host_name)) info_.sni = sni;
    }
    const unsigned char* alpn = nullptr;
    unsigned int alpn_length = 0;
    SSL_get0_alpn_selected(ssl_, &alpn, &alpn_length);
    if (alpn != nullptr) info_.alpn.assign(reinterpret_cast<const char*>(alpn), alpn_length);
    info_.resumed = SSL_session_reused(ssl_) == 1;
#if defined(OPENSSL_IS_BORINGSSL) || OPENSSL_VERSION_NUMBER < 0x30000000L
    X509* peer = SSL_get_peer_certificate(ssl_);
#else
    X509* peer = SSL_get1_peer_certificate(ssl_);
#endif
    if (peer != nullptr) {
      info_.peer_subject = SubjectOf(peer);
      X509_free(peer);
    }
    return Progress::kDone;
  }
  switch (int error = SSL_get_error(ssl_, ret)) {
    case SSL_ERROR_WANT_READ: return Progress::kWantRead;
    case SSL_ERROR_WANT_WRITE: return Progress::kWantWrite;
    case SSL_ERROR_SYSCALL:
      failure_reason_ = errno != 0 ? absl::StrCat("handshake: ", strerror(errno))
                                   : "handshake: the peer closed the connection";
      failure_kind_ = "closed";
      ERR_clear_error();
      break;
    default:
      if (long verify = SSL_get_verify_result(ssl_); verify != X509_V_OK) {
        // OpenSSL's own error says only "certificate verify failed".
        failure_reason_ = absl::StrCat("handshake: certificate verify failed: ",
                                       X509_verify_cert_error_string(verify));
        failure_kind_ = "client_certificate";
        ERR_clear_error();
      } else if (error == SSL_ERROR_ZERO_RETURN) {
        failure_reason_ = "handshake: the peer closed the connection";
        failure_kind_ = "closed";
        ERR_clear_error();
      } else {
        const int reason = ERR_GET_REASON(ERR_peek_error());
        failure_kind_ = HandshakeFailureKind(reason, server_);
        // OpenSSL knows GET, POST, HEAD, PUT and CONNECT only: OPTIONS,
        // DELETE, PATCH and an HTTP/2 preface were "wrong version number".
        if (server_ && failure_kind_ == "protocol_version" && LooksLikePlainHttp(first_bytes_)) {
          failure_kind_ = "plain_http";
        }
        failure_reason_ = absl::StrCat("handshake: ", TakeOpenSslError());
        // To an upstream: a plain HTTP (or other non-TLS) server answered,
        // which OpenSSL calls "wrong version number".
        if (!server_ && reason == SSL_R_WRONG_VERSION_NUMBER) {
          absl::StrAppend(&failure_reason_,
                          " (does the upstream speak TLS? its answer is not TLS; a cluster's tls "
                          "is for endpoints that serve TLS on that port)");
        }
      }
      break;
  }
  failed_ = true;
  return Progress::kFailed;
}

bool TlsTransportSocket::plain_http1_request() const {
  return server_ && failed_ && failure_kind_ == "plain_http" &&
         first_bytes_.rfind("PRI * HTTP/2.0", 0) != 0;
}

std::string_view TlsTransportSocket::plain_http1_head() const {
  return plain_http1_request() ? std::string_view(first_bytes_) : std::string_view();
}

ssize_t TlsTransportSocket::Read(char* buffer, size_t size) {
  read_wants_write_ = false;
  int ret = SSL_read(ssl_, buffer, static_cast<int>(std::min<size_t>(size, 1 << 30)));
  if (ret > 0) return ret;
  return Failed(ret, /*reading=*/true);
}

ssize_t TlsTransportSocket::Write(const char* data, size_t size) {
  write_wants_read_ = false;
  if (!sealed_.empty() && !SendSealed()) return -1;
  if (size == 0) return 0;
  write_retry_ = false;  // Failed() says if this one must be repeated
  int ret = SSL_write(ssl_, data, static_cast<int>(std::min<size_t>(size, 1 << 30)));
  if (ret > 0) return ret;
  ssize_t n = Failed(ret, /*reading=*/false);
  if (n == 0) {
    // The peer is gone (EOF, close_notify, or a failed write OpenSSL
    // reported without errno, as when its pending session ticket could not
    // be sent): nothing more goes out. Never 0, which a writer would retry.
    errno = EPIPE;
    return -1;
  }
  return n;
}

ssize_t TlsTransportSocket::Failed(int ret, bool reading) {
  switch (SSL_get_error(ssl_, ret)) {
    case SSL_ERROR_WANT_READ:
      if (!reading) write_wants_read_ = true;
      errno = EAGAIN;
      return -1;
    case SSL_ERROR_WANT_WRITE:
      if (reading) {
        read_wants_write_ = true;
      } else {
        write_retry_ = true;
      }
      errno = EAGAIN;
      return -1;
    case SSL_ERROR_ZERO_RETURN:  // close_notify
      return 0;
    case SSL_ERROR_SYSCALL: {
      int err = errno;
      ERR_clear_error();
      if (err == 0) {  // EOF without close_notify (BoringSSL's way of saying it)
        truncated_ = true;
        return 0;
      }
      errno = err;
      return -1;
    }
    default:
#ifdef SSL_R_UNEXPECTED_EOF_WHILE_READING
      if (ERR_GET_REASON(ERR_peek_error()) == SSL_R_UNEXPECTED_EOF_WHILE_READING) {
        ERR_clear_error();  // OpenSSL 3's way, on a context that does not ignore it
        truncated_ = true;
        return 0;
      }
#endif
      failure_reason_ = TakeOpenSslError();
      failed_ = true;
      errno = EPROTO;
      return -1;
  }
}

bool TlsTransportSocket::has_buffered_input() const {
  return SSL_has_pending(ssl_) == 1 || !received_.empty();
}

bool TlsTransportSocket::RecvRoom(char** data, size_t* size) {
  // After the handshake only; and never ahead of what was read before.
  if (!done_ || failed_ || !received_.empty() || received_error_ != 0) return false;
  *data = received_.Reserve(kRecvRoom);
  *size = kRecvRoom;
  return true;
}

void TlsTransportSocket::RecvMade(int result) {
  if (result > 0) {
    received_.Commit(static_cast<size_t>(result));
    socket_drained_ = static_cast<size_t>(result) < kRecvRoom;
  } else if (result < 0 && result != -EAGAIN && result != -EWOULDBLOCK) {
    received_error_ = -result;
  }
  // 0: the next recv of the socket says so again.
}

bool TlsTransportSocket::SendSealed() {
  while (!sealed_.empty()) {
    const std::string_view bytes = sealed_.view();
    const ssize_t n = ::send(fd_, bytes.data(), bytes.size(), MSG_NOSIGNAL);
    if (n >= 0) {
      sealed_.Drain(static_cast<size_t>(n));
    } else if (errno != EINTR) {
      return false;
    }
  }
  sealed_.ShrinkIfEmpty();  // storage over 64 KiB is not kept
  return true;
}

size_t TlsTransportSocket::Seal(const char* data, size_t size) {
  if (!done_ || failed_ || seal_refused_ || write_retry_ || write_wants_read_) return 0;
  // SSL_write makes a record (or a few) per call; the BIO takes them all.
  size_t taken = 0;
  sealing_ = true;
  while (taken < size) {
    const int ret =
        SSL_write(ssl_, data + taken, static_cast<int>(std::min<size_t>(size - taken, 1 << 30)));
    if (ret <= 0) {
      // Nothing Write() would not meet again (a session that failed, one
      // that must read first): it meets it, and reports it.
      seal_refused_ = true;
      ERR_clear_error();
      break;
    }
    taken += static_cast<size_t>(ret);
  }
  sealing_ = false;
  return taken;
}

void TlsTransportSocket::Shutdown() {
  if (!done_ || failed_) return;
  // What was sealed goes first, if the socket takes it now.
  if (!sealed_.empty() && !SendSealed()) return;
  // Sends close_notify if the socket takes it now; never waits for the peer's.
  SSL_shutdown(ssl_);
  ERR_clear_error();
}

}  // namespace sluice::net
