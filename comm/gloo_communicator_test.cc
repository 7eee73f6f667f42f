// Multi-process tests of the Gloo backend on loopback: each rank is a forked child process
// that forms the group through a FileRendezvous in a fresh temp directory.
#include <stdlib.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <functional>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "comm/file_rendezvous.h"
#include "comm/fork_ranks.h"
#include "comm/make_communicator.h"
#include "comm/testing/temp_dir.h"
#include "common/status_macros.h"
#include "gtest/gtest.h"

namespace llmint8::comm {
namespace {

using testing::TempDir;

// Generous bound on a whole test's processes; tests normally take well under a second.
constexpr absl::Duration kHangLimit = absl::Seconds(60);

CommOptions GroupOptions(int rank, int world_size, Rendezvous& rdzv, absl::Duration timeout) {
  CommOptions options;
  options.rank = rank;
  options.world_size = world_size;
  options.rendezvous = &rdzv;
  options.key_prefix = "test/";
  options.timeout = timeout;
  options.gloo_hostname = "127.0.0.1";
  return options;
}

absl::Status Mismatch(int rank, const std::string& what, size_t i, double got, double want) {
  return absl::InternalError(
      absl::StrCat("rank ", rank, ": ", what, "[", i, "] = ", got, ", want ", want));
}

// Every collective once, checked exactly. Values are integers small enough that fp32 and fp16
// sums are exact in any order.
absl::Status RunAllCollectives(int rank, int world, const std::string& dir) {
  FileRendezvous rdzv(dir);
  ASSIGN_OR_RETURN(std::unique_ptr<Communicator> comm,
                   MakeCommunicator("gloo", GroupOptions(rank, world, rdzv, absl::Seconds(30))));
  if (comm->rank() != rank || comm->size() != world || comm->backend() != "gloo" ||
      comm->on_device()) {
    return absl::InternalError("communicator reports the wrong identity");
  }
  const int64_t rank_sum = static_cast<int64_t>(world) * (world + 1) / 2;  // sum of (r + 1)

  // fp32 all-reduce, larger than Gloo's 1 MiB segment so the ring pipelines several segments.
  constexpr size_t kCount = 300'001;
  std::vector<float> data(kCount);
  for (size_t i = 0; i < kCount; ++i) data[i] = static_cast<float>((rank + 1) * (i % 1000 + 1));
  RETURN_IF_ERROR(comm->AllReduceSum(std::span<float>(data)));
  for (size_t i = 0; i < kCount; ++i) {
    const double want = static_cast<double>(rank_sum * static_cast<int64_t>(i % 1000 + 1));
    if (data[i] != want) return Mismatch(rank, "allreduce fp32", i, data[i], want);
  }

  // Small fp32 all-reduces (all-gather + local sum up to 64 KiB, the ring above): exact on
  // integers at both sides of the boundary, and bit-identical on every rank for values whose
  // sum rounds (rank 0's result is broadcast and compared).
  for (const size_t count : {size_t{16384}, size_t{16385}}) {
    std::vector<float> small(count);
    for (size_t i = 0; i < count; ++i) small[i] = static_cast<float>((rank + 1) * (i % 97));
    RETURN_IF_ERROR(comm->AllReduceSum(std::span<float>(small)));
    for (size_t i = 0; i < count; ++i) {
      const double want = static_cast<double>(rank_sum * static_cast<int64_t>(i % 97));
      if (small[i] != want) return Mismatch(rank, "allreduce fp32 small", i, small[i], want);
    }
  }
  std::vector<float> rounded(1000);
  for (size_t i = 0; i < rounded.size(); ++i) rounded[i] = 0.1f * (rank + 1) + 1e-3f * i;
  RETURN_IF_ERROR(comm->AllReduceSum(std::span<float>(rounded)));
  std::vector<float> from_root = rounded;
  RETURN_IF_ERROR(comm->Broadcast(
      std::span<uint8_t>(reinterpret_cast<uint8_t*>(from_root.data()), from_root.size() * 4), 0));
  if (std::memcmp(from_root.data(), rounded.data(), rounded.size() * 4) != 0) {
    return absl::InternalError(absl::StrCat("rank ", rank, ": all-reduce differs from rank 0's"));
  }

  // fp16 all-reduce.
  std::vector<Half> halves(257);
  for (size_t i = 0; i < halves.size(); ++i) {
    halves[i] = FloatToHalf(static_cast<float>((rank + 1) * (static_cast<int>(i % 8) - 4)));
  }
  RETURN_IF_ERROR(comm->AllReduceSum(std::span<Half>(halves)));
  for (size_t i = 0; i < halves.size(); ++i) {
    const double want = static_cast<double>(rank_sum * (static_cast<int>(i % 8) - 4));
    if (HalfToFloat(halves[i]) != want) {
      return Mismatch(rank, "allreduce fp16", i, HalfToFloat(halves[i]), want);
    }
  }

  // All-gather, out of place and in place: 4 KB per rank (the sync-mode small exchange) and
  // 80 KB (Gloo's ring).
  for (const size_t kSlice : {size_t{1001}, size_t{20001}}) {
    std::vector<float> in(kSlice);
    for (size_t j = 0; j < kSlice; ++j) in[j] = static_cast<float>(rank * 100000 + j);
    std::vector<float> out(kSlice * world, -1.0f);
    RETURN_IF_ERROR(comm->AllGather(std::span<const float>(in), std::span<float>(out)));
    for (size_t i = 0; i < out.size(); ++i) {
      const double want = static_cast<double>((i / kSlice) * 100000 + i % kSlice);
      if (out[i] != want) return Mismatch(rank, "allgather", i, out[i], want);
    }
    std::vector<float> in_place(kSlice * world, -1.0f);
    std::copy(in.begin(), in.end(), in_place.begin() + rank * kSlice);
    std::span<float> all(in_place);
    RETURN_IF_ERROR(
        comm->AllGather(std::span<const float>(all.subspan(rank * kSlice, kSlice)), all));
    for (size_t i = 0; i < in_place.size(); ++i) {
      if (in_place[i] != out[i]) {
        return Mismatch(rank, "allgather in place", i, in_place[i], out[i]);
      }
    }
  }

  // Broadcast from the last rank (not 0, to catch a hard-wired root).
  const int root = world - 1;
  std::vector<uint8_t> bytes(4099);
  for (size_t i = 0; i < bytes.size(); ++i) {
    bytes[i] = static_cast<uint8_t>(rank == root ? (i * 7 + 3) % 251 : 0xEE);
  }
  RETURN_IF_ERROR(comm->Broadcast(std::span<uint8_t>(bytes), root));
  for (size_t i = 0; i < bytes.size(); ++i) {
    if (bytes[i] != (i * 7 + 3) % 251)
      return Mismatch(rank, "broadcast", i, bytes[i], (i * 7 + 3) % 251);
  }

  // Bad arguments leave the group usable.
  if (comm->Broadcast(std::span<uint8_t>(bytes), world).code() !=
      absl::StatusCode::kInvalidArgument) {
    return absl::InternalError("broadcast from an out-of-range root was not InvalidArgument");
  }
  const std::vector<float> in(1001, 1.0f);
  std::vector<float> short_out(in.size());
  if (comm->AllGather(std::span<const float>(in), std::span<float>(short_out)).code() !=
      absl::StatusCode::kInvalidArgument) {
    return absl::InternalError("allgather into a short output was not InvalidArgument");
  }

  // Barrier: everyone increments a counter before it; after it, everyone sees the total.
  RETURN_IF_ERROR(rdzv.Add("arrived", 1).status());
  RETURN_IF_ERROR(comm->Barrier());
  ASSIGN_OR_RETURN(int64_t arrived, rdzv.Add("arrived", 0));
  if (arrived != world) {
    return absl::InternalError(absl::StrCat("rank ", rank, " left the barrier seeing ", arrived,
                                            " of ", world, " arrivals"));
  }
  return comm->Barrier();
}

class GlooGroupTest : public ::testing::TestWithParam<int> {};

TEST_P(GlooGroupTest, AllCollectivesGiveExactResults) {
  const int world = GetParam();
  TempDir dir("gloo");
  ASSERT_FALSE(dir.path().empty());
  std::vector<RankOutcome> outcomes = ForkRanks(
      world, [&](int rank) { return RunAllCollectives(rank, world, dir.path()); }, kHangLimit);
  for (const RankOutcome& o : outcomes) {
    EXPECT_TRUE(o.reported && o.status.ok() && o.exit_code == 0) << o.Describe();
  }
}

INSTANTIATE_TEST_SUITE_P(WorldSizes, GlooGroupTest, ::testing::Values(2, 4),
                         [](const auto& info) { return absl::StrCat("tp", info.param); });

TEST(GlooCommunicatorTest, MissingRankGivesDeadlineExceededNotAHang) {
  constexpr int kWorld = 3;  // rank 2 never starts
  TempDir dir("gloo");
  std::vector<RankOutcome> outcomes = ForkRanks(
      kWorld - 1,
      [&](int rank) -> absl::Status {
        FileRendezvous rdzv(dir.path());
        return MakeCommunicator("gloo", GroupOptions(rank, kWorld, rdzv, absl::Seconds(2)))
            .status();
      },
      kHangLimit);
  for (const RankOutcome& o : outcomes) {
    ASSERT_TRUE(o.reported) << o.Describe();
    EXPECT_EQ(o.status.code(), absl::StatusCode::kDeadlineExceeded) << o.Describe();
    EXPECT_NE(o.status.message().find(absl::StrCat("gloo rank ", o.rank, "/3")), std::string::npos)
        << o.Describe();
  }
}

// A rendezvous that ends its process right after it writes `key`: the rank has said that much
// about itself, and will never answer again.
class DieAfterSetting : public Rendezvous {
 public:
  DieAfterSetting(Rendezvous& base, std::string key) : base_(base), key_(std::move(key)) {}
  absl::Status Set(std::string_view key, std::string_view value) override {
    absl::Status s = base_.Set(key, value);
    if (key == key_) ::_exit(42);
    return s;
  }
  absl::StatusOr<std::string> Get(std::string_view key, absl::Duration timeout) override {
    return base_.Get(key, timeout);
  }
  absl::StatusOr<int64_t> Add(std::string_view key, int64_t delta) override {
    return base_.Add(key, delta);
  }

