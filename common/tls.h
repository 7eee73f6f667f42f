// TLS for the coordinator's public ports (gRPC and the HTTP API) and for the clients that call
// them (generate, loadtest, and workers reaching the coordinator's rendezvous): PEM files named
// by flags, read and checked once at start so that a wrong file is a clear error there, not a
// failed handshake later.
//
//   ASSIGN_OR_RETURN(std::optional<TlsServerPem> pem, LoadTlsServer(config));
//   builder.AddListeningPort(listen, GrpcServerCredentials(pem), &port);
//   ASSIGN_OR_RETURN(auto creds, GrpcChannelCredentials(client_config));
#ifndef LLMINT8_COMMON_TLS_H_
#define LLMINT8_COMMON_TLS_H_

#include <memory>
#include <optional>
#include <string>

#include "absl/status/statusor.h"
#include "grpcpp/security/credentials.h"
#include "grpcpp/security/server_credentials.h"

namespace llmint8 {

// A server's side. TLS is on when cert_file and key_file are set (both or neither).
struct TlsServerConfig {
  std::string cert_file = {};       // PEM certificate chain, the server's own first
  std::string key_file = {};        // PEM private key (unencrypted) of that certificate
  std::string client_ca_file = {};  // PEM roots: when set, clients must present a certificate
                                    // they signed (mutual TLS)
  bool enabled() const { return !cert_file.empty() || !key_file.empty(); }
};

struct TlsServerPem {
  std::string cert_chain;
  std::string private_key;
  std::string client_roots;  // empty: client certificates are not asked for
};

// nullopt when TLS is off; INVALID_ARGUMENT naming the flag when a file cannot be read, holds
// no PEM certificate (or key), the key does not belong to the certificate, the certificate has
// expired or is not valid yet, or only one of cert and key (or a client CA without them) is set.
absl::StatusOr<std::optional<TlsServerPem>> LoadTlsServer(const TlsServerConfig& config);

// TLS (requiring a client certificate when pem->client_roots is set) or, for nullopt, insecure.
std::shared_ptr<grpc::ServerCredentials> GrpcServerCredentials(
    const std::optional<TlsServerPem>& pem);

// A client's side. TLS is on when ca_file is set.
struct TlsClientConfig {
  std::string ca_file = {};    // PEM roots that signed the server's certificate
  std::string cert_file = {};  // this client's PEM certificate chain, for a server that asks
  std::string key_file = {};   // and its private key (both or neither)
  const char* ca_flag = "--tls_ca_file";  // the flag that named ca_file, for errors
  bool enabled() const { return !ca_file.empty(); }
};

// Insecure when TLS is off; INVALID_ARGUMENT as LoadTlsServer for bad files, or for a client
// certificate without ca_file.
absl::StatusOr<std::shared_ptr<grpc::ChannelCredentials>> GrpcChannelCredentials(
    const TlsClientConfig& config);

// Checks for a certificate that one process uses for another (serve hands its own to its
// workers): OK when the certificate in cert_file names `host` (an IP address or a DNS name, in
// its subjectAltName), so that a client dialing `host` accepts it; and when it chains to the
// roots in roots_file (named `roots_flag` in the error) for `use` (its extendedKeyUsage
// allows it), so that a peer trusting them accepts it there. INVALID_ARGUMENT saying why not.
enum class CertificateUse { kServer, kClient };
absl::Status CheckCertificateNames(const std::string& cert_file, const std::string& host);
// OK when the certificate in cert_file allows `use` (no extendedKeyUsage, or serverAuth /
// clientAuth in it); INVALID_ARGUMENT saying `why` it must otherwise.
absl::Status CheckCertificateAllowsUse(const std::string& cert_file, CertificateUse use,
                                       const std::string& why);
absl::Status CheckCertificateSignedBy(const std::string& cert_file, const std::string& roots_file,
                                      const char* roots_flag, CertificateUse use);

}  // namespace llmint8

#endif  // LLMINT8_COMMON_TLS_H_
