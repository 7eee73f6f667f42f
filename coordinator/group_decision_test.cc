#include "coordinator/group_decision.h"

#include <cstdint>
#include <limits>
#include <string>
#include <vector>

#include "coordinator/planner.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "model/config.h"

namespace llmint8::coordinator {
namespace {

// The scale-out tests' synthetic shape: 8 heads, FFN 1024 (valid TP 1, 2, 4, 8).
model::OptConfig SmallConfig() {
  model::OptConfig c = *model::OptPreset("125m");
  c.name = "small";
  c.num_hidden_layers = 2;
  c.hidden_size = 256;
  c.word_embed_proj_dim = 256;
  c.num_attention_heads = 8;
  c.ffn_dim = 1024;
  c.vocab_size = 1024;
  c.max_position_embeddings = 128;
  return c;
}

int64_t Need(const model::OptConfig& c, WeightDType d, int tp) {
  return BytesPerGpu(c, d, tp, Reserve::Tokens(1, c.max_position_embeddings),
                     PlanOptions{.runtime_overhead_bytes = 0, .cpu = true})
      ->Total();
}

// A cap where fp16 needs 4 workers and int8 fits in 2 (not 1).
int64_t Cap(const model::OptConfig& c) {
  return std::max(Need(c, WeightDType::kF16, 4), Need(c, WeightDType::kInt8, 2));
}

// Ranks on one GPU (or host) each count for their part of its free memory; a worker with its
// own limit (empty pool) shares with nobody, even with another empty one.
TEST(GroupDecisionTest, MemorySharersCountsTheWorkersOfEachPool) {
  const std::vector<std::string> pools = {"gpu:GPU-a", "gpu:GPU-a", "", "host:b", "gpu:GPU-a", ""};
  EXPECT_THAT(MemorySharers(pools), ::testing::ElementsAre(3, 3, 1, 1, 3, 1));
  EXPECT_TRUE(MemorySharers({}).empty());
}

// Two ranks on one GPU of F bytes free before they load W each: at first each reports F
// (free, holding nothing) and plans with F / 2; once loaded each reports F - 2W free plus
// its own W, and the pool is still F, so a group that broke re-plans as it first did (each
// member's shard counted once, not against every member). Unknown (0) stays unknown; a
// worker with no pool keeps its report.
TEST(GroupDecisionTest, MemoryPoolSharesCountTheHeldBytesOnce) {
  constexpr int64_t F = 1000, W = 300;
  const std::vector<std::string> pools = {"gpu:a", "gpu:a", ""};
  EXPECT_THAT(
      MemoryPoolShares(std::vector<int64_t>{F, F, 77}, std::vector<int64_t>{0, 0, 5}, pools),
      ::testing::ElementsAre(F / 2, F / 2, 77));
  EXPECT_THAT(MemoryPoolShares(std::vector<int64_t>{F - W, F - W, 77},
                               std::vector<int64_t>{W, W, 5}, pools),
              ::testing::ElementsAre(F / 2, F / 2, 77));
  // Read at different moments: the larger free figure is the pool's.
  EXPECT_THAT(MemoryPoolShares(std::vector<int64_t>{F - W, F - W - 10, 77},
                               std::vector<int64_t>{W, W, 5}, pools),
              ::testing::ElementsAre(F / 2, F / 2, 77));
  EXPECT_THAT(
      MemoryPoolShares(std::vector<int64_t>{0, F, 77}, std::vector<int64_t>{0, 0, 0}, pools),
      ::testing::ElementsAre(0, F / 2, 77));
}

// Bogus reports (a worker's own numbers) neither overflow nor go negative.
TEST(GroupDecisionTest, MemoryPoolSharesOfExtremeReportsStayInRange) {
  constexpr int64_t kMax = std::numeric_limits<int64_t>::max();
  const std::vector<std::string> pools = {"host:a", "host:a"};
  const std::vector<int64_t> shares =
      MemoryPoolShares(std::vector<int64_t>{kMax, kMax}, std::vector<int64_t>{kMax, -5}, pools);
  for (const int64_t s : shares) {
    EXPECT_GT(s, 0);
    EXPECT_LE(s, int64_t{1} << 61);
  }
}

TEST(GroupDecisionTest, CapSeparatesFp16FromInt8) {
  const model::OptConfig c = SmallConfig();
  const int64_t cap = Cap(c);
  EXPECT_LT(cap, Need(c, WeightDType::kF16, 2));
  EXPECT_LT(cap, Need(c, WeightDType::kInt8, 1));
}

TEST(GroupDecisionTest, SmallestPicksTheFewestWorkersThatFit) {
  const model::OptConfig c = SmallConfig();
  const std::vector<int64_t> reports(4, Cap(c));
  GroupRequest request;
  request.policy = GroupPolicy::kSmallest;
  request.dtype = "int8";
  absl::StatusOr<GroupChoice> int8 = ChooseGroup(c, request, reports);
  ASSERT_TRUE(int8.ok()) << int8.status();
  EXPECT_TRUE(int8->planned);
  EXPECT_EQ(int8->members, (std::vector<int>{0, 1}));
  EXPECT_EQ(int8->bytes_per_worker, Need(c, WeightDType::kInt8, 2));

  request.dtype = "fp16";
  absl::StatusOr<GroupChoice> fp16 = ChooseGroup(c, request, reports);
  ASSERT_TRUE(fp16.ok()) << fp16.status();
  EXPECT_EQ(fp16->members, (std::vector<int>{0, 1, 2, 3}));
}

TEST(GroupDecisionTest, SmallestPrefersTheLargestWorkers) {
  const model::OptConfig c = SmallConfig();
  const int64_t cap = Cap(c);
  GroupRequest request;
  request.policy = GroupPolicy::kSmallest;
  request.dtype = "int8";
  absl::StatusOr<GroupChoice> choice =
      ChooseGroup(c, request, std::vector<int64_t>{cap / 2, cap, cap / 2, cap});
  ASSERT_TRUE(choice.ok()) << choice.status();
  EXPECT_EQ(choice->members, (std::vector<int>{1, 3}));
}

TEST(GroupDecisionTest, RefusesFp16OnHalfTheWorkersNamingTheCounts) {
  const model::OptConfig c = SmallConfig();
  const std::vector<int64_t> reports(2, Cap(c));
  for (GroupPolicy policy : {GroupPolicy::kAllWorkers, GroupPolicy::kSmallest}) {
    GroupRequest request;
    request.policy = policy;
    request.dtype = "fp16";
    absl::StatusOr<GroupChoice> choice = ChooseGroup(c, request, reports);
    ASSERT_EQ(choice.status().code(), absl::StatusCode::kFailedPrecondition);
    EXPECT_NE(choice.status().message().find("fp16 needs 4 workers with"), std::string::npos)
        << choice.status();
    EXPECT_NE(choice.status().message().find("2 joined; int8 fits in 2"), std::string::npos)
        << choice.status();
    EXPECT_NE(choice.status().message().find("or serve int8"), std::string::npos)
        << choice.status();
  }
  // int8 on workers too small for it: the advice does not say to serve what it serves.
  GroupRequest request;
  request.dtype = "int8";
  absl::StatusOr<GroupChoice> choice = ChooseGroup(c, request, std::vector<int64_t>(2, Cap(c) / 8));
  ASSERT_EQ(choice.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(choice.status().message().find("more memory"), std::string::npos) << choice.status();
  EXPECT_EQ(choice.status().message().find("serve int8"), std::string::npos) << choice.status();
}

TEST(GroupDecisionTest, AllWorkersUsesEveryWorkerAndChecksEachOne) {
  const model::OptConfig c = SmallConfig();
  const int64_t cap = Cap(c);
  GroupRequest request;
  request.dtype = "int8";
  absl::StatusOr<GroupChoice> choice = ChooseGroup(c, request, std::vector<int64_t>(4, cap));
  ASSERT_TRUE(choice.ok()) << choice.status();
  EXPECT_EQ(choice->members, (std::vector<int>{0, 1, 2, 3}));
  EXPECT_EQ(choice->bytes_per_worker, Need(c, WeightDType::kInt8, 4));

  // Worker 2 is too small for its TP=4 shard, though two large ones would do.
  const int64_t tiny = Need(c, WeightDType::kInt8, 4) - 1;
  choice = ChooseGroup(c, request, std::vector<int64_t>{cap, cap, tiny, cap});
  ASSERT_EQ(choice.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(choice.status().message().find("worker 2 has"), std::string::npos) << choice.status();
  EXPECT_NE(choice.status().message().find("--group=smallest"), std::string::npos)
      << choice.status();
}

TEST(GroupDecisionTest, CudaWorkersCountTheRuntimeOverhead) {
  const model::OptConfig c = SmallConfig();
  GroupRequest request;
  request.dtype = "int8";
  request.device = "cuda";
  const std::vector<int64_t> reports(4, Cap(c));
  EXPECT_EQ(ChooseGroup(c, request, reports).status().code(),
            absl::StatusCode::kFailedPrecondition);
  const std::vector<int64_t> gpus(4, Cap(c) + kRuntimeOverheadBytes);
  EXPECT_TRUE(ChooseGroup(c, request, gpus).ok());
}

TEST(GroupDecisionTest, Fp32AndUnknownMemoryAreNotPlanned) {
  const model::OptConfig c = SmallConfig();
  GroupRequest request;
  request.policy = GroupPolicy::kSmallest;
  request.dtype = "fp32";
  absl::StatusOr<GroupChoice> choice = ChooseGroup(c, request, std::vector<int64_t>{1, 1});
  ASSERT_TRUE(choice.ok()) << choice.status();
  EXPECT_FALSE(choice->planned);
  EXPECT_EQ(choice->members, (std::vector<int>{0, 1}));

  request.dtype = "int8";
  choice = ChooseGroup(c, request, std::vector<int64_t>{Cap(c), 0});
  ASSERT_TRUE(choice.ok()) << choice.status();
  EXPECT_FALSE(choice->planned);
  EXPECT_EQ(choice->members, (std::vector<int>{0, 1}));
}

// Not planned, --group=smallest takes the most workers that split the model (the coordinator
// checked only that some degree fits within them): 3 workers of an 8-head model form TP 2, not
// a group of 3 every load would refuse; --group=all takes them all (a count it checked).
TEST(GroupDecisionTest, UnplannedSmallestTakesTheMostWorkersThatSplitTheModel) {
  const model::OptConfig c = SmallConfig();
  GroupRequest request;
  request.policy = GroupPolicy::kSmallest;
  request.dtype = "fp32";
  absl::StatusOr<GroupChoice> choice = ChooseGroup(c, request, std::vector<int64_t>{1, 1, 1});
  ASSERT_TRUE(choice.ok()) << choice.status();
  EXPECT_FALSE(choice->planned);
  EXPECT_EQ(choice->members, (std::vector<int>{0, 1}));
  EXPECT_EQ(choice->summary,
            "fp32 is not planned; 2 of the 3 workers join unplanned (the most that split the "
            "model)");
  request.dtype = "int8";
  choice = ChooseGroup(c, request, std::vector<int64_t>{Cap(c), 0, Cap(c), Cap(c), Cap(c)});
  ASSERT_TRUE(choice.ok()) << choice.status();
  EXPECT_EQ(choice->members, (std::vector<int>{0, 1, 2, 3}));
  request.policy = GroupPolicy::kAllWorkers;
  request.dtype = "fp32";
  choice = ChooseGroup(c, request, std::vector<int64_t>{1, 1, 1});
  ASSERT_TRUE(choice.ok()) << choice.status();
  EXPECT_EQ(choice->members, (std::vector<int>{0, 1, 2}));
  // A 6-head model on 5 workers: TP 3.
  model::OptConfig six = c;
  six.hidden_size = six.word_embed_proj_dim = 384;
  six.num_attention_heads = 6;
  six.ffn_dim = 1026;  // valid degrees 1, 2, 3, 6
  request.policy = GroupPolicy::kSmallest;
  choice = ChooseGroup(six, request, std::vector<int64_t>{1, 1, 1, 1, 1});
  ASSERT_TRUE(choice.ok()) << choice.status();
  EXPECT_EQ(choice->members, (std::vector<int>{0, 1, 2}));
}

TEST(GroupDecisionTest, BadInput) {
  const model::OptConfig c = SmallConfig();
  GroupRequest request;
  EXPECT_EQ(ChooseGroup(c, request, {}).status().code(), absl::StatusCode::kInvalidArgument);
  request.dtype = "int4";
  EXPECT_EQ(ChooseGroup(c, request, std::vector<int64_t>{Cap(c)}).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ParseGroupPolicy("most").status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(*ParseGroupPolicy("smallest"), GroupPolicy::kSmallest);
  EXPECT_EQ(GroupPolicyName(GroupPolicy::kAllWorkers), "all");
}

}  // namespace
}  // namespace llmint8::coordinator
