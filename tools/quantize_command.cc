// `llmint8 quantize`: model/int8_checkpoint.h WriteInt8Checkpoint on the command line, with the
// tokenizer files copied beside the checkpoint so that serve and eval find them.
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <iterator>
#include <memory>
#include <optional>
#include <string>
#include <system_error>
#include <utility>
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
#include "coordinator/tokenizer.h"
#include "model/checkpoint.h"
#include "model/config.h"
#include "model/int8_checkpoint.h"
#include "model/model_spec.h"
#include "tools/flags.h"
#include "tools/offline_commands.h"
#include "tools/subcommands.h"

namespace llmint8::tools {
namespace {

namespace fs = std::filesystem;

// Files of a Hugging Face model directory that describe its tokenizer (added_tokens.json: the
// tokens a fine-tune added beside vocab.json); copied from where the tokenizer comes from.
constexpr const char* kTokenizerFiles[] = {"vocab.json",
                                           "merges.txt",
                                           "added_tokens.json",
                                           "tokenizer.json",
                                           "tokenizer_config.json",
                                           "special_tokens_map.json"};
// The model's own generation defaults (end-of-sequence ids, sampling): copied from the model
// directory, whatever --tokenizer names.
constexpr char kGenerationConfig[] = "generation_config.json";

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
    const int64_t done = 20 * (layer + 1) / std::max<int64_t>(layers_, 1);
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
  bool overwrite = false;
};

// Where the tokenizer comes from: --tokenizer (a directory or a tokenizer.json), else the model
// directory; "" for none (a synthetic model without --tokenizer).
std::string TokenizerSource(const QuantizeArgs& a) {
  if (!a.tokenizer.empty()) return a.tokenizer;
  return model::ModelSpecDirectory(a.model).value_or("");
}

// The tokenizer files of `from` (a directory, or one tokenizer.json) and the name each has in
// the checkpoint.
std::vector<std::pair<fs::path, std::string>> TokenizerFiles(const std::string& from) {
  std::vector<std::pair<fs::path, std::string>> files;
  std::error_code ec;
  if (fs::is_regular_file(from, ec)) {
    files.push_back({from, "tokenizer.json"});  // a lone tokenizer file keeps its role
    return files;
  }
  for (const char* name : kTokenizerFiles) {
    const fs::path p = fs::path(from) / name;
    if (fs::is_regular_file(p, ec)) files.push_back({p, name});
  }
  return files;
}

// Whether `from` is a tokenizer.json or a directory with one or with vocab.json + merges.txt
// (what Tokenizer::FromDirectory loads).
bool HasTokenizer(const std::string& from) {
  std::error_code ec;
  return fs::is_regular_file(from, ec) || coordinator::Tokenizer::DirectoryHasFiles(from);
}

// The tokenizer the checkpoint will carry loads as serve loads it, and its ids fit the model's
// vocabulary: checked before any weight is read, so that a wrong --tokenizer costs nothing.
absl::Status CheckTokenizer(const QuantizeArgs& a, const model::OptConfig& config) {
  const std::string from = TokenizerSource(a);
  if (from.empty()) return absl::OkStatus();
  std::error_code ec;
  const bool file = fs::is_regular_file(from, ec);
  if (!HasTokenizer(from)) {
    // The model has none (perhaps a generation_config.json, still copied): a warning later.
    if (a.tokenizer.empty()) return absl::OkStatus();
    return absl::InvalidArgumentError(
        absl::StrCat("--tokenizer=", a.tokenizer,
                     " holds no tokenizer files (vocab.json + merges.txt, or "
                     "tokenizer.json)"));
  }
  if (file && !absl::EndsWith(from, ".json")) {
    return absl::InvalidArgumentError(
        absl::StrCat("--tokenizer=", from,
                     " is a file but not a tokenizer.json; pass a tokenizer.json or "
                     "a directory with vocab.json + merges.txt"));
  }
  absl::StatusOr<std::unique_ptr<coordinator::Tokenizer>> tokenizer =
      file ? coordinator::Tokenizer::FromTokenizerJsonFile(from)
           : coordinator::Tokenizer::FromDirectory(from);
  if (!tokenizer.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("the tokenizer of ", from, " does not load: ", tokenizer.status().message()));
  }
  if ((*tokenizer)->vocab_size() > config.vocab_size) {
    return absl::InvalidArgumentError(absl::StrCat(
        "the tokenizer of ", from, " has ids up to ", (*tokenizer)->vocab_size() - 1,
        " but the model's vocabulary has ", config.vocab_size,
        " entries: it is another model's tokenizer; pass this model's with --tokenizer"));
  }
  return absl::OkStatus();
}

// --out without trailing slashes ("q/" is "q"), so that its parent and name are the directory's.
fs::path OutPath(std::string out) {
  while (out.size() > 1 && out.back() == '/') out.pop_back();
  return fs::path(out);
}

