// TLS end to end: a coordinator serving gRPC and the HTTP API over TLS that requires client
// certificates, its 2 Gloo workers reaching its rendezvous over the same TLS with theirs and
// serving their Worker port over mutual TLS, which the coordinator drives presenting its own;
// clients with and without the right roots and certificate; the CLI; `serve` passing TLS on to
// its workers; a worker's plaintext health port; a key that is not the certificate's refused
// at start.
#include <signal.h>
#include <stdlib.h>

#include <cstdlib>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/testing/test_certs.h"
#include "common/tls.h"
#include "gtest/gtest.h"
#include "httplib.h"
#include "nlohmann/json.hpp"
#include "tests/e2e/cluster.h"
#include "tests/e2e/reference.h"

namespace llmint8::e2e {
namespace {

constexpr char kModel[] =
    "synthetic:125m,layers=2,hidden=64,heads=4,ffn=256,vocab=400,positions=128,seed=5";

std::shared_ptr<grpc::ChannelCredentials> Credentials(const TlsClientConfig& config) {
  absl::StatusOr<std::shared_ptr<grpc::ChannelCredentials>> creds = GrpcChannelCredentials(config);
  EXPECT_TRUE(creds.ok()) << creds.status();
  return creds.ok() ? *creds : grpc::InsecureChannelCredentials();
}

// The code of a Worker.Info call to `address` with `credentials` (5 s deadline).
grpc::StatusCode WorkerInfoCode(const std::string& address,
                                const std::shared_ptr<grpc::ChannelCredentials>& credentials) {
  auto worker = v1::Worker::NewStub(grpc::CreateChannel(address, credentials));
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
  v1::WorkerInfoResponse response;
  return worker->Info(&ctx, v1::WorkerInfoRequest(), &response).error_code();
}

class TlsE2ETest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    // A server that refuses this client's handshake closes the socket under its next write:
    // that must be an error return, not a SIGPIPE that ends the test binary.
    signal(SIGPIPE, SIG_IGN);
    std::string dir = ::testing::TempDir() + "/llmint8-tls-e2e-XXXXXX";
    ASSERT_NE(mkdtemp(dir.data()), nullptr);
    dir_ = new std::string(dir);
    absl::StatusOr<testing::TestCerts> certs = testing::WriteTestCerts(dir);
    ASSERT_TRUE(certs.ok()) << certs.status();
    certs_ = new testing::TestCerts(*certs);
    http_port_ = FreePort();
    metrics_port_ = FreePort();
    ClusterOptions options;
    options.model = kModel;
    options.dtype = "fp32";
    options.extra_coordinator_flags = {absl::StrCat("--http_listen=127.0.0.1:", http_port_),
                                       absl::StrCat("--metrics_listen=127.0.0.1:", metrics_port_),
                                       "--tls_cert_file=" + certs_->server_cert,
                                       "--tls_key_file=" + certs_->server_key,
                                       "--tls_client_ca_file=" + certs_->ca,
                                       "--worker_tls_ca_file=" + certs_->ca};
    // The workers' certificate names 127.0.0.1, which the coordinator dials.
    options.extra_worker_flags = {
        "--tls_ca_file=" + certs_->ca, "--tls_cert_file=" + certs_->server_cert,
        "--tls_key_file=" + certs_->server_key, "--tls_client_ca_file=" + certs_->ca};
    cluster_ = new Cluster(options);
    ASSERT_TRUE(WaitForHealth(cluster_->address(), 1, 60, Credentials(Client())))
        << "never SERVING over mutual TLS";
  }
  static void TearDownTestSuite() {
    delete cluster_;
    delete certs_;
    if (dir_ != nullptr) std::filesystem::remove_all(*dir_);  // the test keys
    delete dir_;
  }

  // A client this coordinator accepts.
  static TlsClientConfig Client() {
    return {
        .ca_file = certs_->ca, .cert_file = certs_->client_cert, .key_file = certs_->client_key};
  }
  static std::unique_ptr<v1::Generation::Stub> Stub(const TlsClientConfig& config) {
    return v1::Generation::NewStub(grpc::CreateChannel(cluster_->address(), Credentials(config)));
  }

