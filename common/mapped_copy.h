// Reading a memory-mapped file without dying of it. A read of a mapped page whose file data is
// gone raises SIGBUS, which ends the process: the file was truncated after it was mapped
// (replaced in place while a worker loads it), or the storage under it failed (a network file
// system, a bad disk). CopyFromMapping catches that signal and reports it instead.
//
//   if (!CopyFromMapping(out, mapped + offset, n)) return DataLoss("... shrank while read");
//
// It installs a SIGBUS handler once (SA_SIGINFO, chaining to the one it replaces for faults
// outside a copy). Thread-safe: each thread's copy catches its own faults.
#ifndef LLMINT8_COMMON_MAPPED_COPY_H_
#define LLMINT8_COMMON_MAPPED_COPY_H_

#include <cstddef>

namespace llmint8 {

// memcpy(dst, src, bytes); false, with dst partly written, when reading src raised SIGBUS.
bool CopyFromMapping(void* dst, const void* src, size_t bytes);

}  // namespace llmint8

#endif  // LLMINT8_COMMON_MAPPED_COPY_H_
