#include "kernels/sampling.h"

#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <optional>
#include <string>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "kernels/avx2_sum.h"
#include "kernels/cpu_features.h"
#include "kernels/zero_upper.h"

namespace llmint8::kernels {
namespace {

uint64_t Mix64(uint64_t x) {  // SplitMix64's finaliser (a bijection with full avalanche)
  x ^= x >> 30;
  x *= 0xBF58476D1CE4E5B9ull;
  x ^= x >> 27;
  x *= 0x94D049BB133111EBull;
  x ^= x >> 31;
  return x;
}

// The argmax of a row (ties to the lowest id) eight lanes at a time: the row's max in one pass,
// then the first id holding it. nullopt when the row holds a NaN or +inf or is all -inf, which
// the scalar loop below then reports.
__attribute__((target("avx2"))) std::optional<int32_t> ArgmaxAvx2(const float* x, size_t n) {
  const internal::ZeroUpperOnExit zero_upper;
  const __m256 inf = _mm256_set1_ps(std::numeric_limits<float>::infinity());
  __m256 mx = _mm256_set1_ps(-std::numeric_limits<float>::infinity());
  __m256 bad = _mm256_setzero_ps();
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m256 v = _mm256_loadu_ps(x + i);
    bad = _mm256_or_ps(
        bad, _mm256_or_ps(_mm256_cmp_ps(v, v, _CMP_UNORD_Q), _mm256_cmp_ps(v, inf, _CMP_EQ_OQ)));
    mx = _mm256_max_ps(mx, v);
  }
  if (_mm256_movemask_ps(bad) != 0) return std::nullopt;
  float m = internal::HorizontalMax(mx);  // no NaN lanes: checked above
  for (size_t j = i; j < n; ++j) {
    if (std::isnan(x[j]) || x[j] == std::numeric_limits<float>::infinity()) return std::nullopt;
    m = std::max(m, x[j]);
  }
  if (m == -std::numeric_limits<float>::infinity()) return std::nullopt;
  // The first id equal to the max (-0 and +0 compare equal, as the scalar loop's > treats them).
  const __m256 mv = _mm256_set1_ps(m);
  for (i = 0; i + 8 <= n; i += 8) {
    const int mask = _mm256_movemask_ps(_mm256_cmp_ps(_mm256_loadu_ps(x + i), mv, _CMP_EQ_OQ));
    if (mask != 0) return static_cast<int32_t>(i + static_cast<size_t>(__builtin_ctz(mask)));
  }
  for (; i < n; ++i) {
    if (x[i] == m) return static_cast<int32_t>(i);
  }
  return std::nullopt;  // not reached: m is one of the values
}

// Checks the row and returns its argmax (ties to the lowest id).
absl::StatusOr<int32_t> CheckedArgmax(std::span<const float> logits) {
  if (logits.empty()) return absl::InvalidArgumentError("logits row is empty");
  if (logits.size() > static_cast<size_t>(std::numeric_limits<int32_t>::max())) {
    return absl::InvalidArgumentError("logits row is longer than the int32 id range");
  }
  static const bool avx2 = Cpu().avx2;
  if (avx2) {
    if (const std::optional<int32_t> best = ArgmaxAvx2(logits.data(), logits.size())) return *best;
  }
  // Plain loop: without AVX2, and to say what is wrong with a row the AVX2 pass refused.
  int32_t best = -1;
  float best_value = -std::numeric_limits<float>::infinity();
  for (size_t i = 0; i < logits.size(); ++i) {
    const float v = logits[i];
    if (std::isnan(v) || v == std::numeric_limits<float>::infinity()) {
      return absl::InvalidArgumentError(
          absl::StrCat("logit of id ", i, " is ", v, "; logits must be finite or -inf"));
    }
    if (v > best_value) {
      best_value = v;
      best = static_cast<int32_t>(i);
    }
  }
  if (best < 0) return absl::InvalidArgumentError("every logit is -inf: no id can be chosen");
  return best;
}

// Ids ordered by descending logit, ties by ascending id.
struct ByLogitDesc {
  std::span<const float> logits;
  bool operator()(int32_t a, int32_t b) const {
    return logits[a] != logits[b] ? logits[a] > logits[b] : a < b;
  }
};

// Moves the nucleus to the front of ids and returns its size: the smallest set of ids that come
// first in `desc` order whose weights sum to >= need (at least one id). Weighted quickselect:
// expected O(n), no full sort.
size_t SelectNucleus(std::vector<int32_t>& ids, const std::vector<double>& w, double need,
                     const ByLogitDesc& desc) {
  size_t lo = 0, hi = ids.size();  // ids[0, lo) are in the nucleus; it ends inside [lo, hi)
  double acc = 0;                  // weight of ids[0, lo)
  while (hi - lo > 16) {
    const size_t mid_pos = lo + (hi - lo) / 2;
    const int32_t pivot = ids[mid_pos];
    std::swap(ids[mid_pos], ids[hi - 1]);
    const auto first = ids.begin() + lo;
    const auto mid =
        std::partition(first, ids.begin() + hi - 1, [&](int32_t id) { return desc(id, pivot); });
    double left = 0;
    for (auto it = first; it != mid; ++it) left += w[*it];
    if (acc + left >= need) {
      hi = mid - ids.begin();
    } else {
      std::swap(*mid, ids[hi - 1]);  // the pivot follows everything before it
      acc += left + w[pivot];
      lo = (mid - ids.begin()) + 1;
      if (acc >= need) return lo;
    }
  }
  std::sort(ids.begin() + lo, ids.begin() + hi, desc);
  while (lo < hi && acc < need) acc += w[ids[lo++]];
  return std::max<size_t>(lo, 1);
}

int32_t Draw(std::span<const float> logits, const SamplingParams& params, uint64_t step,
             int32_t argmax) {
  const double max_logit = logits[argmax];
  const double inv_t = 1.0 / static_cast<double>(params.temperature);
  std::vector<int32_t> ids;
  ids.reserve(logits.size());
  for (size_t i = 0; i < logits.size(); ++i) {
    if (logits[i] != -std::numeric_limits<float>::infinity())
      ids.push_back(static_cast<int32_t>(i));
  }
  const ByLogitDesc desc{logits};
  if (params.top_k > 0 && static_cast<size_t>(params.top_k) < ids.size()) {
    std::nth_element(ids.begin(), ids.begin() + (params.top_k - 1), ids.end(), desc);
    const float kth = logits[ids[params.top_k - 1]];
    ids.erase(std::partition(ids.begin() + params.top_k, ids.end(),
                             [&](int32_t id) { return logits[id] == kth; }),
              ids.end());
  }
  // Unnormalised probabilities after temperature, the max at 1 (d * inf would be NaN for it).
  std::vector<double> w(logits.size(), 0.0);
  double total = 0;
  for (int32_t id : ids) {
    const double d = static_cast<double>(logits[id]) - max_logit;
    total += w[id] = d == 0.0 ? 1.0 : std::exp(d * inv_t);
  }
  size_t keep = ids.size();
  if (params.top_p < 1.0f) {
    keep = SelectNucleus(ids, w, static_cast<double>(params.top_p) * total, desc);
  }
  if (params.min_p > 0.0f) {
    // p / max p is w (the argmax's w is 1, and it is kept): keep w >= min_p, in order.
    const double min_w = static_cast<double>(params.min_p);
    keep = static_cast<size_t>(std::stable_partition(ids.begin(), ids.begin() + keep,
                                                     [&](int32_t id) { return w[id] >= min_w; }) -
                               ids.begin());
  }
  if (params.top_p < 1.0f || params.min_p > 0.0f) {  // renormalise over what they kept
    total = 0;
    for (size_t i = 0; i < keep; ++i) total += w[ids[i]];
  }
  const double target = Uniform01(params.seed, step) * total;
  double acc = 0;
  for (size_t i = 0; i < keep; ++i) {
    acc += w[ids[i]];
    if (acc > target) return ids[i];
  }
  // Only where u * total rounded up to total (u within 2^-52 of 1): the last kept id that
  // has any weight (one whose weight underflowed to 0, a -100 bias say, is never drawn).
  for (size_t i = keep; i > 0; --i) {
    if (w[ids[i - 1]] > 0.0) return ids[i - 1];
  }
  return argmax;  // kept, with weight 1: not reached
}

void FillLogprobs(std::span<const float> logits, const SamplingParams& params, int32_t argmax,
                  SampledToken& out) {
  const double max_logit = logits[argmax];
  double sum = 0;
  for (float v : logits) sum += std::exp(static_cast<double>(v) - max_logit);
  const double log_sum = std::log(sum);
  // (logit - max) first: max + log_sum would round away log_sum next to a huge max.
  auto logprob = [&](int32_t id) {
    return static_cast<float>((static_cast<double>(logits[id]) - max_logit) - log_sum);
  };
  if (params.return_logprob) out.logprob = logprob(out.token);
  if (params.top_logprobs > 0) {
    // The n likeliest in one pass, kept sorted (n <= kMaxTopLogprobs): no vocab-sized buffer
    // for each scored position.
    const size_t n = std::min<size_t>(params.top_logprobs, logits.size());
    const ByLogitDesc before{logits};
    std::vector<int32_t> top;
    top.reserve(n + 1);
    for (int32_t id = 0; id < static_cast<int32_t>(logits.size()); ++id) {
      if (top.size() == n && !before(id, top.back())) continue;
      top.insert(std::upper_bound(top.begin(), top.end(), id, before), id);
      if (top.size() > n) top.pop_back();
    }
    out.top.reserve(n);
    for (int32_t id : top) out.top.push_back({id, logprob(id)});
  }
}

absl::Status CheckPenalty(const char* name, float penalty) {
  if (!(penalty >= -kMaxPenalty && penalty <= kMaxPenalty)) {
    return absl::InvalidArgumentError(absl::StrCat(name, " is ", penalty, "; it must be in [",
                                                   -kMaxPenalty, ", ", kMaxPenalty,
                                                   "] (0 = off)"));
  }
  return absl::OkStatus();
}

// The id of `ids` outside [0, vocab), if any.
std::optional<int32_t> OutsideVocabulary(std::span<const int32_t> ids, size_t vocab) {
  for (int32_t id : ids) {
    if (id < 0 || static_cast<size_t>(id) >= vocab) return id;
  }
  return std::nullopt;
}

}  // namespace

