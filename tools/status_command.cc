// status: what a running coordinator serves and the state of each of its workers, for an
// operator (text) or a script (--json: ModelInfo in proto3's JSON mapping, so 64-bit counts
// are strings). Exit code 0 while the coordinator is SERVING, 1 when it is not (or cannot be
// reached; --json then prints the error), 2 for bad flags. An idle spare's state is as of the
// coordinator's last probe of it (every 2 s while the group serves).
#include <chrono>
#include <cstdio>
#include <string>

#include "absl/flags/flag.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/time/time.h"
#include "common/byte_size.h"
#include "common/grpc_status.h"
#include "common/json_text.h"
#include "coordinator/generation_defaults.h"
#include "google/protobuf/util/json_util.h"
#include "grpcpp/grpcpp.h"
#include "llmint8/v1/generation.grpc.pb.h"
#include "nlohmann/json.hpp"
#include "tools/client_auth.h"
#include "tools/health_client.h"
#include "tools/offline_commands.h"
#include "tools/subcommands.h"

namespace llmint8::tools {
namespace {

const char* HealthName(int health) {
  switch (health) {
    case 1:
      return "SERVING";
    case 2:
      return "NOT_SERVING";
    case 0:
      return "UNKNOWN";
    case 3:
      return "SERVICE_UNKNOWN";
    default:
      return "UNREACHABLE";
  }
}

void PrintText(const std::string& target, int health, const v1::ModelInfo& info) {
  std::printf("coordinator %s: %s\n", target.c_str(), HealthName(health));
  if (!info.group_state().empty() && info.group_state() != "ready") {
    std::printf("group    %s%s%s\n", info.group_state().c_str(),
                info.group_error().empty() ? "" : ": ", info.group_error().c_str());
  }
  std::printf("model    %s: %s", info.model().c_str(), info.dtype().c_str());
  if (info.dtype() == "int8") std::printf(" (outlier threshold %g)", info.threshold());
  std::printf(", %d-way tensor parallel over %s\n", info.tensor_parallel(), info.backend().c_str());
  std::printf("         %lld parameters, vocabulary %d, context %d tokens, %s\n",
              static_cast<long long>(info.num_parameters()), info.vocab_size(), info.max_context(),
              info.has_tokenizer() ? "tokenizer" : "token ids only");
  std::printf("batching up to %d sequences per step, queue of %d requests", info.max_batch(),
              info.queue_capacity());
  // A coordinator older than the fields sends neither.
  if (!info.preemption().empty()) {
    std::printf(", KV budget %lld positions (preemption %s)",
                static_cast<long long>(info.kv_budget_positions()), info.preemption().c_str());
  }
  if (!info.scheduling().empty()) {
    std::printf(", scheduling %s", info.scheduling().c_str());
  }
  if (info.resume_on_group_loss_seconds() > 0) {
    std::printf(", streams wait %s for a lost group",
                absl::FormatDuration(absl::Seconds(info.resume_on_group_loss_seconds())).c_str());
  }
  if (info.speculative_tokens() > 0) {
    std::printf(", speculative decoding: %d draft tokens by prompt lookup (n %d..%d)",
                info.speculative_tokens(), info.prompt_lookup_min(), info.prompt_lookup_max());
  }
  std::printf("\n");
  // A coordinator older than eos_token_ids sends its one eos_token_id.
  const std::string eos = info.eos_token_ids().empty() ? absl::StrCat(info.eos_token_id())
                                                       : absl::StrJoin(info.eos_token_ids(), ", ");
  std::printf("ends at   token id%s %s", info.eos_token_ids_size() > 1 ? "s" : "", eos.c_str());
  const v1::GenerationDefaults& defaults = info.generation_defaults();
  if (defaults.source().empty()) {
    std::printf("; no generation_config.json\n");
  } else {
    std::printf("; HTTP API defaults %s (%s)\n",
                coordinator::DescribeGenerationDefaults(defaults).c_str(),
                defaults.source().c_str());
  }
  std::printf("workers\n  %-4s  %-24s  %-7s  %-10s  %-10s  %-10s  %s\n", "rank", "address",
              "device", "weights", "KV cache", "total", "state");
  for (const v1::WorkerInfo& w : info.workers()) {
    std::printf("  %-4s  %-24s  %-7s  %-10s  %-10s  %-10s  %s\n",
                w.rank() >= 0 ? absl::StrCat(w.rank()).c_str() : "-", w.address().c_str(),
                w.device().empty() ? "?" : w.device().c_str(),
                FormatBytes(w.weight_bytes()).c_str(), FormatBytes(w.kv_cache_bytes()).c_str(),
                FormatBytes(w.total_bytes()).c_str(), w.state().c_str());
  }
}

}  // namespace

int RunStatus() {
  absl::StatusOr<std::shared_ptr<grpc::Channel>> channel = CoordinatorChannelFromFlags();
  if (!channel.ok()) {
    std::fprintf(stderr, "llmint8 status: %s\n", channel.status().ToString().c_str());
    return 2;
  }
  const std::string target = CoordinatorTargetFromFlags();
  const bool json = absl::GetFlag(FLAGS_json);
  // Both calls share one 10 s budget (a coordinator that did not answer the health check is
  // asked GetModelInfo only for why, within what is left of it).
  const absl::Time deadline = absl::Now() + absl::Seconds(10);
  const int health = HealthCheck(*channel, deadline - absl::Now());
  grpc::Status status;
  v1::ModelInfo info;
  {
    // Without a health answer too: its error says why (a refused connection, a failed TLS
    // handshake, a name the certificate does not hold), which the health client does not.
    auto stub = v1::Generation::NewStub(*channel);
    grpc::ClientContext ctx;
    AddApiKey(ctx);
    ctx.set_deadline(absl::ToChronoTime(deadline));
    status = stub->GetModelInfo(&ctx, v1::GetModelInfoRequest(), &info);
  }
  if (health < 0 || !status.ok()) {
    const std::string error =
        health < 0
            ? absl::StrCat("UNAVAILABLE: no coordinator answered the health check at ", target,
                           status.ok() ? std::string() : absl::StrCat(": ", status.error_message()),
                           " (is it running? is --coordinator right? over TLS: "
                           "--tls_ca_file, --tls_cert_file, --tls_key_file)")
            : FromGrpcStatus(status, absl::StrCat("GetModelInfo on ", target)).ToString() +
                  ApiKeyHint(status.error_code());
    if (json) {  // a script reads what went wrong from stdout too
      const nlohmann::ordered_json out = {
          {"coordinator", target}, {"health", HealthName(health)}, {"error", error}};
      std::printf("%s\n", JsonText(out, 2).c_str());
    }
    std::fprintf(stderr, "llmint8 status: %s\n", error.c_str());
    return 1;
  }
  if (json) {
    std::string model_info;
    google::protobuf::util::JsonPrintOptions options;
    options.preserve_proto_field_names = true;
    options.always_print_primitive_fields = true;
    if (!google::protobuf::util::MessageToJsonString(info, &model_info, options).ok()) {
      std::fprintf(stderr, "llmint8 status: cannot print the model info as JSON\n");
      return 1;
    }
    const nlohmann::ordered_json out = {{"coordinator", target},
                                        {"health", HealthName(health)},
                                        {"model_info", nlohmann::ordered_json::parse(model_info)}};
    std::printf("%s\n", JsonText(out, 2).c_str());
  } else {
    PrintText(target, health, info);
  }
  return health == 1 ? 0 : 1;
}

}  // namespace llmint8::tools
