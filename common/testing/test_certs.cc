#include "common/testing/test_certs.h"

#include <cstdint>

#include "absl/status/status.h"
#include "common/certificate_maker.h"
#include "common/openssl_ptr.h"

namespace llmint8::testing {
namespace {

using openssl::Cert;
using openssl::Pkey;

// A certificate for `key` named `cn`, signed by (issuer, issuer_key), or self-signed when
// issuer is null; valid from `from_days` to `to_days` days from now.
Cert MakeCert(EVP_PKEY* key, const char* cn, X509* issuer, EVP_PKEY* issuer_key, bool ca,
              const char* san, long from_days, long to_days, long serial,
              const char* extended_usage = nullptr) {
  return MakeCertificate(key, {.common_name = cn,
                               .issuer = issuer,
                               .issuer_key = issuer_key,
                               .ca = ca,
                               .subject_alt_name = san,
                               .extended_key_usage = extended_usage,
                               .not_before_seconds = int64_t{from_days} * 86400,
                               .not_after_seconds = int64_t{to_days} * 86400,
                               .serial = serial});
}

}  // namespace

absl::StatusOr<TestCerts> WriteTestCerts(const std::string& dir) {
  Pkey ca_key = NewP256Key(), server_key = NewP256Key(), client_key = NewP256Key(),
       other_key = NewP256Key();
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
