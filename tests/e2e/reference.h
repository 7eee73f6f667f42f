// The in-process runtime as the reference the service must reproduce: one ShardModel (TP 1)
// decoding greedily, no gRPC, no scheduler.
#ifndef LLMINT8_TESTS_E2E_REFERENCE_H_
#define LLMINT8_TESTS_E2E_REFERENCE_H_

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "model/shard_model.h"

namespace llmint8::e2e {

class InProcessReference {
 public:
  // `precision` as in model/shard_model.h; the model is opened through model/model_spec.h.
  static absl::StatusOr<std::unique_ptr<InProcessReference>> Open(const std::string& model,
                                                                  model::Precision precision);
  // Greedy tokens (argmax of the logits, eos not special), `n` of them; with a
  // frequency_penalty, argmax of logit[j] - frequency_penalty * (times j was generated).
  absl::StatusOr<std::vector<int32_t>> Greedy(const std::vector<int32_t>& prompt, int n,
                                              float frequency_penalty = 0.0f);

 private:
  std::unique_ptr<model::ShardModel> model_;
  uint64_t next_id_ = 1;
};

}  // namespace llmint8::e2e

#endif  // LLMINT8_TESTS_E2E_REFERENCE_H_
