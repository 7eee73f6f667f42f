// The llmint8 binary's subcommands. Each returns the process exit code (0: success).
#ifndef LLMINT8_TOOLS_SUBCOMMANDS_H_
#define LLMINT8_TOOLS_SUBCOMMANDS_H_

namespace llmint8::tools {

int RunWorker();
int RunCoordinator();
// Coordinator + --tp local worker processes (this binary re-executed as `worker`).
int RunServe(const char* self_path);
int RunGenerate();
int RunLoadtest();  // tools/loadtest.cc
int RunStatus();    // tools/status_command.cc

// The offline subcommands (tools/offline_commands.h parses their flags, then calls these).
int RunPlan();      // tools/plan_command.cc
int RunQuantize();  // tools/quantize_command.cc
int RunEval();      // tools/eval_command.cc

}  // namespace llmint8::tools

#endif  // LLMINT8_TOOLS_SUBCOMMANDS_H_
