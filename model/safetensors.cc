#include "model/safetensors.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <map>
#include <memory>
#include <set>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/file.h"
#include "common/half.h"
#include "common/json_text.h"
#include "common/mapped_copy.h"
#include "common/status_macros.h"
#include "model/safetensors_internal.h"
#include "model/tensor_names.h"
#include "nlohmann/json.hpp"

namespace llmint8::model {

using internal::FileError;
using internal::Json;
using internal::kMaxHeaderBytes;
using internal::TensorError;

namespace {

// ---- element conversion -------------------------------------------------------------------

float BF16ToFloat(uint16_t b) {
  const uint32_t x = static_cast<uint32_t>(b) << 16;
  float f;
  std::memcpy(&f, &x, 4);
  return f;
}

void ConvertRow(TensorDType dtype, const uint8_t* src, int64_t n, float* dst) {
  switch (dtype) {
    case TensorDType::kF16:
      for (int64_t i = 0; i < n; ++i) {
        Half h;
        std::memcpy(&h.bits, src + 2 * i, 2);
        dst[i] = HalfToFloat(h);
      }
      return;
    case TensorDType::kBF16:
      for (int64_t i = 0; i < n; ++i) {
        uint16_t b;
        std::memcpy(&b, src + 2 * i, 2);
        dst[i] = BF16ToFloat(b);
      }
      return;
    case TensorDType::kF32:
      std::memcpy(dst, src, static_cast<size_t>(n) * 4);
      return;
    case TensorDType::kI8:
      for (int64_t i = 0; i < n; ++i) dst[i] = static_cast<float>(static_cast<int8_t>(src[i]));
      return;
  }
}

// ---- memory-mapped file --------------------------------------------------------------------

class MappedFile {
 public:
  static absl::StatusOr<std::unique_ptr<MappedFile>> Open(const std::string& path) {
    // What is not a regular file (a device, a FIFO, a terminal a symlink in the checkpoint
    // points at) is refused before it is opened: opening one may act on it. O_NONBLOCK and
    // O_NOCTTY, and the check again on what was opened, cover a swap between the two.
    struct stat st;
    if (::stat(path.c_str(), &st) == 0 && !S_ISREG(st.st_mode)) {
      return absl::InvalidArgumentError(absl::StrCat(path, " is not a regular file"));
    }
    const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY);
    if (fd < 0) {
      return absl::NotFoundError(
          absl::StrCat("cannot open safetensors file ", path, ": ", std::strerror(errno)));
    }
    if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
      ::close(fd);
      return absl::InvalidArgumentError(absl::StrCat(path, " is not a regular file"));
    }
    auto f = std::unique_ptr<MappedFile>(new MappedFile);
    f->path_ = path;
    f->size_ = static_cast<uint64_t>(st.st_size);
    if (f->size_ > 0) {
      void* p = ::mmap(nullptr, f->size_, PROT_READ, MAP_PRIVATE, fd, 0);
      if (p == MAP_FAILED) {
        ::close(fd);
        return absl::InternalError(
            absl::StrCat("mmap of ", path, " failed: ", std::strerror(errno)));
      }
      f->data_ = static_cast<const uint8_t*>(p);
    }
    ::close(fd);
    return f;
  }
  ~MappedFile() {
    if (data_ != nullptr) ::munmap(const_cast<uint8_t*>(data_), size_);
  }
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;

  const std::string& path() const { return path_; }
  std::span<const uint8_t> bytes() const { return {data_, static_cast<size_t>(size_)}; }
  uint64_t size() const { return size_; }