// Checks the flags without touching the model's weights. InvalidArgument / NotFound say what to
// change.
absl::Status ValidateArgs(const QuantizeArgs& a) {
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
  if (!synthetic && !fs::is_regular_file(fs::path(a.model) / "config.json", ec)) {
    return absl::NotFoundError(
        absl::StrCat("--model=", a.model,
                     " is not a model directory (no config.json in it); pass a Hugging "
                     "Face OPT directory or synthetic:<preset>"));
  }
  ASSIGN_OR_RETURN(const model::OptConfig config, model::LoadModelSpecConfig(a.model));
  const fs::path out = OutPath(a.out);  // "dir/" would follow a link "dir"
  if (fs::is_symlink(out, ec) && !fs::exists(out, ec)) {
    return absl::InvalidArgumentError(absl::StrCat("--out=", a.out, " is a link to ",
                                                   fs::read_symlink(out, ec).string(),
                                                   ", which does not exist"));
  }
  if (fs::exists(out, ec)) {
    if (!fs::is_directory(out, ec)) {
      return absl::InvalidArgumentError(
          absl::StrCat("--out=", a.out, " exists and is not a directory"));
    }
    if (!synthetic && fs::equivalent(out, a.model, ec)) {
      return absl::InvalidArgumentError(
          absl::StrCat("--out=", a.out, " is the model directory; write to a new directory"));
    }
    if (!a.overwrite && !fs::is_empty(out, ec)) {
      return absl::InvalidArgumentError(
          absl::StrCat("--out=", a.out,
                       " is not empty; pass --overwrite to replace its files, "
                       "or choose a new directory"));
    }
  }
  if (!a.tokenizer.empty() && !fs::exists(a.tokenizer, ec)) {
    return absl::NotFoundError(absl::StrCat("--tokenizer=", a.tokenizer, " does not exist"));
  }
  return CheckTokenizer(a, config);
}

// Copies `source` to `out_dir` / `name`.
absl::Status CopyInto(const fs::path& source, const fs::path& out_dir, const std::string& name) {
  std::error_code ec;
  fs::copy_file(source, out_dir / name, fs::copy_options::overwrite_existing, ec);
  if (!ec) return absl::OkStatus();
  return absl::ErrnoToStatus(
      ec.value(), absl::StrCat("copying ", source.string(), " to ", (out_dir / name).string()));
}

// Copies the tokenizer files of `from` into `out_dir`; returns their names there.
absl::StatusOr<std::vector<std::string>> CopyTokenizer(const std::string& from,
                                                       const fs::path& out_dir) {
  std::vector<std::string> copied;
  for (const auto& [source, name] : TokenizerFiles(from)) {
    RETURN_IF_ERROR(CopyInto(source, out_dir, name));
    copied.push_back(name);
  }
  return copied;
}

// Whether `name` is a file a checkpoint directory is read from (config, weights, index,
// tokenizer): what --overwrite replaces, so that no stale one is read beside the new ones.
bool IsCheckpointFile(const std::string& name) {
  if (name == "config.json" || absl::EndsWith(name, ".safetensors") ||
      name == "model.safetensors.index.json") {
    return true;
  }
  return name == kGenerationConfig ||
         std::find(std::begin(kTokenizerFiles), std::end(kTokenizerFiles), name) !=
             std::end(kTokenizerFiles);
}

// The directory a run writes into, on --out's file system so that publishing is renames: inside
// an existing --out (which keeps its inode, owner and mode, and needs no writable parent), else
// beside it. Removed when the run fails before publishing; kept (and named in the error) when
// publishing fails part-way, since it then holds the only whole new checkpoint.
class Staging {
 public:
  explicit Staging(const fs::path& out) {
    std::error_code ec;
    inside_ = fs::is_directory(out, ec);
    const std::string name = absl::StrCat(".quantizing-", getpid());
    path_ = inside_ ? out / name
                    : (out.has_parent_path() ? out.parent_path() : fs::path(".")) /
                          absl::StrCat(".", out.filename().string(), name);
  }
  ~Staging() {
    std::error_code ec;
    if (!keep_) fs::remove_all(path_, ec);
  }
  Staging(const Staging&) = delete;
  Staging& operator=(const Staging&) = delete;

  const fs::path& path() const { return path_; }