absl::Status ValidateSamplingParams(const SamplingParams& p) {
  if (!(p.temperature >= 0.0f) || std::isinf(p.temperature)) {
    return absl::InvalidArgumentError(absl::StrCat("temperature is ", p.temperature,
                                                   "; it must be finite and >= 0 (0 = greedy)"));
  }
  if (!(p.top_p > 0.0f && p.top_p <= 1.0f)) {
    return absl::InvalidArgumentError(
        absl::StrCat("top_p is ", p.top_p, "; it must be in (0, 1] (1 = no nucleus filter)"));
  }
  if (p.top_k < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("top_k is ", p.top_k, "; it must be >= 0 (0 = no limit)"));
  }
  if (!(p.min_p >= 0.0f && p.min_p <= 1.0f)) {
    return absl::InvalidArgumentError(
        absl::StrCat("min_p is ", p.min_p, "; it must be in [0, 1] (0 = off)"));
  }
  if (!(p.repetition_penalty > 0.0f) || std::isinf(p.repetition_penalty)) {
    return absl::InvalidArgumentError(absl::StrCat("repetition_penalty is ", p.repetition_penalty,
                                                   "; it must be finite and > 0 (1 = off)"));
  }
  RETURN_IF_ERROR(CheckPenalty("frequency_penalty", p.frequency_penalty));
  RETURN_IF_ERROR(CheckPenalty("presence_penalty", p.presence_penalty));
  if (p.top_logprobs < 0 || p.top_logprobs > kMaxTopLogprobs) {
    return absl::InvalidArgumentError(absl::StrCat("top_logprobs is ", p.top_logprobs,
                                                   "; it must be in [0, ", kMaxTopLogprobs, "]"));
  }
  return absl::OkStatus();
}

