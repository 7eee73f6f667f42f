// Two ranks of one group (threads, Gloo on loopback) whose memory limits differ: a step that
// only rank 0 lacks room for is refused by both ranks at once, with ResourceExhausted (the
// vote of model/shard_backend.h AgreeOnRoom), instead of rank 1 waiting in its first
// collective for a rank that never comes until the communicator's timeout breaks the group.
// Both then serve a step that fits, with the same logits.
#include <chrono>
#include <memory>
#include <thread>
#include <vector>

#include "comm/in_memory_rendezvous.h"
#include "comm/make_communicator.h"
#include "gtest/gtest.h"
#include "model/forward_test_util.h"
#include "model/shard_model.h"
#include "model/synthetic.h"

namespace llmint8::model {
namespace {

struct RankResult {
  absl::Status load = absl::UnknownError("not run");
  absl::Status big = absl::UnknownError("not run");
  double big_seconds = -1;
  absl::StatusOr<Logits> small = absl::UnknownError("not run");
};

TEST(ShardModelTpMemoryTest, RanksRefuseAStepAlikeWhenOneLacksRoom) {
  const OptConfig c = testing::SmallConfig(128, 4, 2, 512, 128);
  auto src = MakeSyntheticSource(c, {});
  ASSERT_TRUE(src.ok()) << src.status();
  // Long enough that the communicator's timeout would show (the test asserts far less).
  constexpr absl::Duration kCommTimeout = absl::Seconds(30);
  const std::vector<int32_t> longp(100, 7), shortp(5, 7);

  comm::InMemoryRendezvous rdzv;
  RankResult results[2];
  std::vector<std::thread> ranks;
  for (int rank = 0; rank < 2; ++rank) {
    ranks.emplace_back([&, rank] {
      RankResult& r = results[rank];
      comm::CommOptions co;
      co.rank = rank;
      co.world_size = 2;
      co.rendezvous = &rdzv;
      co.key_prefix = "tp_memory_test/";
      co.timeout = kCommTimeout;
      auto comm = comm::MakeCommunicator("gloo", co);
      if (!comm.ok()) {
        r.load = comm.status();
        return;
      }
      ShardOptions o;
      o.precision = Precision::kInt8;
      if (rank == 0) {
        // The shard's own size plus 64 positions of KV and 200 KiB: a 5-token step fits, a
        // 100-token one does not (~0.6 MB of activations). Rank 1 has no limit.
        auto probe = ShardModel::Load(c, **src, 2, rank, comm->get(), o);
        if (!probe.ok()) {
          r.load = probe.status();
          return;
        }
        const int64_t kv_per_pos = c.num_hidden_layers * 2 * (c.hidden_size / 2) * 4;
        o.memory_limit_bytes = (*probe)->memory().total() + 64 * kv_per_pos + 200 * 1024;
      }
      auto m = ShardModel::Load(c, **src, 2, rank, comm->get(), o);
      r.load = m.status();
      if (!m.ok()) return;
      ShardModel::SequenceInput big{1, longp}, small{2, shortp};
      const auto start = std::chrono::steady_clock::now();
      r.big = (*m)->Step({&big, 1}).status();
      r.big_seconds =
          std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
      r.small = (*m)->Step({&small, 1});
    });
  }
  for (std::thread& t : ranks) t.join();

  for (int rank = 0; rank < 2; ++rank) {
    const RankResult& r = results[rank];
    ASSERT_TRUE(r.load.ok()) << "rank " << rank << ": " << r.load;
    EXPECT_EQ(r.big.code(), absl::StatusCode::kResourceExhausted)
        << "rank " << rank << ": " << r.big;
    EXPECT_LT(r.big_seconds, 5.0) << "rank " << rank << " waited for its peer";
    ASSERT_TRUE(r.small.ok()) << "rank " << rank << ": " << r.small.status();
  }
  EXPECT_NE(results[0].big.message().find("memory_limit_bytes"), std::string::npos)
      << results[0].big;
  EXPECT_NE(results[1].big.message().find("other rank"), std::string::npos) << results[1].big;
  EXPECT_EQ(results[0].small->values, results[1].small->values);
}

}  // namespace
}  // namespace llmint8::model
