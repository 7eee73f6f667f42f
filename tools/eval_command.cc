// `llmint8 eval`: perplexity of a model on a text file (model/perplexity.h), with the text
// tokenized by the model's tokenizer (BOS first, as OPT's tokenizer and train/hf_perplexity.py
// do). TP = 1 runs in this process. TP > 1 forks one process per rank before any model code
// runs in this one; the ranks meet through a file rendezvous in a private temp directory and
// form a Gloo (cpu) or NCCL (cuda) group; rank 0 writes the result there for this process.
#include <stdlib.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>
#include <span>
#include <string>
#include <system_error>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "comm/comm_options.h"
#include "comm/file_rendezvous.h"
#include "comm/fork_ranks.h"
#include "comm/make_communicator.h"
#include "comm/shared_gpu_env.h"
#include "common/file.h"
#include "common/json_text.h"
#include "common/log.h"
#include "common/status_macros.h"
#include "coordinator/tokenizer.h"
#include "model/config.h"
#include "model/model_spec.h"
#include "model/perplexity.h"
#include "model/shard_model.h"
#include "model/shard_plan.h"
#include "nlohmann/json.hpp"
#include "tools/flags.h"
#include "tools/gpu_placement.h"
#include "tools/offline_commands.h"
#include "tools/subcommands.h"

