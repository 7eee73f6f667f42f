#include "worker/token_sampler.h"

#include <algorithm>
#include <cmath>

#include "absl/status/status.h"

namespace llmint8::worker {

// TODO(service): delegate to kernels/sampling.h once it lands; greedy only until then.
absl::StatusOr<SampledToken> SampleToken(std::span<const float> logits,
                                         const v1::SamplingParams& params,
                                         int32_t sample_index) {
  (void)sample_index;
  if (logits.empty()) return absl::InvalidArgumentError("empty logits row");
  if (params.temperature() != 0.0f) {
    return absl::UnimplementedError("sampling with temperature > 0 is not wired yet");
  }
  auto it = std::max_element(logits.begin(), logits.end());
  double sum = 0.0;
  for (float v : logits) sum += std::exp(static_cast<double>(v) - *it);
  SampledToken out;
  out.token_id = static_cast<int32_t>(it - logits.begin());
  out.logprob = static_cast<float>(-std::log(sum));
  return out;
}

}  // namespace llmint8::worker