  // Copies `n` mapped bytes from `src` (within bytes()): DataLoss, instead of SIGBUS, when the
  // file shrank after it was mapped or its storage failed (common/mapped_copy.h).
  absl::Status Copy(void* dst, const uint8_t* src, size_t n) const {
    if (CopyFromMapping(dst, src, n)) return absl::OkStatus();
    return absl::DataLossError(absl::StrCat(
        "reading ", path_, " at byte ", src - data_,
        " failed: the file shrank after it was opened, or its storage failed (was it replaced "
        "while loading?)"));
  }
  // The 8-byte length and the JSON header it announces, copied out of the mapping; the length
  // alone when the file cannot hold it or it is over the limit (ParseSafetensorsHeader then
  // refuses it from the length).
  absl::StatusOr<std::vector<uint8_t>> HeaderPrefix() const {
    std::vector<uint8_t> prefix(static_cast<size_t>(std::min<uint64_t>(size_, 8)));
    RETURN_IF_ERROR(Copy(prefix.data(), data_, prefix.size()));
    if (prefix.size() < 8) return prefix;
    uint64_t n = 0;
    std::memcpy(&n, prefix.data(), 8);  // little-endian, as the format and this host
    if (n > size_ - 8 || n > kMaxHeaderBytes) return prefix;
    prefix.resize(static_cast<size_t>(8 + n));
    RETURN_IF_ERROR(Copy(prefix.data() + 8, data_ + 8, static_cast<size_t>(n)));
    return prefix;
  }

 private:
  MappedFile() = default;
  std::string path_;
  const uint8_t* data_ = nullptr;
  uint64_t size_ = 0;
};

// ---- the source ----------------------------------------------------------------------------

class SafetensorsSource final : public CheckpointSource {
 public:
  struct Tensor {
    const MappedFile* file;
    SafetensorsEntry entry;
    TensorInfo info;
    const uint8_t* data;  // file bytes of the tensor
  };

  SafetensorsSource(std::string label, std::vector<std::unique_ptr<MappedFile>> files,
                    std::map<std::string, Tensor> tensors, std::map<std::string, std::string> md)
      : label_(std::move(label)),
        files_(std::move(files)),
        tensors_(std::move(tensors)),
        metadata_(std::move(md)) {}

  std::string Describe() const override { return label_; }
  const std::map<std::string, std::string>& metadata() const { return metadata_; }

  bool Has(std::string_view name) const override {
    return tensors_.count(CanonicalTensorName(name)) > 0;
  }

  absl::StatusOr<TensorInfo> Info(std::string_view name) const override {
    ASSIGN_OR_RETURN(const Tensor* t, Find(name));
    return t->info;
  }

  std::vector<std::string> TensorNames() const override {
    std::vector<std::string> out;
    for (const auto& [name, t] : tensors_) out.push_back(name);
    return out;
  }

  absl::Status ReadSlice(std::string_view name, Range rows, Range cols,
                         std::span<float> out) const override {
    ASSIGN_OR_RETURN(const Tensor* t, Find(name));
    RETURN_IF_ERROR(ValidateSliceRequest(t->file->path(), name, t->info, rows, cols, out.size()));
    std::vector<uint8_t> run;
    RETURN_IF_ERROR(ForEachRowRun(*t, rows, cols, [&](int64_t r, int64_t n, const uint8_t* src) {
      run.resize(static_cast<size_t>(n * cols.size() * TensorDTypeSize(t->info.dtype)));
      RETURN_IF_ERROR(t->file->Copy(run.data(), src, run.size()));
      if (t->info.quantized()) RETURN_IF_ERROR(CheckInt8Rows(*t, name, r, cols, run));
      ConvertRow(t->info.dtype, run.data(), n * cols.size(),
                 out.data() + (r - rows.begin) * cols.size());
      return absl::OkStatus();
    }));
    if (t->info.quantized()) {
      std::vector<float> absmax(static_cast<size_t>(rows.size()));
      RETURN_IF_ERROR(ReadAbsmax(*t, rows, absmax));
      for (int64_t r = 0; r < rows.size(); ++r) {
        const float s = absmax[r] / 127.0f;
        for (int64_t c = 0; c < cols.size(); ++c) out[r * cols.size() + c] *= s;
      }
    }
    return absl::OkStatus();
  }

  absl::Status ReadSliceHalf(std::string_view name, Range rows, Range cols,
                             std::span<Half> out) const override {
    ASSIGN_OR_RETURN(const Tensor* t, Find(name));
    if (t->info.dtype != TensorDType::kF16) {
      return CheckpointSource::ReadSliceHalf(name, rows, cols, out);
    }
    RETURN_IF_ERROR(ValidateSliceRequest(t->file->path(), name, t->info, rows, cols, out.size()));
    return ForEachRowRun(*t, rows, cols, [&](int64_t r, int64_t n, const uint8_t* src) {
      return t->file->Copy(out.data() + (r - rows.begin) * cols.size(), src,
                           static_cast<size_t>(n * cols.size()) * 2);
    });
  }

