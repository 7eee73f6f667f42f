// `llmint8 quantize`: model/int8_checkpoint.h WriteInt8Checkpoint on the command line, with the
// tokenizer files copied beside the checkpoint so that serve and eval find them.
#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <memory>
#include <string>
#include <system_error>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "common/log.h"
#include "common/status_macros.h"
#include "model/checkpoint.h"
#include "model/int8_checkpoint.h"
#include "tools/flags.h"
#include "tools/offline_commands.h"
#include "tools/subcommands.h"
#include "worker/model_spec.h"

namespace llmint8::tools {
namespace {

namespace fs = std::filesystem;

// Files of a Hugging Face model directory that describe its tokenizer and generation defaults;
// copied when present.
constexpr const char* kTokenizerFiles[] = {"vocab.json",
                                           "merges.txt",
                                           "tokenizer.json",
                                           "tokenizer_config.json",
                                           "special_tokens_map.json",
                                           "generation_config.json"};

// Forwards to a source and logs "quantizing layer i/L" when the writer first reads layer i
// (WriteInt8Checkpoint reads the layers in order, one at a time).
class ProgressSource : public model::CheckpointSource {
 public:
  ProgressSource(const model::CheckpointSource& source, int64_t layers)
      : source_(source), layers_(layers) {}

  std::string Describe() const override { return source_.Describe(); }
  bool Has(std::string_view name) const override { return source_.Has(name); }
  absl::StatusOr<model::TensorInfo> Info(std::string_view name) const override {
    return source_.Info(name);
  }
  std::vector<std::string> TensorNames() const override { return source_.TensorNames(); }
  absl::Status ReadSlice(std::string_view name, model::Range rows, model::Range cols,
                         std::span<float> out) const override {
    Note(name);
    return source_.ReadSlice(name, rows, cols, out);
  }
  absl::Status ReadSliceHalf(std::string_view name, model::Range rows, model::Range cols,
                             std::span<Half> out) const override {
    Note(name);
    return source_.ReadSliceHalf(name, rows, cols, out);
  }
  absl::Status ReadInt8Slice(std::string_view name, model::Range rows, model::Range cols,
                             std::span<int8_t> q, std::span<float> row_absmax) const override {
    Note(name);
    return source_.ReadInt8Slice(name, rows, cols, q, row_absmax);
  }

 private:
  void Note(std::string_view name) const {
    constexpr std::string_view kLayers = "layers.";
    const size_t at = name.find(kLayers);
    if (at == std::string_view::npos) return;
    std::string_view rest = name.substr(at + kLayers.size());
    int64_t layer = 0;
    rest = rest.substr(0, rest.find('.'));
    if (!absl::SimpleAtoi(absl::string_view(rest.data(), rest.size()), &layer)) return;
    absl::MutexLock lock(&mu_);
    if (layer <= last_layer_) return;
    last_layer_ = layer;
    const int64_t done = 20 * layer / std::max<int64_t>(layers_, 1);
    LLMINT8_LOG(INFO) << "quantizing layer " << layer + 1 << "/" << layers_ << " ["
                      << std::string(done, '#') << std::string(20 - done, '.') << "]";
  }