double Uniform01(uint64_t seed, uint64_t step) {
  const uint64_t key = Mix64(seed + 0x9E3779B97F4A7C15ull);
  const uint64_t bits = Mix64(key ^ Mix64((step + 1) * 0xD1B54A32D192ED03ull));
  return static_cast<double>(bits >> 11) * 0x1.0p-53;
}

absl::StatusOr<int32_t> Argmax(std::span<const float> logits) { return CheckedArgmax(logits); }

absl::Status ApplyRepetitionPenalty(std::span<float> logits, std::span<const int32_t> seen,
                                    float penalty) {
  if (!(penalty > 0.0f) || std::isinf(penalty)) {
    return absl::InvalidArgumentError(
        absl::StrCat("repetition_penalty is ", penalty, "; it must be finite and > 0 (1 = off)"));
  }
  if (std::optional<int32_t> bad = OutsideVocabulary(seen, logits.size())) {
    return absl::InvalidArgumentError(absl::StrCat(
        "repetition penalty: token id ", *bad, " is outside the vocabulary of ", logits.size()));
  }
  std::vector<int32_t> ids(seen.begin(), seen.end());
  std::sort(ids.begin(), ids.end());
  ids.erase(std::unique(ids.begin(), ids.end()), ids.end());
  for (int32_t id : ids) {
    float& v = logits[static_cast<size_t>(id)];
    const float penalized = v > 0.0f ? v / penalty : v * penalty;
    // A tiny penalty must not make a finite logit infinite (the row would be refused as if
    // the model had sent it); -inf (a masked token) stays -inf.
    v = std::isfinite(v) ? std::clamp(penalized, -std::numeric_limits<float>::max(),
                                      std::numeric_limits<float>::max())
                         : penalized;
  }
  return absl::OkStatus();
}

