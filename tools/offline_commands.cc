#include "tools/offline_commands.h"

#include <algorithm>
#include <cstdio>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/reflection.h"
#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/strip.h"
#include "tools/flags.h"
#include "tools/subcommands.h"

ABSL_FLAG(std::string, gpu_memory, "80GiB",
          "plan: memory of one GPU: 80GiB, 24GB (decimal), 512MiB, or a bare number of GiB");
ABSL_FLAG(int32_t, gpus, 0,
          "plan: GPUs available; more needed is an error (0: as many as the model needs)");
ABSL_FLAG(int64_t, batch, 1, "plan: sequences whose KV cache and activations are reserved");
ABSL_FLAG(int64_t, context, 0,
          "plan: tokens per sequence (prompt + generated) to reserve for (0: the model's "
          "max_position_embeddings)");
ABSL_FLAG(bool, compare, false,
          "plan: fp16 vs int8 GPU counts over 24, 40, 80 and 141 GB GPUs, as the cards carry "
          "them (24 GB: 24GiB; a typed --gpu_memory=24GB is 24 x 10^9 bytes); ignores --dtype "
          "and --gpu_memory");
ABSL_FLAG(bool, json, false, "print the result as JSON instead of text");
ABSL_FLAG(std::string, out, "", "quantize: directory to write the int8 checkpoint to");
ABSL_FLAG(
    bool, overwrite, false,
    "quantize: write into a non-empty --out, replacing the checkpoint there (its config.json, "
    "*.safetensors, index and tokenizer files; other files stay)");
ABSL_FLAG(std::string, text, "", "eval: UTF-8 text file to compute the perplexity of");
ABSL_FLAG(int64_t, window, 0, "eval: tokens per window (0: the model's max_position_embeddings)");
ABSL_FLAG(int64_t, stride, 0,
          "eval: tokens between window starts, in [1, window] (0: window / 2). With stride < "
          "window each token after the BOS is scored once, past the first window with at least "
          "window - stride tokens of context; with stride = window no window's first token is "
          "scored");
ABSL_FLAG(int64_t, max_ids, 0,
          "eval: evaluate only the first N token ids, BOS included (0: the whole text)");