  static std::string* dir_;
  static testing::TestCerts* certs_;
  static int http_port_;
  static int metrics_port_;
  static Cluster* cluster_;
};

std::string* TlsE2ETest::dir_ = nullptr;
testing::TestCerts* TlsE2ETest::certs_ = nullptr;
int TlsE2ETest::http_port_ = 0;
int TlsE2ETest::metrics_port_ = 0;
Cluster* TlsE2ETest::cluster_ = nullptr;

TEST_F(TlsE2ETest, GenerateOverMutualTlsMatchesTheInProcessRuntime) {
  const std::vector<int32_t> prompt = {2, 17, 93, 5, 250, 61};
  auto ref = InProcessReference::Open(kModel, model::Precision::kF32);
  ASSERT_TRUE(ref.ok()) << ref.status();
  absl::StatusOr<std::vector<int32_t>> want = (*ref)->Greedy(prompt, 12);
  ASSERT_TRUE(want.ok()) << want.status();
  auto stub = Stub(Client());
  const Generated got = Generate(*stub, GreedyRequest(prompt, 12));
  ASSERT_TRUE(got.status.ok()) << got.status.error_message();
  EXPECT_EQ(got.tokens, *want);
}

// A stock Python grpcio client (Debian python3-grpcio) with the roots and its certificate.
TEST_F(TlsE2ETest, PythonGrpcioCallsOverMutualTls) {
  // Not a skip: scripts/install-deps.sh installs python3-grpcio, and a skip here would count
  // as a pass in ctest.
  ASSERT_EQ(std::system("/usr/bin/python3 -c 'import grpc' 2>/dev/null"), 0)
      << "python3-grpcio is not installed (apt-get install python3-grpcio)";
  const std::vector<int32_t> prompt = {2, 17, 93, 5, 250, 61};
  auto ref = InProcessReference::Open(kModel, model::Precision::kF32);
  ASSERT_TRUE(ref.ok()) << ref.status();
  absl::StatusOr<std::vector<int32_t>> want = (*ref)->Greedy(prompt, 8);
  ASSERT_TRUE(want.ok()) << want.status();
  const std::string client =
      absl::StrCat("/usr/bin/python3 ", SourcePath("tests/e2e/python_client.py"),
                   " --target=", cluster_->address(), " --proto_dir=", SourcePath("proto"),
                   " --token_ids=", absl::StrJoin(prompt, ","), " --max_new_tokens=8 --timeout=30",
                   " --tls_ca_file=", certs_->ca);
  absl::StatusOr<std::string> out = RunAndRead(absl::StrCat(
      client, " --tls_cert_file=", certs_->client_cert, " --tls_key_file=", certs_->client_key));
  ASSERT_TRUE(out.ok()) << out.status();
  const nlohmann::json j = nlohmann::json::parse(*out);
  EXPECT_EQ(j["code"], "OK");
  EXPECT_EQ(j["tokens"].get<std::vector<int32_t>>(), *want);
  absl::StatusOr<std::string> refused = RunAndRead(client + " 2>/dev/null");  // no certificate
  ASSERT_TRUE(refused.ok()) << refused.status();
  EXPECT_EQ(nlohmann::json::parse(*refused)["code"], "UNAVAILABLE");
}

TEST_F(TlsE2ETest, ClientsWithoutTheRightRootsOrCertificateAreRefused) {
  const v1::GenerateRequest request = GreedyRequest({2, 17, 93}, 2);
  const TlsClientConfig no_certificate = {.ca_file = certs_->ca};
  const TlsClientConfig wrong_roots = {.ca_file = certs_->other_ca,
                                       .cert_file = certs_->client_cert,
                                       .key_file = certs_->client_key};
  for (const TlsClientConfig& config : {no_certificate, wrong_roots}) {
    auto stub = Stub(config);
    EXPECT_EQ(Generate(*stub, request, 5).status.error_code(), grpc::StatusCode::UNAVAILABLE);
  }
  auto plaintext = v1::Generation::NewStub(
      grpc::CreateChannel(cluster_->address(), grpc::InsecureChannelCredentials()));
  EXPECT_EQ(Generate(*plaintext, request, 5).status.error_code(), grpc::StatusCode::UNAVAILABLE);
  // The coordinator still serves the client it accepts.
  auto stub = Stub(Client());
  EXPECT_TRUE(Generate(*stub, request).status.ok());
}