absl::Status ApplyTokenMask(std::span<const float> logits, const TokenMask& mask,
                            std::vector<float>& out) {
  for (int32_t id : mask.ids) {
    if (id < 0 || static_cast<size_t>(id) >= logits.size()) {
      return absl::InvalidArgumentError(
          absl::StrCat("token mask id ", id, " is outside the vocabulary of ", logits.size()));
    }
  }
  constexpr float kBanned = -std::numeric_limits<float>::infinity();
  if (mask.allow) {
    out.assign(logits.size(), kBanned);
    for (int32_t id : mask.ids) out[static_cast<size_t>(id)] = logits[static_cast<size_t>(id)];
  } else {
    out.assign(logits.begin(), logits.end());
    for (int32_t id : mask.ids) out[static_cast<size_t>(id)] = kBanned;
  }
  return absl::OkStatus();
}

absl::Status ApplyLogitBias(std::span<float> logits, std::span<const TokenBias> bias) {
  for (const TokenBias& b : bias) {
    if (b.token < 0 || static_cast<size_t>(b.token) >= logits.size()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "logit_bias: token id ", b.token, " is outside the vocabulary of ", logits.size()));
    }
    if (std::isnan(b.bias) || b.bias == std::numeric_limits<float>::infinity()) {
      return absl::InvalidArgumentError(
          absl::StrCat("logit_bias of token ", b.token, " is ", b.bias,
                       "; it must be finite (or -inf to ban the token)"));
    }
  }
  for (const TokenBias& b : bias) logits[static_cast<size_t>(b.token)] += b.bias;
  return absl::OkStatus();
}

absl::Status ApplyFrequencyPresencePenalties(std::span<float> logits,
                                             std::span<const int32_t> generated, float frequency,
                                             float presence) {
  RETURN_IF_ERROR(CheckPenalty("frequency_penalty", frequency));
  RETURN_IF_ERROR(CheckPenalty("presence_penalty", presence));
  if (std::optional<int32_t> bad = OutsideVocabulary(generated, logits.size())) {
    return absl::InvalidArgumentError(
        absl::StrCat("frequency / presence penalty: token id ", *bad,
                     " is outside the vocabulary of ", logits.size()));
  }
  std::vector<int32_t> ids(generated.begin(), generated.end());
  std::sort(ids.begin(), ids.end());
  for (size_t i = 0; i < ids.size();) {
    size_t j = i;
    while (j < ids.size() && ids[j] == ids[i]) ++j;
    // In float, as vLLM does; -inf minus a finite value stays -inf.
    logits[static_cast<size_t>(ids[i])] -= frequency * static_cast<float>(j - i) + presence;
    i = j;
  }
  return absl::OkStatus();
}

