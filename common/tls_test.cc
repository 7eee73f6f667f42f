#include "common/tls.h"

#include <stdlib.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <memory>
#include <string>

#include "common/testing/test_certs.h"
#include "grpcpp/generic/async_generic_service.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"

namespace llmint8 {
namespace {

class TlsTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    std::string pattern = ::testing::TempDir() + "/llmint8-tls-XXXXXX";
    ASSERT_NE(mkdtemp(pattern.data()), nullptr);
    dir_ = new std::string(pattern);
    absl::StatusOr<testing::TestCerts> certs = testing::WriteTestCerts(*dir_);
    ASSERT_TRUE(certs.ok()) << certs.status();
    certs_ = new testing::TestCerts(*certs);
  }
  static void TearDownTestSuite() {
    if (dir_ != nullptr) std::filesystem::remove_all(*dir_);  // the test keys
    delete dir_;
    delete certs_;
  }

  static void ExpectInvalid(const absl::Status& status, const std::string& says) {
    EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << status;
    EXPECT_NE(status.message().find(says), std::string::npos) << status;
  }

  const testing::TestCerts& certs() const { return *certs_; }
  TlsServerConfig Server() const {
    return {.cert_file = certs().server_cert, .key_file = certs().server_key};
  }

  static std::string* dir_;
  static testing::TestCerts* certs_;
};

std::string* TlsTest::dir_ = nullptr;
testing::TestCerts* TlsTest::certs_ = nullptr;

TEST_F(TlsTest, OffWhenNoFileIsNamed) {
  absl::StatusOr<std::optional<TlsServerPem>> pem = LoadTlsServer({});
  ASSERT_TRUE(pem.ok()) << pem.status();
  EXPECT_FALSE(pem->has_value());
  EXPECT_NE(GrpcServerCredentials(*pem), nullptr);
  absl::StatusOr<std::shared_ptr<grpc::ChannelCredentials>> creds = GrpcChannelCredentials({});
  ASSERT_TRUE(creds.ok()) << creds.status();
  EXPECT_NE(*creds, nullptr);
}

TEST_F(TlsTest, LoadsACertificateItsKeyAndClientRoots) {
  TlsServerConfig config = Server();
  config.client_ca_file = certs().ca;
  absl::StatusOr<std::optional<TlsServerPem>> pem = LoadTlsServer(config);
  ASSERT_TRUE(pem.ok()) << pem.status();
  ASSERT_TRUE(pem->has_value());
  EXPECT_NE((*pem)->cert_chain.find("BEGIN CERTIFICATE"), std::string::npos);
  EXPECT_NE((*pem)->private_key.find("PRIVATE KEY"), std::string::npos);
  EXPECT_NE((*pem)->client_roots.find("BEGIN CERTIFICATE"), std::string::npos);
}

TEST_F(TlsTest, BadServerFilesAreClearErrors) {
  TlsServerConfig config = Server();
  config.cert_file = *dir_ + "/missing.pem";
  ExpectInvalid(LoadTlsServer(config).status(),
                "--tls_cert_file=" + config.cert_file + ": cannot be read");
  config = Server();
  config.key_file.clear();
  ExpectInvalid(LoadTlsServer(config).status(), "set both --tls_cert_file and --tls_key_file");
  config = Server();
  config.cert_file = certs().server_key;  // a key where the certificate belongs
  ExpectInvalid(LoadTlsServer(config).status(), "no PEM certificate");
  config = Server();
  config.key_file = certs().server_cert;
  ExpectInvalid(LoadTlsServer(config).status(), "no unencrypted PEM private key");
  config = Server();
  config.key_file = certs().client_key;
  ExpectInvalid(LoadTlsServer(config).status(), "the key does not belong to the certificate");
  config = Server();
  config.key_file = certs().encrypted_key;  // refused without a prompt for its passphrase
  {
    std::ifstream key(certs().encrypted_key);
    const std::string text((std::istreambuf_iterator<char>(key)), std::istreambuf_iterator<char>());
    ASSERT_NE(text.find("ENCRYPTED PRIVATE KEY"), std::string::npos) << text;
  }
  ExpectInvalid(LoadTlsServer(config).status(), "no unencrypted PEM private key");
  config = Server();
  config.cert_file = certs().expired_cert;
  ExpectInvalid(LoadTlsServer(config).status(), "the certificate has expired");
  ExpectInvalid(LoadTlsServer({.client_ca_file = certs().ca}).status(),
                "--tls_client_ca_file needs TLS");
  config = Server();
  config.client_ca_file = certs().server_key;
  ExpectInvalid(LoadTlsServer(config).status(), "--tls_client_ca_file=");
}

TEST_F(TlsTest, BadClientFilesAreClearErrors) {
  ExpectInvalid(
      GrpcChannelCredentials({.cert_file = certs().client_cert, .key_file = certs().client_key})
          .status(),
      "a client certificate needs TLS");
  ExpectInvalid(GrpcChannelCredentials({.ca_file = *dir_ + "/missing.pem"}).status(),
                "--tls_ca_file=");
  ExpectInvalid(
      GrpcChannelCredentials({.ca_file = certs().ca, .cert_file = certs().client_cert}).status(),
      "set both");
  ExpectInvalid(
      GrpcChannelCredentials(
          {.ca_file = certs().ca, .cert_file = certs().client_cert, .key_file = certs().server_key})
          .status(),
      "does not belong");
}