// The Worker port takes only a caller presenting a certificate its roots signed (the
// coordinator, which serves through it above); anyone else gets no answer at all.
TEST_F(TlsE2ETest, TheWorkersTakeOnlyCallersWithACertificateTheirRootsSigned) {
  const auto info = [](const std::shared_ptr<grpc::ChannelCredentials>& credentials) {
    return WorkerInfoCode(cluster_->worker_address(0), credentials);
  };
  EXPECT_EQ(info(grpc::InsecureChannelCredentials()), grpc::StatusCode::UNAVAILABLE);
  EXPECT_EQ(info(Credentials({.ca_file = certs_->ca})), grpc::StatusCode::UNAVAILABLE)
      << "no client certificate";
  EXPECT_EQ(info(Credentials({.ca_file = certs_->other_ca,
                              .cert_file = certs_->client_cert,
                              .key_file = certs_->client_key})),
            grpc::StatusCode::UNAVAILABLE)
      << "roots that did not sign the worker's certificate";
  EXPECT_EQ(info(Credentials({.ca_file = certs_->ca,
                              .cert_file = certs_->self_signed_cert,
                              .key_file = certs_->server_key})),
            grpc::StatusCode::UNAVAILABLE)
      << "a client certificate the worker's roots did not sign";
  EXPECT_EQ(info(Credentials(Client())), grpc::StatusCode::OK);
}

// A coordinator that dials the workers in plaintext cannot drive them, and says why.
TEST_F(TlsE2ETest, ACoordinatorWithoutTheWorkersRootsCannotDriveThem) {
  const std::string log = ::testing::TempDir() + "/llmint8-tls-plain-coordinator.log";
  std::filesystem::remove(log);
  const int port = FreePort();
  Process coordinator(
      {"coordinator", absl::StrCat("--listen=127.0.0.1:", port),
       absl::StrCat("--workers=", cluster_->worker_address(0), ",", cluster_->worker_address(1)),
       absl::StrCat("--model=", kModel), "--dtype=fp32"},
      log);
  // Why they do not answer, with the workers it waits for.
  EXPECT_TRUE(WaitForLogLine(log, "no answer from 0, 1 (0: ", 30)) << "see " << log;
  EXPECT_EQ(HealthStatus(absl::StrCat("127.0.0.1:", port)), 2) << "NOT_SERVING";
  // The group of the coordinator that holds the right roots serves on.
  auto stub = Stub(Client());
  EXPECT_TRUE(Generate(*stub, GreedyRequest({2, 17, 93}, 2)).status.ok());
}

// --health_listen: grpc.health.v1 in plaintext for Kubernetes probes, and nothing else.
TEST_F(TlsE2ETest, AWorkersHealthPortIsPlaintextAndServesHealthAlone) {
  const int worker_port = FreePort();
  const int health_port = FreePort();
  Process worker({"worker", absl::StrCat("--listen=127.0.0.1:", worker_port),
                  absl::StrCat("--health_listen=127.0.0.1:", health_port),
                  "--tls_ca_file=" + certs_->ca, "--tls_cert_file=" + certs_->server_cert,
                  "--tls_key_file=" + certs_->server_key, "--tls_client_ca_file=" + certs_->ca},
                 ::testing::TempDir() + "/llmint8-tls-health-worker.log");
  const std::string health = absl::StrCat("127.0.0.1:", health_port);
  ASSERT_TRUE(WaitForHealth(health, 1, 30)) << "readiness never SERVING in plaintext";
  EXPECT_EQ(HealthStatus(health, nullptr, "liveness"), 1);
  EXPECT_EQ(HealthStatus(absl::StrCat("127.0.0.1:", worker_port)), -1)
      << "the Worker port answered in plaintext";
  EXPECT_TRUE(ReflectionServices(health).empty()) << "reflection on the health port";
  auto stub = v1::Worker::NewStub(grpc::CreateChannel(health, grpc::InsecureChannelCredentials()));
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
  v1::WorkerInfoResponse response;
  EXPECT_EQ(stub->Info(&ctx, v1::WorkerInfoRequest(), &response).error_code(),
            grpc::StatusCode::UNIMPLEMENTED);
}

