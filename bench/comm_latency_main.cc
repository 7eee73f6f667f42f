// llmint8_comm_latency: the latency of one small all-gather between two forked ranks on this
// host, through GlooCommunicator (all-gathers of <= 64 KiB per rank take the sync-mode mesh of
// comm/gloo_small_exchange.h) and through Gloo's own gloo::allgather with unbound buffers on a
// plain full mesh (what the communicator used for every all-gather before). Prints
// microseconds per call for each; the table is in bench/README.md.
//
//   build/bench/llmint8_comm_latency [--bytes=1024] [--iters=2000]
#include <stdlib.h>

#include <chrono>
#include <cstdio>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/strings/str_cat.h"
#include "comm/file_rendezvous.h"
#include "comm/fork_ranks.h"
#include "comm/make_communicator.h"
#include "common/status_macros.h"
#include "gloo/allgather.h"
#include "gloo/rendezvous/context.h"
#include "gloo/rendezvous/file_store.h"
#include "gloo/transport/tcp/device.h"

ABSL_FLAG(int64_t, bytes, 1024, "bytes each rank contributes to one all-gather (<= 64 KiB)");
ABSL_FLAG(int64_t, iters, 2000, "timed all-gathers per path (after a tenth as many untimed)");

namespace llmint8::comm {
namespace {

// Mean microseconds of `iters` calls of `op`, after a tenth as many untimed.
template <typename Op>
absl::StatusOr<double> TimeCalls(int64_t iters, Op&& op) {
  for (int64_t i = 0; i < iters / 10; ++i) RETURN_IF_ERROR(op());
  const auto start = std::chrono::steady_clock::now();
  for (int64_t i = 0; i < iters; ++i) RETURN_IF_ERROR(op());
  const std::chrono::duration<double, std::micro> took = std::chrono::steady_clock::now() - start;
  return took.count() / static_cast<double>(iters);
}

// Gloo's allgather on a mesh of its own (keys under raw/ in `dir`); Gloo exceptions propagate.
absl::StatusOr<double> TimeGlooAllgather(int rank, const std::string& dir, size_t n,
                                         int64_t iters) {
  gloo::transport::tcp::attr attr;
  attr.hostname = "127.0.0.1";
  auto device = gloo::transport::tcp::CreateDevice(attr);
  gloo::rendezvous::FileStore store(dir + "/raw");  // main() creates the directory
  auto context = std::make_shared<gloo::rendezvous::Context>(rank, 2);
  context->connectFullMesh(store, device);
  std::vector<float> out(2 * n, static_cast<float>(rank));
  uint32_t tag = 0;
  return TimeCalls(iters, [&]() -> absl::Status {
    gloo::AllgatherOptions opts(context);
    opts.setOutput(out.data(), out.size());  // in place: this rank's slice is its input
    opts.setTag(tag++);
    gloo::allgather(opts);
    return absl::OkStatus();
  });
}

// Rank 0 prints one table row per path.
absl::Status RunRank(int rank, const std::string& dir, int64_t bytes, int64_t iters) {
  FileRendezvous rdzv(dir);
  CommOptions o;
  o.rank = rank;
  o.world_size = 2;
  o.rendezvous = &rdzv;
  o.key_prefix = "latency/";
  o.timeout = absl::Seconds(30);
  ASSIGN_OR_RETURN(std::unique_ptr<Communicator> comm, MakeCommunicator("gloo", o));
  const size_t n = static_cast<size_t>(bytes) / sizeof(float);
  std::vector<float> in(n, static_cast<float>(rank)), out(2 * n);
  ASSIGN_OR_RETURN(const double ours, TimeCalls(iters, [&] {
                     return comm->AllGather(std::span<const float>(in), std::span<float>(out));
                   }));
  double theirs = 0;
  try {
    ASSIGN_OR_RETURN(theirs, TimeGlooAllgather(rank, dir, n, iters));
  } catch (const std::exception& e) {
    return absl::UnavailableError(absl::StrCat("gloo::allgather: ", e.what()));
  }
  if (rank == 0) {
    const long long b = static_cast<long long>(n * sizeof(float));
    std::printf("| GlooCommunicator::AllGather | %lld | %.1f |\n", b, ours);
    std::printf("| gloo::allgather (unbound buffers) | %lld | %.1f |\n", b, theirs);
    std::fflush(stdout);  // ForkRanks' children leave with _exit
  }
  return absl::OkStatus();
}

}  // namespace
}  // namespace llmint8::comm

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  const int64_t bytes = absl::GetFlag(FLAGS_bytes);
  const int64_t iters = absl::GetFlag(FLAGS_iters);
  char tmpl[] = "/tmp/llmint8_latency_XXXXXX";
  if (mkdtemp(tmpl) == nullptr) return 1;
  const std::string dir = tmpl;
  if (std::system(absl::StrCat("mkdir -p ", dir, "/raw").c_str()) != 0) return 1;
  std::printf("| path | bytes per rank | us per all-gather (2 ranks) |\n|---|---|---|\n");
  std::fflush(stdout);
  const auto outcomes = llmint8::comm::ForkRanks(
      2, [&](int rank) { return llmint8::comm::RunRank(rank, dir, bytes, iters); },
      absl::Seconds(300));
  int code = 0;
  for (const auto& o : outcomes) {
    if (!o.reported || !o.status.ok()) {
      std::fprintf(stderr, "%s\n", o.Describe().c_str());
      code = 1;
    }
  }
  std::string rm = absl::StrCat("rm -rf ", dir);
  if (std::system(rm.c_str()) != 0) code = 1;
  return code;
}