namespace llmint8::tools {
namespace {

// A flag as one subcommand uses it: its own default and help where they differ from the flag's.
struct FlagUse {
  const char* name;
  const char* default_value = nullptr;  // nullptr: the flag's registered default
  const char* help = nullptr;           // nullptr: the flag's registered help
};

struct OfflineCommand {
  const char* name;
  const char* summary;
  const char* examples;
  std::vector<FlagUse> flags;
  int (*run)();
};

const std::vector<OfflineCommand>& Commands() {
  static const auto* const kCommands = new std::vector<OfflineCommand>{
      {"plan",
       "Memory plan: the fewest GPUs a model needs in int8 or fp16, and the bytes per GPU.",
       "  llmint8 plan --model=175b --compare          fp16 vs int8 GPU counts (Table 2 of "
       "LLM.int8())\n"
       "  llmint8 plan --model=66b --dtype=fp16 --gpu_memory=24GiB --batch=4 --context=2048\n"
       "  llmint8 plan --model=/path/to/opt-6.7b --json   a model directory (config.json)\n",
       {{"model", nullptr,
         "a preset (125m ... 175b, opt-66b, facebook/opt-13b), a config.json, a model directory "
         "or synthetic:<preset>[,layers=N,...]"},
        {"dtype", "int8", "weights: int8 or fp16 (ignored with --compare)"},
        {"gpu_memory"},
        {"gpus"},
        {"batch"},
        {"context"},
        {"compare"},
        {"json"}},
       &RunPlan},
      {"quantize",
       "Write an int8 checkpoint (int8 weights + fp32 row scales) that loads at any TP degree.",
       "  llmint8 quantize --model=models/opt-sotu-cpu --out=/tmp/opt-sotu-int8\n"
       "  llmint8 serve --model=/tmp/opt-sotu-int8 --dtype=int8 --tp=2\n",
       {{"model", nullptr,
         "model directory (config.json + *.safetensors) or synthetic:<preset>[,layers=N,...]"},
        {"out"},
        {"overwrite"},
        {"tokenizer", nullptr,
         "tokenizer.json, or a directory with vocab.json + merges.txt, copied into --out "
         "(default: the model directory's tokenizer files, if any)"}},
       &RunQuantize},
      {"eval",
       "Perplexity of a model on a text file (strided windows), any dtype, TP degree, device.",
       "  llmint8 eval --model=models/opt-sotu-cpu "
       "--text=tests/data/heldout/sotu-2010-2021.txt\n"
       "  llmint8 eval --model=DIR --text=FILE --dtype=int8 --threshold=0 --tp=2 --json\n"
       "  llmint8 eval --model=DIR --text=FILE --dtype=int8 --device=cuda --window=2048 "
       "--stride=512\n",
       {{"model", nullptr,
         "model directory (config.json + *.safetensors, or an int8 checkpoint from llmint8 "
         "quantize) or synthetic:<preset>[,...] (needs --tokenizer)"},
        {"text"},
        {"tokenizer", nullptr,
         "tokenizer.json, or a directory with vocab.json + merges.txt (default: the model "
         "directory's)"},
        {"dtype", "fp16", "weights: fp16, int8 (LLM.int8()) or fp32 (cpu only)"},
        {"threshold"},
        {"window"},
        {"stride"},
        {"max_ids"},
        {"tp", "1",
         "tensor-parallel degree; > 1 runs the ranks as forked processes of this one, over Gloo "
         "(cpu) or NCCL (cuda, rank r on GPU r % GPUs; ranks sharing a GPU get their own "
         "NCCL_HOSTID)"},
        {"device", nullptr, "cpu or cuda"},
        {"json"}},
       &RunEval},
  };
  return *kCommands;
}

const OfflineCommand* FindCommand(std::string_view name) {
  for (const OfflineCommand& c : Commands()) {
    if (name == c.name) return &c;
  }
  return nullptr;
}

std::string FlagList(const OfflineCommand& cmd) {
  std::vector<std::string> names;
  for (const FlagUse& f : cmd.flags) names.push_back(absl::StrCat("--", f.name));
  return absl::StrJoin(names, " ");
}

void PrintHelp(const OfflineCommand& cmd) {
  std::printf("usage: llmint8 %s [--flags]\n\n%s\n\nexamples:\n%s\nflags:\n", cmd.name, cmd.summary,
              cmd.examples);
  for (const FlagUse& f : cmd.flags) {
    const absl::CommandLineFlag* flag = absl::FindCommandLineFlag(f.name);
    if (flag == nullptr) continue;
    const std::string def = f.default_value != nullptr ? f.default_value : flag->DefaultValue();
    std::string help = f.help != nullptr ? f.help : flag->Help();
    // "plan: memory of one GPU" reads "memory of one GPU" inside plan's own help.
    if (absl::StartsWith(help, absl::StrCat(cmd.name, ": "))) {
      help = help.substr(std::string_view(cmd.name).size() + 2);
    }
    std::printf("  --%s (default: \"%s\")\n      %s\n", f.name, def.c_str(), help.c_str());
  }
  std::vector<std::string> names;
  for (const FlagUse& f : cmd.flags) names.push_back(f.name);
  std::string example = DashedFlagExample(names);
  if (!example.empty()) example = absl::StrCat(" (", example, ")");
  std::printf(
      "\nFlag names accept dashes too%s; booleans take --name, --name=false or --noname.\n"
      "Exit codes: 0 done, 1 the work failed, 2 bad flags.\n",
      example.c_str());
}

const FlagUse* FindUse(const OfflineCommand& cmd, std::string_view name) {
  for (const FlagUse& f : cmd.flags) {
    if (name == f.name) return &f;
  }
  return nullptr;
}

// Sets every flag of `cmd` to its default for this subcommand, then applies `args`.
absl::Status ParseFlags(const OfflineCommand& cmd, std::span<char* const> args) {
  std::string error;
  for (const FlagUse& f : cmd.flags) {
    absl::CommandLineFlag* flag = absl::FindCommandLineFlag(f.name);
    if (flag == nullptr) {
      return absl::InternalError(absl::StrCat("flag --", f.name, " is not defined"));
    }
    const std::string def = f.default_value != nullptr ? f.default_value : flag->DefaultValue();
    if (!flag->ParseFrom(def, &error)) {
      return absl::InternalError(absl::StrCat("default of --", f.name, ": ", error));
    }
  }
  for (size_t i = 0; i < args.size(); ++i) {
    absl::string_view arg = args[i];
    if (!absl::ConsumePrefix(&arg, "--") && !absl::ConsumePrefix(&arg, "-")) {
      return absl::InvalidArgumentError(
          absl::StrCat("unexpected argument '", args[i], "': llmint8 ", cmd.name,
                       " takes only flags (--name=value): ", FlagList(cmd)));
    }
    std::string name(arg.substr(0, arg.find('=')));
    const bool has_value = name.size() < arg.size();
    std::string value = has_value ? std::string(arg.substr(name.size() + 1)) : std::string();
    for (char& c : name) {
      if (c == '-') c = '_';
    }
    const FlagUse* use = FindUse(cmd, name);
    absl::CommandLineFlag* flag = use != nullptr ? absl::FindCommandLineFlag(name) : nullptr;
    if (use == nullptr && absl::StartsWith(name, "no") && !has_value) {
      // --nojson: a boolean set to false.
      const FlagUse* negated = FindUse(cmd, name.substr(2));
      absl::CommandLineFlag* f =
          negated != nullptr ? absl::FindCommandLineFlag(negated->name) : nullptr;
      if (f != nullptr && f->IsOfType<bool>()) {
        f->ParseFrom("false", &error);
        continue;
      }
    }
    if (use == nullptr || flag == nullptr) {
      return absl::InvalidArgumentError(absl::StrCat(
          absl::FindCommandLineFlag(name) != nullptr ? "--" + name + " is not a flag of llmint8 "
                                                     : "unknown flag --" + name + " for llmint8 ",
          cmd.name, "; it takes ", FlagList(cmd), " (llmint8 ", cmd.name, " --help)"));
    }
    if (!has_value) {
      if (flag->IsOfType<bool>()) {
        value = "true";
      } else if (i + 1 < args.size() && !NamesAFlag(args[i + 1], [&cmd](const std::string& f) {
                   return FindUse(cmd, f) != nullptr;
                 })) {
        value = args[++i];
      } else {
        return absl::InvalidArgumentError(absl::StrCat("--", name, " needs a value: --", name,
                                                       "=<value> (llmint8 ", cmd.name, " --help)"));
      }
    }
    if (!flag->ParseFrom(value, &error)) {
      return absl::InvalidArgumentError(
          absl::StrCat("--", name, "=", value, ": ", error, " (llmint8 ", cmd.name, " --help)"));
    }
  }
  return absl::OkStatus();
}

std::vector<std::string>& CommandLine() {
  static auto* const line = new std::vector<std::string>();
  return *line;
}

}  // namespace

bool NamesAFlag(std::string_view arg, const std::function<bool(const std::string&)>& is_flag) {
  const size_t dashes = arg.substr(0, 2) == "--" ? 2 : (arg.substr(0, 1) == "-" ? 1 : 0);
  if (dashes == 0 || arg.size() <= dashes) return false;
  std::string name(arg.substr(dashes, arg.find('=') - dashes));
  std::replace(name.begin(), name.end(), '-', '_');
  return is_flag(name) || (name.rfind("no", 0) == 0 && is_flag(name.substr(2)));
}

const char* OfflineCommandSummary(std::string_view name) {
  const OfflineCommand* cmd = FindCommand(name);
  return cmd == nullptr ? nullptr : cmd->summary;
}

const std::vector<std::string>& OfflineCommandLine() { return CommandLine(); }

int RunOfflineCommand(int argc, char** argv) {
  const std::string_view name = argc > 1 ? argv[1] : "";
  const std::span<char* const> args(argv + std::min(argc, 2), argv + argc);
  CommandLine().assign(argv, argv + argc);
  const OfflineCommand* cmd = FindCommand(name);
  if (cmd == nullptr) {
    std::fprintf(stderr, "llmint8: '%.*s' is not an offline subcommand\n",
                 static_cast<int>(name.size()), name.data());
    return kExitBadFlags;
  }
  for (const char* arg : args) {
    const std::string_view a = arg;
    if (a == "--help" || a == "-h" || a == "--helpfull" || a == "-help") {
      PrintHelp(*cmd);
      return kExitOk;
    }
  }
  if (absl::Status s = ParseFlags(*cmd, args); !s.ok()) {
    std::fprintf(stderr, "llmint8 %s: %s\n", cmd->name, std::string(s.message()).c_str());
    return s.code() == absl::StatusCode::kInvalidArgument ? kExitBadFlags : kExitFailed;
  }
  return cmd->run();
}

}  // namespace llmint8::tools
