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
constexpr absl::Duration kCommTimeout = absl::Seconds(60);
constexpr double kPromptSeconds = 10;  // far below kCommTimeout

// Per step: the status code and the seconds it took; then the last step's logits.
struct VoteResult {
  int codes[kSteps] = {-1, -1, -1};
  double seconds[kSteps] = {-1, -1, -1};
  std::vector<float> logits;
};

// A step: (sequence id, new tokens) for each sequence in it.
using Batch = std::vector<std::pair<uint64_t, int>>;

// What both ranks run: a warm-up step (agreed), released or kept, then kSteps steps, each
// expected to end in `want` on both ranks ("" for alike on both, whatever it is).
struct Script {
  int64_t rank1_headroom = int64_t{96} << 10;  // rank 1's limit over its loaded shard
  Batch warm;
  bool release_warm = true;
  Batch steps[kSteps];
  const char* want[kSteps];
};

// The steps of the header comment.
// First, an agreed step that takes KV pages for three sequences but no larger activation
// buffers, then released: later steps up to three pages need no new KV anywhere, so whether a
// rank votes on the 40-token step hangs on the activation sizes alone (the case a rank that
// grew its buffers for a refused step used to decide differently from its peers).
Script NewSequences() {
  return Script{.warm = {{101, 1}, {102, 1}, {103, 1}},
                .steps = {{{1, 100}}, {{2, 40}}, {{3, 5}}},
                .want = {"RESOURCE_EXHAUSTED", "", "OK"}};
}

// A kept sequence at a KV capacity boundary (16 positions, one granule) decodes next to a new
// 100-token prompt that only rank 0 has room for: refused on both. Rank 0 made its
// allocations before the vote (the decode's next KV granule among them) and keeps them, so the
// same decode alone next grows KV on rank 1 only: both ranks must still vote, or rank 1's vote
// meets rank 0's first all-reduce. The decode then runs on both, twice.
Script KeptDecodeAfterRefusedStep() {
  return Script{.rank1_headroom = int64_t{256} << 10,  // the warm-up and decodes fit, 100 not
                .warm = {{200, 16}},
                .release_warm = false,
                .steps = {{{200, 1}, {300, 100}}, {{200, 1}}, {{200, 1}}},
                .want = {"RESOURCE_EXHAUSTED", "OK", "OK"}};
}

std::string ResultPath(const std::string& dir, int rank) {
  return absl::StrCat(dir, "/vote-rank", rank, ".bin");
}

// The batch's sequences, with `value` as every new token.
absl::StatusOr<Logits> RunBatch(ShardModel& model, const Batch& batch, int32_t value) {
  std::vector<std::vector<int32_t>> tokens;
  std::vector<ShardModel::SequenceInput> in;
  tokens.reserve(batch.size());
  for (const auto& [id, n] : batch) {
    tokens.emplace_back(static_cast<size_t>(n), value);
    in.push_back({id, tokens.back()});
  }
  return model.Step(in);
}