namespace llmint8::tools {
namespace {

// The largest --text eval reads (its ids take 4 bytes per token on top).
constexpr int64_t kMaxTextBytes = int64_t{4} << 30;

namespace fs = std::filesystem;

struct EvalArgs {
  std::string model;
  std::string text;
  std::string tokenizer;  // tokenizer.json or a directory; empty: the model directory
  std::string dtype;      // as given, for the report
  model::Precision precision = model::Precision::kF16;
  float threshold = 6.0f;
  int64_t window = 0;
  int64_t stride = 0;
  int64_t max_ids = 0;
  int tp = 1;
  model::Device device = model::Device::kCpu;
  bool json = false;
};

// Reads and checks the flags and the config (cheap: no weights). Every error is a flag to change.
absl::StatusOr<EvalArgs> ReadFlags(model::OptConfig* config) {
  EvalArgs a;
  a.model = absl::GetFlag(FLAGS_model);
  a.text = absl::GetFlag(FLAGS_text);
  a.tokenizer = absl::GetFlag(FLAGS_tokenizer);
  a.dtype = absl::GetFlag(FLAGS_dtype);
  a.threshold = absl::GetFlag(FLAGS_threshold);
  a.window = absl::GetFlag(FLAGS_window);
  a.stride = absl::GetFlag(FLAGS_stride);
  a.max_ids = absl::GetFlag(FLAGS_max_ids);
  a.tp = absl::GetFlag(FLAGS_tp);
  a.json = absl::GetFlag(FLAGS_json);
  if (a.model.empty()) {
    return absl::InvalidArgumentError(
        "--model is required: a model directory (config.json + *.safetensors) or "
        "synthetic:<preset>");
  }
  if (a.text.empty()) {
    return absl::InvalidArgumentError("--text is required: the UTF-8 text file to evaluate");
  }
  std::error_code ec;
  if (!fs::is_regular_file(a.text, ec)) {
    return absl::NotFoundError(absl::StrCat("--text=", a.text, " is not a readable file"));
  }
  ASSIGN_OR_RETURN(a.precision, model::ParsePrecision(a.dtype));
  if (!std::isfinite(a.threshold) || a.threshold < 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--threshold=", a.threshold, " must be >= 0 (6 is LLM.int8()'s; 0 disables outliers)"));
  }
  absl::StatusOr<model::Device> device = model::ParseDevice(absl::GetFlag(FLAGS_device));
  if (!device.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("--device=", absl::GetFlag(FLAGS_device), ": use cpu or cuda"));
  }
  a.device = *device;
  if (a.device == model::Device::kCuda && a.precision == model::Precision::kF32) {
    return absl::InvalidArgumentError(
        "--dtype=fp32 runs on --device=cpu only; on cuda use fp16 or int8");
  }
  if (a.tp < 1) return absl::InvalidArgumentError("--tp must be >= 1");
  if (a.max_ids < 0) return absl::InvalidArgumentError("--max_ids must be >= 0 (0: all)");

  absl::StatusOr<model::OptConfig> c = model::LoadModelSpecConfig(a.model);
  if (!c.ok()) {
    return absl::Status(c.status().code(),
                        absl::StrCat("--model=", a.model, ": ", c.status().message()));
  }
  *config = *std::move(c);
  const std::vector<int> valid = model::ValidTpDegrees(*config);
  if (std::find(valid.begin(), valid.end(), a.tp) == valid.end()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--tp=", a.tp, " does not split ", a.model, " (", config->num_attention_heads,
        " heads, FFN ", config->ffn_dim, "); use one of ", absl::StrJoin(valid, ", ")));
  }
  const int64_t max_window = config->max_position_embeddings + 1;  // feeds window - 1 ids
  if (a.window == 0) a.window = config->max_position_embeddings;
  if (a.window < 2 || a.window > max_window) {
    return absl::InvalidArgumentError(
        absl::StrCat("--window=", a.window, " must be in [2, ", max_window,
                     "] (the model has max_position_embeddings ", config->max_position_embeddings,
                     "; 0 picks it)"));
  }
  if (a.stride == 0) a.stride = std::max<int64_t>(1, a.window / 2);
  if (a.stride < 1 || a.stride > a.window) {
    return absl::InvalidArgumentError(
        absl::StrCat("--stride=", a.stride, " must be in [1, ", a.window, "] (0: window / 2)"));
  }
  if (a.tokenizer.empty()) {
    const std::optional<std::string> dir = model::ModelSpecDirectory(a.model);
    if (!dir.has_value()) {
      return absl::InvalidArgumentError(
          absl::StrCat(a.model,
                       " has no tokenizer: pass --tokenizer=<tokenizer.json or a directory with "
                       "vocab.json + merges.txt>"));
    }
    if (!coordinator::Tokenizer::DirectoryHasFiles(*dir)) {
      return absl::InvalidArgumentError(
          absl::StrCat(a.model,
                       " has no tokenizer files (tokenizer.json, or vocab.json + merges.txt): pass "
                       "--tokenizer=<tokenizer.json or a directory with them>"));
    }
    a.tokenizer = *dir;
  }
  return a;
}

// The text's token ids, BOS first; InvalidArgument when the tokenizer does not fit the model.
absl::StatusOr<std::vector<int32_t>> Tokenize(const EvalArgs& a, const model::OptConfig& config) {
  coordinator::TokenizerOptions options;
  options.bos_id = static_cast<int32_t>(config.bos_token_id);
  absl::StatusOr<std::unique_ptr<coordinator::Tokenizer>> tokenizer =
      absl::EndsWith(a.tokenizer, ".json")
          ? coordinator::Tokenizer::FromTokenizerJsonFile(a.tokenizer, options)
          : coordinator::Tokenizer::FromDirectory(a.tokenizer, options);
  if (!tokenizer.ok()) {
    return absl::Status(tokenizer.status().code(), absl::StrCat("tokenizer ", a.tokenizer, ": ",
                                                                tokenizer.status().message()));
  }
  // A text to score may be large (the cap only keeps a mistaken device or sparse file out).
  absl::StatusOr<std::string> text = ReadFileToString(a.text, kMaxTextBytes);
  if (!text.ok()) {
    return absl::Status(text.status().code(), absl::StrCat("--text=", text.status().message()));
  }
  absl::StatusOr<std::vector<int32_t>> ids = (*tokenizer)->Encode(*text, /*add_bos=*/true);
  if (!ids.ok()) {
    return absl::Status(ids.status().code(),
                        absl::StrCat("--text=", a.text, ": ", ids.status().message()));
  }
  if (a.max_ids > 0 && a.max_ids < 2) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--max_ids=", a.max_ids, " keeps only the BOS; perplexity needs at least 2 ids"));
  }
  if (a.max_ids > 0 && static_cast<int64_t>(ids->size()) > a.max_ids) ids->resize(a.max_ids);
  if (ids->size() < 2) {
    return absl::InvalidArgumentError(
        absl::StrCat("--text=", a.text,
                     " gives no token (only the BOS); perplexity needs at "
                     "least one after it"));
  }
  for (size_t i = 0; i < ids->size(); ++i) {
    if ((*ids)[i] >= config.vocab_size) {
      return absl::InvalidArgumentError(
          absl::StrCat("the tokenizer ", a.tokenizer, " gives id ", (*ids)[i], " (token ", i,
                       ") but the model's vocabulary has ", config.vocab_size,
                       " entries: pass a --tokenizer that matches the model"));
    }
  }
  return *std::move(ids);
}

