// A test checkpoint source that adds lm_head.weight to another: for tests of the tied LM
// head check (model/checkpoint.h CheckTiedLmHead), at load and at quantization. Header-only,
// test code only.
#ifndef LLMINT8_MODEL_LM_HEAD_TEST_UTIL_H_
#define LLMINT8_MODEL_LM_HEAD_TEST_UTIL_H_

#include <algorithm>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "common/status_macros.h"
#include "model/checkpoint.h"
#include "model/tensor_names.h"

namespace llmint8::model::testing {

// A checkpoint that carries lm_head.weight beside the token embedding: `factor` x the
// embedding (1: a tied copy, as some exports save it).
class WithLmHead : public CheckpointSource {
 public:
  WithLmHead(const CheckpointSource& base, float factor) : base_(base), factor_(factor) {}
  std::string Describe() const override { return "with-lm-head(" + base_.Describe() + ")"; }
  bool Has(std::string_view name) const override { return name == kLmHead || base_.Has(name); }
  absl::StatusOr<TensorInfo> Info(std::string_view name) const override {
    return base_.Info(name == kLmHead ? kEmbedTokens : name);
  }
  std::vector<std::string> TensorNames() const override {
    std::vector<std::string> names = base_.TensorNames();
    names.emplace_back(kLmHead);
    std::sort(names.begin(), names.end());
    return names;
  }
  absl::Status ReadSlice(std::string_view name, Range rows, Range cols,
                         std::span<float> out) const override {
    if (name != kLmHead) return base_.ReadSlice(name, rows, cols, out);
    RETURN_IF_ERROR(base_.ReadSlice(kEmbedTokens, rows, cols, out));
    for (float& v : out) v *= factor_;
    return absl::OkStatus();
  }

 private:
  const CheckpointSource& base_;
  float factor_;
};

}  // namespace llmint8::model::testing

#endif  // LLMINT8_MODEL_LM_HEAD_TEST_UTIL_H_
