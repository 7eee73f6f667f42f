// llmint8: serve OPT models with LLM.int8() and tensor parallelism over gRPC.
//
//   llmint8 serve --model=DIR --tp=2             coordinator + 2 local workers, one command
//   llmint8 coordinator --workers=H:P,H:P ...    the front door, driving remote workers
//   llmint8 worker --listen=H:P                  one tensor-parallel shard
//   llmint8 generate --prompt="Hello"            stream an answer to the terminal
//   llmint8 loadtest --concurrency=8             a serving benchmark against a coordinator
//   llmint8 plan --model=175b --compare          GPUs needed in fp16 vs int8
//   llmint8 quantize --model=DIR --out=DIR8      write an int8 checkpoint
//   llmint8 eval --model=DIR --text=FILE         perplexity
//   llmint8 <subcommand> --help                  the flags of one subcommand
#include <cctype>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/reflection.h"
#include "absl/flags/usage.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "tools/flags.h"
#include "tools/offline_commands.h"
#include "tools/subcommands.h"

namespace {

struct Subcommand {
  const char* name;
  const char* summary;
  std::vector<const char*> flags;
};

const std::vector<Subcommand>& Subcommands() {
  // The flag lists stay packed.
  // clang-format off
  static const std::vector<Subcommand> kSubcommands = {
      {"serve",
       "Start a coordinator and --tp local worker processes (CPU with Gloo, or GPU with NCCL).",
       {"listen", "metrics_listen", "http_listen", "tls_cert_file", "tls_key_file",
        "tls_client_ca_file", "tls_ca_file", "model", "served_model_name", "tokenizer", "dtype", "threshold", "tp",
        "device", "backend", "memory_limit", "worker_base_port", "respawn", "max_batch",
        "queue_capacity", "max_context", "default_max_tokens", "generation_config", "override_generation_config",
        "prefill_chunk", "score_chunk", "kv_budget_tokens", "kv_budget_recovery", "preemption", "scheduling", "resume_on_group_loss", "speculative_tokens", "prompt_lookup_min", "prompt_lookup_max", "prefix_cache_entries", "guide_cache_entries", "max_message_bytes", "group", "join_wait",
        "worker_lease", "step_timeout", "load_timeout", "reserve_sequences", "drain_timeout",
        "client_keepalive", "log_requests", "check_flags"}},
      {"coordinator",
       "Serve the Generation API, driving the workers listed in --workers.",
       {"listen", "metrics_listen", "http_listen", "tls_cert_file", "tls_key_file",
        "tls_client_ca_file", "worker_tls_ca_file", "advertise", "rendezvous_listen", "workers", "model",
        "served_model_name", "tokenizer",
        "dtype", "threshold", "device", "backend", "max_batch", "queue_capacity", "max_context",
        "default_max_tokens", "generation_config", "override_generation_config", "prefill_chunk", "score_chunk",
        "kv_budget_tokens", "kv_budget_recovery", "preemption", "scheduling", "resume_on_group_loss",
        "speculative_tokens", "prompt_lookup_min", "prompt_lookup_max", "prefix_cache_entries", "guide_cache_entries", "max_message_bytes", "group", "join_wait", "worker_lease",
        "step_timeout", "load_timeout", "reserve_sequences", "drain_timeout", "client_keepalive",
        "log_requests",
        "check_flags"}},
      {"worker",
       "Serve one tensor-parallel shard; the coordinator assigns its rank and model.",
       {"listen", "coordinator", "device", "cuda_device", "memory_limit", "gloo_hostname",
        "gloo_interface", "tls_ca_file", "tls_cert_file", "tls_key_file", "tls_client_ca_file",
        "health_listen", "drain_timeout", "abandoned_group_timeout", "check_flags"}},
      {"generate",
       "Call a coordinator's Generate and stream the text to the terminal.",
       {"coordinator", "prompt", "token_ids", "max_new_tokens", "temperature", "top_k", "top_p",
        "repetition_penalty", "frequency_penalty", "presence_penalty", "min_p", "min_tokens", "priority",
        "truncate_prompt_tokens", "guided_choice", "guided_regex", "guided_json", "json_object",
        "seed", "stop", "stop_token_ids", "logit_bias", "logprobs", "top_logprobs",
        "prompt_logprobs", "echo_prompt", "ignore_eos", "timeout", "tls_ca_file", "tls_cert_file",
        "tls_key_file"}},
      {"loadtest",
       "Benchmark a coordinator: concurrent Generate calls; time to first token, per token, "
       "throughput.",
       {"coordinator", "requests", "concurrency", "prompt_tokens", "shared_prefix_tokens", "prompt",
        "temperature", "top_k", "top_p", "max_new_tokens", "end_at_eos", "priority", "guided_choice", "guided_regex", "guided_json",
        "json_object", "seed", "json", "tls_ca_file", "tls_cert_file", "tls_key_file"}},
      {"status",
       "What a coordinator serves and each worker's state (exit 0 while SERVING).",
       {"coordinator", "json", "tls_ca_file", "tls_cert_file", "tls_key_file"}},
      // plan, quantize, eval: tools/offline_commands.cc holds their flags and help.
      {"plan", llmint8::tools::OfflineCommandSummary("plan"), {}},
      {"quantize", llmint8::tools::OfflineCommandSummary("quantize"), {}},
      {"eval", llmint8::tools::OfflineCommandSummary("eval"), {}},
  };
  // clang-format on
  return kSubcommands;
}

void PrintTopUsage(FILE* out) {
  std::fprintf(out, "usage: llmint8 <subcommand> [--flags]\n\nsubcommands:\n");
  for (const Subcommand& s : Subcommands()) {
    std::fprintf(out, "  %-12s %s\n", s.name, s.summary);
  }
  std::fprintf(out, "\n'llmint8 <subcommand> --help' lists a subcommand's flags.\n");
}

void PrintHelp(const Subcommand& s) {
  std::printf("usage: llmint8 %s [--flags]\n\n%s\n\nflags:\n", s.name, s.summary);
  for (const char* name : s.flags) {
    absl::CommandLineFlag* flag = absl::FindCommandLineFlag(name);
    if (flag == nullptr) continue;
    std::printf("  --%s (default: \"%s\")\n      %s\n", name, flag->DefaultValue().c_str(),
                flag->Help().c_str());
  }
  const std::string example =
      llmint8::tools::DashedFlagExample(std::vector<std::string>(s.flags.begin(), s.flags.end()));
  if (!example.empty()) std::printf("\nFlag names accept dashes too (%s).\n", example.c_str());
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2 || std::strcmp(argv[1], "--help") == 0 || std::strcmp(argv[1], "-h") == 0 ||
      std::strcmp(argv[1], "help") == 0) {
    PrintTopUsage(argc < 2 ? stderr : stdout);
    return argc < 2 ? 2 : 0;
  }
  const Subcommand* sub = nullptr;
  for (const Subcommand& s : Subcommands()) {
    if (std::strcmp(argv[1], s.name) == 0) sub = &s;
  }
  if (sub == nullptr) {
    std::fprintf(stderr, "llmint8: unknown subcommand '%s'\n\n", argv[1]);
    PrintTopUsage(stderr);
    return 2;
  }
  if (llmint8::tools::OfflineCommandSummary(sub->name) != nullptr) {
    return llmint8::tools::RunOfflineCommand(argc, argv);
  }
  // argv for absl: program name, then the subcommand's flags, with dashes in flag names
  // turned into underscores.
  std::vector<std::string> args = {argv[0]};
  auto known = [sub](const std::string& f) {
    for (const char* name : sub->flags) {
      if (f == name) return true;
    }
    return false;
  };
  // A value that does not parse is refused here, exit 2 as for an unknown flag, in the words
  // the offline commands use (absl would print its own line and exit 1).
  auto bad_value = [sub](absl::CommandLineFlag* f, const std::string& value) {
    std::string error;
    if (f == nullptr || f->ParseFrom(value, &error)) return false;
    std::fprintf(stderr, "llmint8 %s: --%s=%s: %s\n", sub->name, std::string(f->Name()).c_str(),
                 value.c_str(), error.c_str());
    return true;
  };
  absl::CommandLineFlag* value_next = nullptr;  // `--name` of a non-bool flag: its value next
  for (int i = 2; i < argc; ++i) {
    std::string a = argv[i];
    if (value_next != nullptr) {  // a value, whatever it starts with: `--seed -1`, `--prompt -x`
      // ... but not one of this subcommand's flags: `--prompt --max_new_tokens=5` forgot the
      // prompt.
      if (llmint8::tools::NamesAFlag(a, known)) {
        const std::string name(value_next->Name());
        std::fprintf(stderr, "llmint8 %s: --%s needs a value: --%s=<value> (%s is a flag)\n",
                     sub->name, name.c_str(), name.c_str(), a.c_str());
        return 2;
      }
      if (bad_value(value_next, a)) return 2;
      value_next = nullptr;
      args.push_back(std::move(a));
      continue;
    }
    if (a == "--help" || a == "-h" || a == "--helpfull") {
      PrintHelp(*sub);
      return 0;
    }
    // absl takes -name as --name too.
    const size_t dashes = a.rfind("--", 0) == 0 ? 2 : (a.size() > 1 && a[0] == '-' ? 1 : 0);
    if (dashes > 0 && a != "--") {
      size_t end = a.find('=');
      const bool has_value = end != std::string::npos;
      if (!has_value) end = a.size();
      for (size_t j = dashes; j < end; ++j) {
        if (a[j] == '-') a[j] = '_';
      }
      // Only the subcommand's own flags: another's would be ignored (a manifest passing
      // --tp to the coordinator, or --rank to a worker, should fail at once, not mislead).
      // absl's own --flagfile / --fromenv are not taken either: they would bypass this.
      const std::string flag = a.substr(dashes, end - dashes);
      const bool negated_bool = flag.rfind("no", 0) == 0 && known(flag.substr(2));
      if (negated_bool) {  // --notp: absl refuses a non-bool one with exit 1, in its words
        const absl::CommandLineFlag* negated = absl::FindCommandLineFlag(flag.substr(2));
        if (negated != nullptr && !negated->IsOfType<bool>()) {
          std::fprintf(stderr, "llmint8 %s: --%s: --%s is not a yes/no flag: --%s=<value>\n",
                       sub->name, flag.c_str(), flag.substr(2).c_str(), flag.substr(2).c_str());
          return 2;
        }
      }
      if (negated_bool && has_value) {  // --norespawn=true: absl refuses it with exit 1
        std::fprintf(stderr, "llmint8 %s: --%s takes no value: --%s or --%s=false\n", sub->name,
                     flag.c_str(), flag.c_str(), flag.substr(2).c_str());
        return 2;
      }
      if (!flag.empty() && !known(flag) && !negated_bool) {
        std::fprintf(stderr,
                     "llmint8 %s: --%s is not a flag of this subcommand; 'llmint8 %s --help' "
                     "lists them\n",
                     sub->name, flag.c_str(), sub->name);
        return 2;
      }
      absl::CommandLineFlag* f = absl::FindCommandLineFlag(flag);
      if (has_value && !negated_bool && bad_value(f, a.substr(end + 1))) return 2;
      value_next =
          !has_value && !negated_bool && f != nullptr && !f->IsOfType<bool>() ? f : nullptr;
    }
    args.push_back(std::move(a));
  }
  if (value_next != nullptr) {  // `--tp` last, its value forgotten
    const std::string name(value_next->Name());
    std::fprintf(stderr, "llmint8 %s: --%s needs a value: --%s=<value>\n", sub->name, name.c_str(),
                 name.c_str());
    return 2;
  }
  std::vector<char*> cargs;
  for (std::string& a : args) cargs.push_back(a.data());
  absl::SetProgramUsageMessage(absl::StrCat("llmint8 ", sub->name, ": ", sub->summary));
  std::vector<char*> positional =
      absl::ParseCommandLine(static_cast<int>(cargs.size()), cargs.data());
  if (positional.size() > 1) {
    std::fprintf(stderr, "llmint8 %s: unexpected argument '%s' (flags are --name=value)\n",
                 sub->name, positional[1]);
    return 2;
  }
  const std::string name = sub->name;
  if (name == "worker") return llmint8::tools::RunWorker();
  if (name == "coordinator") return llmint8::tools::RunCoordinator();
  if (name == "serve") return llmint8::tools::RunServe(argv[0]);
  if (name == "generate") return llmint8::tools::RunGenerate();
  if (name == "loadtest") return llmint8::tools::RunLoadtest();
  if (name == "status") return llmint8::tools::RunStatus();
  std::fprintf(stderr, "llmint8 %s: not available in this build yet\n", sub->name);
  return 1;
}
