// ShardModel at TP = 1, 2, 4 in separate processes (Gloo over loopback, file rendezvous): the
// same greedy tokens and logits within tolerance, in fp16 and int8, on a synthetic model with
// outlier dims and a vocabulary that TP 4 must pad (510 = 4 * 128 - 2).
//
// Every rank runs in a forked child (the parent never computes, so it starts no OpenMP or Gloo
// threads before fork); each writes its tokens and logits to a file the parent compares.
#include <stdlib.h>

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "comm/comm_options.h"
#include "comm/file_rendezvous.h"
#include "comm/make_communicator.h"
#include "comm/fork_ranks.h"
#include "common/status_macros.h"
#include "gtest/gtest.h"
#include "model/forward_test_util.h"
#include "model/shard_model.h"
#include "model/synthetic.h"

namespace llmint8::model {
namespace {

constexpr int kSteps = 12;
constexpr int64_t kVocab = 510;

OptConfig TpConfig() { return testing::SmallConfig(128, 4, 2, kVocab, 64); }

SyntheticOptions TpSynthetic() {
  SyntheticOptions o;
  o.seed = 11;
  o.bias_std = 0.02f;
  o.layer_norm_noise = 0.1f;
  o.outlier_dims = {5, 77};
  o.outlier_gain = 20.0f;
  return o;
}

const std::vector<std::vector<int32_t>>& Prompts() {
  static const auto* p = new std::vector<std::vector<int32_t>>{
      {2, 17, 300, 45, 9, 101, 4}, {2, 499}, {2, 8, 8, 8, 250, 33, 71, 12, 400, 5, 6}};
  return *p;
}

struct RankResult {
  std::vector<int32_t> tokens;  // [sequences * kSteps]
  std::vector<float> logits;    // [kSteps * sequences * vocab]
};

std::string ResultPath(const std::string& dir, int tp, int rank) {
  return absl::StrCat(dir, "/result-tp", tp, "-rank", rank, ".bin");
}

RankResult ReadResult(const std::string& path);

// `forced_from`: a TP 1 result file whose greedy tokens are fed instead of this group's argmax
// (empty: free-running greedy).
absl::Status RunRank(int tp, int rank, Precision precision, const std::string& dir,
                     const std::string& forced_from) {
  const OptConfig c = TpConfig();
  std::unique_ptr<comm::Communicator> comm;
  comm::FileRendezvous rdzv(dir);
  comm::CommOptions co;
  co.rank = rank;
  co.world_size = tp;
  co.rendezvous = &rdzv;
  co.key_prefix = absl::StrCat("tp", tp, "/");
  co.timeout = absl::Seconds(60);
  ASSIGN_OR_RETURN(comm, comm::MakeCommunicator(tp == 1 ? "local" : "gloo", co));
  ASSIGN_OR_RETURN(std::unique_ptr<CheckpointSource> src, MakeSyntheticSource(c, TpSynthetic()));
  ShardOptions o;
  o.precision = precision;
  ASSIGN_OR_RETURN(std::unique_ptr<ShardModel> model,
                   ShardModel::Load(c, *src, tp, rank, comm.get(), o));
  std::vector<std::vector<int32_t>> forced;
  if (!forced_from.empty()) {
    const RankResult tp1 = ReadResult(forced_from);
    for (size_t i = 0; i < Prompts().size(); ++i) {
      forced.emplace_back(tp1.tokens.begin() + i * kSteps, tp1.tokens.begin() + (i + 1) * kSteps);
    }
  }
  ASSIGN_OR_RETURN(testing::GreedyResult g,
                   testing::Greedy(*model, Prompts(), kSteps, 1,
                                   forced_from.empty() ? nullptr : &forced));
  std::ofstream f(ResultPath(dir, tp, rank), std::ios::binary);
  for (const auto& t : g.tokens) f.write(reinterpret_cast<const char*>(t.data()), t.size() * 4);
  for (const auto& l : g.logits) f.write(reinterpret_cast<const char*>(l.data()), l.size() * 4);
  if (!f.good()) return absl::InternalError("cannot write " + ResultPath(dir, tp, rank));
  return absl::OkStatus();
}

RankResult ReadResult(const std::string& path) {
  const size_t seqs = Prompts().size();
  RankResult r;
  r.tokens.resize(seqs * kSteps);
  r.logits.resize(kSteps * seqs * kVocab);
  std::ifstream f(path, std::ios::binary);
  f.read(reinterpret_cast<char*>(r.tokens.data()), r.tokens.size() * 4);
  f.read(reinterpret_cast<char*>(r.logits.data()), r.logits.size() * 4);
  if (!f.good()) std::fprintf(stderr, "short result file %s\n", path.c_str());
  return r;
}

struct TpCase {
  Precision precision;
  // Max |logit difference| allowed between TP degrees at any step.
  //  fp16 weights, fp32 math: only the all-reduce summation order differs, a few ulps of the
  //  activations (measured ~6e-7); 1e-4 is ample and still catches any slicing mistake.
  //  int8: row-parallel layers (out_proj, fc2) find outliers and row scales on their local K
  //  slice, a different (finer) quantization than TP 1, so TP degrees differ by int8 noise:
  //  about the int8-vs-exact error of a layer (~1% of |y|, amplified by the LayerNorm gain 20
  //  at the outlier dims) - measured up to ~0.04 on logits of std ~0.9. 0.1 bounds it while a
  //  wrong slice, a missing all-reduce or a doubled bias moves logits by O(1).
  double logit_tol;
  // int8: TP 2 / 4 decode TP 1's greedy tokens (teacher forcing), so a token flipped by int8
  // noise does not make the later steps incomparable; a flip is accepted only where TP 1's own
  // top-1 margin is below logit_tol (an argmax the noise may legitimately change).
  bool teacher_forced;
};

class TpForwardTest : public ::testing::TestWithParam<TpCase> {};

double Margin(std::span<const float> row) {
  float a = -INFINITY, b = -INFINITY;
  for (float v : row) {
    if (v > a) {
      b = a;
      a = v;
    } else if (v > b) {
      b = v;
    }
  }
  return static_cast<double>(a) - b;
}

TEST_P(TpForwardTest, Tp1Tp2Tp4AgreeOnGreedyTokensAndLogits) {
  const TpCase tc = GetParam();
  char tmpl[] = "/tmp/llmint8_tp_XXXXXX";
  ASSERT_NE(mkdtemp(tmpl), nullptr);
  const std::string dir = tmpl;
  const std::string tp1_result = ResultPath(absl::StrCat(dir, "/tp1"), 1, 0);
  std::vector<RankResult> rank0;
  for (int tp : {1, 2, 4}) {
    const std::string sub = absl::StrCat(dir, "/tp", tp);
    std::filesystem::create_directories(sub);
    const std::string forced = (tc.teacher_forced && tp > 1) ? tp1_result : "";
    auto outcomes = comm::ForkRanks(
        tp, [&](int rank) { return RunRank(tp, rank, tc.precision, sub, forced); },
        absl::Seconds(120));
    for (const auto& o : outcomes) {
      ASSERT_TRUE(o.reported && o.status.ok() && o.exit_code == 0) << "tp " << tp << ": "
                                                                     << o.Describe();
    }
    std::vector<RankResult> results;
    for (int r = 0; r < tp; ++r) results.push_back(ReadResult(ResultPath(sub, tp, r)));
    for (int r = 1; r < tp; ++r) {  // every rank of a group sees the same gathered logits
      EXPECT_EQ(results[r].tokens, results[0].tokens) << "tp " << tp << " rank " << r;
      EXPECT_EQ(results[r].logits, results[0].logits) << "tp " << tp << " rank " << r;
    }
    rank0.push_back(std::move(results[0]));
  }
  const size_t seqs = Prompts().size();
  for (size_t i = 1; i < rank0.size(); ++i) {
    const int tp = i == 1 ? 2 : 4;
    const double diff = testing::MaxAbsDiff(rank0[i].logits, rank0[0].logits);
    EXPECT_LE(diff, tc.logit_tol) << "tp " << tp;
    int same = 0;
    for (int s = 0; s < kSteps; ++s) {
      for (size_t q = 0; q < seqs; ++q) {
        const size_t t = q * kSteps + s;
        std::span<const float> row(rank0[0].logits.data() + (s * seqs + q) * kVocab, kVocab);
        if (rank0[i].tokens[t] == rank0[0].tokens[t]) {
          ++same;
        } else if (!tc.teacher_forced) {
          ADD_FAILURE() << "tp " << tp << " sequence " << q << " step " << s << ": token "
                        << rank0[i].tokens[t] << " vs tp 1's " << rank0[0].tokens[t];
        } else {
          EXPECT_LT(Margin(row), tc.logit_tol)
              << "tp " << tp << " flipped a confident token: sequence " << q << " step " << s;
        }
      }
    }
    std::printf("%s: tp %d vs tp 1 over %d steps x %zu sequences: max |logit diff| %.3g, same "
                "greedy token %d of %zu%s\n",
                std::string(PrecisionName(tc.precision)).c_str(), tp, kSteps, seqs, diff, same,
                kSteps * seqs, tc.teacher_forced ? " (teacher-forced on tp 1's tokens)" : "");
  }
  std::filesystem::remove_all(dir);
}

INSTANTIATE_TEST_SUITE_P(Precisions, TpForwardTest,
                         ::testing::Values(TpCase{Precision::kF16, 1e-4, false},
                                           TpCase{Precision::kInt8, 0.1, true}),
                         [](const auto& info) {
                           return std::string(PrecisionName(info.param.precision));
                         });

}  // namespace
}  // namespace llmint8::model