  absl::Status ReadInt8Slice(std::string_view name, Range rows, Range cols, std::span<int8_t> q,
                             std::span<float> row_absmax) const override {
    ASSIGN_OR_RETURN(const Tensor* t, Find(name));
    if (!t->info.quantized()) {
      return CheckpointSource::ReadInt8Slice(name, rows, cols, q, row_absmax);
    }
    RETURN_IF_ERROR(ValidateSliceRequest(t->file->path(), name, t->info, rows, cols, q.size()));
    if (row_absmax.size() != static_cast<size_t>(rows.size())) {
      return absl::InvalidArgumentError(
          absl::StrCat(t->file->path(), ": tensor \"", std::string(name), "\": row_absmax has ",
                       row_absmax.size(), " elements, the slice has ", rows.size(), " rows"));
    }
    RETURN_IF_ERROR(ForEachRowRun(*t, rows, cols, [&](int64_t r, int64_t n, const uint8_t* src) {
      const std::span<int8_t> dst = q.subspan(static_cast<size_t>((r - rows.begin) * cols.size()),
                                              static_cast<size_t>(n * cols.size()));
      RETURN_IF_ERROR(t->file->Copy(dst.data(), src, dst.size()));
      return CheckInt8Rows(*t, name, r, cols, std::as_bytes(dst));
    }));
    return ReadAbsmax(*t, rows, row_absmax);
  }

 private:
  // Bytes one copy out of the mapping takes at most when the rows it reads are back to back.
  static constexpr int64_t kRunBytes = int64_t{1} << 20;

  // Calls fn(first_row, rows_in_run, source) over the slice's rows in runs the file holds back
  // to back: one row per run unless the slice spans every column, then as many rows as fit
  // kRunBytes. (One copy per row would make a 1-D tensor, read as [n, 1], a copy per element.)
  template <typename Fn>
  static absl::Status ForEachRowRun(const Tensor& t, Range rows, Range cols, Fn fn) {
    const int64_t esize = TensorDTypeSize(t.info.dtype);
    const int64_t ncols = t.info.cols();
    const int64_t row_bytes = std::max<int64_t>(cols.size() * esize, 1);
    const int64_t per_run = cols.size() == ncols ? std::max<int64_t>(kRunBytes / row_bytes, 1) : 1;
    for (int64_t r = rows.begin; r < rows.end; r += per_run) {
      const int64_t n = std::min(per_run, rows.end - r);
      RETURN_IF_ERROR(fn(r, n, t.data + (r * ncols + cols.begin) * esize));
    }
    return absl::OkStatus();
  }

  // llmint8 quantize writes [-127, 127] (kernels/int8_gemm.h's promise); -128 is damage,
  // refused whether the weights are read as int8 or dequantized. `run`: the slice's rows from
  // `first_row` on, cols.size() bytes each.
  template <typename Bytes>
  static absl::Status CheckInt8Rows(const Tensor& t, std::string_view name, int64_t first_row,
                                    Range cols, const Bytes& run) {
    const void* at = std::memchr(run.data(), 0x80, run.size());
    if (at == nullptr) return absl::OkStatus();
    const int64_t i =
        static_cast<const uint8_t*>(at) - reinterpret_cast<const uint8_t*>(run.data());
    return absl::InvalidArgumentError(absl::StrCat(
        t.file->path(), ": tensor \"", std::string(name), "\": row ", first_row + i / cols.size(),
        " column ", cols.begin + i % cols.size(),
        " is -128; int8 weights are in [-127, 127] (the checkpoint is damaged: quantize it "
        "again)"));
  }

  absl::StatusOr<const Tensor*> Find(std::string_view name) const {
    auto it = tensors_.find(CanonicalTensorName(name));
    if (it == tensors_.end()) {
      return absl::NotFoundError(
          absl::StrCat(label_, ": tensor \"", std::string(name), "\" not found"));
    }
    return &it->second;
  }