TEST_F(TlsE2ETest, TheHttpApiIsHttpsWithClientCertificates) {
  httplib::SSLClient client("127.0.0.1", http_port_, certs_->client_cert, certs_->client_key);
  client.set_ca_cert_path(certs_->ca.c_str());
  client.enable_server_certificate_verification(true);
  client.set_read_timeout(60, 0);
  const httplib::Result health = client.Get("/health");
  ASSERT_TRUE(health) << httplib::to_string(health.error());
  EXPECT_EQ(health->status, 200);
  const httplib::Result completion = client.Post(
      "/v1/completions", R"({"prompt": [2, 17, 93], "max_tokens": 3, "temperature": 0})",
      "application/json");
  ASSERT_TRUE(completion) << httplib::to_string(completion.error());
  EXPECT_EQ(completion->status, 200) << completion->body;

  httplib::SSLClient no_certificate("127.0.0.1", http_port_);
  no_certificate.set_ca_cert_path(certs_->ca.c_str());
  no_certificate.enable_server_certificate_verification(true);
  EXPECT_FALSE(no_certificate.Get("/health")) << "a client without a certificate";
  httplib::Client plaintext("127.0.0.1", http_port_);
  const httplib::Result plain = plaintext.Get("/health");
  EXPECT_TRUE(!plain || plain->status != 200) << "plain HTTP on the HTTPS port";
}

// What a Kubernetes probe can reach when the gRPC port serves TLS: /health on the metrics port,
// plain HTTP, following the group as grpc.health.v1 does.
TEST_F(TlsE2ETest, MetricsAndHealthStayPlainHttp) {
  httplib::Client client("127.0.0.1", metrics_port_);
  const httplib::Result health = client.Get("/health");
  ASSERT_TRUE(health) << httplib::to_string(health.error());
  EXPECT_EQ(health->status, 200);
  EXPECT_EQ(health->body, "SERVING\n");
  const httplib::Result metrics = client.Get("/metrics");
  ASSERT_TRUE(metrics);
  EXPECT_NE(metrics->body.find("llmint8_worker_group_ready 1"), std::string::npos);
}

TEST_F(TlsE2ETest, TheGenerateCommandCallsOverTls) {
  const std::string base =
      absl::StrCat(LlmintBinary(), " generate --coordinator=", cluster_->address(),
                   " --token_ids=2,17,93 "
                   "--max_new_tokens=3 --tls_ca_file=",
                   certs_->ca);
  absl::StatusOr<std::string> out =
      RunAndRead(absl::StrCat(base, " --tls_cert_file=", certs_->client_cert,
                              " --tls_key_file=", certs_->client_key, " 2>&1"));
  EXPECT_TRUE(out.ok()) << out.status();
  absl::StatusOr<std::string> wrong_key =
      RunAndRead(absl::StrCat(base, " --tls_cert_file=", certs_->client_cert,
                              " --tls_key_file=", certs_->server_key, " 2>&1"));
  ASSERT_FALSE(wrong_key.ok());
  EXPECT_NE(wrong_key.status().message().find("does not belong to the certificate"),
            std::string::npos)
      << wrong_key.status();
}