  const model::CheckpointSource& source_;
  const int64_t layers_;
  mutable absl::Mutex mu_;
  mutable int64_t last_layer_ ABSL_GUARDED_BY(mu_) = -1;
};

struct QuantizeArgs {
  std::string model;
  std::string out;
  std::string tokenizer;  // file or directory; empty: the model directory
};

// Checks the flags without touching the model's weights. InvalidArgument / NotFound say what to
// change.
absl::Status ValidateArgs(const QuantizeArgs& a, bool overwrite) {
  if (a.model.empty()) {
    return absl::InvalidArgumentError(
        "--model is required: a model directory (config.json + *.safetensors) or "
        "synthetic:<preset>");
  }
  if (a.out.empty()) {
    return absl::InvalidArgumentError(
        "--out is required: the directory to write the int8 checkpoint to");
  }
  std::error_code ec;
  const bool synthetic = absl::StartsWith(a.model, "synthetic:");
  if (synthetic) {
    RETURN_IF_ERROR(worker::LoadModelSpecConfig(a.model).status());
  } else if (!fs::is_regular_file(fs::path(a.model) / "config.json", ec)) {
    return absl::NotFoundError(
        absl::StrCat("--model=", a.model,
                     " is not a model directory (no config.json in it); pass a Hugging "
                     "Face OPT directory or synthetic:<preset>"));
  }
  if (fs::exists(a.out, ec)) {
    if (!fs::is_directory(a.out, ec)) {
      return absl::InvalidArgumentError(
          absl::StrCat("--out=", a.out, " exists and is not a directory"));
    }
    if (!synthetic && fs::equivalent(a.out, a.model, ec)) {
      return absl::InvalidArgumentError(
          absl::StrCat("--out=", a.out, " is the model directory; write to a new directory"));
    }
    if (!overwrite && !fs::is_empty(a.out, ec)) {
      return absl::InvalidArgumentError(
          absl::StrCat("--out=", a.out,
                       " is not empty; pass --overwrite to replace its files, "
                       "or choose a new directory"));
    }
  }
  if (!a.tokenizer.empty() && !fs::exists(a.tokenizer, ec)) {
    return absl::NotFoundError(absl::StrCat("--tokenizer=", a.tokenizer, " does not exist"));
  }
  return absl::OkStatus();
}

// Copies the tokenizer files of `from` (a directory, or one tokenizer.json) into `out_dir`.
absl::StatusOr<std::vector<std::string>> CopyTokenizer(const std::string& from,
                                                       const std::string& out_dir) {
  std::vector<fs::path> sources;
  std::error_code ec;
  if (fs::is_regular_file(from, ec)) {
    sources.push_back(from);
  } else {
    for (const char* name : kTokenizerFiles) {
      const fs::path p = fs::path(from) / name;
      if (fs::is_regular_file(p, ec)) sources.push_back(p);
    }
  }
  std::vector<std::string> copied;
  for (const fs::path& p : sources) {
    // A lone tokenizer file keeps its role: tokenizer.json under that name.
    const fs::path target = fs::path(out_dir) / (fs::is_regular_file(from, ec) && p == from &&
                                                         absl::EndsWith(from, ".json")
                                                     ? fs::path("tokenizer.json")
                                                     : p.filename());
    fs::copy_file(p, target, fs::copy_options::overwrite_existing, ec);
    if (ec) {
      return absl::PermissionDeniedError(
          absl::StrCat("copying ", p.string(), " to ", target.string(), ": ", ec.message()));
    }
    copied.push_back(target.filename().string());
  }
  return copied;
}

int64_t DirectoryBytes(const std::string& dir) {
  int64_t total = 0;
  std::error_code ec;
  for (const fs::directory_entry& e : fs::directory_iterator(dir, ec)) {
    if (e.is_regular_file(ec)) total += static_cast<int64_t>(e.file_size(ec));
  }
  return total;
}

absl::Status Quantize(const QuantizeArgs& a) {
  const absl::Time start = absl::Now();
  ASSIGN_OR_RETURN(model::OpenedModel opened, worker::OpenModelSpec(a.model));
  const model::OptConfig& c = opened.config;
  LLMINT8_LOG(INFO) << "quantizing " << opened.source->Describe() << " (" << c.num_hidden_layers
                    << " layers, hidden " << c.hidden_size << ", vocab " << c.vocab_size << ") to "
                    << a.out;
  ProgressSource progress(*opened.source, c.num_hidden_layers);
  RETURN_IF_ERROR(model::WriteInt8Checkpoint(progress, c, a.out));

  std::string tokenizer_from = a.tokenizer;
  if (tokenizer_from.empty()) tokenizer_from = worker::ModelSpecDirectory(a.model).value_or("");
  if (!tokenizer_from.empty()) {
    ASSIGN_OR_RETURN(const std::vector<std::string> copied, CopyTokenizer(tokenizer_from, a.out));
    if (copied.empty()) {
      LLMINT8_LOG(WARNING) << "no tokenizer files in " << tokenizer_from
                           << ": prompts to this checkpoint must be token ids (or pass "
                              "--tokenizer to serve)";
    } else {
      LLMINT8_LOG(INFO) << "copied " << absl::StrJoin(copied, ", ") << " from " << tokenizer_from;
    }
  } else {
    LLMINT8_LOG(INFO) << "no tokenizer copied (synthetic model; pass --tokenizer to add one)";
  }
  LLMINT8_LOG(INFO) << "wrote " << a.out << ": "
                    << absl::StrFormat("%.1f MiB",
                                       static_cast<double>(DirectoryBytes(a.out)) / (1 << 20))
                    << absl::StrFormat(" in %.1f s", absl::ToDoubleSeconds(absl::Now() - start));
  return absl::OkStatus();
}

}  // namespace

int RunQuantize() {
  QuantizeArgs a;
  a.model = absl::GetFlag(FLAGS_model);
  a.out = absl::GetFlag(FLAGS_out);
  a.tokenizer = absl::GetFlag(FLAGS_tokenizer);
  if (absl::Status s = ValidateArgs(a, absl::GetFlag(FLAGS_overwrite)); !s.ok()) {
    std::fprintf(stderr, "llmint8 quantize: %s\n", std::string(s.message()).c_str());
    return kExitBadFlags;
  }
  if (absl::Status s = Quantize(a); !s.ok()) {
    std::fprintf(stderr, "llmint8 quantize: %s\n", std::string(s.message()).c_str());
    return kExitFailed;
  }
  std::printf("%s\n", a.out.c_str());
  return kExitOk;
}

}  // namespace llmint8::tools
