// The worker's memory report (Info) and its --memory-limit, enforced by the shard's own
// accounting: an in-process WorkerService holding a one-rank group (no communicator peers).
#include <cstdint>
#include <string>

#include "absl/strings/strip.h"
#include "common/file.h"
#include "gtest/gtest.h"
#include "llmint8/v1/worker.pb.h"
#include "model/shard_model.h"
#include "worker/usable_memory.h"
#include "worker/worker_service.h"

namespace llmint8::worker {
namespace {

constexpr char kModel[] =
    "synthetic:125m,layers=2,hidden=256,heads=8,ffn=1024,vocab=1024,positions=128";

v1::LoadShardRequest OneRank(const std::string& dtype) {
  v1::LoadShardRequest req;
  req.set_epoch(1);
  req.set_rank(0);
  req.set_world_size(1);
  req.set_model(kModel);
  req.set_dtype(dtype);
  req.set_threshold(6.0f);
  req.set_device("cpu");
  return req;
}

int64_t LoadedBytes(const std::string& dtype) {
  WorkerService service(WorkerOptions{});
  const v1::LoadShardRequest req = OneRank(dtype);
  v1::LoadShardResponse resp;
  grpc::Status s = service.LoadShard(nullptr, &req, &resp);
  EXPECT_TRUE(s.ok()) << s.error_message();
  return resp.total_bytes();
}

TEST(UsableMemoryTest, ParsesMemAvailable) {
  EXPECT_EQ(*ParseMemAvailableBytes("MemTotal:  100 kB\nMemAvailable:   2048 kB\n"), 2048 * 1024);
  EXPECT_EQ(ParseMemAvailableBytes("MemTotal: 1 kB\n").status().code(),
            absl::StatusCode::kNotFound);
  EXPECT_EQ(ParseMemAvailableBytes("MemAvailable: lots\n").status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(UsableMemoryTest, LimitWinsElseMemAvailableOnCpuElseUnknown) {
  EXPECT_EQ(UsableMemoryBytes("cpu", -1, 12345, 999), 12345);
  EXPECT_EQ(UsableMemoryBytes("cuda", 0, 12345, 0), 12345);
  // Without a usable GPU the device's free memory is unknown (0); with one it is what it has free.
  if (model::CudaFreeMemoryBytes(0).ok()) {
    EXPECT_GT(UsableMemoryBytes("cuda", 0, 0, 0), 0);
  } else {
    EXPECT_EQ(UsableMemoryBytes("cuda", 0, 0, 0), 0);
  }
  absl::StatusOr<int64_t> available = ReadMemAvailableBytes();
  ASSERT_TRUE(available.ok()) << available.status();
  // MemAvailable moves while other processes run; the held bytes are added on top.
  const int64_t reported = UsableMemoryBytes("cpu", -1, 0, int64_t{1} << 40);
  EXPECT_GT(reported, int64_t{1} << 40);
  EXPECT_LT(reported, (int64_t{1} << 40) + 4 * *available + (int64_t{1} << 30));
}

// The pool names what the unlimited figure is the free memory of: the host's boot id (the
// same for every process and container on it), the GPU's UUID; nothing with a limit.
// A rank shares the free memory with its pool's other ranks, not what it holds itself: 24 GiB
// free beside its own 20 GiB of weights, two ranks on the host: 10.8 GiB of the free memory and
// all 20 of its own (sharing both would leave it 19.8 GiB, less than its weights).
TEST(UsableMemoryTest, ARankSharesTheFreeMemoryNotWhatItHolds) {
  constexpr int64_t kGiB = int64_t{1} << 30;
  EXPECT_EQ(SharedUsableBytes(44 * kGiB, 20 * kGiB, 2), 24 * kGiB / 10 * 9 / 2 + 20 * kGiB);
  EXPECT_EQ(SharedUsableBytes(44 * kGiB, 20 * kGiB, 1), 24 * kGiB / 10 * 9 + 20 * kGiB);
  EXPECT_EQ(SharedUsableBytes(20 * kGiB, 20 * kGiB, 4), 20 * kGiB) << "nothing free";
  EXPECT_EQ(SharedUsableBytes(10 * kGiB, 0, 0), 9 * kGiB) << "no sharer count: alone";
}

TEST(UsableMemoryTest, PoolIsTheHostOrTheGpuAndNothingWithALimit) {
  EXPECT_EQ(MemoryPool("cpu", -1, 5), "");
  EXPECT_EQ(MemoryPool("cuda", 0, 5), "");
  absl::StatusOr<std::string> boot_id = ReadFileToString("/proc/sys/kernel/random/boot_id");
  ASSERT_TRUE(boot_id.ok()) << boot_id.status();
  EXPECT_EQ(MemoryPool("cpu", -1, 0), "host:" + std::string(absl::StripAsciiWhitespace(*boot_id)));
  EXPECT_EQ(MemoryPool("cpu", -1, 0).size(), 5u + 36u) << "a boot id is a 36-character UUID";
  EXPECT_EQ(MemoryPool("cuda", -1, 0), "") << "no --cuda_device: the rank's device, not known";
  absl::StatusOr<std::string> uuid = model::CudaDeviceUuid(0);
  if (uuid.ok()) {
    EXPECT_EQ(MemoryPool("cuda", 0, 0), "gpu:" + *uuid);
    EXPECT_EQ(uuid->rfind("GPU-", 0), 0u) << *uuid;
    EXPECT_EQ(uuid->size(), 4u + 36u) << *uuid;
  } else {
    EXPECT_EQ(MemoryPool("cuda", 0, 0), "") << "no GPU: cannot be told";
  }
}

TEST(WorkerMemoryTest, InfoReportsTheLimit) {
  WorkerOptions options;
  options.memory_limit_bytes = 3 << 20;
  WorkerService service(options);
  v1::WorkerInfoRequest req;
  v1::WorkerInfoResponse resp;
  ASSERT_TRUE(service.Info(nullptr, &req, &resp).ok());
  EXPECT_EQ(resp.memory_bytes(), 3 << 20);
  EXPECT_EQ(resp.memory_pool(), "") << "its own limit is shared with nobody";

  WorkerService unlimited{WorkerOptions{}};
  ASSERT_TRUE(unlimited.Info(nullptr, &req, &resp).ok());
  EXPECT_EQ(resp.memory_pool(), MemoryPool("cpu", -1, 0));
  EXPECT_EQ(resp.memory_pool().rfind("host:", 0), 0u) << resp.memory_pool();
  EXPECT_EQ(resp.held_bytes(), 0);
  // Loaded, it reports what its shard holds (the coordinator counts it once per pool).
  const v1::LoadShardRequest load = OneRank("int8");
  v1::LoadShardResponse loaded;
  ASSERT_TRUE(unlimited.LoadShard(nullptr, &load, &loaded).ok());
  ASSERT_TRUE(unlimited.Info(nullptr, &req, &resp).ok());
  EXPECT_EQ(resp.held_bytes(), loaded.total_bytes());
}

// Without a limit a rank claims its part of the free memory it finds: 1 / memory_sharers (the
// coordinator's count of ranks on its host or GPU), else 1 / world_size. Four sharers leave
// about a quarter of one's KV capacity (MemAvailable moves between the loads: within 2x).
TEST(WorkerMemoryTest, KvCapacityIsThePartOfTheSharedMemory) {
  auto capacity = [](int sharers) {
    WorkerService service(WorkerOptions{});
    v1::LoadShardRequest req = OneRank("int8");
    req.set_memory_sharers(sharers);
    v1::LoadShardResponse resp;
    grpc::Status s = service.LoadShard(nullptr, &req, &resp);
    EXPECT_TRUE(s.ok()) << s.error_message();
    EXPECT_TRUE(resp.has_kv_capacity_tokens());
    return resp.kv_capacity_tokens();
  };
  const int64_t alone = capacity(1);
  const int64_t unknown = capacity(0);  // world_size 1: alone too
  const int64_t quarter = capacity(4);
  ASSERT_GT(alone, 1000);
  EXPECT_GT(unknown, alone / 2);
  EXPECT_LT(unknown, alone * 2);
  EXPECT_GT(quarter, alone / 8);
  EXPECT_LT(quarter, alone / 2);
}

TEST(WorkerMemoryTest, LoadBeyondTheLimitIsResourceExhaustedWithNumbers) {
  const int64_t fp16 = LoadedBytes("fp16");
  const int64_t int8 = LoadedBytes("int8");
  ASSERT_GT(fp16, 0);
  EXPECT_LT(int8, fp16 * 6 / 10);  // linears at 1 byte instead of 2 dominate

  // A cap between the two: int8 loads, fp16 does not.
  WorkerOptions options;
  options.memory_limit_bytes = (int8 + fp16) / 2;
  WorkerService service(options);
  v1::LoadShardRequest req = OneRank("fp16");
  v1::LoadShardResponse resp;
  grpc::Status s = service.LoadShard(nullptr, &req, &resp);
  ASSERT_EQ(s.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED) << s.error_message();
  EXPECT_NE(s.error_message().find("--memory-limit=" + std::to_string(options.memory_limit_bytes)),
            std::string::npos)
      << s.error_message();
  EXPECT_NE(s.error_message().find("needs"), std::string::npos) << s.error_message();
  v1::WorkerInfoResponse info;
  v1::WorkerInfoRequest info_req;
  ASSERT_TRUE(service.Info(nullptr, &info_req, &info).ok());
  EXPECT_FALSE(info.loaded());

  req = OneRank("int8");
  s = service.LoadShard(nullptr, &req, &resp);
  ASSERT_TRUE(s.ok()) << s.error_message();
  EXPECT_EQ(resp.total_bytes(), int8);
  EXPECT_LE(resp.total_bytes(), options.memory_limit_bytes);
}

TEST(WorkerMemoryTest, KvCacheCountsAgainstTheLimit) {
  // Room for the weights and 64 KiB: a 128-token prompt's KV cache (2 layers x K and V x 256
  // fp16 per token = 2 KiB per token, 256 KiB) does not fit; the worker keeps its shard.
  WorkerOptions options;
  options.memory_limit_bytes = LoadedBytes("int8") + 64 * 1024;
  WorkerService service(options);
  const v1::LoadShardRequest req = OneRank("int8");
  v1::LoadShardResponse resp;
  ASSERT_TRUE(service.LoadShard(nullptr, &req, &resp).ok());
  v1::StepRequest step;
  step.set_epoch(1);
  v1::SeqStep* seq = step.add_seqs();
  seq->set_seq_id(1);
  for (int i = 0; i < 128; ++i) seq->add_token_ids(i + 4);
  v1::StepResponse out;
  grpc::Status s = service.Step(nullptr, &step, &out);
  ASSERT_EQ(s.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED) << s.error_message();
  EXPECT_NE(s.error_message().find("KV cache"), std::string::npos) << s.error_message();
  v1::WorkerInfoRequest info_req;
  v1::WorkerInfoResponse info;
  ASSERT_TRUE(service.Info(nullptr, &info_req, &info).ok());
  EXPECT_TRUE(info.loaded());
  v1::StatsRequest stats_req;
  v1::StatsResponse stats;
  ASSERT_TRUE(service.Stats(nullptr, &stats_req, &stats).ok());
  EXPECT_EQ(stats.kv_cache_bytes(), 0);
  EXPECT_LE(stats.total_bytes(), options.memory_limit_bytes);
}

// A sequence's sampling lists stay with it (rank 0 keeps them, uncounted by the limit): a step
// whose lists are longer than the coordinator ever sends is refused (INVALID_ARGUMENT) before
// the forward, and the group serves the next one. A step with 60 M banned ids used to make
// rank 0 hold ~0.5 GB for its sequence.
TEST(WorkerMemoryTest, OversizedSamplingListsAreRefusedAndTheGroupKept) {
  WorkerService service(WorkerOptions{});
  const v1::LoadShardRequest req = OneRank("fp16");
  v1::LoadShardResponse resp;
  ASSERT_TRUE(service.LoadShard(nullptr, &req, &resp).ok());
  auto step_with = [&](const v1::SamplingParams& sampling) {
    v1::StepRequest step;
    step.set_epoch(1);
    v1::SeqStep* seq = step.add_seqs();
    seq->set_seq_id(1);
    seq->add_token_ids(7);
    *seq->mutable_sampling() = sampling;
    v1::StepResponse out;
    return service.Step(nullptr, &step, &out);
  };
  v1::SamplingParams biased;
  for (int i = 0; i < 301; ++i) {
    v1::TokenBias* b = biased.add_logit_bias();
    b->set_token_id(i);
    b->set_bias(1.0f);
  }
  v1::SamplingParams banned;
  banned.set_min_tokens(5);
  for (int i = 0; i < 130; ++i) banned.add_min_tokens_banned(i);
  for (const v1::SamplingParams& bad : {biased, banned}) {
    const grpc::Status s = step_with(bad);
    EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << bad.ShortDebugString();
    EXPECT_NE(s.error_message().find("sequence 1"), std::string::npos) << s.error_message();
  }
  // The limits themselves pass: 300 biases, 129 banned ids (config.json's eos id, 64 of
  // generation_config.json's, 64 stop ids).
  biased.mutable_logit_bias()->RemoveLast();
  banned.mutable_min_tokens_banned()->RemoveLast();
  banned.mutable_logit_bias()->CopyFrom(biased.logit_bias());
  const grpc::Status ok = step_with(banned);
  EXPECT_TRUE(ok.ok()) << ok.error_message();
}

// What the shard holds grows with its KV cache: Info's held_bytes follows it after steps and
// releases, as Stats' total does (a re-forming coordinator plans with it).
TEST(WorkerMemoryTest, HeldBytesFollowTheShardAfterStepsAndReleases) {
  WorkerService service(WorkerOptions{});
  v1::LoadShardRequest load = OneRank("fp16");
  load.set_max_batch(3);
  load.set_max_step_tokens(180);  // the step below: 3 prompts of 60 tokens
  v1::LoadShardResponse loaded;
  ASSERT_TRUE(service.LoadShard(nullptr, &load, &loaded).ok());
  auto held = [&] {
    v1::WorkerInfoRequest req;
    req.set_epoch(load.epoch());
    v1::WorkerInfoResponse resp;
    EXPECT_TRUE(service.Info(nullptr, &req, &resp).ok());
    return resp.held_bytes();
  };
  auto total = [&] {
    v1::StatsRequest req;
    v1::StatsResponse resp;
    EXPECT_TRUE(service.Stats(nullptr, &req, &resp).ok());
    return resp.total_bytes();
  };
  EXPECT_EQ(held(), total());
  const int64_t at_load = held();
  v1::StepRequest step;
  step.set_epoch(load.epoch());
  for (uint64_t id = 1; id <= 3; ++id) {
    v1::SeqStep* seq = step.add_seqs();
    seq->set_seq_id(id);
    for (int t = 0; t < 60; ++t) seq->add_token_ids(5 + t);
    seq->set_prefill_only(true);
  }
  v1::StepResponse stepped;
  ASSERT_TRUE(service.Step(nullptr, &step, &stepped).ok());
  EXPECT_GT(held(), at_load);
  EXPECT_EQ(held(), total());
  v1::ReleaseRequest release;
  release.set_epoch(load.epoch());
  release.add_seq_ids(1);
  release.add_seq_ids(2);
  v1::ReleaseResponse released;
  ASSERT_TRUE(service.Release(nullptr, &release, &released).ok());
  EXPECT_EQ(held(), total());
}

}  // namespace
}  // namespace llmint8::worker
