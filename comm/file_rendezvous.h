// Rendezvous through files in a directory that every rank can see (a local disk for the
// processes of one host; a shared file system would work too, at file-system latency).
//
// Each key is one file, written to a temporary name and renamed into place, so a reader never
// sees a partial value. Get polls (1 ms growing to 20 ms). Add serialises through flock(2).
// The directory must exist; nothing in it is removed (the caller owns its lifetime, e.g. a
// test's temp dir). Thread-safe and multi-process-safe.
#ifndef LLMINT8_COMM_FILE_RENDEZVOUS_H_
#define LLMINT8_COMM_FILE_RENDEZVOUS_H_

#include <cstdint>
#include <string>
#include <string_view>

#include "comm/rendezvous.h"

namespace llmint8::comm {

class FileRendezvous : public Rendezvous {
 public:
  explicit FileRendezvous(std::string directory) : directory_(std::move(directory)) {}

  absl::Status Set(std::string_view key, std::string_view value) override;
  absl::StatusOr<std::string> Get(std::string_view key, absl::Duration timeout) override;
  absl::StatusOr<int64_t> Add(std::string_view key, int64_t delta) override;

  const std::string& directory() const { return directory_; }

 private:
  // The file that holds `key`: characters other than [A-Za-z0-9._-] are %-escaped.
  std::string PathFor(std::string_view key) const;

  std::string directory_;
};

}  // namespace llmint8::comm

#endif  // LLMINT8_COMM_FILE_RENDEZVOUS_H_
