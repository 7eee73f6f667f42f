#include "tests/tp/tp_harness.h"

#include <stdlib.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <span>
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

constexpr int kSteps = 12;
constexpr int64_t kVocab = 510;

OptConfig TpConfig() { return SmallConfig(128, 4, 2, kVocab, 64); }

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

// An error when the file is missing or short: zeros would compare equal across ranks.
absl::StatusOr<RankResult> ReadResult(const std::string& path) {
  const size_t seqs = Prompts().size();
  RankResult r;
  r.tokens.resize(seqs * kSteps);
  r.logits.resize(kSteps * seqs * kVocab);
  std::ifstream f(path, std::ios::binary);
  f.read(reinterpret_cast<char*>(r.tokens.data()), r.tokens.size() * 4);
  f.read(reinterpret_cast<char*>(r.logits.data()), r.logits.size() * 4);
  if (!f.good()) return absl::DataLossError(absl::StrCat("missing or short result file ", path));
  return r;
}

// `forced_from`: a TP 1 result file whose greedy tokens are fed instead of this group's argmax
// (empty: free-running greedy).
absl::Status RunRank(const TpBackend& backend, int tp, int rank, Precision precision,
                     const std::string& dir, const std::string& forced_from) {
  if (backend.rank_setup) backend.rank_setup(rank);
  const OptConfig c = TpConfig();
  void* const cuda_stream = TensorParallelCudaStream(backend.device, tp);
  comm::FileRendezvous rdzv(dir);
  comm::CommOptions co;
  co.rank = rank;
  co.world_size = tp;
  co.rendezvous = &rdzv;
  co.key_prefix = absl::StrCat("tp", tp, "/");
  co.timeout = absl::Seconds(60);
  co.cuda_device = 0;
  co.cuda_stream = cuda_stream;
  ASSIGN_OR_RETURN(std::unique_ptr<comm::Communicator> comm,
                   comm::MakeCommunicator(tp == 1 ? "local" : backend.comm, co));
  ASSIGN_OR_RETURN(std::unique_ptr<CheckpointSource> src, MakeSyntheticSource(c, TpSynthetic()));
  ShardOptions o;
  o.device = backend.device;
  o.precision = precision;
  o.cuda_device = 0;
  o.cuda_stream = cuda_stream;
  ASSIGN_OR_RETURN(std::unique_ptr<ShardModel> model,
                   ShardModel::Load(c, *src, tp, rank, comm.get(), o));
  std::vector<std::vector<int32_t>> forced;
  if (!forced_from.empty()) {
    ASSIGN_OR_RETURN(const RankResult tp1, ReadResult(forced_from));
    for (size_t i = 0; i < Prompts().size(); ++i) {
      forced.emplace_back(tp1.tokens.begin() + i * kSteps, tp1.tokens.begin() + (i + 1) * kSteps);
    }
  }
  ASSIGN_OR_RETURN(GreedyResult g,
                   Greedy(*model, Prompts(), kSteps, 1, forced_from.empty() ? nullptr : &forced));
  std::ofstream f(ResultPath(dir, tp, rank), std::ios::binary);
  for (const auto& t : g.tokens) f.write(reinterpret_cast<const char*>(t.data()), t.size() * 4);
  for (const auto& l : g.logits) f.write(reinterpret_cast<const char*>(l.data()), l.size() * 4);
  if (!f.good()) return absl::InternalError("cannot write " + ResultPath(dir, tp, rank));
  return absl::OkStatus();
}

}  // namespace

double F16RoundingBound(int layers, int tp, double max_logit) {
  const double u = std::ldexp(1.0, -11);
  const double s1 = 3.0 + 8.0 * layers;
  const double stp = s1 + (tp - 1) * (1.0 + 2.0 * layers);
  return (s1 + stp) * u * max_logit;
}

void ExpectTpDegreesAgree(const TpBackend& backend, const TpCase& tc) {
  char tmpl[] = "/tmp/llmint8_tp_XXXXXX";
  ASSERT_NE(mkdtemp(tmpl), nullptr);
  const std::string dir = tmpl;
  const std::string tp1_result = ResultPath(absl::StrCat(dir, "/tp1"), 1, 0);
  const std::string what =
      std::string(DeviceName(backend.device)) + " " + std::string(PrecisionName(tc.precision));
  std::vector<RankResult> rank0;
  for (int tp : {1, 2, 4}) {
    const std::string sub = absl::StrCat(dir, "/tp", tp);
    std::filesystem::create_directories(sub);
    const std::string forced = (tc.teacher_forced && tp > 1) ? tp1_result : "";
    auto outcomes = comm::ForkRanks(
        tp, [&](int rank) { return RunRank(backend, tp, rank, tc.precision, sub, forced); },
        absl::Seconds(120));
    for (const auto& o : outcomes) {
      ASSERT_TRUE(o.reported && o.status.ok() && o.exit_code == 0)
          << what << " tp " << tp << ": " << o.Describe();
    }
    std::vector<RankResult> results;
    for (int r = 0; r < tp; ++r) {
      absl::StatusOr<RankResult> result = ReadResult(ResultPath(sub, tp, r));
      ASSERT_TRUE(result.ok()) << what << " tp " << tp << ": " << result.status();
      results.push_back(*std::move(result));
    }
    for (int r = 1; r < tp; ++r) {  // every rank of a group sees the same gathered logits
      EXPECT_EQ(results[r].tokens, results[0].tokens) << what << " tp " << tp << " rank " << r;
      EXPECT_EQ(results[r].logits, results[0].logits) << what << " tp " << tp << " rank " << r;
    }
    rank0.push_back(std::move(results[0]));
  }
  const size_t seqs = Prompts().size();
  for (size_t i = 1; i < rank0.size(); ++i) {
    const int tp = i == 1 ? 2 : 4;
    double tol = tc.logit_tol;
    if (tc.fp16_activations) {
      double max_logit = 0;
      for (float v : rank0[0].logits) max_logit = std::max(max_logit, std::abs(double{v}));
      tol += F16RoundingBound(static_cast<int>(TpConfig().num_hidden_layers), tp, max_logit);
    }
    const double diff = MaxAbsDiff(rank0[i].logits, rank0[0].logits);
    EXPECT_LE(diff, tol) << what << " tp " << tp;
    int same = 0;
    for (int s = 0; s < kSteps; ++s) {
      for (size_t q = 0; q < seqs; ++q) {
        const size_t t = q * kSteps + s;
        std::span<const float> row(rank0[0].logits.data() + (s * seqs + q) * kVocab, kVocab);
        if (rank0[i].tokens[t] == rank0[0].tokens[t]) {
          ++same;
        } else if (!tc.teacher_forced) {
          ADD_FAILURE() << what << " tp " << tp << " sequence " << q << " step " << s << ": token "
                        << rank0[i].tokens[t] << " vs tp 1's " << rank0[0].tokens[t];
        } else {
          EXPECT_LT(Margin(row), tol)
              << what << " tp " << tp << " flipped a confident token: sequence " << q << " step "
              << s;
        }
      }
    }
    std::printf(
        "%s: tp %d vs tp 1 over %d steps x %zu sequences: max |logit diff| %.3g (bound "
        "%.3g), same greedy token %d of %zu%s\n",
        what.c_str(), tp, kSteps, seqs, diff, tol, same, kSteps * seqs,
        tc.teacher_forced ? " (teacher-forced on tp 1's tokens)" : "");
  }
  std::filesystem::remove_all(dir);
}

}  // namespace llmint8::model::testing
