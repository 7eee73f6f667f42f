#include "tests/scaleout/scaleout_cluster.h"

#include <sys/utsname.h>
#include <unistd.h>

#include <filesystem>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "grpcpp/grpcpp.h"
#include "tests/e2e/cluster.h"

namespace llmint8::scaleout {

ScaleoutCluster::ScaleoutCluster(ScaleoutClusterOptions options) : options_(std::move(options)) {
  log_dir_ = std::filesystem::temp_directory_path() /
             absl::StrCat("llmint8_scaleout_", getpid(), "_", e2e::FreePort());
  std::filesystem::create_directories(log_dir_);
  address_ = absl::StrCat("127.0.0.1:", e2e::FreePort());
  for (int i = 0; i < options_.workers; ++i) {
    worker_addresses_.push_back(absl::StrCat("127.0.0.1:", e2e::FreePort()));
    workers_.push_back(std::make_unique<ChildProcess>(
        std::vector<std::string>{"worker", absl::StrCat("--listen=", worker_addresses_[i]),
                                 absl::StrCat("--memory_limit=", options_.memory_limit_bytes)},
        absl::StrCat(log_dir_, "/worker", i, ".log")));
  }
  coordinator_ = std::make_unique<ChildProcess>(
      std::vector<std::string>{"coordinator", absl::StrCat("--listen=", address_),
                               absl::StrCat("--workers=", absl::StrJoin(worker_addresses_, ",")),
                               absl::StrCat("--model=", options_.model),
                               absl::StrCat("--dtype=", options_.dtype),
                               absl::StrCat("--group=", options_.group),
                               absl::StrCat("--max_batch=", options_.max_batch),
                               absl::StrCat("--score_chunk=", options_.score_chunk)},
      coordinator_log());
  std::fprintf(stderr, "scale-out cluster logs in %s\n", log_dir_.c_str());
}

ScaleoutCluster::~ScaleoutCluster() {
  coordinator_.reset();
  workers_.clear();
}

std::string ScaleoutCluster::coordinator_log() const { return log_dir_ + "/coordinator.log"; }

std::unique_ptr<v1::Generation::Stub> ScaleoutCluster::NewStub() const {
  return v1::Generation::NewStub(
      grpc::CreateChannel(address_, grpc::InsecureChannelCredentials()));
}

std::vector<v1::StatsResponse> ScaleoutCluster::WorkerStats() const {
  std::vector<v1::StatsResponse> out(worker_addresses_.size());
  for (size_t i = 0; i < worker_addresses_.size(); ++i) {
    auto stub = v1::Worker::NewStub(
        grpc::CreateChannel(worker_addresses_[i], grpc::InsecureChannelCredentials()));
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
    v1::StatsRequest req;
    stub->Stats(&ctx, req, &out[i]);
  }
  return out;
}

namespace {

std::string Machine() {
  utsname u{};
  uname(&u);
  std::string cpu;
  const std::string info = ReadFile("/proc/cpuinfo");
  const size_t at = info.find("model name");
  if (at != std::string::npos) {
    const size_t colon = info.find(':', at);
    const size_t end = info.find('\n', at);
    if (colon != std::string::npos && colon < end) cpu = info.substr(colon + 2, end - colon - 2);
  }
  return absl::StrCat(u.sysname, " ", u.release, " ", u.machine, ", ",
                      std::thread::hardware_concurrency(), " CPUs (", cpu, ")");
}

std::string Mib(int64_t bytes) { return absl::StrFormat("%.2f MiB", bytes / 1048576.0); }

}  // namespace

std::string ReportMarkdown(const std::vector<RunReport>& runs, int64_t memory_limit_bytes,
                           const std::string& model) {
  std::string out = absl::StrCat(
      "Command: `ctest --test-dir build -L scaleout -R scaleout_test --output-on-failure` "
      "(LLMINT8_SCALEOUT_REPORT=<file> writes this block)  \n",
      "Machine: ", Machine(), "  \n", "Date: ",
      absl::FormatTime("%Y-%m-%d %H:%M UTC", absl::Now(), absl::UTCTimeZone()), "  \n",
      "Model: `", model, "`; every worker `--memory_limit=", memory_limit_bytes, "` (",
      Mib(memory_limit_bytes), "); coordinator `--group=smallest`\n\n",
      "| run | workers started | group (TP) | memory per worker (Stats total) | all workers | "
      "tokens/s |\n",
      "|---|---|---|---|---|---|\n");
  for (const RunReport& r : runs) {
    std::vector<std::string> bytes;
    int64_t sum = 0;
    for (int64_t b : r.worker_bytes) {
      bytes.push_back(b > 0 ? Mib(b) : "idle");
      sum += b;
    }
    absl::StrAppend(&out, "| ", r.label, " | ", r.workers, " | ",
                    r.tensor_parallel > 0 ? absl::StrCat(r.tensor_parallel) : "refused", " | ",
                    absl::StrJoin(bytes, ", "), " | ", sum > 0 ? Mib(sum) : "-", " | ",
                    r.tensor_parallel > 0 ? absl::StrFormat("%.1f", r.tokens_per_second()) : "-",
                    " |\n");
  }
  return out;
}

}  // namespace llmint8::scaleout