absl::StatusOr<model::PerplexityResult> LoadAndEvaluate(const EvalArgs& a,
                                                        std::span<const int32_t> ids, int rank,
                                                        int cuda_devices,
                                                        comm::Rendezvous* rendezvous);

// Loads rank `rank` of `a.tp` and computes the perplexity (every rank returns the same result).
// `cuda_devices`: visible GPUs (cuda only; rank r runs on PlaceRank's device).
absl::StatusOr<model::PerplexityResult> RunRank(const EvalArgs& a, std::span<const int32_t> ids,
                                                int rank, int cuda_devices,
                                                comm::Rendezvous* rendezvous) {
  try {
    return LoadAndEvaluate(a, ids, rank, cuda_devices, rendezvous);
  } catch (const std::bad_alloc&) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "out of memory loading or evaluating ", a.model, " (shard ", rank + 1, "/", a.tp,
        "): evaluate with a larger --tp, in int8, or on a machine with more memory"));
  }
}

// RunRank's work, which may throw std::bad_alloc.
absl::StatusOr<model::PerplexityResult> LoadAndEvaluate(const EvalArgs& a,
                                                        std::span<const int32_t> ids, int rank,
                                                        int cuda_devices,
                                                        comm::Rendezvous* rendezvous) {
  const std::string who = absl::StrCat("shard ", rank + 1, "/", a.tp);
  ASSIGN_OR_RETURN(model::OpenedModel opened, model::OpenModelSpec(a.model));
  if (rank == 0 && a.dtype != "int8" && model::IsPreQuantized(opened)) {
    LLMINT8_LOG(WARNING) << model::PreQuantizedAsWarning(a.model, a.dtype);
  }
  const bool cuda = a.device == model::Device::kCuda;
  const GpuPlacement place = PlaceRank(rank, a.tp, std::max(cuda_devices, 1));
  void* const cuda_stream = model::TensorParallelCudaStream(a.device, a.tp);
  std::unique_ptr<comm::Communicator> comm;
  if (a.tp > 1) {
    comm::CommOptions co;
    co.rank = rank;
    co.world_size = a.tp;
    co.rendezvous = rendezvous;
    co.key_prefix = "eval/";
    co.timeout = absl::Minutes(5);
    co.cuda_device = place.cuda_device;
    co.cuda_stream = cuda_stream;
    ASSIGN_OR_RETURN(comm, comm::MakeCommunicator(cuda ? "nccl" : "gloo", co));
    if (rank == 0) LLMINT8_LOG(INFO) << "group formed (" << (cuda ? "nccl" : "gloo") << ")";
  }
  model::ShardOptions options;
  options.device = a.device;
  options.precision = a.precision;
  options.threshold = a.threshold;
  options.cuda_device = cuda ? place.cuda_device : 0;
  options.cuda_stream = cuda_stream;
  auto load_progress = [&](int64_t done, int64_t total) {
    if (rank != 0) return absl::OkStatus();
    const int64_t bar = 20 * done / std::max<int64_t>(total, 1);
    LLMINT8_LOG(INFO) << "loading " << who << ": layer " << done << "/" << total << " ["
                      << std::string(bar, '#') << std::string(20 - bar, '.') << "]";
    return absl::OkStatus();
  };
  ASSIGN_OR_RETURN(std::unique_ptr<model::ShardModel> shard,
                   model::ShardModel::Load(opened.config, *opened.source, a.tp, rank, comm.get(),
                                           options, load_progress));
  model::PerplexityOptions ppl_options;
  absl::Time last_log = absl::Now();
  ppl_options.progress = [&](int64_t done, int64_t total, double nll_sum, int64_t tokens) {
    if (rank != 0 || tokens == 0) return;
    if (done < total && absl::Now() - last_log < absl::Seconds(5)) return;
    last_log = absl::Now();
    LLMINT8_LOG(INFO) << "window " << done << "/" << total << ": ppl so far "
                      << absl::StrFormat("%.4f", std::exp(nll_sum / static_cast<double>(tokens)));
  };
  return model::Perplexity(*shard, ids, a.window, a.stride, ppl_options);
}

