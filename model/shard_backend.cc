#include "model/shard_backend.h"

#include <algorithm>
#include <string>

#include "absl/strings/str_cat.h"

namespace llmint8::model {

std::string_view PrecisionName(Precision p) {
  switch (p) {
    case Precision::kF32:
      return "f32";
    case Precision::kF16:
      return "f16";
    case Precision::kInt8:
      return "int8";
  }
  return "unknown";
}

absl::StatusOr<Precision> ParsePrecision(std::string_view name) {
  if (name == "f32" || name == "fp32") return Precision::kF32;
  if (name == "f16" || name == "fp16") return Precision::kF16;
  if (name == "int8") return Precision::kInt8;
  return absl::InvalidArgumentError(
      absl::StrCat("dtype \"", std::string(name), "\" is not supported; use fp16, int8 or fp32"));
}

std::string_view DeviceName(Device d) {
  switch (d) {
    case Device::kCpu:
      return "cpu";
    case Device::kCuda:
      return "cuda";
  }
  return "unknown";
}

absl::StatusOr<Device> ParseDevice(std::string_view name) {
  if (name == "cpu") return Device::kCpu;
  if (name == "cuda" || name == "gpu") return Device::kCuda;
  return absl::InvalidArgumentError(
      absl::StrCat("unknown device \"", std::string(name), "\"; use cpu or cuda"));
}

std::string MemoryStats::DebugString() const {
  return absl::StrCat("total ", total(), " B (int8 weights ", int8_weights, ", scales ", scales,
                      ", fp16 ", fp16_weights, ", fp32 ", fp32_weights, ", kv cache ", kv_cache,
                      ", scratch ", scratch, ")");
}

int64_t PlanLogitRows(std::span<const ShardModel::SequenceInput> batch, bool all_positions,
                      std::vector<int64_t>* row_begin, std::vector<int32_t>* source_rows) {
  row_begin->clear();
  source_rows->clear();
  int32_t token_row = 0;
  for (const ShardModel::SequenceInput& in : batch) {
    row_begin->push_back(static_cast<int64_t>(source_rows->size()));
    const int32_t n = static_cast<int32_t>(in.tokens.size());
    for (int32_t j = all_positions || in.all_positions ? 0 : n - 1; j < n; ++j) {
      source_rows->push_back(token_row + j);
    }
    token_row += n;
  }
  row_begin->push_back(static_cast<int64_t>(source_rows->size()));
  return static_cast<int64_t>(source_rows->size());
}

absl::Status ValidateStepBatch(std::span<const ShardModel::SequenceInput> batch, int64_t vocab_size,
                               int64_t max_context, absl::FunctionRef<int64_t(uint64_t)> length,
                               std::vector<uint64_t>* sorted_ids) {
  if (batch.empty()) return absl::InvalidArgumentError("Step: empty batch");
  std::vector<uint64_t>& ids = *sorted_ids;
  ids.clear();
  for (size_t i = 0; i < batch.size(); ++i) {
    const ShardModel::SequenceInput& in = batch[i];
    if (in.tokens.empty()) {
      return absl::InvalidArgumentError(
          absl::StrCat("Step: sequence ", in.seq_id, " (batch entry ", i, ") has no tokens"));
    }
    for (size_t j = 0; j < in.tokens.size(); ++j) {
      if (in.tokens[j] < 0 || in.tokens[j] >= vocab_size) {
        return absl::InvalidArgumentError(
            absl::StrCat("Step: sequence ", in.seq_id, " token ", j, " is ", in.tokens[j],
                         ", outside the vocabulary [0, ", vocab_size, ")"));
      }
    }
    if (in.prefix_length < 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("Step: sequence ", in.seq_id, " has prefix_length ", in.prefix_length));
    }
    // (A sequence started from a prefix is new: it holds nothing to drop.)
    if (const int64_t held = length(in.seq_id); in.drop < 0 || in.drop > held) {
      return absl::InvalidArgumentError(absl::StrCat("Step: sequence ", in.seq_id, " drops ",
                                                     in.drop, " positions; it holds ", held));
    }
    if (in.prefix_length > 0) {
      if (const int64_t held = length(in.seq_id); held > 0) {
        return absl::InvalidArgumentError(
            absl::StrCat("Step: sequence ", in.seq_id, " already holds ", held,
                         " positions; a prefix can only start a new sequence"));
      }
      const int64_t source = in.prefix_from == in.seq_id ? 0 : length(in.prefix_from);
      if (source < in.prefix_length) {
        return absl::InvalidArgumentError(
            absl::StrCat("Step: sequence ", in.seq_id, " starts from ", in.prefix_length,
                         " positions of sequence ", in.prefix_from, ", which holds ", source));
      }
    }
    const int64_t len = PastLength(in, length(in.seq_id));
    const int64_t n = static_cast<int64_t>(in.tokens.size());
    if (len + n > max_context) {
      return absl::OutOfRangeError(
          absl::StrCat("Step: sequence ", in.seq_id, " has ", len, " cached positions + ", n,
                       " new tokens, over the context limit ", max_context));
    }
    ids.push_back(in.seq_id);
  }
  std::sort(ids.begin(), ids.end());
  auto dup = std::adjacent_find(ids.begin(), ids.end());
  if (dup != ids.end()) {
    return absl::InvalidArgumentError(
        absl::StrCat("Step: sequence ", *dup, " appears more than once in the batch"));
  }
  return absl::OkStatus();
}

absl::Status ForwardError(absl::Status st, int rank, int tp) {
  switch (st.code()) {
    case absl::StatusCode::kResourceExhausted:
      if (tp == 1) return st;
      return absl::InternalError(absl::StrCat("rank ", rank, " alone: ", st.message()));
    case absl::StatusCode::kInvalidArgument:
    case absl::StatusCode::kOutOfRange:
      return absl::InternalError(
          absl::StrCat("rank ", rank, ": the step failed past its validation: ", st.ToString()));
    default:
      return st;
  }
}

absl::Status AgreeOnRoom(const absl::Status& room, int rank,
                         absl::FunctionRef<absl::StatusOr<float>(float)> sum_over_ranks) {
  const absl::StatusOr<float> lacking = sum_over_ranks(room.ok() ? 0.0f : 1.0f);
  if (!lacking.ok()) return lacking.status();
  if (!room.ok()) return room;
  if (*lacking > 0.0f) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "Step: rank ", rank, " has room for the batch but ", static_cast<int>(*lacking),
        " other rank(s) of the group do not (their logs say why); the whole group refuses it. "
        "Release finished sequences or send a smaller batch"));
  }
  return absl::OkStatus();
}

}  // namespace llmint8::model
