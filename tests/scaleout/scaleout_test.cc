// Scale-out on CPU: one synthetic model served fp16 and int8 by `llmint8` processes whose
// workers all run under the same --memory_limit (an emulated GPU size), the coordinator
// planning the group (--group=smallest). The cap is chosen from the planner so that fp16 needs
// 4 workers and int8 fits in 2: fp16 is served on 4, int8 on 2 of the same 4 (2 stay idle),
// and fp16 on 2 workers is refused with FAILED_PRECONDITION naming the counts. Greedy outputs
// of fp16 (TP 4) and int8 (TP 2) agree. Each run reports memory per worker (Stats) and tokens/s
// (LLMINT8_SCALEOUT_REPORT=<file> writes the docs table there).
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <span>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "coordinator/planner.h"
#include "gtest/gtest.h"
#include "model/forward_test_util.h"
#include "model/model_spec.h"
#include "model/shard_model.h"
#include "tests/e2e/cluster.h"
#include "tests/e2e/reference.h"
#include "tests/scaleout/scaleout_cluster.h"

namespace llmint8::scaleout {
namespace {

using coordinator::BytesPerGpu;
using coordinator::Reserve;
using coordinator::WeightDType;

constexpr char kModel[] =
    "synthetic:125m,layers=2,hidden=256,heads=8,ffn=1024,vocab=1024,positions=128";
constexpr int kNewTokens = 24;

int64_t Need(const model::OptConfig& c, WeightDType d, int tp) {
  // CPU workers: no CUDA runtime overhead; the coordinator's default reserve (1 sequence of the
  // full context) and the step its workers keep room for (coordinator_server.cc: a prefill of
  // the context, a scored chunk and a token per sequence; a logits row per sequence and per
  // scored token) under the cluster's --max_batch and --score_chunk.
  const ScaleoutClusterOptions cluster;
  const int64_t context = c.max_position_embeddings;
  return BytesPerGpu(c, d, tp, Reserve::Tokens(1, context),
                     coordinator::PlanOptions{
                         .runtime_overhead_bytes = 0,
                         .max_step_tokens = context + cluster.score_chunk + cluster.max_batch,
                         .max_step_rows = cluster.max_batch + cluster.score_chunk,
                         .max_sequences = cluster.max_batch,
                         .cpu = true})
      ->Total();
}

// The emulated GPU size: fp16 fits on 4 workers, int8 on 2; neither on fewer. Midway between
// the two planner figures.
int64_t Cap(const model::OptConfig& c) {
  const int64_t fits = std::max(Need(c, WeightDType::kF16, 4), Need(c, WeightDType::kInt8, 2));
  const int64_t too_small =
      std::min(Need(c, WeightDType::kF16, 2), Need(c, WeightDType::kInt8, 1));
  std::printf("planner, bytes per worker: fp16 TP4 %lld, TP2 %lld; int8 TP2 %lld, TP1 %lld\n",
              static_cast<long long>(Need(c, WeightDType::kF16, 4)),
              static_cast<long long>(Need(c, WeightDType::kF16, 2)),
              static_cast<long long>(Need(c, WeightDType::kInt8, 2)),
              static_cast<long long>(Need(c, WeightDType::kInt8, 1)));
  EXPECT_LT(fits, too_small);
  return fits + (too_small - fits) / 2;
}

std::vector<std::vector<int32_t>> Prompts() {
  std::vector<std::vector<int32_t>> prompts;
  for (int p = 0; p < 4; ++p) {
    std::vector<int32_t> ids = {2};
    for (int i = 0; i < 6 + 3 * p; ++i) ids.push_back((37 * p + 101 * i + 11) % 1000 + 4);
    prompts.push_back(ids);
  }
  return prompts;
}

struct Served {
  RunReport report;
  std::vector<std::vector<int32_t>> outputs;
};

// Starts the cluster, waits for the group, generates every prompt concurrently, reads Stats.
Served Serve(const std::string& dtype, int workers, int64_t cap) {
  Served out;
  out.report.label = absl::StrCat(dtype, ", ", workers, " workers");
  out.report.dtype = dtype;
  out.report.workers = workers;
  ScaleoutCluster cluster({kModel, dtype, workers, cap, "smallest"});
  EXPECT_TRUE(e2e::WaitForHealth(cluster.address(), 1, 60))
      << "group not ready; see " << cluster.log_dir();
  auto stub = cluster.NewStub();
  const std::vector<std::vector<int32_t>> prompts = Prompts();
  out.outputs.resize(prompts.size());
  std::vector<grpc::Status> statuses(prompts.size());
  const absl::Time start = absl::Now();
  std::vector<std::thread> threads;
  for (size_t p = 0; p < prompts.size(); ++p) {
    threads.emplace_back([&, p] {
      e2e::Generated g = e2e::Generate(*stub, e2e::GreedyRequest(prompts[p], kNewTokens), 60);
      statuses[p] = g.status;
      out.outputs[p] = g.tokens;
    });
  }
  for (std::thread& t : threads) t.join();
  out.report.seconds = absl::ToDoubleSeconds(absl::Now() - start);
  for (size_t p = 0; p < prompts.size(); ++p) {
    EXPECT_TRUE(statuses[p].ok()) << statuses[p].error_message();
    out.report.generated_tokens += static_cast<int64_t>(out.outputs[p].size());
  }
  grpc::ClientContext ctx;
  v1::GetModelInfoRequest info_req;
  v1::ModelInfo info;
  EXPECT_TRUE(stub->GetModelInfo(&ctx, info_req, &info).ok());
  out.report.tensor_parallel = info.tensor_parallel();
  for (const v1::StatsResponse& s : cluster.WorkerStats()) {
    out.report.worker_bytes.push_back(s.total_bytes());
    EXPECT_LE(s.total_bytes(), cap);
  }
  return out;
}

TEST(ScaleoutTest, Int8ServesOnHalfTheWorkersFp16Needs) {
  absl::StatusOr<model::OptConfig> config = model::LoadModelSpecConfig(kModel);
  ASSERT_TRUE(config.ok()) << config.status();
  const int64_t cap = Cap(*config);

  std::vector<RunReport> runs;
  const Served fp16 = Serve("fp16", 4, cap);
  runs.push_back(fp16.report);
  EXPECT_EQ(fp16.report.tensor_parallel, 4);
  const Served int8 = Serve("int8", 4, cap);
  runs.push_back(int8.report);
  EXPECT_EQ(int8.report.tensor_parallel, 2);
  EXPECT_EQ(std::count(int8.report.worker_bytes.begin(), int8.report.worker_bytes.end(), 0), 2)
      << "two of the four workers stay idle";

  // fp16 on 2 workers under the same cap: refused, health NOT_SERVING, the message names the
  // counts.
  {
    RunReport refused;
    refused.label = "fp16, 2 workers";
    refused.dtype = "fp16";
    refused.workers = 2;
    ScaleoutCluster cluster({kModel, "fp16", 2, cap, "smallest"});
    // Serving health checks (NOT_SERVING) once it listens; a Generate sent before the refusal
    // waits in the queue and fails with it.
    ASSERT_TRUE(e2e::WaitForHealth(cluster.address(), 2, 30)) << "see " << cluster.log_dir();
    auto stub = cluster.NewStub();
    e2e::Generated g = e2e::Generate(*stub, e2e::GreedyRequest(Prompts()[0], 4), 60);
    EXPECT_EQ(g.status.error_code(), grpc::StatusCode::FAILED_PRECONDITION)
        << g.status.error_message();
    EXPECT_NE(g.status.error_message().find("fp16 needs 4 workers with"), std::string::npos)
        << g.status.error_message();
    EXPECT_NE(g.status.error_message().find("2 joined; int8 fits in 2"), std::string::npos)
        << g.status.error_message();
    EXPECT_EQ(e2e::HealthStatus(cluster.address()), 2);  // NOT_SERVING
    EXPECT_NE(ReadFile(cluster.coordinator_log()).find("refused"), std::string::npos);
    // GetModelInfo (what `llmint8 status` shows) says the group is refused, and why.
    grpc::ClientContext info_ctx;
    v1::ModelInfo info;
    ASSERT_TRUE(stub->GetModelInfo(&info_ctx, v1::GetModelInfoRequest(), &info).ok());
    EXPECT_EQ(info.group_state(), "refused");
    EXPECT_NE(info.group_error().find("2 joined; int8 fits in 2"), std::string::npos)
        << info.group_error();
    for (const v1::StatsResponse& s : cluster.WorkerStats()) {
      refused.worker_bytes.push_back(s.total_bytes());
      EXPECT_EQ(s.total_bytes(), 0);  // nothing was loaded
    }
    runs.push_back(refused);
  }

  // Greedy outputs: fp16 TP 4 reproduces the in-process fp16 model; int8 TP 2 agrees with it.
  auto reference = e2e::InProcessReference::Open(kModel, model::Precision::kF16);
  ASSERT_TRUE(reference.ok()) << reference.status();
  const std::vector<std::vector<int32_t>> prompts = Prompts();
  int agree = 0;
  int total = 0;
  for (size_t p = 0; p < prompts.size(); ++p) {
    absl::StatusOr<std::vector<int32_t>> want = (*reference)->Greedy(prompts[p], kNewTokens);
    ASSERT_TRUE(want.ok()) << want.status();
    EXPECT_EQ(fp16.outputs[p], *want) << "prompt " << p;
    ASSERT_EQ(int8.outputs[p].size(), fp16.outputs[p].size());
    for (size_t t = 0; t < fp16.outputs[p].size(); ++t) {
      agree += int8.outputs[p][t] == fp16.outputs[p][t];
      ++total;
    }
  }
  std::printf("int8 (TP 2) vs fp16 (TP 4) greedy tokens: %d of %d agree\n", agree, total);
  EXPECT_EQ(agree, total);

  const std::string table = ReportMarkdown(runs, cap, kModel);
  std::printf("%s", table.c_str());
  if (const char* path = std::getenv("LLMINT8_SCALEOUT_REPORT"); path != nullptr) {
    std::ofstream(path) << table;
  }
}

// With outlier feature dims (LayerNorm gain 20 on 3 of 256 dims, so the activations entering
// q/k/v and fc1 pass the 6.0 threshold there), int8 on 2 workers should keep the fp16 model's
// next token: teacher-forced top-1 over 4 prompts x 32 positions. Asserted over the decided
// positions, those whose fp16 top-2 gap is >= 5% of that position's logit std (as in
// model/int8_agreement_runtime_test.cc): a random model's gap is an order statistic (~
// exponential, mean ~0.2 std), so some positions are near-ties that any ~1% logit error flips,
// and no logit scaling changes that. Measured: 126 of 128 overall (98.4%), both flips at
// near-ties; the all-positions figure is printed beside it.
TEST(ScaleoutTest, Int8WithOutlierDimsKeepsTop1) {
  constexpr char kOutlierModel[] =
      "synthetic:125m,layers=2,hidden=256,heads=8,ffn=1024,vocab=1024,positions=128,outliers=3";
  constexpr int kPositions = 32;
  constexpr double kTieBand = 0.05;
  absl::StatusOr<model::OptConfig> config = model::LoadModelSpecConfig(kOutlierModel);
  ASSERT_TRUE(config.ok()) << config.status();
  const int64_t cap = Cap(*config);
  absl::StatusOr<model::OpenedModel> opened = model::OpenModelSpec(kOutlierModel);
  ASSERT_TRUE(opened.ok()) << opened.status();
  model::ShardOptions f16;
  f16.precision = model::Precision::kF16;
  auto reference = model::ShardModel::Load(opened->config, *opened->source, 1, 0, nullptr, f16);
  ASSERT_TRUE(reference.ok()) << reference.status();

  struct Probe {
    std::vector<int32_t> context;
    int32_t want;
    double gap;  // fp16 top-2 gap / logit std at this position
    int32_t got = -1;
  };
  std::vector<Probe> probes;
  uint64_t seq = 1;
  for (const std::vector<int32_t>& prompt : Prompts()) {
    // fp16 greedy decode on the in-process runtime (TP 1), keeping each position's gap.
    std::vector<int32_t> context = prompt;
    std::vector<int32_t> step_tokens = prompt;
    for (int i = 0; i < kPositions; ++i) {
      const model::ShardModel::SequenceInput in{seq, step_tokens};
      absl::StatusOr<model::Logits> logits =
          (*reference)->Step(std::span<const model::ShardModel::SequenceInput>(&in, 1));
      ASSERT_TRUE(logits.ok()) << logits.status();
      int32_t best = 0;
      std::span<const float> row = logits->row(0);
      for (int32_t t = 1; t < static_cast<int32_t>(row.size()); ++t) {
        if (row[t] > row[best]) best = t;
      }
      probes.push_back({context, best, model::testing::RelativeGap(row)});
      context.push_back(best);
      step_tokens = {best};
    }
    ASSERT_TRUE((*reference)->Release(seq++).ok());
  }

  ScaleoutCluster cluster({kOutlierModel, "int8", 2, cap, "smallest"});
  ASSERT_TRUE(e2e::WaitForHealth(cluster.address(), 1, 60)) << "see " << cluster.log_dir();
  auto stub = cluster.NewStub();
  // One prefix at a time: the plan reserves room for one sequence (--reserve_sequences=1),
  // and the CPU runtime's fp32 KV cache and activations fill it faster than the planner's
  // estimate, so a batch of many prefills could pass the workers' limit.
  for (Probe& probe : probes) {
    e2e::Generated g = e2e::Generate(*stub, e2e::GreedyRequest(probe.context, 1), 60);
    EXPECT_TRUE(g.status.ok()) << g.status.error_message();
    if (g.tokens.size() == 1) probe.got = g.tokens[0];
  }
  int agree = 0, decided = 0, decided_agree = 0;
  for (const Probe& probe : probes) {
    agree += probe.got == probe.want;
    if (probe.gap >= kTieBand) {
      decided++;
      decided_agree += probe.got == probe.want;
    }
    if (probe.got != probe.want) std::printf("flip at fp16 gap %.4f std\n", probe.gap);
  }
  std::printf(
      "outlier model: int8 (TP 2) keeps fp16's top-1 at %d of %zu positions, %d of %d "
      "decided (gap >= %.2f std)\n",
      agree, probes.size(), decided_agree, decided, kTieBand);
  EXPECT_GE(decided * 4, 3 * static_cast<int>(probes.size()));  // the band sets aside few
  EXPECT_GE(decided_agree * 100, 99 * decided);
}

}  // namespace
}  // namespace llmint8::scaleout