// status without the coordinator's roots: the call's own error, not only "no answer".
TEST_F(TlsE2ETest, StatusWithoutTheRootsSaysWhyTheCoordinatorDidNotAnswer) {
  const absl::StatusOr<std::string> out = RunAndRead(
      absl::StrCat(LlmintBinary(), " status --coordinator=", cluster_->address(), " 2>&1"));
  ASSERT_FALSE(out.ok()) << "exit 0 without TLS";
  EXPECT_NE(out.status().message().find(absl::StrCat("no coordinator answered the health check at ",
                                                     cluster_->address(), ": ")),
            std::string::npos)
      << out.status();
  EXPECT_NE(out.status().message().find("--tls_ca_file"), std::string::npos) << out.status();
}

TEST_F(TlsE2ETest, ACoordinatorWithAKeyThatIsNotItsCertificatesDoesNotStart) {
  const absl::StatusOr<std::string> out = RunAndRead(absl::StrCat(
      "timeout 30 ", LlmintBinary(), " coordinator --listen=127.0.0.1:", FreePort(),
      " --workers=127.0.0.1:", FreePort(), " --model=", kModel,
      " --tls_cert_file=", certs_->server_cert, " --tls_key_file=", certs_->client_key, " 2>&1"));
  ASSERT_FALSE(out.ok()) << "started";
  EXPECT_NE(out.status().message().find("--tls_key_file=" + certs_->client_key +
                                        ": the key does not belong to the certificate"),
            std::string::npos)
      << out.status();
}

// serve's workers dial the --listen host (127.0.0.1 for a wildcard) trusting --tls_ca_file
// (default: the certificate itself): a certificate that would leave them outside is refused at
// start, saying why.
TEST_F(TlsE2ETest, ServeRefusesACertificateItsWorkersCouldNotAccept) {
  const auto serve = [](const std::string& flags) {
    return RunAndRead(absl::StrCat("timeout 30 ", LlmintBinary(), " serve --tp=2 --model=", kModel,
                                   " --listen=127.0.0.1:", FreePort(),
                                   " --worker_base_port=", FreePort(2), " ", flags, " 2>&1"));
  };
  const absl::StatusOr<std::string> elsewhere =
      serve(absl::StrCat("--tls_cert_file=", certs_->elsewhere_cert,
                         " --tls_key_file=", certs_->server_key, " --tls_ca_file=", certs_->ca));
  ASSERT_FALSE(elsewhere.ok());
  EXPECT_NE(elsewhere.status().message().find("does not name 127.0.0.1"), std::string::npos)
      << elsewhere.status();
  // Listening on one address, the workers dial that one (a certificate for 127.0.0.1 alone
  // would leave them outside).
  const absl::StatusOr<std::string> other_address = RunAndRead(absl::StrCat(
      "timeout 30 ", LlmintBinary(), " serve --tp=2 --model=", kModel, " --listen=127.0.0.2:",
      FreePort(), " --worker_base_port=", FreePort(2), " --tls_cert_file=", certs_->server_cert,
      " --tls_key_file=", certs_->server_key, " --tls_ca_file=", certs_->ca, " 2>&1"));
  ASSERT_FALSE(other_address.ok());
  EXPECT_NE(other_address.status().message().find("reach the coordinator at 127.0.0.2 over TLS"),
            std::string::npos)
      << other_address.status();
  EXPECT_NE(other_address.status().message().find("does not name 127.0.0.2"), std::string::npos)
      << other_address.status();
  const absl::StatusOr<std::string> no_roots = serve(absl::StrCat(
      "--tls_cert_file=", certs_->server_cert, " --tls_key_file=", certs_->server_key));
  ASSERT_FALSE(no_roots.ok());
  EXPECT_NE(no_roots.status().message().find("by the roots of --tls_cert_file (as its own root)"),
            std::string::npos)
      << no_roots.status();
  const absl::StatusOr<std::string> roots_alone = serve(absl::StrCat("--tls_ca_file=", certs_->ca));
  ASSERT_FALSE(roots_alone.ok());
  EXPECT_NE(roots_alone.status().message().find("set --tls_cert_file and --tls_key_file too"),
            std::string::npos)
      << roots_alone.status();
}