// Visible CUDA devices, counted in a forked child: this process must stay CUDA-free until it
// forks the ranks (a CUDA context does not survive fork).
absl::StatusOr<int> CudaDeviceCountInChild() {
  return UsableGpus(comm::ValueInChild(
      []() -> absl::StatusOr<int64_t> { return model::CudaDeviceCount(); }, absl::Seconds(60)));
}

// Runs the ranks as forked processes of this one; rank 0 writes the result into `dir`.
absl::StatusOr<model::PerplexityResult> RunForked(const EvalArgs& a, std::span<const int32_t> ids,
                                                  const std::string& dir) {
  const std::string result_path = dir + "/result.json";
  int cuda_devices = 0;
  if (a.device == model::Device::kCuda) {
    ASSIGN_OR_RETURN(cuda_devices, CudaDeviceCountInChild());
    const std::string shared = SharedGpuWarning(a.tp, cuda_devices);
    if (!shared.empty()) LLMINT8_LOG(WARNING) << shared;
  }
  const std::vector<comm::RankOutcome> outcomes = comm::ForkRanks(
      a.tp,
      [&](int rank) -> absl::Status {
        SetLogPrefix(absl::StrCat("rank ", rank));
        // Just forked and nothing started yet, so single-threaded: setenv is safe here.
        if (cuda_devices > 0 && PlaceRank(rank, a.tp, cuda_devices).shares_gpu) {
          comm::ApplySharedGpuNcclEnv(rank);
        }
        comm::FileRendezvous rendezvous(dir);
        ASSIGN_OR_RETURN(const model::PerplexityResult r,
                         RunRank(a, ids, rank, cuda_devices, &rendezvous));
        if (rank != 0) return absl::OkStatus();
        // The doubles as text ("%.17g": exact, and inf / nan too, which JSON numbers cannot be).
        const nlohmann::json j = {{"nll_sum", absl::StrFormat("%.17g", r.nll_sum)},
                                  {"tokens", r.tokens},
                                  {"ppl", absl::StrFormat("%.17g", r.ppl)},
                                  {"windows", r.windows}};
        std::ofstream out(result_path, std::ios::trunc);
        out << JsonText(j);
        out.close();
        if (!out) return absl::DataLossError(absl::StrCat("cannot write ", result_path));
        return absl::OkStatus();
      },
      absl::Hours(24 * 7));
  std::string failures;
  for (const comm::RankOutcome& o : outcomes) {
    if (!o.reported || !o.status.ok()) absl::StrAppend(&failures, "\n  ", o.Describe());
  }
  if (!failures.empty()) {
    return absl::InternalError(absl::StrCat("TP=", a.tp, " ranks failed:", failures));
  }
  std::ifstream in(result_path);
  const nlohmann::json j = nlohmann::json::parse(in, nullptr, /*allow_exceptions=*/false);
  auto is = [&](const char* key, bool text) {
    return j.contains(key) && (text ? j[key].is_string() : j[key].is_number_integer());
  };
  if (j.is_discarded() || !j.is_object() || !is("nll_sum", true) || !is("ppl", true) ||
      !is("tokens", false) || !is("windows", false)) {
    return absl::DataLossError(absl::StrCat("rank 0 left no complete result in ", result_path));
  }
  model::PerplexityResult r;
  r.nll_sum = std::strtod(j["nll_sum"].get_ref<const std::string&>().c_str(), nullptr);
  r.tokens = j["tokens"].get<int64_t>();
  r.ppl = std::strtod(j["ppl"].get_ref<const std::string&>().c_str(), nullptr);
  r.windows = j["windows"].get<int64_t>();
  return r;
}

