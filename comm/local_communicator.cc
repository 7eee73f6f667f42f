#include "comm/local_communicator.h"

#include <cstring>

namespace llmint8::comm {

absl::Status LocalCommunicator::AllGatherImpl(const void* in, void* out, size_t count,
                                              DataType type) {
  if (in != out && count > 0) std::memmove(out, in, count * DataTypeSize(type));
  return absl::OkStatus();
}

}  // namespace llmint8::comm
