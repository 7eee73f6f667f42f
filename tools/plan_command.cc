// `llmint8 plan`: the memory planner (coordinator/planner.h) on the command line.
#include <cstdio>
#include <filesystem>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/status/statusor.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/json_text.h"
#include "common/status_macros.h"
#include "coordinator/planner.h"
#include "model/model_spec.h"
#include "nlohmann/json.hpp"
#include "tools/flags.h"
#include "tools/offline_commands.h"
#include "tools/subcommands.h"

namespace llmint8::tools {
namespace {

using coordinator::PlanCommand;

// RunPlanCommand for a config already in hand (synthetic:<preset> specs, which the planner's
// own model resolution does not know).
absl::StatusOr<std::string> PlanConfig(const model::OptConfig& config, const PlanCommand& cmd) {
  const coordinator::Reserve reserve = coordinator::Reserve::Tokens(cmd.batch, cmd.context);
  if (cmd.compare) {
    const std::vector<coordinator::GpuSize> gpus = coordinator::DefaultCompareGpuSizes();
    ASSIGN_OR_RETURN(const coordinator::CompareTable table,
                     coordinator::Compare(config, gpus, reserve));
    return cmd.json ? JsonText(coordinator::CompareToJson(table), 2) + "\n"
                    : coordinator::CompareToText(table);
  }
  ASSIGN_OR_RETURN(const coordinator::WeightDType dtype, coordinator::ParseWeightDType(cmd.dtype));
  ASSIGN_OR_RETURN(const int64_t gpu_bytes, coordinator::ParseGpuMemory(cmd.gpu_memory));
  coordinator::PlanOptions options;
  options.available_gpus = cmd.gpus;
  ASSIGN_OR_RETURN(const coordinator::PlanResult plan,
                   coordinator::Plan(config, dtype, gpu_bytes, reserve, options));
  return cmd.json ? JsonText(coordinator::PlanToJson(plan), 2) + "\n"
                  : coordinator::PlanToText(plan);
}

absl::StatusOr<std::string> RunPlanFlags() {
  PlanCommand cmd;
  cmd.model = absl::GetFlag(FLAGS_model);
  cmd.dtype = absl::GetFlag(FLAGS_dtype);
  cmd.gpu_memory = absl::GetFlag(FLAGS_gpu_memory);
  cmd.gpus = absl::GetFlag(FLAGS_gpus);
  cmd.batch = absl::GetFlag(FLAGS_batch);
  cmd.context = absl::GetFlag(FLAGS_context);
  cmd.compare = absl::GetFlag(FLAGS_compare);
  cmd.json = absl::GetFlag(FLAGS_json);
  if (cmd.gpus < 0) {
    return absl::InvalidArgumentError("--gpus must be >= 0 (0: as many as the model needs)");
  }
  if (cmd.compare && cmd.gpus != 0) {
    return absl::InvalidArgumentError(
        "--compare counts the GPUs each model needs; --gpus (a count to check) is for one plan "
        "without --compare");
  }
  if (cmd.batch < 1) return absl::InvalidArgumentError("--batch must be >= 1");
  if (cmd.context < 0) {
    return absl::InvalidArgumentError("--context must be >= 0 (0: max_position_embeddings)");
  }
  std::error_code ec;
  // A name with a slash is a path unless it is a preset ("facebook/opt-13b").
  if (absl::StrContains(cmd.model, '/') && !std::filesystem::exists(cmd.model, ec) &&
      !model::OptPreset(cmd.model).ok()) {
    return absl::NotFoundError(
        absl::StrCat("--model=", cmd.model, " does not exist; pass a preset (",
                     absl::StrJoin(model::OptPresetNames(), ", "),
                     "), a config.json, a model directory or synthetic:<preset>"));
  }
  if (absl::StartsWith(cmd.model, "synthetic:")) {
    ASSIGN_OR_RETURN(const model::OptConfig config, model::LoadModelSpecConfig(cmd.model));
    return PlanConfig(config, cmd);
  }
  return coordinator::RunPlanCommand(cmd);
}

}  // namespace

int RunPlan() {
  absl::StatusOr<std::string> text = RunPlanFlags();
  if (!text.ok()) {
    std::fprintf(stderr, "llmint8 plan: %s\n", std::string(text.status().message()).c_str());
    // A model that does not fit (FailedPrecondition) is an answer, not a typo; a config that
    // is missing or may not be read is the command line's.
    const absl::StatusCode code = text.status().code();
    return code == absl::StatusCode::kInvalidArgument || code == absl::StatusCode::kNotFound ||
                   code == absl::StatusCode::kPermissionDenied
               ? kExitBadFlags
               : kExitFailed;
  }
  std::fputs(text->c_str(), stdout);
  return kExitOk;
}

}  // namespace llmint8::tools
