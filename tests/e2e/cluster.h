// Test harness: a coordinator and its workers as separate `llmint8` processes on loopback,
// plus the gRPC helpers the end-to-end tests share.
#ifndef LLMINT8_TESTS_E2E_CLUSTER_H_
#define LLMINT8_TESTS_E2E_CLUSTER_H_

#include <sys/types.h>

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "grpcpp/grpcpp.h"
#include "llmint8/v1/generation.grpc.pb.h"
#include "llmint8/v1/worker.grpc.pb.h"

namespace llmint8::e2e {

// ${LLMINT8_BINARY_DIR}/tools/llmint8 and ${LLMINT8_SOURCE_DIR}/<relative>.
std::string LlmintBinary();
std::string SourcePath(const std::string& relative);
// The first of `count` consecutive loopback ports that are free now and reserved for this
// process (no other test process picks them while it lives). Where no port range lies below
// the ephemeral ports, the kernel's pick instead, free now but unreserved. Aborts the test
// when there are none.
int FreePort(int count = 1);

// A child process running `llmint8 <args...>`, its output appended to `log_path`. It gets
// this process's environment without LLMINT8_API_KEY (a key in the environment of the test
// run would lock out the tests' clients), plus `env` ("NAME=value" entries).
class Process {
 public:
  // `cwd`: the directory it runs in (empty: this process's).
  Process(std::vector<std::string> args, std::string log_path, std::vector<std::string> env = {},
          const std::string& cwd = "");
  ~Process();               // Kill(SIGTERM) and reap
  void Kill(int signal);    // signals and reaps (waits for the exit)
  void Signal(int signal);  // signals only
  // Waits up to `seconds` for the process to exit by itself: its wait status (reaped), or -1
  // when it still runs.
  int WaitForExit(double seconds);
  bool running() const { return pid_ > 0; }

 private:
  pid_t pid_ = -1;
};

struct ClusterOptions {
  std::string model;
  std::string dtype = "fp32";
  int workers = 2;
  std::vector<std::string> extra_coordinator_flags;
  std::vector<std::string> extra_worker_flags;
  bool start_workers = true;
  std::vector<std::string> coordinator_env;  // "NAME=value" for the coordinator process
  // The coordinator's --workers lists worker 0 once more, last, as localhost:<its port>: one
  // process under two names.
  bool list_worker0_twice = false;
  // Where the coordinator and each worker (by rank) run (empty: here), for relative --model
  // paths that name other files in each.
  std::string coordinator_cwd;
  std::vector<std::string> worker_cwds;
};

class Cluster {
 public:
  explicit Cluster(ClusterOptions options);
  ~Cluster();

  const std::string& address() const { return address_; }
  const std::string& log_dir() const { return log_dir_; }  // the processes' logs
  std::string worker_address(int rank) const;
  // Starts worker `rank` with the options' worker flags, then `extra` (later ones win).
  void StartWorker(int rank, const std::vector<std::string>& extra = {});
  void KillWorker(int rank, int signal);
  void SignalWorker(int rank, int signal) { workers_[rank]->Signal(signal); }  // signals only
  void SignalCoordinator(int signal) { coordinator_->Signal(signal); }
  // Ends the coordinator with `signal` and waits for it to exit (SIGTERM: after its drain).
  void StopCoordinator(int signal) { coordinator_->Kill(signal); }
  // Ends the coordinator with `signal` (and reaps it), then starts a new one with the same
  // flags and address; its output joins the same log. The workers keep running.
  void RestartCoordinator(int signal);

  std::unique_ptr<v1::Generation::Stub> NewStub() const;
  std::unique_ptr<v1::Worker::Stub> NewWorkerStub(int rank) const;
  // Worker `rank`'s Stats.
  absl::StatusOr<v1::StatsResponse> WorkerStats(int rank) const;
  // Sequences the workers hold in all, -1 when a Stats call fails.
  int64_t ActiveSequences() const;
  // Tokens and steps worker 0 has run through its model since it loaded (Stats), -1 when the
  // call fails.
  int64_t WorkerTokens() const;
  int64_t WorkerSteps() const;
  // The coordinator's log so far (stderr of its process).
  std::string CoordinatorLog() const;
  // Polls ActiveSequences for up to 5 s (the scheduler releases a finished or cancelled
  // sequence at the next step boundary, which may come just after its client saw the end).
  bool WaitNoActiveSequences() const { return WaitActiveSequences(0); }
  // Waits up to 5 s until the workers hold `n` sequences in all.
  bool WaitActiveSequences(int64_t n) const;

 private:
  ClusterOptions options_;
  std::string log_dir_;
  std::string address_;
  std::vector<int> worker_ports_;
  std::vector<std::string> coordinator_args_;
  std::unique_ptr<Process> coordinator_;
  std::vector<std::unique_ptr<Process>> workers_;
};

// Runs `command` through the shell and returns its stdout; an error (with that output) when it
// cannot start or exits non-zero.
absl::StatusOr<std::string> RunAndRead(const std::string& command);

// The python of the virtualenv with the official OpenAI SDK that scripts/openai-venv.sh makes
// ($LLMINT8_TEST_VENV, else $XDG_CACHE_HOME or ~/.cache, then llmint8/test-venv); NotFound,
// saying how to make it, when there is none.
absl::StatusOr<std::string> OpenAiSdkPython();

// grpc.health.v1.Health/Check for `service` ("": the server; raw call, no generated health
// stubs needed): 1 SERVING, 2 NOT_SERVING, -1 when the call failed (or the name is unknown).
// `credentials`: null for plaintext.
int HealthStatus(const std::string& address,
                 std::shared_ptr<grpc::ChannelCredentials> credentials = nullptr,
                 const std::string& service = "");
// Polls the file at `path` (a process's log) for up to `seconds` until it contains `text`, at
// least `times` times.
bool WaitForLogLine(const std::string& path, const std::string& text, double seconds,
                    int times = 1);
// Polls until HealthStatus == want or `seconds` pass; true on success.
bool WaitForHealth(const std::string& address, int want, double seconds,
                   std::shared_ptr<grpc::ChannelCredentials> credentials = nullptr);

// The service names a server lists through grpc.reflection.v1alpha.ServerReflection (raw
// call, as stock tools like grpcurl make it); empty when the call failed.
std::vector<std::string> ReflectionServices(const std::string& address);

struct Generated {
  grpc::Status status;
  std::vector<int32_t> tokens;
  std::string text;
  std::vector<v1::GenerateResponse> responses;
};

v1::GenerateRequest GreedyRequest(const std::vector<int32_t>& prompt, int max_new_tokens);
Generated Generate(v1::Generation::Stub& stub, const v1::GenerateRequest& request,
                   double timeout_seconds = 60);

}  // namespace llmint8::e2e

#endif  // LLMINT8_TESTS_E2E_CLUSTER_H_