  // The absmax companion was checked at open: F32 [rows]. Its values are checked here, as
  // they are read: finite and >= 0 (NaN would silently zero a row's products).
  absl::Status ReadAbsmax(const Tensor& t, Range rows, std::span<float> out) const {
    ASSIGN_OR_RETURN(const Tensor* s, Find(t.entry.name + "_absmax"));
    RETURN_IF_ERROR(
        s->file->Copy(out.data(), s->data + rows.begin * 4, static_cast<size_t>(rows.size()) * 4));
    for (int64_t r = 0; r < rows.size(); ++r) {
      if (std::isfinite(out[r]) && out[r] >= 0.0f) continue;
      return absl::InvalidArgumentError(
          absl::StrCat(s->file->path(), ": tensor \"", s->entry.name, "\": the scale of row ",
                       rows.begin + r, " is ", out[r],
                       "; row scales are finite and >= 0 (the checkpoint is damaged: quantize it "
                       "again)"));
    }
    return absl::OkStatus();
  }

  std::string label_;
  std::vector<std::unique_ptr<MappedFile>> files_;
  std::map<std::string, Tensor> tensors_;  // canonical name -> tensor
  std::map<std::string, std::string> metadata_;
};

// Adds the tensors of one validated file; duplicate (canonical) names are an error.
absl::Status AddFileTensors(const MappedFile& file, const SafetensorsHeader& header,
                            std::map<std::string, SafetensorsSource::Tensor>* tensors) {
  for (const SafetensorsEntry& e : header.entries) {
    SafetensorsSource::Tensor t;
    t.file = &file;
    t.entry = e;
    t.entry.name = CanonicalTensorName(e.name);
    t.info.shape = e.shape;
    t.info.dtype = e.dtype;
    t.data = file.bytes().data() + header.data_start + e.begin;
    if (e.shape.size() > 2) {
      return TensorError(file.path(), e.name,
                         absl::StrCat("rank ", e.shape.size(), " tensors are not OPT weights"));
    }
    auto [it, inserted] = tensors->emplace(t.entry.name, std::move(t));
    if (!inserted) {
      return TensorError(file.path(), e.name,
                         absl::StrCat("duplicate tensor (also in ", it->second.file->path(), ")"));
    }
  }
  return absl::OkStatus();
}

