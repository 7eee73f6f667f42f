// The plan against the worker it plans for: a CPU worker whose memory is exactly what the
// coordinator's plan asks of it (ChooseGroup) reports KV room for the plan's reserve once
// loaded, and serves it, after its activations grew to the largest step the coordinator may
// send (a scored prompt chunk: a logits row per position).
#include <cstdint>
#include <memory>
#include <vector>

#include "coordinator/group_decision.h"
#include "gtest/gtest.h"
#include "model/config.h"
#include "model/forward_test_util.h"
#include "model/shard_model.h"
#include "model/synthetic.h"

namespace llmint8::coordinator {
namespace {

TEST(PlannerWorkerTest, AWorkerWithThePlannedMemoryHoldsTheReserveAfterTheLargestStep) {
  // The scale-out tests' shape (8 heads, FFN 1024), with 256 positions.
  const model::OptConfig c = model::testing::SmallConfig(256, 8, 2, 1024, 256);
  const int64_t context = c.max_position_embeddings;
  // The coordinator's defaults (coordinator_server.cc): --max_batch 32, --score_chunk 256
  // (at most the context), no speculation; the step envelope it loads workers with.
  const int64_t max_batch = 32;
  const int64_t score_chunk = 256;
  const int64_t step_tokens = context + score_chunk + max_batch;
  const int64_t step_rows = max_batch + score_chunk;
  for (const char* dtype : {"fp16", "int8"}) {
    SCOPED_TRACE(dtype);
    GroupRequest request;
    request.policy = GroupPolicy::kSmallest;
    request.dtype = dtype;
    request.device = "cpu";
    request.reserve_sequences = 1;
    request.max_context = context;
    request.max_step_tokens = step_tokens;
    request.max_step_rows = step_rows;
    request.max_batch = max_batch;
    // One worker that reports far more than it needs: the plan says how much it needs.
    const int64_t huge = int64_t{1} << 40;
    const absl::StatusOr<GroupChoice> choice = ChooseGroup(c, request, std::vector<int64_t>{huge});
    ASSERT_TRUE(choice.ok()) << choice.status();
    ASSERT_EQ(choice->members.size(), 1u);
    const int64_t limit = choice->bytes_per_worker;
    // A worker given exactly that is chosen too.
    const absl::StatusOr<GroupChoice> exact = ChooseGroup(c, request, std::vector<int64_t>{limit});
    ASSERT_TRUE(exact.ok()) << exact.status();

    auto source = model::MakeSyntheticSource(c);
    ASSERT_TRUE(source.ok()) << source.status();
    model::ShardOptions options;
    options.precision =
        std::string(dtype) == "int8" ? model::Precision::kInt8 : model::Precision::kF16;
    options.memory_limit_bytes = limit;
    options.max_context = context;
    absl::StatusOr<std::unique_ptr<model::ShardModel>> worker =
        model::ShardModel::Load(c, **source, 1, 0, nullptr, options);
    ASSERT_TRUE(worker.ok()) << worker.status();
    model::ShardModel& m = **worker;
    EXPECT_GE(m.KvCapacityTokens(limit, step_tokens, step_rows, max_batch), context)
        << "the worker's report (LoadShardResponse.kv_capacity_tokens)";

    // The largest step's activations first: a scored chunk, every position's logits.
    const std::vector<int32_t> scored(static_cast<size_t>(score_chunk), 5);
    model::ShardModel::SequenceInput chunk{1, scored, /*all_positions=*/true};
    absl::StatusOr<model::Logits> first = m.Step({&chunk, 1});
    ASSERT_TRUE(first.ok()) << first.status();
    ASSERT_TRUE(m.Release(1).ok());
    // Then the reserve: one sequence of the whole context.
    const std::vector<int32_t> prompt(static_cast<size_t>(context), 7);
    model::ShardModel::SequenceInput whole{2, prompt};
    absl::StatusOr<model::Logits> served = m.Step({&whole, 1});
    EXPECT_TRUE(served.ok()) << served.status() << "; " << m.memory().DebugString();
    EXPECT_LE(m.memory().total(), limit);
  }
}

}  // namespace
}  // namespace llmint8::coordinator