// The --dtype spelling of a precision.
const char* DtypeName(model::Precision p) {
  switch (p) {
    case model::Precision::kF32:
      return "fp32";
    case model::Precision::kF16:
      return "fp16";
    case model::Precision::kInt8:
      return "int8";
  }
  return "?";
}

// CPU ranks compute with oneDNN, whose OpenMP threads spin while they wait by default; with
// several ranks on one host they spin against each other around every collective (measured on
// 2 cores: TP 2 took 8-14 s instead of 1.3 s). libgomp reads its settings when it is loaded, so
// when OMP_WAIT_POLICY is unset this re-executes the command line with OMP_WAIT_POLICY=PASSIVE
// and, unless set, OMP_NUM_THREADS = cores / tp (as torchrun does). Returns only on failure.
void ReexecWithPassiveOpenMp(int tp) {
  if (std::getenv("OMP_WAIT_POLICY") != nullptr) return;
  const std::vector<std::string>& line = OfflineCommandLine();
  if (line.empty()) return;
  ::setenv("OMP_WAIT_POLICY", "PASSIVE", 1);
  if (std::getenv("OMP_NUM_THREADS") == nullptr) {
    const long cores = ::sysconf(_SC_NPROCESSORS_ONLN);
    ::setenv("OMP_NUM_THREADS", absl::StrCat(std::max<long>(1, cores / tp)).c_str(), 1);
  }
  LLMINT8_LOG(INFO) << "TP=" << tp << " on cpu: restarting with OMP_WAIT_POLICY=PASSIVE "
                    << "OMP_NUM_THREADS=" << std::getenv("OMP_NUM_THREADS")
                    << " so the ranks' OpenMP threads do not spin against each other (set "
                       "OMP_WAIT_POLICY yourself to skip this)";
  std::vector<char*> argv;
  for (const std::string& arg : line) argv.push_back(const_cast<char*>(arg.c_str()));
  argv.push_back(nullptr);
  std::fflush(nullptr);
  ::execv("/proc/self/exe", argv.data());
  LLMINT8_LOG(WARNING) << "re-executing failed (" << std::strerror(errno)
                       << "); continuing with spinning OpenMP threads";
}

std::string DtypeLabel(const EvalArgs& a) {
  if (a.precision != model::Precision::kInt8) return DtypeName(a.precision);
  return absl::StrCat("int8 (threshold ", a.threshold, ")");
}

}  // namespace