TEST_F(TlsTest, ChecksWhatACertificateNamesAndWhoSignedIt) {
  EXPECT_TRUE(CheckCertificateNames(certs().server_cert, "127.0.0.1").ok());
  EXPECT_TRUE(CheckCertificateNames(certs().server_cert, "localhost").ok());
  ExpectInvalid(CheckCertificateNames(certs().elsewhere_cert, "127.0.0.1"),
                "the certificate does not name 127.0.0.1");
  EXPECT_TRUE(CheckCertificateNames(certs().elsewhere_cert, "example.com").ok());

  constexpr CertificateUse kServer = CertificateUse::kServer, kClient = CertificateUse::kClient;
  EXPECT_TRUE(
      CheckCertificateSignedBy(certs().server_cert, certs().ca, "--tls_ca_file", kServer).ok());
  ExpectInvalid(
      CheckCertificateSignedBy(certs().server_cert, certs().other_ca, "--tls_ca_file", kServer),
      "is not accepted as a server certificate by the roots of --tls_ca_file=" + certs().other_ca);
  // A certificate a CA signed does not vouch for itself; a self-signed one does.
  ExpectInvalid(
      CheckCertificateSignedBy(certs().server_cert, certs().server_cert, "--tls_ca_file", kServer),
      "is not accepted");
  EXPECT_TRUE(CheckCertificateSignedBy(certs().self_signed_cert, certs().self_signed_cert,
                                       "--tls_ca_file", kServer)
                  .ok());
  // The extendedKeyUsage decides the use: serverAuth alone is no client certificate.
  EXPECT_TRUE(
      CheckCertificateSignedBy(certs().client_cert, certs().ca, "--tls_client_ca_file", kClient)
          .ok());
  ExpectInvalid(CheckCertificateSignedBy(certs().server_only_cert, certs().ca,
                                         "--tls_client_ca_file", kClient),
                "is not accepted as a client certificate");
  EXPECT_TRUE(
      CheckCertificateSignedBy(certs().server_only_cert, certs().ca, "--tls_ca_file", kServer)
          .ok());
}

TEST_F(TlsTest, ChecksTheUseACertificateAllows) {
  constexpr CertificateUse kServer = CertificateUse::kServer, kClient = CertificateUse::kClient;
  // No extendedKeyUsage: any use.
  EXPECT_TRUE(CheckCertificateAllowsUse(certs().server_cert, kClient, "x").ok());
  EXPECT_TRUE(CheckCertificateAllowsUse(certs().server_cert, kServer, "x").ok());
  EXPECT_TRUE(CheckCertificateAllowsUse(certs().server_only_cert, kServer, "x").ok());
  ExpectInvalid(CheckCertificateAllowsUse(certs().server_only_cert, kClient,
                                          "the coordinator presents it to its workers"),
                "does not allow client use (clientAuth in its extendedKeyUsage), and the "
                "coordinator presents it to its workers");
  ExpectInvalid(CheckCertificateAllowsUse(certs().expired_cert, kClient, "x"), "has expired");
}

// A gRPC server with these credentials on a free loopback port; whether a client with
// `client` completes the handshake (the channel becomes ready).
bool Connects(const std::optional<TlsServerPem>& server, const TlsClientConfig& client) {
  grpc::CallbackGenericService service;  // every method unimplemented: the handshake is the test
  grpc::ServerBuilder builder;
  builder.RegisterCallbackGenericService(&service);
  int port = 0;
  builder.AddListeningPort("127.0.0.1:0", GrpcServerCredentials(server), &port);
  std::unique_ptr<grpc::Server> s = builder.BuildAndStart();
  if (s == nullptr || port == 0) {
    ADD_FAILURE() << "the test server did not start";
    return false;
  }
  absl::StatusOr<std::shared_ptr<grpc::ChannelCredentials>> creds = GrpcChannelCredentials(client);
  if (!creds.ok()) {
    ADD_FAILURE() << creds.status();
    return false;
  }
  auto channel = grpc::CreateChannel("127.0.0.1:" + std::to_string(port), *creds);
  // Until the channel is ready, or its connection attempt failed.
  const auto deadline = std::chrono::system_clock::now() + std::chrono::seconds(5);
  grpc_connectivity_state state = channel->GetState(/*try_to_connect=*/true);
  while (state != GRPC_CHANNEL_READY && state != GRPC_CHANNEL_TRANSIENT_FAILURE &&
         channel->WaitForStateChange(state, deadline)) {
    state = channel->GetState(true);
  }
  s->Shutdown(std::chrono::system_clock::now());
  return state == GRPC_CHANNEL_READY;
}

TEST_F(TlsTest, HandshakesSucceedOnlyWithTheRightRootsAndClientCertificate) {
  absl::StatusOr<std::optional<TlsServerPem>> tls = LoadTlsServer(Server());
  ASSERT_TRUE(tls.ok()) << tls.status();
  EXPECT_TRUE(Connects(*tls, {.ca_file = certs().ca}));
  EXPECT_FALSE(Connects(*tls, {.ca_file = certs().other_ca})) << "a server the client cannot trust";
  EXPECT_FALSE(Connects(*tls, {})) << "a plaintext client";
  EXPECT_FALSE(Connects(std::nullopt, {.ca_file = certs().ca})) << "a plaintext server";

  TlsServerConfig mutual = Server();
  mutual.client_ca_file = certs().ca;
  absl::StatusOr<std::optional<TlsServerPem>> mtls = LoadTlsServer(mutual);
  ASSERT_TRUE(mtls.ok()) << mtls.status();
  EXPECT_FALSE(Connects(*mtls, {.ca_file = certs().ca})) << "no client certificate";
  EXPECT_TRUE(Connects(
      *mtls,
      {.ca_file = certs().ca, .cert_file = certs().client_cert, .key_file = certs().client_key}));
}

}  // namespace
}  // namespace llmint8
