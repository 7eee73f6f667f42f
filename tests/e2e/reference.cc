#include "tests/e2e/reference.h"

#include <algorithm>

#include "common/status_macros.h"
#include "model/checkpoint.h"
#include "model/model_spec.h"

namespace llmint8::e2e {

absl::StatusOr<std::unique_ptr<InProcessReference>> InProcessReference::Open(
    const std::string& model, model::Precision precision) {
  ASSIGN_OR_RETURN(model::OpenedModel opened, model::OpenModelSpec(model));
  model::ShardOptions options;
  options.precision = precision;
  auto ref = std::unique_ptr<InProcessReference>(new InProcessReference());
  ASSIGN_OR_RETURN(ref->model_,
                   model::ShardModel::Load(opened.config, *opened.source, 1, 0, nullptr, options));
  return ref;
}

absl::StatusOr<std::vector<int32_t>> InProcessReference::Greedy(const std::vector<int32_t>& prompt,
                                                                int n, float frequency_penalty) {
  const uint64_t id = next_id_++;
  std::vector<int32_t> out;
  std::vector<int32_t> input = prompt;
  for (int i = 0; i < n; ++i) {
    model::ShardModel::SequenceInput seq{id, input};
    ASSIGN_OR_RETURN(model::Logits logits, model_->Step({&seq, 1}));
    std::vector<float> row(logits.row(0).begin(), logits.row(0).end());
    for (int32_t generated : out) row[generated] -= frequency_penalty;
    const int32_t next =
        static_cast<int32_t>(std::max_element(row.begin(), row.end()) - row.begin());
    out.push_back(next);
    input = {next};
  }
  RETURN_IF_ERROR(model_->Release(id));
  return out;
}

}  // namespace llmint8::e2e
