#include "common/testing/test_certs.h"

#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include <cstdio>
#include <cstring>
#include <memory>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "common/openssl_ptr.h"

namespace llmint8::testing {
namespace {

using openssl::Cert;
using openssl::Pkey;

Pkey NewKey() { return Pkey(EVP_EC_gen("P-256")); }

bool AddExtension(X509* cert, X509* issuer, int nid, const char* value) {
  X509V3_CTX ctx;
  X509V3_set_ctx_nodb(&ctx);
  X509V3_set_ctx(&ctx, issuer, cert, nullptr, nullptr, 0);
  X509_EXTENSION* ext = X509V3_EXT_conf_nid(nullptr, &ctx, nid, value);
  if (ext == nullptr) return false;
  const bool ok = X509_add_ext(cert, ext, -1) == 1;
  X509_EXTENSION_free(ext);
  return ok;
}

// A certificate for `key` named `cn`, signed by (issuer, issuer_key), or self-signed when
// issuer is null; valid from `from_days` to `to_days` days from now.
Cert MakeCert(EVP_PKEY* key, const char* cn, X509* issuer, EVP_PKEY* issuer_key, bool ca,
              const char* san, long from_days, long to_days, long serial,
              const char* extended_usage = nullptr) {
  Cert cert(X509_new());
  X509_set_version(cert.get(), 2);
  ASN1_INTEGER_set(X509_get_serialNumber(cert.get()), serial);
  X509_gmtime_adj(X509_getm_notBefore(cert.get()), from_days * 86400);
  X509_gmtime_adj(X509_getm_notAfter(cert.get()), to_days * 86400);
  X509_set_pubkey(cert.get(), key);
  X509_NAME* name = X509_get_subject_name(cert.get());
  X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, reinterpret_cast<const unsigned char*>(cn),
                             -1, -1, 0);
  X509* signer = issuer != nullptr ? issuer : cert.get();
  X509_set_issuer_name(cert.get(), X509_get_subject_name(signer));
  bool ok =
      AddExtension(cert.get(), signer, NID_basic_constraints, ca ? "critical,CA:TRUE" : "CA:FALSE");
  if (ca) ok = ok && AddExtension(cert.get(), signer, NID_key_usage, "critical,keyCertSign");
  if (san != nullptr) ok = ok && AddExtension(cert.get(), signer, NID_subject_alt_name, san);
  if (extended_usage != nullptr) {
    ok = ok && AddExtension(cert.get(), signer, NID_ext_key_usage, extended_usage);
  }
  ok = ok && X509_sign(cert.get(), issuer_key != nullptr ? issuer_key : key, EVP_sha256()) > 0;
  return ok ? std::move(cert) : nullptr;
}

// A certificate, or a key (encrypted with `passphrase` when it is not null).
absl::Status WritePem(const std::string& path, X509* cert, EVP_PKEY* key,
                      const char* passphrase = nullptr) {
  FILE* f = std::fopen(path.c_str(), "w");
  if (f == nullptr) return absl::InternalError(absl::StrCat("cannot write ", path));
  const EVP_CIPHER* cipher = passphrase != nullptr ? EVP_aes_128_cbc() : nullptr;
  const int length = passphrase != nullptr ? static_cast<int>(std::strlen(passphrase)) : 0;
  const bool ok =
      cert != nullptr
          ? PEM_write_X509(f, cert) == 1
          : PEM_write_PrivateKey(f, key, cipher, reinterpret_cast<const unsigned char*>(passphrase),
                                 length, nullptr, nullptr) == 1;
  std::fclose(f);
  return ok ? absl::OkStatus() : absl::InternalError(absl::StrCat("cannot write PEM ", path));
}

}  // namespace

absl::StatusOr<TestCerts> WriteTestCerts(const std::string& dir) {
  Pkey ca_key = NewKey(), server_key = NewKey(), client_key = NewKey(), other_key = NewKey();
  if (!ca_key || !server_key || !client_key || !other_key) {
    return absl::InternalError("OpenSSL could not make a P-256 key");
  }
  Cert ca = MakeCert(ca_key.get(), "llmint8 test CA", nullptr, nullptr, true, nullptr, -1, 30, 1);
  Cert other = MakeCert(other_key.get(), "another CA", nullptr, nullptr, true, nullptr, -1, 30, 2);
  if (!ca || !other) return absl::InternalError("OpenSSL could not make the test CAs");
  const char* san = "IP:127.0.0.1,DNS:localhost";
  Cert server =
      MakeCert(server_key.get(), "localhost", ca.get(), ca_key.get(), false, san, -1, 30, 3);
  Cert client = MakeCert(client_key.get(), "llmint8 test client", ca.get(), ca_key.get(), false,
                         nullptr, -1, 30, 4);
  Cert expired =
      MakeCert(server_key.get(), "localhost", ca.get(), ca_key.get(), false, san, -3, -1, 5);
  Cert elsewhere = MakeCert(server_key.get(), "example.com", ca.get(), ca_key.get(), false,
                            "DNS:example.com", -1, 30, 6);
  Cert self_signed =
      MakeCert(server_key.get(), "localhost", nullptr, nullptr, false, san, -1, 30, 7);
  Cert server_only = MakeCert(server_key.get(), "localhost", ca.get(), ca_key.get(), false, san, -1,
                              30, 8, "serverAuth");
  if (!server || !client || !expired || !elsewhere || !self_signed || !server_only) {
    return absl::InternalError("OpenSSL could not sign the test certificates");
  }
  TestCerts out{.ca = dir + "/ca.pem",
                .server_cert = dir + "/server.pem",
                .server_key = dir + "/server.key",
                .client_cert = dir + "/client.pem",
                .client_key = dir + "/client.key",
                .expired_cert = dir + "/expired.pem",
                .other_ca = dir + "/other-ca.pem",
                .encrypted_key = dir + "/encrypted.key",
                .elsewhere_cert = dir + "/elsewhere.pem",
                .self_signed_cert = dir + "/self-signed.pem",
                .server_only_cert = dir + "/server-only.pem"};
  struct File {
    const std::string& path;
    X509* cert;  // or
    EVP_PKEY* key;
    const char* passphrase = nullptr;
  };
  const File files[] = {{out.ca, ca.get(), nullptr},
                        {out.server_cert, server.get(), nullptr},
                        {out.server_key, nullptr, server_key.get()},
                        {out.client_cert, client.get(), nullptr},
                        {out.client_key, nullptr, client_key.get()},
                        {out.expired_cert, expired.get(), nullptr},
                        {out.other_ca, other.get(), nullptr},
                        {out.encrypted_key, nullptr, server_key.get(), "secret"},
                        {out.elsewhere_cert, elsewhere.get(), nullptr},
                        {out.self_signed_cert, self_signed.get(), nullptr},
                        {out.server_only_cert, server_only.get(), nullptr}};
  for (const File& f : files) {
    if (absl::Status s = WritePem(f.path, f.cert, f.key, f.passphrase); !s.ok()) return s;
  }
  return out;
}

}  // namespace llmint8::testing