 private:
  Rendezvous& base_;
  std::string key_;
};

// Gloo waits 5x its timeout for a pair to connect; a rank that died (or gave up) after
// publishing used to hold its peers that long. Each case: one rank dies after writing its
// hostname key ("rank_R") or its pairs' addresses ("R"); the others fail within the timeout
// plus their own wait for the missing key (2x; 4x leaves room for a loaded machine and still
// tells the regression, 5x and more, apart). The time includes forking the ranks and forming
// the group: a 2 s timeout leaves 4 s for that and a loaded machine.
TEST(GlooCommunicatorTest, RankDyingWhileFormingFailsTheOthersWellBeforeFiveTimesTheTimeout) {
  constexpr int kWorld = 3;
  constexpr absl::Duration kTimeout = absl::Seconds(2);
  for (int dying = 0; dying < kWorld; ++dying) {
    for (const std::string& key : {absl::StrCat("rank_", dying), absl::StrCat(dying)}) {
      SCOPED_TRACE(absl::StrCat("rank ", dying, " dies after writing '", key, "'"));
      TempDir dir("gloo");
      const absl::Time start = absl::Now();
      std::vector<RankOutcome> outcomes = ForkRanks(
          kWorld,
          [&](int rank) -> absl::Status {
            FileRendezvous files(dir.path());
            DieAfterSetting dies(files, "test/gloo/" + key);
            Rendezvous& rdzv = rank == dying ? static_cast<Rendezvous&>(dies) : files;
            return MakeCommunicator("gloo", GroupOptions(rank, kWorld, rdzv, kTimeout)).status();
          },
          kHangLimit);
      const absl::Duration took = absl::Now() - start;
      EXPECT_LT(took, 4 * kTimeout);
      for (const RankOutcome& o : outcomes) {
        if (o.rank == dying) {
          EXPECT_EQ(o.exit_code, 42) << o.Describe();
          continue;
        }
        ASSERT_TRUE(o.reported) << o.Describe();
        EXPECT_TRUE(o.status.code() == absl::StatusCode::kDeadlineExceeded ||
                    o.status.code() == absl::StatusCode::kUnavailable)
            << o.Describe();
      }
    }
  }
}

// A formed Gloo group of `world` ranks that has all-reduced `data` once (a healthy step).
absl::StatusOr<std::unique_ptr<Communicator>> GroupAfterAStep(int rank, int world, Rendezvous& rdzv,
                                                              absl::Duration timeout,
                                                              std::vector<float>& data) {
  ASSIGN_OR_RETURN(std::unique_ptr<Communicator> comm,
                   MakeCommunicator("gloo", GroupOptions(rank, world, rdzv, timeout)));
  RETURN_IF_ERROR(comm->AllReduceSum(std::span<float>(data)));
  return comm;
}

TEST(GlooCommunicatorTest, RankDyingMidwayGivesSurvivorsAnErrorNotAHang) {
  constexpr int kWorld = 4;
  constexpr int kDying = 2;
  TempDir dir("gloo");
  std::vector<RankOutcome> outcomes = ForkRanks(
      kWorld,
      [&](int rank) -> absl::Status {
        FileRendezvous rdzv(dir.path());
        std::vector<float> data(1000, 1.0f);
        ASSIGN_OR_RETURN(std::unique_ptr<Communicator> comm,
                         GroupAfterAStep(rank, kWorld, rdzv, absl::Seconds(3), data));
        if (rank == kDying) ::_exit(42);                              // dies without a word
        absl::Status first = absl::OkStatus();
        for (int step = 0; step < 3 && first.ok(); ++step) {
          first = comm->AllReduceSum(std::span<float>(data));
        }
        if (first.ok()) return absl::InternalError("all-reduce succeeded without rank 2");
        // The group stays broken and says so at once.
        absl::Status after = comm->Barrier();
        if (after.code() != absl::StatusCode::kFailedPrecondition) {
          return absl::InternalError(
              absl::StrCat("call after the failure gave ", after.ToString()));
        }
        return first;
      },
      kHangLimit);
  for (const RankOutcome& o : outcomes) {
    if (o.rank == kDying) {
      EXPECT_FALSE(o.reported) << o.Describe();
      EXPECT_EQ(o.exit_code, 42) << o.Describe();
      continue;
    }
    ASSERT_TRUE(o.reported) << o.Describe();
    EXPECT_TRUE(o.status.code() == absl::StatusCode::kUnavailable ||
                o.status.code() == absl::StatusCode::kDeadlineExceeded)
        << o.Describe();
    EXPECT_NE(o.status.message().find(absl::StrCat("gloo rank ", o.rank, "/4")), std::string::npos)
        << o.Describe();
  }
}

TEST(GlooCommunicatorTest, StalledPeerGivesDeadlineExceededWithinTheTimeout) {
  TempDir dir("gloo");
  std::vector<RankOutcome> outcomes = ForkRanks(
      2,
      [&](int rank) -> absl::Status {
        FileRendezvous rdzv(dir.path());
        ASSIGN_OR_RETURN(std::unique_ptr<Communicator> comm,
                         MakeCommunicator("gloo", GroupOptions(rank, 2, rdzv, absl::Seconds(1))));
        if (rank == 1) {  // alive and connected, but never joins the collective
          return rdzv.Get("rank0_done", absl::Seconds(30)).status();
        }
        std::vector<float> data(16, 1.0f);
        absl::Status s = comm->AllReduceSum(std::span<float>(data));
        RETURN_IF_ERROR(rdzv.Set("rank0_done", ""));
        return s;
      },
      kHangLimit);
  ASSERT_TRUE(outcomes[0].reported) << outcomes[0].Describe();
  EXPECT_EQ(outcomes[0].status.code(), absl::StatusCode::kDeadlineExceeded)
      << outcomes[0].Describe();
  EXPECT_NE(outcomes[0].status.message().find("gloo rank 0/2"), std::string::npos)
      << outcomes[0].Describe();
  EXPECT_TRUE(outcomes[1].reported && outcomes[1].status.ok()) << outcomes[1].Describe();
}

// A rank that leaves the group (Abort: an error of its own mid-step) while its peers wait on
// it in a collective: they fail with Unavailable at once, not DeadlineExceeded after their
// 60 s timeout, whether the collective takes the small exchange or Gloo's ring, and peers not
// connected to it in the ring learn through their neighbours.
class GlooAbortTest : public ::testing::TestWithParam<size_t> {};

TEST_P(GlooAbortTest, PeersWaitingOnAnAbortedRankFailAtOnceNotAtTheirTimeout) {
  constexpr int kWorld = 4;
  constexpr int kLeaving = 2;
  const size_t count = GetParam();
  TempDir dir("gloo");
  std::vector<RankOutcome> outcomes = ForkRanks(
      kWorld,
      [&](int rank) -> absl::Status {
        FileRendezvous rdzv(dir.path());
        std::vector<float> data(count, 1.0f);
        ASSIGN_OR_RETURN(std::unique_ptr<Communicator> comm,
                         GroupAfterAStep(rank, kWorld, rdzv, absl::Seconds(60), data));
        if (rank == kLeaving) {
          comm->Abort(absl::InternalError("injected"));
          comm->Abort(absl::InternalError("twice"));  // a no-op
          absl::Status after = comm->AllReduceSum(std::span<float>(data));
          if (after.code() != absl::StatusCode::kFailedPrecondition ||
              after.message().find("injected") == std::string::npos ||
              after.message().find("twice") != std::string::npos) {
            return absl::InternalError(absl::StrCat("after Abort: ", after.ToString()));
          }
          // Alive until the others are done: they must learn from the closed connections,
          // not from a process that ended.
          for (int r = 0; r < kWorld; ++r) {
            if (r != kLeaving)
              RETURN_IF_ERROR(rdzv.Get(absl::StrCat("done", r), kHangLimit).status());
          }
          return absl::OkStatus();
        }
        absl::Status s = comm->AllReduceSum(std::span<float>(data));
        RETURN_IF_ERROR(rdzv.Set(absl::StrCat("done", rank), ""));
        return s;
      },
      kHangLimit);
  for (const RankOutcome& o : outcomes) {
    ASSERT_TRUE(o.reported) << o.Describe();
    if (o.rank == kLeaving) {
      EXPECT_TRUE(o.status.ok()) << o.Describe();
    } else {
      EXPECT_EQ(o.status.code(), absl::StatusCode::kUnavailable) << o.Describe();
    }
  }
}

// 64 bytes: the small exchange; 400 KB: Gloo's ring.
INSTANTIATE_TEST_SUITE_P(Sizes, GlooAbortTest, ::testing::Values(size_t{16}, size_t{100000}),
                         [](const auto& info) { return absl::StrCat(info.param, "floats"); });

// A bug (ranks disagree on the collectives), not a peer gone: INTERNAL on every rank, naming
// the mismatch, the group broken.
void ExpectEveryRankSawTheMismatch(const std::vector<RankOutcome>& outcomes) {
  for (const RankOutcome& o : outcomes) {
    ASSERT_TRUE(o.reported) << o.Describe();
    EXPECT_EQ(o.status.code(), absl::StatusCode::kInternal) << o.Describe();
    EXPECT_NE(o.status.message().find("collective mismatch"), std::string::npos) << o.Describe();
  }
}

// Ranks out of step on their collectives (a bug upstream: here rank 0 all-reduces 1 value
// while rank 1 all-reduces 1000) break the group with an error naming the mismatch, instead
// of summing whatever bytes the other rank sent.
TEST(GlooCommunicatorTest, MismatchedCollectivesAreAnErrorNotWrongData) {
  TempDir dir("gloo");
  std::vector<RankOutcome> outcomes = ForkRanks(
      2,
      [&](int rank) -> absl::Status {
        FileRendezvous rdzv(dir.path());
        ASSIGN_OR_RETURN(std::unique_ptr<Communicator> comm,
                         MakeCommunicator("gloo", GroupOptions(rank, 2, rdzv, absl::Seconds(5))));
        std::vector<float> data(rank == 0 ? 1 : 1000, 1.0f);
        const absl::Status first = comm->AllReduceSum(std::span<float>(data));
        // The group is broken after it: the next collective says so at once.
        const absl::Status after = comm->AllReduceSum(std::span<float>(data).first(1));
        if (!first.ok() && after.code() != absl::StatusCode::kFailedPrecondition) {
          return absl::InternalError(absl::StrCat("after the mismatch: ", after.ToString()));
        }
        return first;
      },
      kHangLimit);
  ExpectEveryRankSawTheMismatch(outcomes);
}

// The same past the small exchange (over 64 KiB, Gloo's own algorithms read the peers' data
// on its event-loop thread): the rank whose buffer is smaller used to end by a signal (Gloo's
// size check threw there, with nothing to catch it) while the other returned OK with half its
// output unfilled. Each collective whose ranks disagree on its size (or root) is INTERNAL on
// every rank.
TEST(GlooCommunicatorTest, LargeMismatchedCollectivesAreAnErrorNotACrash) {
  // SmallAgainstLarge: rank 1 gathers 6 floats, the size of rank 0's check before its large
  // gather; the check's own kind tells them apart (rank 1 took rank 0's check for data).
  // SmallReduceAgainstGather: both 6 floats, rank 0 sums, rank 1 gathers.
  const std::vector<std::string> kinds = {"AllGather",         "AllReduceSum",
                                          "Broadcast",         "BroadcastRoot",
                                          "SmallAgainstLarge", "SmallReduceAgainstGather"};
  for (const std::string& kind : kinds) {
    SCOPED_TRACE(kind);
    TempDir dir("gloo");
    std::vector<RankOutcome> outcomes = ForkRanks(
        2,
        [&](int rank) -> absl::Status {
          FileRendezvous rdzv(dir.path());
          ASSIGN_OR_RETURN(std::unique_ptr<Communicator> comm,
                           MakeCommunicator("gloo", GroupOptions(rank, 2, rdzv, absl::Seconds(5))));
          // Both over 64 KiB; BroadcastRoot: the same size, different roots.
          size_t n = rank == 0 || kind == "BroadcastRoot" ? 20000 : 40000;
          if (kind == "SmallAgainstLarge" && rank == 1) n = 6;
          if (kind == "SmallReduceAgainstGather") n = 6;
          std::vector<float> data(n, static_cast<float>(rank + 1));
          if (kind == "AllGather" || kind == "SmallAgainstLarge" ||
              (kind == "SmallReduceAgainstGather" && rank == 1)) {
            std::vector<float> out(2 * n);
            return comm->AllGather(std::span<const float>(data), std::span<float>(out));
          }
          if (kind == "AllReduceSum" || kind == "SmallReduceAgainstGather") {
            return comm->AllReduceSum(std::span<float>(data));
          }
          std::vector<uint8_t> bytes(4 * n, static_cast<uint8_t>(rank + 1));
          return comm->Broadcast(std::span<uint8_t>(bytes), kind == "Broadcast" ? 0 : rank);
        },
        kHangLimit);
    ExpectEveryRankSawTheMismatch(outcomes);
  }
}

// A broken group refuses every later call, an empty one too (as NCCL's does).
TEST(GlooCommunicatorTest, ABrokenGroupRefusesEmptyCollectivesToo) {
  TempDir dir("gloo");
  std::vector<RankOutcome> outcomes = ForkRanks(
      2,
      [&](int rank) -> absl::Status {
        FileRendezvous rdzv(dir.path());
        ASSIGN_OR_RETURN(std::unique_ptr<Communicator> comm,
                         MakeCommunicator("gloo", GroupOptions(rank, 2, rdzv, absl::Seconds(5))));
        comm->Abort(absl::CancelledError("test"));
        std::vector<float> none;
        std::vector<uint8_t> no_bytes;
        const absl::Status statuses[] = {
            comm->AllReduceSum(std::span<float>(none)),
            comm->AllGather(std::span<const float>(none), std::span<float>(none)),
            comm->Broadcast(std::span<uint8_t>(no_bytes), 0)};
        for (const absl::Status& s : statuses) {
          if (s.code() != absl::StatusCode::kFailedPrecondition) {
            return absl::InternalError(absl::StrCat("an empty call after Abort: ", s.ToString()));
          }
        }
        return absl::OkStatus();
      },
      kHangLimit);
  for (const RankOutcome& o : outcomes) {
    ASSERT_TRUE(o.reported) << o.Describe();
    EXPECT_TRUE(o.status.ok()) << o.Describe();
  }
}

// Runs `body` in one forked child, so that this process never starts Gloo's threads (later
// tests fork, and fork copies only the calling thread).
absl::Status InChild(const std::function<absl::Status()>& body) {
  std::vector<RankOutcome> outcome = ForkRanks(
      1, [&](int) { return body(); }, kHangLimit);
  if (!outcome[0].reported) return absl::InternalError(outcome[0].Describe());
  return outcome[0].status;
}

// The status of creating a one-rank Gloo group with `options`.
absl::Status CreateStatusInChild(const CommOptions& options) {
  return InChild([&] { return MakeCommunicator("gloo", options).status(); });
}

TEST(GlooCommunicatorTest, GroupOfOneNeedsNoPeers) {
  absl::Status s = InChild([]() -> absl::Status {
    CommOptions options;
    options.timeout = absl::Seconds(5);
    ASSIGN_OR_RETURN(std::unique_ptr<Communicator> comm, MakeCommunicator("gloo", options));
    std::vector<float> data = {3.0f};
    std::vector<float> out(1);
    RETURN_IF_ERROR(comm->AllReduceSum(std::span<float>(data)));
    RETURN_IF_ERROR(comm->AllGather(std::span<const float>(data), std::span<float>(out)));
    if (data[0] != 3.0f || out[0] != 3.0f) return absl::InternalError("values changed");
    return comm->Barrier();
  });
  EXPECT_TRUE(s.ok()) << s;
}

TEST(MakeCommunicatorTest, NamesTheValidBackends) {
  absl::StatusOr<std::unique_ptr<Communicator>> comm = MakeCommunicator("mpi", CommOptions());
  EXPECT_EQ(comm.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(comm.status().message().find("\"gloo\""), std::string::npos) << comm.status();
  CommOptions two;
  two.world_size = 2;
  EXPECT_EQ(MakeCommunicator("local", two).status().code(), absl::StatusCode::kInvalidArgument);
  absl::StatusOr<std::unique_ptr<Communicator>> local = MakeCommunicator("local", CommOptions());
  ASSERT_TRUE(local.ok());
  EXPECT_EQ((*local)->backend(), "local");
}

TEST(GlooCommunicatorTest, UnresolvableHostnameIsAnError) {
  CommOptions options;
  options.gloo_hostname = "no-such-host.invalid";
  absl::Status s = CreateStatusInChild(options);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
  EXPECT_NE(s.message().find("gloo rank 0/1"), std::string::npos) << s;
  EXPECT_NE(s.message().find("no-such-host.invalid"), std::string::npos) << s;
}

TEST(GlooCommunicatorTest, AddressOfAnotherMachineIsAnError) {
  CommOptions options;
  options.gloo_hostname = "192.0.2.1";  // TEST-NET-1: resolves, but is no address of ours
  absl::Status s = CreateStatusInChild(options);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
  EXPECT_NE(s.message().find("192.0.2.1"), std::string::npos) << s;
}

TEST(GlooCommunicatorTest, MissingInterfaceIsAnError) {
  CommOptions options;
  options.gloo_interface = "nosuchif0";
  absl::Status s = CreateStatusInChild(options);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
  EXPECT_NE(s.message().find("nosuchif0"), std::string::npos) << s;
}

}  // namespace
}  // namespace llmint8::comm
