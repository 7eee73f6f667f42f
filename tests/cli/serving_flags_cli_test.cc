// The serving subcommands' flags as a user (or a Kubernetes manifest) passes them: only the
// subcommand's own, sizes as 16G / 16GiB / 16Gi, and --check_flags, which checks a command
// line without starting anything (deploy/validate.sh runs the manifests' through it).
#include <memory>
#include <string>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "llmint8/v1/generation.grpc.pb.h"
#include "tests/cli/run_cli.h"

namespace llmint8::tools::testing {
namespace {

using ::testing::HasSubstr;

TEST(ServingFlagsCliTest, AnotherSubcommandsFlagIsRefusedNamingIt) {
  for (const char* args :
       {"worker --rank=0 --check_flags", "coordinator --workers=a:1 --tp=2 --check_flags",
        "coordinator --workers=a:1 -tp=2 --check_flags",  // absl's -name
        "worker --flagfile=/dev/null --check_flags"}) {
    const CliResult r = RunCli(args);
    EXPECT_EQ(r.exit_code, 2) << args;
    EXPECT_THAT(r.err, HasSubstr("is not a flag of this subcommand")) << args;
    EXPECT_THAT(r.err, HasSubstr("--help")) << args;
  }
}

TEST(ServingFlagsCliTest, CheckFlagsSaysOkForAGoodCommandLineAndStartsNothing) {
  for (const char* args :
       {"worker --listen=0.0.0.0:50052 --coordinator=llmint8-coordinator:50051 --device=cpu "
        "--memory_limit=16Gi --gloo_hostname=10.0.0.17 --check_flags",
        "worker --memory-limit=1GiB --check_flags",  // dashes in names, as the help says
        "worker --memory_limit=512M --nocheck_flags --check_flags",  // absl's --noname
        // Values as separate words, one starting with a dash: a value, not a flag.
        "worker --memory_limit 16Gi --gloo_hostname -odd-but-a-value --check_flags",
        "coordinator --listen=0.0.0.0:50051 --metrics_listen=0.0.0.0:9090 "
        "--workers=w-0.ws:50052,w-1.ws:50052 --model=synthetic:125m --dtype=int8 --check_flags",
        "serve --tp=2 --listen=127.0.0.1:0 --worker_base_port=1 --check_flags",
        "serve --tp=1 --backend=local --check_flags"}) {
    const CliResult r = RunCli(args);
    EXPECT_EQ(r.exit_code, 0) << args << "\n" << r.err;
    EXPECT_THAT(r.out, HasSubstr("flags OK")) << args;
  }
}

TEST(ServingFlagsCliTest, CheckFlagsRefusesBadValues) {
  struct Case {
    const char* args;
    const char* says;
  };
  for (const Case& c :
       {Case{"worker --device=gpu --check_flags", "--device=gpu is not supported"},
        Case{"worker --memory_limit=nan --check_flags", "is not a size"},
        Case{"worker --memory_limit=1e30 --check_flags", "is not a size"},
        Case{"worker --memory_limit=16X --check_flags", "is not a size"},
        Case{"worker --listen=50052 --check_flags", "--listen=50052"},
        Case{"worker --cuda_device=-2 --check_flags", "--cuda_device=-2 must be"},
        Case{"worker --health_listen=9090 --check_flags", "--health_listen=9090"},
        Case{"worker --tls_cert_file=c.pem --check_flags",
             "set both --tls_cert_file and --tls_key_file"},
        Case{"worker --tls_client_ca_file=ca.pem --check_flags",
             "--tls_client_ca_file makes the Worker port serve TLS: set --tls_cert_file"},
        Case{"worker --tls_client_ca_file=ca.pem --tls_cert_file=c.pem --tls_key_file=k.pem "
             "--check_flags",
             "--tls_client_ca_file: set --tls_ca_file too"},
        Case{"worker --listen=127.0.0.1:5005 --health_listen=127.0.0.1:5005 --check_flags",
             "is the --listen address"},
        Case{"coordinator --workers=a:1 --worker_tls_ca_file=ca.pem --check_flags",
             "--worker_tls_ca_file: set --tls_cert_file and --tls_key_file too"},
        Case{"serve --backend=nccl --check_flags", "--backend=nccl needs --device=cuda"},
        Case{"serve --step_timeout=0s --check_flags", "--step_timeout=0 must be in [1s, 24h]"},
        Case{"coordinator --workers=a:1 --load_timeout=48h --check_flags", "--load_timeout=48h"},
        Case{"coordinator --workers=a:1 --backend=nccl --check_flags", "needs --device=cuda"},
        Case{"serve --backend=local --check_flags", "runs one worker alone, and there are 2"},
        Case{"coordinator --workers=a:1,b:1 --backend=local --check_flags", "use gloo (cpu)"},
        Case{"coordinator --workers=a:1 --backend=mpi --check_flags", "use gloo, nccl or local"},
        Case{"coordinator --workers=a:1,b --check_flags", "--workers=b"},
        Case{"coordinator --workers=a:1,b:1, --check_flags", "--workers entry 3 is ''"},
        Case{"coordinator --workers=a:1,b:0 --check_flags", "--workers entry 2 is 'b:0'"},
        Case{"coordinator --workers=:1 --check_flags", "each worker is a host:port to dial"},
        Case{"serve --worker_base_port=2147483647 --check_flags",
             "workers would listen on ports 2147483647..2147483648"},
        Case{"coordinator --workers=a:1,b:1,a:1 --check_flags", "--workers lists a:1 twice"},
        Case{"coordinator --workers=a:1 --tls_cert_file=c.pem --check_flags",
             "set both --tls_cert_file and --tls_key_file"},
        Case{"serve --tls_key_file=k.pem --check_flags", "set both --tls_cert_file"},
        Case{"coordinator --workers=a:1 --tls_client_ca_file=ca.pem --check_flags",
             "--tls_client_ca_file needs TLS"},
        Case{"coordinator --check_flags", "--workers is required"},
        Case{"serve --tls_ca_file=/x --check_flags", "set --tls_cert_file"},
        Case{"serve --default_max_tokens=-1 --check_flags", "--default_max_tokens must be >= 0"},
        Case{"serve --reserve_sequences=0 --check_flags", "--reserve_sequences must be >= 1"},
        Case{"serve --threshold=-1 --check_flags", "--threshold=-1 must be a finite value >= 0"},
        Case{"coordinator --workers=a:1 --threshold=nan --check_flags", "--threshold=nan"},
        Case{"serve --scheduling=lifo --check_flags", "use fcfs (first come, first served)"},
        Case{"serve --preemption=off --resume_on_group_loss=30s --check_flags",
             "needs --preemption=recompute"},
        Case{"serve --resume_on_group_loss=-1s --check_flags",
             "--resume_on_group_loss must be >= 0"},
        Case{"coordinator --kv_budget_recovery=-1s --check_flags",
             "--kv_budget_recovery must be >= 0"},
        Case{"serve --speculative_tokens=17 --check_flags",
             "--speculative_tokens=17 must be in [0, 16]"},
        Case{"coordinator --workers=a:1 --speculative_tokens=-1 --check_flags",
             "--speculative_tokens=-1"},
        Case{"serve --prompt_lookup_min=3 --prompt_lookup_max=2 --check_flags",
             "must satisfy 1 <= min <= max <= 64"},
        Case{"serve --prompt_lookup_min=0 --check_flags", "--prompt_lookup_min=0"}}) {
    const CliResult r = RunCli(c.args);
    EXPECT_EQ(r.exit_code, 1) << c.args;
    EXPECT_THAT(r.err, HasSubstr(c.says)) << c.args;
    EXPECT_THAT(r.out, ::testing::Not(HasSubstr("flags OK"))) << c.args;
  }
}

// A value a flag's type cannot take is refused as an unknown flag is: exit 2, naming it, with
// `--name=value` and `--name value` alike, before anything starts.
TEST(ServingFlagsCliTest, AValueOfTheWrongTypeIsExitTwoNamingTheFlag) {
  for (const char* args : {"serve --tp=abc --check_flags", "coordinator --drain_timeout=soon",
                           "generate --max_new_tokens abc", "worker --check_flags=maybe"}) {
    const CliResult r = RunCli(args);
    EXPECT_EQ(r.exit_code, 2) << args << ": " << r.err;
    EXPECT_THAT(r.err, ::testing::MatchesRegex("llmint8 [a-z]+: --[a-z_]+=[a-z]+: Illegal value.*"))
        << args;
  }
}

// `--name` followed by another of the subcommand's flags forgot its value: refused, not taken
// as the value (`--prompt --max_new_tokens=5` is no prompt). `--seed -1` stays a value.
TEST(ServingFlagsCliTest, AFlagWhereAValueShouldBeIsRefused) {
  for (const char* args :
       {"generate --prompt --max_new_tokens=5", "serve --model --tp=2",
        "coordinator --advertise --check-flags", "generate --prompt --noignore_eos",
        "generate --prompt -ignore_eos", "serve --check_flags --tp", "generate --prompt"}) {
    const CliResult r = RunCli(args);
    EXPECT_EQ(r.exit_code, 2) << args << ": " << r.err;
    EXPECT_THAT(r.err, HasSubstr(" needs a value: --")) << args;
  }
  // A negated boolean takes no value (absl would refuse it with exit 1 in its own words).
  const CliResult negated = RunCli("serve --norespawn=true --check_flags");
  EXPECT_EQ(negated.exit_code, 2) << negated.err;
  EXPECT_THAT(negated.err, HasSubstr("--norespawn takes no value"));
  // Only a yes/no flag can be negated.
  const CliResult not_bool = RunCli("serve --notp --check_flags");
  EXPECT_EQ(not_bool.exit_code, 2) << not_bool.err;
  EXPECT_THAT(not_bool.err, HasSubstr("--notp: --tp is not a yes/no flag: --tp=<value>"));
  const CliResult seed = RunCli("generate --seed -1 --prompt=x --timeout=-1");
  EXPECT_THAT(seed.err, HasSubstr("--timeout must be >= 0")) << seed.err;  // past the flags
}

// A port another gRPC server holds (with gRPC's default SO_REUSEPORT) is refused: the
// coordinator and the worker must not share it and split its connections with that server.
TEST(ServingFlagsCliTest, APortAnotherServerHoldsIsRefused) {
  v1::Generation::Service unimplemented;  // a server needs a service to start
  grpc::ServerBuilder builder;
  int port = 0;
  builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port);
  builder.RegisterService(&unimplemented);
  const std::unique_ptr<grpc::Server> holder = builder.BuildAndStart();
  ASSERT_NE(holder, nullptr);
  ASSERT_GT(port, 0);
  const std::string listen = absl::StrCat("--listen=127.0.0.1:", port);
  const CliResult coordinator =
      RunCli(absl::StrCat("coordinator ", listen, " --workers=127.0.0.1:1 --model=synthetic:125m"));
  EXPECT_EQ(coordinator.exit_code, 1) << coordinator.err;
  EXPECT_THAT(coordinator.err, HasSubstr("could not listen on 127.0.0.1:")) << coordinator.err;
  const CliResult worker = RunCli(absl::StrCat("worker ", listen));
  EXPECT_EQ(worker.exit_code, 1) << worker.err;
  EXPECT_THAT(worker.err, HasSubstr("could not listen on 127.0.0.1:")) << worker.err;
  // serve's workers on a taken port (another serve's workers): refused before any starts,
  // naming the flag that moves them.
  const CliResult serve =
      RunCli(absl::StrCat("serve --tp=2 --listen=127.0.0.1:1 ", "--worker_base_port=", port - 1));
  EXPECT_EQ(serve.exit_code, 1) << serve.err;
  EXPECT_THAT(serve.err, HasSubstr(absl::StrCat("worker 1's port 127.0.0.1:", port, " is taken")));
  EXPECT_THAT(serve.err, HasSubstr("pick free ports with --worker_base_port"));
  EXPECT_THAT(serve.err, ::testing::Not(HasSubstr("started worker"))) << serve.err;
  holder->Shutdown();
}

// A model serve cannot read, or that its --tp workers cannot split, is refused before it
// starts any worker process. (The port is never bound: the refusal comes first.)
TEST(ServingFlagsCliTest, AModelTheWorkersCannotServeIsRefusedBeforeAnyWorkerStarts) {
  struct Case {
    std::string args;
    std::string says;
  };
  for (const Case& c :
       {Case{"--tp=2 --model=/nonexistent-llmint8-model", "config.json"},
        Case{"--tp=2 --model=synthetic:bogus", "bogus"},
        Case{"--tp=3 --model=synthetic:125m,layers=1,hidden=64,heads=4,ffn=256,vocab=100",
             "(4 heads, FFN 256): use one of 1, 2, 4 workers"},
        Case{"--tp=1 --model=synthetic:125m,layers=1,hidden=64,heads=4,ffn=256,vocab=100,"
             "positions=64 --max_context=65",
             "--max_context=65 is beyond"}}) {
    const CliResult r = RunCli(absl::StrCat("serve --listen=127.0.0.1:1 ", c.args));
    EXPECT_EQ(r.exit_code, 1) << c.args;
    EXPECT_THAT(r.err, HasSubstr(c.says)) << r.err;
    EXPECT_THAT(r.err, ::testing::Not(HasSubstr("started worker"))) << r.err;
  }
}

// --device=cuda where no GPU is usable (CUDA_VISIBLE_DEVICES hides any, so the GPU host runs it
// the same): refused with the reason and the way out, before any worker starts.
TEST(ServingFlagsCliTest, CudaWithoutAUsableGpuIsRefusedBeforeAnyWorkerStarts) {
  const CliResult r = RunCli(
      "serve --listen=127.0.0.1:1 --tp=2 --device=cuda "
      "--model=synthetic:125m,layers=1,hidden=64,heads=4,ffn=256,vocab=100",
      "env CUDA_VISIBLE_DEVICES=");
  EXPECT_EQ(r.exit_code, 1) << r.err;
  EXPECT_THAT(r.err, HasSubstr("--device=cuda: no usable CUDA GPU on this machine")) << r.err;
  EXPECT_THAT(r.err, HasSubstr("or run with --device=cpu")) << r.err;
  EXPECT_THAT(r.err, ::testing::Not(HasSubstr("started worker"))) << r.err;
}

// A worker started with --device=cuda where no GPU is usable exits at once with the reason,
// instead of failing every LoadShard of a group that can never form.
TEST(ServingFlagsCliTest, ACudaWorkerWithoutAUsableGpuExitsAtStart) {
  const CliResult r = RunCli("worker --listen=127.0.0.1:1 --device=cuda --cuda_device=0",
                             "env CUDA_VISIBLE_DEVICES=");
  EXPECT_EQ(r.exit_code, 1) << r.err;
  EXPECT_THAT(r.err, HasSubstr("--device=cuda: no usable CUDA GPU on this machine")) << r.err;
  EXPECT_THAT(r.err, ::testing::Not(HasSubstr("worker listening"))) << r.err;
}

}  // namespace
}  // namespace llmint8::tools::testing