// Every I8 tensor needs an F32 "<name>_absmax" of shape [rows].
absl::Status CheckQuantizedCompanions(const std::map<std::string, SafetensorsSource::Tensor>& ts) {
  for (const auto& [name, t] : ts) {
    if (!t.info.quantized()) continue;
    auto it = ts.find(name + "_absmax");
    if (it == ts.end()) {
      return absl::NotFoundError(absl::StrCat("safetensors file ", t.file->path(), ": I8 tensor \"",
                                              name, "\" has no \"", name, "_absmax\" row scales"));
    }
    const TensorInfo& s = it->second.info;
    if (s.dtype != TensorDType::kF32 || s.shape != std::vector<int64_t>{t.info.rows()}) {
      return TensorError(it->second.file->path(), it->first,
                         absl::StrCat("row scales must be F32 [", t.info.rows(), "], got ",
                                      std::string(TensorDTypeName(s.dtype)), " [",
                                      absl::StrJoin(s.shape, ", "), "]"));
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<CheckpointSource>> OpenIndex(const std::string& index_path) {
  ASSIGN_OR_RETURN(std::string text, ReadFileToString(index_path));
  RETURN_IF_ERROR(CheckUntrustedJson(text, index_path));
  Json j = Json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) {
    return absl::InvalidArgumentError(absl::StrCat(index_path, ": not a JSON object"));
  }
  auto wm = j.find("weight_map");
  if (wm == j.end() || !wm->is_object()) {
    return absl::InvalidArgumentError(absl::StrCat(index_path, ": missing object \"weight_map\""));
  }
  // Shard files sit beside the index ("." for a bare file name, not "/").
  const std::filesystem::path dir_path = std::filesystem::path(index_path).parent_path();
  const std::string dir = dir_path.empty() ? std::string(".") : dir_path.string();
  std::map<std::string, std::string> weight_map;  // tensor -> file name
  std::set<std::string> file_names;
  for (const auto& [tensor, file] : wm->items()) {
    if (!file.is_string()) {
      return absl::InvalidArgumentError(absl::StrCat(index_path, ": weight_map entry of tensor \"",
                                                     tensor, "\" is not a file name"));
    }
    const std::string f = file.get<std::string>();
    if (f.empty() || f.find('/') != std::string::npos || f == "." || f == "..") {
      return absl::InvalidArgumentError(absl::StrCat(index_path, ": tensor \"", tensor,
                                                     "\" maps to \"", f,
                                                     "\", which is not a file name in ", dir));
    }
    weight_map[tensor] = f;
    file_names.insert(f);
  }
  std::vector<std::unique_ptr<MappedFile>> files;
  std::map<std::string, SafetensorsSource::Tensor> tensors;
  std::map<std::string, std::string> metadata;
  std::map<std::string, const MappedFile*> by_name;
  for (const std::string& f : file_names) {
    ASSIGN_OR_RETURN(std::unique_ptr<MappedFile> mf, MappedFile::Open(dir + "/" + f));
    ASSIGN_OR_RETURN(const std::vector<uint8_t> prefix, mf->HeaderPrefix());
    ASSIGN_OR_RETURN(SafetensorsHeader h, ParseSafetensorsHeader(prefix, mf->size(), mf->path()));
    RETURN_IF_ERROR(AddFileTensors(*mf, h, &tensors));
    if (metadata.empty()) metadata = h.metadata;
    by_name[f] = mf.get();
    files.push_back(std::move(mf));
  }
  for (const auto& [tensor, f] : weight_map) {
    auto it = tensors.find(CanonicalTensorName(tensor));
    if (it == tensors.end() || it->second.file != by_name[f]) {
      return absl::NotFoundError(absl::StrCat(index_path, ": tensor \"", tensor, "\" is not in ",
                                              dir, "/", f, " as the weight_map says"));
    }
  }
  RETURN_IF_ERROR(CheckQuantizedCompanions(tensors));
  return std::unique_ptr<CheckpointSource>(
      new SafetensorsSource(index_path, std::move(files), std::move(tensors), std::move(metadata)));
}

}  // namespace

absl::StatusOr<std::unique_ptr<CheckpointSource>> OpenSafetensors(const std::string& path) {
  if (path.size() >= 11 && path.substr(path.size() - 11) == ".index.json") return OpenIndex(path);
  ASSIGN_OR_RETURN(std::unique_ptr<MappedFile> mf, MappedFile::Open(path));
  ASSIGN_OR_RETURN(const std::vector<uint8_t> prefix, mf->HeaderPrefix());
  ASSIGN_OR_RETURN(SafetensorsHeader h, ParseSafetensorsHeader(prefix, mf->size(), path));
  std::map<std::string, SafetensorsSource::Tensor> tensors;
  RETURN_IF_ERROR(AddFileTensors(*mf, h, &tensors));
  RETURN_IF_ERROR(CheckQuantizedCompanions(tensors));
  std::vector<std::unique_ptr<MappedFile>> files;
  files.push_back(std::move(mf));
  return std::unique_ptr<CheckpointSource>(
      new SafetensorsSource(path, std::move(files), std::move(tensors), std::move(h.metadata)));
}

namespace {

// Whether `path` exists; an error other than "not there" (a symlink loop, a name too long, no
// permission) is one, not an exception.
absl::StatusOr<bool> Exists(const std::string& path) {
  std::error_code ec;
  const bool there = std::filesystem::exists(path, ec);
  if (ec) return absl::InvalidArgumentError(absl::StrCat(path, ": ", ec.message()));
  return there;
}

}  // namespace

absl::StatusOr<std::unique_ptr<CheckpointSource>> OpenSafetensorsDir(const std::string& dir) {
  const std::string index = dir + "/model.safetensors.index.json";
  ASSIGN_OR_RETURN(const bool has_index, Exists(index));
  if (has_index) return OpenIndex(index);
  const std::string single = dir + "/model.safetensors";
  ASSIGN_OR_RETURN(const bool has_single, Exists(single));
  if (has_single) return OpenSafetensors(single);
  return absl::NotFoundError(
      absl::StrCat(dir,
                   " holds neither model.safetensors nor model.safetensors.index.json (convert "
                   "pytorch_model.bin checkpoints with transformers' "
                   "save_pretrained(safe_serialization=True))"));
}

std::map<std::string, std::string> SafetensorsMetadata(const CheckpointSource& source) {
  if (const auto* s = dynamic_cast<const SafetensorsSource*>(&source)) return s->metadata();
  return {};
}

}  // namespace llmint8::model