  // Puts the written checkpoint at `out`. A new --out is the staging directory renamed. An
  // existing one must still be empty (but for this run's directory) unless `overwrite`; its old
  // checkpoint files (config.json first) move into a backup directory, the new ones move in
  // (config.json last), and the backup goes. If a move fails, the old files move back.
  absl::Status Publish(const fs::path& out, bool overwrite) {
    std::error_code ec;
    if (!inside_) {
      fs::rename(path_, out, ec);
      if (!ec) return absl::OkStatus();
      keep_ = true;
      return absl::ErrnoToStatus(ec.value(), absl::StrCat("moving the checkpoint to ", out.string(),
                                                          " (it is in ", path_.string(), ")"));
    }
    std::vector<fs::path> stale;
    for (const fs::directory_entry& e : fs::directory_iterator(out, ec)) {
      if (e.path() == path_) continue;
      if (!overwrite) {
        keep_ = true;
        return absl::FailedPreconditionError(
            absl::StrCat(out.string(), " is no longer empty (", e.path().filename().string(),
                         "); the checkpoint is in ", path_.string(), " (or run with --overwrite)"));
      }
      if (IsCheckpointFile(e.path().filename().string())) stale.push_back(e.path());
    }
    if (ec) return absl::ErrnoToStatus(ec.value(), absl::StrCat("listing ", out.string()));
    std::stable_partition(stale.begin(), stale.end(),
                          [](const fs::path& f) { return f.filename() == "config.json"; });
    const fs::path backup = out / absl::StrCat(".replaced-", getpid());
    fs::create_directory(backup, ec);
    std::vector<fs::path> moved;  // old files now in the backup
    absl::Status status = absl::OkStatus();
    for (const fs::path& f : stale) {
      status = Rename(f, backup / f.filename());
      if (!status.ok()) break;
      moved.push_back(f);
    }
    std::vector<fs::path> files;
    if (status.ok()) {
      for (const fs::directory_entry& e : fs::directory_iterator(path_, ec)) {
        files.push_back(e.path());
      }
      std::stable_partition(files.begin(), files.end(),
                            [](const fs::path& f) { return f.filename() != "config.json"; });
    }
    std::vector<fs::path> placed;  // new files now in out
    for (size_t i = 0; status.ok() && i < files.size(); ++i) {
      status = Rename(files[i], out / files[i].filename());
      if (status.ok()) placed.push_back(files[i]);
    }
    if (!status.ok()) {  // undo: the new files back to staging, the old ones back to out
      for (const fs::path& f : placed) Rename(out / f.filename(), f).IgnoreError();
      for (const fs::path& f : moved) Rename(backup / f.filename(), f).IgnoreError();
      keep_ = true;
      return absl::Status(status.code(),
                          absl::StrCat(status.message(), "; ", out.string(),
                                       " is as it was, the new checkpoint is in ", path_.string()));
    }
    fs::remove_all(backup, ec);
    return absl::OkStatus();
  }

 private:
  static absl::Status Rename(const fs::path& from, const fs::path& to) {
    std::error_code ec;
    fs::rename(from, to, ec);
    if (!ec) return absl::OkStatus();
    return absl::ErrnoToStatus(ec.value(),
                               absl::StrCat("moving ", from.string(), " to ", to.string()));
  }

  fs::path path_;
  bool inside_ = false;
  bool keep_ = false;
};

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
  ASSIGN_OR_RETURN(model::OpenedModel opened, model::OpenModelSpec(a.model));
  const model::OptConfig& c = opened.config;
  LLMINT8_LOG(INFO) << "quantizing " << opened.source->Describe() << " (" << c.num_hidden_layers
                    << " layers, hidden " << c.hidden_size << ", vocab " << c.vocab_size << ") to "
                    << a.out;
  // Everything is written into a staging directory and moved into place at the end: a run that
  // fails leaves --out as it was (Staging).
  const fs::path out = OutPath(a.out);
  Staging staging(out);
  std::error_code ec;
  fs::remove_all(staging.path(), ec);  // a leftover of a killed run of the same pid
  ProgressSource progress(*opened.source, c.num_hidden_layers);
  try {
    RETURN_IF_ERROR(model::WriteInt8Checkpoint(progress, c, staging.path().string()));
  } catch (const std::bad_alloc&) {
    // A layer's tensors are held in memory until its file is written: one that does not fit
    // is an error, not an abort (the staging directory goes).
    return absl::ResourceExhaustedError(
        absl::StrCat("out of memory quantizing ", a.model,
                     ": a layer's int8 tensors are held in memory until its file is written; "
                     "run quantize on a machine with more memory"));
  }

  if (const std::optional<std::string> model_dir = model::ModelSpecDirectory(a.model)) {
    const fs::path generation = fs::path(*model_dir) / kGenerationConfig;
    if (fs::is_regular_file(generation, ec)) {
      RETURN_IF_ERROR(CopyInto(generation, staging.path(), kGenerationConfig));
      LLMINT8_LOG(INFO) << "copied " << kGenerationConfig << " from " << *model_dir;
    }
  }
  const std::string tokenizer_from = TokenizerSource(a);
  if (!tokenizer_from.empty()) {
    ASSIGN_OR_RETURN(const std::vector<std::string> copied,
                     CopyTokenizer(tokenizer_from, staging.path()));
    if (!copied.empty()) {
      LLMINT8_LOG(INFO) << "copied " << absl::StrJoin(copied, ", ") << " from " << tokenizer_from;
    }
    if (!HasTokenizer(tokenizer_from)) {
      LLMINT8_LOG(WARNING) << "no tokenizer in " << tokenizer_from
                           << ": prompts to this checkpoint must be token ids (or pass "
                              "--tokenizer to quantize or serve)";
    }
  } else {
    LLMINT8_LOG(INFO) << "no tokenizer copied (synthetic model; pass --tokenizer to add one)";
  }
  RETURN_IF_ERROR(staging.Publish(out, a.overwrite));
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
  a.overwrite = absl::GetFlag(FLAGS_overwrite);
  if (absl::Status s = ValidateArgs(a); !s.ok()) {
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