absl::StatusOr<SampledToken> SampleToken(std::span<const float> logits,
                                         const SamplingParams& params, uint64_t step,
                                         std::span<const int32_t> seen,
                                         std::span<const int32_t> generated) {
  RETURN_IF_ERROR(ValidateSamplingParams(params));
  ASSIGN_OR_RETURN(const int32_t model_argmax, CheckedArgmax(logits));
  // The row the logprobs are of: the model's, or under a token mask the masked one (vLLM V1
  // applies its grammar bitmask before its sampler computes them).
  std::span<const float> scored = logits;
  int32_t scored_argmax = model_argmax;
  std::vector<float> guided;
  if (params.mask.has_value()) {
    RETURN_IF_ERROR(ApplyTokenMask(logits, *params.mask, guided));
    ASSIGN_OR_RETURN(scored_argmax, CheckedArgmax(guided));
    scored = guided;
  }
  std::span<const float> chosen_from = scored;
  std::vector<float> penalized;
  int32_t argmax = scored_argmax;
  const bool repetition = params.repetition_penalty != 1.0f && !seen.empty();
  const bool counted =
      (params.frequency_penalty != 0.0f || params.presence_penalty != 0.0f) && !generated.empty();
  const bool biased = !params.logit_bias.empty();
  if (repetition || counted || biased) {
    penalized.assign(scored.begin(), scored.end());
    if (biased) RETURN_IF_ERROR(ApplyLogitBias(penalized, params.logit_bias));
    if (repetition) {
      RETURN_IF_ERROR(ApplyRepetitionPenalty(penalized, seen, params.repetition_penalty));
    }
    if (counted) {
      RETURN_IF_ERROR(ApplyFrequencyPresencePenalties(
          penalized, generated, params.frequency_penalty, params.presence_penalty));
    }
    chosen_from = penalized;
    ASSIGN_OR_RETURN(argmax, CheckedArgmax(chosen_from));
  }
  SampledToken out;
  out.token = params.temperature == 0.0f || params.top_k == 1
                  ? argmax
                  : Draw(chosen_from, params, step, argmax);
  if (params.return_logprob || params.top_logprobs > 0) {
    FillLogprobs(scored, params, scored_argmax, out);
  }
  return out;
}

absl::StatusOr<SampledToken> ScoreToken(std::span<const float> logits, int32_t token,
                                        int32_t top_logprobs) {
  SamplingParams params;
  params.return_logprob = true;
  params.top_logprobs = top_logprobs;
  RETURN_IF_ERROR(ValidateSamplingParams(params));
  ASSIGN_OR_RETURN(const int32_t argmax, CheckedArgmax(logits));
  if (token < 0 || static_cast<size_t>(token) >= logits.size()) {
    return absl::InvalidArgumentError(
        absl::StrCat("scored token id ", token, " is outside the vocabulary of ", logits.size()));
  }
  SampledToken out;
  out.token = token;
  FillLogprobs(logits, params, argmax, out);
  return out;
}

absl::StatusOr<std::vector<SampledToken>> SampleBatch(std::span<const float> logits, int64_t batch,
                                                      int64_t vocab,
                                                      std::span<const SamplingParams> params,
                                                      std::span<const uint64_t> steps) {
  if (batch < 0 || vocab <= 0 ||
      static_cast<uint64_t>(batch) * static_cast<uint64_t>(vocab) != logits.size()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "logits has ", logits.size(), " values, expected batch ", batch, " x vocab ", vocab));
  }
  if (params.size() != static_cast<size_t>(batch) || steps.size() != static_cast<size_t>(batch)) {
    return absl::InvalidArgumentError(absl::StrCat("batch ", batch, " needs as many params (",
                                                   params.size(), ") and steps (", steps.size(),
                                                   ")"));
  }
  std::vector<SampledToken> out;
  out.reserve(batch);
  for (int64_t r = 0; r < batch; ++r) {
    auto token = SampleToken(logits.subspan(r * vocab, vocab), params[r], steps[r]);
    if (!token.ok()) {
      return absl::Status(token.status().code(),
                          absl::StrCat("row ", r, ": ", token.status().message()));
    }
    out.push_back(*std::move(token));
  }
  return out;
}

}  // namespace llmint8::kernels