TEST_F(TlsE2ETest, ServeGivesItsWorkersTheRootsAndALinkCertificateOfTheirOwn) {
  const int port = FreePort();
  const std::string address = absl::StrCat("127.0.0.1:", port);
  const int worker_port = FreePort(2);
  // serve's link certificate lives in a private directory under TMPDIR while it runs.
  std::string tmp = ::testing::TempDir() + "/llmint8-tls-serve-tmp-XXXXXX";
  ASSERT_NE(mkdtemp(tmp.data()), nullptr);
  auto serve = std::make_unique<Process>(
      std::vector<std::string>{
          "serve", "--tp=2", absl::StrCat("--model=", kModel), "--dtype=fp32",
          "--listen=" + address, absl::StrCat("--worker_base_port=", worker_port),
          "--tls_cert_file=" + certs_->server_cert, "--tls_key_file=" + certs_->server_key,
          "--tls_ca_file=" + certs_->ca, "--tls_client_ca_file=" + certs_->ca},
      ::testing::TempDir() + "/llmint8-tls-serve.log", std::vector<std::string>{"TMPDIR=" + tmp});
  // Serving means both workers joined the group through the rendezvous, over mutual TLS.
  ASSERT_TRUE(WaitForHealth(address, 1, 60, Credentials(Client())))
      << "never SERVING; see " << ::testing::TempDir() << "/llmint8-tls-serve.log";
  auto stub = v1::Generation::NewStub(grpc::CreateChannel(address, Credentials(Client())));
  EXPECT_TRUE(Generate(*stub, GreedyRequest({2, 17, 93}, 3)).status.ok());
  // Its workers take only its coordinator's calls: a caller presenting the link certificate
  // (from serve's private directory under TMPDIR), not a client with a certificate its
  // --tls_client_ca_file signed, nor a plaintext one.
  std::string link;
  for (const auto& entry : std::filesystem::directory_iterator(tmp)) link = entry.path();
  ASSERT_FALSE(link.empty()) << "no link certificate directory under " << tmp;
  const auto info = [&](const std::shared_ptr<grpc::ChannelCredentials>& credentials) {
    return WorkerInfoCode(absl::StrCat("127.0.0.1:", worker_port), credentials);
  };
  EXPECT_EQ(info(Credentials({.ca_file = link + "/link.pem",
                              .cert_file = link + "/link.pem",
                              .key_file = link + "/link.key"})),
            grpc::StatusCode::OK);
  EXPECT_EQ(info(Credentials({.ca_file = link + "/link.pem",
                              .cert_file = certs_->client_cert,
                              .key_file = certs_->client_key})),
            grpc::StatusCode::UNAVAILABLE)
      << "a client certificate --tls_client_ca_file signed";
  EXPECT_EQ(info(grpc::InsecureChannelCredentials()), grpc::StatusCode::UNAVAILABLE);
  serve->Kill(SIGHUP);  // a closed terminal: it stops as on SIGTERM, and is reaped
  EXPECT_TRUE(std::filesystem::is_empty(tmp)) << "serve left its link certificate behind";
  std::filesystem::remove_all(tmp);
}

// The coordinator presents its certificate to workers under mutual TLS: one that does not
// allow client use is refused at start.
TEST_F(TlsE2ETest, ACoordinatorWhoseCertificateWorkersWouldRefuseDoesNotStart) {
  const absl::StatusOr<std::string> out = RunAndRead(absl::StrCat(
      "timeout 30 ", LlmintBinary(), " coordinator --listen=127.0.0.1:", FreePort(),
      " --workers=127.0.0.1:", FreePort(), " --model=", kModel,
      " --tls_cert_file=", certs_->server_only_cert, " --tls_key_file=", certs_->server_key,
      " --worker_tls_ca_file=", certs_->ca, " 2>&1"));
  ASSERT_FALSE(out.ok()) << "started";
  EXPECT_NE(out.status().message().find("does not allow client use"), std::string::npos)
      << out.status();
}

}  // namespace
}  // namespace llmint8::e2e
