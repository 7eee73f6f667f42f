#include "worker/coordinator_lease.h"

#include <algorithm>

#include "absl/strings/str_cat.h"

namespace llmint8::worker {

void CoordinatorLease::Grant(int64_t epoch, absl::Duration lease, absl::Time now) {
  absl::MutexLock lock(&mu_);
  epoch_ = epoch;
  lease_ = lease;
  last_contact_ = now;
  ended_ = false;
}

void CoordinatorLease::Clear() {
  absl::MutexLock lock(&mu_);
  epoch_ = 0;
  last_contact_ = absl::InfinitePast();
  ended_ = false;
}

void CoordinatorLease::Renew(int64_t epoch, absl::Time now) {
  absl::MutexLock lock(&mu_);
  if (epoch != 0 && epoch == epoch_ && !ended_) last_contact_ = std::max(last_contact_, now);
}

bool CoordinatorLease::End(int64_t epoch) {
  absl::MutexLock lock(&mu_);
  if (epoch == 0 || epoch != epoch_) return false;
  last_contact_ = absl::InfinitePast();
  ended_ = true;
  return true;
}

bool CoordinatorLease::Gone(absl::Time now) const {
  absl::MutexLock lock(&mu_);
  return epoch_ != 0 &&
         (ended_ || (lease_ > absl::ZeroDuration() && now - last_contact_ >= lease_));
}

bool CoordinatorLease::SilentPast(absl::Duration longer, absl::Time now) const {
  absl::MutexLock lock(&mu_);
  return epoch_ != 0 && !ended_ && lease_ > absl::ZeroDuration() &&
         now - last_contact_ >= lease_ + longer;
}

bool CoordinatorLease::HeldByAnother(int64_t epoch, absl::Time now) const {
  return !CheckTake(epoch, now).ok();
}

absl::Status CoordinatorLease::CheckTake(int64_t epoch, absl::Time now) const {
  absl::MutexLock lock(&mu_);
  if (epoch_ == 0 || CoordinatorInstance(epoch) == CoordinatorInstance(epoch_) ||
      now - last_contact_ >= lease_) {
    return absl::OkStatus();
  }
  return absl::FailedPreconditionError(absl::StrCat(
      "this worker is in group epoch ", epoch_, ", which another coordinator formed and keeps ",
      "(lease ", absl::FormatDuration(lease_), " from its last contact): two coordinators must ",
      "not drive the same workers; stop one of them, and the other takes the workers once ",
      "the lease lapses"));
}

}  // namespace llmint8::worker
