// libFuzzer target: a model's config.json, as the coordinator and every worker read it from a
// checkpoint directory, through what is computed from it before any weight is read:
// ParseOptConfig, the parameter count, the JSON round trip, the tensors a checkpoint must hold
// and their shapes, the shard plan of every valid TP degree (first and last rank, each tensor's
// slice), and the planner (bytes per GPU, Plan, the fp16-vs-int8 table, a group decision).
// Besides "no crash, no sanitizer report" (signed overflow included: -fsanitize=undefined), it
// checks that an accepted config is within CheckOptConfigShape's bounds, reads back equal from
// OptConfigToJson, counts positive bytes, and shards each tensor within its shape.
// Build and run: coordinator/fuzz/README.md.
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>
#include <vector>

#include "coordinator/planner.h"
#include "model/config.h"
#include "model/shard_plan.h"
#include "model/tensor_names.h"

namespace {

using llmint8::coordinator::BytesPerGpu;
using llmint8::coordinator::Compare;
using llmint8::coordinator::DefaultCompareGpuSizes;
using llmint8::coordinator::MemoryBreakdown;
using llmint8::coordinator::Plan;
using llmint8::coordinator::PlanGroup;
using llmint8::coordinator::Reserve;
using llmint8::coordinator::WeightDType;
using llmint8::model::OptConfig;

void Check(bool ok, const char* what) {
  if (!ok) {
    std::fprintf(stderr, "invariant broken: %s\n", what);
    std::abort();
  }
}

// Each expected tensor's slice on `rank` of `tp` lies within its shape.
void CheckShards(const OptConfig& c, int tp) {
  const std::vector<llmint8::model::ExpectedTensor> tensors = llmint8::model::ExpectedTensors(c);
  for (const int rank : {0, tp - 1}) {
    const absl::StatusOr<llmint8::model::ShardPlan> plan =
        llmint8::model::MakeShardPlan(c, tp, rank);
    Check(plan.ok(), "a valid TP degree has a shard plan");
    for (const llmint8::model::ExpectedTensor& t : tensors) {
      Check(llmint8::model::ExpectedShape(c, t.name) == t.shape, "ExpectedShape agrees");
      const absl::StatusOr<llmint8::model::TensorSlice> slice = plan->SliceFor(c, t.name);
      Check(slice.ok(), "every expected tensor has a slice");
      const int64_t rows = t.shape[0], cols = t.shape.size() > 1 ? t.shape[1] : 1;
      Check(0 <= slice->rows.begin && slice->rows.begin <= slice->rows.end &&
                slice->rows.end <= rows,
            "slice rows within the tensor");
      Check(0 <= slice->cols.begin && slice->cols.begin <= slice->cols.end &&
                slice->cols.end <= cols,
            "slice cols within the tensor");
    }
  }
}

void CheckPlanner(const OptConfig& c) {
  const Reserve reserves[] = {Reserve::Tokens(1, 0), Reserve::Tokens(64, 1),
                              Reserve::Bytes(int64_t{1} << 30)};
  for (const WeightDType dtype : {WeightDType::kF16, WeightDType::kInt8}) {
    for (const Reserve& reserve : reserves) {
      const absl::StatusOr<MemoryBreakdown> m = BytesPerGpu(c, dtype, 1, reserve);
      if (!m.ok()) continue;  // e.g. a context beyond max_position_embeddings
      Check(m->weights > 0 && m->fp16_tensors > 0 && m->Total() > 0, "positive byte counts");
      (void)Plan(c, dtype, int64_t{80} << 30, reserve);
      const int64_t workers[] = {int64_t{24} << 30, int64_t{24} << 30, int64_t{80} << 30};
      (void)PlanGroup(c, dtype, workers, reserve);
    }
  }
  (void)Compare(c, DefaultCompareGpuSizes(), Reserve::Tokens(1, 0));
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const absl::StatusOr<OptConfig> c =
      llmint8::model::ParseOptConfig(std::string_view(reinterpret_cast<const char*>(data), size));
  if (!c.ok()) return 0;
  Check(llmint8::model::CheckOptConfigShape(*c).ok(), "an accepted config is within bounds");
  const int64_t params = c->NumParameters();
  Check(params > 0 && params <= llmint8::model::kMaxParameters, "parameter count bounded");
  const absl::StatusOr<OptConfig> back =
      llmint8::model::ParseOptConfig(llmint8::model::OptConfigToJson(*c));
  Check(back.ok() && *back == *c, "OptConfigToJson reads back equal");
  // Listing every tensor is linear in the layers; the fuzzer's time goes to the shapes.
  if (c->num_hidden_layers <= 64) {
    const std::vector<int> valid = llmint8::model::ValidTpDegrees(*c);
    Check(!valid.empty() && valid.front() == 1, "TP 1 is always valid");
    CheckShards(*c, 1);
    CheckShards(*c, valid.back());
  }
  CheckPlanner(*c);
  return 0;
}
