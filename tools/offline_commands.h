// plan, quantize and eval: the subcommands of llmint8 that run to completion without a server.
//
// They parse their flags strictly, unlike absl::ParseCommandLine: an unknown flag, a flag of
// another subcommand, a positional argument or a bad value prints a message that names the flag
// and what to write instead, and the process exits with code 2 (absl would exit 1). They also
// have their own defaults for shared flags (plan: --dtype=int8; eval: --tp=1), shown by --help.
//
// The flags only these subcommands read are defined in offline_commands.cc and declared here;
// the shared ones (--model, --dtype, --threshold, --tp, --device, --tokenizer) are in flags.h.
#ifndef LLMINT8_TOOLS_OFFLINE_COMMANDS_H_
#define LLMINT8_TOOLS_OFFLINE_COMMANDS_H_

#include <cstdint>
#include <functional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "absl/flags/declare.h"

ABSL_DECLARE_FLAG(std::string, gpu_memory);
ABSL_DECLARE_FLAG(int32_t, gpus);
ABSL_DECLARE_FLAG(int64_t, batch);
ABSL_DECLARE_FLAG(int64_t, context);
ABSL_DECLARE_FLAG(bool, compare);
ABSL_DECLARE_FLAG(bool, json);
ABSL_DECLARE_FLAG(std::string, out);
ABSL_DECLARE_FLAG(bool, overwrite);
ABSL_DECLARE_FLAG(std::string, text);
ABSL_DECLARE_FLAG(int64_t, window);
ABSL_DECLARE_FLAG(int64_t, stride);
ABSL_DECLARE_FLAG(int64_t, max_ids);

namespace llmint8::tools {

// Exit codes of the offline subcommands.
inline constexpr int kExitOk = 0;
inline constexpr int kExitFailed = 1;    // the work failed (model does not fit, I/O, ...)
inline constexpr int kExitBadFlags = 2;  // the command line must change

// The one-line summary of an offline subcommand ("plan", "quantize", "eval"), or nullptr when
// `name` is none of them.
const char* OfflineCommandSummary(std::string_view name);

// Runs `llmint8 <name> <args...>` (argv[0] is the program, argv[1] the subcommand name): --help,
// the strict flag parsing above, then the subcommand. Returns the process exit code.
int RunOfflineCommand(int argc, char** argv);

// Whether `arg` names one of the flags `is_flag` accepts (given a name with underscores): -name,
// --name, --name=value, dashes or underscores, --noname. After a flag that needs a value, such
// an arg is a forgotten value, not the value (`--out --overwrite`); `-1` is a value.
bool NamesAFlag(std::string_view arg, const std::function<bool(const std::string&)>& is_flag);

// The command line RunOfflineCommand was given (for a subcommand that re-executes itself).
const std::vector<std::string>& OfflineCommandLine();

}  // namespace llmint8::tools

#endif  // LLMINT8_TOOLS_OFFLINE_COMMANDS_H_
