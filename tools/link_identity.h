// serve's own identity for the links between its processes under TLS: a fresh P-256 key and a
// self-signed certificate for IP 127.0.0.1, made at start in a private directory (0700, the
// files 0600) that goes with this object. Its workers serve their Worker port with it and take
// only callers presenting it (their --tls_client_ca_file is the certificate itself), which
// only serve's coordinator, and they, hold: not every holder of a certificate that serve's
// --tls_ca_file or --tls_client_ca_file signed. The workers present it to the coordinator's
// rendezvous too, whose client roots then hold it beside --tls_client_ca_file's (RootsWith).
//
//   ASSIGN_OR_RETURN(std::unique_ptr<LinkIdentity> link, LinkIdentity::Create());
//   args.push_back("--tls_cert_file=" + link->cert_file());
#ifndef LLMINT8_TOOLS_LINK_IDENTITY_H_
#define LLMINT8_TOOLS_LINK_IDENTITY_H_

#include <memory>
#include <string>

#include "absl/status/statusor.h"

namespace llmint8::tools {

class LinkIdentity {
 public:
  // Under $TMPDIR (else /tmp). INTERNAL when the directory or a file cannot be made.
  static absl::StatusOr<std::unique_ptr<LinkIdentity>> Create();
  ~LinkIdentity();  // removes the directory and what is in it
  LinkIdentity(const LinkIdentity&) = delete;
  LinkIdentity& operator=(const LinkIdentity&) = delete;

  const std::string& cert_file() const { return cert_file_; }
  const std::string& key_file() const { return key_file_; }

  // A new file in the directory holding `roots_pem` (PEM certificates, as LoadTlsServer read
  // them) followed by this certificate: a port's client roots that take both.
  // INVALID_ARGUMENT when roots_pem holds no certificate.
  absl::StatusOr<std::string> RootsWith(const std::string& roots_pem) const;
  const std::string& dir() const { return dir_; }

 private:
  explicit LinkIdentity(std::string dir);

  std::string dir_;
  std::string cert_file_;
  std::string key_file_;
};

}  // namespace llmint8::tools

#endif  // LLMINT8_TOOLS_LINK_IDENTITY_H_
