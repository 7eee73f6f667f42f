// A coordinator and N workers as `llmint8` processes on loopback, every worker under the same
// --memory_limit, the coordinator planning its group (--group); plus what a run measured.
#ifndef LLMINT8_TESTS_SCALEOUT_SCALEOUT_CLUSTER_H_
#define LLMINT8_TESTS_SCALEOUT_SCALEOUT_CLUSTER_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "llmint8/v1/generation.grpc.pb.h"
#include "llmint8/v1/worker.grpc.pb.h"
#include "tests/scaleout/child_process.h"

namespace llmint8::scaleout {

struct ScaleoutClusterOptions {
  std::string model;
  std::string dtype = "fp16";
  int workers = 2;
  int64_t memory_limit_bytes = 0;
  std::string group = "smallest";  // coordinator --group
  // Coordinator --max_batch and --score_chunk: the step each worker keeps room for, which the
  // plan counts (a small model's activations would outweigh its weights at the defaults).
  int max_batch = 4;
  int64_t score_chunk = 16;
};

class ScaleoutCluster {
 public:
  explicit ScaleoutCluster(ScaleoutClusterOptions options);
  ~ScaleoutCluster();  // coordinator first, then the workers

  const std::string& address() const { return address_; }
  const std::string& log_dir() const { return log_dir_; }
  std::string coordinator_log() const;
  std::unique_ptr<v1::Generation::Stub> NewStub() const;
  // Worker.Stats of every worker (idle ones report no shard: total_bytes 0).
  std::vector<v1::StatsResponse> WorkerStats() const;

 private:
  ScaleoutClusterOptions options_;
  std::string log_dir_;
  std::string address_;
  std::vector<std::string> worker_addresses_;
  std::vector<std::unique_ptr<ChildProcess>> workers_;
  std::unique_ptr<ChildProcess> coordinator_;
};

// One serving run, as the docs table shows it.
struct RunReport {
  std::string label;       // e.g. "fp16, 4 workers"
  std::string dtype;
  int workers = 0;         // started
  int tensor_parallel = 0; // formed the group
  std::vector<int64_t> worker_bytes;  // Stats total_bytes per worker (0: idle)
  int64_t generated_tokens = 0;
  double seconds = 0;
  double tokens_per_second() const { return seconds > 0 ? generated_tokens / seconds : 0; }
};

// Markdown: the command, machine, date and one row per run.
std::string ReportMarkdown(const std::vector<RunReport>& runs, int64_t memory_limit_bytes,
                           const std::string& model);

}  // namespace llmint8::scaleout

#endif  // LLMINT8_TESTS_SCALEOUT_SCALEOUT_CLUSTER_H_