int RunEval() {
  model::OptConfig config;
  absl::StatusOr<EvalArgs> args = ReadFlags(&config);
  if (!args.ok()) {
    std::fprintf(stderr, "llmint8 eval: %s\n", std::string(args.status().message()).c_str());
    return kExitBadFlags;
  }
  const EvalArgs& a = *args;
  if (a.tp > 1 && a.device == model::Device::kCpu) ReexecWithPassiveOpenMp(a.tp);
  absl::StatusOr<std::vector<int32_t>> ids = Tokenize(a, config);
  if (!ids.ok()) {
    std::fprintf(stderr, "llmint8 eval: %s\n", std::string(ids.status().message()).c_str());
    const absl::StatusCode code = ids.status().code();
    return code == absl::StatusCode::kInvalidArgument || code == absl::StatusCode::kNotFound ||
                   code == absl::StatusCode::kPermissionDenied
               ? kExitBadFlags
               : kExitFailed;
  }
  const int64_t windows =
      model::PerplexityWindows(static_cast<int64_t>(ids->size()), a.window, a.stride)
          .value_or(std::vector<model::PerplexityWindow>{})
          .size();
  LLMINT8_LOG(INFO) << "evaluating " << a.model << " in " << DtypeLabel(a) << " on " << a.text
                    << ": " << ids->size() << " ids, " << windows << " windows of " << a.window
                    << " (stride " << a.stride << "), TP=" << a.tp << " on "
                    << model::DeviceName(a.device);

  const absl::Time start = absl::Now();
  absl::StatusOr<model::PerplexityResult> result;
  if (a.tp == 1) {
    // No usable GPU is said plainly here, not as the first CUDA call's error deep in the load.
    if (a.device == model::Device::kCuda) {
      absl::StatusOr<int> devices = CudaDeviceCountInChild();
      if (!devices.ok()) {
        std::fprintf(stderr, "llmint8 eval: %s\n", std::string(devices.status().message()).c_str());
        return kExitFailed;
      }
    }
    result = RunRank(a, *ids, 0, /*cuda_devices=*/1, nullptr);
  } else {
    // A private rendezvous directory for this run's ranks, removed afterwards.
    std::string pattern = (fs::temp_directory_path() / "llmint8-eval-XXXXXX").string();
    if (::mkdtemp(pattern.data()) == nullptr) {
      std::fprintf(stderr, "llmint8 eval: cannot create a temp directory like %s\n",
                   pattern.c_str());
      return kExitFailed;
    }
    result = RunForked(a, *ids, pattern);
    std::error_code ec;
    fs::remove_all(pattern, ec);
  }
  if (!result.ok()) {
    std::fprintf(stderr, "llmint8 eval: %s\n", std::string(result.status().message()).c_str());
    return kExitFailed;
  }
  const double seconds = absl::ToDoubleSeconds(absl::Now() - start);
  if (a.json) {
    nlohmann::json j = {
        {"ppl", result->ppl},
        {"nll_sum", result->nll_sum},
        {"tokens", result->tokens},
        {"windows", result->windows},
        {"window", a.window},
        {"stride", a.stride},
        {"num_ids", ids->size()},
        {"model", a.model},
        {"text_file", a.text},
        {"dtype", DtypeName(a.precision)},
        {"tp", a.tp},
        {"device", std::string(model::DeviceName(a.device))},
        {"seconds", std::round(seconds * 10) / 10},
    };
    if (a.precision == model::Precision::kInt8) j["threshold"] = a.threshold;
    std::printf("%s\n", JsonText(j, 2).c_str());
  } else {
    std::printf("model     %s\n", a.model.c_str());
    std::printf("text      %s (%zu token ids, BOS first)\n", a.text.c_str(), ids->size());
    std::printf("dtype     %s\n", DtypeLabel(a).c_str());
    std::printf("windows   %lld of %lld tokens, stride %lld\n",
                static_cast<long long>(result->windows), static_cast<long long>(a.window),
                static_cast<long long>(a.stride));
    std::printf("tp        %d on %s\n", a.tp, std::string(model::DeviceName(a.device)).c_str());
    std::printf("tokens    %lld scored\n", static_cast<long long>(result->tokens));
    std::printf("nll_sum   %.6f\n", result->nll_sum);
    std::printf("ppl       %.6f\n", result->ppl);
    std::printf("seconds   %.1f\n", seconds);
  }
  return kExitOk;
}

}  // namespace llmint8::tools
