#include "coordinator/group_decision.h"

#include <algorithm>
#include <numeric>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/status_macros.h"
#include "coordinator/planner.h"
#include "model/shard_plan.h"

namespace llmint8::coordinator {
namespace {
// Debian's abseil has its own string_view type; the public API speaks std::string_view.
absl::string_view Av(std::string_view s) { return absl::string_view(s.data(), s.size()); }
}  // namespace

std::string_view GroupPolicyName(GroupPolicy policy) {
  return policy == GroupPolicy::kSmallest ? "smallest" : "all";
}

absl::StatusOr<GroupPolicy> ParseGroupPolicy(std::string_view name) {
  if (name == "all") return GroupPolicy::kAllWorkers;
  if (name == "smallest") return GroupPolicy::kSmallest;
  return absl::InvalidArgumentError(
      absl::StrCat("--group=", Av(name),
                   " is not a group policy; use all (every worker) or smallest (the "
                   "fewest workers that hold the model)"));
}

std::vector<int> MemorySharers(std::span<const std::string> pools) {
  std::vector<int> sharers(pools.size(), 1);
  for (size_t i = 0; i < pools.size(); ++i) {
    if (pools[i].empty()) continue;
    sharers[i] = static_cast<int>(std::count(pools.begin(), pools.end(), pools[i]));
  }
  return sharers;
}

namespace {
constexpr int64_t kMaxBytes = int64_t{1} << 61;  // 2 EiB: more than any real report
}  // namespace

std::vector<int64_t> MemoryPoolShares(std::span<const int64_t> reported,
                                      std::span<const int64_t> held,
                                      std::span<const std::string> pools) {
  std::vector<int64_t> out(reported.begin(), reported.end());
  const std::vector<int> sharers = MemorySharers(pools);
  for (size_t i = 0; i < pools.size(); ++i) {
    if (pools[i].empty() || reported[i] <= 0) continue;  // 0: unknown stays unknown
    int64_t free = 0;
    int64_t held_in_pool = 0;
    for (size_t j = 0; j < pools.size(); ++j) {
      if (pools[j] != pools[i]) continue;
      // A worker's numbers are its own report: each within [0, 2^61], held within what it
      // reported, sums bounded below 2^63.
      const int64_t r = std::clamp<int64_t>(reported[j], 0, kMaxBytes);
      const int64_t h = std::clamp<int64_t>(held[j], 0, r);
      free = std::max(free, r - h);
      held_in_pool = std::min(held_in_pool + h, kMaxBytes);
    }
    out[i] = (free + held_in_pool) / sharers[i];
  }
  return out;
}

absl::StatusOr<GroupChoice> ChooseGroup(const model::OptConfig& config, const GroupRequest& request,
                                        std::span<const int64_t> reported_bytes) {
  const int joined = static_cast<int>(reported_bytes.size());
  if (joined == 0) return absl::InvalidArgumentError("no workers to form a group from");
  GroupChoice all;
  all.members.resize(joined);
  std::iota(all.members.begin(), all.members.end(), 0);
  // Not planned: every worker joins, but with --group=smallest (whose worker count the
  // coordinator did not check against the model) the most that split it, the first ones.
  // (TP 1 is valid for every model config accepted.)
  auto unplanned = [&](std::string why) {
    if (request.policy == GroupPolicy::kSmallest) {
      const std::vector<int> valid = model::ValidTpDegrees(config);
      const auto most =
          std::find_if(valid.rbegin(), valid.rend(), [joined](int tp) { return tp <= joined; });
      if (most != valid.rend() && *most < joined) {
        all.members.resize(static_cast<size_t>(*most));
        all.summary = absl::StrCat(why, "; ", *most, " of the ", joined,
                                   " workers join unplanned (the most that split the model)");
        return all;
      }
    }
    all.summary = absl::StrCat(
        why, "; ",
        joined == 1 ? "the one worker joins" : absl::StrCat("all ", joined, " workers join"),
        " unplanned");
    return all;
  };
  if (request.dtype == "fp32" || request.dtype == "f32") return unplanned("fp32 is not planned");
  for (int i = 0; i < joined; ++i) {
    if (reported_bytes[i] <= 0) {
      return unplanned(absl::StrCat("worker ", i, " reports no memory size"));
    }
  }
  ASSIGN_OR_RETURN(const WeightDType dtype, ParseWeightDType(request.dtype));
  if (request.reserve_sequences < 1) {
    return absl::InvalidArgumentError("the plan's reserve of sequences must be >= 1");
  }
  const Reserve reserve = Reserve::Tokens(
      request.reserve_sequences,
      request.max_context > 0 ? request.max_context : config.max_position_embeddings);
  PlanOptions options;
  options.runtime_overhead_bytes = request.device == "cuda" ? kRuntimeOverheadBytes : 0;
  options.cpu = request.device != "cuda";
  options.max_step_tokens = request.max_step_tokens;
  options.max_step_rows = request.max_step_rows;
  options.max_sequences = request.max_batch;
  absl::StatusOr<GroupDecision> decision =
      PlanGroup(config, dtype, reported_bytes, reserve, options);
  if (!decision.ok()) {
    if (decision.status().code() != absl::StatusCode::kFailedPrecondition) {
      return decision.status();
    }
    return absl::FailedPreconditionError(absl::StrCat(
        "the workers cannot hold the model: ", decision.status().message(),
        dtype == WeightDType::kInt8 ? ". Start more workers or give them more memory"
                                    : ". Start more workers, give them more memory, or serve int8",
        " (each also keeps room for a step of --max_batch sequences and --score_chunk prompt "
        "tokens: smaller ones need less)"));
  }
  GroupChoice choice;
  choice.planned = true;
  if (request.policy == GroupPolicy::kSmallest) {
    choice.members = decision->workers;
    choice.bytes_per_worker = decision->plan.per_gpu.Total();
    choice.summary = decision->summary;
    return choice;
  }
  // Every worker: TP = joined (the coordinator checked it is a valid degree).
  ASSIGN_OR_RETURN(const MemoryBreakdown need,
                   BytesPerGpu(config, dtype, joined, reserve, options));
  for (int i = 0; i < joined; ++i) {
    if (reported_bytes[i] < need.Total()) {
      return absl::FailedPreconditionError(
          absl::StrCat("the workers cannot hold the model: ", Av(WeightDTypeName(dtype)),
                       " at TP=", joined, " needs ", FormatBytes(need.Total()),
                       " per worker, worker ", i, " has ", FormatBytes(reported_bytes[i]), "; ",
                       decision->summary, " (coordinator --group=smallest forms that group)"));
    }
  }
  choice.members = std::move(all.members);
  choice.bytes_per_worker = need.Total();
  choice.summary = absl::StrCat(Av(WeightDTypeName(dtype)), " on all ", joined, " workers (",
                                FormatBytes(need.Total()), " each); ", decision->summary);
  return choice;
}

}  // namespace llmint8::coordinator
