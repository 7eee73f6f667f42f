// Certificates for the TLS tests, made with OpenSSL in the test process (P-256 keys, SHA-256):
// a CA, a server certificate it signs for 127.0.0.1 / localhost, a client certificate it
// signs, an expired server certificate, a second CA that signed none of them, and more for the
// error paths. Written as PEM files into `dir`.
#ifndef LLMINT8_COMMON_TESTING_TEST_CERTS_H_
#define LLMINT8_COMMON_TESTING_TEST_CERTS_H_

#include <string>

#include "absl/status/statusor.h"

namespace llmint8::testing {

struct TestCerts {
  std::string ca;           // the CA certificate
  std::string server_cert;  // signed by ca, for IP 127.0.0.1 and DNS localhost
  std::string server_key;
  std::string client_cert;  // signed by ca
  std::string client_key;
  std::string expired_cert;  // server_key's, signed by ca, expired yesterday
  std::string other_ca;      // a CA that signed none of these
  std::string encrypted_key;     // server_key, encrypted (AES-128-CBC, passphrase "secret")
  std::string elsewhere_cert;    // server_key's, signed by ca, for DNS example.com only
  std::string self_signed_cert;  // server_key's, self-signed, for 127.0.0.1 / localhost
  std::string server_only_cert;  // server_key's, signed by ca, extendedKeyUsage serverAuth
};

absl::StatusOr<TestCerts> WriteTestCerts(const std::string& dir);

}  // namespace llmint8::testing

#endif  // LLMINT8_COMMON_TESTING_TEST_CERTS_H_
