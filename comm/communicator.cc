#include "comm/communicator.h"

#include "absl/strings/str_cat.h"

namespace llmint8::comm {

size_t DataTypeSize(DataType type) {
  switch (type) {
    case DataType::kFloat32:
      return 4;
    case DataType::kFloat16:
      return 2;
    case DataType::kUint8:
      return 1;
  }
  return 0;
}

absl::Status Communicator::CheckedAllGather(const void* in, size_t in_count, void* out,
                                            size_t out_count, DataType type) {
  if (out_count != in_count * static_cast<size_t>(size())) {
    return absl::InvalidArgumentError(
        absl::StrCat(backend(), " rank ", rank(), ": AllGather output holds ", out_count,
                     " elements; it must hold input (", in_count, ") x group size (", size(), ")"));
  }
  return AllGatherImpl(in, out, in_count, type);
}

absl::Status Communicator::Broadcast(std::span<uint8_t> data, int root) {
  if (root < 0 || root >= size()) {
    return absl::InvalidArgumentError(absl::StrCat(backend(), " rank ", rank(), ": Broadcast root ",
                                                   root, " is outside the group [0, ", size(),
                                                   ")"));
  }
  return BroadcastImpl(data.data(), data.size(), root);
}

}  // namespace llmint8::comm
