#include "tests/tp/tp_memory_vote.h"

#include <stdlib.h>

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "comm/comm_options.h"
#include "comm/file_rendezvous.h"
#include "comm/fork_ranks.h"
#include "comm/make_communicator.h"
#include "common/status_macros.h"
#include "gtest/gtest.h"
#include "model/forward_test_util.h"
#include "model/synthetic.h"

namespace llmint8::model::testing {
namespace {

constexpr int64_t kVocab = 510;
constexpr int kSteps = 3;
constexpr int kStepTokens[kSteps] = {100, 40, 5};
constexpr int64_t kRank1Headroom = int64_t{96} << 10;  // over its loaded shard
constexpr absl::Duration kCommTimeout = absl::Seconds(60);
constexpr double kPromptSeconds = 10;  // far below kCommTimeout

// Per step: the status code and the seconds it took; then the last step's logits.
struct VoteResult {
  int codes[kSteps] = {-1, -1, -1};
  double seconds[kSteps] = {-1, -1, -1};
  std::vector<float> logits;
};

std::string ResultPath(const std::string& dir, int rank) {
  return absl::StrCat(dir, "/vote-rank", rank, ".bin");
}

absl::Status RunRank(const TpBackend& backend, Precision precision, int rank,
                     const std::string& dir) {
  if (backend.rank_setup) backend.rank_setup(rank);
  const OptConfig c = SmallConfig(128, 4, 2, kVocab, 128);
  void* const cuda_stream = TensorParallelCudaStream(backend.device, 2);
  comm::FileRendezvous rdzv(dir);
  comm::CommOptions co;
  co.rank = rank;
  co.world_size = 2;
  co.rendezvous = &rdzv;
  co.key_prefix = "vote/";
  co.timeout = kCommTimeout;
  co.cuda_device = 0;
  co.cuda_stream = cuda_stream;
  ASSIGN_OR_RETURN(std::unique_ptr<comm::Communicator> comm,
                   comm::MakeCommunicator(backend.comm, co));
  ASSIGN_OR_RETURN(std::unique_ptr<CheckpointSource> src, MakeSyntheticSource(c, {}));
  ShardOptions o;
  o.device = backend.device;
  o.precision = precision;
  o.cuda_device = 0;
  o.cuda_stream = cuda_stream;
  if (rank == 1) {
    // No collective at load: a probe shard gives this rank's size.
    ASSIGN_OR_RETURN(std::unique_ptr<ShardModel> probe,
                     ShardModel::Load(c, *src, 2, rank, comm.get(), o));
    o.memory_limit_bytes = probe->memory().total() + kRank1Headroom;
  }
  ASSIGN_OR_RETURN(std::unique_ptr<ShardModel> model,
                   ShardModel::Load(c, *src, 2, rank, comm.get(), o));
  // First, an agreed step that takes KV pages for three sequences but no larger activation
  // buffers, then released: later steps up to three pages need no new KV anywhere, so whether a
  // rank votes on the 40-token step hangs on the activation sizes alone (the case a rank that
  // grew its buffers for a refused step used to decide differently from its peers).
  const std::vector<int32_t> one = {5};
  const std::vector<ShardModel::SequenceInput> warm = {{101, one}, {102, one}, {103, one}};
  RETURN_IF_ERROR(model->Step(warm).status());
  for (const auto& in : warm) RETURN_IF_ERROR(model->Release(in.seq_id));
  VoteResult r;
  for (int s = 0; s < kSteps; ++s) {
    const std::vector<int32_t> tokens(kStepTokens[s], 7 + s);
    const ShardModel::SequenceInput in{static_cast<uint64_t>(s + 1), tokens};
    const auto start = std::chrono::steady_clock::now();
    absl::StatusOr<Logits> step = model->Step({&in, 1});
    r.seconds[s] = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    r.codes[s] = static_cast<int>(step.status().code());
    if (step.ok() && s == kSteps - 1) r.logits = step->values;
  }
  std::ofstream f(ResultPath(dir, rank), std::ios::binary);
  f.write(reinterpret_cast<const char*>(r.codes), sizeof(r.codes));
  f.write(reinterpret_cast<const char*>(r.seconds), sizeof(r.seconds));
  const uint64_t n = r.logits.size();
  f.write(reinterpret_cast<const char*>(&n), sizeof(n));
  f.write(reinterpret_cast<const char*>(r.logits.data()), static_cast<std::streamsize>(n * 4));
  if (!f.good()) return absl::InternalError("cannot write " + ResultPath(dir, rank));
  return absl::OkStatus();
}

VoteResult ReadResult(const std::string& path) {
  VoteResult r;
  std::ifstream f(path, std::ios::binary);
  f.read(reinterpret_cast<char*>(r.codes), sizeof(r.codes));
  f.read(reinterpret_cast<char*>(r.seconds), sizeof(r.seconds));
  uint64_t n = 0;
  f.read(reinterpret_cast<char*>(&n), sizeof(n));
  r.logits.resize(n);
  f.read(reinterpret_cast<char*>(r.logits.data()), static_cast<std::streamsize>(n * 4));
  return r;
}

}  // namespace

void ExpectMemoryVoteAgrees(const TpBackend& backend, Precision precision) {
  char tmpl[] = "/tmp/llmint8_vote_XXXXXX";
  ASSERT_NE(mkdtemp(tmpl), nullptr);
  const std::string dir = tmpl;
  const auto outcomes = comm::ForkRanks(
      2, [&](int rank) { return RunRank(backend, precision, rank, dir); }, absl::Seconds(60));
  for (const auto& o : outcomes) {
    ASSERT_TRUE(o.reported && o.status.ok() && o.exit_code == 0) << o.Describe();
  }
  const VoteResult r0 = ReadResult(ResultPath(dir, 0));
  const VoteResult r1 = ReadResult(ResultPath(dir, 1));
  const auto code = [](int c) {
    return absl::StatusCodeToString(static_cast<absl::StatusCode>(c));
  };
  EXPECT_EQ(code(r0.codes[0]), "RESOURCE_EXHAUSTED");
  EXPECT_EQ(code(r1.codes[0]), "RESOURCE_EXHAUSTED");
  EXPECT_EQ(code(r0.codes[1]), code(r1.codes[1])) << "the 40-token step";
  EXPECT_EQ(code(r0.codes[2]), "OK");
  EXPECT_EQ(code(r1.codes[2]), "OK");
  for (int s = 0; s < kSteps; ++s) {
    EXPECT_LT(r0.seconds[s], kPromptSeconds) << "rank 0, step " << s;
    EXPECT_LT(r1.seconds[s], kPromptSeconds) << "rank 1, step " << s;
  }
  ASSERT_EQ(r0.logits.size(), static_cast<size_t>(kVocab));
  ASSERT_EQ(r1.logits.size(), static_cast<size_t>(kVocab));
  EXPECT_EQ(std::memcmp(r0.logits.data(), r1.logits.data(), kVocab * sizeof(float)), 0)
      << "the ranks' gathered logits differ";
  std::printf("%s: steps of 100 / 40 / 5 tokens: rank 0 %s / %s / %s, rank 1 %s / %s / %s\n",
              std::string(DeviceName(backend.device)).c_str(), code(r0.codes[0]).c_str(),
              code(r0.codes[1]).c_str(), code(r0.codes[2]).c_str(), code(r1.codes[0]).c_str(),
              code(r1.codes[1]).c_str(), code(r1.codes[2]).c_str());
  std::filesystem::remove_all(dir);
}

}  // namespace llmint8::model::testing