absl::Status RunRank(const TpBackend& backend, Precision precision, int rank,
                     const std::string& dir, const Script& script) {
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
    o.memory_limit_bytes = probe->memory().total() + script.rank1_headroom;
  }
  ASSIGN_OR_RETURN(std::unique_ptr<ShardModel> model,
                   ShardModel::Load(c, *src, 2, rank, comm.get(), o));
  RETURN_IF_ERROR(RunBatch(*model, script.warm, 5).status());
  if (script.release_warm) {
    for (const auto& [id, n] : script.warm) RETURN_IF_ERROR(model->Release(id));
  }
  VoteResult r;
  for (int s = 0; s < kSteps; ++s) {
    const auto start = std::chrono::steady_clock::now();
    absl::StatusOr<Logits> step = RunBatch(*model, script.steps[s], 7 + s);
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

// An error when the file is missing or short: what is missing would compare equal.
absl::StatusOr<VoteResult> ReadResult(const std::string& path) {
  VoteResult r;
  std::ifstream f(path, std::ios::binary);
  f.read(reinterpret_cast<char*>(r.codes), sizeof(r.codes));
  f.read(reinterpret_cast<char*>(r.seconds), sizeof(r.seconds));
  uint64_t n = 0;
  f.read(reinterpret_cast<char*>(&n), sizeof(n));
  if (!f.good() || n > (uint64_t{1} << 28)) {
    return absl::DataLossError(absl::StrCat("missing or short result file ", path));
  }
  r.logits.resize(n);
  f.read(reinterpret_cast<char*>(r.logits.data()), static_cast<std::streamsize>(n * 4));
  if (!f.good()) return absl::DataLossError(absl::StrCat("short result file ", path));
  return r;
}

void ExpectScriptAgrees(const TpBackend& backend, Precision precision, const Script& script,
                        const char* what) {
  char tmpl[] = "/tmp/llmint8_vote_XXXXXX";
  ASSERT_NE(mkdtemp(tmpl), nullptr);
  const std::string dir = tmpl;
  const auto outcomes = comm::ForkRanks(
      2, [&](int rank) { return RunRank(backend, precision, rank, dir, script); },
      absl::Seconds(60));
  for (const auto& o : outcomes) {
    ASSERT_TRUE(o.reported && o.status.ok() && o.exit_code == 0) << o.Describe();
  }
  absl::StatusOr<VoteResult> read0 = ReadResult(ResultPath(dir, 0));
  absl::StatusOr<VoteResult> read1 = ReadResult(ResultPath(dir, 1));
  ASSERT_TRUE(read0.ok()) << read0.status();
  ASSERT_TRUE(read1.ok()) << read1.status();
  const VoteResult& r0 = *read0;
  const VoteResult& r1 = *read1;
  const auto code = [](int c) {
    return absl::StatusCodeToString(static_cast<absl::StatusCode>(c));
  };
  for (int s = 0; s < kSteps; ++s) {
    EXPECT_EQ(code(r0.codes[s]), code(r1.codes[s])) << what << ", step " << s;
    if (*script.want[s] != '\0') {
      EXPECT_EQ(code(r0.codes[s]), script.want[s]) << what << ", step " << s;
    }
  }
  for (int s = 0; s < kSteps; ++s) {
    EXPECT_LT(r0.seconds[s], kPromptSeconds) << "rank 0, step " << s;
    EXPECT_LT(r1.seconds[s], kPromptSeconds) << "rank 1, step " << s;
  }
  ASSERT_EQ(r0.logits.size(), static_cast<size_t>(kVocab));
  ASSERT_EQ(r1.logits.size(), static_cast<size_t>(kVocab));
  EXPECT_EQ(std::memcmp(r0.logits.data(), r1.logits.data(), kVocab * sizeof(float)), 0)
      << "the ranks' gathered logits differ";
  std::printf("%s, %s: rank 0 %s / %s / %s, rank 1 %s / %s / %s\n", what,
              std::string(DeviceName(backend.device)).c_str(), code(r0.codes[0]).c_str(),
              code(r0.codes[1]).c_str(), code(r0.codes[2]).c_str(), code(r1.codes[0]).c_str(),
              code(r1.codes[1]).c_str(), code(r1.codes[2]).c_str());
  std::filesystem::remove_all(dir);
}

}  // namespace

void ExpectMemoryVoteAgrees(const TpBackend& backend, Precision precision) {
  ExpectScriptAgrees(backend, precision, NewSequences(), "steps of 100 / 40 / 5 new tokens");
}

void ExpectKeptDecodeVoteAgrees(const TpBackend& backend, Precision precision) {
  ExpectScriptAgrees(backend, precision, KeptDecodeAfterRefusedStep(),
                     "a kept decode after a refused step");
}

}  // namespace llmint8::model::testing
